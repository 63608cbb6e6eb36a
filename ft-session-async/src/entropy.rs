//! Operating-system randomness for session ids, secrets and jitter seeds.

use ft_session_core::Entropy;

/// The operating system's CSPRNG (through `getrandom`), as the core's [`Entropy`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        // Session secrets must never come from a weak fallback: without OS
        // randomness there is no safe way to continue.
        if let Err(e) = getrandom::fill(dest) {
            panic!("operating system randomness unavailable: {e}");
        }
    }
}

impl OsEntropy {
    /// 64 random bits (a client's reconnect-jitter seed).
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }
}
