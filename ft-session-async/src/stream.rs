//! The application's end of a session and the state it shares with the
//! session's driver task.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ft_session_core::{
    Config, Delivery, ReadError, Session, SessionError, SessionId, SessionState, Stats,
    TransportId, WriteError,
};

use crate::{BoxTransport, SocketRef};

/// Locks a mutex, ignoring poisoning: every critical section leaves the
/// session consistent before it could panic, and a panic in one task must
/// not take the other end down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the listener's endpoint routed to a session, waiting for its
/// driver: a resume with its new transport, or an eviction.
pub(crate) struct Routed {
    pub transport: Option<(TransportId, BoxTransport)>,
    pub delivery: Delivery,
    /// The new transport's peer address and socket, if known.
    pub peer: Option<SocketAddr>,
    pub socket: Option<SocketRef>,
}

/// State the application side and the driver share, under one lock.
pub(crate) struct Shared {
    pub session: Session,
    pub reader: Option<Waker>,
    pub writer: Option<Waker>,
    /// `connect` waits here.
    pub waiter: Option<Waker>,
    /// `flush`, `shutdown` and `close` wait here; the driver wakes them
    /// after every pass that moved something, and they check again.
    pub progress: Vec<Waker>,
    pub established: bool,
    pub outcome: Option<Result<(), SessionError>>,
    /// The driver is done: every final frame (a CLOSE, an ABORT) was written,
    /// or given up on after the linger bound.
    pub flushed: bool,
    /// The driver holds nothing unwritten or unflushed for the current
    /// transport (what `flush` waits for, with the session's own queue).
    pub wire_idle: bool,
    /// The current transport's socket and peer address, if known.
    pub socket: Option<SocketRef>,
    pub peer: Option<SocketAddr>,
    /// `TCP_NODELAY` for every transport of the session.
    pub nodelay: bool,
    /// Nobody will read again (close, drop): the driver discards input, so
    /// the peer's remaining bytes and its FIN can arrive.
    pub discard: bool,
    /// A close bound asked for by `close`/drop; the driver turns it into
    /// `close_deadline` on its clock, and aborts the session when it passes.
    pub close_bound: Option<Duration>,
    pub close_deadline: Option<Instant>,
    pub close_timed_out: bool,
    /// The same for `shutdown`, which only reports the timeout.
    pub shutdown_bound: Option<Duration>,
    pub shutdown_deadline: Option<Instant>,
    pub shutdown_timed_out: bool,
}

impl Shared {
    /// Records a new transport's socket and applies the session's options.
    pub fn set_socket(&mut self, socket: Option<SocketRef>, peer: Option<SocketAddr>) {
        if let Some(s) = &socket {
            if let Err(e) = s.set_nodelay(self.nodelay) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a new transport");
            }
        }
        self.peer = peer.or_else(|| socket.as_ref().and_then(|s| s.peer_addr().ok()));
        self.socket = socket;
    }
}

/// Leaf lock: never held while taking another lock, so the listener may take
/// it while holding its endpoint, and the app while holding `Shared`.
#[derive(Default)]
pub(crate) struct Control {
    pub driver: Option<Waker>,
    pub routed: VecDeque<Routed>,
}

/// One session's shared parts. Lock order: `shared` → the listener's
/// endpoint → `control`.
pub(crate) struct Handle {
    pub shared: Mutex<Shared>,
    pub control: Mutex<Control>,
    /// The application woke the driver, which has not started its next
    /// poll yet: waking it again would change nothing (see
    /// [`Handle::wake_driver`]). The driver clears it first thing in every
    /// poll, before it looks at anything the application changes.
    pub notified: AtomicBool,
}

impl Handle {
    pub fn new(session: Session) -> Arc<Handle> {
        Arc::new(Handle {
            shared: Mutex::new(Shared {
                session,
                reader: None,
                writer: None,
                waiter: None,
                progress: Vec::new(),
                established: false,
                outcome: None,
                flushed: false,
                wire_idle: false,
                socket: None,
                peer: None,
                nodelay: true,
                discard: false,
                close_bound: None,
                close_deadline: None,
                close_timed_out: false,
                shutdown_bound: None,
                shutdown_deadline: None,
                shutdown_timed_out: false,
            }),
            control: Mutex::new(Control::default()),
            notified: AtomicBool::new(false),
        })
    }

    /// Wakes the driver: the application queued work or made room. Called
    /// after the change, with `shared` unlocked.
    ///
    /// A driver woken before and not polled since is not woken again (most
    /// writes of a busy stream find it so): it clears `notified` before its
    /// poll looks at the session, so if this call still sees it set, that
    /// poll comes after the change and sees it. A running driver (flag
    /// clear) is woken: it may have looked already.
    pub fn wake_driver(&self) {
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(w) = lock(&self.control).driver.as_ref() {
            w.wake_by_ref();
        }
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn add_waker(list: &mut Vec<Waker>, cx: &Context<'_>) {
    if !list.iter().any(|w| w.will_wake(cx.waker())) {
        list.push(cx.waker().clone());
    }
}

/// The bound of `close()`, of a dropped stream's background close and of
/// `shutdown()`: the session's `max_reconnect_time`, so a close may wait out
/// one whole reconnect.
pub fn default_close_timeout(config: &Config) -> Duration {
    config.max_reconnect_time
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

/// Counters and state of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Resume handshakes completed (reconnects that kept the stream).
    pub reconnects: u64,
    /// Transports lost or declared dead.
    pub transports_lost: u64,
    /// Bytes sent again after resumes.
    pub retransmitted_bytes: u64,
    /// Where the session is.
    pub state: SessionState,
    /// All of the core's counters.
    pub core: Stats,
    /// The most bytes the stream buffer may hold under the current policy
    /// (with the implicit policy: the send capacity plus the bound b of the
    /// current transport).
    pub retain_capacity: u64,
}

/// The application's end of a fault-tolerant session: a byte stream that
/// survives transport crashes.
///
/// What each ending call waits for is in the crate docs' table: `flush`
/// until the transport has every written byte, `shutdown` until the peer
/// session acknowledged every byte, `close` until the CLOSE exchange
/// finished (unread input is discarded), each bounded; dropping the stream
/// closes it in the background, bounded the same way, and frees it.
pub struct FtStream {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for FtStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sh = lock(&self.handle.shared);
        f.debug_struct("FtStream")
            .field("session_id", &sh.session.session_id())
            .field("state", &sh.session.state())
            .finish()
    }
}

impl FtStream {
    pub(crate) fn new(handle: Arc<Handle>) -> FtStream {
        FtStream { handle }
    }

    /// Reads received bytes; `Ok(0)` is end of stream.
    ///
    /// Cancel-safe: bytes are taken from the session only when it returns
    /// `Ready`.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.poll_take(cx, |s| s.read(buf))
    }

    /// One application read (`read` or `read_chunk`) under the lock, waking
    /// the driver when the read gave it work.
    fn poll_take<T>(
        &self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut Session) -> Result<T, ReadError>,
    ) -> Poll<io::Result<T>> {
        let mut sh = lock(&self.handle.shared);
        let was_full = !sh.session.wants_input();
        let ack_was_due = sh.session.ack_pending();
        match take(&mut sh.session) {
            Ok(v) => {
                // The driver stopped reading the transport while the queue
                // was full and there is room again, or the read opened the
                // receive window and the peer waits for that acknowledgment.
                if (was_full && sh.session.wants_input())
                    || (!ack_was_due && sh.session.ack_pending())
                {
                    drop(sh);
                    self.handle.wake_driver();
                }
                Poll::Ready(Ok(v))
            }
            Err(ReadError::Blocked) => {
                set_waker(&mut sh.reader, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Copies bytes into the session's stream buffer; they are retained until
    /// the peer has them, across reconnects.
    ///
    /// Cancel-safe: bytes are taken only when it returns `Ready(Ok(n))`.
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut sh = lock(&self.handle.shared);
        match sh.session.write(buf) {
            Ok(n) => {
                drop(sh);
                self.handle.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                set_waker(&mut sh.writer, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Queues the front of `data` without copying it (the stream buffer
    /// keeps a reference); returns how many bytes were taken, which are
    /// split off `data`. Retained until the peer has them, across
    /// reconnects, as with [`FtStream::poll_write`].
    ///
    /// Cancel-safe: bytes are taken only when it returns `Ready(Ok(n))`.
    pub fn poll_send(&self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<usize>> {
        let mut sh = lock(&self.handle.shared);
        match sh.session.send(data) {
            Ok(n) => {
                drop(sh);
                self.handle.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                set_waker(&mut sh.writer, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Writes all of `data` without copying it (the zero-copy `write_all`).
    /// Not cancel-safe: a prefix may have been taken when it is dropped.
    pub async fn send_bytes(&self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            poll_fn(|cx| self.poll_send(cx, &mut data)).await?;
        }
        Ok(())
    }

    /// Takes the next piece of received bytes without copying it (it shares
    /// the driver's read buffer); an empty chunk is end of stream.
    ///
    /// Cancel-safe: bytes are taken only when it returns `Ready`.
    pub fn poll_read_chunk(&self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        self.poll_take(cx, Session::read_chunk)
    }

    /// [`FtStream::poll_read_chunk`] as a future.
    pub async fn read_chunk(&self) -> io::Result<Bytes> {
        poll_fn(|cx| self.poll_read_chunk(cx)).await
    }

    /// Ready once every byte written so far was handed to a live transport
    /// (written into the kernel's socket buffer and the transport flushed),
    /// as on a TCP socket, whose `flush` has nothing left to push once
    /// `write` returned. While the transport is down it waits for the resume
    /// that sends them again; it fails if the session fails.
    ///
    /// It does not wait for the peer: [`FtStream::poll_shutdown`] and
    /// [`FtStream::close`] do. Cancel-safe: it only observes.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sh = lock(&self.handle.shared);
        if let Some(outcome) = &sh.outcome {
            // A clean end means the peer has everything.
            return Poll::Ready(outcome.clone().map_err(io::Error::from));
        }
        if sh.session.state() == SessionState::Established
            && sh.session.is_flushed()
            && sh.wire_idle
        {
            return Poll::Ready(Ok(()));
        }
        add_waker(&mut sh.progress, cx);
        Poll::Pending
    }

    /// Half-close: the peer reads end of stream after everything written;
    /// this side can still read. Ready with `Ok` once the peer session
    /// acknowledged every byte before the FIN (an ACK both release policies
    /// send for a FIN) and the FIN itself is in a live transport (written
    /// and flushed, as a TCP shutdown leaves its FIN to the kernel); with
    /// the session's error if it failed first; with `TimedOut` if that took
    /// longer than the close timeout (the session goes on, and a later call
    /// waits again).
    ///
    /// The acknowledgment may predate the FIN (under the Ack policy a peer
    /// that already acknowledged every byte does not acknowledge the same
    /// count again), so `Ok` proves every byte is in the peer session, not
    /// that its end of stream arrived. The FIN is sent again after every
    /// resume while this session lives; only if this side's driver ends
    /// (runtime or process gone) and that transport breaks before the FIN
    /// arrives does the peer, holding every byte, read `Expired` instead of
    /// end of stream: an error, never a false end or a missing byte.
    ///
    /// Cancel-safe: the half-close is requested by the first poll and stays
    /// requested; polling again only waits.
    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sh = lock(&self.handle.shared);
        if let Some(outcome) = &sh.outcome {
            return Poll::Ready(outcome.clone().map_err(io::Error::from));
        }
        if sh.session.is_fin_acked() && sh.wire_idle {
            sh.shutdown_deadline = None;
            sh.shutdown_bound = None;
            return Poll::Ready(Ok(()));
        }
        if std::mem::take(&mut sh.shutdown_timed_out) {
            return Poll::Ready(Err(timed_out(
                "the peer did not acknowledge the stream's end within the close timeout",
            )));
        }
        add_waker(&mut sh.progress, cx);
        // Only a new request wakes the driver: it wakes the waiters after
        // each pass, and a poll that woke it every time would spin.
        if sh.shutdown_deadline.is_none() && sh.shutdown_bound.is_none() {
            sh.session.shutdown();
            sh.shutdown_bound = Some(default_close_timeout(sh.session.config()));
            drop(sh);
            self.handle.wake_driver();
        }
        Poll::Pending
    }

    /// Requests the half-close without waiting for it (see
    /// [`FtStream::poll_shutdown`]): the FIN follows the bytes already
    /// written, sent by the session's driver in the background. What
    /// dropping Tokio's `OwnedWriteHalf` does, as for `tokio::net`'s.
    pub fn shutdown_in_background(&self) {
        let mut sh = lock(&self.handle.shared);
        if sh.outcome.is_none() {
            sh.session.shutdown();
            drop(sh);
            self.handle.wake_driver();
        }
    }

    /// Closes the session gracefully, bounded by `timeout`: `Ok` once the
    /// CLOSE exchange finished (both sides know every byte arrived, and the
    /// last CLOSE was written); the session's error if it failed; `TimedOut`
    /// if `timeout` passed first, after which the session is aborted. Unread
    /// input is discarded, so a peer that is still sending cannot stall it.
    ///
    /// Cancel-safe in the sense that matters: the close started by the first
    /// poll goes on in the background, still bounded by `timeout`, exactly
    /// as if the stream had been dropped.
    pub fn poll_close_timeout(
        &self,
        cx: &mut Context<'_>,
        timeout: Duration,
    ) -> Poll<io::Result<()>> {
        let mut sh = lock(&self.handle.shared);
        if let Some(outcome) = &sh.outcome {
            if sh.close_timed_out {
                return Poll::Ready(Err(timed_out(
                    "graceful close did not complete in time; session aborted",
                )));
            }
            // A clean end is reported once the last CLOSE is written: a
            // caller that then drops its runtime must not take that frame
            // with it, or the peer would resume to learn the outcome.
            if sh.flushed || outcome.is_err() {
                return Poll::Ready(outcome.clone().map_err(io::Error::from));
            }
            add_waker(&mut sh.progress, cx);
            return Poll::Pending;
        }
        add_waker(&mut sh.progress, cx);
        // Only a new request (or a shorter bound) wakes the driver, as in
        // `poll_shutdown`.
        if !sh.discard || sh.close_bound.is_some_and(|b| timeout < b) {
            sh.session.close();
            sh.discard = true;
            sh.close_bound = Some(timeout);
            drop(sh);
            self.handle.wake_driver();
        }
        Poll::Pending
    }

    /// [`FtStream::poll_close_timeout`] with the default close timeout (the
    /// session's `max_reconnect_time`).
    pub fn poll_close(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let bound = default_close_timeout(lock(&self.handle.shared).session.config());
        self.poll_close_timeout(cx, bound)
    }

    /// Closes the session gracefully and waits, at most the close timeout
    /// (the session's `max_reconnect_time`), until both sides know every byte
    /// arrived. See [`FtStream::poll_close_timeout`].
    ///
    /// This is the session's close. The futures-io `AsyncWrite::poll_close`,
    /// which generic code calls to end its writing, is the half-close
    /// ([`FtStream::poll_shutdown`]), as on smol's `TcpStream`.
    pub async fn close(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_close(cx)).await
    }

    /// [`FtStream::close`] with an explicit bound.
    pub async fn close_timeout(&self, timeout: Duration) -> io::Result<()> {
        poll_fn(|cx| self.poll_close_timeout(cx, timeout)).await
    }

    /// Half-closes and waits until the peer session has every byte
    /// ([`FtStream::poll_shutdown`]).
    pub async fn shutdown(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_shutdown(cx)).await
    }

    /// Aborts the session at once with an application `code` (0x1000..=0xFFFF).
    pub fn abort(&self, code: u16) {
        lock(&self.handle.shared).session.abort(code);
        self.handle.wake_driver();
    }

    /// Counters and state.
    pub fn stats(&self) -> StreamStats {
        let sh = lock(&self.handle.shared);
        let core = sh.session.stats();
        StreamStats {
            reconnects: core.resumes,
            transports_lost: core.transports_lost,
            retransmitted_bytes: core.retransmitted_bytes,
            state: sh.session.state(),
            core,
            retain_capacity: sh.session.retain_capacity(),
        }
    }

    /// The session's id (known once established).
    pub fn session_id(&self) -> Option<SessionId> {
        lock(&self.handle.shared).session.session_id()
    }

    /// How the session ended, once it has.
    pub fn outcome(&self) -> Option<Result<(), SessionError>> {
        lock(&self.handle.shared).outcome.clone()
    }

    /// The peer's address on the current transport (it may change with each
    /// reconnect); `NotConnected` while there is none, `Unsupported` for
    /// transports without an address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let sh = lock(&self.handle.shared);
        if let Some(s) = &sh.socket {
            return s.peer_addr();
        }
        if let Some(p) = sh.peer {
            return Ok(p);
        }
        Err(no_socket(&sh))
    }

    /// The local address of the current transport (see [`FtStream::peer_addr`]).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let sh = lock(&self.handle.shared);
        match &sh.socket {
            Some(s) => s.local_addr(),
            None => Err(no_socket(&sh)),
        }
    }

    /// Sets `TCP_NODELAY` on the current transport and on every later one
    /// (default `true`: handshakes, acknowledgments and heartbeats are small
    /// and must not wait for Nagle).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let mut sh = lock(&self.handle.shared);
        sh.nodelay = nodelay;
        match &sh.socket {
            Some(s) => s.set_nodelay(nodelay),
            None => Ok(()),
        }
    }

    /// The `TCP_NODELAY` setting applied to every transport.
    pub fn nodelay(&self) -> bool {
        lock(&self.handle.shared).nodelay
    }

    /// Completes once the first handshake is done (or the session failed).
    pub(crate) fn poll_established(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sh = lock(&self.handle.shared);
        // A configuration the session refused as it established (the
        // implicit policy without buffer sizes) is this call's error, not a
        // stream that ended at once.
        if let Some(Err(e @ SessionError::Config(_))) = &sh.outcome {
            return Poll::Ready(Err(e.clone().into()));
        }
        if sh.established {
            return Poll::Ready(Ok(()));
        }
        if let Some(outcome) = &sh.outcome {
            return Poll::Ready(Err(match outcome {
                Err(e) => e.clone().into(),
                Ok(()) => SessionError::Closed.into(),
            }));
        }
        set_waker(&mut sh.waiter, cx);
        Poll::Pending
    }
}

fn no_socket(sh: &Shared) -> io::Error {
    if sh.session.transport().is_none() || sh.session.is_finished() {
        io::Error::new(io::ErrorKind::NotConnected, "no transport at the moment")
    } else {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "the transport has no socket address",
        )
    }
}

impl Drop for FtStream {
    /// Closes the session gracefully in the background: unread input is
    /// discarded, the driver runs the CLOSE exchange, and aborts the session
    /// if the close timeout passes first; either way the driver ends and the
    /// session is freed. If the runtime (or the process) ends first, the
    /// driver goes with it: the peer sees its transport fail and its session
    /// expires after `max_reconnect_time`.
    fn drop(&mut self) {
        let mut sh = lock(&self.handle.shared);
        if !sh.session.is_finished() {
            sh.session.close();
            sh.discard = true;
            if sh.close_bound.is_none() && sh.close_deadline.is_none() {
                sh.close_bound = Some(default_close_timeout(sh.session.config()));
            }
        }
        drop(sh);
        self.handle.wake_driver();
    }
}

/// The futures-io traits, for `FtStream` and for `&FtStream`: through a
/// shared reference, like `&TcpStream`, one task may read while another
/// writes (the session is behind a lock, so the two never race).
/// `poll_close` is the half-close ([`FtStream::poll_shutdown`], like
/// `shutdown(Write)` on TCP); [`FtStream::close`] ends the session.
macro_rules! futures_io_impls {
    ($($stream:ty),*) => {$(
        impl futures_io::AsyncRead for $stream {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                FtStream::poll_read(&self, cx, buf)
            }
        }

        impl futures_io::AsyncWrite for $stream {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                FtStream::poll_write(&self, cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                FtStream::poll_flush(&self, cx)
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                FtStream::poll_shutdown(&self, cx)
            }
        }
    )*};
}

futures_io_impls!(FtStream, &FtStream);
