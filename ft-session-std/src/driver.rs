//! The threads around one session: a driver for timers, a reader and a
//! writer per transport, a connector per reconnect attempt. They only move
//! bytes and time between transports and the core; every decision is the
//! core's.
//!
//! Locking: the session lives in `Shared::inner`. Lock order is session,
//! then the listener's endpoint; nobody holds a lock while doing transport
//! I/O.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ft_session_core::{
    Event, Input, Output, ReleasePolicy, Role, Session, SessionError, SessionHandle, SessionId,
    SessionState, Transmit, TransportId,
};
use tracing::{debug, info, warn};

use crate::transport::{ShutdownFn, SocketRef, TransportHalves};

/// How long a finished session lets its writers flush final frames (CLOSE,
/// ABORT) before it shuts every transport down.
const FINAL_FLUSH_GRACE: Duration = Duration::from_secs(1);
/// Read buffer per transport.
const READ_CHUNK: usize = 64 * 1024;

/// Opens a new transport for a client (the user's connector, type-erased).
pub(crate) type Connector = Box<dyn FnMut() -> io::Result<TransportHalves> + Send>;

/// Where a server session reports its events: the listener's endpoint,
/// which took the session out to these threads and still routes its
/// resumes (see `ft_session_core::endpoint`).
pub(crate) trait Routing: Send + Sync {
    /// Called with the session locked, for every event it emits.
    fn report(&self, handle: SessionHandle, session: &Session, event: &Event, now: Instant);
}

/// A server session's link to its listener.
pub(crate) struct ServerLink {
    pub(crate) routing: Arc<dyn Routing>,
    pub(crate) handle: SessionHandle,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking app thread must not take the session down with it: the
    // session state is consistent between core calls.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Link {
    /// Queue to the writer thread; `None` once the session dropped the link.
    tx: Sender<Transmit>,
    shutdown: ShutdownFn,
    /// Transmits queued to the writer and not yet fully written.
    queued: Arc<AtomicUsize>,
    /// The transport's socket, if it has one (addresses, nodelay).
    pub(crate) socket: Option<SocketRef>,
}

pub(crate) struct Inner {
    pub(crate) session: Session,
    pub(crate) links: HashMap<TransportId, Link>,
    /// `TCP_NODELAY` for every transport of the session.
    pub(crate) nodelay: bool,
    /// Links dropped after the session finished: their writers flush the
    /// final frames, then they are shut down.
    closing: Vec<ShutdownFn>,
    connector: Option<Arc<Mutex<Connector>>>,
    pub(crate) server: Option<ServerLink>,
    /// Set by `Drop` of the stream: abort if the graceful close has not
    /// finished by then.
    pub(crate) linger_deadline: Option<Instant>,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) writers: usize,
    side: &'static str,
    /// Threads blocked in [`Shared::wait`]: `pump` only notifies `cond` when
    /// someone waits (a notify is a syscall even with no waiter).
    waiters: usize,
    /// Whether the driver sleeps on `driver_cond`, and until when (`None`:
    /// until notified). `pump` wakes it only when it has something to do
    /// sooner: an earlier timer, an ending, a linger deadline.
    driver_asleep: bool,
    driver_wake: Option<Instant>,
}

impl Inner {
    /// True when the current transport's writer has written everything
    /// queued to it (what `flush` waits for, with the session's own queue).
    pub(crate) fn writer_idle(&self) -> bool {
        self.session
            .transport()
            .and_then(|t| self.links.get(&t))
            .is_some_and(|l| l.queued.load(Ordering::Acquire) == 0)
    }

    /// The current transport's socket, if it has one.
    pub(crate) fn socket(&self) -> Option<&SocketRef> {
        self.session
            .transport()
            .and_then(|t| self.links.get(&t))
            .and_then(|l| l.socket.as_ref())
    }

    /// Under the implicit policy the core releases bytes once they are
    /// b bytes behind what it handed out, so nothing may pile up between the
    /// core and the kernel: while the current transport's writer has a
    /// transmit, no new output is polled (a data frame would be the next).
    /// Outputs are only held back while the session is established on that
    /// transport; a loss or an ending changes the state and lets them out.
    fn writer_full(&self) -> bool {
        if self.session.config().release_policy != ReleasePolicy::Implicit
            || self.session.state() != SessionState::Established
        {
            return false;
        }
        self.session
            .transport()
            .and_then(|t| self.links.get(&t))
            .is_some_and(|l| l.queued.load(Ordering::Acquire) > 0)
    }
}

pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    /// Waited on by the application, connect and readers held back by
    /// backpressure ([`Shared::wait`]).
    pub(crate) cond: Condvar,
    /// Waited on by the driver alone, so the data path does not wake it.
    driver_cond: Condvar,
    /// Threads waiting in `flush`: writers tell them when their queue empties.
    pub(crate) flushers: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(session: Session, connector: Option<Connector>) -> Arc<Shared> {
        let side = match session.role() {
            Role::Server => "server",
            Role::Client => "client",
        };
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                session,
                links: HashMap::new(),
                nodelay: true,
                closing: Vec::new(),
                connector: connector.map(|c| Arc::new(Mutex::new(c))),
                server: None,
                linger_deadline: None,
                read_timeout: None,
                write_timeout: None,
                writers: 0,
                side,
                waiters: 0,
                driver_asleep: false,
                driver_wake: None,
            }),
            cond: Condvar::new(),
            driver_cond: Condvar::new(),
            flushers: AtomicUsize::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Waits on the session's condition until notified or `deadline`.
    pub(crate) fn wait<'a>(
        &self,
        mut g: MutexGuard<'a, Inner>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, Inner> {
        g.waiters += 1;
        let mut g = wait_on(&self.cond, g, deadline);
        g.waiters -= 1;
        g
    }

    /// The driver's sleep until notified or `deadline`.
    fn driver_wait<'a>(
        &self,
        mut g: MutexGuard<'a, Inner>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, Inner> {
        g.driver_asleep = true;
        g.driver_wake = deadline;
        let mut g = wait_on(&self.driver_cond, g, deadline);
        g.driver_asleep = false;
        g
    }

    /// Wakes the application, connect and held-back readers if any waits.
    fn notify(&self, g: &Inner) {
        if g.waiters > 0 {
            self.cond.notify_all();
        }
    }

    /// Wakes the driver if it sleeps past something it must do now.
    fn notify_driver(&self, g: &Inner) {
        if !g.driver_asleep {
            return;
        }
        let sooner = match (g.session.poll_timeout(), g.driver_wake) {
            (Some(t), Some(w)) => t < w,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if sooner || g.session.is_finished() || g.linger_deadline.is_some() {
            self.driver_cond.notify_one();
        }
    }

    /// Starts the driver thread (timers: heartbeats, dead links, backoff,
    /// expiry) and runs the session's first outputs.
    pub(crate) fn start(self: &Arc<Self>) -> io::Result<()> {
        let me = self.clone();
        thread::Builder::new()
            .name("ft-session-driver".into())
            .spawn(move || me.drive())?;
        let mut g = self.lock();
        self.pump(&mut g);
        Ok(())
    }

    /// Drains the session's outputs and acts on them. Never blocks: bytes go
    /// to writer threads, connects to connector threads.
    pub(crate) fn pump(self: &Arc<Self>, g: &mut Inner) {
        let now = Instant::now();
        while !g.writer_full() {
            let Some(out) = g.session.poll_output() else {
                break;
            };
            match out {
                Output::Transmit(t) => {
                    // A transmit for a link already gone is moot: the core
                    // learns of the loss and retransmits on the next one.
                    if let Some(link) = g.links.get(&t.transport) {
                        link.queued.fetch_add(1, Ordering::AcqRel);
                        let _ = link.tx.send(t);
                    }
                }
                Output::Connect { transport } => self.spawn_connect(g, transport),
                Output::DropTransport { transport } => {
                    if let Some(link) = g.links.remove(&transport) {
                        if g.session.is_finished() {
                            // Final frames are queued: the writer sends them,
                            // then shuts down its side (dropping `tx` ends it).
                            g.closing.push(link.shutdown);
                        } else {
                            // Lost or superseded: queued bytes are worthless
                            // (the core retransmits), unblock both threads now.
                            (link.shutdown)(Shutdown::Both);
                        }
                    }
                }
                Output::Event(e) => on_event(g, now, e),
                // A later core's outputs this driver does not know: nothing to do.
                _ => {}
            }
        }
        self.notify(g);
        self.notify_driver(g);
    }

    fn spawn_connect(self: &Arc<Self>, g: &mut Inner, transport: TransportId) {
        let Some(connector) = g.connector.clone() else {
            // Only clients are asked to connect.
            g.session
                .handle_input(Instant::now(), Input::TransportLost { transport });
            return;
        };
        let me = self.clone();
        let spawned = thread::Builder::new()
            .name("ft-session-connect".into())
            .spawn(move || {
                let result = (lock(&connector))();
                let mut g = me.lock();
                let now = Instant::now();
                match result {
                    Ok(halves) => {
                        if g.session.is_finished() || g.session.transport() != Some(transport) {
                            // The core gave up on this attempt meanwhile.
                            (halves.shutdown)(Shutdown::Both);
                            return;
                        }
                        // The writer thread holds at most one frame (see `Inner::writer_full`).
                        let info = halves.info.with_writer_hold(g.session.config());
                        me.attach(&mut g, transport, halves);
                        info!(side = g.side, transport, "transport connected");
                        g.session
                            .handle_input(now, Input::TransportUp { transport, info });
                    }
                    Err(e) => {
                        debug!(side = g.side, transport, error = %e, "connect failed");
                        g.session
                            .handle_input(now, Input::TransportLost { transport });
                    }
                }
                me.pump(&mut g);
            });
        if spawned.is_err() {
            warn!("cannot spawn a connect thread; treating the attempt as failed");
            g.session
                .handle_input(Instant::now(), Input::TransportLost { transport });
        }
    }

    /// Registers a transport and starts its reader and writer threads. Call
    /// before feeding the core the input that makes it use `transport`.
    pub(crate) fn attach(
        self: &Arc<Self>,
        g: &mut Inner,
        transport: TransportId,
        t: TransportHalves,
    ) {
        let (tx, rx) = mpsc::channel();
        let shutdown = t.shutdown.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        if let Some(s) = &t.socket {
            if let Err(e) = s.set_nodelay(g.nodelay) {
                debug!(transport, error = %e, "cannot set TCP_NODELAY on a new transport");
            }
        }
        g.links.insert(
            transport,
            Link {
                tx,
                shutdown: shutdown.clone(),
                queued: queued.clone(),
                socket: t.socket.clone(),
            },
        );
        let throttled = g.session.config().release_policy == ReleasePolicy::Implicit;
        let me = self.clone();
        let reader = t.reader;
        let r = thread::Builder::new()
            .name("ft-session-reader".into())
            .spawn(move || me.read_loop(transport, reader));
        let me = self.clone();
        let writer = t.writer;
        let shutdown_w = shutdown.clone();
        let w = thread::Builder::new()
            .name("ft-session-writer".into())
            .spawn(move || me.write_loop(transport, rx, writer, shutdown_w, queued, throttled));
        if w.is_ok() {
            g.writers += 1;
        }
        if r.is_err() || w.is_err() {
            warn!("cannot spawn transport threads; dropping the transport");
            shutdown(Shutdown::Both);
        }
    }

    fn lost(self: &Arc<Self>, transport: TransportId) {
        let mut g = self.lock();
        // Ignored by the core if this transport is no longer current.
        g.session
            .handle_input(Instant::now(), Input::TransportLost { transport });
        self.pump(&mut g);
    }

    fn read_loop(self: Arc<Self>, transport: TransportId, mut reader: Box<dyn Read + Send>) {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            {
                // Backpressure: while the application is behind, leave the
                // bytes in the kernel so TCP slows the peer down.
                let mut g = self.lock();
                loop {
                    if g.session.is_finished() || !g.links.contains_key(&transport) {
                        return;
                    }
                    // A handshake reply is read whatever the application
                    // does: a paused reader must not stall a resume until
                    // its handshake times out (the overshoot is one chunk).
                    if g.session.wants_input() || g.session.state() != SessionState::Established {
                        break;
                    }
                    g = self.wait(g, None);
                }
            }
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut g = self.lock();
                    g.session.handle_input(
                        Instant::now(),
                        Input::Received {
                            transport,
                            data: &buf[..n],
                        },
                    );
                    self.pump(&mut g);
                }
                Err(e) if retryable(&e) => continue,
                Err(e) => {
                    debug!(transport, error = %e, "transport read failed");
                    break;
                }
            }
        }
        self.lost(transport);
    }

    fn write_loop(
        self: Arc<Self>,
        transport: TransportId,
        rx: Receiver<Transmit>,
        mut writer: Box<dyn Write + Send>,
        shutdown: ShutdownFn,
        queued: Arc<AtomicUsize>,
        throttled: bool,
    ) {
        let result = (|| -> io::Result<()> {
            loop {
                let t = match rx.try_recv() {
                    Ok(t) => t,
                    Err(TryRecvError::Empty) => {
                        // Buffered transports (TLS) must not sit on bytes while idle.
                        writer.flush()?;
                        match rx.recv() {
                            Ok(t) => t,
                            Err(_) => return writer.flush(),
                        }
                    }
                    Err(TryRecvError::Disconnected) => return writer.flush(),
                };
                write_transmit(&mut writer, &t)?;
                if queued.fetch_sub(1, Ordering::AcqRel) == 1 {
                    if throttled {
                        // The pump stopped polling while this frame was out
                        // (`Inner::writer_full`): fetch the next one.
                        let mut g = self.lock();
                        self.pump(&mut g);
                    } else if self.flushers.load(Ordering::Acquire) > 0 {
                        // A `flush` waits for this queue to empty.
                        writer.flush()?;
                        let g = self.lock();
                        self.notify(&g);
                    }
                }
            }
        })();
        match result {
            // The link was dropped: its last frames are out, say so to the peer.
            Ok(()) => shutdown(Shutdown::Write),
            Err(e) => {
                debug!(transport, error = %e, "transport write failed");
                shutdown(Shutdown::Both);
                self.lost(transport);
            }
        }
        let mut g = self.lock();
        g.writers -= 1;
        self.notify(&g);
        drop(g);
        // The driver may wait for the last writer (final flush).
        self.driver_cond.notify_one();
    }

    /// The driver: feeds the core's timers until the session ends, then lets
    /// final frames flush and shuts every transport down.
    fn drive(self: Arc<Self>) {
        let mut g = self.lock();
        loop {
            if g.session.is_finished() {
                break;
            }
            let now = Instant::now();
            if g.linger_deadline.is_some_and(|d| now >= d) {
                // Dropped without a completed close: give up on the peer.
                warn!(
                    side = g.side,
                    "close did not complete in time after drop; aborting"
                );
                g.session.abort(0);
                self.pump(&mut g);
                continue;
            }
            if g.linger_deadline.is_some() {
                // Dropped: nobody will read, and unread input would stall
                // the peer's end of stream that the close waits for.
                let mut sink = [0u8; 4096];
                let mut drained = false;
                while let Ok(n) = g.session.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                    drained = true;
                }
                if drained {
                    self.pump(&mut g);
                }
            }
            let timeout = g.session.poll_timeout();
            if timeout.is_some_and(|t| now >= t) {
                g.session.handle_input(now, Input::Timeout);
                self.pump(&mut g);
                continue;
            }
            let wake = match (timeout, g.linger_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            g = self.driver_wait(g, wake);
        }
        let grace = Instant::now() + FINAL_FLUSH_GRACE;
        while g.writers > 0 && Instant::now() < grace {
            g = self.driver_wait(g, Some(grace));
        }
        for link in g.links.drain() {
            (link.1.shutdown)(Shutdown::Both);
        }
        for s in g.closing.drain(..) {
            s(Shutdown::Both);
        }
        self.cond.notify_all();
    }
}

fn wait_on<'a>(
    cond: &Condvar,
    g: MutexGuard<'a, Inner>,
    deadline: Option<Instant>,
) -> MutexGuard<'a, Inner> {
    match deadline {
        None => cond.wait(g).unwrap_or_else(PoisonError::into_inner),
        Some(d) => {
            let dur = d.saturating_duration_since(Instant::now());
            cond.wait_timeout(g, dur)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        }
    }
}

pub(crate) fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes one transmit whole: head then payload, vectored where the writer
/// supports it.
fn write_transmit(w: &mut dyn Write, t: &Transmit) -> io::Result<()> {
    let head = t.head.as_slice();
    let payload = &t.payload[..];
    let total = head.len() + payload.len();
    let mut off = 0;
    while off < total {
        let r = if off < head.len() {
            w.write_vectored(&[IoSlice::new(&head[off..]), IoSlice::new(payload)])
        } else {
            w.write(&payload[off - head.len()..])
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if retryable(&e) => {
                // A transport with a write timeout (e.g. `Locked`): try again.
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A session id for log lines, empty while unknown.
struct Sid(Option<SessionId>);

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(id) => std::fmt::Display::fmt(id, f),
            None => Ok(()),
        }
    }
}

fn on_event(g: &mut Inner, now: Instant, e: Event) {
    if let Some(link) = &g.server {
        link.routing.report(link.handle, &g.session, &e, now);
    }
    let side = g.side;
    let id = g.session.session_id();
    // Formatted only if a log line is emitted: most events (readable,
    // writable) come once per read or write and log nothing.
    let sid = Sid(id);
    match e {
        Event::Established { session_id } => {
            info!(side, session = %session_id, "session established");
        }
        Event::TransportLost { transport } => {
            info!(side, session = %sid, transport, "transport lost");
        }
        Event::Parked => {
            info!(side, session = %sid, retained = g.session.retained(), "session parked");
        }
        Event::Resumed {
            attempt,
            local_received,
            peer_received,
        } => {
            info!(
                side,
                session = %sid,
                attempt,
                local_received,
                peer_received,
                "session resumed"
            );
        }
        Event::Retransmit { from, to } => {
            debug!(side, session = %sid, from, to, "retransmitting");
        }
        Event::Finished(outcome) => match &outcome {
            Ok(()) => info!(side, session = %sid, "session closed"),
            Err(SessionError::Expired) => warn!(side, session = %sid, "session expired"),
            Err(e) => warn!(side, session = %sid, error = %e, "session failed"),
        },
        _ => {}
    }
}
