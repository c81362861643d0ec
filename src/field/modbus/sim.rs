//! A simulated Modbus device serving a register map over TCP or RTU, so a config can be
//! tried without hardware. Unmapped addresses answer "illegal data address", like real
//! devices do.

use super::codec;
use crate::model::registers::{DataType, Function, WordOrder};
use crate::sample::Value;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// A simulator map file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMap {
    pub device: Vec<SimDevice>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDevice {
    pub unit: u8,
    pub point: Vec<SimPoint>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPoint {
    pub name: String,
    pub function: Function,
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    #[serde(default)]
    pub order: WordOrder,
    #[serde(default)]
    pub length: Option<u16>,
    #[serde(default)]
    pub bit: Option<u8>,
    /// The raw value served (before the gateway's scale and offset).
    pub value: toml::Value,
    /// Makes a numeric value move: `value + amplitude * sin(2π t / period)`.
    #[serde(default)]
    pub amplitude: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub period: Option<Duration>,
}

type Table = BTreeMap<u16, u16>;

/// The memory of all simulated units.
/// Why the simulator could not load its map or serve it.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{path}: {error}")]
    Read {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("point {point}: value {value} does not fit {data_type}")]
    Value {
        point: String,
        value: String,
        data_type: DataType,
    },
    #[error("point {point}: {error}")]
    Encode {
        point: String,
        #[source]
        error: codec::CodecError,
    },
    #[error("cannot open {port}: {error}")]
    Open {
        port: String,
        #[source]
        error: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

#[derive(Debug, Default)]
pub struct SimState {
    tables: HashMap<(u8, Function), Table>,
}

impl SimMap {
    pub fn load(path: &std::path::Path) -> Result<SimMap, SimError> {
        let text = std::fs::read_to_string(path).map_err(|error| SimError::Read {
            path: path.display().to_string(),
            error,
        })?;
        toml::from_str(&text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| crate::config::line_col(&text, s.start))
                .unwrap_or((0, 0));
            SimError::Parse {
                path: path.display().to_string(),
                line,
                column,
                message: e.message().to_string(),
            }
        })
    }

    /// Renders the map at `t` seconds since start.
    pub fn render(&self, t: f64, state: &mut SimState) -> Result<(), SimError> {
        for d in &self.device {
            for p in &d.point {
                let mut v = to_value(&p.value, p.data_type).ok_or_else(|| SimError::Value {
                    point: p.name.clone(),
                    value: p.value.to_string(),
                    data_type: p.data_type,
                })?;
                if let (Some(a), Some(per), Some(x)) = (p.amplitude, p.period, v.as_f64()) {
                    let y = x + a
                        * (2.0 * std::f64::consts::PI * t / per.as_secs_f64().max(0.001)).sin();
                    v = match p.data_type {
                        DataType::F32 | DataType::F64 => Value::Float(y),
                        _ => Value::Int(y.round() as i64),
                    };
                }
                let table = state.tables.entry((d.unit, p.function)).or_default();
                if p.data_type == DataType::Bit {
                    let bit = p.bit.unwrap_or(0) & 15;
                    let w = table.entry(p.address).or_default();
                    *w = (*w & !(1 << bit)) | ((v.as_f64().unwrap_or(0.0) != 0.0) as u16) << bit;
                    continue;
                }
                let words = codec::encode(&v, p.data_type, p.order, p.length.unwrap_or(1))
                    .map_err(|error| SimError::Encode {
                        point: p.name.clone(),
                        error,
                    })?;
                for (i, w) in words.into_iter().enumerate() {
                    table.insert(p.address.wrapping_add(i as u16), w);
                }
            }
        }
        Ok(())
    }
}

fn to_value(v: &toml::Value, ty: DataType) -> Option<Value> {
    Some(match v {
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) if ty == DataType::F32 || ty == DataType::F64 => Value::Float(*f),
        toml::Value::Float(f) => Value::Int(f.round() as i64),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::String(s) if s.starts_with("0x") => {
            Value::UInt(u64::from_str_radix(&s[2..], 16).ok()?)
        }
        toml::Value::String(s) => Value::Str(s.clone()),
        _ => return None,
    })
}

/// The Modbus service over the shared state.
#[derive(Clone)]
pub struct SimService {
    pub state: Arc<Mutex<SimState>>,
    /// Requests answered so far (tests count the gateway's requests with it).
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    /// Over RTU an unknown unit stays silent; over TCP it gets exception 0x0B.
    pub silent_for_unknown_units: bool,
}

impl SimService {
    /// A service over `map` rendered at t = 0.
    pub fn new(map: &SimMap, silent_for_unknown_units: bool) -> Result<SimService, SimError> {
        let mut initial = SimState::default();
        map.render(0.0, &mut initial)?;
        Ok(SimService {
            state: Arc::new(Mutex::new(initial)),
            requests: Default::default(),
            silent_for_unknown_units,
        })
    }

    fn answer(&self, req: SlaveRequest<'_>) -> Result<Option<Response>, ExceptionCode> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = self
            .state
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        let unit = req.slave;
        if !state.tables.keys().any(|(u, _)| *u == unit) {
            return if self.silent_for_unknown_units {
                Ok(None)
            } else {
                Err(ExceptionCode::GatewayTargetDevice)
            };
        }
        let read = |f: Function, addr: u16, cnt: u16| -> Result<Vec<u16>, ExceptionCode> {
            if cnt == 0 || cnt > f.max_per_request() {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let t = state
                .tables
                .get(&(unit, f))
                .ok_or(ExceptionCode::IllegalDataAddress)?;
            (0..cnt)
                .map(|i| {
                    let a = addr
                        .checked_add(i)
                        .ok_or(ExceptionCode::IllegalDataAddress)?;
                    t.get(&a).copied().ok_or(ExceptionCode::IllegalDataAddress)
                })
                .collect()
        };
        let bools = |v: Vec<u16>| v.into_iter().map(|w| w != 0).collect();
        Ok(Some(match req.request {
            Request::ReadCoils(a, n) => Response::ReadCoils(bools(read(Function::Coil, a, n)?)),
            Request::ReadDiscreteInputs(a, n) => {
                Response::ReadDiscreteInputs(bools(read(Function::DiscreteInput, a, n)?))
            }
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(read(Function::InputRegister, a, n)?)
            }
            Request::ReadHoldingRegisters(a, n) => {
                Response::ReadHoldingRegisters(read(Function::HoldingRegister, a, n)?)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        }))
    }
}

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        future::ready(self.answer(req))
    }
}

/// Keeps the state moving once per `tick` until the task is dropped.
pub async fn animate(map: SimMap, state: Arc<Mutex<SimState>>, tick: Duration) {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = state.lock() {
            let _ = map.render(start.elapsed().as_secs_f64(), &mut s);
        }
        tokio::time::sleep(tick).await;
    }
}

/// Serves `map` on a TCP listener until the task is dropped.
pub async fn serve_tcp(map: SimMap, listener: tokio::net::TcpListener) -> Result<(), SimError> {
    let service = SimService::new(&map, false)?;
    let anim = tokio::spawn(animate(
        map,
        service.state.clone(),
        Duration::from_millis(500),
    ));
    let r = serve_tcp_with(service, listener).await;
    anim.abort();
    r
}

/// Serves a prepared service on a TCP listener until the task is dropped.
pub async fn serve_tcp_with(
    service: SimService,
    listener: tokio::net::TcpListener,
) -> Result<(), SimError> {
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let on_connected = |stream, _addr| {
        let s = service.clone();
        async move { Ok(Some((s, stream))) }
    };
    Ok(server
        .serve(
            &on_connected,
            |e| tracing::debug!(error = %e, "sim connection ended"),
        )
        .await?)
}

/// Serves `map` over RTU on a serial device (or pty) until the task is dropped.
pub async fn serve_rtu(map: SimMap, port: &std::path::Path, baud: u32) -> Result<(), SimError> {
    let service = SimService::new(&map, true)?;
    let anim = tokio::spawn(animate(
        map,
        service.state.clone(),
        Duration::from_millis(500),
    ));
    let server = tokio_modbus::server::rtu::Server::new_from_path(port, baud).map_err(|error| {
        SimError::Open {
            port: port.display().to_string(),
            error,
        }
    })?;
    let r = server.serve_forever(service).await;
    anim.abort();
    Ok(r?)
}
