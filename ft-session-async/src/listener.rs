//! The server: accepts transports, runs each handshake concurrently under its
//! deadline, hands fresh sessions to the application and routes resumes to
//! parked sessions without the application's involvement.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use ft_session_core::{
    Admission, Config, ConnectionSet, HandshakeReader, HandshakeStep, Session, SessionError,
    SessionId, SessionState, SetCounts, SetEvent, TransportId,
};

use crate::driver::{Driver, ServerLink};
use crate::entropy::OsEntropy;
use crate::stream::{lock, Delivery, FtStream, Handle};
use crate::{Accept, Accepted, BoxTransport, Runtime, Timer};

/// The handshake reader never needs more than one client hello per read.
const HANDSHAKE_READ: usize = 4096;

struct Registry {
    set: ConnectionSet,
    routes: HashMap<SessionId, Arc<Handle>>,
    entropy: OsEntropy,
    next_transport: TransportId,
    /// The expiry task waits here for a new deadline.
    timer_waker: Option<Waker>,
    closed: bool,
}

impl Registry {
    /// Acts on the set's evictions (expiries end by the session's own timer).
    fn dispatch_events(&mut self) {
        while let Some(e) = self.set.poll_event() {
            match e {
                SetEvent::Evicted(id) => {
                    tracing::warn!(session_id = %id, "parked session evicted by limits");
                    if let Some(h) = self.routes.get(&id) {
                        let mut c = lock(&h.control);
                        c.evicted = true;
                        if let Some(w) = c.driver.as_ref() {
                            w.wake_by_ref();
                        }
                    }
                }
                SetEvent::Expired(id) => {
                    tracing::info!(session_id = %id, "parked session expired in the registry");
                }
            }
        }
    }

    fn wake_timer(&mut self) {
        if let Some(w) = self.timer_waker.take() {
            w.wake();
        }
    }
}

/// A shared handle on the registry, for the session drivers.
#[derive(Clone)]
pub(crate) struct RegistryRef(Arc<Mutex<Registry>>);

impl RegistryRef {
    /// The session lost its transport. Called under the session's lock, so a
    /// resume cannot slip between the check and the call.
    pub fn parked(&self, handle: &Handle, session: &Session, _id: SessionId, now: Instant) {
        if session.state() != SessionState::Parked {
            // Already resumed: the admission re-attached it in the set.
            return;
        }
        let mut reg = lock(&self.0);
        if lock(&handle.control).delivery.is_some() {
            // A resume was admitted (re-attaching it) and waits for the driver.
            return;
        }
        reg.set.parked(now, session);
        reg.dispatch_events();
        reg.wake_timer();
    }

    /// The session ended: the set remembers a clean close, forgets a failure.
    pub fn finished(&self, id: SessionId, outcome: &Result<(), SessionError>, now: Instant) {
        let mut reg = lock(&self.0);
        reg.set.finished(now, id, outcome);
        reg.routes.remove(&id);
        reg.dispatch_events();
        reg.wake_timer();
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
    registry: RegistryRef,
    queue: Mutex<AcceptQueue>,
    config: Config,
}

/// Counts of the listener's registry, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// The connection set's counts (attached, parked, parked bytes, expired...).
    pub set: SetCounts,
    /// Sessions whose driver is still running (their memory is held).
    pub sessions: usize,
}

/// A server of fault-tolerant sessions over transports from an [`Accept`]
/// source. Dropping it stops accepting; running sessions go on, but can no
/// longer be resumed.
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
    /// the sessions' settings.
    pub fn new<A: Accept>(rt: R, config: Config, source: A) -> Self {
        let registry = RegistryRef(Arc::new(Mutex::new(Registry {
            set: ConnectionSet::new(config.clone()),
            routes: HashMap::new(),
            entropy: OsEntropy,
            next_transport: 0,
            timer_waker: None,
            closed: false,
        })));
        let shared = Arc::new(ListenerShared {
            registry,
            queue: Mutex::new(AcceptQueue {
                ready: VecDeque::new(),
                waiters: Vec::new(),
                loop_waker: None,
                closed: false,
                error: None,
            }),
            config,
        });
        rt.spawn(accept_loop(rt.clone(), shared.clone(), source));
        rt.spawn(expiry_loop(rt.clone(), shared.registry.clone()));
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

    /// Counts of the registry and of running sessions.
    pub fn stats(&self) -> ListenerStats {
        let reg = lock(&self.shared.registry.0);
        ListenerStats {
            set: reg.set.counts(),
            sessions: reg.routes.len(),
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
        let mut reg = lock(&self.shared.registry.0);
        reg.closed = true;
        reg.wake_timer();
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
                rt.spawn(handshake(rt.clone(), shared.clone(), a));
            }
            Poll::Ready(Some(Err(e))) => {
                // Typically out of file descriptors: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                backoff = Some(rt.timer(rt.now() + std::time::Duration::from_millis(50)));
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

/// Reads a client's first message under the handshake deadline and admits it.
async fn handshake<R: Runtime>(rt: R, shared: Arc<ListenerShared>, accepted: Accepted) {
    let Accepted {
        mut transport,
        info,
        peer,
        socket,
    } = accepted;
    // The driver that will write to this transport may hold one frame.
    let info = info.with_writer_hold(&shared.config);
    let mut reader = HandshakeReader::new(rt.now(), &shared.config);
    let mut timer = rt.timer(reader.deadline());
    let mut buf = vec![0u8; HANDSHAKE_READ];
    let (hello, leftover) = loop {
        let read = poll_fn(|cx| {
            if timer.poll_expired(cx).is_ready() {
                return Poll::Ready(None);
            }
            Pin::new(&mut *transport).poll_read(cx, &mut buf).map(Some)
        })
        .await;
        let n = match read {
            None => {
                tracing::debug!(?peer, "handshake timed out");
                return;
            }
            Some(Ok(0)) | Some(Err(_)) => {
                tracing::debug!(?peer, "transport closed during handshake");
                return;
            }
            Some(Ok(n)) => n,
        };
        match reader.feed(&buf[..n]) {
            HandshakeStep::NeedMore => continue,
            HandshakeStep::Hello { hello, consumed } => {
                let rest = buf.get(consumed..n).unwrap_or(&[]);
                break (hello, Bytes::copy_from_slice(rest));
            }
            HandshakeStep::Reject { reply, error } => {
                tracing::debug!(?peer, %error, "handshake rejected");
                if let Some(reply) = reply {
                    write_and_close(&mut transport, &reply).await;
                }
                return;
            }
        }
    };

    let now = rt.now();
    let mut transport = Some(transport);
    // The registry guard must not live across an await (it is not Send).
    let refused = admit(
        &rt,
        &shared,
        now,
        hello,
        info,
        (peer, socket),
        &mut transport,
        leftover,
    );
    if let (Some(reply), Some(mut t)) = (refused, transport) {
        write_and_close(&mut t, &reply).await;
    }
}

/// Admits a hello: starts a fresh session, routes a resume, or returns the
/// reply of a refusal (the transport is then left in `transport`).
#[allow(clippy::too_many_arguments)]
fn admit<R: Runtime>(
    rt: &R,
    shared: &Arc<ListenerShared>,
    now: Instant,
    hello: ft_session_core::ClientHello,
    info: ft_session_core::TransportInfo,
    (peer, socket): (Option<SocketAddr>, Option<crate::SocketRef>),
    transport: &mut Option<BoxTransport>,
    leftover: Bytes,
) -> Option<Bytes> {
    let mut reg = lock(&shared.registry.0);
    reg.next_transport += 1;
    let tid = reg.next_transport;
    let Registry { set, entropy, .. } = &mut *reg;
    match set.admit(now, tid, info, hello, entropy) {
        Admission::Fresh(session) => {
            let (Some(id), Some(t)) = (session.session_id(), transport.take()) else {
                return None;
            };
            let handle = Handle::new(*session);
            // Unreachable by anyone else yet, so taking its lock under the
            // registry's cannot deadlock.
            lock(&handle.shared).set_socket(socket, peer);
            reg.routes.insert(id, handle.clone());
            reg.dispatch_events();
            drop(reg);
            tracing::info!(session_id = %id, ?peer, "session accepted");
            let link = ServerLink {
                registry: shared.registry.clone(),
                id,
            };
            rt.spawn(Driver::server(
                rt.clone(),
                handle.clone(),
                (tid, t),
                leftover,
                link,
            ));
            let mut q = lock(&shared.queue);
            q.ready.push_back((FtStream::new(handle), peer));
            for w in q.waiters.drain(..) {
                w.wake();
            }
            None
        }
        Admission::Resume { session_id, resume } => {
            // Delivered under the registry lock, so a driver deciding whether
            // its session is parked sees either the delivery or the admission.
            match (reg.routes.get(&session_id), transport.take()) {
                (Some(h), Some(t)) => {
                    tracing::debug!(%session_id, attempt = resume.attempt(), ?peer, "routing resume");
                    let mut c = lock(&h.control);
                    c.delivery = Some(Delivery {
                        transport: t,
                        id: tid,
                        resume,
                        info,
                        leftover,
                        peer,
                        socket,
                    });
                    if let Some(w) = c.driver.as_ref() {
                        w.wake_by_ref();
                    }
                }
                _ => {
                    tracing::debug!(%session_id, "resume for a session without a driver");
                }
            }
            reg.dispatch_events();
            None
        }
        Admission::Reject { reply, code } => {
            reg.dispatch_events();
            tracing::info!(?code, ?peer, "handshake refused");
            Some(reply)
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

/// Runs the connection set's timers (expiries of parked sessions and of
/// closed-session tombstones) until the listener is dropped.
async fn expiry_loop<R: Runtime>(rt: R, registry: RegistryRef) {
    let mut timer: Option<R::Timer> = None;
    poll_fn(|cx| loop {
        let deadline = {
            let mut reg = lock(&registry.0);
            if reg.closed {
                return Poll::Ready(());
            }
            reg.set.handle_timeout(rt.now());
            reg.dispatch_events();
            reg.timer_waker = Some(cx.waker().clone());
            reg.set.poll_timeout()
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
