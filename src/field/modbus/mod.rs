//! Modbus TCP and RTU: register maps, request planning, decoding, polling, and a simulator.

pub mod codec;
pub mod planner;
pub mod poller;
pub mod report;
pub mod scan;
pub mod sim;
pub mod transport;

pub use crate::model::registers::{DataType, Function, WordOrder};
