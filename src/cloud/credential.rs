//! Proof that a key lives in a given TPM, without a TPM in the cloud: TPM2_MakeCredential
//! done in software for an ECC P-256 endorsement key (TPM 2.0 Part 1, "Credential
//! Protection" and Annex C.6 "ECDH secret sharing"), and a parser for the key's public
//! area (TPMT_PUBLIC) whose hash is the key's name.
//!
//! The credential can only be recovered by TPM2_ActivateCredential in the TPM that holds
//! the EK's private part, and only for an object with exactly that name loaded in it.

use ring::{agreement, digest, hmac};

const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_ECDAA: u16 = 0x001A;
const TPM_ECC_NIST_P256: u16 = 0x0003;

/// Object attribute bits (TPMA_OBJECT).
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}

/// What the cloud needs from a key's TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// nameAlg || SHA-256(TPMT_PUBLIC): the name MakeCredential binds to.
    pub name: Vec<u8>,
    pub attributes: u32,
    /// The uncompressed point 0x04 || x || y.
    pub point: Vec<u8>,
}

/// Why a key's public area was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPublic(pub &'static str);

impl From<&'static str> for BadPublic {
    fn from(why: &'static str) -> BadPublic {
        BadPublic(why)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u16(&mut self) -> Result<u16, BadPublic> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, BadPublic> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn take(&mut self, n: usize) -> Result<&[u8], BadPublic> {
        if self.0.len() < n {
            return Err("the public area is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn sized(&mut self) -> Result<&[u8], BadPublic> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// Parses an ECC P-256 key's TPMT_PUBLIC (as TPM2_ReadPublic returns it).
pub fn parse_ecc_public(bytes: &[u8]) -> Result<TpmPublic, BadPublic> {
    let mut r = Reader(bytes);
    if r.u16()? != TPM_ALG_ECC {
        return Err("not an ECC key".into());
    }
    if r.u16()? != TPM_ALG_SHA256 {
        return Err("its name algorithm is not SHA-256".into());
    }
    let attributes = r.u32()?;
    r.sized()?; // authPolicy
    if r.u16()? != TPM_ALG_NULL {
        r.u16()?; // keyBits
        r.u16()?; // mode
    }
    let scheme = r.u16()?;
    if scheme != TPM_ALG_NULL {
        r.u16()?; // hashAlg
        if scheme == TPM_ALG_ECDAA {
            r.u16()?; // count
        }
    }
    if r.u16()? != TPM_ECC_NIST_P256 {
        return Err("not on curve P-256".into());
    }
    if r.u16()? != TPM_ALG_NULL {
        r.u16()?; // kdf hashAlg
    }
    let (x, y) = (r.sized()?.to_vec(), r.sized()?.to_vec());
    if x.len() > 32 || y.len() > 32 || !r.0.is_empty() {
        return Err("the public point is malformed".into());
    }
    let mut point = vec![4u8];
    for c in [&x, &y] {
        point.extend(std::iter::repeat_n(0, 32 - c.len()));
        point.extend_from_slice(c);
    }
    let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    Ok(TpmPublic {
        name,
        attributes,
        point,
    })
}

/// KDFa (SP 800-108 counter mode with HMAC-SHA-256) as the TPM defines it.
fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = Vec::new();
    let mut counter = 1u32;
    while out.len() * 8 < bits as usize {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(bits as usize / 8);
    out
}

/// KDFe (SP 800-56A concatenation KDF with SHA-256) as the TPM defines it.
fn kdfe(z: &[u8], label: &str, party_u: &[u8], party_v: &[u8], bits: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter = 1u32;
    while out.len() * 8 < bits as usize {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&counter.to_be_bytes());
        ctx.update(z);
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(party_u);
        ctx.update(party_v);
        out.extend_from_slice(ctx.finish().as_ref());
        counter += 1;
    }
    out.truncate(bits as usize / 8);
    out
}

fn tpm2b(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// TPM2_MakeCredential for an ECC P-256 EK with the default template's AES-128-CFB:
/// returns (credentialBlob, secret) as the contents of TPM2B_ID_OBJECT and
/// TPM2B_ENCRYPTED_SECRET, for `credential` bound to the object named `name`.
pub fn make_credential(
    ek_point: &[u8],
    name: &[u8],
    credential: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), String> {
    use aes::cipher::{AsyncStreamCipher, KeyIvInit};
    if ek_point.len() != 65 || ek_point[0] != 4 {
        return Err("the EK is not an uncompressed P-256 point".into());
    }
    if credential.len() > 64 {
        return Err("the credential is too long".into());
    }
    let rng = ring::rand::SystemRandom::new();
    let eph = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|e| e.to_string())?;
    let eph_pub = eph.compute_public_key().map_err(|e| e.to_string())?;
    let eph_pub = eph_pub.as_ref().to_vec();
    let z = agreement::agree_ephemeral(
        eph,
        &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ek_point),
        |z| z.to_vec(),
    )
    .map_err(|_| "the EK is not a valid P-256 point".to_string())?;
    let seed = kdfe(&z, "IDENTITY", &eph_pub[1..33], &ek_point[1..33], 256);
    let mut secret = Vec::new();
    tpm2b(&mut secret, &eph_pub[1..33]);
    tpm2b(&mut secret, &eph_pub[33..65]);
    let sym = kdfa(&seed, "STORAGE", name, &[], 128);
    let mut enc_identity = Vec::new();
    tpm2b(&mut enc_identity, credential);
    cfb_mode::Encryptor::<aes::Aes128>::new(sym.as_slice().into(), &[0u8; 16].into())
        .encrypt(&mut enc_identity);
    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &hmac_key));
    ctx.update(&enc_identity);
    ctx.update(name);
    let outer = ctx.sign();
    let mut blob = Vec::new();
    tpm2b(&mut blob, outer.as_ref());
    blob.extend_from_slice(&enc_identity);
    Ok((blob, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_what_is_not_an_ecc_p256_key() {
        assert!(parse_ecc_public(&[]).is_err());
        assert!(parse_ecc_public(&[0, 1, 0, 11, 0, 0, 0, 0])
            .unwrap_err()
            .0
            .contains("not an ECC"));
        // Random bytes never panic.
        let mut x = 0x1234_5678u32;
        for n in 0..2000 {
            let v: Vec<u8> = (0..(n % 120))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let mut v2 = vec![0, 0x23, 0, 0x0B];
            v2.extend(&v);
            let _ = parse_ecc_public(&v2);
        }
    }

    #[test]
    fn kdfa_matches_the_tpm_test_vector_shape() {
        // KDFa output length follows the bits asked for; deterministic.
        assert_eq!(kdfa(b"k", "STORAGE", b"n", b"", 128).len(), 16);
        assert_eq!(
            kdfa(b"k", "STORAGE", b"n", b"", 128),
            kdfa(b"k", "STORAGE", b"n", b"", 128)
        );
        assert_ne!(
            kdfa(b"k", "STORAGE", b"n", b"", 256)[..16],
            kdfa(b"k", "INTEGRITY", b"n", b"", 256)[..16]
        );
    }
}
