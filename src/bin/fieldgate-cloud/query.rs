//! `fieldgate-cloud query` and `gaps`: stored samples and reported gaps of a device.

use crate::rfc3339;
use anyhow::bail;
use fieldgate::cloud;
use std::io::Write;
use std::path::Path;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// One aligned line per sample, for people.
    Table,
    /// One JSON object per line, for programs.
    Json,
}

/// Print stored samples of a device: the newest `--limit` (oldest first), or with
/// `--latest` the newest of each point.
#[derive(clap::Args)]
pub struct Args {
    /// The gateway's device id.
    #[arg(long)]
    device: fieldgate::ids::DeviceId,
    /// Only this point (`device/point` as the gateway names it).
    #[arg(long)]
    point: Option<String>,
    /// RFC 3339 time (2026-11-22T10:00:00Z) or an age (`10min` = since ten minutes ago).
    #[arg(long, conflicts_with = "latest")]
    since: Option<String>,
    /// The newest sample of each point only.
    #[arg(long)]
    latest: bool,
    /// `table` for people, `json` (one object per line) for programs.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// At most this many samples: the newest ones; a note on stderr says when more exist.
    #[arg(long, default_value_t = 100_000)]
    limit: usize,
}

pub fn run(args: Args, data: &Path, database: &cloud::Database) -> anyhow::Result<()> {
    let store = tokio::task::block_in_place(|| database.store(data))?;
    let rows = if args.latest {
        let mut rows = store.latest(&args.device)?;
        rows.retain(|r| args.point.as_deref().is_none_or(|p| r.point == p));
        rows
    } else {
        let since_ns = args.since.as_deref().map(parse_since).transpose()?;
        // The newest `limit` (one more to know whether some were left out), shown oldest
        // first.
        let mut rows = match since_ns {
            Some(since) => {
                let mut all =
                    store.query(&args.device, args.point.as_deref(), Some(since), usize::MAX)?;
                let cut = all.len().saturating_sub(args.limit.saturating_add(1));
                all.drain(..cut);
                all.reverse();
                all
            }
            None => store.newest(
                &args.device,
                args.point.as_deref(),
                args.limit.saturating_add(1),
            )?,
        };
        if rows.len() > args.limit {
            rows.truncate(args.limit);
            eprintln!(
                "note: only the newest {} samples are shown; give --limit or --since for more",
                args.limit
            );
        }
        rows.reverse();
        rows
    };
    let mut out = std::io::stdout().lock();
    for r in rows {
        match args.format {
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::json!({"point": r.point, "ts": rfc3339(r.ts_ns), "ts_ns": r.ts_ns,
                    "value": r.value, "quality": r.quality, "time": r.time, "seq": r.seq})
            )?,
            Format::Table => writeln!(
                out,
                "{:>8}  {}  {:<28} {:>14}  {}",
                r.seq,
                rfc3339(r.ts_ns),
                r.point,
                r.value.to_string(),
                r.quality
            )?,
        }
    }
    Ok(())
}

pub fn gaps(
    data: &Path,
    database: &cloud::Database,
    device: fieldgate::ids::DeviceId,
) -> anyhow::Result<()> {
    let store = tokio::task::block_in_place(|| database.store(data))?;
    let mut out = std::io::stdout().lock();
    for g in store.gaps(&device)? {
        writeln!(
            out,
            "{}..={} ({} samples)",
            g.first,
            g.last,
            g.last - g.first + 1
        )?;
    }
    Ok(())
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_nanos() as i64);
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(fieldgate::sample::now_ns() - d.as_nanos() as i64),
        Err(_) => {
            bail!("--since `{s}`: give an RFC 3339 time (2026-11-22T10:00:00Z) or an age (10min)")
        }
    }
}
