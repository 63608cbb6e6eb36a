//! The server side: an acceptor thread, a handshake thread per new
//! transport, and a janitor for the connection set's timers. Resumes are
//! routed whether or not the application is calling `accept`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use ft_session_core::{
    Admission, ClientHello, Config, ConnectionSet, HandshakeReader, HandshakeStep, Input,
    SessionError, SessionId, SetCounts, SetEvent,
};
use tracing::{debug, info, warn};

use crate::driver::{lock, Shared};
use crate::entropy::OsEntropy;
use crate::stream::FtStream;
use crate::transport::{
    listen_pinned, tcp_halves, ShutdownFn, SocketOptions, Transport, TransportHalves,
};

/// The janitor wakes at least this often (also bounds how late an eviction
/// is delivered).
const JANITOR_TICK: Duration = Duration::from_millis(200);
/// Sessions handshaken but not yet accepted, before new ones wait.
const ACCEPT_BACKLOG: usize = 1024;

struct PendingHandshake {
    deadline: Instant,
    shutdown: ShutdownFn,
    done: Arc<AtomicBool>,
}

#[derive(Default)]
struct Janitor {
    handshakes: Vec<PendingHandshake>,
    stop: bool,
}

/// What every session of one listener shares.
pub(crate) struct ServerCtx {
    config: Config,
    set: Mutex<ConnectionSet>,
    registry: Mutex<HashMap<SessionId, Weak<Shared>>>,
    next_transport: AtomicU64,
    janitor: Mutex<Janitor>,
    janitor_cond: Condvar,
}

impl ServerCtx {
    /// A session lost its transport (called with that session locked).
    pub(crate) fn parked(&self, now: Instant, session: &ft_session_core::Session) {
        lock(&self.set).parked(now, session);
        // Parking may have evicted others: let the janitor deliver that.
        self.janitor_cond.notify_all();
    }

    /// A session ended (called with that session locked).
    pub(crate) fn finished(&self, now: Instant, id: SessionId, outcome: &Result<(), SessionError>) {
        lock(&self.set).finished(now, id, outcome);
        lock(&self.registry).remove(&id);
    }

    fn session(&self, id: &SessionId) -> Option<Arc<Shared>> {
        lock(&self.registry).get(id).and_then(Weak::upgrade)
    }

    fn janitor_loop(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let (events, next) = {
                let mut set = lock(&self.set);
                set.handle_timeout(now);
                let mut events = Vec::new();
                while let Some(e) = set.poll_event() {
                    events.push(e);
                }
                (events, set.poll_timeout())
            };
            for e in events {
                match e {
                    SetEvent::Evicted(id) => {
                        info!(session = %id, "parked session evicted");
                        if let Some(shared) = self.session(&id) {
                            let mut g = shared.lock();
                            g.session.handle_input(Instant::now(), Input::Evicted);
                            shared.pump(&mut g);
                        }
                    }
                    SetEvent::Expired(id) => {
                        // Its own timer ends the session with `Expired`.
                        debug!(session = %id, "parked session forgotten by the set");
                    }
                }
            }
            let mut j = lock(&self.janitor);
            if j.stop {
                for h in j.handshakes.drain(..) {
                    (h.shutdown)(Shutdown::Both);
                }
                return;
            }
            let now = Instant::now();
            j.handshakes.retain(|h| {
                if h.done.load(Ordering::Acquire) {
                    return false;
                }
                if now >= h.deadline {
                    // A stalled or hostile handshake costs at most its deadline.
                    debug!("handshake deadline passed; dropping the transport");
                    (h.shutdown)(Shutdown::Both);
                    return false;
                }
                true
            });
            let mut wake = now + JANITOR_TICK;
            for h in &j.handshakes {
                wake = wake.min(h.deadline);
            }
            if let Some(n) = next {
                wake = wake.min(n);
            }
            let dur = wake.saturating_duration_since(now);
            drop(
                self.janitor_cond
                    .wait_timeout(j, dur)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }

    fn stop(&self) {
        lock(&self.janitor).stop = true;
        self.janitor_cond.notify_all();
    }
}

/// A listener for fault-tolerant sessions: the counterpart of
/// [`std::net::TcpListener`].
///
/// Background threads accept transports, run each handshake in its own
/// thread, and route resumes of known sessions to them, whether or not the
/// application is calling [`FtListener::accept`]. Dropping the listener stops
/// accepting; streams already accepted keep running.
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
    /// them are refused with [`SessionError::Config`].
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
        let ctx = Arc::new(ServerCtx {
            set: Mutex::new(ConnectionSet::new(config.clone())),
            config,
            registry: Mutex::new(HashMap::new()),
            next_transport: AtomicU64::new(1),
            janitor: Mutex::new(Janitor::default()),
            janitor_cond: Condvar::new(),
        });
        let (tx, rx) = mpsc::sync_channel(ACCEPT_BACKLOG);
        let janitor = ctx.clone();
        thread::Builder::new()
            .name("ft-session-janitor".into())
            .spawn(move || janitor.janitor_loop())?;
        let acceptor = ctx.clone();
        let stop_a = stop.clone();
        let spawned = thread::Builder::new()
            .name("ft-session-acceptor".into())
            .spawn(move || accept_loop(acceptor, incoming, tx, stop_a));
        if let Err(e) = spawned {
            ctx.stop();
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
        lock(&self.ctx.set).counts()
    }
}

impl Drop for FtListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.ctx.stop();
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
        let ctx = ctx.clone();
        let tx = tx.clone();
        let spawned = thread::Builder::new()
            .name("ft-session-handshake".into())
            .spawn(move || handshake(ctx, halves, tx));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot spawn a handshake thread");
        }
    }
    debug!("acceptor stopped");
}

/// Reads the client's first message, then admits: a fresh session goes to
/// the accept queue, a resume to its session.
fn handshake(
    ctx: Arc<ServerCtx>,
    mut t: TransportHalves,
    accepted: SyncSender<(FtStream, Option<SocketAddr>)>,
) {
    let start = Instant::now();
    let mut reader = HandshakeReader::new(start, &ctx.config);
    let done = Arc::new(AtomicBool::new(false));
    lock(&ctx.janitor).handshakes.push(PendingHandshake {
        deadline: reader.deadline(),
        shutdown: t.shutdown.clone(),
        done: done.clone(),
    });
    ctx.janitor_cond.notify_all();

    let mut buf = vec![0u8; 4096];
    let (hello, rest) = loop {
        let n = match t.reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                if reader.is_expired(Instant::now()) {
                    (t.shutdown)(Shutdown::Both);
                    return;
                }
                continue;
            }
            Err(e) => {
                debug!(error = %e, "transport failed during handshake");
                return;
            }
        };
        match reader.feed(&buf[..n]) {
            HandshakeStep::NeedMore => {}
            HandshakeStep::Hello { hello, consumed } => break (hello, buf[consumed..n].to_vec()),
            HandshakeStep::Reject { reply, error } => {
                done.store(true, Ordering::Release);
                debug!(error = %error, "bad first message");
                reject(t, reply.as_deref());
                return;
            }
        }
    };
    done.store(true, Ordering::Release);

    let now = Instant::now();
    let transport = ctx.next_transport.fetch_add(1, Ordering::Relaxed);
    let info = t.info.with_writer_hold(&ctx.config);
    let mut entropy = OsEntropy;

    // A resume is admitted with its session locked, so the session cannot
    // report itself parked between the set's decision and the resume.
    let target = match &hello {
        ClientHello::Resume(r) => ctx.session(&r.session_id),
        ClientHello::Fresh(_) => None,
    };
    let target_guard = target.as_ref().map(|s| (s, s.lock()));
    let admission = lock(&ctx.set).admit(now, transport, info, hello, &mut entropy);
    match admission {
        Admission::Resume { session_id, resume } => {
            let Some((shared, mut g)) = target_guard else {
                // The set knows a session that has no driver (it just
                // ended): the client learns it on its next attempt.
                warn!(session = %session_id, "resume for a session without a driver");
                (t.shutdown)(Shutdown::Both);
                return;
            };
            shared.attach(&mut g, transport, t);
            g.session.handle_input(
                now,
                Input::Resume {
                    transport,
                    resume,
                    info,
                },
            );
            if !rest.is_empty() {
                g.session.handle_input(
                    now,
                    Input::Received {
                        transport,
                        data: &rest,
                    },
                );
            }
            shared.pump(&mut g);
        }
        Admission::Fresh(session) => {
            drop(target_guard);
            let peer = t.socket.as_ref().and_then(|s| s.peer_addr().ok());
            let id = session.session_id();
            let shared = Shared::new(*session, None, Some(ctx.clone()));
            if let Some(id) = id {
                lock(&ctx.registry).insert(id, Arc::downgrade(&shared));
            }
            {
                let mut g = shared.lock();
                shared.attach(&mut g, transport, t);
                if !rest.is_empty() {
                    g.session.handle_input(
                        now,
                        Input::Received {
                            transport,
                            data: &rest,
                        },
                    );
                }
            }
            if let Err(e) = shared.start() {
                warn!(error = %e, "cannot start a session driver");
                let mut g = shared.lock();
                g.session.abort(0);
                shared.pump(&mut g);
                return;
            }
            if accepted
                .send((FtStream::from_shared(shared), peer))
                .is_err()
            {
                // Listener gone: the stream's drop closes the session.
                debug!("listener dropped; closing a new session");
            }
        }
        Admission::Reject { reply, code } => {
            drop(target_guard);
            debug!(?code, "handshake rejected");
            reject(t, Some(&reply));
        }
    }
}

fn reject(mut t: TransportHalves, reply: Option<&[u8]>) {
    if let Some(reply) = reply {
        let _ = t.writer.write_all(reply).and_then(|()| t.writer.flush());
    }
    // Half-close so the reply is delivered before the FIN; a client sends
    // nothing after its hello until answered, so no unread input makes the
    // final close a reset.
    (t.shutdown)(Shutdown::Write);
}
