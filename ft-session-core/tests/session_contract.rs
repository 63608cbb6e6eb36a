//! Small promises of the `Session` and `ConnectionSet` APIs that the big
//! simulations never look at: the getters of a verified resume,
//! `Transmit::is_empty`, `Session::config`, `is_flushed` and partial
//! `Written` reports under the batched contract; the set's limits at their
//! exact boundaries and the tombstone of an evicted proven session. Each
//! test here was written for a mutant of `src/session.rs` or
//! `src/connection_set.rs` that survived the rest of the suite (issue 10,
//! section 4; see `scripts/mutants.sh`).
//!
//! A client `Session` and a server admitted by a `ConnectionSet`, over an
//! in-memory link, in virtual time that never moves: no faults beyond the
//! ones a test makes, no clock.
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use ft_session_core::{
    Admission, ClientHello, Code, Config, ConnectionSet, Event, FrameHead, HandshakeReader,
    HandshakeStep, Input, Output, Params, ReadError, ReleasePolicy, Session, SessionError,
    SessionId, SessionState, SetEvent, Transmit, TransportId, TransportInfo, WriteError,
};
use sha2::{Digest, Sha256};

/// What the client announces on each transport (so its parameters are
/// nothing like the defaults).
const CLIENT_INFO: TransportInfo = TransportInfo {
    send_buffer: Some(32 * 1024),
    recv_buffer: Some(48 * 1024),
};

fn config() -> Config {
    let mut c = Config::default();
    // Acknowledgments every quarter of 8 KiB: the client's retained range
    // moves in a few thousand bytes.
    c.send_buffer_capacity = 8 * 1024;
    c.max_frame_payload = 1024;
    c
}

/// The resume the server was handed, as its getters report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeenResume {
    attempt: u64,
    received: u64,
    retained_from: u64,
    params: Params,
}

struct Pair {
    now: Instant,
    set: ConnectionSet,
    entropy: u64,
    c: Session,
    s: Option<Session>,
    /// The client's current transport and its server end.
    ct: TransportId,
    st: TransportId,
    /// The server end waits for its first message.
    reader: Option<HandshakeReader>,
    /// The link carries bytes.
    up: bool,
    /// Buffer sizes of the next transports, both ends.
    info: TransportInfo,
    resumes: Vec<SeenResume>,
    /// Codes of the set's refusals.
    refused: Vec<Code>,
    c_got: Vec<u8>,
    s_got: Vec<u8>,
    /// The server's application reads what arrives.
    server_reads: bool,
    /// `Writable` events the client emitted.
    c_writable: usize,
}

impl Pair {
    fn new() -> Pair {
        Pair::with_config(config())
    }

    fn with_config(cfg: Config) -> Pair {
        let p = Pair::connect(cfg, CLIENT_INFO);
        assert_eq!(p.c.state(), SessionState::Established);
        assert_eq!(p.s.as_ref().unwrap().state(), SessionState::Established);
        p
    }

    /// Connects with `info` on both ends, whatever comes of it.
    fn connect(cfg: Config, info: TransportInfo) -> Pair {
        let now = Instant::now();
        let mut p = Pair {
            now,
            set: ConnectionSet::new(cfg.clone()),
            entropy: 0x9E37_79B9_7F4A_7C15,
            c: Session::client(cfg, now, 7),
            s: None,
            ct: 0,
            st: 100,
            reader: None,
            up: false,
            info,
            resumes: Vec::new(),
            refused: Vec::new(),
            c_got: Vec::new(),
            s_got: Vec::new(),
            server_reads: true,
            c_writable: 0,
        };
        p.pump();
        p
    }

    fn server(&mut self) -> &mut Session {
        self.s.as_mut().unwrap()
    }

    /// Bytes from the client to the server end of the link.
    fn deliver_to_server(&mut self, bytes: &[u8]) {
        let (now, st) = (self.now, self.st);
        let Some(reader) = self.reader.as_mut() else {
            if let Some(s) = self.s.as_mut() {
                s.handle_input(
                    now,
                    Input::Received {
                        transport: st,
                        data: bytes,
                    },
                );
            }
            return;
        };
        let HandshakeStep::Hello { hello, consumed } = reader.feed(bytes) else {
            return;
        };
        self.reader = None;
        let mut x = self.entropy;
        let mut entropy = |dest: &mut [u8]| {
            for b in dest {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
        };
        let info = self.info;
        let admission = self.set.admit(now, st, info, hello, &mut entropy);
        self.entropy = x;
        match admission {
            Admission::Fresh(s) => self.s = Some(*s),
            Admission::Resume { resume, .. } => {
                self.resumes.push(SeenResume {
                    attempt: resume.attempt(),
                    received: resume.received(),
                    retained_from: resume.retained_from(),
                    params: resume.params(),
                });
                self.server().handle_input(
                    now,
                    Input::Resume {
                        transport: st,
                        resume,
                        info,
                    },
                );
            }
            Admission::Reject { reply, code } => {
                // The reply, then the server closes the transport.
                self.refused.push(code);
                let ct = self.ct;
                self.c.handle_input(
                    now,
                    Input::Received {
                        transport: ct,
                        data: &reply,
                    },
                );
                self.c
                    .handle_input(now, Input::TransportLost { transport: ct });
                self.up = false;
                return;
            }
        }
        let rest = bytes[consumed..].to_vec();
        if !rest.is_empty() {
            self.deliver_to_server(&rest);
        }
    }

    /// Moves everything until nothing moves; bytes are read as they come.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let now = self.now;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = self.c.read(&mut buf) {
                self.c_got.extend_from_slice(&buf[..n]);
                moved = true;
            }
            while let Some(o) = self.c.poll_output() {
                moved = true;
                match o {
                    Output::Connect { transport } => {
                        self.ct = transport;
                        self.st += 1;
                        self.reader = Some(HandshakeReader::new(now, self.set.config()));
                        self.up = true;
                        let info = self.info;
                        self.c
                            .handle_input(now, Input::TransportUp { transport, info });
                    }
                    Output::Transmit(t) if t.transport == self.ct && self.up => {
                        assert!(!t.is_empty(), "a session never polls an empty Transmit");
                        let mut b = Vec::new();
                        t.write_to(&mut b);
                        assert_eq!(b.len(), t.len());
                        self.deliver_to_server(&b);
                    }
                    Output::Event(Event::Writable) => self.c_writable += 1,
                    _ => {}
                }
            }
            let Some(s) = self.s.as_mut() else {
                if moved {
                    continue;
                }
                return;
            };
            while self.server_reads {
                let Ok(n @ 1..) = s.read(&mut buf) else {
                    break;
                };
                self.s_got.extend_from_slice(&buf[..n]);
                moved = true;
            }
            while let Some(o) = s.poll_output() {
                moved = true;
                match o {
                    Output::Transmit(t) if t.transport == self.st && self.up => {
                        let mut b = Vec::new();
                        t.write_to(&mut b);
                        self.c.handle_input(
                            now,
                            Input::Received {
                                transport: self.ct,
                                data: &b,
                            },
                        );
                    }
                    Output::Event(Event::Parked) => self.set.parked(now, s),
                    Output::Event(Event::Finished(r)) => {
                        self.set.finished(now, s.session_id().unwrap(), &r);
                    }
                    _ => {}
                }
            }
            // The set's evictions and expiries of this session.
            let id = s.session_id();
            while let Some(e) = self.set.poll_event() {
                moved = true;
                match e {
                    SetEvent::Evicted(i) if Some(i) == id => s.handle_input(now, Input::Evicted),
                    SetEvent::Expired(i) if Some(i) == id => s.handle_input(now, Input::Timeout),
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// The server sees its transport fail; the client is not told.
    fn server_loses_transport(&mut self) {
        let (now, st) = (self.now, self.st);
        self.up = false;
        self.server()
            .handle_input(now, Input::TransportLost { transport: st });
        self.pump();
    }

    /// Serves the client's timers (its backoff) until `done` holds.
    fn run_client_timers_until(&mut self, done: impl Fn(&Pair) -> bool) {
        for _ in 0..100 {
            if done(self) {
                return;
            }
            let t = self
                .c
                .poll_timeout()
                .expect("the client waits for something");
            self.now = self.now.max(t);
            let now = self.now;
            self.c.handle_input(now, Input::Timeout);
            self.pump();
        }
        panic!("not reached");
    }

    /// The link dies and both ends are told; the client resumes at once.
    fn crash(&mut self) {
        let now = self.now;
        self.up = false;
        let (ct, st) = (self.ct, self.st);
        self.c
            .handle_input(now, Input::TransportLost { transport: ct });
        self.server()
            .handle_input(now, Input::TransportLost { transport: st });
        self.pump();
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn digest(b: &[u8]) -> (usize, [u8; 32]) {
    (b.len(), Sha256::digest(b).into())
}

/// Writes all of `data` to `s` (it must fit).
fn write_all(s: &mut Session, data: &[u8]) {
    assert_eq!(s.write(data).unwrap(), data.len());
}

/// The resume the set verified reports what the client put in its RESUME:
/// its attempt, the bytes it received, the oldest byte it retains, and its
/// parameters on the new transport.
#[test]
fn a_verified_resume_reports_what_the_client_sent() {
    let mut p = Pair::new();
    let (up, down) = (pattern(1, 6000), pattern(2, 5000));
    write_all(&mut p.c, &up);
    write_all(p.server(), &down);
    p.pump();
    assert_eq!(digest(&p.s_got), digest(&up));
    assert_eq!(digest(&p.c_got), digest(&down));
    // The server acknowledged part of the client's stream: the client's
    // retained range no longer starts at 0 (nor at 1).
    let (received, retained_from) = (p.c.received(), p.c.retained_from());
    assert_eq!(received, 5000);
    assert!(retained_from > 1, "nothing released: {retained_from}");
    p.crash();
    assert_eq!(p.c.stats().resumes, 1, "{:?}", p.c.state());
    let expected = SeenResume {
        attempt: p.c.attempt(),
        received,
        retained_from,
        params: Params {
            wants_acks: true,
            retain_capacity: 8 * 1024,
            recv_buffer: 48 * 1024,
        },
    };
    assert_eq!(p.resumes, [expected]);
    assert_ne!(expected.params, Params::default());
    // And the stream goes on, exact.
    let more = pattern(3, 3000);
    write_all(&mut p.c, &more);
    p.pump();
    assert_eq!(digest(&p.s_got[6000..]), digest(&more));
}

/// `is_empty` says whether a Transmit has bytes, head or payload.
#[test]
fn transmit_is_empty_only_without_head_and_payload() {
    let empty = Transmit {
        transport: 1,
        head: FrameHead::EMPTY,
        payload: Bytes::new(),
    };
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    let payload = Transmit {
        payload: Bytes::from_static(b"x"),
        ..empty.clone()
    };
    assert!(!payload.is_empty());
    assert_eq!(payload.len(), 1);
    // A session's own Transmits (frame heads only, or head and payload).
    let mut p = Pair::new();
    write_all(&mut p.c, b"hello");
    let mut polled = 0;
    while let Some(o) = p.c.poll_output() {
        if let Output::Transmit(t) = o {
            assert!(!t.is_empty() && t.len() > 5);
            polled += 1;
        }
    }
    assert_eq!(polled, 1);
}

/// A session reports the configuration it was made with, client and server.
#[test]
fn sessions_report_their_config() {
    let mut p = Pair::new();
    assert_ne!(config(), Config::default());
    assert_eq!(p.c.config(), &config());
    assert_eq!(p.server().config(), &config());
}

/// Default contract: flushed once every write was polled as Transmits.
#[test]
fn is_flushed_once_every_write_was_polled() {
    let mut p = Pair::new();
    assert!(p.c.is_flushed(), "nothing written yet");
    write_all(&mut p.c, b"some bytes");
    assert!(!p.c.is_flushed(), "written, not polled");
    p.pump();
    assert!(p.c.is_flushed());
    assert!(p.server().is_flushed());
}

/// Polls every output of `s`; the Transmits' total length.
fn poll_lengths(s: &mut Session) -> Vec<usize> {
    let mut lens = Vec::new();
    while let Some(o) = s.poll_output() {
        if let Output::Transmit(t) = o {
            lens.push(t.len());
        }
    }
    lens
}

/// Batched contract: polled bytes stay unwritten until reported; a partial
/// report counts exactly what it says, and the session is flushed only once
/// the transport took everything.
#[test]
fn partial_written_reports_count_exactly() {
    let mut p = Pair::new();
    let ct = p.c.transport().unwrap();
    p.c.set_reports_written(true);
    let start = p.c.accepted();
    write_all(&mut p.c, &pattern(4, 3000));
    let lens = poll_lengths(&mut p.c);
    assert!(lens.len() >= 3, "frames of 1 KiB: {lens:?}");
    let total: usize = lens.iter().sum();
    assert_eq!(p.c.unwritten(), total as u64);
    assert!(!p.c.is_flushed(), "polled, not written");
    assert_eq!(p.c.accepted(), start);

    // Part of the first frame: its head and 100 payload bytes.
    let head = lens[0] - 1024;
    let now = p.now;
    p.c.handle_input(
        now,
        Input::Written {
            transport: ct,
            bytes: head + 100,
        },
    );
    assert_eq!(p.c.unwritten(), (total - head - 100) as u64);
    assert_eq!(p.c.accepted(), start + 100);
    assert!(!p.c.is_flushed());

    // The rest of the first frame and part of the second.
    p.c.handle_input(
        now,
        Input::Written {
            transport: ct,
            bytes: lens[0] - head - 100 + head + 10,
        },
    );
    assert_eq!(p.c.unwritten(), (total - lens[0] - head - 10) as u64);
    assert_eq!(p.c.accepted(), start + 1024 + 10);
    assert!(!p.c.is_flushed());

    // Everything.
    p.c.handle_input(
        now,
        Input::Written {
            transport: ct,
            bytes: total,
        },
    );
    assert_eq!(p.c.unwritten(), 0);
    assert_eq!(p.c.accepted(), start + 3000);
    assert!(p.c.is_flushed());
}

// ---------------------------------------------------------------------------
// The connection set's implicit retention budget at a resume
// ---------------------------------------------------------------------------

/// Under the implicit policy a resume re-books the session's share of
/// `implicit_retention_budget` with the buffers of the new transport: a
/// share that brings the total exactly to the budget is admitted; one
/// beyond it is refused with REJECT `BUSY` and the parked session stays as
/// it was, so the client's retry (with its old buffers) gets in.
#[test]
fn a_resume_is_admitted_up_to_the_implicit_budget_and_refused_beyond() {
    let mut cfg = config();
    cfg.release_policy = ReleasePolicy::Implicit;
    cfg.implicit_margin = Some(0);
    // The server's send buffer and the client's receive buffer: b exactly.
    let share = CLIENT_INFO.send_buffer.unwrap() + CLIENT_INFO.recv_buffer.unwrap();
    cfg.implicit_retention_budget = share;
    let mut p = Pair::with_config(cfg);
    assert_eq!(p.set.counts().implicit_reserved, share);
    let up = pattern(5, 4000);
    write_all(&mut p.c, &up);
    p.pump();

    // Same buffers on the new transport: the total is the budget, admitted.
    p.crash();
    assert_eq!(p.resumes.len(), 1, "refused: {:?}", p.refused);
    assert_eq!(p.set.counts().implicit_reserved, share);

    // The client's next transport announces a larger receive buffer: its
    // share would exceed the budget by one byte.
    p.info.recv_buffer = Some(CLIENT_INFO.recv_buffer.unwrap() + 1);
    p.crash();
    assert_eq!(p.refused, [Code::Busy]);
    assert_eq!(p.resumes.len(), 1);
    assert_eq!(p.server().state(), SessionState::Parked);
    assert_eq!(p.set.counts().implicit_reserved, share, "unchanged");

    // Back to the old buffers: the client's retry is admitted.
    p.info = CLIENT_INFO;
    p.run_client_timers_until(|p| p.resumes.len() == 2);
    assert_eq!(p.server().state(), SessionState::Established);
    let more = pattern(6, 4000);
    write_all(&mut p.c, &more);
    p.pump();
    assert_eq!(digest(&p.s_got), digest(&[up, more].concat()));
}

// ---------------------------------------------------------------------------
// The connection set's limits at their boundaries
// ---------------------------------------------------------------------------

/// A stranger: a fresh HELLO admitted on transport `t` at `at`, whose
/// transport drops at once (its session parks, unproven).
fn stranger(
    set: &mut ConnectionSet,
    at: Instant,
    t: TransportId,
    entropy: &mut dyn ft_session_core::Entropy,
) -> SessionId {
    let hello = ClientHello::Fresh(Params::default());
    let Admission::Fresh(mut s) = set.admit(at, t, TransportInfo::default(), hello, entropy) else {
        panic!("a fresh HELLO below the limits is admitted");
    };
    s.handle_input(at, Input::TransportLost { transport: t });
    while s.poll_output().is_some() {}
    assert_eq!(s.state(), SessionState::Parked);
    set.parked(at, &s);
    s.session_id().unwrap()
}

/// `max_parked_unproven` strangers may stay parked; one more evicts the
/// oldest of them, and only it.
#[test]
fn unproven_parked_sessions_are_evicted_only_beyond_their_quota() {
    let mut cfg = config();
    cfg.max_parked_unproven = 2;
    let mut set = ConnectionSet::new(cfg);
    let start = Instant::now();
    let mut x = 0x1234_5678_9ABC_DEF1_u64;
    let mut entropy = |d: &mut [u8]| {
        for b in d {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    };
    let mut ids = Vec::new();
    for i in 0..2 {
        let at = start + Duration::from_millis(i);
        ids.push(stranger(&mut set, at, 10 + i, &mut entropy));
        let c = set.counts();
        assert_eq!(
            (c.parked, c.parked_unproven, c.evicted),
            (i as usize + 1, i as usize + 1, 0)
        );
        assert_eq!(set.poll_event(), None, "within the quota");
    }
    stranger(&mut set, start + Duration::from_millis(2), 12, &mut entropy);
    let c = set.counts();
    assert_eq!((c.parked, c.parked_unproven, c.evicted), (2, 2, 1));
    assert_eq!(set.poll_event(), Some(SetEvent::Evicted(ids[0])));
    assert_eq!(set.poll_event(), None);
}

/// Parked sessions may retain exactly `parked_bytes_budget` bytes; one byte
/// more evicts.
#[test]
fn parked_bytes_are_evicted_only_beyond_the_budget() {
    const RETAINED: usize = 3000;
    for (budget, evicted) in [(RETAINED as u64, 0), (RETAINED as u64 - 1, 1)] {
        let mut cfg = config();
        cfg.parked_bytes_budget = budget;
        let mut p = Pair::with_config(cfg);
        // Written into a transport that is already dead: all retained.
        p.up = false;
        write_all(p.server(), &pattern(7, RETAINED));
        p.server_loses_transport();
        let c = p.set.counts();
        assert_eq!(c.evicted, evicted, "budget {budget}");
        if evicted == 0 {
            assert_eq!((c.parked, c.parked_bytes), (1, RETAINED as u64));
            assert_eq!(p.server().state(), SessionState::Parked);
        } else {
            assert_eq!((c.parked, c.parked_bytes), (0, 0));
        }
    }
}

/// A proven session evicted by the limits keeps a proven tombstone: the
/// strangers' tombstones go first, and its client, when it returns, learns
/// it was evicted (authenticated ENDED) instead of a bare unknown session.
#[test]
fn an_evicted_proven_session_outlives_strangers_tombstones() {
    let mut cfg = config();
    cfg.max_parked = 1;
    cfg.max_parked_unproven = 1;
    cfg.parked_bytes_budget = 1;
    let mut p = Pair::with_config(cfg);
    write_all(&mut p.c, b"proof of life");
    p.pump();
    assert_eq!(p.s_got, b"proof of life");
    // The server loses the transport with bytes in flight: over the bytes
    // budget, and no stranger parked to go first, so the proven one goes.
    p.up = false;
    write_all(p.server(), &pattern(8, 100));
    p.server_loses_transport();
    assert_eq!(p.server().error(), Some(&SessionError::Evicted));
    assert_eq!((p.set.counts().evicted, p.set.counts().closed), (1, 1));
    // Two strangers park after it: the first is evicted by the second
    // (max_parked), and the tombstones exceed max_parked: a stranger's goes.
    let later = p.now + Duration::from_millis(1);
    let mut x = 99_u64;
    let mut entropy = |d: &mut [u8]| {
        for b in d {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            *b = (x >> 56) as u8;
        }
    };
    stranger(&mut p.set, later, 500, &mut entropy);
    stranger(
        &mut p.set,
        later + Duration::from_millis(1),
        501,
        &mut entropy,
    );
    let c = p.set.counts();
    assert_eq!((c.evicted, c.parked, c.closed), (2, 1, 1), "{c:?}");
    // The client returns: ENDED, evicted.
    p.c.handle_input(p.now, Input::TransportLost { transport: p.ct });
    p.pump();
    assert_eq!(p.refused, [Code::Evicted]);
    assert_eq!(p.c.error(), Some(&SessionError::Evicted));
}

/// Likewise for a proven session that expired while parked: its tombstone
/// is proven, the strangers' go first, and its client learns it expired.
#[test]
fn an_expired_proven_session_outlives_strangers_tombstones() {
    let mut cfg = config();
    cfg.max_parked = 1;
    cfg.max_parked_unproven = 1;
    cfg.max_reconnect_time = Duration::from_secs(2);
    let mut p = Pair::with_config(cfg);
    write_all(&mut p.c, b"proof of life");
    p.pump();
    p.server_loses_transport();
    assert_eq!(p.set.counts().parked, 1);
    // Nobody returns in time: the set expires it, the session ends.
    p.now += Duration::from_secs(2);
    let now = p.now;
    p.set.handle_timeout(now);
    p.pump();
    assert_eq!(p.server().error(), Some(&SessionError::Expired));
    let c = p.set.counts();
    assert_eq!((c.expired, c.parked, c.closed), (1, 0, 1), "{c:?}");
    let mut x = 7_u64;
    let mut entropy = |d: &mut [u8]| {
        for b in d {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            *b = (x >> 56) as u8;
        }
    };
    // Later than its tombstone was made, so theirs are the younger.
    let (s1, s2) = (
        now + Duration::from_millis(1),
        now + Duration::from_millis(2),
    );
    stranger(&mut p.set, s1, 500, &mut entropy);
    stranger(&mut p.set, s2, 501, &mut entropy);
    let c = p.set.counts();
    assert_eq!((c.evicted, c.parked, c.closed), (1, 1, 1), "{c:?}");
    p.c.handle_input(now, Input::TransportLost { transport: p.ct });
    p.pump();
    assert_eq!(p.refused, [Code::Expired]);
    assert_eq!(p.c.error(), Some(&SessionError::Expired));
}

/// After its own shutdown a session refuses writes with `Finished`, not
/// with the error of a peer's close (mutant: `&&` -> `||` in
/// `check_writable`).
#[test]
fn writing_after_ones_own_shutdown_is_finished() {
    let mut p = Pair::new();
    write_all(&mut p.c, b"before the FIN");
    p.c.shutdown();
    p.pump();
    assert!(matches!(p.c.write(b"after"), Err(WriteError::Finished)));
    assert_eq!(p.s_got, b"before the FIN");
}

/// Every byte acknowledged is not a FIN acknowledged: `is_fin_acked` waits
/// for a shutdown (mutant: `&&` -> `||` in `is_fin_acked`).
#[test]
fn the_fin_is_acked_only_after_a_shutdown() {
    let mut p = Pair::new();
    write_all(&mut p.c, &pattern(3, 3000));
    p.pump();
    assert_eq!(p.c.peer_received(), 3000, "every byte acknowledged");
    assert!(!p.c.is_fin_acked(), "no FIN was sent");
    p.c.shutdown();
    p.pump();
    assert!(p.c.is_fin_acked());
}

/// Once everything moved, no acknowledgment is due (mutant: `ack_pending`
/// -> `true`), and a read that frees room can make one due.
#[test]
fn no_acknowledgment_is_pending_at_rest() {
    let mut p = Pair::new();
    write_all(&mut p.c, &pattern(4, 5000));
    p.pump();
    assert_eq!(digest(&p.s_got), digest(&pattern(4, 5000)));
    assert!(!p.c.ack_pending());
    assert!(!p.server().ack_pending());
}

/// A receiver whose peer releases implicitly never trims what it received
/// before a resume: the peer may have released those bytes already, so a
/// lower count would lose them (mutant: `||` -> `&&` in `trim_to_window`,
/// which trimmed to the acknowledgment window whatever the peer's policy).
#[test]
fn bytes_from_an_implicit_peer_survive_a_resume_unread() {
    let mut cfg = config();
    cfg.release_policy = ReleasePolicy::Implicit;
    cfg.recv_buffer_capacity = 2 * 1024;
    let mut p = Pair::with_config(cfg);
    p.server_reads = false;
    // Far beyond the implicit bound: the client released the first bytes.
    let data = pattern(9, 400_000);
    let mut sent = 0;
    while sent < data.len() {
        let n = p.c.write(&data[sent..]).unwrap_or(0);
        sent += n;
        p.pump();
        assert!(n > 0 || sent == data.len(), "the implicit sender stalled");
    }
    assert!(
        p.server().readable() > 4 * 1024,
        "the server holds more than its receive window, unread"
    );
    assert!(p.c.retained_from() > 0, "the client released the front");
    p.crash();
    p.run_client_timers_until(|p| p.c.state() == SessionState::Established && p.up);
    p.server_reads = true;
    p.pump();
    assert_eq!(p.c.error(), None);
    assert_eq!(digest(&p.s_got), digest(&data));
}

/// `read_chunk` hands over the received bytes themselves, in order
/// (mutant: `read_chunk` -> `Ok(empty)`).
#[test]
fn read_chunk_returns_the_bytes_received() {
    let mut p = Pair::new();
    p.server_reads = false;
    let data = pattern(5, 3000);
    write_all(&mut p.c, &data);
    p.pump();
    let mut got = Vec::new();
    while got.len() < data.len() {
        let chunk = p.server().read_chunk().unwrap();
        assert!(!chunk.is_empty(), "bytes are waiting");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(digest(&got), digest(&data));
}

/// The counters say exactly what happened: the bytes a resume sent again
/// are those the server missed, and the released bytes are the front the
/// client let go (mutants on `retransmitted_bytes` and `released_bytes`).
#[test]
fn stats_count_retransmitted_and_released_bytes_exactly() {
    let mut p = Pair::new();
    let (first, lost) = (pattern(6, 3000), pattern(7, 5000));
    write_all(&mut p.c, &first);
    p.pump();
    // Sent into a link that no longer carries bytes.
    p.up = false;
    write_all(&mut p.c, &lost);
    p.pump();
    assert_eq!(p.s_got.len(), 3000);
    p.crash();
    p.run_client_timers_until(|p| p.c.state() == SessionState::Established && p.up);
    p.pump();
    let all = [first, lost].concat();
    assert_eq!(digest(&p.s_got), digest(&all));
    let st = p.c.stats();
    assert_eq!(st.retransmitted_bytes, 5000);
    assert!(p.c.retained_from() > 0, "some bytes were released");
    assert_eq!(st.released_bytes, p.c.retained_from());
}

/// A session whose client only acknowledged (it never sent a byte) proved
/// its secret all the same: parked, it is not counted among the unproven
/// (mutants in `Session::is_proven`). One that exchanged nothing is.
#[test]
fn a_client_that_only_acknowledged_is_proven() {
    let mut p = Pair::new();
    p.server_loses_transport();
    let c = p.set.counts();
    assert_eq!((c.parked, c.parked_unproven), (1, 1), "nothing exchanged");

    let mut p = Pair::new();
    let down = pattern(8, 5000);
    write_all(p.server(), &down);
    p.pump();
    assert_eq!(digest(&p.c_got), digest(&down));
    assert!(p.server().peer_received() > 0, "the client acknowledged");
    assert_eq!(p.server().received(), 0, "and sent nothing");
    p.server_loses_transport();
    let c = p.set.counts();
    assert_eq!((c.parked, c.parked_unproven), (1, 0));
}

/// The implicit policy needs a positive send buffer: a transport that
/// reports 0 gets the typed `Config` error, not a bound of the peer's
/// buffer alone (mutant: `>` -> `>=` in `implicit_bound`).
#[test]
fn implicit_release_refuses_a_zero_send_buffer() {
    let mut cfg = config();
    cfg.release_policy = ReleasePolicy::Implicit;
    let p = Pair::connect(
        cfg.clone(),
        TransportInfo {
            send_buffer: Some(0),
            ..CLIENT_INFO
        },
    );
    assert!(
        matches!(p.c.error(), Some(SessionError::Config(_))),
        "{:?}",
        p.c.error()
    );
    let p = Pair::connect(cfg, CLIENT_INFO);
    assert_eq!(p.c.state(), SessionState::Established);
}

/// `Writable` is an edge: a writer that was never refused hears none,
/// through a resume or implicit releases alike; one that was refused hears
/// it once room is back (mutants: `&&` -> `||` before the `Writable` of
/// `established` and of `release_implicit`).
#[test]
fn writable_comes_only_after_a_refused_write() {
    for policy in [ReleasePolicy::Ack, ReleasePolicy::Implicit] {
        let mut cfg = config();
        cfg.release_policy = policy;
        let mut p = Pair::with_config(cfg);
        let data = pattern(11, 4000);
        write_all(&mut p.c, &data);
        p.pump();
        p.crash();
        p.run_client_timers_until(|p| p.c.state() == SessionState::Established && p.up);
        write_all(&mut p.c, &data);
        p.pump();
        assert_eq!(p.c_writable, 0, "{policy:?}: never refused, never told");
        assert_eq!(digest(&p.s_got), digest(&[&data[..], &data[..]].concat()));
    }
    // Refused while the link carries nothing: told once room is back.
    let mut p = Pair::new();
    p.up = false;
    let big = pattern(12, 64 * 1024);
    let n = p.c.write(&big).unwrap();
    assert!(n < big.len());
    assert!(matches!(p.c.write(&big[n..]), Err(WriteError::Blocked)));
    p.pump();
    assert_eq!(p.c_writable, 0);
    p.crash();
    p.run_client_timers_until(|p| p.c_writable > 0);
    assert_eq!(p.c_writable, 1);
}

/// Clients with different seeds keep backing off with different jitter,
/// attempt after attempt, so clients that lost one server do not return in
/// lockstep (mutants: `^=` -> `|=` in `next_random`, which saturates).
#[test]
fn backoff_jitter_differs_between_seeds() {
    let t0 = Instant::now();
    let delays = |seed: u64| -> Vec<Duration> {
        let mut cfg = config();
        cfg.connect_timeout = Duration::from_secs(3600);
        cfg.backoff_initial = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(100);
        let mut c = Session::client(cfg, t0, seed);
        let mut now = t0;
        let mut out = Vec::new();
        for _ in 0..12 {
            let mut tid = None;
            while let Some(o) = c.poll_output() {
                if let Output::Connect { transport } = o {
                    tid = Some(transport);
                }
            }
            let transport = tid.expect("a connect attempt");
            c.handle_input(now, Input::TransportLost { transport });
            while c.poll_output().is_some() {}
            let t = c.poll_timeout().expect("a backoff");
            out.push(t - now);
            now = t;
            c.handle_input(now, Input::Timeout);
        }
        out
    };
    let (a, b) = (delays(1), delays(2));
    assert_ne!(a[6..], b[6..], "late attempts still jittered apart");
    // Exactly xorshift64 (13, 7, 17) from `seed | 1`, one draw per backoff:
    // jitter in [base/2, base).
    let mut x: u64 = 1;
    let reference: Vec<Duration> = (0..12)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = Duration::from_millis(100);
            base / 2 + base.mul_f64((x % 1024) as f64 / 2048.0)
        })
        .collect();
    assert_eq!(a, reference);
}

/// A `TransportUp` counts only for the transport the client asked for, and
/// only while it is connecting: one for another transport, or a second one
/// once the handshake started, is dropped and changes nothing (mutant:
/// `||` -> `&&` in `on_transport_up`).
#[test]
fn transport_up_counts_only_for_the_connect_in_progress() {
    let now = Instant::now();
    let mut c = Session::client(config(), now, 11);
    let mut connect = None;
    while let Some(o) = c.poll_output() {
        if let Output::Connect { transport } = o {
            connect = Some(transport);
        }
    }
    let t = connect.unwrap();
    let drops = |c: &mut Session| {
        let mut dropped = Vec::new();
        let mut hellos = 0;
        while let Some(o) = c.poll_output() {
            match o {
                Output::DropTransport { transport } => dropped.push(transport),
                Output::Transmit(_) => hellos += 1,
                _ => {}
            }
        }
        (dropped, hellos)
    };
    // Another transport while connecting.
    c.handle_input(
        now,
        Input::TransportUp {
            transport: t + 1,
            info: CLIENT_INFO,
        },
    );
    assert_eq!(c.state(), SessionState::Connecting);
    assert_eq!(drops(&mut c), (vec![t + 1], 0));
    // The right one: the handshake starts with one HELLO.
    let up = Input::TransportUp {
        transport: t,
        info: CLIENT_INFO,
    };
    c.handle_input(now, up);
    assert_eq!(c.state(), SessionState::Handshaking);
    assert_eq!(drops(&mut c), (vec![], 1));
    // The same again once handshaking: no second HELLO.
    let again = Input::TransportUp {
        transport: t,
        info: CLIENT_INFO,
    };
    c.handle_input(now, again);
    assert_eq!(c.state(), SessionState::Handshaking);
    assert_eq!(drops(&mut c).1, 0, "a second HELLO");
}

/// `read_chunk` reports end of stream once the peer finished its direction
/// and everything before its FIN was read, while the session itself is
/// still up (mutant: `||` -> `&&` in `read_chunk`, which answered
/// `Blocked` until the whole session ended).
#[test]
fn read_chunk_reports_end_of_stream_after_the_peer_fin() {
    let mut p = Pair::new();
    assert_eq!(p.server().write(b"last words").unwrap(), 10);
    p.server().shutdown();
    p.pump();
    assert_eq!(p.c_got, b"last words");
    assert_eq!(p.c.state(), SessionState::Established);
    assert_eq!(p.c.read_chunk(), Ok(Bytes::new()));
    // Before the FIN, an empty queue is `Blocked`, not the end.
    let mut q = Pair::new();
    q.pump();
    assert_eq!(q.c.read_chunk(), Err(ReadError::Blocked));
}

/// Under the implicit policy a refused writer is told once the transport
/// took its bytes, even while nothing can be released yet (everything
/// handed over is still within the bound): room comes from the transport,
/// not from a release (mutant: `>` -> `==` in `release_implicit`).
#[test]
fn implicit_writer_is_told_when_the_transport_takes_its_bytes() {
    let mut cfg = config();
    cfg.release_policy = ReleasePolicy::Implicit;
    let mut p = Pair::with_config(cfg);
    let big = pattern(13, 64 * 1024);
    let n = p.c.write(&big).unwrap();
    assert!(n < big.len());
    assert!(matches!(p.c.write(&big[n..]), Err(WriteError::Blocked)));
    assert_eq!(p.c_writable, 0);
    p.pump();
    assert_eq!(p.c.retained_from(), 0, "nothing released: within the bound");
    assert_eq!(p.c_writable, 1, "told once");
    assert_eq!(digest(&p.s_got), digest(&big[..n]));
}

/// A spare allocation may replace only an empty tail: with two released
/// chunks kept as spares and bytes still retained, a small write fills the
/// tail from one spare, and a larger write must extend that tail, not
/// swap in the other spare and drop the small write's bytes (mutant: `&&`
/// -> `||` in `write`).
#[test]
fn a_spare_never_replaces_a_tail_holding_bytes() {
    let now = Instant::now();
    let mut cfg = config();
    // ACKs every quarter of 128 KiB: one after the second 20 KiB chunk.
    cfg.send_buffer_capacity = 128 * 1024;
    cfg.max_frame_payload = 64 * 1024;
    let (mut c, mut s, ct, st) = ft_session_core::sim::established_pair(now, cfg.clone(), cfg);
    let mut sent = Vec::new();
    let mut to_client = Vec::new();
    // Moves the client's transmits to the server, and the server's to
    // `to_client` (held back until the test delivers them).
    let flow = |c: &mut Session, s: &mut Session, to_client: &mut Vec<u8>| {
        while let Some(o) = c.poll_output() {
            if let Output::Transmit(t) = o {
                let mut b = Vec::new();
                t.write_to(&mut b);
                s.handle_input(
                    now,
                    Input::Received {
                        transport: st,
                        data: &b,
                    },
                );
            }
        }
        while let Some(o) = s.poll_output() {
            if let Output::Transmit(t) = o {
                t.write_to(to_client);
            }
        }
    };
    for seed in 1..=3u8 {
        let chunk = pattern(seed, 20 * 1024);
        assert_eq!(c.write(&chunk), Ok(chunk.len()));
        sent.extend_from_slice(&chunk);
        flow(&mut c, &mut s, &mut to_client);
    }
    // The server's ACK of the first two chunks releases them; the third is
    // still retained, so their allocations stay as spares.
    assert!(!to_client.is_empty(), "the server acknowledged");
    c.handle_input(
        now,
        Input::Received {
            transport: ct,
            data: &to_client,
        },
    );
    assert!(
        c.retained() > 0 && c.retained_from() > 0,
        "released some, not all"
    );
    let small = pattern(4, 100);
    assert_eq!(c.write(&small), Ok(100));
    sent.extend_from_slice(&small);
    let large = pattern(5, 40 * 1024);
    assert_eq!(c.write(&large), Ok(large.len()));
    sent.extend_from_slice(&large);
    let mut unused = Vec::new();
    flow(&mut c, &mut s, &mut unused);
    let mut got = vec![0u8; sent.len() + 1];
    let mut n = 0;
    while let Ok(k @ 1..) = s.read(&mut got[n..]) {
        n += k;
    }
    assert_eq!(n, sent.len());
    assert_eq!(digest(&got[..n]), digest(&sent));
}
