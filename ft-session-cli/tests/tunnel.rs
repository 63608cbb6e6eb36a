//! End-to-end tests of `ft-session tunnel` with the built binary, on
//! loopback, for each runtime: an echo service behind `tunnel server`, a
//! client through `tunnel client`, transports killed by the fault proxy and
//! by `ss -K`; half-close both ways; a lost session resets the local
//! connection instead of closing it.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ft_session_testkit::{ss_kill, ss_kill_probe, FaultPlan, FaultProxy};

/// Bytes echoed in the kill tests.
const SIZE: u64 = 8 << 20;
/// Proxy kills per transfer: each after 256 KiB..1 MiB client→server on
/// its connection, so all of them fit in the transfer.
const PROXY_KILLS: u64 = 6;
/// `ss -K` rounds per transfer.
const SS_ROUNDS: u64 = 4;

/// Reads the `reconnects=N` of a stats line.
fn reconnects(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("reconnects="))
        .and_then(|n| n.parse().ok())
}

/// Waits (bounded) until `p`'s stats report at least `n` reconnects.
fn wait_reconnects(p: &Proc, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = p.last_stats().as_deref().and_then(reconnects).unwrap_or(0);
        if seen >= n || Instant::now() > deadline {
            return seen;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Two local connections at once, two sessions, through the proxy's kills.
fn proxy_kills(rt: &str, seed: u64) {
    let echo = echo_service();
    let server = tunnel_server(rt, echo, FAST);
    let plan = FaultPlan::random_kills(seed, 256 << 10, 1 << 20).max_kills(PROXY_KILLS);
    let proxy = FaultProxy::start(server.addr, plan).expect("proxy");
    let mut args = FAST.to_vec();
    args.extend(["--stats", "0.1"]);
    let client = tunnel_client(rt, proxy.local_addr(), &args);

    let addr = client.addr;
    let other = thread::spawn(move || echo_transfer(addr, SIZE, seed + 100, 0, |_| {}));
    let e = echo_transfer(client.addr, SIZE, seed, 0, |_| {}).expect("echo transfer");
    let e2 = other
        .join()
        .expect("second transfer")
        .expect("echo transfer 2");
    assert_intact(&e, SIZE);
    assert_intact(&e2, SIZE);
    assert_ne!(
        e.sent_hash, e2.sent_hash,
        "the two connections carried different data"
    );
    assert_eq!(
        proxy.kills(),
        PROXY_KILLS,
        "every planned kill happened mid-transfer"
    );
    // Each kill cost one transport of one session, which resumed.
    let seen = wait_reconnects(&client, PROXY_KILLS);
    assert!(seen >= PROXY_KILLS, "client stats report {seen} reconnects");
    let stats = client.last_stats().unwrap_or_default();
    assert!(
        stats.contains("total=2") && stats.contains("lost=0"),
        "{stats}"
    );
}

fn ss_kills(rt: &str, seed: u64, extra: &[&str]) {
    if let Some(reason) = ss_kill_probe().skip_reason() {
        eprintln!("skipped: ss -K unavailable here: {reason}");
        return;
    }
    let echo = echo_service();
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    let server = tunnel_server(rt, echo, &args);
    let client = tunnel_client(rt, server.addr, &args);
    let port = server.addr.port();
    let rounds = Arc::new(AtomicUsize::new(0));
    let r = rounds.clone();
    let e = echo_transfer(client.addr, SIZE, seed, SS_ROUNDS, move |_| {
        // The transport may still be reconnecting from the last round: retry
        // until `ss -K` destroys a socket of the tunnel's port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ss_kill(port).expect("ss -K").killed() > 0 {
                r.fetch_add(1, Ordering::SeqCst);
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    })
    .expect("echo transfer");
    assert_intact(&e, SIZE);
    assert_eq!(
        rounds.load(Ordering::SeqCst) as u64,
        SS_ROUNDS,
        "every ss -K round killed the transport"
    );
}

/// Half-close passes through both ways: the service's FIN reaches the
/// client while the client still sends; the client's FIN reaches the
/// service, which still answers.
fn half_close(rt: &str) {
    let service = TcpListener::bind("127.0.0.1:0").expect("bind service");
    let service_addr = service.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // Connection 1: banner, FIN at once, then read the client's bytes to its FIN.
        let (mut s, _) = service.accept().expect("accept 1");
        s.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
        s.write_all(b"banner").expect("banner");
        s.shutdown(Shutdown::Write).expect("service FIN");
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got).map(|_| got);
        tx.send(r).expect("report");
        // Connection 2: read to the client's FIN, then answer and close.
        let (mut s, _) = service.accept().expect("accept 2");
        s.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to FIN");
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .expect("answer");
    });
    let server = tunnel_server(rt, service_addr, FAST);
    let client = tunnel_client(rt, server.addr, FAST);

    let mut c = TcpStream::connect(client.addr).expect("connect 1");
    c.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
    let mut banner = Vec::new();
    c.read_to_end(&mut banner)
        .expect("banner then end of stream");
    assert_eq!(banner, b"banner");
    // Still open for writing after the service's FIN.
    c.write_all(b"late bytes")
        .expect("write after the peer's FIN");
    c.shutdown(Shutdown::Write).expect("client FIN");
    let got = rx
        .recv_timeout(IO_LIMIT)
        .expect("service report")
        .expect("service read");
    assert_eq!(got, b"late bytes");

    let mut c = TcpStream::connect(client.addr).expect("connect 2");
    c.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
    c.write_all(&[7u8; 100_000]).expect("write");
    c.shutdown(Shutdown::Write).expect("client FIN");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("answer after our FIN");
    assert_eq!(answer, "got 100000 bytes");
}

const EXPIRE: &[&str] = &[
    "--heartbeat",
    "0.1",
    "--idle-timeout",
    "1",
    "--reconnect-time",
    "1",
];

/// The tunnel server dies for good: the client's session expires and the
/// local connection is reset (ECONNRESET), not closed with a clean EOF.
fn expiry_resets_local(rt: &str) {
    let echo = echo_service();
    let mut server = tunnel_server(rt, echo, EXPIRE);
    let client = tunnel_client(rt, server.addr, EXPIRE);
    let mut c = TcpStream::connect(client.addr).expect("connect");
    c.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
    c.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"hello");
    server.kill();
    let mut rest = [0u8; 16];
    let r = c.read(&mut rest);
    match r {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected ECONNRESET after the session expired, got {other:?}"),
    }
}

/// The tunnel client dies for good: the server's parked session expires and
/// its connection to the forward address is reset.
fn expiry_resets_forward(rt: &str) {
    let service = TcpListener::bind("127.0.0.1:0").expect("bind service");
    let service_addr: SocketAddr = service.local_addr().expect("addr");
    let server = tunnel_server(rt, service_addr, EXPIRE);
    let mut client = tunnel_client(rt, server.addr, EXPIRE);
    let mut c = TcpStream::connect(client.addr).expect("connect");
    c.write_all(b"x").expect("write");
    let (mut s, _) = service.accept().expect("accept");
    s.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
    let mut one = [0u8; 1];
    s.read_exact(&mut one).expect("first byte");
    client.kill();
    let r = s.read(&mut one);
    match r {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected ECONNRESET after the session expired, got {other:?}"),
    }
    drop(c);
}

/// SIGTERM to the tunnel client: its local connection is reset, and the
/// aborted session makes the server reset its forward connection at once
/// (long before the default 30 s reconnect time).
fn stop_resets_both_sides(rt: &str) {
    let service = TcpListener::bind("127.0.0.1:0").expect("bind service");
    let server = tunnel_server(rt, service.local_addr().expect("addr"), &[]);
    let mut client = tunnel_client(rt, server.addr, &[]);
    let mut c = TcpStream::connect(client.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"x").expect("write");
    let (mut s, _) = service.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut one = [0u8; 1];
    s.read_exact(&mut one).expect("first byte");
    let status = client.terminate();
    assert!(
        !status.success(),
        "a stopped tunnel end exits with a failure status"
    );
    for (side, r) in [("local", c.read(&mut one)), ("forward", s.read(&mut one))] {
        match r {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("{side} connection: expected ECONNRESET after SIGTERM, got {other:?}"),
        }
    }
}

macro_rules! per_runtime {
    ($($module:ident = $rt:literal, $seed:expr;)*) => {$(
        mod $module {
            #[test]
            fn proxy_kills() {
                super::proxy_kills($rt, $seed);
            }
            #[test]
            fn ss_kills() {
                super::ss_kills($rt, $seed, &[]);
            }
            /// The paper's release policy: pinned socket buffers, no acknowledgments.
            #[test]
            fn implicit_ss_kills() {
                super::ss_kills($rt, $seed + 50, &["--release", "implicit"]);
            }
            #[test]
            fn half_close() {
                super::half_close($rt);
            }
            #[test]
            fn expiry_resets_local() {
                super::expiry_resets_local($rt);
            }
            #[test]
            fn stop_resets_both_sides() {
                super::stop_resets_both_sides($rt);
            }
            #[test]
            fn expiry_resets_forward() {
                super::expiry_resets_forward($rt);
            }
        }
    )*};
}

per_runtime! {
    on_tokio = "tokio", 11;
    on_smol = "smol", 12;
    on_std = "std", 13;
}
