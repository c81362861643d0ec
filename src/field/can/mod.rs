//! CAN buses: DBC databases and signal decoding (sans-I/O). The SocketCAN reader, J1939
//! transport reassembly and candump replay build on these.

pub mod db;
pub mod decode;
pub mod j1939;
