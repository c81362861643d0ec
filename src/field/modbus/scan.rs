//! Commissioning probes: which unit ids answer on a bus, and which address ranges of a
//! unit can be read.

use crate::model::registers::Function;
use std::ops::RangeInclusive;
use std::time::Duration;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

/// What a unit id did when asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// It answered with data.
    Answers(Vec<u16>),
    /// It answered with an exception: a device is there, the address or function is not.
    Exception(u8),
    /// No answer within the timeout.
    Silent,
    /// The link itself failed.
    Error(String),
}

/// Reads `count` items of `function` at `address`.
pub async fn read(
    ctx: &mut Context,
    unit: u8,
    function: Function,
    address: u16,
    count: u16,
    timeout: Duration,
) -> Probe {
    ctx.set_slave(Slave(unit));
    let fut = async {
        match function {
            Function::Coil => ctx
                .read_coils(address, count)
                .await
                .map(|r| r.map(|v| v.into_iter().map(u16::from).collect())),
            Function::DiscreteInput => ctx
                .read_discrete_inputs(address, count)
                .await
                .map(|r| r.map(|v| v.into_iter().map(u16::from).collect())),
            Function::InputRegister => ctx.read_input_registers(address, count).await,
            Function::HoldingRegister => ctx.read_holding_registers(address, count).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Probe::Silent,
        Ok(Err(e)) => Probe::Error(e.to_string()),
        Ok(Ok(Err(code))) => Probe::Exception(u8::from(code)),
        Ok(Ok(Ok(words))) => Probe::Answers(words),
    }
}

/// The readable sub-ranges of `range`: whole blocks are tried first and split in halves
/// where the device refuses, so a sparse map costs few requests.
pub async fn readable_ranges(
    ctx: &mut Context,
    unit: u8,
    function: Function,
    range: RangeInclusive<u16>,
    timeout: Duration,
    mut progress: impl FnMut(u16),
) -> Result<Vec<RangeInclusive<u16>>, String> {
    let max = function.max_per_request() as u32;
    let mut todo: Vec<(u32, u32)> = Vec::new(); // (start, count), processed in address order
    let (start, end) = (*range.start() as u32, *range.end() as u32);
    let mut a = start;
    while a <= end {
        let n = max.min(end - a + 1);
        todo.push((a, n));
        a += n;
    }
    todo.reverse();
    let mut found: Vec<RangeInclusive<u16>> = Vec::new();
    while let Some((a, n)) = todo.pop() {
        progress(a as u16);
        match read(ctx, unit, function, a as u16, n as u16, timeout).await {
            Probe::Answers(_) => {
                let r = a as u16..=(a + n - 1) as u16;
                match found.last_mut() {
                    Some(last) if *last.end() as u32 + 1 == a => *last = *last.start()..=*r.end(),
                    _ => found.push(r),
                }
            }
            Probe::Exception(_) if n > 1 => {
                let half = n / 2;
                todo.push((a + half, n - half));
                todo.push((a, half));
            }
            Probe::Exception(_) => {}
            Probe::Silent => return Err(format!("unit {unit} stopped answering at address {a}")),
            Probe::Error(e) => return Err(e),
        }
    }
    Ok(found)
}
