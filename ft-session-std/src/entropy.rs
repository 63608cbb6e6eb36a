//! The operating system's CSPRNG for session ids, secrets and jitter seeds.

use ft_session_core::Entropy;

/// [`Entropy`] from the operating system (`getrandom`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        // Without OS randomness session secrets would be guessable: refusing
        // to run is the only safe answer, and `Entropy::fill` cannot fail.
        #[allow(clippy::expect_used)]
        getrandom::fill(dest).expect("the operating system's random source failed");
    }
}

/// A random seed for the core's reconnect jitter.
pub(crate) fn seed() -> u64 {
    let mut b = [0u8; 8];
    OsEntropy.fill(&mut b);
    u64::from_le_bytes(b)
}
