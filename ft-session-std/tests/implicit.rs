//! The paper's no-acknowledgment mode (`ReleasePolicy::Implicit`) on real
//! loopback sockets: pinned buffers, kills while the kernel buffers are full
//! (slow readers), exact bytes both ways; an undersized bound ends in
//! `DataLost` on both sides with a correct prefix delivered.
//!
//! Kills are driven by progress, not time: both readers stop at a gate, the
//! senders fill every buffer behind them, the killer kills, waits for the
//! resume and moves the gate one step on. Every run gets its number of kills
//! with full buffers, whatever the machine's speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{bounded, config};
use ft_session_std::{
    Config, FtListener, FtStats, FtStream, ReleasePolicy, SessionError, SessionState,
    SocketOptions, Transport, TransportInfo,
};
use ft_session_testkit::{
    pattern, sha256_hex, ss_kill, ss_kill_probe, FaultPlan, FaultProxy, ProxyOptions, Sha256Tracker,
};

/// Each reader takes at most this much per read, then pauses, so it is
/// slower than the sender and the kernel buffers are full at every kill.
const SLOW_READ: usize = 32 * 1024;
const SLOW_PAUSE: Duration = Duration::from_micros(300);

fn implicit_config() -> Config {
    let mut c = config();
    c.release_policy = ReleasePolicy::Implicit;
    // A slow reader with a full receive queue reads nothing from its
    // transport for a while; keep dead-link detection well above that.
    c.idle_timeout = Duration::from_secs(3);
    c
}

/// What one side of a slow duplex transfer saw.
struct SideResult {
    sent: Result<(), io::Error>,
    received: Result<(), io::Error>,
    received_bytes: u64,
    received_sha: String,
}

/// Writes `data` then half-closes, while reading slowly to end of stream;
/// `progress` counts bytes read; no read starts at or beyond `gate`.
fn slow_duplex(
    stream: Arc<FtStream>,
    data: Arc<Vec<u8>>,
    progress: Arc<AtomicU64>,
    gate: Arc<AtomicU64>,
) -> thread::JoinHandle<SideResult> {
    thread::spawn(move || {
        stream.set_read_timeout(Some(Duration::from_secs(60)));
        let w = stream.clone();
        let writer = thread::spawn(move || -> io::Result<()> {
            for chunk in data.chunks(256 * 1024) {
                (&*w).write_all(chunk)?;
            }
            w.shutdown(Shutdown::Write)
        });
        let mut tracker = Sha256Tracker::new();
        let mut buf = vec![0u8; SLOW_READ];
        let received = loop {
            while progress.load(Ordering::SeqCst) >= gate.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            match (&*stream).read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    tracker.update(&buf[..n]);
                    progress.fetch_add(n as u64, Ordering::SeqCst);
                    thread::sleep(SLOW_PAUSE);
                }
                Err(e) => break Err(e),
            }
        };
        let sent = writer.join().expect("writer thread");
        SideResult {
            sent,
            received,
            received_bytes: tracker.bytes(),
            received_sha: tracker.finish(),
        }
    })
}

/// How the killer breaks the current transport.
enum Killer {
    /// `ss -K` on the server's port (both endpoints' sockets destroyed).
    Ss(u16),
    /// The proxy resets both of its sockets.
    Proxy(Arc<FaultProxy>),
}

impl Killer {
    /// True if something was killed.
    fn kill(&self) -> bool {
        match self {
            Killer::Ss(port) => ss_kill(*port).map(|o| o.killed() > 0).unwrap_or(false),
            Killer::Proxy(p) => p.kill_all() > 0,
        }
    }
}

/// Kills `kills_wanted` times: each time both readers wait at `gate`, lets
/// the senders fill the buffers, kills, waits for the client's resume (or
/// the session's end) and moves the gate `step` on; then opens it. Stops
/// early when `done` is set. Returns the kills made.
fn kill_loop(
    killer: Killer,
    client: Arc<FtStream>,
    progress: [Arc<AtomicU64>; 2],
    gate: Arc<AtomicU64>,
    step: u64,
    kills_wanted: u64,
    done: Arc<AtomicBool>,
) -> thread::JoinHandle<u64> {
    gate.store(step, Ordering::SeqCst);
    thread::spawn(move || {
        let mut kills = 0;
        while !done.load(Ordering::SeqCst) && kills < kills_wanted {
            let least = progress[0]
                .load(Ordering::SeqCst)
                .min(progress[1].load(Ordering::SeqCst));
            if client.stats().state == SessionState::Finished {
                // Nothing left to kill (e.g. DataLost): let the readers drain.
                break;
            }
            if least < gate.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            // Both readers stopped: the senders fill every buffer meanwhile.
            thread::sleep(Duration::from_millis(20));
            let before = client.stats().reconnects;
            if !killer.kill() {
                // Between transports: try again shortly.
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            kills += 1;
            let deadline = Instant::now() + Duration::from_secs(20);
            while client.stats().reconnects == before
                && client.stats().state != SessionState::Finished
            {
                assert!(Instant::now() < deadline, "no resume after a kill");
                thread::sleep(Duration::from_millis(2));
            }
            gate.fetch_add(step, Ordering::SeqCst);
        }
        gate.store(u64::MAX, Ordering::SeqCst);
        kills
    })
}

/// One row of the report: a sizing, its kills, what both sides retained.
#[derive(Debug)]
struct Row {
    label: String,
    kills: u64,
    bytes_each_way: usize,
    client: FtStats,
    server: FtStats,
}

impl Row {
    fn print(&self) {
        println!(
            "IMPLICIT-ROW | {} | kills {} | {} MiB each way | client max_retained {} retain_capacity {} resumes {} retransmitted {} | server max_retained {} retain_capacity {} resumes {} retransmitted {}",
            self.label,
            self.kills,
            self.bytes_each_way >> 20,
            self.client.core.max_retained,
            self.client.retain_capacity,
            self.client.reconnects,
            self.client.retransmitted_bytes,
            self.server.core.max_retained,
            self.server.retain_capacity,
            self.server.reconnects,
            self.server.retransmitted_bytes,
        );
    }
}

/// How the two sessions are connected.
enum Path {
    /// Directly, killed with `ss -K`.
    Direct,
    /// Through a proxy with pinned small buffers whose capacity both sides
    /// declare as a middlebox's in-flight bytes.
    Proxy,
}

/// A transfer of `len` bytes each way under at least `min_kills` kills, with
/// the adapter's own sizing (`buffer: None`) or a pinned size. Asserts exact
/// bytes both ways and no error; returns the report row.
fn run(label: &str, path: Path, buffer: Option<usize>, len: usize, min_kills: u64) -> Row {
    let cfg = implicit_config();
    let mut opts = SocketOptions::new();
    if let Some(b) = buffer {
        opts = opts.buffer_size(b);
    }
    let proxy_opts = ProxyOptions::default()
        .socket_buffer(64 * 1024)
        .copy_buffer(16 * 1024);
    if matches!(path, Path::Proxy) {
        let extra = proxy_opts.max_in_flight().unwrap().expect("pinned proxy");
        opts = opts.middlebox_in_flight(extra);
    }
    let (listener, server_opts_used) = if buffer.is_none() && matches!(path, Path::Direct) {
        // The adapter's own sizing through the plain entry points.
        (FtListener::bind("127.0.0.1:0", cfg.clone()).unwrap(), false)
    } else {
        (
            FtListener::bind_opts("127.0.0.1:0", cfg.clone(), opts).unwrap(),
            true,
        )
    };
    let server_addr = listener.local_addr().unwrap();
    // The proxy lives as long as the transfer, not as long as the killer.
    let mut _proxy = None;
    let (killer, connect_addr) = match path {
        Path::Direct => (Killer::Ss(server_addr.port()), server_addr),
        Path::Proxy => {
            let p = Arc::new(
                FaultProxy::start_with(server_addr, FaultPlan::new(), proxy_opts).unwrap(),
            );
            let a = p.local_addr();
            _proxy = Some(p.clone());
            (Killer::Proxy(p), a)
        }
    };
    let accept = thread::spawn(move || {
        let s = listener
            .accept_timeout(Duration::from_secs(10))
            .map(|(s, _)| s);
        (s, listener)
    });
    let client = Arc::new(if server_opts_used {
        FtStream::connect_opts(connect_addr, cfg, opts).unwrap()
    } else {
        FtStream::connect(connect_addr, cfg).unwrap()
    });
    let (server, _listener) = accept.join().unwrap();
    let server = Arc::new(server.unwrap());

    let c_data = Arc::new(pattern(1, len));
    let s_data = Arc::new(pattern(2, len));
    let progress = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let done = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(AtomicU64::new(0));
    // Every gate lies well before the end of the stream: once the rest fits
    // in the receiver's queue (recv_buffer_capacity, 4 MiB) the session can
    // finish while the reader still has bytes to take, and nothing is left
    // to kill.
    let step = (len as u64 - 8 * MIB as u64) / (min_kills + 1);
    let killing = kill_loop(
        killer,
        client.clone(),
        progress.clone(),
        gate.clone(),
        step,
        min_kills,
        done.clone(),
    );
    let c = slow_duplex(
        client.clone(),
        c_data.clone(),
        progress[0].clone(),
        gate.clone(),
    );
    let s = slow_duplex(
        server.clone(),
        s_data.clone(),
        progress[1].clone(),
        gate.clone(),
    );
    let (c, s) = (c.join().unwrap(), s.join().unwrap());
    done.store(true, Ordering::SeqCst);
    let kills = killing.join().unwrap();

    for (side, r) in [("client", &c), ("server", &s)] {
        if let Err(e) = &r.sent {
            panic!(
                "{label}: {side} write failed: {e} ({:?})",
                SessionError::from_io(e)
            );
        }
        if let Err(e) = &r.received {
            panic!(
                "{label}: {side} read failed: {e} ({:?})",
                SessionError::from_io(e)
            );
        }
    }
    assert_eq!(
        s.received_bytes, len as u64,
        "{label}: client->server length"
    );
    assert_eq!(
        c.received_bytes, len as u64,
        "{label}: server->client length"
    );
    assert_eq!(s.received_sha, sha256_hex(&c_data), "{label}: c->s sha256");
    assert_eq!(c.received_sha, sha256_hex(&s_data), "{label}: s->c sha256");
    assert!(
        kills >= min_kills,
        "{label}: only {kills} kills (wanted {min_kills})"
    );
    let row = Row {
        label: label.to_string(),
        kills,
        bytes_each_way: len,
        client: client.stats(),
        server: server.stats(),
    };
    for st in [&row.client, &row.server] {
        assert!(
            st.core.max_retained <= st.retain_capacity,
            "{label}: {st:?}"
        );
        assert!(st.reconnects >= 1, "{label}: no resume recorded");
    }
    client.close().unwrap();
    server.close().unwrap();
    row.print();
    row
}

/// True if `ss -K` works here; otherwise says why the `ss` part is skipped.
fn ss_available() -> bool {
    match ss_kill_probe().skip_reason() {
        None => true,
        Some(reason) => {
            println!("SKIPPED the ss -K part: {reason}");
            false
        }
    }
}

const MIB: usize = 1024 * 1024;

#[test]
fn adapter_sizing_survives_ss_kills_64mib() {
    bounded(240, || {
        if ss_available() {
            run(
                "default (256 KiB requested), ss -K",
                Path::Direct,
                None,
                64 * MIB,
                20,
            );
        }
    });
}

#[test]
fn adapter_sizing_survives_proxy_kills_64mib() {
    bounded(240, || {
        run(
            "default (256 KiB requested), proxy",
            Path::Proxy,
            None,
            64 * MIB,
            20,
        );
    });
}

#[test]
fn pinned_64k_survives_kills() {
    bounded(240, || {
        if ss_available() {
            run("64 KiB, ss -K", Path::Direct, Some(64 * 1024), 16 * MIB, 20);
        }
        run("64 KiB, proxy", Path::Proxy, Some(64 * 1024), 16 * MIB, 20);
    });
}

#[test]
fn pinned_4m_survives_kills() {
    bounded(300, || {
        if ss_available() {
            run("4 MiB, ss -K", Path::Direct, Some(4 * MIB), 32 * MIB, 20);
        }
        run("4 MiB, proxy", Path::Proxy, Some(4 * MIB), 32 * MIB, 20);
    });
}

/// A transport split with declared buffer sizes of `declared` bytes each
/// (a deliberate lie: the sockets are autotuned and far larger).
fn declared(stream: TcpStream, declared: u64) -> io::Result<ft_session_std::TransportHalves> {
    let mut h = stream.split()?;
    h.info = TransportInfo {
        send_buffer: Some(declared),
        recv_buffer: Some(declared),
    };
    Ok(h)
}

/// An undersized bound (no margin, 1 KiB declared for buffers holding
/// megabytes): the first kill with full buffers loses bytes already
/// released, and both sides end with `DataLost` at the resume; everything
/// delivered before is an exact prefix.
#[test]
fn undersized_bound_ends_in_data_lost_with_correct_prefix() {
    bounded(120, || {
        let mut cfg = implicit_config();
        cfg.implicit_margin = Some(0);
        let raw = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = raw.local_addr().unwrap();
        let listener = FtListener::from_incoming(
            cfg.clone(),
            std::iter::from_fn(move || Some(raw.accept().and_then(|(s, _)| declared(s, 1024)))),
        )
        .unwrap();
        let proxy = Arc::new(FaultProxy::start(server_addr, FaultPlan::new()).unwrap());
        let paddr = proxy.local_addr();
        let accept = thread::spawn(move || {
            let s = listener
                .accept_timeout(Duration::from_secs(10))
                .map(|(s, _)| s);
            (s, listener)
        });
        let client = Arc::new(
            FtStream::connect_with(cfg, move || {
                TcpStream::connect(paddr).and_then(|s| declared(s, 1024))
            })
            .unwrap(),
        );
        let (server, _listener) = accept.join().unwrap();
        let server = Arc::new(server.unwrap());

        let len = 32 * MIB;
        let c_data = Arc::new(pattern(3, len));
        let s_data = Arc::new(pattern(4, len));
        let progress = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let done = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(AtomicU64::new(0));
        // Up to 3 kills; the first, with full buffers, must end the session.
        let killing = kill_loop(
            Killer::Proxy(proxy.clone()),
            client.clone(),
            progress.clone(),
            gate.clone(),
            2 * MIB as u64,
            3,
            done.clone(),
        );
        let c = slow_duplex(
            client.clone(),
            c_data.clone(),
            progress[0].clone(),
            gate.clone(),
        );
        let s = slow_duplex(
            server.clone(),
            s_data.clone(),
            progress[1].clone(),
            gate.clone(),
        );
        let (c, s) = (c.join().unwrap(), s.join().unwrap());
        done.store(true, Ordering::SeqCst);
        let kills = killing.join().unwrap();

        for (side, r, sent_to_it) in [("client", &c, &s_data), ("server", &s, &c_data)] {
            let e = r
                .received
                .as_ref()
                .expect_err("an undersized bound must lose the stream");
            assert!(
                matches!(
                    SessionError::from_io(e),
                    Some(SessionError::DataLost { .. })
                ),
                "{side}: expected DataLost, got {e} ({:?})",
                SessionError::from_io(e)
            );
            let got = usize::try_from(r.received_bytes).unwrap();
            assert!(got < len, "{side}: received everything despite DataLost");
            assert_eq!(
                r.received_sha,
                sha256_hex(&sent_to_it[..got]),
                "{side}: delivered bytes are not a prefix"
            );
            println!("IMPLICIT-UNDERSIZED | {side} received a correct prefix of {got} bytes");
        }
        // Lost at the first resume after the first kill with full buffers.
        assert_eq!(
            kills, 1,
            "DataLost must end the session at the first resume"
        );
        let (cs, ss) = (client.stats(), server.stats());
        println!(
            "IMPLICIT-ROW | undersized (1 KiB declared, margin 0), proxy | kills {kills} | DataLost | client max_retained {} retain_capacity {} | server max_retained {} retain_capacity {}",
            cs.core.max_retained, cs.retain_capacity, ss.core.max_retained, ss.retain_capacity
        );
    });
}

/// A transport the adapter cannot inspect, with no sizes given: the implicit
/// policy is refused with a configuration error, never run on a guess.
#[test]
fn implicit_without_sizes_is_refused() {
    bounded(30, || {
        let listener = FtListener::bind("127.0.0.1:0", implicit_config()).unwrap();
        let addr = listener.local_addr().unwrap();
        let err = FtStream::connect_with(implicit_config(), move || TcpStream::connect(addr))
            .expect_err("no sizes: must be refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(
            matches!(SessionError::from_io(&err), Some(SessionError::Config(_))),
            "{err}"
        );
    });
}
