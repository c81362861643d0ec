//! The doctor of `fieldgate check`: what a config needs from the machine, checked
//! without touching any device: serial ports present and accessible, certificates
//! readable, valid now and naming this gateway, the TPM key, brokers resolvable, the
//! state directory writable. Configuration itself never probes the machine; this sits
//! above it. A finding's problem is a sentence for the person at the console.

use crate::config::{split_host_port, GatewayConfig};
use std::path::Path;
use std::time::Duration;

/// One line of the check: what was looked at, and the problem if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub what: String,
    pub problem: Option<String>,
}

fn finding(what: String, r: Result<(), String>) -> Finding {
    Finding {
        what,
        problem: r.err(),
    }
}

/// Runs every check; never fails itself.
pub async fn check(cfg: &GatewayConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    for bus in &cfg.bus {
        if let Some(rtu) = &bus.get_ref().rtu {
            out.push(finding(
                format!(
                    "serial port {} (bus {})",
                    rtu.port.display(),
                    bus.get_ref().name
                ),
                serial(&rtu.port),
            ));
        }
    }
    for bus in &cfg.can {
        let b = bus.get_ref();
        if let Some(i) = &b.interface {
            out.push(finding(
                format!("CAN interface {i} (bus {})", b.name),
                can_interface(i),
            ));
        }
        if let Some(r) = &b.replay {
            out.push(finding(
                format!("replay log {} (bus {})", r.file.display(), b.name),
                std::fs::File::open(&r.file)
                    .map(|_| ())
                    .map_err(|e| format!("cannot read: {e}")),
            ));
        }
    }
    out.push(finding(
        format!("state directory {}", cfg.gateway.state_dir.display()),
        writable_dir(&cfg.gateway.state_dir),
    ));
    out.push(finding(
        format!("CA certificate {}", cfg.uplink.ca.display()),
        crate::tls::root_store(&cfg.uplink.ca)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    ));
    out.push(finding(
        format!("client certificate {}", cfg.uplink.cert.display()),
        client_cert(&cfg.uplink.cert, &cfg.gateway.device_id),
    ));
    match (&cfg.uplink.key, cfg.identity.backend) {
        (Some(key), crate::identity::Backend::File) => out.push(finding(
            format!(
                "client key {} (file identity: development only)",
                key.display()
            ),
            client_key(&cfg.uplink.cert, key),
        )),
        _ => out.push(finding(
            format!(
                "TPM key {} at handle {:#x}",
                cfg.identity.tcti, cfg.identity.handle
            ),
            tpm_key(cfg),
        )),
    }
    for b in &cfg.uplink.brokers {
        out.push(finding(format!("broker {b}"), resolvable(b).await));
    }
    out
}

fn serial(port: &Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    let meta = std::fs::metadata(port)
        .map_err(|e| format!("{e} (is the adapter plugged in? `ls /dev/tty*`)"))?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_char_device() {
        return Err("not a character device".into());
    }
    access(port, AccessFlags::R_OK | AccessFlags::W_OK)
        .map_err(|e| format!("{e}: add the service user to the port's group (usually `dialout`)"))
}

fn writable_dir(dir: &Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    let mut d = dir;
    // The daemon creates it; then the nearest existing parent must be writable.
    while !d.exists() {
        d = d.parent().ok_or("no existing parent")?;
    }
    access(d, AccessFlags::W_OK).map_err(|e| format!("{}: {e}", d.display()))
}

fn client_cert(path: &Path, device_id: &str) -> Result<(), String> {
    let certs = crate::tls::load_certs(path).map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref())
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("");
    if cn != device_id {
        return Err(format!("its CN is `{cn}` but gateway.device_id is `{device_id}`: the cloud would file data under `{cn}`"));
    }
    let v = cert.validity();
    if !v.is_valid() {
        return Err(format!(
            "not valid now (valid from {} to {})",
            v.not_before, v.not_after
        ));
    }
    Ok(())
}

fn client_key(cert: &Path, key: &Path) -> Result<(), String> {
    let k = crate::tls::load_key(key).map_err(|e| e.to_string())?;
    let Ok(certs) = crate::tls::load_certs(cert) else {
        return Ok(());
    };
    crate::install_crypto_provider();
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(certs, k)
        .map(|_| ())
        .map_err(|e| format!("{e} (does the key belong to the certificate?)"))
}

/// The TPM answers and holds this gateway's key, matching the certificate.
fn tpm_key(cfg: &GatewayConfig) -> Result<(), String> {
    let key = crate::identity::open_for(&cfg.identity, None, Some(&cfg.uplink.cert), false)
        .map_err(|e| e.to_string())?;
    let Ok(certs) = crate::tls::load_certs(&cfg.uplink.cert) else {
        return Ok(());
    };
    let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref())
        .map_err(|e| format!("the certificate: {e}"))?;
    let spki = crate::identity::spki_der(key.public_point());
    if cert.public_key().raw != spki.as_slice() {
        return Err(format!(
            "the certificate {} is for another key than the TPM's (fingerprint {}): enroll again",
            cfg.uplink.cert.display(),
            crate::identity::fingerprint(key.as_ref())
        ));
    }
    Ok(())
}

async fn resolvable(broker: &str) -> Result<(), String> {
    let (host, port) = split_host_port(broker).ok_or("not host:port")?;
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    {
        Err(_) => Err("name lookup timed out".into()),
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Ok(Ok(mut a)) => a
            .next()
            .map(|_| ())
            .ok_or_else(|| format!("{host} has no address")),
    }
}

/// The interface exists, is a CAN interface, and is up.
fn can_interface(name: &str) -> Result<(), String> {
    let dir = Path::new("/sys/class/net").join(name);
    if !dir.exists() {
        return Err(format!(
            "no such interface (is the adapter plugged in and its driver loaded? `ip -details link show {name}`)"
        ));
    }
    // ARPHRD_CAN
    let kind = std::fs::read_to_string(dir.join("type")).unwrap_or_default();
    if kind.trim() != "280" {
        return Err("not a CAN interface".into());
    }
    match crate::field::can::socket::is_up(name) {
        Some(true) => Ok(()),
        _ => Err(format!(
            "the interface is down: bring it up with its bitrate, e.g. `ip link set {name} up type can bitrate 500000` (or a systemd-networkd .network file)"
        )),
    }
}
