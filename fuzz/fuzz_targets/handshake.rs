//! Hello and resume messages against a connection set holding a few real
//! sessions: arbitrary messages, valid resumes (proofs computed with the real
//! secrets), byte mutations and truncations of valid resumes, exact replays
//! and raw bytes, all read through a `HandshakeReader` in chunks. The oracle in
//! `ft_session_fuzz` checks every answer (forged, replayed and truncated
//! resumes are refused with UnknownSession or never admitted; a valid fresh
//! resume is admitted exactly once) and the set's limits after every step.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::BytesMut;
use ft_session_core::frame::{ClientHello, Params};
use ft_session_fuzz::{Harness, Limits};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    /// Any message the client could send, mostly forged resumes.
    Hello { hello: ClientHello, chunk: u8 },
    /// A fresh session.
    Fresh(Params),
    /// A resume with a valid proof; `step` 0 repeats the last attempt.
    Resume {
        who: u8,
        step: u8,
        received: u16,
        retained_from: u16,
        params: Params,
        chunk: u8,
    },
    /// A valid resume with bytes flipped and/or cut short.
    Mutated {
        who: u8,
        step: u8,
        edits: Vec<(u8, u8)>,
        cut: Option<u8>,
        chunk: u8,
    },
    /// The exact bytes of a resume admitted earlier.
    Replay { which: u8, chunk: u8 },
    /// Raw bytes where a hello belongs.
    Raw { bytes: Vec<u8>, chunk: u8 },
    /// A session retains bytes and loses its transport.
    Park { who: u8, bytes: u16 },
    /// A session ends cleanly, or aborts with a code.
    Finish { who: u8, abort: Option<u16> },
    /// Virtual time passes.
    Advance { ms: u16 },
}

#[derive(Debug, Arbitrary)]
struct Case {
    seed: u64,
    sessions: u8,
    max_parked: u8,
    budget: u16,
    ops: Vec<Op>,
}

fn encode(h: &ClientHello) -> Vec<u8> {
    let mut b = BytesMut::new();
    h.encode(&mut b);
    b.to_vec()
}

// Tests own the clock the core is handed.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

fuzz_target!(|case: Case| {
    let mut h = Harness::new(
        start(),
        case.seed,
        Limits {
            max_sessions: 6,
            max_parked: usize::from(case.max_parked % 4),
            parked_bytes_budget: u64::from(case.budget),
        },
    );
    // A few real sessions, admitted as any client would be.
    for _ in 0..(1 + case.sessions % 4) {
        h.admit(ClientHello::Fresh(Params::default()));
    }
    for op in case.ops.into_iter().take(64) {
        match op {
            Op::Hello { hello, chunk } => {
                // Arbitrary messages survive the trip through the wire format.
                let bytes = encode(&hello);
                let read = h.read_hello(&bytes, usize::from(chunk));
                assert_eq!(
                    read.as_ref(),
                    Some(&hello),
                    "a well-formed hello decodes as sent"
                );
                h.admit(hello);
            }
            Op::Fresh(p) => h.admit(ClientHello::Fresh(p)),
            Op::Resume {
                who,
                step,
                received,
                retained_from,
                params,
                chunk,
            } => {
                let Some(r) = h.valid_resume(
                    usize::from(who),
                    u64::from(step),
                    u64::from(received),
                    u64::from(retained_from),
                    params,
                ) else {
                    continue;
                };
                let bytes = encode(&ClientHello::Resume(r));
                if let Some(hello) = h.read_hello(&bytes, usize::from(chunk)) {
                    h.admit(hello);
                }
            }
            Op::Mutated {
                who,
                step,
                edits,
                cut,
                chunk,
            } => {
                let Some(r) = h.valid_resume(
                    usize::from(who),
                    u64::from(step).max(1),
                    0,
                    0,
                    Params::default(),
                ) else {
                    continue;
                };
                let mut bytes = encode(&ClientHello::Resume(r));
                for (at, x) in edits.into_iter().take(8) {
                    let len = bytes.len();
                    bytes[usize::from(at) % len] ^= x;
                }
                let truncated = cut.is_some_and(|c| usize::from(c) < bytes.len());
                if let Some(c) = cut {
                    bytes.truncate(usize::from(c));
                }
                match h.read_hello(&bytes, usize::from(chunk)) {
                    Some(hello) => {
                        // A cut RESUME can still hold a whole shorter message
                        // (a flipped type byte makes it a HELLO), never a RESUME.
                        let is_resume = matches!(hello, ClientHello::Resume(_));
                        assert!(
                            !(truncated && is_resume),
                            "a truncated resume was read as complete"
                        );
                        h.admit(hello);
                    }
                    None => h.advance(h.set.config().handshake_timeout),
                }
            }
            Op::Replay { which, chunk } => {
                if h.admitted_resumes.is_empty() {
                    continue;
                }
                let bytes =
                    h.admitted_resumes[usize::from(which) % h.admitted_resumes.len()].clone();
                let resumed = h.stats.resumed;
                if let Some(hello) = h.read_hello(&bytes, usize::from(chunk)) {
                    h.admit(hello);
                }
                assert_eq!(h.stats.resumed, resumed, "a replayed resume was admitted");
            }
            Op::Raw { bytes, chunk } => {
                if let Some(hello) = h.read_hello(&bytes, usize::from(chunk)) {
                    h.admit(hello);
                }
            }
            Op::Park { who, bytes } => h.park(usize::from(who), usize::from(bytes)),
            Op::Finish { who, abort } => h.finish(usize::from(who), abort),
            Op::Advance { ms } => h.advance(Duration::from_millis(u64::from(ms) * 4)),
        }
    }
    h.check_limits();
});
