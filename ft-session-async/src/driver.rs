//! The per-session driver: the one task that moves bytes between a session
//! and its transport, dials (client), takes resumed transports (server) and
//! runs the session's timers.
//!
//! Each pass has two halves. Under the session lock, with no system call:
//! apply what the last I/O did (bytes written, bytes read, a transport lost,
//! connected, a timer), then poll the session's outputs into the write
//! queue (up to [`BATCH`] bytes ahead, under the core's batched contract,
//! `Session::set_reports_written`). Without the lock: one vectored write of
//! the queue (partial writes are normal, reported back next pass), a read
//! into a reused buffer handed to the core without a copy
//! (`Input::ReceivedBytes`), the connect and the timer. The application's
//! calls never wait for a system call of the driver.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ft_session_core::{
    Event, Input, Output, Session, SessionError, SessionHandle, TransmitQueue, TransportId,
};

use crate::stream::{lock, Handle, Shared};
use crate::{BoxTransport, Connect, ConnectFuture, Connected, Runtime, SpareTransport, Timer};

/// Read size while data flows: one maximum default frame, so a busy stream
/// needs few reads. Received chunks are handed to the core by reference.
const READ_BUF: usize = 64 * 1024;
/// Size of the first read of an idle session, on the stack (copied out):
/// heartbeats and small messages need no read buffer.
const READ_SMALL: usize = 4 * 1024;
/// Reads of at most this many bytes are copied out of the big read buffer,
/// which stays free for the next read: a chunk that keeps the buffer holds
/// at most 4 times its own size.
const READ_COPY: usize = READ_BUF / 4;
/// Most big read buffers a session reuses while data flows: as many as its
/// receive queue can hold chunks of, plus two, up to this.
const READ_POOL_MAX: usize = 256;
/// After this long without a big read the read buffers are let go.
const READ_IDLE: Duration = Duration::from_secs(1);
/// Big reads after which a flow counts as bulk: a small read that pauses it
/// no longer lets the buffers go (its next burst would fault fresh memory
/// in again, page by page); [`READ_IDLE`] does.
const BULK_READS: u32 = 16;
/// Bytes of Transmits polled ahead of the transport: a vectored write then
/// moves hundreds of KiB.
const BATCH: usize = 512 * 1024;
/// Slices per vectored write (two per frame: header and payload).
const IOV: usize = 64;
/// Bytes written per pass before the session hears of them (its implicit
/// release and `Writable` depend on the reports).
const WRITE_ROUND: usize = 1024 * 1024;
/// Passes per poll before yielding, so one busy session cannot starve the
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

/// What the unlocked half did, for the session to hear under the lock.
#[derive(Default)]
struct Done {
    /// Bytes the transport accepted.
    written: Option<(TransportId, usize)>,
    /// Bytes read.
    received: Option<(TransportId, Bytes)>,
    /// Transports that failed (read, write or flush error, end of stream).
    lost: Vec<TransportId>,
    /// The driver let go of the session's transport (it failed, or the
    /// session gave it up): its socket is gone.
    released: bool,
    /// A connect attempt finished.
    connected: Option<(TransportId, std::io::Result<Connected>)>,
    /// The timer fired.
    timer: bool,
}

/// What the locked half decided for the unlocked one.
struct Plan {
    /// The session's transport: a write blocked on another is given up.
    current: Option<TransportId>,
    /// The receive queue has room: read the transport.
    read: bool,
    /// When to wake up if nothing moves.
    deadline: Option<Instant>,
    /// The time of the locked half.
    now: Instant,
}

/// The driver future of one session. See the module docs.
pub(crate) struct Driver<R: Runtime> {
    rt: R,
    handle: Arc<Handle>,
    transport: Option<(TransportId, BoxTransport)>,
    connecting: Option<(TransportId, ConnectFuture)>,
    /// Transmits polled and not yet accepted by the transport.
    queue: TransmitQueue,
    /// The session dropped this transport while frames for it were queued
    /// (a CLOSE, an ABORT): closed once they are out, or the write blocks.
    closing: Option<TransportId>,
    needs_flush: bool,
    rbuf: ReadBuf,
    done: Done,
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
        let read_pool = {
            let mut sh = lock(&handle.shared);
            // This driver writes in batches and reports what the transport took.
            sh.session.set_reports_written(true);
            (sh.session.config().recv_buffer_capacity / READ_BUF + 2).min(READ_POOL_MAX)
        };
        Driver {
            rt,
            handle,
            transport,
            connecting: None,
            queue: TransmitQueue::new(),
            closing: None,
            needs_flush: false,
            rbuf: ReadBuf::new(read_pool),
            done: Done::default(),
            timer: None,
            armed: None,
            linger: None,
            connector,
            server,
        }
    }

    /// Lets go of the transport `id` if it is the one held, and of what was
    /// queued for it (the session retransmits what the peer misses).
    fn release(&mut self, id: TransportId) {
        if self.transport.as_ref().is_some_and(|t| t.0 == id) {
            self.transport = None;
            self.needs_flush = false;
            self.done.released = true;
        }
        if self.closing == Some(id) {
            self.closing = None;
        }
        self.queue.discard(id);
    }

    /// The transport `id` failed: the session hears of it next pass.
    fn fail(&mut self, id: TransportId) {
        self.release(id);
        self.done.lost.push(id);
    }

    /// Acts on one output (a Transmit joins the write queue).
    fn on_output(&mut self, sh: &mut Shared, out: Output) {
        match out {
            Output::Transmit(transmit)
                if self
                    .transport
                    .as_ref()
                    .is_some_and(|t| t.0 == transmit.transport) =>
            {
                self.queue.push(transmit);
            }
            Output::Connect { transport } => {
                tracing::debug!(transport, "connecting");
                self.connecting = self.connector.as_ref().map(|c| (transport, c.connect()));
            }
            Output::DropTransport { transport } => {
                if self.transport.as_ref().is_some_and(|t| t.0 == transport) {
                    sh.socket = None;
                    // Its last frames (a REJECT, an ABORT, a CLOSE) go out
                    // first, then it is closed, outside the lock.
                    self.closing = Some(transport);
                }
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
                // The policy in effect: Implicit only if both sides chose it.
                let release = sh.session.effective_release_policy();
                tracing::info!(?role, %session_id, ?release, "session established");
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

    /// The locked half: the session hears what the I/O did, then its
    /// outputs are queued. No system call here. True if anything moved.
    fn locked(&mut self, sh: &mut Shared) -> (bool, Plan) {
        let now = self.rt.now();
        let mut progress = false;

        // What the last unlocked half did.
        let done = std::mem::take(&mut self.done);
        if done.released {
            sh.socket = None;
        }
        if let Some((transport, bytes)) = done.written {
            sh.session
                .handle_input(now, Input::Written { transport, bytes });
            progress = true;
        }
        if let Some((transport, data)) = done.received {
            sh.session
                .handle_input(now, Input::ReceivedBytes { transport, data });
            progress = true;
        }
        for transport in done.lost {
            sh.session
                .handle_input(now, Input::TransportLost { transport });
            progress = true;
        }
        if let Some((id, r)) = done.connected {
            progress = true;
            match r {
                // The attempt may have timed out in the session meanwhile:
                // then the new transport is simply dropped.
                Ok(c) if sh.session.transport() == Some(id) => {
                    tracing::debug!(transport = id, "transport connected");
                    self.transport = Some((id, c.transport));
                    self.needs_flush = false;
                    sh.set_socket(c.socket, None);
                    // No writer hold: under the batched contract the core
                    // counts only bytes the transport accepted, so the
                    // frames in this driver's queue stay retained.
                    sh.session.handle_input(
                        now,
                        Input::TransportUp {
                            transport: id,
                            info: c.info,
                        },
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(transport = id, error = %e, "connect failed");
                    sh.session
                        .handle_input(now, Input::TransportLost { transport: id });
                }
            }
        }
        if done.timer {
            sh.session.handle_input(now, Input::Timeout);
            progress = true;
        }

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
                if let Some(old) = self.transport.as_ref().map(|t| t.0) {
                    self.release(old);
                }
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

        // Nobody will read again (close, drop): unread input is discarded,
        // so the peer's last bytes and its FIN can still arrive.
        if sh.discard {
            while let Ok(chunk) = sh.session.read_chunk() {
                if chunk.is_empty() {
                    break;
                }
            }
        }

        // Timers. An overdue deadline is served even while bytes keep
        // moving, so a busy session still notices a dead peer.
        let session_deadline = sh.session.poll_timeout();
        if session_deadline.is_some_and(|d| d <= now) {
            sh.session.handle_input(now, Input::Timeout);
            self.armed = None;
            progress = true;
        }

        // Outputs, polled ahead into the write queue.
        while self.queue.len() < BATCH {
            match sh.session.poll_output() {
                Some(out) => {
                    progress = true;
                    self.on_output(sh, out);
                }
                None => break,
            }
        }

        let app_deadline = min_opt(sh.close_deadline, sh.shutdown_deadline);
        let deadline = min_opt(sh.session.poll_timeout(), app_deadline);
        if deadline.is_some_and(|d| d <= now) {
            progress = true;
        }
        sh.wire_idle = self.queue.is_empty()
            && !self.needs_flush
            && self.closing.is_none()
            && self.transport.is_some();
        let plan = Plan {
            current: sh.session.transport(),
            read: sh.session.wants_input(),
            deadline,
            now,
        };
        (progress, plan)
    }

    /// The unlocked half: write, flush, close, read, connect. True if
    /// anything moved.
    fn unlocked(&mut self, cx: &mut Context<'_>, plan: &Plan) -> bool {
        let mut moved = false;

        // Transmits for a transport no longer held are moot.
        while let Some(q) = self.queue.transport() {
            if self.transport.as_ref().is_some_and(|t| t.0 == q) {
                break;
            }
            self.queue.discard(q);
            moved = true;
        }

        // Writes: the queue in vectored writes, partial ones included.
        let mut blocked = false;
        let mut round = 0;
        while round < WRITE_ROUND && !self.queue.is_empty() {
            let Some((id, t)) = self.transport.as_mut() else {
                break;
            };
            let id = *id;
            let r = {
                let mut bufs = [IoSlice::new(&[]); IOV];
                let k = self.queue.io_slices(&mut bufs);
                Pin::new(&mut **t).poll_write_vectored(cx, &bufs[..k])
            };
            match r {
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.queue.advance(n);
                    let w = self.done.written.get_or_insert((id, 0));
                    w.1 += n;
                    round += n;
                    self.needs_flush = true;
                    moved = true;
                }
                Poll::Ready(r) => {
                    if let Err(e) = &r {
                        tracing::debug!(transport = id, error = %e, "transport write failed");
                    }
                    self.fail(id);
                    moved = true;
                }
                Poll::Pending => {
                    if plan.current != Some(id) {
                        // The session gave this transport up (idle timeout,
                        // half-open resume, its end) while the write was
                        // blocked: a blackholed socket would block forever.
                        self.release(id);
                        moved = true;
                    }
                    blocked = true;
                    break;
                }
            }
        }

        // Flush once the queue is out (a TLS stream may hold a record).
        if self.queue.is_empty() && self.needs_flush {
            if let Some((id, t)) = self.transport.as_mut() {
                let id = *id;
                match Pin::new(&mut **t).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.needs_flush = false,
                    Poll::Ready(Err(_)) => {
                        self.fail(id);
                        moved = true;
                    }
                    Poll::Pending => {}
                }
            }
        }

        // A transport the session dropped: closed once its last frames are
        // out, or as soon as their write blocks.
        if let Some(id) = self.closing {
            if self.queue.is_empty() || blocked || self.transport.as_ref().map(|t| t.0) != Some(id)
            {
                if self.needs_flush {
                    if let Some((_, t)) = self.transport.as_mut() {
                        // Best effort: one flush, whatever it answers.
                        let _ = Pin::new(&mut **t).poll_flush(cx);
                    }
                }
                self.release(id);
                moved = true;
            }
        }

        // Reading, unless the receive queue is full (TCP then pushes back);
        // the core keeps the bytes read by reference.
        if plan.read {
            if let Some((id, t)) = self.transport.as_mut() {
                let id = *id;
                match self.rbuf.poll_read(cx, t, plan.now) {
                    Poll::Ready(Ok(data)) if !data.is_empty() => {
                        self.done.received = Some((id, data));
                        moved = true;
                    }
                    Poll::Ready(_) => {
                        self.fail(id);
                        moved = true;
                    }
                    Poll::Pending => {}
                }
            }
        }

        // Client: a transport being opened.
        if let Some((id, fut)) = self.connecting.as_mut() {
            let id = *id;
            if plan.current != Some(id) {
                // The attempt timed out in the session.
                self.connecting = None;
            } else if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                self.connecting = None;
                self.done.connected = Some((id, r));
                moved = true;
            }
        }

        // Nothing moved: sleep until the next deadline. The timer is armed
        // only then (it also serves the application's bounds).
        if !moved {
            if let Some(deadline) = plan.deadline {
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
                        self.done.timer = true;
                        moved = true;
                    }
                }
            }
        }
        moved
    }
}

/// The driver's read buffer.
///
/// While data flows it reads up to [`READ_BUF`] at a time into allocations
/// shared by reference with the chunks handed to the core, each reused as
/// soon as the application has read its chunks (a fresh allocation per read
/// makes the allocator hand memory back to the kernel and fault it in again,
/// page by page). A [`SpareTransport`] reads into them uninitialized; a
/// plain futures-io transport needs them zeroed first. When a small read
/// ends a short flow (fewer than [`BULK_READS`] big reads), or nothing was
/// read for [`READ_IDLE`], the allocations are let go and reads go to the
/// stack first: an idle session holds no read buffer (a bulk flow's pauses
/// keep them).
struct ReadBuf {
    /// The allocation of [`SpareTransport`] reads.
    big: Big,
    /// Plain transports read into this zeroed memory; its front is split off
    /// and handed over, the rest is the next read's room.
    zeroed: BytesMut,
    /// When the last read went into the big buffer.
    last_big: Option<Instant>,
    /// That read was at most [`READ_COPY`] bytes.
    small: bool,
    /// Reads of more than [`READ_COPY`] bytes since the buffers were last
    /// let go.
    big_reads: u32,
    /// How many lent allocations are kept for reuse.
    pool: usize,
}

/// The big read buffers of a [`SpareTransport`].
#[derive(Default)]
struct Big {
    /// Owned and empty, ready for the next read.
    own: Option<Vec<u8>>,
    /// Allocations shared with chunks handed to the core (the receive queue
    /// may hold many), oldest first: each is reused once its chunks are read.
    lent: VecDeque<Bytes>,
}

impl ReadBuf {
    fn new(pool: usize) -> Self {
        ReadBuf {
            big: Big::default(),
            zeroed: BytesMut::new(),
            last_big: None,
            small: false,
            big_reads: 0,
            pool,
        }
    }

    /// Lets the buffers go (chunks still unread keep theirs) and reads to
    /// the stack first again.
    fn release(&mut self) {
        *self = ReadBuf::new(self.pool);
    }

    /// Reads `t` once; an empty `Bytes` is end of stream.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        t: &mut BoxTransport,
        now: Instant,
    ) -> Poll<io::Result<Bytes>> {
        if self.last_big.is_some_and(|at| now >= at + READ_IDLE) {
            // Idle.
            self.release();
        }
        if self.last_big.is_none() {
            // A small read first, on the stack: a heartbeat or a request
            // costs no allocation; one that fills it starts the big reads.
            let mut small = [0u8; READ_SMALL];
            return match Pin::new(&mut **t).poll_read(cx, &mut small) {
                Poll::Ready(Ok(n)) => {
                    if n == READ_SMALL {
                        self.last_big = Some(now);
                    }
                    Poll::Ready(Ok(Bytes::copy_from_slice(&small[..n])))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        let r = match t.as_any_mut().downcast_mut::<SpareTransport>() {
            Some(t) => self.poll_spare(cx, t),
            None => self.poll_zeroed(cx, t),
        };
        match &r {
            Poll::Ready(Ok(data)) => {
                self.last_big = Some(now);
                self.small = data.len() <= READ_COPY;
                if !self.small {
                    self.big_reads = self.big_reads.saturating_add(1);
                }
            }
            // A short flow ended with a small piece: back to stack reads.
            Poll::Pending if self.small && self.big_reads < BULK_READS => self.release(),
            _ => {}
        }
        r
    }

    /// The big buffer, empty: an allocation whose chunks were all read if
    /// there is one.
    fn take_big(&mut self) -> Vec<u8> {
        let mut v = match self.big.own.take() {
            Some(v) => v,
            None => {
                // The newest one whose chunks were all read: the most
                // recently touched memory, likely still in cache (the oldest
                // first would cycle through the whole pool, cold).
                let free = self.big.lent.iter().rposition(Bytes::is_unique);
                match free.and_then(|i| self.big.lent.remove(i)) {
                    Some(b) => match b.try_into_mut() {
                        Ok(mut m) => {
                            m.clear();
                            Vec::from(m)
                        }
                        Err(_) => Vec::new(),
                    },
                    None => {
                        if self.big.lent.len() >= self.pool {
                            // The oldest goes once its chunks are read.
                            self.big.lent.pop_front();
                        }
                        Vec::new()
                    }
                }
            }
        };
        v.reserve_exact(READ_BUF);
        v
    }

    fn poll_spare(
        &mut self,
        cx: &mut Context<'_>,
        t: &mut SpareTransport,
    ) -> Poll<io::Result<Bytes>> {
        let mut v = self.take_big();
        let r = t.poll_read_spare(cx, &mut v);
        if !matches!(r, Poll::Ready(Ok(_))) {
            self.big.own = Some(v);
            return r.map_ok(|_| Bytes::new());
        }
        if v.len() <= READ_COPY {
            // A small piece is copied: it does not hold the whole buffer.
            let data = Bytes::copy_from_slice(&v);
            v.clear();
            self.big.own = Some(v);
            return Poll::Ready(Ok(data));
        }
        let data = Bytes::from(v);
        self.big.lent.push_back(data.clone());
        Poll::Ready(Ok(data))
    }

    fn poll_zeroed(
        &mut self,
        cx: &mut Context<'_>,
        t: &mut BoxTransport,
    ) -> Poll<io::Result<Bytes>> {
        if self.zeroed.len() < READ_BUF / 4 {
            // futures-io reads need initialized memory: the allocation is
            // zeroed once per renewal, then read into front to back. Its
            // allocation is reclaimed once every chunk of it was read.
            self.zeroed.clear();
            self.zeroed.reserve(READ_BUF);
            self.zeroed.resize(READ_BUF, 0);
        }
        match Pin::new(&mut **t).poll_read(cx, &mut self.zeroed) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(self.zeroed.split_to(n).freeze())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
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

impl<R: Runtime> Future for Driver<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Before anything the application changes is looked at, so a change
        // whose wake was skipped is seen by this poll (`Handle::wake_driver`).
        this.handle.notified.store(false, Ordering::SeqCst);
        {
            let mut c = lock(&this.handle.control);
            match &c.driver {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => c.driver = Some(cx.waker().clone()),
            }
        }
        let handle = this.handle.clone();
        for _ in 0..BUDGET {
            let (progress, plan, finished) = {
                let mut sh = lock(&handle.shared);
                let (progress, plan) = this.locked(&mut sh);
                (progress, plan, sh.session.is_finished())
            };
            let moved = this.unlocked(cx, &plan);
            if progress || moved {
                continue;
            }
            // Nothing moved on either side: report to the waiters, then sleep.
            let mut sh = lock(&handle.shared);
            if finished {
                let bound = sh.session.config().handshake_timeout;
                let done = this.queue.is_empty() || this.linger_expired(cx, bound);
                if done {
                    // Everything the session had to say (an ABORT, a CLOSE)
                    // is written, or the peer stopped reading for too long.
                    this.queue.clear();
                    this.transport = None;
                    sh.socket = None;
                    sh.flushed = true;
                    wake(&mut sh.waiter);
                    wake_all(&mut sh.progress);
                    return Poll::Ready(());
                }
            }
            wake_all(&mut sh.progress);
            if this.queue.is_empty() {
                // Idle: the batch's capacity goes too.
                this.queue = TransmitQueue::new();
            }
            return Poll::Pending;
        }
        // Out of budget: let the other tasks of this thread run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
