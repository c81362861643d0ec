//! Checking an image against its verified release as the bytes arrive: never more than
//! the declared length (endless data), and only a clean end with the declared hash
//! counts. Whoever writes the bytes writes them to staging and acts only on `finish`.

use super::{Image, Refusal};
use sha2::Digest;

pub struct ImageCheck {
    declared: Image,
    hasher: sha2::Sha256,
    seen: u64,
}

impl ImageCheck {
    pub fn new(declared: &Image) -> ImageCheck {
        ImageCheck {
            declared: declared.clone(),
            hasher: sha2::Sha256::new(),
            seen: 0,
        }
    }

    /// How many bytes were checked so far: where a resumed download goes on from (it
    /// feeds its staging file through the check again first).
    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    /// The length the release declares.
    pub fn declared_length(&self) -> u64 {
        self.declared.length
    }

    /// The next bytes; refused as soon as they go past the declared length.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let n = self.seen.saturating_add(chunk.len() as u64);
        if n > self.declared.length {
            return Err(Refusal::TooLong {
                declared: self.declared.length,
            });
        }
        self.hasher.update(chunk);
        self.seen = n;
        Ok(())
    }

    /// The end of the stream: the image is the one the release names, or it is refused.
    pub fn finish(self) -> Result<(), Refusal> {
        if self.seen != self.declared.length {
            return Err(Refusal::TooShort {
                declared: self.declared.length,
                got: self.seen,
            });
        }
        let got = crate::hex::encode(&self.hasher.finalize());
        if !got.eq_ignore_ascii_case(&self.declared.sha256) {
            return Err(Refusal::Hash {
                declared: self.declared.sha256.clone(),
                got,
            });
        }
        Ok(())
    }
}

/// The `Image` entry for `bytes` (the release tool writes it).
pub fn describe(bytes: &[u8], install: super::Install) -> Image {
    Image {
        sha256: crate::hex::encode(&sha2::Sha256::digest(bytes)),
        length: bytes.len() as u64,
        install,
    }
}
