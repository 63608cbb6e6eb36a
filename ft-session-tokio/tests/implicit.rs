//! The paper's no-acknowledgment mode (`ReleasePolicy::Implicit`) on real
//! loopback sockets through the Tokio adapter: its own pinned buffers, kills
//! while the kernel buffers are full (slow readers), exact bytes both ways;
//! an undersized bound ends in `DataLost` on both sides with a correct
//! prefix; a transport without sizes is refused with a configuration error.
//!
//! Kills are driven by progress, not time: both readers stop at a gate, the
//! senders fill every buffer behind them, the killer kills, waits for the
//! resume and moves the gate one step on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ft_session_async::{Accept, Accepted, ConnectFuture, Connected, FtStream, StreamStats};
use ft_session_core::{Config, ReleasePolicy, SessionError, SessionState, TransportInfo};
use ft_session_testkit::{
    pattern, sha256_hex, ss_kill, ss_kill_probe, FaultPlan, FaultProxy, ProxyOptions, Sha256Tracker,
};
use ft_session_tokio::{Compat, FtListener, SocketOptions, TokioRuntime};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1024 * 1024;
/// Each reader takes at most this much per read, then pauses, so it is
/// slower than the sender and the kernel buffers are full at every kill.
const SLOW_READ: usize = 32 * 1024;
const SLOW_PAUSE: Duration = Duration::from_millis(1);
const LIMIT: Duration = Duration::from_secs(120);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test exceeded its time limit");
}

fn implicit_config() -> Config {
    let mut c = Config::default();
    c.release_policy = ReleasePolicy::Implicit;
    c.heartbeat_interval = Duration::from_millis(50);
    // A slow reader with a full receive queue reads nothing from its
    // transport for a while; keep dead-link detection well above that.
    c.idle_timeout = Duration::from_secs(3);
    c.handshake_timeout = Duration::from_millis(1000);
    c.max_reconnect_time = Duration::from_secs(10);
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(100);
    c
}

/// What one side of a slow duplex transfer saw.
struct SideResult {
    sent: io::Result<()>,
    received: io::Result<()>,
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
) -> tokio::task::JoinHandle<SideResult> {
    tokio::spawn(async move {
        let w = stream.clone();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(256 * 1024) {
                let mut off = 0;
                while off < chunk.len() {
                    off += poll_fn(|cx| w.poll_write(cx, &chunk[off..])).await?;
                }
            }
            poll_fn(|cx| w.poll_shutdown(cx)).await
        });
        let mut tracker = Sha256Tracker::new();
        let mut buf = vec![0u8; SLOW_READ];
        let received = loop {
            while progress.load(Ordering::SeqCst) >= gate.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            match poll_fn(|cx| stream.poll_read(cx, &mut buf)).await {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    tracker.update(&buf[..n]);
                    progress.fetch_add(n as u64, Ordering::SeqCst);
                    tokio::time::sleep(SLOW_PAUSE).await;
                }
                Err(e) => break Err(e),
            }
        };
        let sent = writer.await.expect("writer task");
        SideResult {
            sent,
            received,
            received_bytes: tracker.bytes(),
            received_sha: tracker.finish(),
        }
    })
}

/// How the killer breaks the current transport.
#[derive(Clone)]
enum Killer {
    /// `ss -K` on the server's port.
    Ss(u16),
    /// The proxy resets both of its sockets.
    Proxy(Arc<FaultProxy>),
}

impl Killer {
    /// True if something was killed.
    async fn kill(&self) -> bool {
        let k = self.clone();
        tokio::task::spawn_blocking(move || match k {
            Killer::Ss(port) => ss_kill(port).map(|o| o.killed() > 0).unwrap_or(false),
            Killer::Proxy(p) => p.kill_all() > 0,
        })
        .await
        .unwrap()
    }
}

/// Kills `kills_wanted` times: each time both readers wait at `gate`, lets
/// the senders fill the buffers, kills, waits for the client's resume (or
/// the session's end) and moves the gate `step` on; then opens it.
fn kill_loop(
    killer: Killer,
    client: Arc<FtStream>,
    progress: [Arc<AtomicU64>; 2],
    gate: Arc<AtomicU64>,
    step: u64,
    kills_wanted: u64,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    gate.store(step, Ordering::SeqCst);
    tokio::spawn(async move {
        let mut kills = 0;
        while !done.load(Ordering::SeqCst) && kills < kills_wanted {
            if client.stats().state == SessionState::Finished {
                // Nothing left to kill (e.g. DataLost): let the readers drain.
                break;
            }
            let least = progress[0]
                .load(Ordering::SeqCst)
                .min(progress[1].load(Ordering::SeqCst));
            if least < gate.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            // Both readers stopped: the senders fill every buffer meanwhile.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = client.stats().reconnects;
            if !killer.kill().await {
                // Between transports: try again shortly.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            kills += 1;
            let resumed = tokio::time::timeout(Duration::from_secs(20), async {
                while client.stats().reconnects == before
                    && client.stats().state != SessionState::Finished
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await;
            assert!(resumed.is_ok(), "no resume after a kill");
            gate.fetch_add(step, Ordering::SeqCst);
        }
        gate.store(u64::MAX, Ordering::SeqCst);
        kills
    })
}

/// Both directions of a slow transfer of `len` bytes under up to
/// `kills_wanted` kills; returns (client's result, server's result, kills).
async fn transfer(
    killer: Killer,
    client: &Arc<FtStream>,
    server: &Arc<FtStream>,
    data: [&Arc<Vec<u8>>; 2],
    step: u64,
    kills_wanted: u64,
) -> (SideResult, SideResult, u64) {
    let progress = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let gate = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let killing = kill_loop(
        killer,
        client.clone(),
        progress.clone(),
        gate.clone(),
        step,
        kills_wanted,
        done.clone(),
    );
    let c = slow_duplex(
        client.clone(),
        data[0].clone(),
        progress[0].clone(),
        gate.clone(),
    );
    let s = slow_duplex(
        server.clone(),
        data[1].clone(),
        progress[1].clone(),
        gate.clone(),
    );
    let (c, s) = (c.await.unwrap(), s.await.unwrap());
    done.store(true, Ordering::SeqCst);
    let kills = tokio::time::timeout(Duration::from_secs(30), killing)
        .await
        .expect("killer stuck")
        .unwrap();
    (c, s, kills)
}

/// How the two sessions are connected.
enum Path {
    /// Directly, killed with `ss -K`.
    Direct,
    /// Through a proxy with pinned small buffers whose capacity both sides
    /// declare as a middlebox's in-flight bytes.
    Proxy,
}

fn print_row(label: &str, kills: u64, len: usize, c: &StreamStats, s: &StreamStats) {
    println!(
        "IMPLICIT-ROW | tokio | {label} | kills {kills} | {} MiB each way | client max_retained {} retain_capacity {} resumes {} retransmitted {} | server max_retained {} retain_capacity {} resumes {} retransmitted {}",
        len / MIB,
        c.core.max_retained,
        c.retain_capacity,
        c.reconnects,
        c.retransmitted_bytes,
        s.core.max_retained,
        s.retain_capacity,
        s.reconnects,
        s.retransmitted_bytes,
    );
}

/// A transfer of `len` bytes each way under at least `min_kills` kills with
/// the adapter's own sizing. Asserts exact bytes both ways and no error.
async fn run(label: &str, path: Path, len: usize, min_kills: u64) {
    let cfg = implicit_config();
    let proxy_opts = ProxyOptions::default()
        .socket_buffer(64 * 1024)
        .copy_buffer(16 * 1024);
    let listener = match path {
        // The adapter's own sizing through the plain entry points.
        Path::Direct => FtListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap(),
        Path::Proxy => {
            let extra = proxy_opts.max_in_flight().unwrap().expect("pinned proxy");
            let opts = SocketOptions::new().middlebox_in_flight(extra);
            FtListener::bind_opts("127.0.0.1:0", cfg.clone(), opts)
                .await
                .unwrap()
        }
    };
    let server_addr = listener.local_addr().unwrap();
    let mut proxy = None;
    let (killer, connect_addr) = match path {
        Path::Direct => (Killer::Ss(server_addr.port()), server_addr),
        Path::Proxy => {
            let p = Arc::new(
                FaultProxy::start_with(server_addr, FaultPlan::new(), proxy_opts).unwrap(),
            );
            let a = p.local_addr();
            proxy = Some(p.clone());
            (Killer::Proxy(p), a)
        }
    };
    let client = match &proxy {
        None => ft_session_tokio::FtStream::connect(connect_addr, cfg).await,
        Some(p) => {
            let extra = p.max_in_flight().expect("pinned proxy");
            let opts = SocketOptions::new().middlebox_in_flight(extra);
            ft_session_tokio::FtStream::connect_opts(connect_addr, cfg, opts).await
        }
    };
    let client = Arc::new(client.unwrap().into_inner());
    let (server, _) = listener.accept().await.unwrap();
    let server = Arc::new(server.into_inner());

    let c_data = Arc::new(pattern(1, len));
    let s_data = Arc::new(pattern(2, len));
    // Every gate lies well before the end: once the rest fits in the
    // receiver's queue (4 MiB) the session can finish with nothing to kill.
    let step = (len as u64 - 8 * MIB as u64) / (min_kills + 1);
    let (c, s, kills) = transfer(
        killer,
        &client,
        &server,
        [&c_data, &s_data],
        step,
        min_kills,
    )
    .await;

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
    assert_eq!(s.received_bytes, len as u64, "{label}: c->s length");
    assert_eq!(c.received_bytes, len as u64, "{label}: s->c length");
    assert_eq!(s.received_sha, sha256_hex(&c_data), "{label}: c->s sha256");
    assert_eq!(c.received_sha, sha256_hex(&s_data), "{label}: s->c sha256");
    assert!(kills >= min_kills, "{label}: only {kills} kills");
    let (cs, ss) = (client.stats(), server.stats());
    for st in [&cs, &ss] {
        assert!(
            st.core.max_retained <= st.retain_capacity,
            "{label}: {st:?}"
        );
        assert!(st.reconnects >= 1, "{label}: no resume recorded");
        assert!(st.retain_capacity > 0, "{label}: {st:?}");
    }
    let (a, b) = tokio::join!(client.close(), server.close());
    a.unwrap();
    b.unwrap();
    print_row(label, kills, len, &cs, &ss);
    if let Some(p) = proxy {
        tokio::task::spawn_blocking(move || drop(p)).await.unwrap();
    }
}

/// True if `ss -K` works here; otherwise says why the `ss` part is skipped.
async fn ss_available() -> bool {
    let probe = tokio::task::spawn_blocking(ss_kill_probe).await.unwrap();
    match probe.skip_reason() {
        None => true,
        Some(reason) => {
            println!("SKIPPED the ss -K part: {reason}");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adapter_sizing_survives_proxy_kills() {
    bounded(run("default sizing, proxy", Path::Proxy, 16 * MIB, 20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adapter_sizing_survives_ss_kills() {
    bounded(async {
        if ss_available().await {
            run("default sizing, ss -K", Path::Direct, 16 * MIB, 20).await;
        }
    })
    .await;
}

/// Declared sizes of `bytes` each: a deliberate lie for autotuned sockets
/// holding megabytes.
fn declared(bytes: u64) -> TransportInfo {
    TransportInfo {
        send_buffer: Some(bytes),
        recv_buffer: Some(bytes),
    }
}

/// A TCP listener whose transports declare 1 KiB buffers.
struct LyingAccept(TcpListener);

impl Accept for LyingAccept {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>> {
        self.0.poll_accept(cx).map(|r| {
            Some(r.map(|(s, peer)| Accepted {
                info: declared(1024),
                peer: Some(peer),
                ..Accepted::new(Box::new(Compat(s)))
            }))
        })
    }
}

/// An undersized bound (no margin, 1 KiB declared for buffers holding
/// megabytes): the first kill with full buffers loses bytes already
/// released, and both sides end with `DataLost` at the resume; everything
/// delivered before is an exact prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undersized_bound_ends_in_data_lost_with_correct_prefix() {
    bounded(async {
        let mut cfg = implicit_config();
        cfg.implicit_margin = Some(0);
        let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = raw.local_addr().unwrap();
        let listener =
            ft_session_async::Listener::new(TokioRuntime, cfg.clone(), LyingAccept(raw)).unwrap();
        let proxy = Arc::new(FaultProxy::start(server_addr, FaultPlan::new()).unwrap());
        let paddr: SocketAddr = proxy.local_addr();
        let connector = move || -> ConnectFuture {
            Box::pin(async move {
                let s = TcpStream::connect(paddr).await?;
                Ok(Connected {
                    info: declared(1024),
                    ..Connected::new(Box::new(Compat(s)))
                })
            })
        };
        let client = ft_session_async::connect(TokioRuntime, cfg, connector)
            .await
            .unwrap();
        let client = Arc::new(client);
        let (server, _) = listener.accept().await.unwrap();
        let server = Arc::new(server);

        let len = 32 * MIB;
        let c_data = Arc::new(pattern(3, len));
        let s_data = Arc::new(pattern(4, len));
        // Up to 3 kills; the first, with full buffers, must end the session.
        let (c, s, kills) = transfer(
            Killer::Proxy(proxy.clone()),
            &client,
            &server,
            [&c_data, &s_data],
            2 * MIB as u64,
            3,
        )
        .await;
        for (side, r, sent_to_it) in [("client", &c, &s_data), ("server", &s, &c_data)] {
            let e = r
                .received
                .as_ref()
                .expect_err("an undersized bound must lose the stream");
            assert!(
                matches!(SessionError::from_io(e), Some(SessionError::DataLost { .. })),
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
            println!("IMPLICIT-UNDERSIZED | tokio | {side} received a correct prefix of {got} bytes");
        }
        assert_eq!(kills, 1, "DataLost must end the session at the first resume");
        let (cs, ss) = (client.stats(), server.stats());
        println!(
            "IMPLICIT-ROW | tokio | undersized (1 KiB declared, margin 0), proxy | kills {kills} | DataLost | client max_retained {} retain_capacity {} | server max_retained {} retain_capacity {}",
            cs.core.max_retained, cs.retain_capacity, ss.core.max_retained, ss.retain_capacity
        );
        drop(listener);
        tokio::task::spawn_blocking(move || drop(proxy)).await.unwrap();
    })
    .await;
}

/// A user's transport with no sizes: the implicit policy is refused with a
/// configuration error (`InvalidInput`), never run on a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_without_sizes_is_refused() {
    bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", implicit_config())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let err = ft_session_tokio::FtStream::connect_with(implicit_config(), move || {
            TcpStream::connect(addr)
        })
        .await
        .expect_err("no sizes: must be refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(
            matches!(SessionError::from_io(&err), Some(SessionError::Config(_))),
            "{err}"
        );
    })
    .await;
}
