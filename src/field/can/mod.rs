//! CAN buses: DBC databases and signal decoding (sans-I/O). The SocketCAN reader, J1939
//! transport reassembly and candump replay build on these.

pub mod bus;
pub mod db;
pub mod decode;
pub mod decoder;
pub mod emit;
pub mod frame;
pub mod j1939;
pub mod log;
pub mod socket;
pub mod tools;
