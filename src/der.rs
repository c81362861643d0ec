//! The two bits of DER an ECC identity needs (gateway and cloud): a P-256 SubjectPublicKeyInfo and an
//! ECDSA signature (SEQUENCE of two INTEGERs) from the r and s a TPM returns.

/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING } up to the point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

pub fn p256_spki(point: &[u8]) -> Vec<u8> {
    let mut v = P256_SPKI_PREFIX.to_vec();
    v.extend_from_slice(point);
    v
}

/// A DER INTEGER of an unsigned big-endian number.
fn integer(out: &mut Vec<u8>, n: &[u8]) {
    let mut n = n;
    while n.len() > 1 && n[0] == 0 {
        n = &n[1..];
    }
    let pad = n.first().is_some_and(|b| b & 0x80 != 0);
    out.push(0x02);
    out.push((n.len() + pad as usize) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(n);
}

/// ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (both at most 33 bytes here).
pub fn ecdsa_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(72);
    integer(&mut body, r);
    integer(&mut body, s);
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_ring() {
        use ring::signature::{
            EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING,
        };
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        for i in 0..50u8 {
            let msg = [i; 40];
            let fixed = kp.sign(&rng, &msg).unwrap();
            let (r, s) = fixed.as_ref().split_at(32);
            let der = ecdsa_signature(r, s);
            ring::signature::UnparsedPublicKey::new(
                &ECDSA_P256_SHA256_ASN1,
                kp.public_key().as_ref(),
            )
            .verify(&msg, &der)
            .unwrap();
        }
        assert_eq!(p256_spki(&[4; 65]).len(), 91);
    }
}
