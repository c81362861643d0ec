//! Update images from the cloud: only for a gateway of the tenant that published them,
//! resumed after every cut (ten at random points: done, moving at most 1.1 times the
//! image over the wire), and given up on a link that stalls or crawls.

mod common;
use common::api::*;
use common::*;
use fieldgate::release::image::describe;
use fieldgate::release::{Envelope, Install, Release};
use fieldgate::update::download::{fetch, DownloadError, Limits, Source};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the proxy does to the cloud's answers.
#[derive(Clone, Copy)]
enum Link {
    /// Cuts each of the first `n` connections after a pseudo-random number of bytes.
    Cut(usize),
    /// Forwards at about this many bytes a second.
    Crawl(u64),
    /// Forwards this many bytes, then nothing more (the connection stays open).
    Stall(u64),
}

/// A TCP proxy to `upstream` on loopback: its port and the bytes it passed down.
async fn proxy(upstream: std::net::SocketAddr, link: Link) -> (u16, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let down = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let d = down.clone();
    tokio::spawn(async move {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        loop {
            let (client, _) = l.accept().await.unwrap();
            let n = conns.fetch_add(1, Ordering::SeqCst);
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let budget = match link {
                Link::Cut(cuts) if n < cuts => Some(20_000 + seed % 400_000),
                Link::Stall(b) => Some(b),
                _ => None,
            };
            let d = d.clone();
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                let mut passed = 0u64;
                loop {
                    let want = match link {
                        Link::Crawl(rate) => (rate as usize / 10).max(1),
                        _ => buf.len(),
                    };
                    let Ok(k) = sr.read(&mut buf[..want]).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    let mut k = k as u64;
                    if let Some(b) = budget {
                        if passed + k > b {
                            k = b - passed;
                            let _ = cw.write_all(&buf[..k as usize]).await;
                            d.fetch_add(k, Ordering::SeqCst);
                            if matches!(link, Link::Stall(_)) {
                                // Hold the connection open, sending nothing.
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            return; // cut: both halves drop
                        }
                    }
                    if cw.write_all(&buf[..k as usize]).await.is_err() {
                        return;
                    }
                    passed += k;
                    d.fetch_add(k, Ordering::SeqCst);
                    if let Link::Crawl(_) = link {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
        }
    });
    (port, down)
}

fn source(port: u16, certs: &Path, sha256: &str) -> Source {
    let key = fieldgate::identity::file::FileKey::load(&certs.join("device.key")).unwrap();
    Source {
        host: "127.0.0.1".into(),
        port,
        path: format!("/v1/device/images/{sha256}"),
        tls: fieldgate::identity::signer::client_config(
            fieldgate::tls::root_store(&certs.join("ca.crt")).unwrap(),
            fieldgate::tls::load_certs(&certs.join("device.crt")).unwrap(),
            Arc::new(key),
        ),
    }
}

/// The image, without progress reports.
async fn get(
    port: u16,
    certs: &Path,
    staging: &Path,
    image: &fieldgate::release::Image,
    limits: &Limits,
) -> Result<fieldgate::update::download::Fetched, DownloadError> {
    fetch(
        &source(port, certs, &image.sha256),
        staging,
        image,
        limits,
        |_, _| {},
    )
    .await
}

fn quick() -> Limits {
    Limits {
        stall: Duration::from_secs(2),
        min_rate: 1024,
        rate_window: Duration::from_secs(2),
        attempts: 30,
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_download_survives_cuts_and_refuses_a_crawling_link() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(86400)).await;
    let (_api, _owner) = acme_with_pump(&cloud).await;
    cloud.dev_cert("pump-1", &d.join("certs"));
    cloud.dev_cert("stranger", &d.join("stranger"));

    // A 4 MiB image, published by acme.
    let image: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let desc = describe(&image, Install::Binary);
    let release = Release {
        kind: "fieldgate-release".into(),
        v: 1,
        version: "1.4.0".into(),
        hardware: "hw".into(),
        image: desc.clone(),
        expires_ns: i64::MAX,
        rollback_index: 1,
    };
    let releases = fieldgate::cloud::releases::Releases::with(cloud.db(), &cloud.data);
    let meta = Envelope::of(&release).to_bytes();
    // Published from the command line, as an operator would.
    std::fs::write(d.join("release.json"), &meta).unwrap();
    std::fs::write(d.join("image"), &image).unwrap();
    let out = cloud
        .cli()
        .args(["release-add", "--tenant", "acme", "--metadata"])
        .arg(d.join("release.json"))
        .arg("--image")
        .arg(d.join("image"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("release 1.4.0 for hw published to acme"));
    assert!(matches!(
        releases.add("acme", &meta, &image),
        Err(fieldgate::cloud::releases::ReleaseError::Exists { .. })
    ));
    assert!(
        releases.add("acme", &meta, &image[1..]).is_err(),
        "an image that is not the one named"
    );

    let api = cloud.api.unwrap();
    // Straight through: the whole image, once.
    let staging = d.join("staging");
    let got = get(api.port(), &d.join("certs"), &staging, &desc, &quick())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&staging).unwrap(), image);
    assert_eq!((got.received, got.attempts), (image.len() as u64, 1));

    // Ten cuts at random points: resumed each time, done, and little sent twice.
    std::fs::remove_file(&staging).unwrap();
    let (port, down) = proxy(api, Link::Cut(10)).await;
    let mut seen = Vec::new();
    let got = fetch(
        &source(port, &d.join("certs"), &desc.sha256),
        &staging,
        &desc,
        &quick(),
        |b, t| seen.push((b, t)),
    )
    .await
    .unwrap();
    assert_eq!(got.attempts, 11, "{got:?}");
    assert_eq!(std::fs::read(&staging).unwrap(), image);
    let wire = down.load(Ordering::SeqCst);
    let ratio = wire as f64 / image.len() as f64;
    println!("10 cuts: {wire} bytes on the wire for a {} byte image ({ratio:.3}x), {} image bytes received", image.len(), got.received);
    assert!(ratio <= 1.1, "{ratio}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0) || got.attempts > 1);
    assert_eq!(
        seen.last().unwrap(),
        &(image.len() as u64, image.len() as u64)
    );

    // A staging file with foreign bytes at the end is refused at the hash, and deleted.
    let mut bad = image.clone();
    bad[4_000_000] ^= 1;
    std::fs::write(&staging, &bad).unwrap();
    let e = get(api.port(), &d.join("certs"), &staging, &desc, &quick())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            DownloadError::Refused(fieldgate::release::Refusal::Hash { .. })
        ),
        "{e}"
    );
    assert!(!staging.exists());

    // A link that crawls below the minimum rate, or stalls, is given up.
    // (Patient enough for the handshake at that rate, not for the image.)
    let limits = Limits {
        attempts: 1,
        stall: Duration::from_secs(15),
        ..quick()
    };
    let (port, _) = proxy(api, Link::Crawl(800)).await;
    let e = get(port, &d.join("certs"), &staging, &desc, &limits)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("slow retrieval"), "{e}");
    let limits = Limits {
        attempts: 2,
        ..quick()
    };
    let (port, _) = proxy(api, Link::Stall(100_000)).await;
    let e = get(port, &d.join("certs"), &staging, &desc, &limits)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no data for"), "{e}");

    // Only gateways of the publishing tenant get it.
    let e = get(
        api.port(),
        &d.join("stranger"),
        &d.join("s2"),
        &desc,
        &quick(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, DownloadError::Refusing { status: 403, body } if body.contains("device_unclaimed")),
        "{e}"
    );
}
