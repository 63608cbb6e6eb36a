//! Test support for the smol adapter, written against futures-io so the
//! async-std test uses it too: a bounded runner, a dialer whose transports
//! the test can reset or redirect, and both-ways transfers checked by sha256
//! of what each writer sent against what the other side read. The data
//! pattern, hashing and fault proxy come from ft-session-testkit.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ft_session_core::Config;
use ft_session_smol::{FtListener, FtStream, SmolRuntime};
use ft_session_testkit::{pattern_at, FaultPlan, FaultProxy, KillPoint, Sha256Tracker};
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::{future, Async, Timer};

/// Every test ends within this, whatever happens.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs a test body on the current thread (sessions run wherever their
/// runtime spawns them) and fails it if it takes longer than [`TEST_LIMIT`].
pub fn run_bounded<F: Future<Output = ()>>(body: F) {
    smol::block_on(future::or(body, async {
        Timer::after(TEST_LIMIT).await;
        panic!("test exceeded its time limit of {TEST_LIMIT:?}");
    }))
}

/// Short timers, so that faults are noticed and repaired within a second.
pub fn fast_config() -> Config {
    let ms = Duration::from_millis;
    let mut c = Config::default();
    (c.heartbeat_interval, c.idle_timeout) = (ms(100), ms(1000));
    (c.handshake_timeout, c.max_reconnect_time) = (ms(1000), Duration::from_secs(20));
    (c.backoff_initial, c.backoff_max) = (ms(10), ms(200));
    c
}

/// Polls `cond` every 10 ms for up to 20 s; panics naming `what` otherwise.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        Timer::after(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for: {what}");
}

/// A loopback address where nothing listens, so dials there are refused.
pub fn refusing_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Dials plain async-io TCP transports to a target the test may change, and
/// keeps a duplicate of each socket so that the test can reset it: shutting
/// the duplicate down wakes the session's pending read with end of stream,
/// and with `SO_LINGER` 0 the final close sends the peer an RST.
pub struct Dialer {
    target: Mutex<SocketAddr>,
    /// In dial order; `None` once reset.
    sockets: Mutex<Vec<Option<TcpStream>>>,
    dials: AtomicU64,
}

impl Dialer {
    pub fn new(target: SocketAddr) -> Arc<Dialer> {
        Arc::new(Dialer {
            target: Mutex::new(target),
            sockets: Mutex::default(),
            dials: AtomicU64::new(0),
        })
    }

    /// Later dials go to `target`.
    pub fn redirect(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Transports dialed so far (successful or not).
    pub fn dials(&self) -> u64 {
        self.dials.load(Ordering::SeqCst)
    }

    async fn dial(&self) -> io::Result<Async<TcpStream>> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let target = *self.target.lock().unwrap();
        let stream = Async::<TcpStream>::connect(target).await?;
        stream.get_ref().set_nodelay(true)?;
        let dup = stream.get_ref().try_clone()?;
        self.sockets.lock().unwrap().push(Some(dup));
        Ok(stream)
    }

    /// Connects a session over this dialer, on `rt`.
    pub async fn connect(
        self: &Arc<Self>,
        rt: SmolRuntime,
        config: Config,
    ) -> io::Result<FtStream> {
        let me = self.clone();
        FtStream::connect_with_on(rt, config, move || {
            let me = me.clone();
            async move { me.dial().await }
        })
        .await
    }

    /// Resets the not-yet-reset transports whose dial index `pick` selects;
    /// returns how many.
    pub fn reset_where(&self, pick: impl Fn(usize) -> bool) -> usize {
        let mut sockets = self.sockets.lock().unwrap();
        let chosen = sockets.iter_mut().enumerate().filter(|(i, _)| pick(*i));
        let mut reset = 0;
        for s in chosen.filter_map(|(_, s)| s.take()) {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            let _ = s.shutdown(Shutdown::Both);
            reset += 1;
        }
        reset
    }

    /// Resets every transport not reset yet.
    pub fn reset_all(&self) -> usize {
        self.reset_where(|_| true)
    }
}

/// Writes `len` bytes of pattern `seed`, stopping halfway until `gate`
/// yields (if given), then half-closes; returns the sha256 of what it wrote.
pub async fn send_pattern<W: AsyncWrite + Unpin>(
    mut w: W,
    seed: u64,
    len: u64,
    gate: Option<Receiver<()>>,
) -> io::Result<String> {
    let mut sent = Sha256Tracker::new();
    let mut chunk = vec![0u8; 32 * 1024];
    let mut gate = gate;
    let mut off = 0u64;
    while off < len {
        // The first half ends exactly at len / 2, so a test can see it arrive.
        let stop = if gate.is_some() { len / 2 } else { len };
        if off == stop {
            if let Some(g) = gate.take() {
                g.recv().await.unwrap();
            }
            continue;
        }
        let n = chunk.len().min((stop - off) as usize);
        pattern_at(seed, off, &mut chunk[..n]);
        w.write_all(&chunk[..n]).await?;
        sent.update(&chunk[..n]);
        off += n as u64;
    }
    w.close().await?;
    Ok(sent.finish())
}

/// Reads to end of stream; returns the byte count and sha256. `progress`
/// counts bytes as they arrive.
pub async fn recv_all<R: AsyncRead + Unpin>(
    mut r: R,
    progress: &AtomicU64,
) -> io::Result<(u64, String)> {
    let mut got = Sha256Tracker::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await? {
            0 => return Ok((got.bytes(), got.finish())),
            n => {
                got.update(&buf[..n]);
                progress.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
}

/// One side of a [`Transfer`] once done.
pub struct Side {
    pub stream: FtStream,
    pub sent_sha: String,
    pub got: u64,
    pub got_sha: String,
}

/// A running side of a transfer, as a spawned task of some executor.
pub type SideTask = Pin<Box<dyn Future<Output = io::Result<Side>> + Send>>;

/// Spawns a transfer side on smol's global executor.
pub fn on_smol(side: SideTask) -> SideTask {
    Box::pin(smol::spawn(side))
}

/// Sends and receives at once over one session, through `&FtStream` (one
/// task reads while the other writes).
async fn both_ways(
    stream: FtStream,
    seed: u64,
    len: u64,
    gate: Receiver<()>,
    got: Arc<AtomicU64>,
) -> io::Result<Side> {
    let (sent, received) = future::zip(
        send_pattern(&stream, seed, len, Some(gate)),
        recv_all(&stream, &got),
    )
    .await;
    let sent_sha = sent?;
    let (got, got_sha) = received?;
    Ok(Side {
        stream,
        sent_sha,
        got,
        got_sha,
    })
}

/// `len` bytes each way at once (client pattern 1, server pattern 2); both
/// writers wait halfway until [`Transfer::release`].
pub struct Transfer {
    gate: Sender<()>,
    pub client_got: Arc<AtomicU64>,
    pub server_got: Arc<AtomicU64>,
    len: u64,
    client: SideTask,
    server: SideTask,
}

impl Transfer {
    pub fn start(
        client: FtStream,
        server: FtStream,
        len: u64,
        spawn: fn(SideTask) -> SideTask,
    ) -> Self {
        let (gate, opened) = smol::channel::unbounded();
        let (client_got, server_got) = (Arc::default(), Arc::default());
        let c = both_ways(client, 1, len, opened.clone(), Arc::clone(&client_got));
        let s = both_ways(server, 2, len, opened, Arc::clone(&server_got));
        Transfer {
            gate,
            client_got,
            server_got,
            len,
            client: spawn(Box::pin(c)),
            server: spawn(Box::pin(s)),
        }
    }

    /// Both first halves have arrived.
    pub fn halfway(&self) -> bool {
        let half = self.len / 2;
        self.client_got.load(Ordering::SeqCst) == half
            && self.server_got.load(Ordering::SeqCst) == half
    }

    /// Lets both writers send their second half.
    pub fn release(&self) {
        for _ in 0..2 {
            self.gate.try_send(()).unwrap();
        }
    }

    /// Waits for both sides; checks that each received exactly `len` bytes
    /// whose sha256 equals that of what the other sent; closes both sessions
    /// gracefully; returns (client, server) for their stats.
    pub async fn finish(self) -> (FtStream, FtStream) {
        let (c, s) = future::zip(self.client, self.server).await;
        let (c, s) = (c.expect("client side"), s.expect("server side"));
        assert_eq!(c.got, self.len, "client received every byte");
        assert_eq!(s.got, self.len, "server received every byte");
        assert_eq!(c.got_sha, s.sent_sha, "server→client bytes exact");
        assert_eq!(s.got_sha, c.sent_sha, "client→server bytes exact");
        let (a, b) = future::zip(c.stream.close(), s.stream.close()).await;
        a.expect("client close");
        b.expect("server close");
        (c.stream, s.stream)
    }
}

/// Asserts that the first `kills` kill points of `plan` add up to less than
/// `len`: a stream of `len` bytes then reaches every one of them.
pub fn assert_plan_reaches(plan: &FaultPlan, kills: u64, len: u64) {
    let mut planned = 0;
    for i in 0..kills {
        let Some(KillPoint::AfterBytes { bytes, .. }) = plan.kill_point(i) else {
            panic!("connection {i} has no byte-count kill point");
        };
        planned += bytes;
    }
    assert!(planned < len, "{kills} kill points need {planned} bytes");
}

/// How a [`Rig`]'s client opens its transports.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The crate's own [`FtStream::connect`] over TCP.
    Connect,
    /// The test's [`Dialer`], which can reset and redirect them.
    Dialer,
}

/// A loopback listener behind a fault proxy, on smol's global executor.
pub struct Rig {
    pub listener: FtListener,
    pub proxy: FaultProxy,
    pub dialer: Arc<Dialer>,
}

impl Rig {
    /// Sets the rig up and opens one session through the proxy; returns the
    /// rig, the client's end and the server's end.
    pub async fn start(
        plan: FaultPlan,
        via: Via,
        client: Config,
        server: Config,
    ) -> (Rig, FtStream, FtStream) {
        let listener = FtListener::bind("127.0.0.1:0", server).await.unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let dialer = Dialer::new(proxy.local_addr());
        let opened = match via {
            Via::Connect => FtStream::connect(proxy.local_addr(), client).await,
            Via::Dialer => dialer.connect(SmolRuntime::global(), client).await,
        };
        let (accepted, peer) = listener.accept().await.unwrap();
        assert!(peer.is_some_and(|p| p.ip().is_loopback()));
        let rig = Rig {
            listener,
            proxy,
            dialer,
        };
        (rig, opened.unwrap(), accepted)
    }

    /// The listener's own address, bypassing the proxy.
    pub fn direct(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }
}

/// Sends `msg` from `from` to `to` and checks it arrives exactly.
pub async fn pass(from: &FtStream, to: &FtStream, msg: &[u8]) {
    let (mut writer, mut reader) = (from, to);
    writer.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    reader.read_exact(&mut got).await.unwrap();
    assert_eq!(got, msg);
}
