//! Field-bus sources: each bus runs as its own task and emits `Sample`s.

#[cfg(feature = "can")]
pub mod can;
pub mod modbus;
