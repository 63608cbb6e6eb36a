//! The per-session driver: the one task that moves bytes between a session
//! and its transport, dials (client), takes resumed transports (server) and
//! runs the session's timers.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ft_session_core::{
    Event, Input, Output, Session, SessionError, SessionHandle, Transmit, TransportId,
};

use crate::stream::{lock, Handle, Shared};
use crate::{BoxTransport, Connect, ConnectFuture, Runtime, Timer};

/// Read buffer per session: one maximum default frame, so a busy stream
/// needs few reads.
const READ_BUF: usize = 64 * 1024;
/// Steps per poll before yielding, so one busy session cannot starve the
/// other tasks of its worker thread.
const BUDGET: u32 = 128;

/// Where a server session's driver reports its events: the listener's
/// endpoint, which took the session out to this task and still routes its
/// resumes (see `ft_session_core::endpoint`).
pub(crate) trait Routing: Send + Sync {
    /// Called with the session locked, for every event it emits.
    fn report(&self, handle: SessionHandle, session: &Session, event: &Event, now: Instant);
}

/// A server session's link to its listener.
pub(crate) struct ServerLink {
    pub routing: Arc<dyn Routing>,
    pub handle: SessionHandle,
}

/// A `Transmit` being written, and how much of it is out.
struct Pending {
    transmit: Transmit,
    written: usize,
}

/// The driver future of one session. See the module docs.
pub(crate) struct Driver<R: Runtime> {
    rt: R,
    handle: Arc<Handle>,
    transport: Option<(TransportId, BoxTransport)>,
    connecting: Option<(TransportId, ConnectFuture)>,
    writing: Option<Pending>,
    needs_flush: bool,
    buf: Box<[u8]>,
    timer: Option<R::Timer>,
    /// Deadline the timer is armed for. It may be earlier than the session's
    /// next deadline: an early `Timeout` is harmless, and re-arming on every
    /// transmit (heartbeat deadlines move with each one) would cost more.
    armed: Option<Instant>,
    connector: Option<Arc<dyn Connect>>,
    server: Option<ServerLink>,
    /// After the session finished: when to give up writing its last frames
    /// to a peer that does not read.
    linger: Option<Instant>,
}

impl<R: Runtime> Driver<R> {
    pub fn client(rt: R, handle: Arc<Handle>, connector: Arc<dyn Connect>) -> Self {
        Self::new(rt, handle, None, Some(connector), None)
    }

    pub fn server(
        rt: R,
        handle: Arc<Handle>,
        transport: (TransportId, BoxTransport),
        link: ServerLink,
    ) -> Self {
        Self::new(rt, handle, Some(transport), None, Some(link))
    }

    fn new(
        rt: R,
        handle: Arc<Handle>,
        transport: Option<(TransportId, BoxTransport)>,
        connector: Option<Arc<dyn Connect>>,
        server: Option<ServerLink>,
    ) -> Self {
        Driver {
            rt,
            handle,
            transport,
            connecting: None,
            writing: None,
            needs_flush: false,
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            timer: None,
            armed: None,
            linger: None,
            connector,
            server,
        }
    }

    /// Drops the transport `id` if it is the one held (and what was being written to it).
    fn drop_transport(&mut self, id: TransportId) {
        if self.transport.as_ref().is_some_and(|t| t.0 == id) {
            self.transport = None;
            self.needs_flush = false;
        }
        if self
            .writing
            .as_ref()
            .is_some_and(|w| w.transmit.transport == id)
        {
            self.writing = None;
        }
    }

    /// The transport `id` failed: tell the session and let go of it.
    fn lose(&mut self, sh: &mut Shared, now: Instant, id: TransportId) {
        self.drop_transport(id);
        sh.socket = None;
        sh.session
            .handle_input(now, Input::TransportLost { transport: id });
    }

    /// Writes the pending transmit; true if anything moved.
    fn poll_write(&mut self, sh: &mut Shared, cx: &mut Context<'_>, now: Instant) -> bool {
        let Some(w) = self.writing.as_mut() else {
            return false;
        };
        let tid = w.transmit.transport;
        let Some((_, t)) = self.transport.as_mut().filter(|t| t.0 == tid) else {
            // Its transport is gone: the session retransmits after a resume.
            self.writing = None;
            return true;
        };
        let mut moved = false;
        loop {
            let head = w.transmit.head.as_slice();
            let total = head.len() + w.transmit.payload.len();
            if w.written >= total {
                self.writing = None;
                self.needs_flush = true;
                return true;
            }
            let r = if w.written < head.len() {
                let bufs = [
                    IoSlice::new(&head[w.written..]),
                    IoSlice::new(&w.transmit.payload),
                ];
                Pin::new(&mut **t).poll_write_vectored(cx, &bufs)
            } else {
                Pin::new(&mut **t).poll_write(cx, &w.transmit.payload[w.written - head.len()..])
            };
            match r {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    if let Poll::Ready(Err(e)) = &r {
                        tracing::debug!(transport = tid, error = %e, "transport write failed");
                    }
                    self.lose(sh, now, tid);
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    w.written += n;
                    moved = true;
                }
                Poll::Pending => {
                    if sh.session.transport() != Some(tid) {
                        // The session gave this transport up (idle timeout,
                        // half-open resume) while the write was blocked: a
                        // blackholed socket would block it forever.
                        self.drop_transport(tid);
                        return true;
                    }
                    return moved;
                }
            }
        }
    }

    /// Acts on one output (a Transmit only becomes the pending write).
    fn on_output(&mut self, sh: &mut Shared, out: Output) {
        match out {
            Output::Transmit(transmit)
                if self
                    .transport
                    .as_ref()
                    .is_some_and(|t| t.0 == transmit.transport) =>
            {
                self.writing = Some(Pending {
                    transmit,
                    written: 0,
                });
            }
            Output::Connect { transport } => {
                tracing::debug!(transport, "connecting");
                self.connecting = self.connector.as_ref().map(|c| (transport, c.connect()));
            }
            Output::DropTransport { transport } => {
                if self.needs_flush {
                    if let Some((id, t)) = self.transport.as_mut() {
                        if *id == transport {
                            // Best effort: a TLS stream may still hold the last
                            // record (a reject or abort) in its buffer.
                            let waker = noop_waker();
                            let mut cx = Context::from_waker(&waker);
                            let _ = Pin::new(&mut **t).poll_flush(&mut cx);
                        }
                    }
                }
                if self.transport.as_ref().is_some_and(|t| t.0 == transport) {
                    sh.socket = None;
                }
                self.drop_transport(transport);
                if self.connecting.as_ref().is_some_and(|c| c.0 == transport) {
                    self.connecting = None;
                }
            }
            Output::Event(e) => self.on_event(sh, e),
            // A transmit for a transport already gone, or a later core's
            // output this driver does not know: nothing to do.
            _ => {}
        }
    }

    fn on_event(&mut self, sh: &mut Shared, e: Event) {
        if let Some(link) = &self.server {
            link.routing
                .report(link.handle, &sh.session, &e, self.rt.now());
        }
        let role = sh.session.role();
        let id = sh.session.session_id();
        match e {
            Event::Established { session_id } => {
                tracing::info!(?role, %session_id, "session established");
                sh.established = true;
                wake(&mut sh.waiter);
            }
            Event::TransportLost { transport } => {
                tracing::info!(?role, session_id = ?id, transport, "transport lost");
            }
            Event::Parked => {
                tracing::info!(session_id = ?id, retained = sh.session.retained(), "session parked");
            }
            Event::Resumed {
                attempt,
                local_received,
                peer_received,
            } => {
                tracing::info!(
                    ?role,
                    session_id = ?id,
                    attempt,
                    local_received,
                    peer_received,
                    "session resumed"
                );
            }
            Event::Retransmit { from, to } => {
                tracing::debug!(?role, session_id = ?id, from, to, "retransmitting");
            }
            Event::Readable | Event::PeerFinished => wake(&mut sh.reader),
            Event::Writable => wake(&mut sh.writer),
            Event::Finished(outcome) => {
                match &outcome {
                    Ok(()) => tracing::info!(?role, session_id = ?id, "session closed"),
                    Err(SessionError::Expired) => {
                        tracing::warn!(?role, session_id = ?id, "session expired")
                    }
                    Err(e) => tracing::warn!(?role, session_id = ?id, error = %e, "session failed"),
                }
                sh.outcome = Some(outcome);
                wake(&mut sh.reader);
                wake(&mut sh.writer);
                wake(&mut sh.waiter);
            }
            _ => {}
        }
    }

    /// One pass over everything the driver waits for; true if anything moved.
    fn step(&mut self, sh: &mut Shared, cx: &mut Context<'_>) -> bool {
        let now = self.rt.now();
        let mut progress = false;

        // Server: a resume (with its transport) or an eviction routed here
        // by the listener's endpoint.
        loop {
            let Some(routed) = lock(&self.handle.control).routed.pop_front() else {
                break;
            };
            progress = true;
            if let Some((id, t)) = routed.transport {
                // The session may still believe in its old transport (half-open):
                // the core drops it; the new one replaces it here.
                self.transport = Some((id, t));
                self.needs_flush = false;
                sh.set_socket(routed.socket, routed.peer);
            }
            routed.delivery.apply(now, &mut sh.session);
        }

        // The application's bounds (close, drop, shutdown), on this clock.
        if sh.session.is_finished() {
            sh.close_deadline = None;
            sh.shutdown_deadline = None;
        }
        if let Some(b) = sh.close_bound.take() {
            let d = now + b;
            sh.close_deadline = Some(sh.close_deadline.map_or(d, |x| x.min(d)));
        }
        if let Some(b) = sh.shutdown_bound.take() {
            sh.shutdown_deadline = Some(now + b);
        }
        if sh.close_deadline.is_some_and(|d| d <= now) {
            sh.close_deadline = None;
            if !sh.session.is_finished() {
                tracing::warn!(session_id = ?sh.session.session_id(), "close did not complete in time; aborting");
                sh.close_timed_out = true;
                sh.session.abort(0);
                progress = true;
            }
        }
        if sh.shutdown_deadline.is_some_and(|d| d <= now) {
            sh.shutdown_deadline = None;
            sh.shutdown_timed_out = !sh.session.is_fin_acked();
            progress = true;
        }

        // Outputs, each Transmit written whole before the next is polled.
        loop {
            if self.writing.is_some() {
                progress |= self.poll_write(sh, cx, now);
                if self.writing.is_some() {
                    break;
                }
            }
            match sh.session.poll_output() {
                Some(out) => {
                    progress = true;
                    self.on_output(sh, out);
                }
                None => break,
            }
        }
        if self.writing.is_none() && self.needs_flush {
            if let Some((id, t)) = self.transport.as_mut() {
                let id = *id;
                match Pin::new(&mut **t).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.needs_flush = false,
                    Poll::Ready(Err(_)) => {
                        self.lose(sh, now, id);
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
        }

        // Client: a transport being opened.
        if let Some((id, fut)) = self.connecting.as_mut() {
            let id = *id;
            if sh.session.transport() != Some(id) {
                // The attempt timed out in the session.
                self.connecting = None;
            } else if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                self.connecting = None;
                progress = true;
                match r {
                    Ok(c) => {
                        tracing::debug!(transport = id, "transport connected");
                        self.transport = Some((id, c.transport));
                        sh.set_socket(c.socket, None);
                        let info = c.info.with_writer_hold(sh.session.config());
                        sh.session.handle_input(
                            now,
                            Input::TransportUp {
                                transport: id,
                                info,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::debug!(transport = id, error = %e, "connect failed");
                        sh.session
                            .handle_input(now, Input::TransportLost { transport: id });
                    }
                }
            }
        }

        // Nobody will read again (close, drop): unread input is discarded,
        // so the peer's last bytes and its FIN can still arrive.
        if sh.discard {
            while let Ok(chunk) = sh.session.read_chunk() {
                if chunk.is_empty() {
                    break;
                }
            }
        }

        // Reading, unless the receive queue is full (TCP then pushes back).
        if sh.session.wants_input() {
            if let Some((id, t)) = self.transport.as_mut() {
                let id = *id;
                match Pin::new(&mut **t).poll_read(cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        progress = true;
                        self.lose(sh, now, id);
                    }
                    Poll::Ready(Ok(n)) => {
                        progress = true;
                        sh.session.handle_input(
                            now,
                            Input::Received {
                                transport: id,
                                data: &self.buf[..n],
                            },
                        );
                    }
                    Poll::Pending => {}
                }
            }
        }

        // Timers. An overdue deadline is served even while bytes keep
        // moving, so a busy session still notices a dead peer; the timer is
        // armed only when the driver is about to sleep. It also serves the
        // application's bounds (an early `Timeout` is harmless).
        let session_deadline = sh.session.poll_timeout();
        let app_deadline = min_opt(sh.close_deadline, sh.shutdown_deadline);
        if let Some(deadline) = min_opt(session_deadline, app_deadline) {
            if session_deadline.is_some_and(|d| d <= now) {
                sh.session.handle_input(now, Input::Timeout);
                self.armed = None;
                progress = true;
            } else if deadline <= now {
                progress = true;
            } else if !progress {
                if self.armed.map_or(true, |a| a > deadline) {
                    match self.timer.as_mut() {
                        Some(t) => t.reset(deadline),
                        None => self.timer = Some(self.rt.timer(deadline)),
                    }
                    self.armed = Some(deadline);
                }
                if let Some(t) = self.timer.as_mut() {
                    if t.poll_expired(cx).is_ready() {
                        self.armed = None;
                        sh.session.handle_input(self.rt.now(), Input::Timeout);
                        progress = true;
                    }
                }
            }
        }
        sh.wire_idle = self.writing.is_none() && !self.needs_flush && self.transport.is_some();
        progress
    }
}

fn wake(slot: &mut Option<std::task::Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// Wakes every `flush`/`shutdown`/`close` waiter: they check their condition again.
fn wake_all(list: &mut Vec<std::task::Waker>) {
    for w in list.drain(..) {
        w.wake();
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<R: Runtime> Driver<R> {
    /// Bounds the final flush by the handshake timeout, so a peer that never
    /// reads again cannot keep a finished session's driver alive.
    fn linger_expired(&mut self, cx: &mut Context<'_>, bound: std::time::Duration) -> bool {
        let now = self.rt.now();
        let deadline = *self.linger.get_or_insert(now + bound);
        if deadline <= now {
            return true;
        }
        let t = match self.timer.as_mut() {
            Some(t) => {
                t.reset(deadline);
                t
            }
            None => self.timer.insert(self.rt.timer(deadline)),
        };
        t.poll_expired(cx).is_ready()
    }
}

struct Noop;

impl std::task::Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// A waker that does nothing, for one best-effort poll.
fn noop_waker() -> std::task::Waker {
    std::task::Waker::from(Arc::new(Noop))
}

impl<R: Runtime> Future for Driver<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        {
            let mut c = lock(&this.handle.control);
            match &c.driver {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => c.driver = Some(cx.waker().clone()),
            }
        }
        let handle = this.handle.clone();
        for _ in 0..BUDGET {
            let mut sh = lock(&handle.shared);
            let progress = this.step(&mut sh, cx);
            if sh.session.is_finished() && !progress {
                let bound = sh.session.config().handshake_timeout;
                let done = this.writing.is_none() || this.linger_expired(cx, bound);
                if done {
                    // Everything the session had to say (an ABORT, a CLOSE)
                    // is written, or the peer stopped reading for too long.
                    this.writing = None;
                    this.transport = None;
                    sh.socket = None;
                    sh.flushed = true;
                    wake(&mut sh.waiter);
                    wake_all(&mut sh.progress);
                    return Poll::Ready(());
                }
                wake_all(&mut sh.progress);
                return Poll::Pending;
            }
            if !progress {
                wake_all(&mut sh.progress);
                return Poll::Pending;
            }
        }
        // Out of budget: let the other tasks of this thread run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
