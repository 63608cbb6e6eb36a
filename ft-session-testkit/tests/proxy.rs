//! End-to-end tests of the fault proxy against a loopback echo server.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    connect, connect_and_read, exchange, nothing_arrives, read_n, read_to_end, wait_until,
    EchoServer, End, LIMIT,
};
use ft_session_testkit::{
    pattern, sha256_hex, ss_kill, ss_kill_probe, Direction, FaultPlan, FaultProxy, KillCause,
    KillPoint, KillRecord, SsKillOutcome,
};
use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

#[test]
fn forwards_bytes_exactly_in_both_directions() {
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, FaultPlan::new()).unwrap();
    let len = 2 * 1024 * 1024;
    let clients: Vec<_> = (0..3u64)
        .map(|seed| {
            let addr = proxy.local_addr();
            thread::spawn(move || {
                let data = pattern(seed, len);
                let (got, end) = exchange(addr, &data);
                assert_eq!(end, End::Eof);
                assert_eq!(got.len(), data.len());
                assert_eq!(sha256_hex(&got), sha256_hex(&data));
                sha256_hex(&data)
            })
        })
        .collect();
    let mut sent: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let mut seen: Vec<String> = (0..3)
        .map(|_| {
            let end = server.next_end();
            assert_eq!(end.end, End::Eof);
            end.hash
        })
        .collect();
    sent.sort();
    seen.sort();
    assert_eq!(
        sent, seen,
        "the server received exactly what the clients sent"
    );
    assert_eq!(proxy.bytes_forwarded(C2S), 3 * len as u64);
    assert_eq!(proxy.bytes_forwarded(S2C), 3 * len as u64);
    assert_eq!(proxy.connections(), 3);
    assert_eq!(proxy.kills(), 0);
    wait_until("connections to be forgotten", || {
        proxy.live_connections() == 0
    });
}

#[test]
fn kill_after_bytes_resets_both_ends() {
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, FaultPlan::kill_after(C2S, 10_000)).unwrap();
    let data = pattern(5, 100_000);
    let (got, end) = exchange(proxy.local_addr(), &data);
    assert!(
        end.is_dead(),
        "client must see the connection die, saw {end:?}"
    );
    assert!(got.len() <= 10_000);
    assert_eq!(
        got[..],
        data[..got.len()],
        "echo is a prefix of what was sent"
    );

    let s = server.next_end();
    assert!(s.end.is_reset(), "server must see a reset, saw {:?}", s.end);
    assert!(s.received <= 10_000);
    assert_eq!(s.hash, sha256_hex(&data[..s.received as usize]));

    assert_eq!(proxy.kills(), 1);
    assert_eq!(proxy.bytes_forwarded(C2S), 10_000);
    let log = proxy.kill_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].connection, 0);
    assert_eq!(
        log[0].cause,
        KillCause::Plan(KillPoint::AfterBytes {
            direction: C2S,
            bytes: 10_000
        })
    );
    assert_eq!(log[0].client_to_server, 10_000);
}

/// Runs `n` sequential connections through a proxy with `plan`, each sending enough
/// to reach any kill point, and returns the kill log.
fn run_sequential(plan: &FaultPlan, n: u64, bytes: usize) -> Vec<KillRecord> {
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, plan.clone()).unwrap();
    for i in 0..n {
        let data = pattern(i, bytes);
        let (_, end) = exchange(proxy.local_addr(), &data);
        assert!(end.is_dead());
        server.next_end();
    }
    assert_eq!(proxy.connections(), n);
    proxy.kill_log()
}

#[test]
fn random_kills_are_deterministic_per_seed() {
    let plan = FaultPlan::random_kills(0xfeed, 1_000, 40_000);
    let first = run_sequential(&plan, 4, 60_000);
    let second = run_sequential(&plan, 4, 60_000);
    let offsets = |log: &[KillRecord]| -> Vec<(u64, u64)> {
        log.iter()
            .map(|r| (r.connection, r.client_to_server))
            .collect()
    };
    assert_eq!(
        offsets(&first),
        offsets(&second),
        "same seed, same kill offsets"
    );
    assert_eq!(first.len(), 4);
    for r in &first {
        let Some(KillPoint::AfterBytes { direction, bytes }) = plan.kill_point(r.connection) else {
            panic!("random plan must give a byte offset");
        };
        assert_eq!(direction, C2S);
        assert!((1_000..=40_000).contains(&bytes));
        assert_eq!(
            r.client_to_server, bytes,
            "kill lands exactly on the planned offset"
        );
        assert_eq!(
            r.cause,
            KillCause::Plan(KillPoint::AfterBytes { direction, bytes })
        );
    }
    // Offsets depend on (seed, index) only: recomputing gives the same, another seed differs.
    let other = FaultPlan::random_kills(0xbeef, 1_000, 40_000);
    let points = |p: &FaultPlan| (0..4).map(|i| p.kill_point(i)).collect::<Vec<_>>();
    assert_eq!(points(&plan), points(&plan.clone()));
    assert_ne!(points(&plan), points(&other));
}

#[test]
fn max_kills_leaves_later_connections_alone() {
    let plan = FaultPlan::kill_after(C2S, 100).max_kills(2);
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, plan).unwrap();
    for i in 0..2 {
        let (got, end) = exchange(proxy.local_addr(), &pattern(i, 5_000));
        assert!(end.is_dead() && got.len() <= 100);
    }
    let data = pattern(9, 5_000);
    let (got, end) = exchange(proxy.local_addr(), &data);
    assert_eq!(end, End::Eof);
    assert_eq!(got, data);
    assert_eq!(proxy.kills(), 2);
    assert_eq!(proxy.connections(), 3);
}

#[test]
fn kill_at_accept_and_mid_handshake() {
    let plan = FaultPlan::new()
        .kill_connection_at_accept(1)
        .kill_connection_after(2, S2C, 5);
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, plan).unwrap();

    let (got, end) = exchange(proxy.local_addr(), b"first");
    assert_eq!((got.as_slice(), end), (&b"first"[..], End::Eof));
    assert_eq!(server.next_end().end, End::Eof);

    // Connection 1: reset at accept; the server saw it accepted and then reset.
    let (got, end) = connect_and_read(proxy.local_addr());
    assert!(got.is_empty() && end.is_dead(), "{end:?}");
    let s = server.next_end();
    assert_eq!(s.received, 0);
    assert!(s.end.is_dead(), "{:?}", s.end);

    // Connection 2: the reply is cut after 5 bytes.
    let mut c = connect(proxy.local_addr());
    c.write_all(b"0123456789").unwrap();
    let (got, end) = read_to_end(&mut c);
    assert!(end.is_dead(), "{end:?}");
    assert!(got.len() <= 5 && got[..] == b"01234"[..got.len()]);
    server.next_end();

    assert_eq!(proxy.kills(), 2);
    let log = proxy.kill_log();
    assert_eq!(log[0].connection, 1);
    assert_eq!(log[0].cause, KillCause::Plan(KillPoint::AtAccept));
    assert_eq!(log[1].connection, 2);
    assert_eq!(log[1].server_to_client, 5);
}

#[test]
fn kill_all_resets_every_live_connection() {
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, FaultPlan::new()).unwrap();
    let mut clients: Vec<TcpStream> = (0..2).map(|_| connect(proxy.local_addr())).collect();
    for c in &mut clients {
        c.write_all(b"ping").unwrap();
        assert_eq!(read_n(c, 4), b"ping");
    }
    assert_eq!(proxy.kill_all(), 2);
    for c in &mut clients {
        let (_, end) = read_to_end(c);
        assert!(end.is_dead(), "{end:?}");
    }
    for _ in 0..2 {
        let s = server.next_end();
        assert!(s.end.is_reset(), "{:?}", s.end);
    }
    assert_eq!(proxy.kills(), 2);
    assert!(proxy
        .kill_log()
        .iter()
        .all(|r| r.cause == KillCause::Manual));
    assert_eq!(proxy.kill_all(), 0, "nothing left to kill");
}

#[test]
fn blackhole_drops_bytes_and_holds_new_connections() {
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, FaultPlan::new()).unwrap();
    let mut a = connect(proxy.local_addr());
    a.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut a, 4), b"ping");

    proxy.blackhole(true);
    a.write_all(&[7u8; 1000]).unwrap();
    wait_until("the blackhole to drop a's bytes", || {
        proxy.bytes_dropped(C2S) == 1000
    });
    assert!(nothing_arrives(&mut a, Duration::from_millis(200)));

    // A new connection is accepted but held: its bytes are dropped, nothing upstream.
    let mut b = connect(proxy.local_addr());
    b.write_all(&[8u8; 500]).unwrap();
    wait_until("the blackhole to drop b's bytes", || {
        proxy.bytes_dropped(C2S) == 1500
    });
    assert_eq!(server.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(proxy.bytes_forwarded(C2S), 4);

    proxy.blackhole(false);
    let data = pattern(3, 64 * 1024);
    let (got, end) = exchange(proxy.local_addr(), &data);
    assert_eq!(end, End::Eof);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    // The held connection now reaches the server; the old one forwards again.
    b.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut b, 5), b"hello");
    a.write_all(b"abc").unwrap();
    assert_eq!(read_n(&mut a, 3), b"abc");
    assert_eq!(proxy.kills(), 0);
}

#[test]
fn blackhole_can_refuse_new_connections() {
    let server = EchoServer::start();
    let plan = FaultPlan::new().refuse_while_blackholed(true);
    let proxy = FaultProxy::start(server.addr, plan).unwrap();
    proxy.blackhole(true);
    let (got, end) = connect_and_read(proxy.local_addr());
    assert!(got.is_empty() && end.is_dead(), "{end:?}");
    assert_eq!(proxy.refused(), 1);
    proxy.blackhole(false);
    let (got, end) = exchange(proxy.local_addr(), b"after");
    assert_eq!((got.as_slice(), end), (&b"after"[..], End::Eof));
    assert_eq!(proxy.kills(), 0);
}

#[test]
fn pause_holds_bytes_and_resume_delivers_them() {
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, FaultPlan::new()).unwrap();
    let mut c = connect(proxy.local_addr());
    c.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut c, 4), b"ping");

    proxy.pause();
    let data = pattern(11, 100_000);
    let mut w = c.try_clone().unwrap();
    let writer = {
        let data = data.clone();
        thread::spawn(move || w.write_all(&data).unwrap())
    };
    assert!(nothing_arrives(&mut c, Duration::from_millis(200)));
    assert_eq!(
        proxy.bytes_forwarded(C2S),
        4,
        "nothing forwarded while paused"
    );
    proxy.resume();
    assert_eq!(read_n(&mut c, data.len()), data, "held bytes arrive intact");
    writer.join().unwrap();
    assert_eq!(proxy.bytes_dropped(C2S), 0);
}

#[test]
fn drop_stops_every_thread_and_closes_the_port() {
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, FaultPlan::new()).unwrap();
    let addr = proxy.local_addr();
    let mut c = connect(addr);
    c.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut c, 4), b"ping");
    proxy.pause(); // a paused forwarder must stop too

    // Drop joins every thread: it must return.
    let (tx, rx) = mpsc::channel();
    let dropper = thread::spawn(move || {
        drop(proxy);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(LIMIT)
        .expect("drop did not return: a thread hangs");
    dropper.join().unwrap();

    let (_, end) = read_to_end(&mut c);
    assert!(end.is_dead(), "{end:?}");
    // The listening socket is closed: the port can be bound again. (Waits because a
    // process being spawned by a concurrent test may hold a copy until its exec.)
    wait_until("the proxy port to be free", || {
        std::net::TcpListener::bind(addr).is_ok()
    });
}

#[test]
fn plan_rules_for_one_connection_override_the_general_rule() {
    let plan = FaultPlan::kill_after(C2S, 10)
        .kill_connection_at_accept(3)
        .kill_connection_after(3, S2C, 7);
    assert_eq!(
        plan.kill_point(0),
        Some(KillPoint::AfterBytes {
            direction: C2S,
            bytes: 10
        })
    );
    assert_eq!(
        plan.kill_point(3),
        Some(KillPoint::AfterBytes {
            direction: S2C,
            bytes: 7
        })
    );
    assert_eq!(FaultPlan::new().kill_point(0), None);
}

#[test]
fn ss_kill_resets_a_proxied_connection_when_supported() {
    let probe = ss_kill_probe();
    if let Some(reason) = probe.skip_reason() {
        eprintln!("skipping: ss -K unusable here: {reason}");
        return;
    }
    let server = EchoServer::start();
    let proxy = FaultProxy::start(server.addr, FaultPlan::new()).unwrap();
    let mut c = connect(proxy.local_addr());
    c.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut c, 4), b"ping");

    let outcome = ss_kill(proxy.local_addr().port()).unwrap();
    assert!(outcome.killed() >= 1, "{outcome:?}");
    let (_, end) = read_to_end(&mut c);
    assert!(end.is_reset(), "{end:?}");
    // The proxy passes the reset on to the server.
    assert!(server.next_end().end.is_reset());
    assert_eq!(proxy.kills(), 0, "an external kill is not a proxy kill");

    let none = ss_kill(proxy.local_addr().port()).unwrap();
    assert!(
        matches!(none, SsKillOutcome::NothingKilled { .. }),
        "{none:?}"
    );
}
