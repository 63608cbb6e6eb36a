//! What each adapter provides to the suite (the glue), the service its
//! listener runs, and the legitimate client's checks.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ft_session_core::{Config, SetCounts};

use crate::{pattern_at, Direction, FaultPlan, FaultProxy, Sha256Tracker};

/// A listener under attack, with a service running behind it: the per-adapter
/// glue. Each accepted session runs the suite's service ([`Service`]) and
/// reports to [`Target::log`].
pub trait Target: Sized + Sync {
    /// The adapter's name, for reports.
    const NAME: &'static str;
    /// Binds a listener on 127.0.0.1 with `config` and starts serving.
    fn start(config: Config) -> io::Result<Self>;
    /// The listener's address.
    fn addr(&self) -> SocketAddr;
    /// The listener's accounting.
    fn counts(&self) -> Counts;
    /// What the service saw.
    fn log(&self) -> &ServiceLog;
    /// A legitimate client session to `addr` (the listener, or a proxy in
    /// front of it), through the adapter's own connect.
    fn connect(&self, addr: SocketAddr, config: Config) -> io::Result<Box<dyn LegitStream>>;
}

/// The listener's accounting, as far as the adapter exposes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// The connection set's counts.
    pub set: SetCounts,
    /// Sessions whose driver still runs, if the adapter says.
    pub sessions: Option<usize>,
    /// Handshakes in progress, if the adapter says.
    pub pending_handshakes: Option<usize>,
    /// Connections closed at once because too many handshakes were pending,
    /// if the adapter says.
    pub refused_handshakes: Option<u64>,
}

/// A legitimate client's session, blocking (async adapters block on their
/// runtime).
pub trait LegitStream: Read + Write + Send {
    /// Half-closes: the server reads end of stream after what was written.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Closes the session gracefully and waits for the outcome.
    fn close(&mut self) -> io::Result<()>;
    /// The session id.
    fn session_id(&self) -> Option<[u8; 16]>;
    /// Resumes completed so far.
    fn reconnects(&self) -> u64;
}

/// What the listener's service saw, shared with the glue.
#[derive(Debug, Default)]
pub struct ServiceLog {
    started: AtomicU64,
    served: AtomicU64,
    failed: AtomicU64,
    reply_bytes: AtomicU64,
    max_retained: AtomicU64,
}

impl ServiceLog {
    /// A session was accepted.
    pub fn started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }

    /// `n` more reply bytes were written; the session has retained at most
    /// `max_retained` bytes so far (its core's counter).
    pub fn wrote(&self, n: usize, max_retained: u64) {
        self.reply_bytes.fetch_add(n as u64, Ordering::SeqCst);
        self.max_retained.fetch_max(max_retained, Ordering::SeqCst);
    }

    /// A session ended: closed cleanly (`ok`) or with an error.
    pub fn ended(&self, ok: bool, max_retained: u64) {
        self.max_retained.fetch_max(max_retained, Ordering::SeqCst);
        let c = if ok { &self.served } else { &self.failed };
        c.fetch_add(1, Ordering::SeqCst);
    }

    /// Sessions accepted.
    pub fn sessions_started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Sessions that ended cleanly.
    pub fn sessions_served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// Reply bytes the service wrote so far, over all sessions.
    pub fn reply_bytes(&self) -> u64 {
        self.reply_bytes.load(Ordering::SeqCst)
    }

    /// The most bytes any server session retained.
    pub fn max_retained(&self) -> u64 {
        self.max_retained.load(Ordering::SeqCst)
    }
}

/// Seed of the reply pattern.
const REPLY_SEED: u64 = 0x5e55_1015;
/// Size of the summary that starts every reply: 8 bytes length, 32 sha256.
pub const SUMMARY_LEN: usize = 40;
/// Reply chunk size.
pub const CHUNK: usize = 64 * 1024;

/// The service every listener runs for each accepted session: read the
/// request to end of stream (its first 8 bytes say how many reply bytes to
/// send), then answer with the request's length and sha256 followed by that
/// many pattern bytes, and close. Both directions are checked by the client.
#[derive(Debug, Default)]
pub struct Service {
    request: Sha256Tracker,
    header: Vec<u8>,
}

impl Service {
    /// A service waiting for a request.
    pub fn new() -> Service {
        Service::default()
    }

    /// Request bytes arrived.
    pub fn received(&mut self, data: &[u8]) {
        let take = 8usize.saturating_sub(self.header.len()).min(data.len());
        self.header.extend_from_slice(&data[..take]);
        self.request.update(data);
    }

    /// The reply, once the request ended.
    pub fn reply(&self) -> Reply {
        let mut len = [0u8; 8];
        len[..self.header.len()].copy_from_slice(&self.header);
        let mut summary = self.request.bytes().to_be_bytes().to_vec();
        summary.extend_from_slice(&hex_to_bytes(&self.request.hex()));
        Reply {
            summary: Some(summary),
            len: u64::from_be_bytes(len),
            sent: 0,
        }
    }
}

/// The reply, produced chunk by chunk.
#[derive(Debug)]
pub struct Reply {
    summary: Option<Vec<u8>>,
    len: u64,
    sent: u64,
}

impl Reply {
    /// The next chunk to write, `None` when done.
    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if let Some(s) = self.summary.take() {
            return Some(s);
        }
        let n = (self.len - self.sent).min(CHUNK as u64) as usize;
        if n == 0 {
            return None;
        }
        let mut v = vec![0u8; n];
        pattern_at(REPLY_SEED, self.sent, &mut v);
        self.sent += n as u64;
        Some(v)
    }
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    hex.as_bytes()
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).unwrap_or("00");
            u8::from_str_radix(s, 16).unwrap_or(0)
        })
        .collect()
}

/// A request asking for `reply` bytes, `len` bytes long in all.
pub fn request(seed: u64, len: usize, reply: u64) -> Vec<u8> {
    let mut v = vec![0u8; len.max(8)];
    pattern_at(seed, 0, &mut v);
    v[..8].copy_from_slice(&reply.to_be_bytes());
    v
}

/// Reads a reply to `request` from `s` and checks it exactly: the summary
/// (what the server received: length and sha256) and the pattern bytes
/// (length and sha256).
pub fn check_reply(s: &mut dyn LegitStream, request: &[u8]) -> Result<(), String> {
    let reply_len = {
        let mut a = [0u8; 8];
        a.copy_from_slice(&request[..8]);
        u64::from_be_bytes(a)
    };
    let mut summary = [0u8; SUMMARY_LEN];
    s.read_exact(&mut summary)
        .map_err(|e| format!("reading the summary: {e}"))?;
    let mut expected = (request.len() as u64).to_be_bytes().to_vec();
    expected.extend_from_slice(&hex_to_bytes(&crate::sha256_hex(request)));
    if summary[..] != expected[..] {
        return Err(format!(
            "the server received something else: {:02x?} != {:02x?}",
            &summary[..12],
            &expected[..12]
        ));
    }
    let mut got = Sha256Tracker::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("reading the reply: {e}"))?;
        if n == 0 {
            break;
        }
        got.update(&buf[..n]);
    }
    let mut want = Sha256Tracker::new();
    let mut off = 0u64;
    while off < reply_len {
        let n = (reply_len - off).min(CHUNK as u64) as usize;
        pattern_at(REPLY_SEED, off, &mut buf[..n]);
        want.update(&buf[..n]);
        off += n as u64;
    }
    if (got.bytes(), got.hex()) != (want.bytes(), want.hex()) {
        return Err(format!(
            "reply differs: {} bytes {} != {} bytes {}",
            got.bytes(),
            got.hex(),
            want.bytes(),
            want.hex()
        ));
    }
    Ok(())
}

/// One whole legitimate exchange: `up` request bytes, `down` reply bytes,
/// both checked by length and sha256.
pub fn legit_exchange<T: Target>(
    t: &T,
    config: &Config,
    seed: u64,
    up: usize,
    down: u64,
) -> Result<(), String> {
    let mut s = t
        .connect(t.addr(), config.clone())
        .map_err(|e| format!("connect: {e}"))?;
    let req = request(seed, up, down);
    s.write_all(&req).map_err(|e| format!("write: {e}"))?;
    s.shutdown_write().map_err(|e| format!("shutdown: {e}"))?;
    check_reply(s.as_mut(), &req)?;
    s.close().map_err(|e| format!("close: {e}"))
}

/// A legitimate session parked on the server before an attack: its
/// transport was killed by a proxy that refuses new connections until
/// [`Parked::resume_and_check`].
pub struct Parked {
    proxy: FaultProxy,
    stream: Box<dyn LegitStream>,
    request: Vec<u8>,
    split: usize,
    /// The parked session's id (what an attacker may have learnt).
    pub id: [u8; 16],
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked").field("id", &self.id).finish()
    }
}

/// Polls `cond` every 10 ms up to `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Parked {
    /// Opens a session through a proxy, sends half of a request, kills the
    /// transport and waits until the server has parked the session.
    pub fn park<T: Target>(t: &T, config: &Config) -> Result<Parked, String> {
        let parked_before = t.counts().set.parked;
        let proxy = FaultProxy::start(t.addr(), FaultPlan::new().refuse_while_blackholed(true))
            .map_err(|e| format!("proxy: {e}"))?;
        let mut stream = t
            .connect(proxy.local_addr(), config.clone())
            .map_err(|e| format!("connect: {e}"))?;
        let id = stream.session_id().ok_or("no session id")?;
        let request = request(0x9a4c, 300_000, 200_000);
        let split = request.len() / 2;
        stream
            .write_all(&request[..split])
            .map_err(|e| format!("write: {e}"))?;
        if !wait_for(Duration::from_secs(10), || {
            proxy.bytes_forwarded(Direction::ClientToServer) >= (split + 60) as u64
        }) {
            return Err("the first half never reached the server".into());
        }
        proxy.blackhole(true);
        proxy.kill_all();
        if !wait_for(Duration::from_secs(10), || {
            t.counts().set.parked > parked_before
        }) {
            return Err("the server never parked the session".into());
        }
        Ok(Parked {
            proxy,
            stream,
            request,
            split,
            id,
        })
    }

    /// Lets the client reconnect, finishes the request and checks the reply.
    pub fn resume_and_check(mut self) -> Result<(), String> {
        self.proxy.blackhole(false);
        let s = &mut self.stream;
        s.write_all(&self.request[self.split..])
            .map_err(|e| format!("write after the attack: {e}"))?;
        s.shutdown_write().map_err(|e| format!("shutdown: {e}"))?;
        check_reply(s.as_mut(), &self.request)?;
        if s.reconnects() == 0 {
            return Err("the session never resumed".into());
        }
        s.close().map_err(|e| format!("close: {e}"))
    }
}

/// The process's resident set in bytes (`VmRSS` in `/proc/self/status`),
/// `None` where there is no such file.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
