//! Many fresh and resume handshakes at once against a connection set with
//! small limits, while sessions park (retaining bytes), finish, abort and
//! expire as the operations say. After every step: parked sessions, parked
//! bytes and tombstones stay within the configured limits, only parked
//! sessions are evicted, only overdue ones expire, and every admission gets
//! the answer the model in `ft_session_fuzz` predicts.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use ft_session_core::frame::{ClientHello, Params};
use ft_session_fuzz::{Harness, Limits};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    /// `n` fresh hellos back to back.
    Flood { n: u8 },
    /// Every session whose bit is set parks, retaining `bytes` each.
    Park { mask: u64, bytes: u16 },
    /// Every session whose bit is set resumes (valid proof, next attempt),
    /// and the same resume is replayed right after when `replay` is set.
    Resume { mask: u64, replay: bool },
    /// Every session whose bit is set ends (aborts when `abort`).
    Finish { mask: u64, abort: bool },
    /// Virtual time passes (up to ~4 minutes, past max_reconnect_time).
    Advance { ms: u16 },
}

#[derive(Debug, Arbitrary)]
struct Case {
    seed: u64,
    max_sessions: u8,
    max_parked: u8,
    budget: u32,
    ops: Vec<Op>,
}

// Tests own the clock the core is handed.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

fn selected(mask: u64, n: usize) -> impl Iterator<Item = usize> {
    (0..n.min(64)).filter(move |i| mask & (1 << i) != 0)
}

fuzz_target!(|case: Case| {
    let mut h = Harness::new(
        start(),
        case.seed,
        Limits {
            max_sessions: 1 + usize::from(case.max_sessions % 48),
            max_parked: usize::from(case.max_parked % 17),
            parked_bytes_budget: u64::from(case.budget % (1 << 18)),
        },
    );
    for op in case.ops.into_iter().take(48) {
        match op {
            Op::Flood { n } => {
                for _ in 0..(n % 32) {
                    h.admit(ClientHello::Fresh(Params::default()));
                }
            }
            Op::Park { mask, bytes } => {
                for i in selected(mask, h.known.len()) {
                    h.park(i, usize::from(bytes));
                }
            }
            Op::Resume { mask, replay } => {
                for i in selected(mask, h.known.len()) {
                    let Some(r) = h.valid_resume(i, 1, 0, 0, Params::default()) else {
                        continue;
                    };
                    let resumed = h.stats.resumed;
                    h.admit(ClientHello::Resume(r.clone()));
                    if replay {
                        let after = h.stats.resumed;
                        h.admit(ClientHello::Resume(r));
                        assert_eq!(h.stats.resumed, after, "a replayed resume was admitted");
                    }
                    assert!(h.stats.resumed <= resumed + 1);
                }
            }
            Op::Finish { mask, abort } => {
                for i in selected(mask, h.known.len()) {
                    h.finish(i, abort.then_some(0x1234));
                }
            }
            Op::Advance { ms } => h.advance(Duration::from_millis(u64::from(ms) * 4)),
        }
    }
    h.check_limits();
});
