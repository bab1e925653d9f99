//! Digests of what an output depends on: named fields, each length-prefixed so that no two different
//! lists of fields hash alike, and the SHA-256 of a file's bytes.

use std::path::Path;

use sha2::Sha256;

use crate::error::{Error, Result};

/// A SHA-256 over named, length-prefixed fields (`u64` little-endian lengths).
#[derive(Clone, Default)]
pub struct Digest(Sha256);

impl Digest {
    /// An empty digest.
    pub fn new() -> Self {
        Digest(<Sha256 as sha2::Digest>::new())
    }

    /// Adds one length-prefixed byte string.
    pub fn part(&mut self, v: &[u8]) -> &mut Self {
        sha2::Digest::update(&mut self.0, (v.len() as u64).to_le_bytes());
        sha2::Digest::update(&mut self.0, v);
        self
    }

    /// Adds a named field: the name, then the value, both length-prefixed.
    pub fn field(&mut self, name: &str, v: &[u8]) -> &mut Self {
        self.part(name.as_bytes()).part(v)
    }

    /// Adds raw bytes without a length prefix (fixed-size values such as another digest).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        sha2::Digest::update(&mut self.0, v);
        self
    }

    /// The digest as 32 bytes.
    pub fn bytes(self) -> [u8; 32] {
        sha2::Digest::finalize(self.0).into()
    }

    /// The digest as lowercase hex.
    pub fn hex(self) -> String {
        hex::encode(self.bytes())
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    <Sha256 as sha2::Digest>::digest(bytes).into()
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// SHA-256 of a file's bytes, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(sha256_hex(&bytes))
}

/// A digest of labelled strings (`[(name, value)]`), hex.
pub fn of_strings(parts: &[(&str, &str)]) -> String {
    let mut d = Digest::new();
    for (k, v) in parts {
        d.field(k, v.as_bytes());
    }
    d.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed() {
        assert_ne!(
            of_strings(&[("a", "bc")]),
            of_strings(&[("ab", "c")]),
            "moving a byte between name and value changes the digest"
        );
        assert_eq!(of_strings(&[("a", "b")]), of_strings(&[("a", "b")]));
    }
}
