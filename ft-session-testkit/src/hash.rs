//! SHA-256 helpers for comparing what was sent with what arrived.

use sha2::{Digest, Sha256};
use std::io;

/// Lower-case hexadecimal encoding of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// The SHA-256 of `data` as 64 lower-case hex characters.
pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

/// Incrementally hashes a byte stream and counts its length, so a test can check a
/// 64 MiB transfer without holding it in memory.
///
/// Also implements [`io::Write`] (every write is accepted whole), so it can be the
/// sink of [`io::copy`].
#[derive(Clone, Debug, Default)]
pub struct Sha256Tracker {
    hasher: Sha256,
    bytes: u64,
}

impl Sha256Tracker {
    /// An empty tracker (hash of the empty stream, 0 bytes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `data` into the hash and adds its length to the count.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    /// How many bytes have been fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The hex SHA-256 of everything fed so far; the tracker can keep going.
    pub fn hex(&self) -> String {
        to_hex(&self.hasher.clone().finalize())
    }

    /// The hex SHA-256 of everything fed, consuming the tracker.
    pub fn finish(self) -> String {
        to_hex(&self.hasher.finalize())
    }
}

impl io::Write for Sha256Tracker {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Sha256Tracker::new().finish(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn tracker_matches_one_shot() {
        let data = crate::pattern(3, 100_000);
        let mut t = Sha256Tracker::new();
        for chunk in data.chunks(777) {
            t.update(chunk);
        }
        assert_eq!(t.bytes(), 100_000);
        assert_eq!(t.hex(), sha256_hex(&data));
        assert_eq!(t.finish(), sha256_hex(&data));
    }
}
