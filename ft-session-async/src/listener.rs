//! The server: accepts transports and gives them to the core's sans-IO
//! [`Endpoint`], which reads each client's first message under its deadline,
//! bounds the pending handshakes, starts sessions and routes resumes.
//!
//! The endpoint sits behind one lock, taken only to feed it handshake bytes,
//! timeouts and session events and to sort its outputs; never across I/O,
//! and never while taking a session's lock. Each new session is taken out of
//! the endpoint and driven by its own task (`crate::driver`), which reports
//! the session's events back by handle; the endpoint routes resumes and
//! evictions to it as [`Delivery`]s. So sessions never wait on each other.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ft_session_core::{
    Config, Delivery, Endpoint, EndpointInput, EndpointOutput, EndpointStats, Entropy, Event,
    Session, SessionHandle, TransportId,
};

use crate::driver::{Driver, Routing, ServerLink};
use crate::entropy::OsEntropy;
use crate::stream::{lock, FtStream, Handle, Routed};
use crate::{Accept, Accepted, BoxTransport, Runtime, Timer};

/// The handshake reader never needs more than one client hello per read.
const HANDSHAKE_READ: usize = 4096;
/// Pause after a failed accept (typically out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the endpoint decided for a transport waiting for its first message.
enum Fate {
    /// Close it, after writing the reply (a REJECT) if there is one.
    Close,
    /// It carries this new session, counted as running from here on.
    Fresh(SessionHandle, Arc<Handle>, RunningGuard),
    /// It resumes this session.
    Resume(Arc<Handle>, Delivery),
}

/// A transport waiting for its first message, as its handshake task sees it.
#[derive(Default)]
struct Pending {
    waker: Option<Waker>,
    reply: Vec<u8>,
    fate: Option<Fate>,
}

/// The listener's session drivers still running, for `drain` (a leaf lock).
#[derive(Default)]
struct Running {
    state: Mutex<RunningState>,
}

#[derive(Default)]
struct RunningState {
    count: usize,
    /// `drain` waits here for `count` to reach 0.
    waiters: Vec<Waker>,
}

/// Held by a session from its admission until its driver task ends (or the
/// runtime drops it): while one exists, the listener is not drained.
struct RunningGuard(Arc<Running>);

impl RunningGuard {
    fn new(running: &Arc<Running>) -> RunningGuard {
        lock(&running.state).count += 1;
        RunningGuard(running.clone())
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let waiters = {
            let mut st = lock(&self.0.state);
            st.count -= 1;
            if st.count == 0 {
                std::mem::take(&mut st.waiters)
            } else {
                Vec::new()
            }
        };
        for w in waiters {
            w.wake();
        }
    }
}

/// The endpoint and what the listener's tasks need to act on its outputs.
struct Server {
    ep: Endpoint,
    pending: HashMap<TransportId, Pending>,
    /// Sessions taken out of the endpoint, until they finish.
    sessions: HashMap<SessionHandle, Arc<Handle>>,
    next_transport: TransportId,
    /// The timer task, and the deadline it sleeps until.
    timer: Option<Waker>,
    armed: Option<Instant>,
    closed: bool,
    running: Arc<Running>,
}

impl Server {
    fn decide(&mut self, transport: TransportId, fate: Fate) {
        if let Some(p) = self.pending.get_mut(&transport) {
            p.fate.get_or_insert(fate);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }

    /// Sorts the endpoint's outputs to the tasks that act on them.
    fn dispatch(&mut self) {
        while let Some(out) = self.ep.poll_output() {
            match out {
                // Every session is taken, so only handshake replies come here.
                EndpointOutput::Transmit(t) => {
                    if let Some(p) = self.pending.get_mut(&t.transport) {
                        t.write_to(&mut p.reply);
                    }
                }
                EndpointOutput::DropTransport { transport } => self.decide(transport, Fate::Close),
                EndpointOutput::Accepted { session, transport } => {
                    let Some(s) = self.ep.take_session(session) else {
                        continue;
                    };
                    let handle = Handle::new(s);
                    self.sessions.insert(session, handle.clone());
                    let running = RunningGuard::new(&self.running);
                    self.decide(transport, Fate::Fresh(session, handle, running));
                }
                EndpointOutput::Deliver { session, delivery } => {
                    let handle = self.sessions.get(&session).cloned();
                    match (delivery.transport(), handle) {
                        (Some(t), Some(h)) => self.decide(t, Fate::Resume(h, delivery)),
                        (Some(t), None) => self.decide(t, Fate::Close),
                        (None, Some(h)) => {
                            let mut c = lock(&h.control);
                            c.routed.push_back(Routed {
                                transport: None,
                                delivery,
                                peer: None,
                                socket: None,
                            });
                            if let Some(w) = c.driver.as_ref() {
                                w.wake_by_ref();
                            }
                        }
                        (None, None) => {}
                    }
                }
                EndpointOutput::Event { .. } => {}
                other => tracing::warn!(?other, "unexpected endpoint output"),
            }
        }
        let next = self.ep.poll_timeout();
        if next.is_some_and(|n| self.armed.map_or(true, |a| n < a)) {
            if let Some(w) = self.timer.take() {
                w.wake();
            }
        }
    }
}

struct AcceptQueue {
    ready: VecDeque<(FtStream, Option<SocketAddr>)>,
    waiters: Vec<Waker>,
    /// The accept loop waits here to learn that the listener was dropped.
    loop_waker: Option<Waker>,
    closed: bool,
    /// `stop_accepting` was called: new sessions are closed, not queued.
    stopped: bool,
}

struct ListenerShared {
    server: Mutex<Server>,
    queue: Mutex<AcceptQueue>,
    config: Config,
    running: Arc<Running>,
}

impl Routing for ListenerShared {
    fn report(&self, handle: SessionHandle, session: &Session, event: &Event, now: Instant) {
        // Only these change the endpoint: data events take no lock.
        if !matches!(event, Event::Parked | Event::Finished(_)) {
            return;
        }
        let mut s = lock(&self.server);
        s.ep.handle_session_event(now, handle, session, event);
        if let Event::Finished(_) = event {
            s.sessions.remove(&handle);
        }
        s.dispatch();
    }
}

/// Counts of the listener, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Everything the endpoint counts: the connection set (`set.attached`,
    /// `set.parked`, parked bytes, expiries...), the `sessions` it routes
    /// (until they finish), pending, refused and expired handshakes.
    pub endpoint: EndpointStats,
    /// Session tasks still running: a session counts from its admission
    /// until its driver ended (a finished session's driver may still be
    /// writing its last frames). [`Listener::drain`] waits for 0.
    pub running: usize,
    /// False once [`Listener::stop_accepting`] (or `drain`) was called.
    pub accepting: bool,
}

/// A server of fault-tolerant sessions over transports from an [`Accept`]
/// source.
///
/// [`Listener::drain`] stops admitting new sessions and waits until the
/// existing ones (attached or parked) have ended, while their resumes are
/// still served. Dropping the listener instead stops accepting transports at
/// once (a TCP source releases its port) and closes those still in their
/// handshake: running sessions go on until they end, but a parked one can no
/// longer be resumed and expires after `max_reconnect_time`.
pub struct Listener<R: Runtime> {
    shared: Arc<ListenerShared>,
    rt: R,
}

impl<R: Runtime> std::fmt::Debug for Listener<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<R: Runtime> Listener<R> {
    /// Starts accepting from `source` on `rt`; `config` sets the limits and
    /// the sessions' settings. An invalid `config` fails here with
    /// `InvalidInput` ([`SessionError::Config`](ft_session_core::SessionError::Config)),
    /// before anything is spawned.
    pub fn new<A: Accept>(rt: R, config: Config, source: A) -> io::Result<Self> {
        let mut seed = [0u8; 32];
        OsEntropy.fill(&mut seed);
        let ep = Endpoint::new(config.clone(), rt.now(), seed)?;
        let running = Arc::new(Running::default());
        let shared = Arc::new(ListenerShared {
            server: Mutex::new(Server {
                ep,
                pending: HashMap::new(),
                sessions: HashMap::new(),
                next_transport: 0,
                timer: None,
                armed: None,
                closed: false,
                running: running.clone(),
            }),
            queue: Mutex::new(AcceptQueue {
                ready: VecDeque::new(),
                waiters: Vec::new(),
                loop_waker: None,
                closed: false,
                stopped: false,
            }),
            config,
            running,
        });
        rt.spawn(accept_loop(rt.clone(), shared.clone(), source));
        rt.spawn(timer_loop(rt.clone(), shared.clone()));
        Ok(Listener { shared, rt })
    }

    /// The next new session (resumes never show up here), with the peer's address.
    pub async fn accept(&self) -> io::Result<(FtStream, Option<SocketAddr>)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next new session.
    pub fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(FtStream, Option<SocketAddr>)>> {
        let mut q = lock(&self.shared.queue);
        if let Some(s) = q.ready.pop_front() {
            return Poll::Ready(Ok(s));
        }
        if q.stopped {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener stopped accepting new sessions (drain)",
            )));
        }
        if q.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "listener source exhausted",
            )));
        }
        if !q.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            q.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Counts of the endpoint and of running sessions.
    pub fn stats(&self) -> ListenerStats {
        let (endpoint, accepting) = {
            let s = lock(&self.shared.server);
            (s.ep.stats(), s.ep.is_accepting())
        };
        ListenerStats {
            endpoint,
            running: lock(&self.shared.running.state).count,
            accepting,
        }
    }

    /// Stops admitting new sessions, for a server that is about to stop:
    /// a fresh client is refused with REJECT `BUSY` (it retries with backoff
    /// within its `connect_timeout`, so a load balancer can send it to
    /// another node), while resumes are still served, so the sessions
    /// attached or parked go on until they end. From now on
    /// [`accept`](Self::accept) fails with `NotConnected`, and sessions
    /// established but not yet returned by it are closed gracefully.
    /// Idempotent; the listener keeps its transport source.
    pub fn stop_accepting(&self) {
        lock(&self.shared.server).ep.set_accepting(false);
        let (queued, waiters) = {
            let mut q = lock(&self.shared.queue);
            q.stopped = true;
            (std::mem::take(&mut q.ready), std::mem::take(&mut q.waiters))
        };
        // Dropping a stream closes its session in the background.
        drop(queued);
        for w in waiters {
            w.wake();
        }
    }

    /// [`stop_accepting`](Self::stop_accepting), then waits until every
    /// session of this listener has ended and its task finished (its last
    /// frames written): a parked session can still resume and finish
    /// meanwhile. Not bounded: see [`drain_timeout`](Self::drain_timeout).
    /// Cancel-safe: the listener stays stopped; a later call waits again.
    pub async fn drain(&self) {
        self.stop_accepting();
        poll_fn(|cx| self.poll_drained(cx)).await
    }

    /// [`drain`](Self::drain), bounded: `TimedOut` if sessions still run
    /// after `timeout` (they go on; [`stats`](Self::stats) counts them, and
    /// dropping the listener stops serving their resumes).
    pub async fn drain_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stop_accepting();
        let mut timer = self.rt.timer(self.rt.now() + timeout);
        poll_fn(|cx| {
            if self.poll_drained(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            match timer.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "sessions still running after the drain timeout",
                ))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Ready once no session of this listener runs.
    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = lock(&self.shared.running.state);
        if st.count == 0 {
            return Poll::Ready(());
        }
        if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The configuration given to new sessions.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}

impl<R: Runtime> Drop for Listener<R> {
    fn drop(&mut self) {
        let w = {
            let mut q = lock(&self.shared.queue);
            q.closed = true;
            q.loop_waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
        let mut s = lock(&self.shared.server);
        s.closed = true;
        let pending: Vec<TransportId> = s.pending.keys().copied().collect();
        for t in pending {
            s.decide(t, Fate::Close);
        }
        if let Some(w) = s.timer.take() {
            w.wake();
        }
    }
}

/// Accepts transports and starts a handshake task for each, until the
/// listener is dropped or the source ends.
async fn accept_loop<R: Runtime, A: Accept>(rt: R, shared: Arc<ListenerShared>, mut source: A) {
    let mut backoff: Option<R::Timer> = None;
    poll_fn(|cx| loop {
        {
            let mut q = lock(&shared.queue);
            if q.closed {
                return Poll::Ready(());
            }
            q.loop_waker = Some(cx.waker().clone());
        }
        if let Some(t) = backoff.as_mut() {
            if t.poll_expired(cx).is_pending() {
                return Poll::Pending;
            }
            backoff = None;
        }
        match source.poll_accept(cx) {
            Poll::Ready(Some(Ok(a))) => {
                // Polled once here first: a HELLO already in the socket is
                // answered (the session's ACCEPT written) before any task
                // is spawned; only a handshake that must wait gets its own.
                let mut hs = Box::pin(handshake(rt.clone(), shared.clone(), a));
                if hs.as_mut().poll(cx).is_pending() {
                    rt.spawn(hs);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "accept failed");
                backoff = Some(rt.timer(rt.now() + ACCEPT_BACKOFF));
            }
            Poll::Ready(None) => {
                let mut q = lock(&shared.queue);
                q.closed = true;
                for w in q.waiters.drain(..) {
                    w.wake();
                }
                return Poll::Ready(());
            }
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Opens a transport in the endpoint and feeds it its first bytes until the
/// endpoint decides, then acts on the decision: a new session gets a driver
/// and goes to the accept queue, a resume goes with its transport to its
/// session's driver.
async fn handshake<R: Runtime>(rt: R, shared: Arc<ListenerShared>, accepted: Accepted) {
    let Accepted {
        transport: mut io,
        info,
        peer,
        socket,
    } = accepted;
    // Over the pending-handshake limit, the endpoint refuses it at once.
    let t = {
        let mut s = lock(&shared.server);
        s.next_transport += 1;
        let t = s.next_transport;
        s.pending.insert(t, Pending::default());
        // No writer hold: the session's driver reports what the transport
        // accepted (batched contract), so its queued frames stay retained.
        let opened = EndpointInput::TransportOpened { transport: t, info };
        s.ep.handle_input(rt.now(), opened);
        s.dispatch();
        t
    };
    let mut buf = vec![0u8; HANDSHAKE_READ];
    let decided = poll_fn(|cx| loop {
        {
            let mut s = lock(&shared.server);
            let Some(p) = s.pending.get_mut(&t) else {
                return Poll::Ready(None);
            };
            if let Some(fate) = p.fate.take() {
                let reply = std::mem::take(&mut p.reply);
                s.pending.remove(&t);
                return Poll::Ready(Some((fate, reply)));
            }
            p.waker = Some(cx.waker().clone());
        }
        let input = match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(n)) if n > 0 => EndpointInput::Received {
                transport: t,
                data: &buf[..n],
            },
            Poll::Ready(_) => EndpointInput::TransportLost { transport: t },
        };
        let lost = matches!(input, EndpointInput::TransportLost { .. });
        let mut s = lock(&shared.server);
        s.ep.handle_input(rt.now(), input);
        s.dispatch();
        if lost {
            tracing::debug!(?peer, "transport closed during handshake");
            s.pending.remove(&t);
            return Poll::Ready(None);
        }
    })
    .await;
    let Some((fate, reply)) = decided else {
        return;
    };
    match fate {
        Fate::Close => {
            tracing::debug!(?peer, replied = !reply.is_empty(), "handshake refused");
            write_and_close(&mut io, &reply).await;
        }
        Fate::Fresh(session, handle, running) => {
            // Not yet reachable by the application or a driver.
            lock(&handle.shared).set_socket(socket, peer);
            tracing::info!(session_id = ?lock(&handle.shared).session.session_id(), ?peer, "session accepted");
            let link = ServerLink {
                routing: shared.clone(),
                handle: session,
            };
            let mut driver = Driver::server(rt.clone(), handle.clone(), (t, io), link);
            // This task becomes the session's driver (no spawn between the
            // HELLO and the ACCEPT); its first pass writes the ACCEPT
            // before the application hears of the session.
            let first = poll_fn(|cx| Poll::Ready(Pin::new(&mut driver).poll(cx))).await;
            let stream = FtStream::new(handle);
            {
                let mut q = lock(&shared.queue);
                if q.stopped {
                    // Admitted just before the listener stopped accepting:
                    // closed in the background, as the queued ones were.
                    drop(q);
                    drop(stream);
                } else {
                    q.ready.push_back((stream, peer));
                    for w in q.waiters.drain(..) {
                        w.wake();
                    }
                }
            }
            if first.is_pending() {
                driver.await;
            }
            drop(running);
        }
        Fate::Resume(handle, delivery) => {
            tracing::debug!(?peer, "routing resume");
            let mut c = lock(&handle.control);
            c.routed.push_back(Routed {
                transport: Some((t, io)),
                delivery,
                peer,
                socket,
            });
            if let Some(w) = c.driver.as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// Writes a reply and closes the transport, best effort: the peer may be gone.
async fn write_and_close(t: &mut BoxTransport, mut data: &[u8]) {
    while !data.is_empty() {
        match poll_fn(|cx| Pin::new(&mut **t).poll_write(cx, data)).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data = &data[n..],
        }
    }
    let _ = poll_fn(|cx| Pin::new(&mut **t).poll_flush(cx)).await;
    let _ = poll_fn(|cx| Pin::new(&mut **t).poll_close(cx)).await;
}

/// Runs the endpoint's timers (handshake deadlines, expiries of parked
/// sessions and of tombstones) until the listener is dropped.
async fn timer_loop<R: Runtime>(rt: R, shared: Arc<ListenerShared>) {
    let mut timer: Option<R::Timer> = None;
    poll_fn(|cx| loop {
        let deadline = {
            let mut s = lock(&shared.server);
            if s.closed {
                return Poll::Ready(());
            }
            let now = rt.now();
            if s.ep.poll_timeout().is_some_and(|d| d <= now) {
                s.ep.handle_input(now, EndpointInput::Timeout);
                s.dispatch();
            }
            s.timer = Some(cx.waker().clone());
            s.armed = s.ep.poll_timeout();
            s.armed
        };
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        let t = timer.get_or_insert_with(|| rt.timer(deadline));
        t.reset(deadline);
        if t.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
    })
    .await
}
