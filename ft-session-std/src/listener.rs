//! The server side: the core's sans-IO [`Endpoint`] reads each client's
//! first message under its deadline, bounds the pending handshakes, starts
//! sessions and routes resumes; threads here only move bytes and time. An
//! acceptor thread opens transports, a handshake thread per pending
//! transport feeds its first bytes, and a timer thread runs the endpoint's
//! deadlines. Resumes are routed whether or not the application is calling
//! `accept`.
//!
//! The endpoint sits behind one lock, taken only to feed it and to sort its
//! outputs: never across I/O, and never while taking a session's lock. Each
//! new session is taken out of the endpoint and runs on its own threads
//! (`crate::driver`), reporting its events back by handle; what needs a
//! session's lock or a syscall (an eviction, unblocking a handshake thread
//! whose deadline passed) is done after the endpoint's lock is released.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ft_session_core::{
    Config, Delivery, Endpoint, EndpointInput, EndpointOutput, EndpointStats, Entropy, Event,
    Session, SessionHandle, SetCounts, TransportId,
};
use tracing::{debug, info, warn};

use crate::driver::{lock, retryable, Routing, ServerLink, Shared};
use crate::entropy::OsEntropy;
use crate::stream::FtStream;
use crate::transport::{
    listen_pinned, tcp_halves, ShutdownFn, SocketOptions, Transport, TransportHalves,
};

/// Sessions handshaken but not yet accepted, before new ones wait.
const ACCEPT_BACKLOG: usize = 1024;
/// Read buffer of a handshake thread: one client hello and what follows.
const HANDSHAKE_READ: usize = 4096;

/// What the endpoint decided for a transport waiting for its first message.
enum Fate {
    /// Close it, after writing the reply (a REJECT) if there is one.
    Close,
    /// It carries this new session.
    Fresh(SessionHandle, Arc<Shared>),
    /// It resumes this session.
    Resume(Arc<Shared>, Delivery),
}

struct Pending {
    /// Unblocks the handshake thread's read.
    shutdown: ShutdownFn,
    reply: Vec<u8>,
    fate: Option<Fate>,
}

/// Work that needs a session's lock or a syscall: done without the
/// endpoint's lock.
enum Deferred {
    /// Wake a handshake thread whose transport the endpoint dropped.
    Shutdown(ShutdownFn),
    /// Apply an eviction to a session.
    Deliver(Arc<Shared>, Delivery),
}

/// The endpoint and what the threads need to act on its outputs.
struct Server {
    ep: Endpoint,
    pending: HashMap<TransportId, Pending>,
    /// Sessions taken out of the endpoint, until they finish.
    sessions: HashMap<SessionHandle, Arc<Shared>>,
    next_transport: TransportId,
    deferred: Vec<Deferred>,
    /// When the timer thread wakes up next (`None`: when notified).
    timer_wake: Option<Instant>,
    stop: bool,
}

impl Server {
    /// Sorts the endpoint's outputs; `own` is the caller's transport, whose
    /// fate it acts on itself. True if the timer thread must wake (deferred
    /// work, or an earlier deadline).
    fn dispatch(&mut self, own: Option<TransportId>) -> bool {
        while let Some(out) = self.ep.poll_output() {
            match out {
                // Every session is taken, so only handshake replies come here.
                EndpointOutput::Transmit(t) => {
                    if let Some(p) = self.pending.get_mut(&t.transport) {
                        t.write_to(&mut p.reply);
                    }
                }
                EndpointOutput::DropTransport { transport } => {
                    self.decide(transport, Fate::Close, own);
                }
                EndpointOutput::Accepted { session, transport } => {
                    let Some(s) = self.ep.take_session(session) else {
                        continue;
                    };
                    let shared = Shared::new(s, None);
                    self.sessions.insert(session, shared.clone());
                    self.decide(transport, Fate::Fresh(session, shared), own);
                }
                EndpointOutput::Deliver { session, delivery } => {
                    let shared = self.sessions.get(&session).cloned();
                    match (delivery.transport(), shared) {
                        (Some(t), Some(s)) => self.decide(t, Fate::Resume(s, delivery), own),
                        (Some(t), None) => self.decide(t, Fate::Close, own),
                        (None, Some(s)) => self.deferred.push(Deferred::Deliver(s, delivery)),
                        (None, None) => {}
                    }
                }
                EndpointOutput::Event { .. } => {}
                other => warn!(?other, "unexpected endpoint output"),
            }
        }
        let sooner = match (self.ep.poll_timeout(), self.timer_wake) {
            (Some(t), Some(w)) => t < w,
            (Some(_), None) => true,
            (None, _) => false,
        };
        sooner || !self.deferred.is_empty()
    }

    fn decide(&mut self, transport: TransportId, fate: Fate, own: Option<TransportId>) {
        if let Some(p) = self.pending.get_mut(&transport) {
            if p.fate.is_none() && own != Some(transport) {
                self.deferred.push(Deferred::Shutdown(p.shutdown.clone()));
            }
            p.fate.get_or_insert(fate);
        }
    }
}

/// What every session of one listener shares.
struct ServerCtx {
    config: Config,
    server: Mutex<Server>,
    /// The timer thread waits here.
    timer: Condvar,
}

impl ServerCtx {
    fn server(&self) -> MutexGuard<'_, Server> {
        lock(&self.server)
    }

    /// Runs deferred work, without the endpoint's lock.
    fn run_deferred(&self) {
        let work = std::mem::take(&mut self.server().deferred);
        for d in work {
            match d {
                Deferred::Shutdown(shutdown) => shutdown(Shutdown::Both),
                Deferred::Deliver(shared, delivery) => {
                    let mut g = shared.lock();
                    delivery.apply(Instant::now(), &mut g.session);
                    shared.pump(&mut g);
                }
            }
        }
    }

    /// Runs the endpoint's timers and deferred work until the listener is
    /// dropped, then closes the transports still in their handshake.
    fn timer_loop(self: Arc<Self>) {
        loop {
            let mut s = self.server();
            if s.stop {
                let pending: Vec<ShutdownFn> =
                    s.pending.values().map(|p| p.shutdown.clone()).collect();
                drop(s);
                for shutdown in pending {
                    shutdown(Shutdown::Both);
                }
                return;
            }
            let now = Instant::now();
            if s.ep.poll_timeout().is_some_and(|t| t <= now) {
                s.ep.handle_input(now, EndpointInput::Timeout);
                s.dispatch(None);
            }
            if !s.deferred.is_empty() {
                drop(s);
                self.run_deferred();
                continue;
            }
            let wake = s.ep.poll_timeout();
            s.timer_wake = wake;
            let mut s = match wake {
                None => self.timer.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(t) => {
                    let dur = t.saturating_duration_since(now);
                    let woken = self.timer.wait_timeout(s, dur);
                    woken.unwrap_or_else(PoisonError::into_inner).0
                }
            };
            s.timer_wake = None;
        }
    }

    fn notify(&self, wake: bool) {
        if wake {
            self.timer.notify_one();
        }
    }
}

impl Routing for ServerCtx {
    fn report(&self, handle: SessionHandle, session: &Session, event: &Event, now: Instant) {
        // Only these change the endpoint: data events take no lock.
        if !matches!(event, Event::Parked | Event::Finished(_)) {
            return;
        }
        let mut s = self.server();
        s.ep.handle_session_event(now, handle, session, event);
        if let Event::Finished(_) = event {
            s.sessions.remove(&handle);
        }
        // The reporting session is locked: evictions wait for the timer thread.
        let wake = s.dispatch(None);
        drop(s);
        self.notify(wake);
    }
}

/// A listener for fault-tolerant sessions: the counterpart of
/// [`std::net::TcpListener`].
///
/// Background threads accept transports, feed each first message to the
/// session endpoint, and route resumes of known sessions to them, whether or
/// not the application is calling [`FtListener::accept`]. Dropping the
/// listener stops accepting; streams already accepted keep running.
pub struct FtListener {
    ctx: Arc<ServerCtx>,
    accepted: Mutex<Receiver<(FtStream, Option<SocketAddr>)>>,
    local_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FtListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl FtListener {
    /// Binds a TCP listener and starts serving sessions on it.
    ///
    /// Under [`ReleasePolicy::Implicit`](crate::ReleasePolicy::Implicit) the
    /// listening socket's buffers are pinned before listen (accepted sockets
    /// inherit them; their effective sizes are read back on each), as
    /// [`SocketOptions`] describes.
    pub fn bind(addr: impl ToSocketAddrs, config: Config) -> io::Result<FtListener> {
        Self::bind_opts(addr, config, SocketOptions::default())
    }

    /// [`bind`](Self::bind) with explicit socket options: pinned buffer
    /// sizes, a middlebox's in-flight bytes.
    pub fn bind_opts(
        addr: impl ToSocketAddrs,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtListener> {
        config.validate()?;
        let pin = options.pin_for(config.release_policy);
        let middlebox = options.middlebox_in_flight;
        let mut last = None;
        let mut bound = None;
        for a in addr.to_socket_addrs()? {
            match listen_pinned(&a, pin) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let listener = match (bound, last) {
            (Some(l), _) => l,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no address to bind",
                ))
            }
        };
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_accept = stop.clone();
        let incoming = std::iter::from_fn(move || {
            if stop_accept.load(Ordering::Acquire) {
                return None;
            }
            Some(
                listener
                    .accept()
                    .and_then(|(s, _)| tcp_halves(s, pin.is_some(), middlebox)),
            )
        });
        let mut l = Self::start(config, incoming, stop)?;
        l.local_addr = Some(local);
        Ok(l)
    }

    /// Serves sessions over transports from any source (Unix sockets, TLS
    /// acceptors, test harnesses). The iterator is driven on a background
    /// thread; errors it yields are logged and skipped; when it ends, no new
    /// transports arrive and [`accept`](Self::accept) fails once the queue is
    /// drained.
    ///
    /// Under [`ReleasePolicy::Implicit`](crate::ReleasePolicy::Implicit) the
    /// transports must be [`TransportHalves`] whose `info` gives their
    /// pinned, effective buffer sizes; sessions over transports without
    /// them are refused with [`SessionError::Config`](crate::SessionError::Config).
    pub fn from_incoming<I, T>(config: Config, incoming: I) -> io::Result<FtListener>
    where
        I: IntoIterator<Item = io::Result<T>>,
        I::IntoIter: Send + 'static,
        T: Transport,
    {
        config.validate()?;
        Self::start(
            config,
            incoming.into_iter(),
            Arc::new(AtomicBool::new(false)),
        )
    }

    fn start<I, T>(config: Config, incoming: I, stop: Arc<AtomicBool>) -> io::Result<FtListener>
    where
        I: Iterator<Item = io::Result<T>> + Send + 'static,
        T: Transport,
    {
        let mut seed = [0u8; 32];
        OsEntropy.fill(&mut seed);
        let ep = Endpoint::new(config.clone(), Instant::now(), seed)?;
        let ctx = Arc::new(ServerCtx {
            config,
            server: Mutex::new(Server {
                ep,
                pending: HashMap::new(),
                sessions: HashMap::new(),
                next_transport: 0,
                deferred: Vec::new(),
                timer_wake: None,
                stop: false,
            }),
            timer: Condvar::new(),
        });
        let (tx, rx) = mpsc::sync_channel(ACCEPT_BACKLOG);
        let timer = ctx.clone();
        thread::Builder::new()
            .name("ft-session-timer".into())
            .spawn(move || timer.timer_loop())?;
        let acceptor = ctx.clone();
        let stop_a = stop.clone();
        let spawned = thread::Builder::new()
            .name("ft-session-acceptor".into())
            .spawn(move || accept_loop(acceptor, incoming, tx, stop_a));
        if let Err(e) = spawned {
            ctx.server().stop = true;
            ctx.timer.notify_one();
            return Err(e);
        }
        Ok(FtListener {
            ctx,
            accepted: Mutex::new(rx),
            local_addr: None,
            stop,
        })
    }

    /// Waits for the next new session (resumes never show up here) and its
    /// peer's address (if the transport has one).
    pub fn accept(&self) -> io::Result<(FtStream, Option<SocketAddr>)> {
        lock(&self.accepted).recv().map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener's source of transports ended",
            )
        })
    }

    /// Like [`accept`](Self::accept), but gives up after `timeout`
    /// (`ErrorKind::TimedOut`).
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<(FtStream, Option<SocketAddr>)> {
        lock(&self.accepted)
            .recv_timeout(timeout)
            .map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => {
                    io::Error::new(io::ErrorKind::TimedOut, "no new session in time")
                }
                mpsc::RecvTimeoutError::Disconnected => io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the listener's source of transports ended",
                ),
            })
    }

    /// An endless iterator over new sessions, like `TcpListener::incoming`.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<FtStream>> + '_ {
        std::iter::from_fn(move || Some(self.accept().map(|(s, _)| s)))
    }

    /// The bound address (listeners from [`bind`](Self::bind) only).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr.ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "listener has no socket address")
        })
    }

    /// The connection set's counts (attached, parked, rejected resumes...).
    pub fn counts(&self) -> SetCounts {
        self.ctx.server().ep.stats().set
    }

    /// Everything the endpoint counts: the set's counts, sessions, pending,
    /// refused and expired handshakes.
    pub fn stats(&self) -> EndpointStats {
        self.ctx.server().ep.stats()
    }
}

impl Drop for FtListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.ctx.server().stop = true;
        self.ctx.timer.notify_one();
        if let Some(addr) = self.local_addr {
            // Wake the acceptor out of `accept()` so it sees the flag and
            // releases the port.
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
        }
    }
}

fn accept_loop<I, T>(
    ctx: Arc<ServerCtx>,
    incoming: I,
    tx: SyncSender<(FtStream, Option<SocketAddr>)>,
    stop: Arc<AtomicBool>,
) where
    I: Iterator<Item = io::Result<T>>,
    T: Transport,
{
    for t in incoming {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let halves = match t.and_then(Transport::split) {
            Ok(h) => h,
            Err(e) => {
                // EMFILE and friends: transient; do not spin.
                warn!(error = %e, "accept failed");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // The endpoint waits for the first message, or refuses the
        // transport at once over the pending-handshake limit.
        let (id, wake) = {
            let mut s = ctx.server();
            s.next_transport += 1;
            let id = s.next_transport;
            s.pending.insert(
                id,
                Pending {
                    shutdown: halves.shutdown.clone(),
                    reply: Vec::new(),
                    fate: None,
                },
            );
            // The writer thread may hold one frame the kernel has not taken.
            let info = halves.info.with_writer_hold(&ctx.config);
            let opened = EndpointInput::TransportOpened {
                transport: id,
                info,
            };
            s.ep.handle_input(Instant::now(), opened);
            let wake = s.dispatch(Some(id));
            if s.pending.get(&id).is_some_and(|p| p.fate.is_some()) {
                s.pending.remove(&id);
                drop(s);
                debug!("too many pending handshakes; transport refused");
                (halves.shutdown)(Shutdown::Both);
                continue;
            }
            (id, wake)
        };
        ctx.notify(wake);
        let ctx = ctx.clone();
        let tx = tx.clone();
        let spawned = thread::Builder::new()
            .name("ft-session-handshake".into())
            .spawn(move || handshake(ctx, id, halves, tx));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot spawn a handshake thread");
        }
    }
    debug!("acceptor stopped");
}

/// Feeds a transport's first bytes to the endpoint until it decides, then
/// acts on the decision: a new session gets its threads and goes to the
/// accept queue, a resume goes with its transport to its session.
fn handshake(
    ctx: Arc<ServerCtx>,
    id: TransportId,
    t: TransportHalves,
    tx: SyncSender<(FtStream, Option<SocketAddr>)>,
) {
    let TransportHalves {
        mut reader,
        writer,
        shutdown,
        info,
        socket,
    } = t;
    let mut buf = vec![0u8; HANDSHAKE_READ];
    let (fate, reply) = loop {
        let read = reader.read(&mut buf);
        let mut s = ctx.server();
        let input = match &read {
            Ok(0) => Some(EndpointInput::TransportLost { transport: id }),
            Ok(n) => Some(EndpointInput::Received {
                transport: id,
                data: &buf[..*n],
            }),
            // A transport with a read timeout: look at the fate again.
            Err(e) if retryable(e) => None,
            Err(e) => {
                debug!(error = %e, "transport failed during handshake");
                Some(EndpointInput::TransportLost { transport: id })
            }
        };
        let lost = matches!(input, Some(EndpointInput::TransportLost { .. }));
        if let Some(input) = input {
            s.ep.handle_input(Instant::now(), input);
        }
        let wake = s.dispatch(Some(id));
        let decided = s.pending.get_mut(&id).and_then(|p| {
            let fate = p.fate.take()?;
            Some((fate, std::mem::take(&mut p.reply)))
        });
        if decided.is_some() || lost {
            s.pending.remove(&id);
        }
        drop(s);
        ctx.notify(wake);
        match decided {
            Some(d) => break d,
            None if lost => return,
            None => {}
        }
    };
    let peer = socket.as_ref().and_then(|s| s.peer_addr().ok());
    let t = TransportHalves {
        reader,
        writer,
        shutdown,
        info,
        socket,
    };
    match fate {
        Fate::Close => reject(t, &reply),
        Fate::Fresh(handle, shared) => {
            let mut g = shared.lock();
            g.server = Some(ServerLink {
                routing: ctx.clone(),
                handle,
            });
            shared.attach(&mut g, id, t);
            drop(g);
            if let Err(e) = shared.start() {
                warn!(error = %e, "cannot start a session driver");
                let mut g = shared.lock();
                g.session.abort(0);
                shared.pump(&mut g);
                return;
            }
            info!(session = ?shared.lock().session.session_id(), ?peer, "session accepted");
            if tx.send((FtStream::from_shared(shared), peer)).is_err() {
                // Listener gone: the stream's drop closes the session.
                debug!("listener dropped; closing a new session");
            }
        }
        Fate::Resume(shared, delivery) => {
            let mut g = shared.lock();
            shared.attach(&mut g, id, t);
            delivery.apply(Instant::now(), &mut g.session);
            shared.pump(&mut g);
        }
    }
}

/// Writes a reply (if any) and closes the transport, best effort.
fn reject(mut t: TransportHalves, reply: &[u8]) {
    if !reply.is_empty() {
        let _ = t.writer.write_all(reply).and_then(|()| t.writer.flush());
    }
    // Half-close so the reply is delivered before the FIN; a client sends
    // nothing after its hello until answered, so no unread input makes the
    // final close a reset.
    (t.shutdown)(Shutdown::Write);
}
