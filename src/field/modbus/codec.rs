//! Register decoding and encoding: plain functions from 16-bit words to values and back.

use crate::model::registers::{DataType, WordOrder};
use crate::sample::Value;

/// Why registers could not be turned into a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("{ty} needs {need} registers, got {got}")]
    Short {
        ty: DataType,
        need: usize,
        got: usize,
    },
    #[error("bit {0} is outside a 16-bit register")]
    BadBit(u8),
    #[error("value {value} does not fit {ty}")]
    OutOfRange { value: String, ty: DataType },
}

/// Puts the registers into big-endian byte order (ABCD) according to `order`.
fn to_be_bytes(words: &[u16], order: WordOrder) -> Vec<u8> {
    let mut ws: Vec<u16> = words.to_vec();
    if order.swaps_words() {
        ws.reverse();
    }
    ws.iter()
        .flat_map(|w| {
            let b = w.to_be_bytes();
            if order.swaps_bytes() {
                [b[1], b[0]]
            } else {
                b
            }
        })
        .collect()
}

/// The inverse of `to_be_bytes`.
fn from_be_bytes(bytes: &[u8], order: WordOrder) -> Vec<u16> {
    let mut ws: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let (a, b) = (c[0], *c.get(1).unwrap_or(&0));
            if order.swaps_bytes() {
                u16::from_be_bytes([b, a])
            } else {
                u16::from_be_bytes([a, b])
            }
        })
        .collect();
    if order.swaps_words() {
        ws.reverse();
    }
    ws
}

/// Decodes a register value (before scale and offset).
pub fn decode(words: &[u16], ty: DataType, order: WordOrder, bit: u8) -> Result<Value, CodecError> {
    let need = ty.width(words.len() as u16) as usize;
    if words.len() < need || need == 0 {
        return Err(CodecError::Short {
            ty,
            need: need.max(1),
            got: words.len(),
        });
    }
    let words = &words[..need];
    // 16-bit values: word order is meaningless, byte swap applies.
    let w16 = || {
        let w = words[0];
        if order.swaps_bytes() {
            w.swap_bytes()
        } else {
            w
        }
    };
    let b = || to_be_bytes(words, order);
    Ok(match ty {
        DataType::Bool => Value::Bool(words[0] != 0),
        DataType::Bit => {
            if bit > 15 {
                return Err(CodecError::BadBit(bit));
            }
            Value::Bool(w16() >> bit & 1 == 1)
        }
        DataType::U16 => Value::UInt(w16() as u64),
        DataType::I16 => Value::Int(w16() as i16 as i64),
        DataType::U32 => Value::UInt(u32::from_be_bytes(arr(&b())) as u64),
        DataType::I32 => Value::Int(i32::from_be_bytes(arr(&b())) as i64),
        DataType::F32 => Value::Float(widen(f32::from_be_bytes(arr(&b())))),
        DataType::U64 => Value::UInt(u64::from_be_bytes(arr(&b()))),
        DataType::I64 => Value::Int(i64::from_be_bytes(arr(&b()))),
        DataType::F64 => Value::Float(f64::from_be_bytes(arr(&b()))),
        DataType::String => {
            let bytes = if order.swaps_bytes() {
                to_be_bytes(words, WordOrder::BADC)
            } else {
                to_be_bytes(words, WordOrder::ABCD)
            };
            let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
            Value::Str(
                String::from_utf8_lossy(&bytes[..end])
                    .trim_end()
                    .to_string(),
            )
        }
    })
}

/// An f32 as the f64 with the same shortest decimal form (123.456f32 becomes 123.456,
/// not 123.45600128173828), so stored values read as the device meant them.
fn widen(x: f32) -> f64 {
    if x.is_finite() {
        x.to_string().parse().unwrap_or(x as f64)
    } else {
        x as f64
    }
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// Applies `raw * scale + offset`; integers stay integers when scale is 1 and offset 0.
pub fn scale(v: Value, scale: f64, offset: f64) -> Value {
    if scale == 1.0 && offset == 0.0 {
        return v;
    }
    match v.as_f64() {
        Some(x) if !matches!(v, Value::Bool(_)) => Value::Float(x * scale + offset),
        _ => v,
    }
}

/// Encodes a value into registers (used by the simulator and by tests).
pub fn encode(
    v: &Value,
    ty: DataType,
    order: WordOrder,
    length: u16,
) -> Result<Vec<u16>, CodecError> {
    let range = || CodecError::OutOfRange {
        value: v.to_string(),
        ty,
    };
    let int = || -> Result<i128, CodecError> {
        match *v {
            Value::Int(i) => Ok(i as i128),
            Value::UInt(u) => Ok(u as i128),
            Value::Float(f) if f.is_finite() => Ok(f.round() as i128),
            Value::Bool(b) => Ok(b as i128),
            _ => Err(range()),
        }
    };
    let float = || v.as_f64().ok_or_else(range);
    let bytes: Vec<u8> = match ty {
        DataType::Bool | DataType::Bit => return Ok(vec![int()? as u16 & 1]),
        DataType::U16 => u16::try_from(int()?)
            .map_err(|_| range())?
            .to_be_bytes()
            .to_vec(),
        DataType::I16 => i16::try_from(int()?)
            .map_err(|_| range())?
            .to_be_bytes()
            .to_vec(),
        DataType::U32 => u32::try_from(int()?)
            .map_err(|_| range())?
            .to_be_bytes()
            .to_vec(),
        DataType::I32 => i32::try_from(int()?)
            .map_err(|_| range())?
            .to_be_bytes()
            .to_vec(),
        DataType::U64 => u64::try_from(int()?)
            .map_err(|_| range())?
            .to_be_bytes()
            .to_vec(),
        DataType::I64 => i64::try_from(int()?)
            .map_err(|_| range())?
            .to_be_bytes()
            .to_vec(),
        DataType::F32 => (float()? as f32).to_be_bytes().to_vec(),
        DataType::F64 => float()?.to_be_bytes().to_vec(),
        DataType::String => {
            let Value::Str(s) = v else {
                return Err(range());
            };
            let mut b = s.as_bytes().to_vec();
            if b.len() > length as usize * 2 {
                return Err(range());
            }
            b.resize(length as usize * 2, 0);
            let o = if order.swaps_bytes() {
                WordOrder::BADC
            } else {
                WordOrder::ABCD
            };
            return Ok(from_be_bytes(&b, o));
        }
    };
    if bytes.len() == 2 {
        let w = u16::from_be_bytes([bytes[0], bytes[1]]);
        return Ok(vec![if order.swaps_bytes() {
            w.swap_bytes()
        } else {
            w
        }]);
    }
    Ok(from_be_bytes(&bytes, order))
}

/// Every reading of `words` as `ty` in each of the four word orders, for `modbus read`.
pub fn all_orders(
    words: &[u16],
    ty: DataType,
    bit: u8,
) -> Vec<(WordOrder, Result<Value, CodecError>)> {
    WordOrder::ALL
        .iter()
        .map(|&o| (o, decode(words, ty, o, bit)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;
    use WordOrder::*;

    #[test]
    fn f32_in_every_order_by_hand() {
        // 123.456f32 = 0x42F6E979: A=42 B=F6 C=E9 D=79
        let v = |w: &[u16], o| decode(w, F32, o, 0).unwrap().as_f64().unwrap() as f32;
        assert_eq!(v(&[0x42F6, 0xE979], ABCD), 123.456);
        assert_eq!(v(&[0xE979, 0x42F6], CDAB), 123.456);
        assert_eq!(v(&[0xF642, 0x79E9], BADC), 123.456);
        assert_eq!(v(&[0x79E9, 0xF642], DCBA), 123.456);
    }

    #[test]
    fn integers_by_hand() {
        assert_eq!(decode(&[0xFFFE], I16, ABCD, 0), Ok(Value::Int(-2)));
        assert_eq!(decode(&[0xFEFF], I16, BADC, 0), Ok(Value::Int(-2)));
        assert_eq!(
            decode(&[0x0001, 0x0002], U32, ABCD, 0),
            Ok(Value::UInt(0x0001_0002))
        );
        assert_eq!(
            decode(&[0x0001, 0x0002], U32, CDAB, 0),
            Ok(Value::UInt(0x0002_0001))
        );
        assert_eq!(
            decode(&[0x0102, 0x0304, 0x0506, 0x0708], U64, ABCD, 0),
            Ok(Value::UInt(0x0102_0304_0506_0708))
        );
        assert_eq!(
            decode(&[0x0708, 0x0506, 0x0304, 0x0102], U64, CDAB, 0),
            Ok(Value::UInt(0x0102_0304_0506_0708))
        );
        assert_eq!(
            decode(&[0x0807, 0x0605, 0x0403, 0x0201], U64, DCBA, 0),
            Ok(Value::UInt(0x0102_0304_0506_0708))
        );
        assert_eq!(
            decode(&[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], I64, ABCD, 0),
            Ok(Value::Int(-1))
        );
        assert_eq!(decode(&[0b100], Bit, ABCD, 2), Ok(Value::Bool(true)));
        assert_eq!(decode(&[0b100], Bit, ABCD, 1), Ok(Value::Bool(false)));
        assert_eq!(
            decode(&[0x4142, 0x4300], String, ABCD, 0),
            Ok(Value::Str("ABC".into()))
        );
        assert_eq!(
            decode(&[0x4241, 0x0043], String, BADC, 0),
            Ok(Value::Str("ABC".into()))
        );
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        assert!(matches!(
            decode(&[1], F64, ABCD, 0),
            Err(CodecError::Short { .. })
        ));
        assert!(matches!(
            decode(&[], U16, ABCD, 0),
            Err(CodecError::Short { .. })
        ));
        assert_eq!(decode(&[1], Bit, ABCD, 16), Err(CodecError::BadBit(16)));
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        let cases = [
            (Value::UInt(54321), U16),
            (Value::Int(-1234), I16),
            (Value::UInt(4_000_000_000), U32),
            (Value::Int(-2_000_000_000), I32),
            (Value::UInt(u64::MAX - 5), U64),
            (Value::Int(i64::MIN + 7), I64),
            (Value::Float(-1.5), F32),
            (Value::Float(std::f64::consts::PI), F64),
            (Value::Str("SN-12345".into()), String),
        ];
        for (v, ty) in cases {
            for o in WordOrder::ALL {
                let w = encode(&v, ty, o, 5).unwrap();
                assert_eq!(decode(&w, ty, o, 0).unwrap(), v, "{ty} {o}");
            }
        }
        assert!(encode(&Value::Int(70000), U16, ABCD, 0).is_err());
    }

    #[test]
    fn scaling() {
        assert_eq!(scale(Value::UInt(2305), 0.1, 0.0).as_f64().unwrap(), 230.5);
        assert_eq!(scale(Value::Int(7), 1.0, 0.0), Value::Int(7));
        assert_eq!(scale(Value::Bool(true), 2.0, 0.0), Value::Bool(true));
    }
}
