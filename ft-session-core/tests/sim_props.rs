//! Properties of whole sessions under seeded fault schedules, in the
//! deterministic simulation (virtual time, so they run fast and never flake).
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::mem::discriminant;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ft_session_core::frame::{Decoded, Frame, FrameDecoder};
use ft_session_core::sim::{
    fast_config, pattern, AppConfig, Fault, LinkConfig, Pair, Rng, Scenario, ScheduledFault,
    SimOutcome,
};
use ft_session_core::{ReleasePolicy, SessionError, TransportInfo};
use proptest::prelude::*;

const MAX_STEPS: u64 = 2_000_000;
const MAX_TIME: Duration = Duration::from_secs(600);

/// Faults a session must survive (the transport comes back within the limit).
fn survivable_fault(r: &mut Rng) -> Fault {
    let notice = |r: &mut Rng| {
        if r.chance(25) {
            None
        } else {
            Some(r.range(0, 300) as u16)
        }
    };
    match r.range(0, 17) {
        0..=3 => Fault::Crash {
            client_notice_ms: notice(r),
            server_notice_ms: notice(r),
        },
        4 => Fault::Blackhole,
        5 => Fault::Pause {
            ms: r.range(1, 3000) as u16,
        },
        6 => Fault::StaleBytes,
        7 => Fault::DuplicateResume,
        8 => Fault::ConnectFailures {
            n: r.range(1, 4) as u8,
        },
        9 => Fault::Outage {
            ms: r.range(1, 3000) as u32,
        },
        10 => Fault::ServerCrash {
            server_notice_ms: notice(r),
        },
        11 => Fault::OneWay {
            to_server: r.chance(50),
        },
        12 => Fault::CrashInBackoff,
        13 => Fault::StaleHandshake,
        14 => Fault::ResumeOvertaken,
        15 => Fault::SilentConnect,
        _ => Fault::ResizeBuffers {
            size: r.range(0, 3) as u8,
        },
    }
}

fn schedule(
    r: &mut Rng,
    total: u64,
    n: usize,
    mut make: impl FnMut(&mut Rng) -> Fault,
) -> Vec<ScheduledFault> {
    (0..n)
        .map(|_| ScheduledFault {
            at_byte: r.range(0, total),
            fault: make(r),
        })
        .collect()
}

fn scenario(seed: u64, policy: ReleasePolicy) -> Scenario {
    let mut r = Rng::new(seed);
    let up = r.range(0, 96 * 1024) as usize;
    let down = r.range(0, 96 * 1024) as usize;
    let mut client = fast_config();
    client.release_policy = policy;
    let mut server = fast_config();
    server.release_policy = policy;
    // Small stream buffers make backpressure and acks matter.
    if r.chance(50) {
        client.send_buffer_capacity = r.range(4 * 1024, 64 * 1024) as usize;
        server.send_buffer_capacity = r.range(4 * 1024, 64 * 1024) as usize;
    }
    let app = |data: Bytes, r: &mut Rng| AppConfig {
        data,
        write_chunk: r.range(1, 20_000) as usize,
        zero_copy: r.chance(50),
        read_chunk: if r.chance(30) {
            r.range(1, 4096) as usize
        } else {
            usize::MAX
        },
        close_after_eof: r.chance(30),
        echo: false,
    };
    let client_app = app(pattern(seed ^ 1, up), &mut r);
    let mut server_app = app(pattern(seed ^ 2, down), &mut r);
    // Only one side may wait for the other's end of stream before finishing.
    server_app.close_after_eof = false;
    let link = LinkConfig {
        max_chunk: r.range(1, 8192) as usize,
        latency_max: Duration::from_millis(r.range(1, 50)),
        ..LinkConfig::default()
    };
    let total = (up + down) as u64 + 2_000;
    let n = r.range(0, 8) as usize;
    Scenario {
        seed,
        client,
        server,
        link,
        client_app,
        server_app,
        faults: schedule(&mut r, total, n, survivable_fault),
    }
}

fn run(sc: Scenario) -> SimOutcome {
    let desc = format!("{sc:?}").chars().take(600).collect::<String>();
    match Pair::new(Instant::now(), sc).run(MAX_STEPS, MAX_TIME) {
        // (3) holds in every run, whatever its outcome.
        Ok(o) if o.capacity_violations > 0 => panic!("retained beyond capacity\nscenario: {desc}"),
        Ok(o) => o,
        Err(e) => panic!("simulation failed: {e}\nscenario: {desc}"),
    }
}

fn assert_prefix(got: &[u8], sent: &[u8], what: &str) {
    assert!(got.len() <= sent.len(), "{what}: more bytes than sent");
    assert!(
        got == &sent[..got.len()],
        "{what}: delivered bytes are not a prefix of what was sent"
    );
}

fn check_exact(o: &SimOutcome) {
    assert_eq!(o.client, Ok(()), "client outcome");
    assert_eq!(o.server, Some(Ok(())), "server outcome");
    assert_eq!(
        o.server_received.len(),
        o.client_data.len(),
        "client->server length"
    );
    assert!(o.server_received == o.client_data, "client->server bytes");
    assert_eq!(
        o.client_received.len(),
        o.server_data.len(),
        "server->client length"
    );
    assert!(o.client_received == o.server_data, "server->client bytes");
    assert_eq!(o.capacity_violations, 0, "retained beyond capacity");
}

fn cases() -> u32 {
    std::env::var("FT_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// (1) With reconnects possible, each direction delivers exactly the bytes
    /// written, once, in order; (3) retained bytes never exceed capacity.
    #[test]
    fn exact_delivery_under_survivable_faults_ack(seed in any::<u64>()) {
        check_exact(&run(scenario(seed, ReleasePolicy::Ack)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 4, failure_persistence: None, ..ProptestConfig::default() })]

    /// (1) and (3) for the implicit policy with truthful buffer sizes.
    #[test]
    fn exact_delivery_under_survivable_faults_implicit(seed in any::<u64>()) {
        check_exact(&run(scenario(seed, ReleasePolicy::Implicit)));
    }

    /// (2) When the transport stays away longer than the limit, both sides end
    /// with the same typed error and what was delivered is a prefix.
    #[test]
    fn same_error_on_both_sides_when_reconnect_fails(seed in any::<u64>()) {
        let mut sc = scenario(seed, ReleasePolicy::Ack);
        let mut r = Rng::new(seed ^ 0xdead);
        let total = (sc.client_app.data.len() + sc.server_app.data.len()) as u64;
        let at = r.range(0, total);
        // An outage longer than max_reconnect_time, starting with a crash.
        sc.faults.retain(|f| f.at_byte < at && !matches!(f.fault, Fault::Outage { .. }));
        sc.faults.push(ScheduledFault { at_byte: at, fault: Fault::Outage { ms: 60_000 } });
        sc.faults.push(ScheduledFault { at_byte: at, fault: Fault::Crash {
            client_notice_ms: Some(r.range(0, 100) as u16),
            server_notice_ms: if r.chance(30) { None } else { Some(r.range(0, 100) as u16) },
        }});
        let o = run(sc);
        assert_prefix(&o.server_received, &o.client_data, "client->server");
        assert_prefix(&o.client_received, &o.server_data, "server->client");
        if o.client.is_ok() {
            // The crash came after everything was done: then it is exact.
            check_exact(&o);
        } else {
            let c = o.client.clone().unwrap_err();
            if o.server.is_none() {
                // The first connection never completed: no server session to agree with.
                assert!(matches!(c, SessionError::Unreachable | SessionError::Expired), "client: {c}");
            } else {
                assert_eq!(discriminant(&c), discriminant(&SessionError::Expired), "client: {c}");
            }
            match &o.server {
                None => {}
                Some(Err(s)) => assert_eq!(discriminant(&c), discriminant(s), "client {c} vs server {s}"),
                // The one case the sides cannot agree on (two generals): the
                // server received the client's final CLOSE, but its answering
                // CLOSE was lost and the client never got back. Every byte
                // was delivered both ways; only the confirmation is missing.
                Some(Ok(())) => {
                    assert!(o.server_received == o.client_data, "server Ok but client data incomplete");
                    assert!(o.client_received == o.server_data, "server Ok but server data incomplete");
                }
            }
        }
    }

    /// (4) Implicit release with a bound smaller than what is in flight ends
    /// in DataLost on both sides, never in corrupt data.
    #[test]
    fn undersized_implicit_bound_is_data_lost_never_corruption(seed in any::<u64>()) {
        let mut sc = scenario(seed, ReleasePolicy::Implicit);
        sc.client.implicit_margin = Some(0);
        sc.server.implicit_margin = Some(0);
        sc.link.declared = TransportInfo { send_buffer: Some(512), recv_buffer: Some(512) };
        let o = run(sc);
        assert_prefix(&o.server_received, &o.client_data, "client->server");
        assert_prefix(&o.client_received, &o.server_data, "server->client");
        match (&o.client, &o.server) {
            (Ok(()), Some(Ok(()))) => check_exact(&o),
            (Err(c), Some(Err(s))) => {
                assert!(matches!(c, SessionError::DataLost { .. }), "client: {c}");
                assert!(matches!(s, SessionError::DataLost { .. }), "server: {s}");
            }
            (c, s) => panic!("sides disagree: client {c:?}, server {s:?}"),
        }
    }

    /// (5) The decoder never panics on arbitrary bytes in arbitrary chunks,
    /// and every frame it accepts re-encodes to the same bytes.
    #[test]
    fn decoder_total_and_canonical(data in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(1usize..64, 1..16)) {
        let mut d = FrameDecoder::new(1024);
        let mut rest = &data[..];
        let mut reencoded = Vec::new();
        let mut i = 0;
        let mut payload_left = 0usize;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            i += 1;
            let mut piece = &rest[..n];
            rest = &rest[n..];
            while !piece.is_empty() {
                match d.decode(piece) {
                    Ok((used, item)) => {
                        prop_assert!(used > 0 && used <= piece.len());
                        match item {
                            Some(Decoded::Head(ft_session_core::frame::Head::Control(f))) => {
                                let mut b = bytes::BytesMut::new();
                                f.encode(&mut b);
                                reencoded.extend_from_slice(&b);
                            }
                            Some(Decoded::Head(ft_session_core::frame::Head::Data { offset, len })) => {
                                reencoded.extend_from_slice(ft_session_core::frame::FrameHead::data(offset, len).as_slice());
                                payload_left = len as usize;
                            }
                            Some(Decoded::Payload(p)) => {
                                prop_assert!(p.len() <= payload_left);
                                payload_left -= p.len();
                                reencoded.extend_from_slice(p);
                            }
                            None => {}
                        }
                        piece = &piece[used..];
                    }
                    Err(_) => { rest = &[]; break; }
                }
            }
        }
        // What was accepted re-encodes to exactly the bytes it came from.
        prop_assert!(data.starts_with(&reencoded) || reencoded.len() <= data.len());
        prop_assert_eq!(&data[..reencoded.len()], &reencoded[..]);
    }

    /// (5) Frames round-trip through encode and decode.
    #[test]
    fn frames_roundtrip(offset in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 1..100), n in any::<u64>(), code in any::<u16>(), close in any::<bool>()) {
        for f in [
            Frame::Data { offset, payload: Bytes::from(payload.clone()) },
            Frame::Ack { received: n },
            Frame::Heartbeat,
            Frame::Fin { offset: n, close },
            Frame::Close,
            Frame::Abort { code: ft_session_core::Code::from_u16(code) },
        ] {
            let mut b = bytes::BytesMut::new();
            f.encode(&mut b);
            let (g, used) = Frame::decode(&b, 1024).unwrap().unwrap();
            prop_assert_eq!(used, b.len());
            prop_assert_eq!(g, f);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 8, failure_persistence: None, ..ProptestConfig::default() })]

    /// (6) A lying authenticated peer (an ACK for bytes never sent, on a
    /// live transport) ends both sides with a protocol violation: never a
    /// stall, never silent loss.
    #[test]
    fn lying_peer_ends_both_sides_with_a_violation(seed in any::<u64>()) {
        check_lying(seed)?;
    }

}

/// The lying-peer property (6) for one seed.
fn check_lying(seed: u64) -> Result<(), TestCaseError> {
    let mut sc = scenario(seed, ReleasePolicy::Ack);
    let mut r = Rng::new(seed ^ 0x11e);
    let total = (sc.client_app.data.len() + sc.server_app.data.len()) as u64 + 100;
    // The lie alone: no other fault may lose the ABORT that reports it.
    sc.faults.clear();
    sc.faults.push(ScheduledFault {
        at_byte: r.range(0, total),
        fault: Fault::LyingAck {
            to_server: r.chance(50),
        },
    });
    let o = run(sc);
    assert_prefix(&o.server_received, &o.client_data, "client->server");
    assert_prefix(&o.client_received, &o.server_data, "server->client");
    let violation =
        |e: &Result<(), SessionError>| matches!(e, Err(SessionError::ProtocolViolation(_)));
    let whole = o.server_received == o.client_data && o.client_received == o.server_data;
    match (&o.client, &o.server) {
        // No lie, or it arrived once the session had ended.
        (Ok(()), Some(Ok(()))) => check_exact(&o),
        (c, s) => {
            prop_assert!(o.lies > 0, "failed without a lie: {c:?} {s:?}");
            // A side that had finished cleanly before the lie reached
            // the other keeps its Ok (every byte arrived both ways).
            prop_assert!(violation(c) || (c.is_ok() && whole), "client {c:?}");
            // The client's ABORT goes out only as far as its transport takes
            // it when the session drops that transport (as on a real socket
            // whose send buffer is full); if it is lost, the server learns by
            // expiry: a typed error, never a false Ok.
            let abort_lost = violation(c) && matches!(s, Some(Err(SessionError::Expired)));
            let s_ok = abort_lost
                || s.as_ref()
                    .is_some_and(|s| violation(s) || (s.is_ok() && whole));
            prop_assert!(s_ok, "server {s:?}");
            prop_assert!(violation(c) || s.as_ref().is_some_and(violation));
        }
    }
    Ok(())
}

/// Soak seeds of the lying-peer property whose client ABORT was lost in a
/// full transport under the batched drive (the server ended `Expired`).
#[test]
fn lying_peer_regression_seeds() {
    for seed in [7_616_550_536_187_951_536, 18_252_025_982_263_089_306] {
        check_lying(seed).unwrap();
    }
}

/// Every new fault kind strikes and the sessions still deliver exactly.
#[test]
fn new_fault_kinds_are_survived() {
    let kinds = [
        Fault::ServerCrash {
            server_notice_ms: Some(3),
        },
        Fault::ServerCrash {
            server_notice_ms: None,
        },
        Fault::OneWay { to_server: true },
        Fault::OneWay { to_server: false },
        Fault::CrashInBackoff,
        Fault::StaleHandshake,
        Fault::ResumeOvertaken,
        Fault::SilentConnect,
        Fault::ResizeBuffers { size: 0 },
    ];
    for (k, fault) in kinds.into_iter().enumerate() {
        for policy in [ReleasePolicy::Ack, ReleasePolicy::Implicit] {
            let seed = k as u64;
            let mut sc = scenario(seed, policy);
            sc.client_app = AppConfig::sending(pattern(seed, 60_000));
            sc.server_app = AppConfig::sending(pattern(seed + 1, 60_000));
            // A crash first, so the resumes these faults need exist.
            sc.faults = vec![
                ScheduledFault {
                    at_byte: 20_000,
                    fault: Fault::Crash {
                        client_notice_ms: Some(2),
                        server_notice_ms: Some(2),
                    },
                },
                ScheduledFault {
                    at_byte: 20_001,
                    fault: fault.clone(),
                },
                ScheduledFault {
                    at_byte: 50_000,
                    fault: Fault::Crash {
                        client_notice_ms: Some(2),
                        server_notice_ms: None,
                    },
                },
            ];
            let o = run(sc);
            assert_eq!(o.faults_applied, 3, "{fault:?}");
            check_exact(&o);
            if fault == Fault::StaleHandshake {
                // The resume the server had already read reached the set
                // again and was refused.
                assert!(o.rejected_resumes > 0, "{fault:?} {policy:?}");
            }
        }
    }
}

/// A fixed schedule that must produce DataLost: the undersized bound is
/// really exercised, not only allowed.
#[test]
fn undersized_bound_does_lose_data_on_a_crash_mid_stream() {
    let mut lost = 0;
    for seed in 0..20 {
        let mut sc = scenario(seed, ReleasePolicy::Implicit);
        sc.client_app = AppConfig::sending(pattern(seed, 200_000));
        sc.server_app = AppConfig::sending(pattern(seed + 1, 200_000));
        sc.client.implicit_margin = Some(0);
        sc.server.implicit_margin = Some(0);
        sc.link.declared = TransportInfo {
            send_buffer: Some(512),
            recv_buffer: Some(512),
        };
        sc.faults = vec![ScheduledFault {
            at_byte: 150_000,
            fault: Fault::Crash {
                client_notice_ms: Some(1),
                server_notice_ms: Some(1),
            },
        }];
        let o = run(sc);
        assert_prefix(&o.server_received, &o.client_data, "client->server");
        assert_prefix(&o.client_received, &o.server_data, "server->client");
        if matches!(o.client, Err(SessionError::DataLost { .. })) {
            assert!(
                matches!(o.server, Some(Err(SessionError::DataLost { .. }))),
                "{:?}",
                o.server
            );
            lost += 1;
        }
    }
    assert!(lost > 10, "only {lost} of 20 runs lost data");
}

/// The simulated runs really suffer the faults they schedule.
#[test]
fn faults_really_strike_and_sessions_resume() {
    let mut resumes = 0;
    let mut faults = 0;
    for seed in 0..50 {
        let mut sc = scenario(seed, ReleasePolicy::Ack);
        sc.client_app = AppConfig::sending(pattern(seed, 100_000));
        sc.server_app = AppConfig::sending(pattern(seed + 1, 100_000));
        sc.faults = vec![ScheduledFault {
            at_byte: 50_000 + seed * 1000,
            fault: Fault::Crash {
                client_notice_ms: Some(5),
                server_notice_ms: None,
            },
        }];
        let o = run(sc);
        check_exact(&o);
        faults += o.faults_applied;
        resumes += o.client_stats.resumes;
    }
    assert_eq!(faults, 50);
    assert!(resumes >= 50, "{resumes} resumes");
}

/// Regression: a transmit held for a blackholed transport must not keep a
/// finished session's adapter busy forever (found after 29,397 random cases).
#[test]
fn held_write_on_a_dead_transport_does_not_stall() {
    check_exact(&run(scenario(9437016982599632824, ReleasePolicy::Ack)));
}

/// Seeds of the exact-delivery properties that once failed in soak runs;
/// each must deliver exactly (9437016982599632824 has its own test above).
/// Ack 4631400511843053816: StaleHandshake fed the server a resume it had
/// never seen (its transport was blackholed with it in flight), which the
/// simulation took for a replay. Implicit 6733576542055563171: it fed one the
/// server had received only as stream bytes of an orphan session, never as a
/// handshake; admitted, the client's own newer RESUME then landed inside the
/// resumed stream (see `stale_unseen_resume_ends_both_sides_with_a_violation`).
/// Ack 17143008890842378654: it fed a fresh HELLO ahead of the client's own
/// first HELLO (the first SERVER_HELLO was lost): the client took the session
/// made for the stale HELLO, and its own HELLO then landed in that stream.
const REGRESSION_SEEDS: &[(u64, ReleasePolicy)] = &[
    (4631400511843053816, ReleasePolicy::Ack),
    (6733576542055563171, ReleasePolicy::Implicit),
    (17143008890842378654, ReleasePolicy::Ack),
];

/// Every regression seed, one by one (a failure names its seed).
#[test]
fn regression_seeds() {
    for &(seed, policy) in REGRESSION_SEEDS {
        let o = std::panic::catch_unwind(|| check_exact(&run(scenario(seed, policy))));
        assert!(o.is_ok(), "regression seed {seed} ({policy:?}) failed");
    }
}

/// A resume whose transport died with it in flight, delivered for the first
/// time ahead of the client's newer one on a new transport: the server admits
/// it (valid proof, fresh attempt: nothing tells it from a genuine one), and
/// the newer RESUME then arrives inside the resumed stream. Not survivable,
/// but never silent: both sides end with a protocol violation and what was
/// delivered is a prefix.
#[test]
fn stale_unseen_resume_ends_both_sides_with_a_violation() {
    let mut violations = 0;
    for (i, policy) in [ReleasePolicy::Ack, ReleasePolicy::Implicit]
        .into_iter()
        .cycle()
        .take(20)
        .enumerate()
    {
        let seed = i as u64;
        let mut sc = scenario(seed, policy);
        sc.client_app = AppConfig::sending(pattern(seed, 60_000));
        sc.server_app = AppConfig::sending(pattern(seed + 1, 60_000));
        // The crash makes the client resume; the resume's first byte is
        // delivered, then its transport goes dark with the rest in flight.
        let crash = Fault::Crash {
            client_notice_ms: Some(2),
            server_notice_ms: Some(2),
        };
        sc.faults = [
            (20_000, crash),
            (20_001, Fault::StaleUnseenResume),
            (20_001, Fault::Blackhole),
        ]
        .into_iter()
        .map(|(at_byte, fault)| ScheduledFault { at_byte, fault })
        .collect();
        let o = run(sc);
        assert_prefix(&o.server_received, &o.client_data, "client->server");
        assert_prefix(&o.client_received, &o.server_data, "server->client");
        let violation =
            |e: &Result<(), SessionError>| matches!(e, Err(SessionError::ProtocolViolation(_)));
        match (&o.client, &o.server) {
            (Ok(()), Some(Ok(()))) => check_exact(&o),
            (c, Some(s)) => {
                assert!(violation(c) && violation(s), "client {c:?}, server {s:?}");
                violations += 1;
            }
            (c, None) => panic!("no server session: client {c:?}"),
        }
    }
    assert!(
        violations > 10,
        "the unseen resume was admitted in only {violations} of 20 runs"
    );
}

/// An echo larger than both sides' buffers: the client writes `data` while
/// it reads the echo, the server reads only once it wrote back everything it
/// read before (a blocking echo loop). Buffers, link and data sizes are drawn
/// so the data exceeds every buffer on the way together (send and receive
/// buffers of both sides and the link both ways); half the seeds add
/// survivable faults.
fn echo_scenario(seed: u64, policy: ReleasePolicy) -> Scenario {
    let mut r = Rng::new(seed ^ 0xec40);
    let mut client = fast_config();
    let mut server = fast_config();
    // Both sides accept what the other sends.
    let frame = r.range(1024, 16 * 1024) as u32;
    for c in [&mut client, &mut server] {
        c.release_policy = policy;
        c.send_buffer_capacity = r.range(4 * 1024, 64 * 1024) as usize;
        c.recv_buffer_capacity = r.range(4 * 1024, 64 * 1024) as usize;
        c.max_frame_payload = frame;
    }
    // Link: what both kernels hold in one direction, as declared to the
    // sessions (the implicit bound needs the truth).
    let half = r.range(8 * 1024, 64 * 1024);
    // Deliveries of at least 512 bytes: with 1- or 2-byte chunks the run
    // completes but needs more than MAX_STEPS (seed 4268292920248318933
    // under Ack took about 3.5 million).
    let link = LinkConfig {
        max_chunk: r.range(512, 8192) as usize,
        latency_max: Duration::from_millis(r.range(1, 30)),
        capacity: 2 * half as usize,
        declared: TransportInfo {
            send_buffer: Some(half),
            recv_buffer: Some(half),
        },
        ..LinkConfig::default()
    };
    let len = r.range(400 * 1024, 800 * 1024) as usize;
    let mut client_app = AppConfig::sending(pattern(seed, len));
    client_app.write_chunk = r.range(1, 32 * 1024) as usize;
    client_app.zero_copy = r.chance(50);
    // The client finishes first (the echo ends after its end of stream);
    // the server closes the whole session or finishes its direction.
    let mut server_app = AppConfig::echoing();
    server_app.read_chunk = r.range(1024, 8192) as usize;
    server_app.close_after_eof = r.chance(50);
    let faults = if r.chance(50) {
        let n = r.range(1, 4) as usize;
        // Not ResizeBuffers: a transport with smaller buffers than the last
        // leaves an implicit sender retaining more than its new capacity
        // until it releases (seen on main before this property, seed
        // 9289227515656419030), which the capacity check here would count.
        schedule(&mut r, 2 * len as u64, n, |r| loop {
            let f = survivable_fault(r);
            if !matches!(f, Fault::ResizeBuffers { .. }) {
                break f;
            }
        })
    } else {
        Vec::new()
    };
    Scenario {
        seed,
        client,
        server,
        link,
        client_app,
        server_app,
        faults,
    }
}

/// (7) The echo completes with exact bytes both ways: what the server read
/// and what the client read back are both exactly what the client wrote.
fn check_echo(seed: u64, policy: ReleasePolicy) {
    check_echo_policies(seed, policy, policy);
}

/// (7) with each side's own policy: mixed policies release on
/// acknowledgments (PROTOCOL.md section 4), so the echo completes too.
fn check_echo_policies(seed: u64, client: ReleasePolicy, server: ReleasePolicy) {
    let mut sc = echo_scenario(seed, client);
    sc.server.release_policy = server;
    let sent = sc.client_app.data.clone();
    let desc = format!("{sc:?}").chars().take(600).collect::<String>();
    let mut pair = Pair::new(Instant::now(), sc);
    if (client, server) == (ReleasePolicy::Implicit, ReleasePolicy::Implicit) {
        // The implicit sender under the batched drive, whose link takes a
        // random part of its room at each write, degenerates into frames of
        // a few bytes when the link stays full, as both directions are here
        // for the whole run (the same before windowed acknowledgments): the
        // run takes millions of steps without stalling. The whole-transmit
        // drive shows the same flow control without that cost.
        pair.set_batched(None);
    }
    let o = match pair.run(MAX_STEPS, MAX_TIME) {
        Ok(o) => o,
        Err(e) => panic!("simulation failed: {e}\nscenario: {desc}"),
    };
    check_exact(&o);
    assert!(
        o.server_received == sent,
        "the server read the client's bytes"
    );
    assert!(o.client_received == sent, "the client read its echo");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 20).max(4), failure_persistence: None, ..ProptestConfig::default() })]

    /// (7) under the acknowledgment policy: acknowledgments wait behind the
    /// client's data in the transport, and the server, whose application
    /// does not read while its echo is blocked, must still read them.
    #[test]
    fn echo_larger_than_all_buffers_completes_ack(seed in any::<u64>()) {
        check_echo(seed, ReleasePolicy::Ack);
    }

    /// (7) under the implicit policy (no acknowledgments but the FIN's).
    #[test]
    fn echo_larger_than_all_buffers_completes_implicit(seed in any::<u64>()) {
        check_echo(seed, ReleasePolicy::Implicit);
    }

    /// (7) with one side implicit and the other not. Before the implicit
    /// side fell back to acknowledgments, client Implicit / server Ack
    /// stalled on every seed: the client's data filled the link ahead of
    /// the ACKs the server's full send buffer waited for.
    #[test]
    fn echo_larger_than_all_buffers_completes_mixed(seed in any::<u64>(), client_implicit in any::<bool>()) {
        let (c, s) = if client_implicit {
            (ReleasePolicy::Implicit, ReleasePolicy::Ack)
        } else {
            (ReleasePolicy::Ack, ReleasePolicy::Implicit)
        };
        check_echo_policies(seed, c, s);
    }
}

/// (7) a fixed seed per policy, with and without faults, so the echo runs
/// whatever `FT_SIM_CASES` says.
#[test]
fn echo_larger_than_all_buffers_fixed_seeds() {
    let (mut faulty, mut clean) = (0, 0);
    for seed in 0..8 {
        match echo_scenario(seed, ReleasePolicy::Ack).faults.is_empty() {
            true => clean += 1,
            false => faulty += 1,
        }
        check_echo(seed, ReleasePolicy::Ack);
        check_echo(seed, ReleasePolicy::Implicit);
        check_echo_policies(seed, ReleasePolicy::Implicit, ReleasePolicy::Ack);
        check_echo_policies(seed, ReleasePolicy::Ack, ReleasePolicy::Implicit);
    }
    assert!(faulty > 0 && clean > 0, "both kinds of schedule ran");
}
