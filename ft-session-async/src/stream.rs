//! The application's end of a session and the state it shares with the
//! session's driver task.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ft_session_core::{
    Config, ReadError, Session, SessionError, SessionId, SessionState, Stats, TransportId,
    TransportInfo, VerifiedResume, WriteError,
};

use crate::driver::Driver;
use crate::entropy::OsEntropy;
use crate::{BoxTransport, Connect, Runtime};

/// Locks a mutex, ignoring poisoning: every critical section leaves the
/// session consistent before it could panic, and a panic in one task must
/// not take the other end down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A resume the listener authenticated, waiting for the session's driver.
pub(crate) struct Delivery {
    pub transport: BoxTransport,
    pub id: TransportId,
    pub resume: VerifiedResume,
    pub info: TransportInfo,
    /// Bytes that followed the client's hello in the same read.
    pub leftover: Bytes,
}

/// State the application side and the driver share, under one lock.
pub(crate) struct Shared {
    pub session: Session,
    pub reader: Option<Waker>,
    pub writer: Option<Waker>,
    /// `connect` and `close` wait here.
    pub waiter: Option<Waker>,
    pub established: bool,
    pub outcome: Option<Result<(), SessionError>>,
    /// The driver is done: every final frame (a CLOSE, an ABORT) was written,
    /// or given up on after the linger bound.
    pub flushed: bool,
}

/// Leaf lock: never held while taking another lock, so the listener may take
/// it while holding the registry, and the app while holding `Shared`.
#[derive(Default)]
pub(crate) struct Control {
    pub driver: Option<Waker>,
    pub delivery: Option<Delivery>,
    pub evicted: bool,
}

/// One session's shared parts. Lock order: `shared` → registry → `control`.
pub(crate) struct Handle {
    pub shared: Mutex<Shared>,
    pub control: Mutex<Control>,
}

impl Handle {
    pub fn new(session: Session) -> Arc<Handle> {
        Arc::new(Handle {
            shared: Mutex::new(Shared {
                session,
                reader: None,
                writer: None,
                waiter: None,
                established: false,
                outcome: None,
                flushed: false,
            }),
            control: Mutex::new(Control::default()),
        })
    }

    /// Wakes the driver: the application queued work or made room.
    pub fn wake_driver(&self) {
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
/// survives transport crashes. Dropping it closes the session gracefully in
/// the background (like dropping a TCP socket lets the kernel deliver what
/// was written).
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
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut sh = lock(&self.handle.shared);
        let was_full = !sh.session.wants_input();
        match sh.session.read(buf) {
            Ok(n) => {
                if was_full && sh.session.wants_input() {
                    // The driver stopped reading the transport while the
                    // queue was full; there is room again.
                    drop(sh);
                    self.handle.wake_driver();
                }
                Poll::Ready(Ok(n))
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

    /// Always ready: written bytes are already held by the session, which
    /// delivers them across reconnects; there is no lower buffer to push.
    pub fn poll_flush(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-close: the peer reads end of stream after everything written;
    /// this side can still read. Returns at once.
    pub fn poll_shutdown(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sh = lock(&self.handle.shared);
        if !sh.session.is_finished() {
            sh.session.shutdown();
        }
        drop(sh);
        self.handle.wake_driver();
        Poll::Ready(Ok(()))
    }

    /// Closes the session gracefully and completes once it finished: `Ok`
    /// when both sides know every byte arrived.
    pub fn poll_close_session(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sh = lock(&self.handle.shared);
        // A clean end is reported once the last CLOSE is written: a caller
        // that then drops its runtime must not take that frame with it, or
        // the peer would resume to learn the outcome.
        if let Some(outcome) = &sh.outcome {
            if sh.flushed || outcome.is_err() {
                return Poll::Ready(outcome.clone().map_err(io::Error::from));
            }
            set_waker(&mut sh.waiter, cx);
            return Poll::Pending;
        }
        sh.session.close();
        set_waker(&mut sh.waiter, cx);
        drop(sh);
        self.handle.wake_driver();
        Poll::Pending
    }

    /// Closes the session gracefully and waits until it finished: `Ok` when
    /// both sides know every byte arrived, otherwise the session's error.
    ///
    /// Not to be confused with the futures-io `close` (`AsyncWriteExt::close`),
    /// which is only the half-close of [`FtStream::poll_shutdown`].
    pub async fn close_session(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_close_session(cx)).await
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

impl Drop for FtStream {
    fn drop(&mut self) {
        let mut sh = lock(&self.handle.shared);
        if !sh.session.is_finished() {
            sh.session.close();
        }
        drop(sh);
        self.handle.wake_driver();
    }
}

/// The futures-io traits, for `FtStream` and for `&FtStream`: through a
/// shared reference, like `&TcpStream`, one task may read while another
/// writes (the session is behind a lock, so the two never race).
/// `poll_close` is the half-close ([`FtStream::poll_shutdown`], like
/// `shutdown(Write)` on TCP); [`FtStream::poll_close_session`] ends the session.
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

/// Starts a client session over transports from `connector` and completes
/// once the first handshake is done. The session's driver runs on `rt`.
pub async fn connect<R: Runtime, C: Connect>(
    rt: R,
    config: Config,
    connector: C,
) -> io::Result<FtStream> {
    let seed = OsEntropy.next_u64();
    let session = Session::client(config, rt.now(), seed);
    let handle = Handle::new(session);
    let driver = Driver::client(rt.clone(), handle.clone(), Arc::new(connector));
    rt.spawn(driver);
    let stream = FtStream::new(handle);
    poll_fn(|cx| stream.poll_established(cx)).await?;
    Ok(stream)
}
