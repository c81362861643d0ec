//! SocketCAN: a CAN FD capable raw socket with the decoder's receive filters, all error
//! frames, and the interface's up/down flag.

use socketcan::tokio::CanFdSocket;
use socketcan::{CanFilter, SocketOptions};

/// Opens `ifname` receiving only what `filters` lets through (all frames if None) and
/// every bus error frame.
pub fn open(ifname: &str, filters: Option<&[(u32, u32)]>) -> std::io::Result<CanFdSocket> {
    let sock = CanFdSocket::open(ifname)?;
    if let Some(f) = filters {
        let f: Vec<CanFilter> = f
            .iter()
            .map(|(id, mask)| CanFilter::new(*id, *mask))
            .collect();
        sock.set_filters(&f)?;
    }
    sock.set_error_filter_accept_all()?;
    Ok(sock)
}

/// Whether the interface is administratively up; None if it does not exist.
pub fn is_up(ifname: &str) -> Option<bool> {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{ifname}/flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & 1 != 0)
}
