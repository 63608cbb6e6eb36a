//! Small promises of the `Session` API that the big simulations never look
//! at: the getters of a verified resume, `Transmit::is_empty`,
//! `Session::config`, `is_flushed` and partial `Written` reports under the
//! batched contract. Each test here was written for a mutant of
//! `src/session.rs` that survived the rest of the suite (issue 10,
//! section 4; see `scripts/mutants.sh`).
//!
//! A client `Session` and a server admitted by a `ConnectionSet`, over an
//! in-memory link, in virtual time that never moves: no faults beyond the
//! ones a test makes, no clock.
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use bytes::Bytes;
use ft_session_core::{
    Admission, Config, ConnectionSet, Event, FrameHead, HandshakeReader, HandshakeStep, Input,
    Output, Params, Session, SessionState, Transmit, TransportId, TransportInfo,
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
    resumes: Vec<SeenResume>,
    c_got: Vec<u8>,
    s_got: Vec<u8>,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let mut p = Pair {
            now,
            set: ConnectionSet::new(config()),
            entropy: 0x9E37_79B9_7F4A_7C15,
            c: Session::client(config(), now, 7),
            s: None,
            ct: 0,
            st: 100,
            reader: None,
            up: false,
            resumes: Vec::new(),
            c_got: Vec::new(),
            s_got: Vec::new(),
        };
        p.pump();
        assert_eq!(p.c.state(), SessionState::Established);
        assert_eq!(p.server().state(), SessionState::Established);
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
        let admission = self.set.admit(now, st, CLIENT_INFO, hello, &mut entropy);
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
                        info: CLIENT_INFO,
                    },
                );
            }
            Admission::Reject { code, .. } => panic!("refused: {code:?}"),
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
                        self.c.handle_input(
                            now,
                            Input::TransportUp {
                                transport,
                                info: CLIENT_INFO,
                            },
                        );
                    }
                    Output::Transmit(t) if t.transport == self.ct && self.up => {
                        assert!(!t.is_empty(), "a session never polls an empty Transmit");
                        let mut b = Vec::new();
                        t.write_to(&mut b);
                        assert_eq!(b.len(), t.len());
                        self.deliver_to_server(&b);
                    }
                    _ => {}
                }
            }
            let Some(s) = self.s.as_mut() else {
                if moved {
                    continue;
                }
                return;
            };
            while let Ok(n @ 1..) = s.read(&mut buf) {
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
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
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
