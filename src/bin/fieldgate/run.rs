//! `fieldgate run`: the gateway daemon, until SIGTERM; SIGHUP reloads its config.

use crate::load;

use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Run the gateway daemon.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
    pub config: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config;
    let cfg = load(&config)?;
    let shutdown = CancellationToken::new();
    let (reload_tx, reload) = tokio::sync::mpsc::channel(4);
    tokio::spawn(handle_signals(shutdown.clone(), reload_tx));
    if fieldgate::daemon::run(cfg, shutdown, reload).await? == fieldgate::daemon::Exit::Restart {
        tracing::info!("exiting to start the other version");
        std::process::exit(fieldgate::update::updater::RESTART_EXIT);
    }
    Ok(())
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP reloads its config.
async fn handle_signals(shutdown: CancellationToken, reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = reload.try_send(());
            }
        }
    }
    shutdown.cancel();
}
