//! `fieldgate can decode|dump`: a candump log or a live interface, decoded with DBC files.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Subcommand)]
pub enum Command {
    /// Decode a candump log (`candump -l` format) with DBC files.
    Decode {
        #[command(flatten)]
        db: DbcArgs,
        /// text for people, json for one object per frame.
        #[arg(long, value_enum, default_value = "text")]
        format: fieldgate::field::can::tools::Format,
        /// The log file.
        log: PathBuf,
    },
    /// Show live traffic of an interface, decoded when DBC files are given.
    Dump {
        #[arg(long)]
        iface: String,
        #[command(flatten)]
        db: DbcArgs,
        #[arg(long, value_enum, default_value = "text")]
        format: fieldgate::field::can::tools::Format,
    },
}

#[derive(Args)]
pub struct DbcArgs {
    /// A DBC file; repeat for several.
    #[arg(long)]
    dbc: Vec<PathBuf>,
    /// J1939: match messages by PGN from any source address, reassemble transport
    /// transfers, decode DM1.
    #[arg(long)]
    j1939: bool,
    /// Refuse a DBC file with any faulty message (by default such messages or signals
    /// are skipped, each with a warning).
    #[arg(long)]
    strict: bool,
}

impl DbcArgs {
    fn load(&self) -> anyhow::Result<fieldgate::dbc::CanDb> {
        let mode = if self.strict {
            fieldgate::dbc::Strictness::Strict
        } else {
            fieldgate::dbc::Strictness::Lenient
        };
        let db = fieldgate::dbc::CanDb::load_all(&self.dbc, mode)?;
        for w in db.warnings() {
            eprintln!("warning: {w}");
        }
        Ok(db)
    }
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Decode { db, format, log } => {
            if db.dbc.is_empty() {
                anyhow::bail!("give the DBC files to decode with: --dbc FILE (repeat for several); without one no frame could be decoded");
            }
            let summary = fieldgate::field::can::tools::decode_log(
                &log,
                db.load()?,
                db.j1939,
                format,
                &mut std::io::stdout().lock(),
            )?;
            eprintln!("{summary}");
            Ok(())
        }
        Command::Dump { iface, db, format } => {
            let stop = CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                s.cancel();
            });
            let summary =
                fieldgate::field::can::tools::dump(&iface, db.load()?, db.j1939, format, stop)
                    .await?;
            eprintln!("{summary}");
            Ok(())
        }
    }
}
