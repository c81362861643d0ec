//! Live values embedded in another site, in a real browser (headless Chromium): a page
//! on one origin includes the cloud's script with a read-only key bound to that origin
//! and shows the device's values; the same page from another origin, and a page with an
//! expired key, show the cloud's refusal instead.

mod common;
use common::api::acme_with_pump;
use common::*;
use fieldgate::protocol::Batch;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A static web site on a loopback port (Python's http.server), one origin.
fn site(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let proc = Proc(
        std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the site", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (proc, port)
}

/// The DOM of `url` after its scripts ran, from headless Chromium.
fn render(url: &str, profile: &Path) -> String {
    need("chromium");
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // The cloud's certificate is from its own CA.
            "--ignore-certificate-errors",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn page(dir: &Path, name: &str, api: &str, key: &str) {
    std::fs::write(
        dir.join(name),
        format!(
            "<!doctype html><html><body><h1>Pump station</h1>\n\
             <script src=\"{api}/v1/embed/live.js\" data-tenant=\"acme\" data-device=\"pump-1\" \
             data-key=\"{key}\"></script></body></html>\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_elsewhere_shows_live_values_and_a_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(3600)).await;
    let (api, owner) = acme_with_pump(&cloud).await;
    let now = fieldgate::sample::now_ns();
    cloud
        .store()
        .insert(
            "pump-1",
            &Batch {
                samples: vec![float_sample(1, "meter/power", now, 4711.5)],
                gaps: vec![],
            },
        )
        .unwrap();

    // The site of the pump's operator, and another one.
    let (own_dir, other_dir) = (d.join("own"), d.join("other"));
    std::fs::create_dir_all(&own_dir).unwrap();
    std::fs::create_dir_all(&other_dir).unwrap();
    let (_own, own_port) = site(&own_dir);
    let (_other, other_port) = site(&other_dir);
    let own_origin = format!("http://127.0.0.1:{own_port}");
    let hour = 3_600_000_000_000i64;
    let mint = |scope: serde_json::Value| {
        let api = &api;
        let owner = owner.clone();
        async move {
            api.ok("POST", "/v1/tenants/acme/keys", &owner, Some(scope))
                .await["token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let key = mint(json!({"devices": ["pump-1"], "actions": ["read"], "origins": [own_origin], "not_after_ns": now + hour})).await;
    let expired = mint(json!({"devices": ["pump-1"], "actions": ["read"], "origins": [own_origin], "not_before_ns": now - 2 * hour, "not_after_ns": now - hour})).await;
    let url = cloud.api_url();
    page(&own_dir, "live.html", &url, &key);
    page(&own_dir, "expired.html", &url, &expired);
    page(&other_dir, "live.html", &url, &key);

    let profile = d.join("chromium");
    let dom = tokio::task::spawn_blocking(move || {
        [
            render(
                &format!("http://127.0.0.1:{own_port}/live.html"),
                &profile.join("a"),
            ),
            render(
                &format!("http://127.0.0.1:{other_port}/live.html"),
                &profile.join("b"),
            ),
            render(
                &format!("http://127.0.0.1:{own_port}/expired.html"),
                &profile.join("c"),
            ),
        ]
    })
    .await
    .unwrap();

    // Its own site: the live value, as text.
    assert!(dom[0].contains("data-state=\"live\""), "{}", dom[0]);
    assert!(
        dom[0].contains("<td>meter/power</td><td>4711.5</td><td>good</td>"),
        "{}",
        dom[0]
    );
    // Another site with the same key: the cloud's refusal, said plainly.
    assert!(dom[1].contains("data-state=\"refused\""), "{}", dom[1]);
    assert!(
        dom[1].contains("data-code=\"key_origin_refused\""),
        "{}",
        dom[1]
    );
    assert!(
        dom[1].contains(&format!(
            "may not be used from the web origin http://127.0.0.1:{other_port}"
        )),
        "{}",
        dom[1]
    );
    assert!(!dom[1].contains("4711.5"));
    // An expired key.
    assert!(dom[2].contains("data-code=\"key_expired\""), "{}", dom[2]);
    assert!(!dom[2].contains("4711.5"));
}
