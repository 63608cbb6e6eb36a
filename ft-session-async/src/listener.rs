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
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ft_session_core::{
    Config, Delivery, Endpoint, EndpointInput, EndpointOutput, EndpointStats, Entropy, Event,
    Session, SessionHandle, SetCounts, TransportId,
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
    /// It carries this new session.
    Fresh(SessionHandle, Arc<Handle>),
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
                    self.decide(transport, Fate::Fresh(session, handle));
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
    error: Option<io::Error>,
}

struct ListenerShared {
    server: Mutex<Server>,
    queue: Mutex<AcceptQueue>,
    config: Config,
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

/// Counts of the listener's endpoint, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// The connection set's counts (attached, parked, parked bytes, expired...).
    pub set: SetCounts,
    /// Sessions whose driver is still running (their memory is held).
    pub sessions: usize,
    /// Everything the endpoint counts (pending, refused and expired handshakes...).
    pub endpoint: EndpointStats,
}

/// A server of fault-tolerant sessions over transports from an [`Accept`]
/// source. Dropping it stops accepting and closes transports still in their
/// handshake; running sessions go on, but can no longer be resumed.
pub struct Listener<R: Runtime> {
    shared: Arc<ListenerShared>,
    _rt: R,
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
    /// the sessions' settings. An invalid `config` leaves the listener closed:
    /// [`accept`](Self::accept) returns why.
    pub fn new<A: Accept>(rt: R, config: Config, source: A) -> Self {
        let mut seed = [0u8; 32];
        OsEntropy.fill(&mut seed);
        let (ep, error) = match Endpoint::new(config.clone(), rt.now(), seed) {
            Ok(ep) => (ep, None),
            // A closed listener never feeds its endpoint: a default one stands in.
            Err(e) => match Endpoint::new(Config::default(), rt.now(), seed) {
                Ok(ep) => (ep, Some(e)),
                Err(_) => unreachable!("the default configuration validates"),
            },
        };
        let shared = Arc::new(ListenerShared {
            server: Mutex::new(Server {
                ep,
                pending: HashMap::new(),
                sessions: HashMap::new(),
                next_transport: 0,
                timer: None,
                armed: None,
                closed: error.is_some(),
            }),
            queue: Mutex::new(AcceptQueue {
                ready: VecDeque::new(),
                waiters: Vec::new(),
                loop_waker: None,
                closed: error.is_some(),
                error: error.map(io::Error::from),
            }),
            config,
        });
        if !lock(&shared.queue).closed {
            rt.spawn(accept_loop(rt.clone(), shared.clone(), source));
            rt.spawn(timer_loop(rt.clone(), shared.clone()));
        }
        Listener { shared, _rt: rt }
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
        if let Some(e) = q.error.take() {
            return Poll::Ready(Err(e));
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
        let endpoint = lock(&self.shared.server).ep.stats();
        ListenerStats {
            set: endpoint.set,
            sessions: endpoint.sessions,
            endpoint,
        }
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
            Poll::Ready(Some(Ok(a))) => rt.spawn(handshake(rt.clone(), shared.clone(), a)),
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
        // The driver that will write to this transport may hold one frame.
        let info = info.with_writer_hold(&shared.config);
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
        Fate::Fresh(session, handle) => {
            // Not yet reachable by the application or a driver.
            lock(&handle.shared).set_socket(socket, peer);
            tracing::info!(session_id = ?lock(&handle.shared).session.session_id(), ?peer, "session accepted");
            let link = ServerLink {
                routing: shared.clone(),
                handle: session,
            };
            rt.spawn(Driver::server(rt.clone(), handle.clone(), (t, io), link));
            let mut q = lock(&shared.queue);
            q.ready.push_back((FtStream::new(handle), peer));
            for w in q.waiters.drain(..) {
                w.wake();
            }
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
