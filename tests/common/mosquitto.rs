//! A Mosquitto broker per test.

use super::*;

/// Mosquitto on a loopback port with mutual TLS 1.3 (certificates of `pki`'s CA, the
/// certificate's CN as the user name) and the ACL `acl`; stopped when dropped. Queues of
/// absent persistent sessions are unbounded (a restarting ingest worker loses nothing).
pub struct Mosquitto {
    pub port: u16,
    _proc: Proc,
}

impl Mosquitto {
    pub fn start(dir: &Path, pki: &fieldgate::cloud::pki::Pki, acl: &str) -> Mosquitto {
        need("mosquitto");
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(dir.join("acl"), acl).unwrap();
        std::fs::write(
            &conf,
            format!(
                "user root\nper_listener_settings false\nallow_anonymous false\npersistence false\n\
                 max_queued_messages 1000000\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                 listener {port} 127.0.0.1\ncafile {ca}\ncertfile {crt}\nkeyfile {key}\n\
                 require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.3\nacl_file {acl}\n",
                ca = pki.ca_cert().display(),
                crt = pki.server_cert().display(),
                key = pki.server_key().display(),
                acl = dir.join("acl").display(),
            ),
        )
        .unwrap();
        let proc = Proc(
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stderr(std::fs::File::create(dir.join("mosquitto.log")).unwrap())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for("mosquitto", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Mosquitto { port, _proc: proc }
    }
}

/// The ACL fieldgate ships for an external broker (config/mosquitto.acl).
pub fn shipped_acl() -> String {
    std::fs::read_to_string(root().join("config/mosquitto.acl")).unwrap()
}

/// The ingest's bridge to `broker`, with the ingest certificate in `certs` (made by
/// `dev_cert("fieldgate-ingest", …)`); stopped by cancelling the token.
pub fn bridge(
    broker: &Mosquitto,
    pki: &fieldgate::cloud::pki::Pki,
    certs: &Path,
    ingest: std::sync::Arc<fieldgate::cloud::ingest::Ingest>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), fieldgate::cloud::CloudError>>,
) {
    let stop = CancellationToken::new();
    let link = fieldgate::cloud::ingest::bridge::BrokerLink {
        host: "127.0.0.1".into(),
        port: broker.port,
        ca: pki.ca_cert(),
        cert: certs.join("device.crt"),
        key: certs.join("device.key"),
        client_id: "fieldgate-ingest".into(),
        share_group: None,
    };
    let task = tokio::spawn(fieldgate::cloud::ingest::bridge::run(
        link,
        ingest,
        stop.clone(),
    ));
    (stop, task)
}
