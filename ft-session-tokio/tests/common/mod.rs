//! Shared test support: a connector whose transports the test can kill (RST)
//! or redirect, bounded transfers with exact-byte checks, and test configs.
#![allow(dead_code, clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ft_session_core::Config;
use ft_session_testkit::{pattern_at, Sha256Tracker};
use ft_session_tokio::FtStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Every test ends within this, whatever happens.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs a test body within [`TEST_LIMIT`], so a bug fails instead of hanging.
pub async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test exceeded its time limit");
}

/// Drops a proxy (it joins its threads) off the runtime's worker threads.
pub async fn drop_proxy(p: ft_session_testkit::FaultProxy) {
    tokio::task::spawn_blocking(move || drop(p)).await.unwrap();
}

/// Short timers so faults are detected and repaired quickly.
pub fn fast_config() -> Config {
    let mut c = Config::default();
    c.heartbeat_interval = Duration::from_millis(100);
    c.idle_timeout = Duration::from_millis(1000);
    c.handshake_timeout = Duration::from_millis(1000);
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(200);
    c.max_reconnect_time = Duration::from_secs(20);
    c
}

/// Waits (bounded) until `cond` holds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for: {what}");
}

#[derive(Default)]
struct Switch {
    killed: AtomicBool,
    /// The transport was dropped (its session moved on or ended).
    gone: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Switch {
    fn kill(&self) -> bool {
        let first = !self.killed.swap(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
        first
    }
}

/// A TCP transport the test can kill: the next poll resets the socket
/// (SO_LINGER 0, so the peer gets an RST) and fails.
pub struct Killable {
    inner: Option<TcpStream>,
    switch: Arc<Switch>,
}

impl Killable {
    fn check(&mut self, cx: &Context<'_>) -> io::Result<&mut TcpStream> {
        if self.switch.killed.load(Ordering::SeqCst) {
            if let Some(s) = self.inner.take() {
                let _ = s.set_zero_linger();
            }
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "killed by test",
            ));
        }
        *self.switch.waker.lock().unwrap() = Some(cx.waker().clone());
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionReset, "killed by test"))
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.switch.gone.store(true, Ordering::SeqCst);
    }
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.check(cx) {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.check(cx) {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.check(cx) {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.check(cx) {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.check(cx) {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Dials a target the test can change, and keeps a kill switch for every
/// transport it made.
#[derive(Clone)]
pub struct Net {
    target: Arc<Mutex<SocketAddr>>,
    switches: Arc<Mutex<Vec<Arc<Switch>>>>,
    pub dials: Arc<AtomicU64>,
}

impl Net {
    pub fn new(target: SocketAddr) -> Net {
        Net {
            target: Arc::new(Mutex::new(target)),
            switches: Arc::default(),
            dials: Arc::default(),
        }
    }

    /// Later connections go to `target`.
    pub fn redirect(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Connects a session whose transports go through this network.
    pub async fn connect(&self, config: Config) -> io::Result<FtStream> {
        let net = self.clone();
        FtStream::connect_with(config, move || {
            let net = net.clone();
            async move {
                net.dials.fetch_add(1, Ordering::SeqCst);
                let target = *net.target.lock().unwrap();
                let s = TcpStream::connect(target).await?;
                s.set_nodelay(true)?;
                let switch = Arc::new(Switch::default());
                net.switches.lock().unwrap().push(switch.clone());
                Ok(Killable {
                    inner: Some(s),
                    switch,
                })
            }
        })
        .await
    }

    /// Kills every live transport; returns how many were newly killed.
    pub fn kill_all(&self) -> usize {
        let all: Vec<_> = self.switches.lock().unwrap().drain(..).collect();
        all.iter().filter(|s| s.kill()).count()
    }

    /// Transports not yet killed nor dropped.
    pub fn live(&self) -> usize {
        let mut sw = self.switches.lock().unwrap();
        sw.retain(|s| !s.gone.load(Ordering::SeqCst) && !s.killed.load(Ordering::SeqCst));
        sw.len()
    }

    /// Kills the live transports (in dial order) whose index `pick` selects.
    pub fn kill_where(&self, mut pick: impl FnMut(usize) -> bool) -> usize {
        let mut sw = self.switches.lock().unwrap();
        sw.retain(|s| !s.gone.load(Ordering::SeqCst) && !s.killed.load(Ordering::SeqCst));
        let mut killed = 0;
        let mut keep = Vec::new();
        for (i, s) in sw.drain(..).enumerate() {
            if pick(i) {
                if s.kill() {
                    killed += 1;
                }
            } else {
                keep.push(s);
            }
        }
        *sw = keep;
        killed
    }
}

/// Writes `len` bytes of pattern `seed`; pauses at `len / 2` until `gate` is
/// notified (if given), then half-closes.
pub async fn write_pattern<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    len: u64,
    gate: Option<Arc<Semaphore>>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut off = 0u64;
    let mut gated = gate.is_none();
    while off < len {
        if !gated && off >= len / 2 {
            if let Some(g) = &gate {
                g.acquire().await.unwrap().forget();
            }
            gated = true;
        }
        let n = (buf.len() as u64).min(len - off) as usize;
        let n = if !gated {
            n.min((len / 2 - off) as usize).max(1)
        } else {
            n
        };
        pattern_at(seed, off, &mut buf[..n]);
        w.write_all(&buf[..n]).await?;
        off += n as u64;
    }
    w.shutdown().await
}

/// Reads to end of stream, hashing; `progress` counts bytes as they arrive.
pub async fn read_all<R: AsyncRead + Unpin>(
    r: &mut R,
    progress: Arc<AtomicU64>,
) -> io::Result<(u64, String)> {
    let mut t = Sha256Tracker::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((t.bytes(), t.finish()));
        }
        t.update(&buf[..n]);
        progress.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// The sha256 of `len` bytes of pattern `seed`, computed in chunks.
pub fn pattern_sha(seed: u64, len: u64) -> String {
    let mut t = Sha256Tracker::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < len {
        let n = (buf.len() as u64).min(len - off) as usize;
        pattern_at(seed, off, &mut buf[..n]);
        t.update(&buf[..n]);
        off += n as u64;
    }
    t.finish()
}

/// A transfer in both directions at once: the client sends `len` bytes of
/// pattern 1, the server `len` bytes of pattern 2; both writers pause halfway
/// until [`Transfer::release`].
pub struct Transfer {
    pub gate: Arc<Semaphore>,
    pub client_got: Arc<AtomicU64>,
    pub server_got: Arc<AtomicU64>,
    len: u64,
    client: tokio::task::JoinHandle<io::Result<(FtStream, u64, String)>>,
    server: tokio::task::JoinHandle<io::Result<(FtStream, u64, String)>>,
}

async fn both_ways(
    s: FtStream,
    seed: u64,
    len: u64,
    gate: Arc<Semaphore>,
    got: Arc<AtomicU64>,
) -> io::Result<(FtStream, u64, String)> {
    let (mut r, mut w) = tokio::io::split(s);
    let (wr, rd) = tokio::join!(
        write_pattern(&mut w, seed, len, Some(gate)),
        read_all(&mut r, got)
    );
    wr?;
    let (n, sha) = rd?;
    Ok((r.unsplit(w), n, sha))
}

impl Transfer {
    pub fn start(client: FtStream, server: FtStream, len: u64) -> Transfer {
        let gate = Arc::new(Semaphore::new(0));
        let client_got = Arc::new(AtomicU64::new(0));
        let server_got = Arc::new(AtomicU64::new(0));
        let c = tokio::spawn(both_ways(client, 1, len, gate.clone(), client_got.clone()));
        let s = tokio::spawn(both_ways(server, 2, len, gate.clone(), server_got.clone()));
        Transfer {
            gate,
            client_got,
            server_got,
            len,
            client: c,
            server: s,
        }
    }

    /// Lets both writers send their second half.
    pub fn release(&self) {
        self.gate.add_permits(2);
    }

    /// Waits for both sides, checks exact bytes and hashes both ways, closes
    /// both sessions gracefully; returns the streams for their stats.
    pub async fn finish(self) -> (FtStream, FtStream) {
        let (c, s) = tokio::join!(self.client, self.server);
        let (c, cn, csha) = c.unwrap().expect("client side");
        let (s, sn, ssha) = s.unwrap().expect("server side");
        assert_eq!(cn, self.len, "client received every byte");
        assert_eq!(sn, self.len, "server received every byte");
        assert_eq!(csha, pattern_sha(2, self.len), "server→client bytes exact");
        assert_eq!(ssha, pattern_sha(1, self.len), "client→server bytes exact");
        let (a, b) = tokio::join!(c.close(), s.close());
        a.expect("client close");
        b.expect("server close");
        (c, s)
    }
}
