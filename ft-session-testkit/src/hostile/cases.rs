//! The attacks, one function each, and what each must observe.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ft_session_core::{Config, ReleasePolicy};

use super::raw::{End, RawPeer};
use super::target::{request, Counts, ServiceLog};
use super::wire::{self, code, Answer, Params, Resume};
use crate::SplitMix64;

/// What an attack sees of the server under attack.
pub struct Ctx<'a> {
    /// The listener's address.
    pub addr: SocketAddr,
    /// The listener's configuration.
    pub config: &'a Config,
    /// The id of the legitimate session parked before the attack.
    pub parked_id: [u8; 16],
    /// Connections of the volume cases.
    pub volume: usize,
    pub(crate) counts: &'a dyn Fn() -> Counts,
    pub(crate) log: &'a ServiceLog,
    pub(crate) peak_rss: RefCell<u64>,
    pub(crate) notes: RefCell<Vec<String>>,
    pub(crate) stash: RefCell<Vec<([u8; 16], [u8; 32])>>,
}

impl Ctx<'_> {
    /// The listener's accounting now.
    pub fn counts(&self) -> Counts {
        (self.counts)()
    }

    /// Samples the resident set (the suite reports the peak).
    pub fn sample(&self) {
        if let Some(r) = super::target::rss_bytes() {
            let mut p = self.peak_rss.borrow_mut();
            *p = (*p).max(r);
        }
    }

    fn note(&self, s: String) {
        self.notes.borrow_mut().push(s);
    }
}

/// An attack returns what the attacker observed when that is the
/// documented answer, else what it observed instead.
pub type Attack = fn(&Ctx) -> Result<String, String>;

/// One case of the suite.
pub struct Case {
    /// Its name (the test's name in every adapter).
    pub name: &'static str,
    /// The documented answer.
    pub expect: &'static str,
    /// Changes to the suite's base configuration.
    pub config: fn(&mut Config),
    /// Runs before the legitimate session is parked.
    pub setup: Option<Attack>,
    /// The attack.
    pub attack: Attack,
    /// Largest accepted growth of the resident set during the attack, in
    /// MiB per 1,000 volume connections (volume cases) or in MiB.
    pub rss_mib: u64,
    /// Whether `rss_mib` scales with the volume.
    pub per_thousand: bool,
}

fn no_change(_: &mut Config) {}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Every case, in the order of issue 15.
pub const CASES: &[Case] = &[
    Case {
        name: "garbage",
        expect: "closed without an answer (2.5)",
        config: no_change,
        setup: None,
        attack: garbage,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "wrong_magic",
        expect: "closed without an answer (2.5)",
        config: no_change,
        setup: None,
        attack: wrong_magic,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "unsupported_version",
        expect: "REJECT UNSUPPORTED_VERSION detail 1, then closed (2.5)",
        config: no_change,
        setup: None,
        attack: unsupported_version,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "malformed_hello",
        expect: "REJECT MALFORMED, then closed (2.5), for an unknown type and for reserved flag bits",
        config: no_change,
        setup: None,
        attack: malformed_hello,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "incomplete_handshake",
        expect: "closed without an answer once handshake_timeout passed (R6)",
        config: no_change,
        setup: None,
        attack: incomplete_handshake,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "slowloris",
        expect: "one byte a second: closed without an answer at handshake_timeout (R6), before the HELLO is complete",
        config: slowloris_config,
        setup: None,
        attack: slowloris,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "silent_connections",
        expect: "every connection closed without an answer (at handshake_timeout, or at once beyond max_pending_handshakes, counted as refused)",
        config: silent_config,
        setup: None,
        attack: silent_connections,
        rss_mib: 64,
        per_thousand: true,
    },
    Case {
        name: "fresh_sessions_dropped",
        expect: "SERVER_HELLO (or REJECT BUSY at max_sessions) for each; the parked legitimate session is not evicted",
        config: no_change,
        setup: None,
        attack: fresh_sessions_dropped,
        rss_mib: 160,
        per_thousand: true,
    },
    Case {
        name: "fresh_sessions_idle",
        expect: "SERVER_HELLO for each; each silent transport dropped after idle_timeout (R14); the parked legitimate session is not evicted",
        config: no_change,
        setup: None,
        attack: fresh_sessions_idle,
        rss_mib: 160,
        per_thousand: true,
    },
    Case {
        name: "oversized_frame",
        expect: "ABORT PROTOCOL_VIOLATION, then closed (R7, from the header alone)",
        config: no_change,
        setup: None,
        attack: oversized_frame,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "ack_beyond_sent",
        expect: "ABORT PROTOCOL_VIOLATION, then closed (R10 AckBeyondSent)",
        config: no_change,
        setup: None,
        attack: ack_beyond_sent,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "ack_beyond_resent",
        expect: "after a resume from 0, an ACK of bytes not yet resent: ABORT PROTOCOL_VIOLATION, then closed (never a stall)",
        config: no_change,
        setup: None,
        attack: ack_beyond_resent,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "count_beyond_sent",
        expect: "RESUME received beyond sent: ENDED PROTOCOL_VIOLATION with a valid proof (R4); that session ends",
        config: no_change,
        setup: None,
        attack: count_beyond_sent,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "resume_unknown_id",
        expect: "REJECT UNKNOWN_SESSION (R2)",
        config: no_change,
        setup: None,
        attack: resume_unknown_id,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "resume_wrong_proof",
        expect: "REJECT UNKNOWN_SESSION (R2) for the parked and for an attached session's id; neither is disturbed (R3)",
        config: no_change,
        setup: None,
        attack: resume_wrong_proof,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "resume_replayed",
        expect: "a RESUME replayed (same or older attempt): REJECT UNKNOWN_SESSION (R1, R2); the resumed transport is not disturbed",
        config: no_change,
        setup: None,
        attack: resume_replayed,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "resume_expired",
        expect: "a valid proof for an expired session: ENDED EXPIRED with a valid proof (within max_reconnect_time of its end) or REJECT UNKNOWN_SESSION (2.4.1)",
        config: expired_config,
        setup: Some(expire_a_session),
        attack: resume_expired,
        rss_mib: 16,
        per_thousand: false,
    },
    Case {
        name: "never_reads",
        expect: "a client that never reads: the server's retention stops at send_buffer_capacity (backpressure), its writes stall, memory bounded",
        config: never_reads_config,
        setup: None,
        attack: never_reads,
        rss_mib: 24,
        per_thousand: false,
    },
    Case {
        name: "huge_recv_buffer",
        expect: "implicit policy: a receive buffer above implicit_max_buffer is refused; one at the limit makes the server retain at most send capacity + own buffer + limit + margin; a second one beyond implicit_retention_budget gets REJECT BUSY",
        config: implicit_config,
        setup: None,
        attack: huge_recv_buffer,
        rss_mib: 96,
        per_thousand: false,
    },
];

/// Waits for `limit` at most for the server to end `peer`.
fn limit_for(cfg: &Config) -> Duration {
    cfg.handshake_timeout + Duration::from_secs(5)
}

fn expect_silent_close(peer: &mut RawPeer, cfg: &Config) -> Result<String, String> {
    let o = peer.observe_end(limit_for(cfg));
    let seen = format!("{:?} after {:?}, {} bytes", o.end, o.elapsed, o.bytes);
    if o.end != End::Open && o.bytes == 0 {
        Ok(format!("closed without an answer: {seen}"))
    } else {
        Err(format!("{seen}: {:02x?}", &o.head[..o.head.len().min(16)]))
    }
}

fn garbage(c: &Ctx) -> Result<String, String> {
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    let mut bytes = crate::pattern(0x6a7b, 4096);
    bytes[0] = b'G'; // anything but the magic's first byte
    let _ = peer.send(&bytes); // the server may reset before all is sent
    expect_silent_close(&mut peer, c.config)
}

fn wrong_magic(c: &Ctx) -> Result<String, String> {
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    let mut hello = wire::hello(Params::acks(1 << 20));
    hello[3] = b'X';
    let _ = peer.send(&hello);
    expect_silent_close(&mut peer, c.config)
}

fn expect_reject(peer: &mut RawPeer, want: u16, cfg: &Config) -> Result<(Answer, String), String> {
    match peer.answer(limit_for(cfg)) {
        Ok(a @ Answer::Reject { code, .. }) if code == want => {
            let o = peer.observe_end(limit_for(cfg));
            let s = format!("{a:?}, then {:?} after {:?}", o.end, o.elapsed);
            if o.end == End::Open || o.bytes > 0 {
                Err(format!("{s}, {} more bytes", o.bytes))
            } else {
                Ok((a, s))
            }
        }
        Ok(a) => Err(format!("{a:?}")),
        Err(e) => Err(e),
    }
}

/// Expects ENDED `want` for the RESUME of `attempt`, with a proof that
/// verifies, then a close.
fn expect_ended(
    peer: &mut RawPeer,
    want: u16,
    resume: &Resume,
    secret: &[u8; 32],
    cfg: &Config,
) -> Result<String, String> {
    match peer.answer(limit_for(cfg))? {
        Answer::Ended {
            id,
            code,
            detail,
            proof,
        } if code == want && id == resume.id => {
            if proof != wire::ended_proof(secret, &id, resume.attempt, code, detail) {
                return Err(format!("ENDED {code} with a proof that does not verify"));
            }
            let o = peer.observe_end(limit_for(cfg));
            let s = format!("ENDED code {code} (proof verified), then {:?}", o.end);
            if o.end == End::Open || o.bytes > 0 {
                Err(format!("{s}, {} more bytes", o.bytes))
            } else {
                Ok(s)
            }
        }
        a => Err(format!("{a:?}")),
    }
}

fn unsupported_version(c: &Ctx) -> Result<String, String> {
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    peer.send(&wire::hello_version(2, Params::acks(1 << 20)))
        .map_err(|e| e.to_string())?;
    let (a, s) = expect_reject(&mut peer, code::UNSUPPORTED_VERSION, c.config)?;
    match a {
        Answer::Reject { detail: 1, .. } => Ok(s),
        _ => Err(format!("detail is not the server's version: {s}")),
    }
}

fn malformed_hello(c: &Ctx) -> Result<String, String> {
    let mut out = Vec::new();
    let mut unknown = wire::hello(Params::acks(1 << 20));
    unknown[5] = 0x7f;
    let mut flags = wire::hello(Params::acks(1 << 20));
    flags[6] = 0x81;
    for bytes in [unknown, flags] {
        let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
        peer.send(&bytes).map_err(|e| e.to_string())?;
        out.push(expect_reject(&mut peer, code::MALFORMED, c.config)?.1);
    }
    Ok(out.join("; "))
}

fn incomplete_handshake(c: &Ctx) -> Result<String, String> {
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    peer.send(&wire::hello(Params::acks(1 << 20))[..10])
        .map_err(|e| e.to_string())?;
    let r = expect_silent_close(&mut peer, c.config)?;
    Ok(format!(
        "{r} (handshake_timeout {:?})",
        c.config.handshake_timeout
    ))
}

fn slowloris_config(c: &mut Config) {
    c.handshake_timeout = Duration::from_millis(2500);
}

fn slowloris(c: &Ctx) -> Result<String, String> {
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    let hello = wire::hello(Params::acks(1 << 20));
    let start = Instant::now();
    for (i, b) in hello.iter().enumerate() {
        if peer.send(std::slice::from_ref(b)).is_err() {
            return Ok(format!(
                "reset while sending byte {i} after {:?}",
                start.elapsed()
            ));
        }
        let o = peer.observe_end(Duration::from_secs(1));
        if o.bytes > 0 {
            return Err(format!("answered after {i} bytes: {:02x?}", o.head));
        }
        if o.end != End::Open {
            return Ok(format!(
                "closed without an answer after {} of {} bytes, {:?} ({:?}; handshake_timeout {:?})",
                i + 1,
                hello.len(),
                start.elapsed(),
                o.end,
                c.config.handshake_timeout
            ));
        }
    }
    Err("the whole HELLO went through one byte a second".into())
}

fn silent_config(c: &mut Config) {
    // Far below the volume, with a deadline the opening loop cannot outrun
    // on a slow machine: more than 16 are pending at once, so refusals are
    // certain (with 256 and 1 s, a loaded machine opened too few per second
    // to ever pass the limit).
    c.max_pending_handshakes = 16;
    c.handshake_timeout = Duration::from_secs(5);
}

fn silent_connections(c: &Ctx) -> Result<String, String> {
    let start = Instant::now();
    let mut peers = Vec::with_capacity(c.volume);
    let mut failed = 0usize;
    let mut closed_early = 0usize;
    let mut answered = 0usize;
    let mut at_peak = c.counts();
    for i in 0..c.volume {
        match RawPeer::connect(c.addr) {
            Ok(p) => peers.push(p),
            Err(_) => failed += 1,
        }
        if i % 500 == 499 {
            // Both ends live in this process: release what the server closed.
            c.sample();
            at_peak = c.counts();
            peers.retain_mut(|p| {
                let closed = p.closed_by_server();
                closed_early += usize::from(closed);
                answered += usize::from(closed && p.drained() > 0);
                !closed
            });
        }
    }
    let opened = start.elapsed();
    c.sample();
    let closed_at_once = closed_early;
    let deadline = Instant::now() + limit_for(c.config) + Duration::from_secs(10);
    let mut open: Vec<RawPeer> = peers;
    while !open.is_empty() && Instant::now() < deadline {
        open.retain_mut(|p| {
            if p.closed_by_server() {
                answered += usize::from(p.drained() > 0);
                false
            } else {
                true
            }
        });
        if !open.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
        c.sample();
    }
    let all_closed = start.elapsed();
    let s = format!(
        "{} opened in {opened:?} ({failed} connects failed), {closed_at_once} closed by the server while opening, \
         all closed after {all_closed:?}; at peak: {} sessions, pending handshakes {:?}, refused {:?}",
        c.volume - failed,
        at_peak.set.attached + at_peak.set.parked,
        at_peak.pending_handshakes,
        at_peak.refused_handshakes
    );
    let over_limit = c.volume > c.config.max_pending_handshakes;
    // An adapter that cannot report refusals fails too: the limit is unproven.
    if over_limit && !c.counts().refused_handshakes.is_some_and(|n| n > 0) {
        return Err(format!(
            "none seen refused beyond max_pending_handshakes {}: {s}",
            c.config.max_pending_handshakes
        ));
    }
    if !open.is_empty() || answered > 0 {
        return Err(format!(
            "{} still open, {answered} answered: {s}",
            open.len()
        ));
    }
    Ok(s)
}

fn fresh_sessions(c: &Ctx, keep: bool) -> Result<(Vec<RawPeer>, String), String> {
    let start = Instant::now();
    let (mut hellos, mut busy) = (0usize, 0usize);
    let mut kept = Vec::new();
    for i in 0..c.volume {
        let mut peer = RawPeer::connect(c.addr).map_err(|e| format!("connect {i}: {e}"))?;
        peer.send(&wire::hello(Params::acks(1 << 20)))
            .map_err(|e| format!("send {i}: {e}"))?;
        match peer.answer(limit_for(c.config)) {
            Ok(Answer::ServerHello { .. }) => hellos += 1,
            Ok(Answer::Reject {
                code: code::BUSY, ..
            }) => busy += 1,
            Ok(a) => return Err(format!("handshake {i}: {a:?}")),
            Err(e) => return Err(format!("handshake {i}: {e}")),
        }
        if keep {
            kept.push(peer);
        }
    }
    c.sample();
    Ok((
        kept,
        format!(
            "{hellos} SERVER_HELLO, {busy} BUSY in {:?}",
            start.elapsed()
        ),
    ))
}

fn fresh_sessions_dropped(c: &Ctx) -> Result<String, String> {
    let (_, s) = fresh_sessions(c, false)?;
    // Let the server notice every close (the legitimate session is parked).
    super::target::wait_for(Duration::from_secs(20), || c.counts().set.attached == 0);
    c.sample();
    let n = c.counts().set;
    Ok(format!(
        "{s}; then parked {}, evicted {}",
        n.parked, n.evicted
    ))
}

fn fresh_sessions_idle(c: &Ctx) -> Result<String, String> {
    let (mut peers, s) = fresh_sessions(c, true)?;
    let start = Instant::now();
    let deadline = start + c.config.idle_timeout + Duration::from_secs(15);
    while !peers.is_empty() && Instant::now() < deadline {
        peers.retain_mut(|p| !p.closed_by_server());
        std::thread::sleep(Duration::from_millis(50));
        c.sample();
    }
    let n = c.counts().set;
    let s = format!(
        "{s}; the server dropped them all {:?} later (idle_timeout {:?}); parked {}, evicted {}",
        start.elapsed(),
        c.config.idle_timeout,
        n.parked,
        n.evicted
    );
    if peers.is_empty() {
        Ok(s)
    } else {
        Err(format!("{} still open: {s}", peers.len()))
    }
}

/// A raw session: HELLO answered by SERVER_HELLO.
fn raw_session(c: &Ctx, params: Params) -> Result<(RawPeer, [u8; 16], [u8; 32]), String> {
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    peer.send(&wire::hello(params)).map_err(|e| e.to_string())?;
    match peer.answer(limit_for(c.config))? {
        Answer::ServerHello { id, secret, .. } => Ok((peer, id, secret)),
        a => Err(format!("HELLO answered with {a:?}")),
    }
}

fn expect_abort(peer: &mut RawPeer, want: u16) -> Result<String, String> {
    let (r, end) = peer.read_frames(Duration::from_secs(5), |_| false);
    let s = format!(
        "frames {:?}, then {end:?}",
        r.frames.iter().rev().take(3).collect::<Vec<_>>()
    );
    if r.abort() == Some(want) && end != End::Open {
        Ok(s)
    } else {
        Err(s)
    }
}

fn oversized_frame(c: &Ctx) -> Result<String, String> {
    let (mut peer, _, _) = raw_session(c, Params::acks(1 << 20))?;
    peer.send(&wire::data_header(0, c.config.max_frame_payload + 1))
        .map_err(|e| e.to_string())?;
    expect_abort(&mut peer, code::PROTOCOL_VIOLATION)
}

fn ack_beyond_sent(c: &Ctx) -> Result<String, String> {
    let (mut peer, _, _) = raw_session(c, Params::acks(1 << 20))?;
    peer.send(&wire::ack(1 << 20)).map_err(|e| e.to_string())?;
    expect_abort(&mut peer, code::PROTOCOL_VIOLATION)
}

fn ack_beyond_resent(c: &Ctx) -> Result<String, String> {
    let (mut peer, id, secret) = raw_session(c, Params::acks(8 << 20))?;
    // Ask for 512 KiB, read about half, drop the transport.
    let mut req = wire::data(0, &request(1, 8, 512 * 1024));
    req.extend(wire::fin(8, false));
    peer.send(&req).map_err(|e| e.to_string())?;
    let (r, _) = peer.read_frames(Duration::from_secs(5), |r| r.payload >= 256 * 1024);
    let got = r.payload;
    drop(peer);
    std::thread::sleep(Duration::from_millis(100));
    // Resume from 0, and in the same write acknowledge what came on the
    // old transport, before any of it is resent.
    let resume = Resume {
        id,
        attempt: 2,
        received: 0,
        retained_from: 0,
        params: Params::acks(8 << 20),
    };
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    let mut bytes = resume.encode(&secret);
    bytes.extend(wire::ack(got));
    peer.send(&bytes).map_err(|e| e.to_string())?;
    match peer.answer(limit_for(c.config)) {
        Ok(Answer::ResumeOk { .. }) => {}
        Ok(Answer::Reject {
            code: code::PROTOCOL_VIOLATION,
            ..
        }) => return Ok("REJECT PROTOCOL_VIOLATION".into()),
        other => return Err(format!("RESUME answered {other:?}")),
    }
    // Never ack anything else: a correct server sends ABORT at once.
    let (r, end) = peer.read_frames(Duration::from_secs(5), |r| r.abort().is_some());
    let end = if r.abort().is_some() {
        peer.observe_end(Duration::from_secs(5)).end
    } else {
        end
    };
    let s = format!(
        "ACK {got} after RESUME received 0: abort {:?}, {} bytes resent, then {end:?}",
        r.abort(),
        r.payload
    );
    if r.abort() == Some(code::PROTOCOL_VIOLATION) && end != End::Open {
        Ok(s)
    } else {
        Err(s)
    }
}

fn count_beyond_sent(c: &Ctx) -> Result<String, String> {
    let (mut first, id, secret) = raw_session(c, Params::acks(1 << 20))?;
    let resume = Resume {
        id,
        attempt: 2,
        received: 1 << 30,
        retained_from: 0,
        params: Params::acks(1 << 20),
    };
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    peer.send(&resume.encode(&secret))
        .map_err(|e| e.to_string())?;
    let s = expect_ended(
        &mut peer,
        code::PROTOCOL_VIOLATION,
        &resume,
        &secret,
        c.config,
    )?;
    let o = first.observe_end(Duration::from_secs(5));
    Ok(format!("{s}; the first transport then {:?}", o.end))
}

fn random_bytes<const N: usize>(rng: &mut SplitMix64) -> [u8; N] {
    let mut a = [0u8; N];
    for b in a.iter_mut() {
        *b = rng.next_u64() as u8;
    }
    a
}

fn resume_unknown_id(c: &Ctx) -> Result<String, String> {
    let mut rng = SplitMix64::new(0x1d);
    let resume = Resume {
        id: random_bytes(&mut rng),
        attempt: 2,
        received: 0,
        retained_from: 0,
        params: Params::acks(1 << 20),
    };
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    peer.send(&resume.encode(&random_bytes(&mut rng)))
        .map_err(|e| e.to_string())?;
    Ok(expect_reject(&mut peer, code::UNKNOWN_SESSION, c.config)?.1)
}

fn resume_wrong_proof(c: &Ctx) -> Result<String, String> {
    let mut rng = SplitMix64::new(0x2e);
    // An attached session whose id the attacker knows too.
    let (mut victim, victim_id, _) = raw_session(c, Params::acks(1 << 20))?;
    let mut n = 0;
    for id in [c.parked_id, victim_id] {
        for attempt in [2, 3, 1 << 20, u64::MAX] {
            let resume = Resume {
                id,
                attempt,
                received: 0,
                retained_from: 0,
                params: Params::acks(1 << 20),
            };
            let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
            peer.send(&resume.encode_with(random_bytes(&mut rng)))
                .map_err(|e| e.to_string())?;
            expect_reject(&mut peer, code::UNKNOWN_SESSION, c.config)?;
            n += 1;
        }
    }
    // The attached victim is undisturbed: it is served.
    if victim.closed_by_server() {
        return Err(format!(
            "{n} REJECT UNKNOWN_SESSION, but the attached session was closed"
        ));
    }
    let mut req = wire::data(0, &request(2, 8, 1000));
    req.extend(wire::fin(8, false));
    victim.send(&req).map_err(|e| e.to_string())?;
    let (r, _) = victim.read_frames(Duration::from_secs(5), |r| r.payload >= 1040);
    if r.payload < 1040 {
        return Err(format!(
            "the attached session got {} of 1040 bytes",
            r.payload
        ));
    }
    Ok(format!(
        "{n} REJECT UNKNOWN_SESSION (attempts up to u64::MAX); the attached session still served"
    ))
}

fn resume_replayed(c: &Ctx) -> Result<String, String> {
    let (first, id, secret) = raw_session(c, Params::acks(1 << 20))?;
    drop(first);
    let resume = Resume {
        id,
        attempt: 2,
        received: 0,
        retained_from: 0,
        params: Params::acks(1 << 20),
    };
    let bytes = resume.encode(&secret);
    let mut resumed = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    resumed.send(&bytes).map_err(|e| e.to_string())?;
    match resumed.answer(limit_for(c.config))? {
        Answer::ResumeOk {
            id: rid,
            received,
            proof,
            params,
        } if rid == id => {
            if proof != wire::accept_proof(&secret, &id, 2, received, &params) {
                return Err("RESUME_OK with a proof that does not verify".into());
            }
        }
        a => return Err(format!("the genuine RESUME got {a:?}")),
    }
    let older = Resume {
        attempt: 1,
        ..resume
    }
    .encode(&secret);
    let mut out = Vec::new();
    for b in [bytes, older] {
        let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
        peer.send(&b).map_err(|e| e.to_string())?;
        out.push(expect_reject(&mut peer, code::UNKNOWN_SESSION, c.config)?.1);
    }
    if resumed.closed_by_server() {
        return Err(format!("{out:?}, but the resumed transport was closed"));
    }
    Ok(format!("RESUME_OK verified; replays: {}", out.join("; ")))
}

fn expired_config(c: &mut Config) {
    c.max_reconnect_time = Duration::from_secs(3);
}

fn expire_a_session(c: &Ctx) -> Result<String, String> {
    let (peer, id, secret) = raw_session(c, Params::acks(1 << 20))?;
    drop(peer);
    let start = Instant::now();
    let live = || {
        let n = c.counts().set;
        n.attached + n.parked
    };
    if !super::target::wait_for(Duration::from_secs(5), || {
        live() == 1 && c.counts().set.parked == 1
    }) {
        return Err("the dropped session never parked".into());
    }
    // Only this session lives: wait until the server ended it.
    if !super::target::wait_for(c.config.max_reconnect_time * 4, || live() == 0) {
        return Err("the parked session never expired".into());
    }
    c.stash.borrow_mut().push((id, secret));
    c.note(format!(
        "a dropped session expired after {:?}",
        start.elapsed()
    ));
    Ok(String::new())
}

fn resume_expired(c: &Ctx) -> Result<String, String> {
    let (id, secret) = *c.stash.borrow().first().ok_or("no expired session")?;
    let resume = Resume {
        id,
        attempt: 2,
        received: 0,
        retained_from: 0,
        params: Params::acks(1 << 20),
    };
    let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    peer.send(&resume.encode(&secret))
        .map_err(|e| e.to_string())?;
    match expect_ended(&mut peer, code::EXPIRED, &resume, &secret, c.config) {
        Ok(s) => Ok(s),
        Err(e) if e.starts_with("Reject { code: 1,") => Ok(format!("REJECT UNKNOWN_SESSION: {e}")),
        Err(e) => Err(e),
    }
}

fn never_reads_config(c: &mut Config) {
    c.send_buffer_capacity = 1 << 20;
}

fn never_reads(c: &Ctx) -> Result<String, String> {
    let (mut peer, _, _) = raw_session(c, Params::acks(1 << 20))?;
    let _ = peer.stream().set_nodelay(true);
    let mut req = wire::data(0, &request(3, 8, 64 << 20));
    req.extend(wire::fin(8, false));
    peer.send(&req).map_err(|e| e.to_string())?;
    // Keep the transport alive with heartbeats, never read, never ack.
    let mut samples = Vec::new();
    for i in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peer.send(&wire::heartbeat()).map_err(|e| e.to_string())?;
        if i % 10 == 9 {
            samples.push(c.log.reply_bytes());
            c.sample();
        }
    }
    let retained = c.log.max_retained();
    let cap = c.config.send_buffer_capacity as u64;
    let s = format!(
        "reply bytes written after 1, 2, 3 s: {samples:?} of 64 MiB; server retained at most {} (send_buffer_capacity {})",
        mib(retained),
        mib(cap)
    );
    let stalled = samples.windows(2).last().is_some_and(|w| w[0] == w[1]);
    if retained <= cap && stalled {
        Ok(s)
    } else {
        Err(s)
    }
}

fn implicit_config(c: &mut Config) {
    c.release_policy = ReleasePolicy::Implicit;
    c.send_buffer_capacity = 1 << 20;
    // Room for one peer at implicit_max_buffer (64 MiB) and the legitimate
    // sessions (about 1.2 MiB each), not for a second such peer.
    c.implicit_retention_budget = 96 << 20;
}

fn huge_recv_buffer(c: &Ctx) -> Result<String, String> {
    let limit = c.config.implicit_max_buffer;
    // Above the limit: refused.
    let mut out = Vec::new();
    {
        let mut peer = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
        peer.send(&wire::hello(Params::implicit(1 << 20, 1 << 40)))
            .map_err(|e| e.to_string())?;
        let a = peer.answer(limit_for(c.config));
        let (r, end) = peer.read_frames(Duration::from_secs(5), |_| false);
        let shown = match &a {
            Ok(Answer::ServerHello { .. }) => "SERVER_HELLO".to_string(),
            other => format!("{other:?}"),
        };
        out.push(format!(
            "recv_buffer 2^40: {shown}, then abort {:?}, {end:?}",
            r.abort()
        ));
        let refused = match a {
            Ok(Answer::Reject { .. }) => true,
            Ok(Answer::ServerHello { .. }) => r.abort().is_some() && end != End::Open,
            Err(_) => end != End::Open,
            Ok(_) => false,
        };
        if !refused {
            return Err(out.join("; "));
        }
    }
    // At the limit: read a reply bigger than it at full speed.
    let (mut peer, _, _) = raw_session(c, Params::implicit(1 << 20, limit))?;
    peer.keep_alive(c.config.heartbeat_interval);
    let want = limit + limit / 2;
    let mut req = wire::data(0, &request(4, 8, want));
    req.extend(wire::fin(8, false));
    peer.send(&req).map_err(|e| e.to_string())?;
    let mut last = Instant::now();
    let (r, _) = peer.read_frames(Duration::from_secs(30), |r| {
        if last.elapsed() > Duration::from_millis(200) {
            c.sample();
            last = Instant::now();
        }
        r.payload >= want
    });
    c.sample();
    let retained = c.log.max_retained();
    // Own pinned buffer (about 512 KiB) and the writer's frame: 2 MiB is ample.
    let bound = c.config.send_buffer_capacity as u64
        + limit
        + c.config.effective_implicit_margin()
        + (2 << 20);
    out.push(format!(
        "recv_buffer {}: read {} of {}; the server retained at most {} (bound {})",
        mib(limit),
        mib(r.payload),
        mib(want),
        mib(retained),
        mib(bound)
    ));
    // A second peer at the limit, while the first lives: over the budget.
    let mut second = RawPeer::connect(c.addr).map_err(|e| e.to_string())?;
    second
        .send(&wire::hello(Params::implicit(1 << 20, limit)))
        .map_err(|e| e.to_string())?;
    let a = second.answer(limit_for(c.config));
    let busy = matches!(
        a,
        Ok(Answer::Reject {
            code: code::BUSY,
            ..
        })
    );
    out.push(format!(
        "a second peer at the limit (implicit_retention_budget {}): {}",
        mib(c.config.implicit_retention_budget),
        match &a {
            Ok(Answer::ServerHello { .. }) => "SERVER_HELLO".to_string(),
            other => format!("{other:?}"),
        }
    ));
    drop(peer);
    if r.payload >= want && retained <= bound && busy {
        Ok(out.join("; "))
    } else {
        Err(out.join("; "))
    }
}
