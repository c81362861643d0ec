//! CAN buses: the SocketCAN reader, J1939 transport reassembly and candump replay,
//! decoding with the DBC databases of `crate::dbc` (sans-I/O).

pub use crate::dbc as db;
pub use crate::dbc::decode;

pub mod bus;
pub mod decoder;
pub mod emit;
pub mod frame;
pub mod j1939;
pub mod log;
pub mod socket;
pub mod tools;
