//! Field-bus sources: each bus runs as its own task and emits `Sample`s.

pub mod can;
pub mod modbus;

use crate::buffer::Entry;

/// Where samples go (the buffer in the daemon; a channel in tests and benches).
pub trait SampleSink: Send + Sync {
    fn accept(&self, samples: Vec<Entry>) -> impl std::future::Future<Output = ()> + Send;
}

impl SampleSink for crate::buffer::Buffer {
    async fn accept(&self, samples: Vec<Entry>) {
        self.append(samples).await
    }
}

impl SampleSink for tokio::sync::mpsc::Sender<Vec<Entry>> {
    async fn accept(&self, samples: Vec<Entry>) {
        let _ = self.send(samples).await;
    }
}
