//! One received CAN frame, independent of where it came from (a SocketCAN socket or a
//! candump log), and the bus events that are not data.

use socketcan::{CanAnyFrame, EmbeddedFrame, Id};

/// A data frame (classical or FD) with its receive time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// When it was received (or logged): nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// 11- or 29-bit identifier, without flags.
    pub id: u32,
    pub extended: bool,
    pub fd: bool,
    pub data: Vec<u8>,
}

/// What a socket or a log yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Data(Frame),
    /// An error frame from the controller: error passive, bus-off, restarts, ...
    Error {
        ts_ns: i64,
        error: BusError,
    },
    /// Remote frames carry no data to decode.
    Remote,
}

/// The bus errors a controller reports, reduced to what an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusError {
    Warning,
    Passive,
    BusOff,
    Restarted,
    /// Back to error-active.
    Active,
    /// Protocol violations, lost arbitration, missing ACK and the like.
    Other,
}

impl BusError {
    /// The bus state this error leaves the controller in, if it changes it.
    pub fn state(self) -> Option<&'static str> {
        match self {
            BusError::Warning => Some("error-warning"),
            BusError::Passive => Some("error-passive"),
            BusError::BusOff => Some("bus-off"),
            BusError::Restarted | BusError::Active => Some("error-active"),
            BusError::Other => None,
        }
    }
}

fn bus_error(e: socketcan::CanError) -> BusError {
    use socketcan::errors::{CanError as E, ControllerProblem as P};
    match e {
        E::BusOff => BusError::BusOff,
        E::Restarted => BusError::Restarted,
        E::ControllerProblem(P::ReceiveErrorPassive | P::TransmitErrorPassive) => BusError::Passive,
        E::ControllerProblem(P::ReceiveErrorWarning | P::TransmitErrorWarning) => BusError::Warning,
        E::ControllerProblem(P::Active) => BusError::Active,
        _ => BusError::Other,
    }
}

fn split_id(id: Id) -> (u32, bool) {
    match id {
        Id::Standard(s) => (s.as_raw() as u32, false),
        Id::Extended(e) => (e.as_raw(), true),
    }
}

impl Received {
    pub fn from_socketcan(frame: CanAnyFrame, ts_ns: i64) -> Received {
        match frame {
            CanAnyFrame::Normal(f) => {
                let (id, extended) = split_id(f.id());
                Received::Data(Frame {
                    ts_ns,
                    id,
                    extended,
                    fd: false,
                    data: f.data().to_vec(),
                })
            }
            CanAnyFrame::Fd(f) => {
                let (id, extended) = split_id(f.id());
                Received::Data(Frame {
                    ts_ns,
                    id,
                    extended,
                    fd: true,
                    data: f.data().to_vec(),
                })
            }
            CanAnyFrame::Remote(_) => Received::Remote,
            CanAnyFrame::Error(e) => Received::Error {
                ts_ns,
                error: bus_error(e.into_error()),
            },
        }
    }
}
