//! The batched drive contract (`Session::set_reports_written`,
//! `Input::Written`, `TransmitQueue`): the implicit bound counts only bytes
//! the transport accepted, never bytes merely polled; partial writes are
//! normal; the default contract is unchanged.
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::io::IoSlice;
use std::time::Instant;

use std::time::Duration;

use ft_session_core::sim::{
    established_pair, fast_config, pattern, AppConfig, Fault, LinkConfig, Pair, Rng, Scenario,
    ScheduledFault,
};
use ft_session_core::{
    Config, Endpoint, EndpointInput, EndpointOutput, Input, Output, ReleasePolicy, Session,
    TransmitQueue, TransportId,
};
use sha2::{Digest, Sha256};

const FRAME: u32 = 16 * 1024;
const WRITTEN: usize = 1 << 20;

fn implicit() -> Config {
    let mut cfg = Config::default();
    cfg.release_policy = ReleasePolicy::Implicit;
    cfg.max_frame_payload = FRAME;
    cfg.send_buffer_capacity = WRITTEN;
    cfg
}

/// b for the sim's declared sizes and the default margin.
fn bound(cfg: &Config) -> u64 {
    let d = LinkConfig::default().declared;
    d.send_buffer.unwrap() + d.recv_buffer.unwrap() + cfg.effective_implicit_margin()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// Writes `bytes` into `s` until it blocks; returns how many it took.
fn fill(s: &mut Session, bytes: &[u8]) -> usize {
    let mut n = 0;
    while n < bytes.len() {
        match s.write(&bytes[n..]) {
            Ok(k) => n += k,
            Err(_) => break,
        }
    }
    n
}

/// Polls every output, queueing the Transmits.
fn poll_all(s: &mut Session, q: &mut TransmitQueue) {
    while let Some(out) = s.poll_output() {
        if let Output::Transmit(t) = out {
            q.push(t);
        }
    }
}

/// Writes the queue in `step`-byte partial writes into `wire`, reporting
/// each; checks the implicit bound after every report.
fn write_in_steps(
    s: &mut Session,
    q: &mut TransmitQueue,
    wire: &mut Vec<u8>,
    steps: &[usize],
    b: u64,
) {
    let mut i = 0;
    let mut last_accepted = s.accepted();
    while let Some(transport) = q.transport() {
        let n = {
            let mut slices = [IoSlice::new(&[]); 8];
            let k = q.io_slices(&mut slices);
            let want: usize = slices[..k].iter().map(|s| s.len()).sum();
            let n = steps[i % steps.len()].min(want);
            let mut left = n;
            for sl in &slices[..k] {
                let c = left.min(sl.len());
                wire.extend_from_slice(&sl[..c]);
                left -= c;
            }
            n
        };
        q.advance(n);
        s.handle_input(
            Instant::now(),
            Input::Written {
                transport,
                bytes: n,
            },
        );
        i += 1;
        assert!(s.accepted() >= last_accepted, "accepted never goes back");
        last_accepted = s.accepted();
        assert_eq!(s.unwritten(), q.len() as u64);
        // Released exactly up to b before what the transport accepted.
        assert_eq!(s.retained_from(), s.accepted().saturating_sub(b));
        assert!(s.retained() <= s.retain_capacity());
    }
}

#[test]
fn implicit_bound_counts_only_reported_bytes() {
    let now = Instant::now();
    let cfg = implicit();
    let b = bound(&cfg);
    let (mut c, mut srv, ct, st) = established_pair(now, cfg.clone(), cfg.clone());
    c.set_reports_written(true);
    assert!(c.reports_written());
    let sent = data(WRITTEN);
    assert_eq!(fill(&mut c, &sent), WRITTEN);
    let mut q = TransmitQueue::new();
    poll_all(&mut c, &mut q);
    // Everything was polled, nothing written: nothing may be released, and
    // the polled bytes still count against the send capacity.
    assert!(q.len() > WRITTEN);
    assert_eq!(c.unwritten(), q.len() as u64);
    assert_eq!(c.retained_from(), 0);
    assert_eq!(c.retained(), WRITTEN as u64);
    assert_eq!(c.send_capacity(), 0);
    assert!(!c.is_flushed());
    assert!(q.transport() == Some(ct));

    // Partial writes of awkward sizes (inside headers, across frames).
    let mut wire = Vec::new();
    write_in_steps(
        &mut c,
        &mut q,
        &mut wire,
        &[1, 7, 5000, 16 * 1024 + 3, 65_536, 2],
        b,
    );
    assert!(q.is_empty());
    assert_eq!(c.unwritten(), 0);
    assert_eq!(c.accepted(), WRITTEN as u64);
    assert_eq!(c.retained_from(), WRITTEN as u64 - b);
    assert_eq!(
        c.send_capacity(),
        WRITTEN,
        "all written: the capacity is back"
    );
    // Only events (Released, Writable) are left to poll.
    while let Some(out) = c.poll_output() {
        assert!(matches!(out, Output::Event(_)), "{out:?}");
    }
    assert!(c.is_flushed());

    // The wire carries exactly the stream, in order.
    srv.handle_input(
        now,
        Input::Received {
            transport: st,
            data: &wire,
        },
    );
    let mut got = vec![0u8; WRITTEN + 1];
    let mut n = 0;
    while let Ok(k @ 1..) = srv.read(&mut got[n..]) {
        n += k;
    }
    assert_eq!(n, WRITTEN);
    assert_eq!(Sha256::digest(&got[..n]), Sha256::digest(&sent));
}

/// `unwritten` counts for the current transport only: once it is lost,
/// what it never took is not owed to any transport (it is retransmitted
/// after the resume if the peer misses it), so the count is 0
/// (mutant: `&&` -> `||` in `unwritten`).
#[test]
fn unwritten_is_zero_once_its_transport_is_lost() {
    let now = Instant::now();
    let cfg = implicit();
    let (mut c, _srv, ct, _st) = established_pair(now, cfg.clone(), cfg);
    c.set_reports_written(true);
    assert_eq!(fill(&mut c, &data(10_000)), 10_000);
    let mut q = TransmitQueue::new();
    poll_all(&mut c, &mut q);
    assert_eq!(c.unwritten(), q.len() as u64);
    assert!(c.unwritten() > 10_000);
    c.handle_input(now, Input::TransportLost { transport: ct });
    assert_ne!(c.transport(), Some(ct), "the lost transport is not current");
    assert_eq!(c.unwritten(), 0);
}

#[test]
fn default_contract_counts_polled_bytes() {
    let now = Instant::now();
    let cfg = implicit();
    let b = bound(&cfg);
    let (mut c, _srv, _ct, _st) = established_pair(now, cfg.clone(), cfg);
    assert!(!c.reports_written());
    let sent = data(WRITTEN);
    assert_eq!(fill(&mut c, &sent), WRITTEN);
    let mut q = TransmitQueue::new();
    poll_all(&mut c, &mut q);
    assert_eq!(c.accepted(), WRITTEN as u64);
    assert_eq!(c.retained_from(), WRITTEN as u64 - b);
    assert_eq!(c.unwritten(), 0);
    // Written reports mean nothing under this contract.
    c.handle_input(
        now,
        Input::Written {
            transport: q.transport().unwrap(),
            bytes: 10,
        },
    );
    assert_eq!(c.accepted(), WRITTEN as u64);
}

#[test]
fn stray_reports_are_ignored() {
    let now = Instant::now();
    let cfg = implicit();
    let (mut c, _srv, ct, _st) = established_pair(now, cfg.clone(), cfg);
    c.set_reports_written(true);
    fill(&mut c, &data(100_000));
    let mut q = TransmitQueue::new();
    poll_all(&mut c, &mut q);
    let polled = q.len();
    let other: TransportId = ct + 1000;
    c.handle_input(
        now,
        Input::Written {
            transport: other,
            bytes: polled,
        },
    );
    assert_eq!((c.accepted(), c.unwritten()), (0, polled as u64));
    // More than was polled: what was polled counts, the rest is ignored.
    c.handle_input(
        now,
        Input::Written {
            transport: ct,
            bytes: polled * 3,
        },
    );
    assert_eq!((c.accepted(), c.unwritten()), (100_000, 0));
    while c.poll_output().is_some() {}
    assert!(c.is_flushed());
}

#[test]
fn switching_contracts_keeps_what_was_polled() {
    let now = Instant::now();
    let cfg = implicit();
    let b = bound(&cfg);
    let (mut c, _srv, _ct, _st) = established_pair(now, cfg.clone(), cfg);
    fill(&mut c, &data(WRITTEN / 2));
    let mut q = TransmitQueue::new();
    poll_all(&mut c, &mut q);
    // Polled under the default contract: handed over.
    c.set_reports_written(true);
    assert_eq!(c.accepted(), (WRITTEN / 2) as u64);
    fill(&mut c, &data(WRITTEN / 2));
    let mut q2 = TransmitQueue::new();
    poll_all(&mut c, &mut q2);
    assert_eq!(c.accepted(), (WRITTEN / 2) as u64);
    assert_eq!(c.unwritten(), q2.len() as u64);
    let mut wire = Vec::new();
    write_in_steps(&mut c, &mut q2, &mut wire, &[4096], b);
    assert_eq!(c.accepted(), WRITTEN as u64);
}

/// An endpoint that admits sessions with written reports routes
/// `EndpointInput::Written` to them; a held session releases only on them.
#[test]
fn endpoint_routes_written_reports() {
    let now = Instant::now();
    let cfg = implicit();
    let b = bound(&cfg);
    let info = LinkConfig::default().declared;
    let mut server = Endpoint::new(cfg.clone(), now, [9; 32]).unwrap();
    server.set_reports_written(true);
    let mut client = Session::client(cfg, now, 3);
    let st: TransportId = 77;
    let Some(Output::Connect { transport: ct }) = client.poll_output() else {
        panic!("a new client asks for a transport");
    };
    server.handle_input(
        now,
        EndpointInput::TransportOpened {
            transport: st,
            info,
        },
    );
    client.handle_input(
        now,
        Input::TransportUp {
            transport: ct,
            info,
        },
    );
    let mut handle = None;
    let mut server_q = TransmitQueue::new();
    for _ in 0..10 {
        while let Some(out) = client.poll_output() {
            if let Output::Transmit(t) = out {
                let mut d = Vec::new();
                t.write_to(&mut d);
                server.handle_input(
                    now,
                    EndpointInput::Received {
                        transport: st,
                        data: &d,
                    },
                );
            }
        }
        while let Some(out) = server.poll_output() {
            match out {
                EndpointOutput::Transmit(t) => server_q.push(t),
                EndpointOutput::Accepted { session, .. } => handle = Some(session),
                _ => {}
            }
        }
        // Write the server's queue whole, reporting it.
        let mut wire = Vec::new();
        while let Some(transport) = server_q.transport() {
            let mut v = [IoSlice::new(&[]); 64];
            let k = server_q.io_slices(&mut v);
            for s in &v[..k] {
                wire.extend_from_slice(s);
            }
            let n = server_q.front_len();
            server_q.advance(n);
            server.handle_input(
                now,
                EndpointInput::Written {
                    transport,
                    bytes: n,
                },
            );
        }
        if !wire.is_empty() {
            client.handle_input(
                now,
                Input::Received {
                    transport: ct,
                    data: &wire,
                },
            );
        }
    }
    let h = handle.expect("accepted");
    let s = server.session_mut(h).unwrap();
    assert!(s.reports_written());
    assert_eq!(fill(s, &data(WRITTEN)), WRITTEN);
    while let Some(out) = server.poll_output() {
        if let EndpointOutput::Transmit(t) = out {
            server_q.push(t);
        }
    }
    let s = server.session(h).unwrap();
    assert_eq!(
        (s.retained_from(), s.unwritten()),
        (0, server_q.len() as u64)
    );
    let n = server_q.len();
    server_q.advance(n);
    server.handle_input(
        now,
        EndpointInput::Written {
            transport: st,
            bytes: n,
        },
    );
    let s = server.session(h).unwrap();
    assert_eq!(s.accepted(), WRITTEN as u64);
    assert_eq!(s.retained_from(), WRITTEN as u64 - b);
}

/// The simulation's batched adapters (random partial writes, queues of one
/// frame to everything) through transport crashes, implicit policy, a send
/// buffer several times b: every byte arrives exactly once, in order. A
/// core that released from what was polled (not what the link accepted)
/// loses bytes here.
#[test]
fn batched_sim_delivers_exactly_through_crashes() {
    let mut partial = 0;
    let mut crashes = 0;
    for seed in 0..60u64 {
        let mut r = Rng::new(seed);
        let mut cfg = fast_config();
        cfg.release_policy = ReleasePolicy::Implicit;
        cfg.send_buffer_capacity = 1 << 20;
        let up = r.range(300_000, 900_000) as usize;
        let down = r.range(0, 300_000) as usize;
        let mut client_app = AppConfig::sending(pattern(seed ^ 1, up));
        client_app.write_chunk = r.range(1000, 200_000) as usize;
        client_app.zero_copy = r.chance(50);
        let server_app = AppConfig::sending(pattern(seed ^ 2, down));
        let total = (up + down) as u64;
        let faults = (0..r.range(1, 4))
            .map(|_| ScheduledFault {
                at_byte: r.range(total / 10, total * 9 / 10),
                fault: Fault::Crash {
                    client_notice_ms: Some(r.range(0, 30) as u16),
                    server_notice_ms: Some(r.range(0, 30) as u16),
                },
            })
            .collect();
        let sc = Scenario {
            seed,
            client: cfg.clone(),
            server: cfg,
            link: LinkConfig::default(),
            client_app,
            server_app,
            faults,
        };
        let mut pair = Pair::new(Instant::now(), sc);
        let limits = [1, 40_000, 256 * 1024, usize::MAX];
        pair.set_batched(if std::env::var_os("NOBATCH").is_some() {
            None
        } else {
            Some((limits[seed as usize % 4], limits[(seed as usize / 4) % 4]))
        });
        let o = pair
            .run(5_000_000, Duration::from_secs(600))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(o.client, Ok(()), "seed {seed}: client outcome");
        assert_eq!(o.server, Some(Ok(())), "seed {seed}: server outcome");
        assert_eq!(o.server_received.len(), up, "seed {seed}");
        assert!(
            o.server_received == o.client_data,
            "seed {seed}: client->server bytes"
        );
        assert_eq!(o.client_received.len(), down, "seed {seed}");
        assert!(
            o.client_received == o.server_data,
            "seed {seed}: server->client bytes"
        );
        assert_eq!(o.capacity_violations, 0, "seed {seed}");
        partial += o.partial_writes;
        crashes += o.faults_applied;
    }
    assert!(partial > 1000, "partial writes exercised: {partial}");
    assert!(crashes > 30, "crashes struck: {crashes}");
}
