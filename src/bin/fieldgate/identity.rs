//! `fieldgate identity …` and `fieldgate enroll`: the gateway's key and certificate.

use crate::load;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use fieldgate::config::GatewayConfig;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Command {
    /// Device id, key backend and fingerprint, certificate subject, issuer and expiry.
    Show {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create the TPM key if it does not exist yet (the daemon does this on first start).
    Init {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
    },
    /// Print the TPM's endorsement key (hex point) for registration at manufacture.
    Ek {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
    },
    /// Write a certificate signing request signed by the key (PEM, to stdout or --out).
    Csr {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Enroll with the cloud by hand: a CSR signed by the key and a one-time token.
#[derive(Args)]
pub struct EnrollArgs {
    #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
    pub config: PathBuf,
    /// The cloud's HTTPS API, e.g. https://cloud.example.net:8443 (default: identity.enroll_url).
    #[arg(long)]
    cloud: Option<String>,
    /// The one-time bootstrap token (default: the content of identity.token_file).
    #[arg(long)]
    token: Option<String>,
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Show { config, json } => identity_show(&load(&config)?, json),
        Command::Init { config } => {
            let cfg = load(&config)?;
            let key = identity_key(&cfg, true)?;
            println!(
                "{} key at {}, fingerprint {}",
                key.backend(),
                key.location(),
                fieldgate::identity::fingerprint(key.as_ref())
            );
            Ok(())
        }
        Command::Ek { config } => {
            let cfg = load(&config)?;
            let key = identity_key(&cfg, true)?;
            let (ek, _) = fieldgate::identity::tpm_evidence(key.as_ref())?
                .context("the identity is not in a TPM (identity.backend = \"file\")")?;
            println!("{}", fieldgate::hex::encode(&ek));
            Ok(())
        }
        Command::Csr { config, out } => {
            let cfg = load(&config)?;
            let key = identity_key(&cfg, true)?;
            let pem = fieldgate::identity::csr_pem(key, &cfg.gateway.device_id)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, pem)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    eprintln!(
                        "wrote the CSR for {} to {}",
                        cfg.gateway.device_id,
                        p.display()
                    );
                }
                None => print!("{pem}"),
            }
            Ok(())
        }
    }
}

pub async fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let EnrollArgs {
        config,
        cloud,
        token,
    } = args;
    let cfg = load(&config)?;
    let url = cloud
        .or(cfg.identity.enroll_url.clone())
        .context("give --cloud URL (or set identity.enroll_url)")?;
    let token = match token {
        Some(t) => t,
        None => {
            let f = cfg
                .identity
                .token_file
                .as_ref()
                .context("give --token TOKEN (or set identity.token_file)")?;
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
    };
    let key = identity_key(&cfg, true)?;
    fieldgate::identity::enroll::enroll(
        &cfg.gateway.device_id,
        key,
        &url,
        &token,
        &cfg.uplink.ca,
        &cfg.uplink.cert,
    )
    .await?;
    println!(
        "enrolled {}: certificate written to {}",
        cfg.gateway.device_id,
        cfg.uplink.cert.display()
    );
    Ok(())
}

/// `fieldgate identity show`.
fn identity_show(cfg: &GatewayConfig, json: bool) -> anyhow::Result<()> {
    let key = identity_key(cfg, false)?;
    let mut doc = serde_json::json!({
        "device_id": cfg.gateway.device_id,
        "backend": key.backend().to_string(),
        "key": key.location(),
        "fingerprint": fieldgate::identity::fingerprint(key.as_ref()),
    });
    let cert = fieldgate::tls::load_certs(&cfg.uplink.cert)
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            let der = c[0].as_ref().to_vec();
            let (_, x) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.uplink.cert.display()))?;
            let matches =
                x.public_key().raw == fieldgate::identity::spki_der(key.public_point()).as_slice();
            Ok(serde_json::json!({
                "path": cfg.uplink.cert.display().to_string(),
                "subject": x.subject().to_string(),
                "issuer": x.issuer().to_string(),
                "not_before": x.validity().not_before.to_rfc2822().unwrap_or_default(),
                "not_after": x.validity().not_after.to_rfc2822().unwrap_or_default(),
                "valid_now": x.validity().is_valid(),
                "matches_key": matches,
            }))
        });
    match cert {
        Ok(c) => doc["certificate"] = c,
        Err(e) => doc["certificate_error"] = e.to_string().into(),
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("device id     {}", cfg.gateway.device_id);
    println!(
        "key           {} ({})",
        doc["key"].as_str().unwrap_or(""),
        doc["backend"].as_str().unwrap_or("")
    );
    if key.backend() == fieldgate::identity::Backend::File {
        println!("              a FILE key: development only, anyone who can read it can act as this gateway");
    }
    println!(
        "fingerprint   sha256:{}",
        doc["fingerprint"].as_str().unwrap_or("")
    );
    match doc.get("certificate") {
        Some(c) => {
            println!("certificate   {}", c["path"].as_str().unwrap_or(""));
            println!("  subject     {}", c["subject"].as_str().unwrap_or(""));
            println!("  issuer      {}", c["issuer"].as_str().unwrap_or(""));
            println!(
                "  valid       {} .. {}{}",
                c["not_before"].as_str().unwrap_or(""),
                c["not_after"].as_str().unwrap_or(""),
                if c["valid_now"] == true {
                    ""
                } else {
                    "  (NOT valid now)"
                }
            );
            if c["matches_key"] != true {
                println!("  WARNING     the certificate is for another key: enroll again");
            }
        }
        None => println!(
            "certificate   none: {}",
            doc["certificate_error"].as_str().unwrap_or("")
        ),
    }
    Ok(())
}

/// The gateway's key as the config says (the one its certificate names, when keys rotate).
fn identity_key(
    cfg: &GatewayConfig,
    create: bool,
) -> anyhow::Result<std::sync::Arc<dyn fieldgate::identity::Key>> {
    Ok(fieldgate::identity::open_for(
        &cfg.identity,
        cfg.uplink.key.as_deref(),
        Some(&cfg.uplink.cert),
        create,
    )?)
}
