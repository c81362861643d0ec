//! `fieldgate-cloud serve`: the embedded MQTT endpoint (default) or the bridge behind a
//! broker, and with --api the HTTPS API.

use crate::shutdown_on_signal;
use anyhow::Context as _;
use fieldgate::cloud;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Run the ingest: an embedded MQTT endpoint over mutual TLS (default), or a subscriber
/// behind an existing broker (--broker).
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:8883")]
    listen: String,
    /// Subscribe to this external broker (host:port) instead of listening.
    #[arg(long)]
    broker: Option<String>,
    /// With --broker: CA of the broker, and this ingest's client certificate and key.
    #[arg(long, requires = "broker")]
    broker_ca: Option<PathBuf>,
    #[arg(long, requires = "broker")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "broker")]
    key: Option<PathBuf>,
    /// With --broker: this worker's MQTT client id; keep it stable per worker, so
    /// the broker resumes its session (and redelivers what it did not acknowledge).
    #[arg(long, requires = "broker", default_value = "fieldgate-ingest")]
    client_id: String,
    /// With --broker: share the load with the other workers of this group (an MQTT 5
    /// shared subscription).
    #[arg(long, requires = "broker")]
    share_group: Option<String>,
    /// Also serve the HTTPS API on this address (with --broker and a PostgreSQL
    /// --store: one of any number of API servers).
    #[arg(long)]
    api: Option<String>,
    /// Lifetime of the certificates enrollment and renewal issue.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    cert_lifetime: Duration,
    /// Enroll only gateways that prove their key is in the TPM registered for them.
    #[arg(long)]
    require_tpm: bool,
    /// Let tenants set plain http:// webhooks (a lab without certificates).
    #[arg(long)]
    webhook_allow_http: bool,
    /// A network webhooks may reach although it is not public (loopback, private,
    /// link-local: refused by default); repeat for several.
    #[arg(long, value_name = "CIDR")]
    webhook_allow_net: Vec<ipnet::IpNet>,
}

pub async fn run(args: Args, data: &Path, database: &cloud::Database) -> anyhow::Result<()> {
    let data = data.to_path_buf();
    let Args {
        listen,
        broker,
        broker_ca,
        cert,
        key,
        client_id,
        share_group,
        api,
        cert_lifetime,
        require_tpm,
        webhook_allow_http,
        webhook_allow_net,
    } = args;
    let settings = cloud::Settings {
        cert_lifetime,
        require_tpm,
        webhook: cloud::api::webhook::Policy {
            allow_http: webhook_allow_http,
            allow_nets: webhook_allow_net,
        },
        database: database.clone(),
    };
    let Some(b) = broker else {
        let l = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let api = match api {
            Some(a) => Some(
                tokio::net::TcpListener::bind(&a)
                    .await
                    .with_context(|| format!("cannot listen on {a}"))?,
            ),
            None => None,
        };
        return Ok(cloud::run_with(&data, l, api, settings, shutdown_on_signal()).await?);
    };
    let (host, port) = b.rsplit_once(':').context("--broker must be host:port")?;
    let ingest = tokio::task::block_in_place(|| cloud::open_ingest(&data, database))?;
    let shutdown = shutdown_on_signal();
    let api_task = match api {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(&a)
                .await
                .with_context(|| format!("cannot listen on {a}"))?;
            Some(cloud::serve_api(&data, l, &settings, shutdown.clone()).await?)
        }
        None => None,
    };
    let link = cloud::ingest::bridge::BrokerLink {
        host: host.into(),
        port: port.parse().context("--broker port")?,
        ca: broker_ca.context("--broker-ca is required with --broker")?,
        cert: cert.context("--cert is required with --broker")?,
        key: key.context("--key is required with --broker")?,
        client_id,
        share_group,
    };
    let ran = cloud::ingest::bridge::run(link, ingest, shutdown).await;
    if let Some(t) = api_task {
        let _ = t.await;
    }
    Ok(ran?)
}
