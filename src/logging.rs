//! The binaries' logging: structured fields to the journal when systemd connected stderr
//! to it (JOURNAL_STREAM), plain text on stderr otherwise (colours on a terminal only).
//! `RUST_LOG` filters; `info` by default.

use tracing_subscriber::prelude::*;

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        // Fields as BUS=, DEVICE=, ERROR= (no F_ prefix), as docs/systemd.md promises.
        .then(|| {
            tracing_journald::layer()
                .ok()
                .map(|l| l.with_field_prefix(None))
        })
        .flatten();
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
