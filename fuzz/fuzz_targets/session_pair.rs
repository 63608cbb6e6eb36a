//! Two sessions through the deterministic simulation, driven by an arbitrary
//! sequence of operations: sends, reads and shutdowns on either side,
//! transport kills at a byte offset, stale bytes from old transports,
//! blackholes, pauses, failed connects, outages, time passing, forced
//! reconnects and duplicated resumes, faults on the server's transport
//! alone, one-way loss, crashes during backoff, stale bytes at a handshake
//! reader, an old resume overtaking a newer one, silent connects that expire
//! the handshake reader, buffer sizes changing between transports, and an
//! undersized implicit bound (which may end both sides with DataLost).
//!
//! After every step each application has read a prefix of what the other
//! wrote (so every byte exactly once and in order) and no replayed resume was
//! admitted. At the end both applications finish: either both streams arrived
//! whole and both sides ended cleanly, or both ended with the same kind of
//! error (the one documented exception, R12 of PROTOCOL.md: the server closed
//! cleanly, every byte arrived, and the client expired before it could learn).
#![no_main]

use std::mem::discriminant;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use ft_session_core::sim::{
    fast_config, pattern, AppConfig, Fault, LinkConfig, Pair, Scenario, ScheduledFault,
};
use ft_session_core::{ReleasePolicy, SessionError, TransportInfo};
use libfuzzer_sys::fuzz_target;

/// Most bytes either side writes, so an execution stays fast.
const MAX_DATA: usize = 32 * 1024;

#[derive(Debug, Arbitrary)]
enum Op {
    ClientSend(u16),
    ServerSend(u16),
    ClientRead(u16),
    ServerRead(u16),
    ClientShutdown,
    ServerShutdown,
    /// The current transport dies after `after` more link bytes.
    Kill {
        after: u16,
        client_notice_ms: Option<u16>,
        server_notice_ms: Option<u16>,
    },
    /// Both ends learn at once that the transport died: the client reconnects.
    Reconnect,
    StaleBytes,
    Blackhole,
    DuplicateResume,
    Pause {
        ms: u16,
    },
    ConnectFailures(u8),
    Outage {
        ms: u16,
    },
    Advance {
        ms: u16,
    },
    /// The server's transport dies on its side alone.
    ServerCrash {
        server_notice_ms: Option<u16>,
    },
    /// One direction of the current transport loses everything from now on.
    OneWay {
        to_server: bool,
    },
    CrashInBackoff,
    StaleHandshake,
    ResumeOvertaken,
    SilentConnect,
    ResizeBuffers(u8),
}

#[derive(Debug, Arbitrary)]
struct Case {
    seed: u64,
    implicit: bool,
    small_buffers: bool,
    max_chunk: u16,
    write_chunk: u16,
    zero_copy: bool,
    /// Implicit policy with a bound smaller than what the link holds: a
    /// crash may lose bytes, which must end both sides with DataLost.
    undersized: bool,
    ops: Vec<Op>,
}

fn assert_prefix(got: &[u8], sent: &[u8], what: &str) {
    assert!(
        got.len() <= sent.len(),
        "{what}: read {} bytes, only {} written",
        got.len(),
        sent.len()
    );
    assert!(
        got == &sent[..got.len()],
        "{what}: bytes read are not a prefix of those written"
    );
}

fn check_step(p: &Pair) {
    assert!(!p.replay_admitted(), "a replayed resume was admitted");
    match (p.server_sent(), p.server_received()) {
        (Some(sent), Some(received)) => {
            assert_prefix(p.client_received(), sent, "server->client");
            assert_prefix(received, p.client_sent(), "client->server");
        }
        _ => assert!(
            p.client_received().is_empty(),
            "client read bytes without a server session"
        ),
    }
}

// Tests own the clock the core is handed.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

fuzz_target!(|case: Case| {
    let policy = if case.implicit {
        ReleasePolicy::Implicit
    } else {
        ReleasePolicy::Ack
    };
    let mut client = fast_config();
    let mut server = fast_config();
    client.release_policy = policy;
    server.release_policy = policy;
    if case.small_buffers {
        // Backpressure and acknowledgments matter with small stream buffers.
        client.send_buffer_capacity = 4096;
        server.send_buffer_capacity = 4096;
        client.recv_buffer_capacity = 8192;
        server.recv_buffer_capacity = 8192;
    }
    let app = |seed| AppConfig {
        data: pattern(seed, MAX_DATA),
        write_chunk: 1 + usize::from(case.write_chunk % 16384),
        zero_copy: case.zero_copy,
        read_chunk: usize::MAX,
        close_after_eof: false,
        echo: false,
    };
    let undersized = case.implicit && case.undersized;
    let mut declared = LinkConfig::default().declared;
    if undersized {
        client.implicit_margin = Some(0);
        server.implicit_margin = Some(0);
        declared = TransportInfo {
            send_buffer: Some(512),
            recv_buffer: Some(512),
        };
    }
    let sc = Scenario {
        seed: case.seed,
        client,
        server,
        // Chunks of at least 16 bytes: one-byte deliveries of one-byte frames
        // cost ~700k steps per run and find nothing smaller chunks don't.
        link: LinkConfig {
            max_chunk: 16 + usize::from(case.max_chunk % 8192),
            declared,
            ..LinkConfig::default()
        },
        client_app: app(case.seed ^ 1),
        server_app: app(case.seed ^ 2),
        faults: Vec::new(),
    };
    let t0 = start();
    let mut p = Pair::new_step_wise(t0, sc);
    let mut sent = [0usize; 2];
    for op in case.ops.into_iter().take(48) {
        match op {
            Op::ClientSend(n) => {
                let n = usize::from(n).min(MAX_DATA - sent[0]);
                sent[0] += n;
                p.client_send(n);
            }
            Op::ServerSend(n) => {
                let n = usize::from(n).min(MAX_DATA - sent[1]);
                sent[1] += n;
                p.server_send(n);
            }
            Op::ClientRead(n) => p.client_read(usize::from(n)),
            Op::ServerRead(n) => p.server_read(usize::from(n)),
            Op::ClientShutdown => p.client_shutdown(),
            Op::ServerShutdown => p.server_shutdown(),
            Op::Kill {
                after,
                client_notice_ms,
                server_notice_ms,
            } => p.schedule_fault(ScheduledFault {
                at_byte: p.link_bytes() + u64::from(after),
                fault: Fault::Crash {
                    client_notice_ms: client_notice_ms.map(|m| m % 2000),
                    server_notice_ms: server_notice_ms.map(|m| m % 2000),
                },
            }),
            Op::Reconnect => p.apply_fault_now(Fault::Crash {
                client_notice_ms: Some(0),
                server_notice_ms: Some(0),
            }),
            Op::StaleBytes => p.apply_fault_now(Fault::StaleBytes),
            Op::Blackhole => p.apply_fault_now(Fault::Blackhole),
            Op::DuplicateResume => p.apply_fault_now(Fault::DuplicateResume),
            Op::Pause { ms } => p.apply_fault_now(Fault::Pause { ms: ms % 5000 }),
            Op::ConnectFailures(n) => p.apply_fault_now(Fault::ConnectFailures { n: n % 6 }),
            // Up to ~33 s: sometimes longer than max_reconnect_time (20 s).
            Op::Outage { ms } => p.apply_fault_now(Fault::Outage {
                ms: u32::from(ms) / 2,
            }),
            Op::ServerCrash { server_notice_ms } => p.apply_fault_now(Fault::ServerCrash {
                server_notice_ms: server_notice_ms.map(|m| m % 2000),
            }),
            Op::OneWay { to_server } => p.apply_fault_now(Fault::OneWay { to_server }),
            Op::CrashInBackoff => p.apply_fault_now(Fault::CrashInBackoff),
            Op::StaleHandshake => p.apply_fault_now(Fault::StaleHandshake),
            Op::ResumeOvertaken => p.apply_fault_now(Fault::ResumeOvertaken),
            Op::SilentConnect => p.apply_fault_now(Fault::SilentConnect),
            Op::ResizeBuffers(size) if !undersized => {
                p.apply_fault_now(Fault::ResizeBuffers { size })
            }
            Op::ResizeBuffers(_) => {}
            Op::Advance { ms } => {
                let deadline = p.now + Duration::from_millis(u64::from(ms % 8000));
                p.advance_until(deadline, 20_000);
            }
        }
        // A little time passes after every operation, so bytes move.
        let deadline = p.now + Duration::from_millis(2);
        p.advance_until(deadline, 20_000);
        check_step(&p);
    }
    p.release_all();
    let o = match p.run(400_000, Duration::from_secs(900)) {
        Ok(o) => o,
        Err(e) => panic!("simulation did not finish: {e}"),
    };
    assert_prefix(
        &o.server_received,
        &o.client_data,
        "client->server at the end",
    );
    assert_prefix(
        &o.client_received,
        &o.server_data,
        "server->client at the end",
    );
    let whole = o.server_received == o.client_data && o.client_received == o.server_data;
    match (&o.client, &o.server) {
        (Ok(()), Some(Ok(()))) => assert!(whole, "both ended cleanly but a stream is incomplete"),
        (Err(SessionError::Expired), Some(Ok(()))) => {
            assert!(
                whole,
                "server ended cleanly, client expired, and a stream is incomplete"
            )
        }
        (Err(_), None) => assert!(o.client_received.is_empty() && o.server_received.is_empty()),
        // An undersized bound may lose bytes: both sides learn it, the
        // delivered bytes are prefixes (checked above).
        (Err(SessionError::DataLost { .. }), Some(Err(SessionError::DataLost { .. })))
            if undersized => {}
        (Err(c), Some(Err(s))) => {
            assert_eq!(discriminant(c), discriminant(s), "client {c} vs server {s}")
        }
        (c, s) => panic!("sides disagree: client {c:?}, server {s:?}"),
    }
});
