//! Signal extraction from CAN payloads: Intel (little-endian) and Motorola (big-endian)
//! bit layouts as DBC files number them, sign extension, IEEE floats, factor and offset.
//! Pure functions; payloads up to 64 bytes (CAN FD).

/// How a signal's bits are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// `@1`: the start bit is the least significant bit; bits count up.
    Intel,
    /// `@0`: the start bit is the most significant bit, in DBC's sawtooth numbering
    /// (bit 7 of byte 0 is 7, bit 0 of byte 1 is 8): bits run down a byte, then to bit 7
    /// of the next byte.
    Motorola,
}

/// How the raw bits become a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unsigned,
    Signed,
    /// `SIG_VALTYPE_ 1`: 32 raw bits are an IEEE float.
    Float32,
    /// `SIG_VALTYPE_ 2`: 64 raw bits are an IEEE double.
    Float64,
}

/// The position of a signal in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub start_bit: u16,
    pub size: u16,
    pub order: ByteOrder,
}

impl Layout {
    /// The payload bit positions (byte * 8 + bit in byte, 0 = least significant) of the
    /// signal, from its most significant bit down to its least significant.
    fn bits_msb_first(&self) -> impl Iterator<Item = u32> + '_ {
        let (start, size) = (self.start_bit as u32, self.size as u32);
        let mut pos = start;
        (0..size).map(move |i| match self.order {
            ByteOrder::Intel => start + size - 1 - i,
            ByteOrder::Motorola => {
                let here = pos;
                pos = if pos % 8 == 0 { pos + 15 } else { pos - 1 };
                here
            }
        })
    }

    /// The last byte the signal touches + 1: the payload must be at least this long.
    pub fn bytes_needed(&self) -> usize {
        self.bits_msb_first()
            .map(|b| b as usize / 8 + 1)
            .max()
            .unwrap_or(0)
    }
}

/// The raw bits of a signal, or None if the payload is too short for it.
pub fn extract(data: &[u8], layout: &Layout) -> Option<u64> {
    if layout.size == 0 || layout.size > 64 || data.len() < layout.bytes_needed() {
        return None;
    }
    let mut v: u64 = 0;
    for bit in layout.bits_msb_first() {
        let byte = data[(bit / 8) as usize];
        v = (v << 1) | ((byte >> (bit % 8)) & 1) as u64;
    }
    Some(v)
}

/// The raw value as a number: unsigned, two's complement, or IEEE float.
pub fn interpret(raw: u64, size: u16, kind: Kind) -> f64 {
    match kind {
        Kind::Unsigned => raw as f64,
        Kind::Signed if size == 0 || size >= 64 => raw as i64 as f64,
        Kind::Signed => {
            let shift = 64 - size as u32;
            ((raw << shift) as i64 >> shift) as f64
        }
        Kind::Float32 => f32::from_bits(raw as u32) as f64,
        Kind::Float64 => f64::from_bits(raw),
    }
}

/// The raw integer of a signed or unsigned signal (for value tables and multiplexers).
pub fn integer(raw: u64, size: u16, kind: Kind) -> i64 {
    match kind {
        Kind::Signed if size > 0 && size < 64 => {
            let shift = 64 - size as u32;
            (raw << shift) as i64 >> shift
        }
        _ => raw as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(start_bit: u16, size: u16, order: ByteOrder) -> Layout {
        Layout {
            start_bit,
            size,
            order,
        }
    }

    #[test]
    fn intel_by_hand() {
        // 16-bit little-endian value 0x1234 in bytes 1..3: start bit 8.
        let data = [0x00, 0x34, 0x12, 0, 0, 0, 0, 0];
        assert_eq!(extract(&data, &l(8, 16, ByteOrder::Intel)), Some(0x1234));
        // 4 bits from bit 4 of byte 0: the high nibble.
        assert_eq!(extract(&[0xA5], &l(4, 4, ByteOrder::Intel)), Some(0xA));
        // 12 bits crossing a byte: bits 4..16 of 0xBC 0xA5 read as 0xA5B.
        assert_eq!(
            extract(&[0x5C, 0xA5], &l(4, 12, ByteOrder::Intel)),
            Some(0xA55)
        );
    }

    #[test]
    fn motorola_by_hand() {
        // 16-bit big-endian 0x1234 in bytes 0..2: MSB is bit 7 of byte 0, start bit 7.
        let data = [0x12, 0x34];
        assert_eq!(extract(&data, &l(7, 16, ByteOrder::Motorola)), Some(0x1234));
        // 12 bits from bit 3 of byte 0: low nibble of byte 0, then all of byte 1.
        assert_eq!(
            extract(&[0xF2, 0x34], &l(3, 12, ByteOrder::Motorola)),
            Some(0x234)
        );
        // 4 bits starting at bit 5 (MSB) of byte 1 = bits 13..10: 0b1011 in 0b0010_1100.
        assert_eq!(
            extract(&[0, 0b0010_1100], &l(13, 4, ByteOrder::Motorola)),
            Some(0b1011)
        );
    }

    #[test]
    fn signed_and_float() {
        assert_eq!(interpret(0xFFF, 12, Kind::Signed), -1.0);
        assert_eq!(interpret(0x800, 12, Kind::Signed), -2048.0);
        assert_eq!(interpret(0x7FF, 12, Kind::Signed), 2047.0);
        assert_eq!(interpret(1.5f32.to_bits() as u64, 32, Kind::Float32), 1.5);
        assert_eq!(interpret((-2.25f64).to_bits(), 64, Kind::Float64), -2.25);
        assert_eq!(integer(0xFE, 8, Kind::Signed), -2);
    }

    #[test]
    fn fd_payloads_and_short_frames() {
        let mut data = [0u8; 64];
        data[62] = 0x34;
        data[63] = 0x12;
        assert_eq!(
            extract(&data, &l(62 * 8, 16, ByteOrder::Intel)),
            Some(0x1234)
        );
        assert_eq!(
            extract(&data[..63], &l(62 * 8, 16, ByteOrder::Intel)),
            None,
            "frame shorter than the signal"
        );
        assert_eq!(
            extract(&[0xFF; 8], &l(0, 64, ByteOrder::Intel)),
            Some(u64::MAX)
        );
        assert_eq!(extract(&[0xFF; 8], &l(0, 0, ByteOrder::Intel)), None);
        // a Motorola signal walking off the end of the payload
        assert_eq!(extract(&[0xFF; 2], &l(7, 24, ByteOrder::Motorola)), None);
    }
}
