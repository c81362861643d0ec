//! Identity benchmarks: one ECDSA P-256 signature, and mutual-TLS handshakes per second
//! on loopback, with the key in the TPM (swtpm, the simulator: a real TPM is slower
//! still) and in a file, measured in the same run.
//!
//! Run: `cargo bench --bench identity` (needs swtpm; about 15 seconds).

use fieldgate::identity::{self, Key};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn signatures(key: &dyn Key) -> (Duration, usize) {
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(2) {
        key.sign(format!("message {n}").as_bytes()).unwrap();
        n += 1;
    }
    (t.elapsed() / n as u32, n)
}

async fn handshakes(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let srv = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let a = acceptor.clone();
            tokio::spawn(async move {
                let _ = a.accept(tcp).await;
            });
        }
    });
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(3) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = connector.connect(name.clone(), tcp).await.unwrap();
        // TLS 1.3: the client's certificate is checked once the server reads; make it.
        use tokio::io::AsyncWriteExt;
        s.write_all(b"x").await.unwrap();
        n += 1;
    }
    srv.abort();
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    fieldgate::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The simulator, on its own state.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let state = dir.path().join("tpm");
    std::fs::create_dir_all(&state).unwrap();
    let mut swtpm = std::process::Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .args([
            "--server",
            &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            "--ctrl",
            &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            "--flags",
            "not-need-init,startup-clear",
        ])
        .spawn()
        .expect("swtpm (apt-get install swtpm)");
    std::thread::sleep(Duration::from_millis(300));
    let tpm: Arc<dyn Key> = Arc::new(
        identity::tpm::TpmKey::open(
            &identity::IdentityConfig {
                backend: identity::Backend::Tpm,
                tcti: format!("swtpm:host=127.0.0.1,port={port}"),
                ..Default::default()
            },
            true,
        )
        .unwrap(),
    );
    let key_file = dir.path().join("device.key");
    std::fs::write(
        &key_file,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let file: Arc<dyn Key> = Arc::new(identity::file::FileKey::load(&key_file).unwrap());

    let pki =
        fieldgate::cloud::pki::Pki::open_or_create(&dir.path().join("pki"), &["localhost".into()])
            .unwrap();
    let server =
        fieldgate::tls::mtls_server_config(&pki.ca_cert(), &pki.server_cert(), &pki.server_key())
            .unwrap();
    let roots = fieldgate::tls::root_store(&pki.ca_cert()).unwrap();
    println!(
        "identity benchmarks: ECDSA P-256 / SHA-256, TLS 1.3 with client certificates on loopback"
    );
    for (name, key) in [("TPM (swtpm)", tpm), ("file", file)] {
        let csr = identity::csr_pem(key.clone(), "bench-gw").unwrap();
        let (cert, _, _) = pki
            .sign_csr(&csr, "bench-gw", Duration::from_secs(3600))
            .unwrap();
        let chain = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        };
        let client = identity::signer::client_config(roots.clone(), chain, key.clone());
        let (per_sig, n) = signatures(key.as_ref());
        let hs = rt.block_on(handshakes(server.clone(), client));
        println!(
            "  {name:<12} one signature {:>9.3} ms ({n} in 2 s)   handshakes {hs:>7.0}/s",
            per_sig.as_secs_f64() * 1000.0
        );
    }
    let _ = swtpm.kill();
    let _ = swtpm.wait();
}
