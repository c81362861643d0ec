//! Hex text for bytes: the one encoder and decoder of the project (tokens, fingerprints,
//! TPM blobs, CAN payloads, stored bytes).

/// Lowercase hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    encode_with(bytes, b"0123456789abcdef")
}

/// Uppercase hex (as candump prints payloads).
pub fn encode_upper(bytes: &[u8]) -> String {
    encode_with(bytes, b"0123456789ABCDEF")
}

fn encode_with(bytes: &[u8], digits: &[u8; 16]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digits[(b >> 4) as usize] as char);
        out.push(digits[(b & 15) as usize] as char);
    }
    out
}

/// The bytes of hex text (either case); None if it is not whole bytes of hex digits.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    // Digits only: `from_str_radix` alone would take a sign ("+1").
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
            Some((digit(pair[0])? << 4) | digit(pair[1])?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_hex() {
        let bytes = [0u8, 1, 0x7f, 0xab, 0xff];
        assert_eq!(encode(&bytes), "00017fabff");
        assert_eq!(encode_upper(&bytes), "00017FABFF");
        assert_eq!(decode("00017FabfF").unwrap(), bytes);
        for bad in ["0", "0g", "+1", "é0"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
