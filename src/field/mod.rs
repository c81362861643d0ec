//! Field-bus sources: each bus runs as its own task and emits `Sample`s.

pub mod modbus;
