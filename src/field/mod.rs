//! Field-bus sources: each bus runs as its own task and emits `Sample`s.

pub mod can;
pub mod modbus;

pub use crate::model::SampleSink;
