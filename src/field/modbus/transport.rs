//! Opening a Modbus connection: TCP or RTU over a serial line.

use crate::config::{Parity, RtuBus};
use std::time::Duration;
use tokio_modbus::client::Context;
use tokio_modbus::Slave;

/// Where a bus is reached.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Tcp(String),
    Rtu(RtuBus),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp {a}"),
            Endpoint::Rtu(r) => write!(f, "rtu {} @ {} baud", r.port.display(), r.baud),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {endpoint}: {error}")]
    Io {
        endpoint: String,
        error: std::io::Error,
    },
    #[error("cannot open serial port {port}: {error}")]
    Serial {
        port: String,
        error: tokio_serial::Error,
    },
    #[error("no answer from {0} within the timeout")]
    Timeout(String),
}

/// Connects (or opens the serial line) within `timeout`.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Context, ConnectError> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            let stream =
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str()))
                    .await
                    .map_err(|_| ConnectError::Timeout(endpoint.to_string()))?
                    .map_err(|error| ConnectError::Io {
                        endpoint: endpoint.to_string(),
                        error,
                    })?;
            let _ = stream.set_nodelay(true);
            Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(1)))
        }
        Endpoint::Rtu(r) => {
            let builder = tokio_serial::new(r.port.to_string_lossy(), r.baud)
                .parity(match r.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(match r.data_bits {
                    5 => tokio_serial::DataBits::Five,
                    6 => tokio_serial::DataBits::Six,
                    7 => tokio_serial::DataBits::Seven,
                    _ => tokio_serial::DataBits::Eight,
                })
                .stop_bits(if r.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                });
            let port = tokio_serial::SerialStream::open(&builder).map_err(|error| {
                ConnectError::Serial {
                    port: r.port.display().to_string(),
                    error,
                }
            })?;
            Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(1)))
        }
    }
}
