//! Store-and-forward: the SQLite outbox, run on its own thread behind an async handle.
//!
//! Sources hand samples to `Buffer::append` and never wait for the network; the thread
//! commits them in groups (one fsync per group) and serves the uplink's reads and acks.

pub mod commands;
pub mod outbox;

pub use crate::model::{Class, Entry};
use crate::protocol::{Gap, Sequenced};

pub use outbox::{Outbox, OutboxError, Stats};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most samples committed in one group.
const MAX_GROUP: usize = 5000;

enum Command {
    Append(Vec<Entry>),
    Fetch {
        after: u64,
        upto: u64,
        limit: usize,
        reply: oneshot::Sender<Vec<Sequenced>>,
    },
    Gaps {
        limit: usize,
        reply: oneshot::Sender<Vec<Gap>>,
    },
    Ack {
        seqs: Vec<Gap>,
        gaps: Vec<Gap>,
    },
    MaxSeq(oneshot::Sender<u64>),
    Stats(oneshot::Sender<Stats>),
    /// Commit everything received so far, then answer.
    Flush(oneshot::Sender<()>),
    /// A downlink command arrived: journal it unless it was seen.
    Journal {
        id: String,
        kind: String,
        reply: oneshot::Sender<Option<commands::Seen>>,
    },
    /// A command's reply, kept until the cloud has it.
    Answered {
        id: String,
        reply_bytes: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    ReplySent(String),
    UnsentReplies(oneshot::Sender<Vec<(String, Vec<u8>)>>),
    Probe(oneshot::Sender<bool>),
    /// The wall clock became synchronised: correct this boot's unsynced timestamps.
    CorrectClock {
        offset_ns: i64,
        reply: oneshot::Sender<usize>,
    },
}

/// Counters the buffer thread keeps for status.
#[derive(Debug, Default)]
pub struct BufferCounters {
    /// Samples committed since start.
    pub committed: AtomicU64,
    /// Samples that could not be committed (disk full, I/O error).
    pub failed: AtomicU64,
    /// Commit groups (= fsyncs) since start.
    pub groups: AtomicU64,
}

/// Cloneable handle to the buffer thread.
#[derive(Clone)]
pub struct Buffer {
    tx: mpsc::Sender<Command>,
    pub counters: Arc<BufferCounters>,
    /// Wakes the uplink when new samples are committed.
    pub committed: Arc<tokio::sync::Notify>,
}

/// Settings of the buffer thread.
#[derive(Debug, Clone)]
pub struct BufferSettings {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub max_age: Option<Duration>,
    pub commit_interval: Duration,
    /// This boot's id (see `clock::Clock`).
    pub boot_id: String,
}

impl Buffer {
    /// Opens the outbox and starts its thread (call from within a tokio runtime, whose
    /// timers the thread uses). The thread ends when every handle is dropped.
    pub fn start(
        settings: BufferSettings,
    ) -> Result<(Buffer, std::thread::JoinHandle<()>), OutboxError> {
        let outbox = Outbox::open(
            &settings.path,
            settings.max_bytes,
            settings.max_age.map(|d| d.as_nanos() as i64),
            &settings.boot_id,
        )?;
        let n = commands::interrupted(outbox.conn(), |id| {
            crate::downlink::Reply::failed(
                id,
                "interrupted: the gateway stopped while doing it; it was not started again".into(),
            )
            .encode()
        })?;
        if n > 0 {
            tracing::warn!(
                commands = n,
                "commands interrupted by the last stop were answered as failed"
            );
        }
        let (tx, rx) = mpsc::channel(1024);
        let counters = Arc::new(BufferCounters::default());
        let committed = Arc::new(tokio::sync::Notify::new());
        let (c2, n2) = (counters.clone(), committed.clone());
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| OutboxError::Thread(e.to_string()))?;
        let handle = std::thread::Builder::new()
            .name("buffer".into())
            .spawn(move || run(outbox, rx, settings.commit_interval, c2, n2, rt))
            .map_err(|e| OutboxError::Thread(e.to_string()))?;
        Ok((
            Buffer {
                tx,
                counters,
                committed,
            },
            handle,
        ))
    }

    /// Hands samples over for commit. Waits only if the disk cannot keep up.
    pub async fn append(&self, samples: Vec<Entry>) {
        if !samples.is_empty() {
            let _ = self.tx.send(Command::Append(samples)).await;
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    pub async fn fetch(&self, after: u64, upto: u64, limit: usize) -> Vec<Sequenced> {
        self.ask(|reply| Command::Fetch {
            after,
            upto,
            limit,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    pub async fn gaps(&self, limit: usize) -> Vec<Gap> {
        self.ask(|reply| Command::Gaps { limit, reply })
            .await
            .unwrap_or_default()
    }

    pub async fn ack(&self, seqs: Vec<Gap>, gaps: Vec<Gap>) {
        let _ = self.tx.send(Command::Ack { seqs, gaps }).await;
    }

    pub async fn max_seq(&self) -> u64 {
        self.ask(Command::MaxSeq).await.unwrap_or(0)
    }

    pub async fn stats(&self) -> Stats {
        self.ask(Command::Stats).await.unwrap_or_default()
    }

    /// Corrects the unsynced timestamps of this boot; returns how many.
    pub async fn correct_clock(&self, offset_ns: i64) -> usize {
        self.ask(|reply| Command::CorrectClock { offset_ns, reply })
            .await
            .unwrap_or(0)
    }

    /// Journals a downlink command (durably) unless its id was seen; None if the
    /// journal could not be written (then it must not be acknowledged).
    pub async fn command_received(&self, id: &str, kind: &str) -> Option<commands::Seen> {
        self.ask(|reply| Command::Journal {
            id: id.to_string(),
            kind: kind.to_string(),
            reply,
        })
        .await
        .flatten()
    }

    /// Keeps a command's reply until `reply_sent`; false if it could not be written.
    pub async fn command_replied(&self, id: &str, reply_bytes: Vec<u8>) -> bool {
        self.ask(|reply| Command::Answered {
            id: id.to_string(),
            reply_bytes,
            reply,
        })
        .await
        .unwrap_or(false)
    }

    pub async fn reply_sent(&self, id: &str) {
        let _ = self.tx.send(Command::ReplySent(id.to_string())).await;
    }

    /// Replies the cloud has not acknowledged yet.
    pub async fn unsent_replies(&self) -> Vec<(String, Vec<u8>)> {
        self.ask(Command::UnsentReplies).await.unwrap_or_default()
    }

    /// Writes a value to the buffer's database and reads it back (the update agent's
    /// health check): true if the disk took it.
    pub async fn probe(&self) -> bool {
        self.ask(Command::Probe).await.unwrap_or(false)
    }

    /// Returns once everything appended before the call is committed.
    pub async fn flush(&self) {
        let _ = self.ask(Command::Flush).await;
    }
}

fn run(
    mut outbox: Outbox,
    mut rx: mpsc::Receiver<Command>,
    commit_interval: Duration,
    counters: Arc<BufferCounters>,
    notify: Arc<tokio::sync::Notify>,
    rt: tokio::runtime::Handle,
) {
    // Timers of the deadline below belong to the daemon's runtime.
    let _runtime = rt.enter();
    let mut group: Vec<Entry> = Vec::new();
    // When the open group must be committed at the latest.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut errors = ErrorLog::default();
    loop {
        let cmd = match deadline {
            None => rx.blocking_recv(),
            Some(d) => match rt.block_on(tokio::time::timeout_at(d, rx.recv())) {
                Ok(cmd) => cmd,
                Err(_elapsed) => {
                    commit(&mut outbox, &mut group, &counters, &notify, &mut errors);
                    deadline = None;
                    continue;
                }
            },
        };
        // None: every handle is gone; commit what is left and stop.
        let Some(cmd) = cmd else { break };
        match cmd {
            Command::Append(mut s) => {
                group.append(&mut s);
                if group.len() >= MAX_GROUP {
                    commit(&mut outbox, &mut group, &counters, &notify, &mut errors);
                    deadline = None;
                } else {
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + commit_interval);
                }
            }
            Command::Flush(reply) => {
                commit(&mut outbox, &mut group, &counters, &notify, &mut errors);
                deadline = None;
                let _ = reply.send(());
            }
            Command::Stats(reply) => {
                let mut st = outbox.stats().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "buffer");
                    Stats::default()
                });
                st.uncommitted = group.len() as u64;
                let _ = reply.send(st);
            }
            // Reads and acks see committed data only; the open group stays open.
            other => serve(&mut outbox, other, &mut errors),
        }
    }
    commit(&mut outbox, &mut group, &counters, &notify, &mut errors);
}

/// Rate limit of the buffer's error log: a full disk must not flood the journal.
#[derive(Default)]
struct ErrorLog(Option<Instant>);

impl ErrorLog {
    /// Logs at most once a minute.
    fn log(&mut self, e: &OutboxError, what: &str, lost: usize) {
        if self.0.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            tracing::error!(error = %e, lost, "{what}");
            self.0 = Some(Instant::now());
        }
    }
}

fn commit(
    outbox: &mut Outbox,
    group: &mut Vec<Entry>,
    counters: &BufferCounters,
    notify: &tokio::sync::Notify,
    errors: &mut ErrorLog,
) {
    if group.is_empty() {
        return;
    }
    match outbox.append(group, crate::sample::now_ns()) {
        Ok(seqs) => {
            counters
                .committed
                .fetch_add(seqs.len() as u64, Ordering::Relaxed);
            counters.groups.fetch_add(1, Ordering::Relaxed);
            notify.notify_one();
        }
        Err(e) => {
            counters
                .failed
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            if errors
                .0
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
            {
                tracing::error!(error = %e, lost = group.len(), "buffer commit failed");
                errors.0 = Some(Instant::now());
            }
        }
    }
    group.clear();
}

fn serve(outbox: &mut Outbox, cmd: Command, errors: &mut ErrorLog) {
    let mut log = |e: OutboxError| errors.log(&e, "buffer read or delete failed", 0);
    match cmd {
        Command::Fetch {
            after,
            upto,
            limit,
            reply,
        } => {
            let _ = reply.send(outbox.fetch(after, upto, limit).unwrap_or_else(|e| {
                log(e);
                Vec::new()
            }));
        }
        Command::Gaps { limit, reply } => {
            let _ = reply.send(outbox.gaps(limit).unwrap_or_else(|e| {
                log(e);
                Vec::new()
            }));
        }
        Command::Ack { seqs, gaps } => {
            if let Err(e) = outbox.ack(&seqs, &gaps) {
                log(e);
            }
        }
        Command::MaxSeq(reply) => {
            let _ = reply.send(outbox.max_seq().unwrap_or_else(|e| {
                log(e);
                0
            }));
        }
        Command::CorrectClock { offset_ns, reply } => {
            let _ = reply.send(outbox.correct_clock(offset_ns).unwrap_or_else(|e| {
                log(e);
                0
            }));
        }
        Command::Journal { id, kind, reply } => {
            let seen = commands::receive(outbox.conn(), &id, &kind, crate::sample::now_ns());
            let _ = reply.send(seen.map_err(&mut log).ok());
        }
        Command::Answered {
            id,
            reply_bytes,
            reply,
        } => {
            let r = commands::reply(outbox.conn(), &id, &reply_bytes);
            let _ = reply.send(r.map_err(&mut log).is_ok());
        }
        Command::ReplySent(id) => {
            if let Err(e) = commands::sent(outbox.conn(), &id, crate::sample::now_ns()) {
                log(e);
            }
        }
        Command::UnsentReplies(reply) => {
            let _ = reply.send(commands::unsent(outbox.conn()).unwrap_or_else(|e| {
                log(e);
                Vec::new()
            }));
        }
        Command::Probe(reply) => {
            let _ = reply.send(
                outbox
                    .probe(crate::sample::now_ns())
                    .map_err(&mut log)
                    .is_ok(),
            );
        }
        Command::Append(_) | Command::Flush(_) | Command::Stats(_) => {}
    }
}

impl crate::model::SampleSink for Buffer {
    async fn accept(&self, samples: Vec<Entry>) {
        self.append(samples).await
    }
}
