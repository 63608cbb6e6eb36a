//! The fault-injecting loopback TCP proxy.

use crate::rng::SplitMix64;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often idle threads wake up to look at the proxy's flags. Bounds how long a
/// kill, a shutdown or a `resume()` takes to be noticed.
const TICK: Duration = Duration::from_millis(5);
/// Timeout of the connection to the upstream address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default size of each forwarding thread's buffer.
const BUF_SIZE: usize = 64 * 1024;
/// Linux lets a pinned send queue overshoot `SO_SNDBUF` by up to one packet
/// buffer (65,112 bytes measured on loopback).
const PACKET_OVERSHOOT: u64 = 64 * 1024;

/// How a [`FaultProxy`] sizes its own buffers. The defaults are the proxy's
/// historical behaviour: autotuned kernel buffers, 64 KiB copy buffers.
///
/// A proxy holds bytes of its own in each direction (its receive buffer
/// towards the sender, its send buffer towards the receiver, its copy
/// buffer) that the endpoints' kernels do not see, and a kill discards them.
/// Tests of the implicit release policy pin these buffers small and declare
/// [`FaultProxy::max_in_flight`] to the sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyOptions {
    /// Requested `SO_SNDBUF`/`SO_RCVBUF` of every proxy socket (set on the
    /// listening socket before listen, so accepted sockets inherit them, and
    /// on each upstream socket before connect). `None`: autotuned.
    pub socket_buffer: Option<usize>,
    /// Bytes each forwarding thread reads at once.
    pub copy_buffer: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            socket_buffer: None,
            copy_buffer: BUF_SIZE,
        }
    }
}

impl ProxyOptions {
    /// Pins the proxy's socket buffers to `bytes` (requested size).
    pub fn socket_buffer(mut self, bytes: usize) -> Self {
        self.socket_buffer = Some(bytes);
        self
    }

    /// Sets the copy buffer size (at least 1 byte).
    pub fn copy_buffer(mut self, bytes: usize) -> Self {
        self.copy_buffer = bytes.max(1);
        self
    }

    /// What a proxy started with these options will report as
    /// [`FaultProxy::max_in_flight`], known before it starts (sessions
    /// behind the proxy need it when they are configured, the proxy needs
    /// their address): probes the effective sizes on a fresh socket.
    pub fn max_in_flight(&self) -> io::Result<Option<u64>> {
        match self.socket_buffer {
            None => Ok(None),
            Some(size) => {
                let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                socket.set_send_buffer_size(size)?;
                socket.set_recv_buffer_size(size)?;
                Ok(Some(self.held(&socket)?))
            }
        }
    }

    /// Per direction: one socket's receive buffer, the other's send buffer
    /// (same request, same effective sizes), the send queue's overshoot and
    /// the copy buffer.
    fn held(&self, pinned: &Socket) -> io::Result<u64> {
        Ok(pinned.recv_buffer_size()? as u64
            + pinned.send_buffer_size()? as u64
            + PACKET_OVERSHOOT
            + self.copy_buffer as u64)
    }
}

/// One direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes written by the client (the side that connected to the proxy), going upstream.
    ClientToServer,
    /// Bytes written by the upstream server, going back to the client.
    ServerToClient,
}

impl Direction {
    /// Index into per-direction arrays.
    fn idx(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// When one connection is killed, as configured in a [`FaultPlan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillRule {
    /// Reset the connection right after it is accepted: the upstream side is connected
    /// first, then both sides are reset, so the server sees an accepted connection die.
    AtAccept,
    /// Forward exactly `bytes` bytes in `direction`, then reset both sides.
    /// `bytes == 0` kills at the first byte in that direction, forwarding nothing.
    /// Bytes dropped by the blackhole do not count.
    AfterBytes {
        /// The direction whose bytes are counted.
        direction: Direction,
        /// How many bytes are forwarded before the kill.
        bytes: u64,
    },
    /// Like [`KillRule::AfterBytes`] with a byte count drawn per connection in
    /// `[min_bytes, max_bytes]` from a PRNG; connection `i`'s count depends only on
    /// `(seed, i)`.
    Random {
        /// The direction whose bytes are counted.
        direction: Direction,
        /// The PRNG seed.
        seed: u64,
        /// Smallest possible offset (inclusive).
        min_bytes: u64,
        /// Largest possible offset (inclusive).
        max_bytes: u64,
    },
}

/// A [`KillRule`] resolved for one connection (random offsets drawn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillPoint {
    /// Killed at accept.
    AtAccept,
    /// Killed once `bytes` bytes have been forwarded in `direction`.
    AfterBytes {
        /// The direction whose bytes are counted.
        direction: Direction,
        /// How many bytes are forwarded before the kill.
        bytes: u64,
    },
}

impl KillRule {
    /// The kill point of the connection with 0-based accept index `connection`.
    pub fn resolve(&self, connection: u64) -> KillPoint {
        match *self {
            KillRule::AtAccept => KillPoint::AtAccept,
            KillRule::AfterBytes { direction, bytes } => KillPoint::AfterBytes { direction, bytes },
            KillRule::Random {
                direction,
                seed,
                min_bytes,
                max_bytes,
            } => {
                // One generator per connection, seeded from (seed, i) only.
                let mut rng = SplitMix64::new(crate::rng::splitmix64_at(seed, connection));
                KillPoint::AfterBytes {
                    direction,
                    bytes: rng.range_inclusive(min_bytes, max_bytes),
                }
            }
        }
    }
}

/// What a [`FaultProxy`] does to the connections it accepts.
///
/// Connections are numbered from 0 in accept order. A rule set for one connection
/// (`kill_connection_*`) replaces the rule for every connection (`kill_after`,
/// `random_kills`, [`FaultPlan::with_rule`]) for that connection. The default plan
/// forwards everything untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    every: Option<KillRule>,
    per_connection: Vec<(u64, KillRule)>,
    max_kills: Option<u64>,
    refuse_while_blackholed: bool,
}

impl FaultPlan {
    /// A plan without faults: every connection is forwarded untouched (until
    /// [`FaultProxy::kill_all`], blackhole or pause is used).
    pub fn new() -> Self {
        Self::default()
    }

    /// Kills every connection after `bytes` bytes in `direction`.
    pub fn kill_after(direction: Direction, bytes: u64) -> Self {
        Self::new().with_rule(KillRule::AfterBytes { direction, bytes })
    }

    /// Kills every connection after a number of client→server bytes drawn per
    /// connection in `[min_bytes, max_bytes]`, deterministically from `seed`.
    pub fn random_kills(seed: u64, min_bytes: u64, max_bytes: u64) -> Self {
        Self::random_kills_in(Direction::ClientToServer, seed, min_bytes, max_bytes)
    }

    /// Like [`FaultPlan::random_kills`], counting the bytes of `direction`.
    pub fn random_kills_in(
        direction: Direction,
        seed: u64,
        min_bytes: u64,
        max_bytes: u64,
    ) -> Self {
        Self::new().with_rule(KillRule::Random {
            direction,
            seed,
            min_bytes,
            max_bytes,
        })
    }

    /// Sets the rule applied to every connection (without a rule of its own).
    pub fn with_rule(mut self, rule: KillRule) -> Self {
        self.every = Some(rule);
        self
    }

    /// After `n` kills caused by the plan, later connections are left alone.
    /// Manual kills ([`FaultProxy::kill_all`]) are neither limited nor counted here.
    pub fn max_kills(mut self, n: u64) -> Self {
        self.max_kills = Some(n);
        self
    }

    /// Resets connection `index` (0-based accept order) right at accept.
    pub fn kill_connection_at_accept(self, index: u64) -> Self {
        self.kill_connection(index, KillRule::AtAccept)
    }

    /// Kills connection `index` (0-based) after `bytes` bytes in `direction`, e.g. in
    /// the middle of a handshake.
    pub fn kill_connection_after(self, index: u64, direction: Direction, bytes: u64) -> Self {
        self.kill_connection(index, KillRule::AfterBytes { direction, bytes })
    }

    /// Sets the rule of connection `index` (0-based), replacing any earlier one.
    pub fn kill_connection(mut self, index: u64, rule: KillRule) -> Self {
        self.per_connection.retain(|(i, _)| *i != index);
        self.per_connection.push((index, rule));
        self
    }

    /// What happens to connections accepted while the blackhole is on:
    /// `false` (the default) holds them — accepted, their bytes read and dropped, the
    /// upstream connection made only once the blackhole is lifted; `true` refuses
    /// them — reset right after accept (counted by [`FaultProxy::refused`], not as kills).
    pub fn refuse_while_blackholed(mut self, refuse: bool) -> Self {
        self.refuse_while_blackholed = refuse;
        self
    }

    /// Where connection `index` (0-based) will be killed, if the kill budget allows.
    /// Pure function of the plan: tests can predict the proxy's kill offsets.
    pub fn kill_point(&self, index: u64) -> Option<KillPoint> {
        self.per_connection
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, r)| r)
            .or(self.every.as_ref())
            .map(|r| r.resolve(index))
    }
}

/// Why a connection was killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillCause {
    /// The [`FaultPlan`] killed it at this point.
    Plan(KillPoint),
    /// [`FaultProxy::kill_all`] killed it.
    Manual,
}

/// One entry of [`FaultProxy::kill_log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillRecord {
    /// 0-based accept index of the connection.
    pub connection: u64,
    /// Why it was killed.
    pub cause: KillCause,
    /// Bytes forwarded client→server on this connection when it was killed.
    pub client_to_server: u64,
    /// Bytes forwarded server→client on this connection when it was killed.
    pub server_to_client: u64,
}

/// Locks a mutex, ignoring poisoning (the data stays usable for counters and lists).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets SO_LINGER to 0 so the last close of `s` sends an RST.
fn set_rst_on_close(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// State of one proxied connection shared by its threads and the proxy handle.
struct Conn {
    index: u64,
    /// Set when the connection is killed or aborted: its threads stop and drop their
    /// sockets, and since SO_LINGER is 0 the last close sends an RST.
    dead: AtomicBool,
    /// Clones of the connection's sockets, so another thread can set SO_LINGER 0.
    sockets: Mutex<Vec<TcpStream>>,
    bytes: [AtomicU64; 2],
}

impl Conn {
    /// Marks the connection dead and arms RST on close; false if it already was dead.
    fn abort(&self) -> bool {
        if self.dead.swap(true, Ordering::SeqCst) {
            return false;
        }
        let sockets = std::mem::take(&mut *lock(&self.sockets));
        for s in &sockets {
            set_rst_on_close(s);
        }
        true
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// State shared by the proxy handle and all its threads.
struct Shared {
    upstream: SocketAddr,
    plan: FaultPlan,
    options: ProxyOptions,
    shutdown: AtomicBool,
    paused: AtomicBool,
    blackhole: AtomicBool,
    connections: AtomicU64,
    kills: AtomicU64,
    plan_kills: AtomicU64,
    refused: AtomicU64,
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    /// Most bytes held per direction, when the buffers are pinned.
    in_flight: Option<u64>,
    live: Mutex<Vec<Arc<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    kill_log: Mutex<Vec<KillRecord>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Takes one unit of the plan's kill budget; false if exhausted.
    fn reserve_plan_kill(&self) -> bool {
        let max = self.plan.max_kills.unwrap_or(u64::MAX);
        self.plan_kills
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| {
                (k < max).then_some(k + 1)
            })
            .is_ok()
    }

    /// Kills `conn` (both sides get an RST once its threads drop their sockets).
    /// Returns false if it was already dead.
    fn kill(&self, conn: &Conn, cause: KillCause) -> bool {
        if !conn.abort() {
            if matches!(cause, KillCause::Plan(_)) {
                self.plan_kills.fetch_sub(1, Ordering::SeqCst);
            }
            return false;
        }
        self.kills.fetch_add(1, Ordering::SeqCst);
        lock(&self.kill_log).push(KillRecord {
            connection: conn.index,
            cause,
            client_to_server: conn.bytes[0].load(Ordering::SeqCst),
            server_to_client: conn.bytes[1].load(Ordering::SeqCst),
        });
        true
    }

    fn forget(&self, conn: &Arc<Conn>) {
        lock(&self.live).retain(|c| !Arc::ptr_eq(c, conn));
        lock(&conn.sockets).clear();
    }
}

/// A fault-injecting TCP proxy listening on 127.0.0.1, forwarding every accepted
/// connection to one upstream address.
///
/// Threads: one accept thread (nonblocking accept polled every few milliseconds),
/// and per connection two forwarding threads, one per direction. All of them poll the
/// proxy's flags at least every few milliseconds (sockets have short read/write
/// timeouts), so every thread ends by itself after a kill, an end of stream or
/// [`Drop`]. Dropping the proxy stops accepting (the port then refuses connections),
/// closes every proxied connection (an orderly close, or an RST where unread data
/// remains) and joins every thread before returning.
///
/// One caveat for tests that also spawn processes: a child forked while the proxy
/// runs holds a copy of the listening socket until it calls `exec` (the descriptors
/// are close-on-exec), so right after `Drop` the port can still accept for a moment
/// while a `Command` is being spawned concurrently.
pub struct FaultProxy {
    local: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Binds 127.0.0.1 on an ephemeral port and starts forwarding accepted connections
    /// to `upstream` according to `plan`.
    pub fn start(upstream: SocketAddr, plan: FaultPlan) -> io::Result<FaultProxy> {
        Self::start_with(upstream, plan, ProxyOptions::default())
    }

    /// Like [`FaultProxy::start`], with the proxy's own buffers sized by `options`.
    pub fn start_with(
        upstream: SocketAddr,
        plan: FaultPlan,
        options: ProxyOptions,
    ) -> io::Result<FaultProxy> {
        let (listener, in_flight) = match options.socket_buffer {
            None => (TcpListener::bind(("127.0.0.1", 0))?, None),
            Some(size) => {
                let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                // Before listen: accepted sockets inherit the sizes.
                socket.set_send_buffer_size(size)?;
                socket.set_recv_buffer_size(size)?;
                socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
                socket.listen(128)?;
                let held = options.held(&socket)?;
                (TcpListener::from(socket), Some(held))
            }
        };
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            plan,
            options,
            in_flight,
            shutdown: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            blackhole: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            kills: AtomicU64::new(0),
            plan_kills: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            dropped: [AtomicU64::new(0), AtomicU64::new(0)],
            live: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            kill_log: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("fault-proxy-accept-{}", local.port()))
            .spawn(move || accept_loop(&s, &listener))?;
        Ok(FaultProxy {
            local,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// The most bytes this proxy can hold per direction (kernel buffers of its
    /// two sockets, their send-queue overshoot, its copy buffer), when its
    /// socket buffers are pinned ([`ProxyOptions::socket_buffer`]); `None`
    /// when they are autotuned, since that capacity grows during a transfer.
    pub fn max_in_flight(&self) -> Option<u64> {
        self.shared.in_flight
    }

    /// The address clients connect to (127.0.0.1 and an ephemeral port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The plan the proxy was started with.
    pub fn plan(&self) -> &FaultPlan {
        &self.shared.plan
    }

    /// Kills every live connection now (both sides get an RST); returns how many.
    /// These count in [`FaultProxy::kills`] but not against [`FaultPlan::max_kills`].
    pub fn kill_all(&self) -> usize {
        let live: Vec<Arc<Conn>> = lock(&self.shared.live).clone();
        live.iter()
            .filter(|c| self.shared.kill(c, KillCause::Manual))
            .count()
    }

    /// Turns the blackhole on or off. While on, both directions of every connection
    /// are read and the bytes **dropped** (not buffered), like a dead network path
    /// that still lets the kernel buffers drain; nothing is closed. Bytes written by
    /// an endpoint after `blackhole(true)` returns are never delivered; lifting it
    /// resumes forwarding of later bytes (the dropped ones are gone, so an old
    /// connection's stream has a hole). New connections meanwhile are held or
    /// refused, see [`FaultPlan::refuse_while_blackholed`].
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// Stops forwarding in both directions of every connection, holding the bytes:
    /// they stay in the kernel buffers (or the proxy's buffer) until
    /// [`FaultProxy::resume`]. Bytes written after `pause()` returns are not delivered
    /// before `resume()`.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Ends a [`FaultProxy::pause`]: held bytes are delivered, in order.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Total connections killed (by the plan or by [`FaultProxy::kill_all`]).
    pub fn kills(&self) -> u64 {
        self.shared.kills.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (including refused and killed ones).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections refused because they arrived while the blackhole was on and the
    /// plan says [`FaultPlan::refuse_while_blackholed`].
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections currently being proxied (or held).
    pub fn live_connections(&self) -> usize {
        lock(&self.shared.live).len()
    }

    /// Bytes delivered in `direction` so far, over all connections.
    pub fn bytes_forwarded(&self, direction: Direction) -> u64 {
        self.shared.forwarded[direction.idx()].load(Ordering::SeqCst)
    }

    /// Bytes read and dropped by the blackhole in `direction` so far.
    pub fn bytes_dropped(&self, direction: Direction) -> u64 {
        self.shared.dropped[direction.idx()].load(Ordering::SeqCst)
    }

    /// Every kill so far, in the order they happened.
    pub fn kill_log(&self) -> Vec<KillRecord> {
        lock(&self.shared.kill_log).clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        // The accept thread is gone, so no thread can be added any more.
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("local", &self.local)
            .field("upstream", &self.shared.upstream)
            .field("connections", &self.connections())
            .field("kills", &self.kills())
            .finish_non_exhaustive()
    }
}

/// Accepts until shutdown, spawning one connection thread per client.
fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stopping() {
        match listener.accept() {
            Ok((client, _)) => {
                let index = shared.connections.fetch_add(1, Ordering::SeqCst);
                let conn = Arc::new(Conn {
                    index,
                    dead: AtomicBool::new(false),
                    sockets: Mutex::new(client.try_clone().into_iter().collect()),
                    bytes: [AtomicU64::new(0), AtomicU64::new(0)],
                });
                lock(&shared.live).push(Arc::clone(&conn));
                let s = Arc::clone(shared);
                let c = Arc::clone(&conn);
                let spawned = thread::Builder::new()
                    .name(format!("fault-proxy-conn-{index}"))
                    .spawn(move || {
                        run_connection(&s, &c, client);
                        s.forget(&c);
                    });
                let mut threads = lock(&shared.threads);
                // Join the threads that are done, so the list stays short.
                let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads)
                    .into_iter()
                    .partition(|t| t.is_finished());
                *threads = running;
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(_) => {
                        conn.abort();
                        shared.forget(&conn);
                    }
                }
                drop(threads);
                for t in done {
                    let _ = t.join();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Transient accept errors (e.g. ECONNABORTED, EMFILE): back off and retry.
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Connects to the upstream address, pinning the socket's buffers first if
/// the options say so.
fn connect_upstream(shared: &Shared) -> io::Result<TcpStream> {
    let Some(size) = shared.options.socket_buffer else {
        return TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT);
    };
    let socket = Socket::new(
        Domain::for_address(shared.upstream),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_send_buffer_size(size)?;
    socket.set_recv_buffer_size(size)?;
    socket.connect_timeout(&shared.upstream.into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

/// Prepares a socket for forwarding: blocking with short timeouts, no Nagle delay.
fn configure(s: &TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(TICK))?;
    s.set_write_timeout(Some(TICK))
}

/// True for the errors that only mean "the timeout expired, try again".
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The life of one accepted connection: refuse/hold, connect upstream, forward.
fn run_connection(shared: &Arc<Shared>, conn: &Arc<Conn>, mut client: TcpStream) {
    if configure(&client).is_err() {
        conn.abort();
        return;
    }
    // Client bytes read while holding but after the blackhole was lifted.
    let mut pending = Vec::new();
    if shared.blackhole.load(Ordering::SeqCst) {
        if shared.plan.refuse_while_blackholed {
            conn.abort();
            set_rst_on_close(&client);
            shared.refused.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // Hold: drain and drop the client's bytes until the hole is lifted.
        let mut buf = vec![0u8; shared.options.copy_buffer];
        while shared.blackhole.load(Ordering::SeqCst) {
            if shared.stopping() || conn.is_dead() {
                return;
            }
            match client.read(&mut buf) {
                Ok(0) => return,
                // Checked after the read: bytes read once the hole is lifted are kept.
                Ok(n) if !shared.blackhole.load(Ordering::SeqCst) => {
                    pending.extend_from_slice(&buf[..n]);
                }
                Ok(n) => {
                    shared.dropped[0].fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) if is_retry(&e) => {}
                Err(_) => {
                    conn.abort();
                    return;
                }
            }
        }
    }
    let upstream = match connect_upstream(shared).and_then(|u| configure(&u).map(|()| u)) {
        Ok(u) => u,
        Err(_) => {
            // Nothing to forward to: the client sees a reset.
            conn.abort();
            set_rst_on_close(&client);
            return;
        }
    };
    {
        let mut sockets = lock(&conn.sockets);
        if conn.is_dead() {
            // Killed (kill_all) while connecting: make sure the upstream side dies too.
            set_rst_on_close(&upstream);
            return;
        }
        if let Ok(u) = upstream.try_clone() {
            sockets.push(u);
        }
    }
    let mut budget = [None, None];
    match shared.plan.kill_point(conn.index) {
        Some(point @ KillPoint::AtAccept) if shared.reserve_plan_kill() => {
            shared.kill(conn, KillCause::Plan(point));
            return;
        }
        Some(KillPoint::AfterBytes { direction, bytes }) => budget[direction.idx()] = Some(bytes),
        // No kill, or the kill budget is spent.
        None | Some(KillPoint::AtAccept) => {}
    }
    let (client2, upstream2) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => {
            conn.abort();
            return;
        }
    };
    let s = Arc::clone(shared);
    let c = Arc::clone(conn);
    let back_budget = budget[1];
    let back = thread::Builder::new()
        .name(format!("fault-proxy-s2c-{}", conn.index))
        .spawn(move || {
            forward(
                &s,
                &c,
                upstream2,
                client2,
                Direction::ServerToClient,
                back_budget,
                Vec::new(),
            );
        });
    match back {
        Ok(t) => {
            forward(
                shared,
                conn,
                client,
                upstream,
                Direction::ClientToServer,
                budget[0],
                pending,
            );
            let _ = t.join();
        }
        Err(_) => {
            conn.abort();
        }
    }
}

/// Copies `from` → `to` in one direction until end of stream, kill or shutdown.
/// `budget`: bytes left before this direction's kill point, if it has one.
/// `pending`: bytes already read from `from`, forwarded first.
fn forward(
    shared: &Shared,
    conn: &Conn,
    mut from: TcpStream,
    mut to: TcpStream,
    dir: Direction,
    mut budget: Option<u64>,
    mut pending: Vec<u8>,
) {
    let d = dir.idx();
    let mut buf = vec![0u8; shared.options.copy_buffer];
    loop {
        if shared.stopping() || conn.is_dead() {
            return;
        }
        let n = if !pending.is_empty() {
            // Bytes held before forwarding started; one buffer at a time.
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            pending.drain(..n);
            n
        } else if shared.paused.load(Ordering::SeqCst) {
            // Hold the bytes in the kernel: don't read.
            thread::sleep(TICK);
            continue;
        } else {
            match from.read(&mut buf) {
                Ok(0) => {
                    // Orderly end of stream: pass the FIN on.
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => n,
                Err(e) if is_retry(&e) => continue,
                Err(_) => {
                    // The endpoint reset the connection: reset the other side too.
                    conn.abort();
                    return;
                }
            }
        };
        // Checked after the read, so bytes written after pause()/blackhole(true)
        // returned are never forwarded.
        while shared.paused.load(Ordering::SeqCst) {
            if shared.stopping() || conn.is_dead() {
                return;
            }
            thread::sleep(TICK);
        }
        if shared.blackhole.load(Ordering::SeqCst) {
            shared.dropped[d].fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        let mut len = n;
        let mut kill_now = false;
        if let Some(left) = budget {
            if n as u64 >= left {
                if shared.reserve_plan_kill() {
                    // `left < n <= buf.len()`, so the conversion cannot fail.
                    len = usize::try_from(left).unwrap_or(n);
                    kill_now = true;
                } else {
                    budget = None;
                }
            } else {
                budget = Some(left - n as u64);
            }
        }
        if !write_all(shared, conn, &mut to, &buf[..len], d) {
            if kill_now {
                shared.plan_kills.fetch_sub(1, Ordering::SeqCst);
            }
            if !shared.stopping() {
                // The receiving endpoint reset the connection: reset the other side too.
                conn.abort();
            }
            return;
        }
        if kill_now {
            let point = KillPoint::AfterBytes {
                direction: dir,
                bytes: conn.bytes[d].load(Ordering::SeqCst),
            };
            shared.kill(conn, KillCause::Plan(point));
            return;
        }
    }
}

/// Writes all of `data`, counting it; false if the connection died or stopped.
fn write_all(shared: &Shared, conn: &Conn, to: &mut TcpStream, mut data: &[u8], d: usize) -> bool {
    while !data.is_empty() {
        if shared.stopping() || conn.is_dead() {
            return false;
        }
        match to.write(data) {
            Ok(0) => return false,
            Ok(k) => {
                conn.bytes[d].fetch_add(k as u64, Ordering::SeqCst);
                shared.forwarded[d].fetch_add(k as u64, Ordering::SeqCst);
                data = &data[k..];
            }
            Err(e) if is_retry(&e) => {}
            Err(_) => return false,
        }
    }
    true
}
