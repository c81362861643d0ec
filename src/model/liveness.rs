//! Task liveness for the watchdog: every long-running task beats at least once a second
//! while it is making progress; the supervisor pings systemd only while all are fresh.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One task's heartbeat.
#[derive(Clone)]
pub struct Beat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Beat {
    /// The task is alive and making progress.
    pub fn beat(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Sleeps for `d`, beating every second meanwhile (an idle task is not a hung task).
    pub async fn sleep(&self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        loop {
            self.beat();
            let now = tokio::time::Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(Duration::from_secs(1))).await;
        }
    }

    fn age(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// The registry of all tasks' heartbeats.
#[derive(Clone)]
pub struct Liveness {
    start: Instant,
    beats: Arc<Mutex<BTreeMap<String, Beat>>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            start: Instant::now(),
            beats: Default::default(),
        }
    }
}

impl Liveness {
    /// Registers (or replaces) the heartbeat of task `name`.
    pub fn register(&self, name: &str) -> Beat {
        let b = Beat {
            start: self.start,
            last_ms: Default::default(),
        };
        b.beat();
        if let Ok(mut m) = self.beats.lock() {
            m.insert(name.to_string(), b.clone());
        }
        b
    }

    pub fn unregister(&self, name: &str) {
        if let Ok(mut m) = self.beats.lock() {
            m.remove(name);
        }
    }

    /// Tasks that have not beaten for longer than `limit`, with how long.
    pub fn stale(&self, limit: Duration) -> Vec<(String, Duration)> {
        self.beats
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(n, b)| (n.clone(), b.age()))
                    .filter(|(_, a)| *a > limit)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tasks_are_named() {
        let l = Liveness::default();
        let a = l.register("a");
        let _b = l.register("b");
        std::thread::sleep(Duration::from_millis(40));
        a.beat();
        let stale: Vec<String> = l
            .stale(Duration::from_millis(20))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(stale, vec!["b".to_string()]);
        l.unregister("b");
        assert!(l.stale(Duration::from_millis(20)).is_empty());
    }

    #[tokio::test]
    async fn a_sleeping_task_keeps_beating() {
        let l = Liveness::default();
        let b = l.register("sleeper");
        let t = tokio::spawn(async move { b.sleep(Duration::from_millis(2500)).await });
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert!(l.stale(Duration::from_millis(1200)).is_empty());
        t.await.unwrap();
    }
}
