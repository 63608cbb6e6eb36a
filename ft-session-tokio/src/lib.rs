//! # ft-session-tokio
//!
//! Fault-tolerant byte streams for Tokio: an [`FtStream`] is a
//! `tokio::io::AsyncRead + AsyncWrite` that survives transport crashes. The
//! client reconnects and resumes by itself; the server parks the session and
//! routes the resume to it, with no byte lost, duplicated or reordered.
//!
//! This crate is a thin binding: the drive logic lives in `ft-session-async`
//! (shared with other runtimes) and the protocol in `ft-session-core`.
//!
//! The names mirror `tokio::net` and are the same in `ft-session-smol` and
//! `ft-session-std`:
//!
//! - Client: [`FtStream::connect`] over TCP (the address is resolved again
//!   on every reconnect), [`FtStream::connect_opts`] with [`SocketOptions`],
//!   [`FtStream::connect_with`] over any transport (TLS, Unix sockets,
//!   simulated networks).
//! - Server: [`FtListener::bind`] / [`FtListener::bind_opts`] over TCP,
//!   [`FtListener::from_incoming`] over any stream of transports;
//!   [`FtListener::accept`] returns `(FtStream, Option<SocketAddr>)`.
//! - [`FtStream::peer_addr`], [`FtStream::local_addr`] (of the current
//!   transport), [`FtStream::set_nodelay`] (applied to every new transport),
//!   [`FtStream::into_split`], and I/O through `&FtStream`.
//! - Errors are `io::Error`s; [`SessionError::from_io`] gets the core's typed
//!   [`SessionError`] out of one. Every constructor validates its `Config`.
//! - Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
//!   (no acknowledgments), `connect` and `bind` pin the socket buffers before
//!   connect/listen and report their effective sizes ([`SocketOptions`]).
//!   Transports from `connect_with` or `from_incoming` carry no sizes, so the
//!   implicit policy refuses them (`InvalidInput`, `SessionError::Config`).
//!   It is in effect only when both sides chose it: facing a peer under
//!   `Ack`, an implicit side releases on acknowledgments and needs no sizes.
//! - `tracing` events report connects, losses, resumes (with both counts)
//!   and expiries.
//!
//! ## Flush, shutdown, close and drop
//!
//! A session holds bytes the kernel does not, so each call that returns `Ok`
//! promises at least what the same call on a `TcpStream` promises:
//!
//! | call | waits until | `Ok` means | bounded by | cancel-safe |
//! |---|---|---|---|---|
//! | `write` | room in the stream buffer | the bytes are the session's: kept until the peer has them, across reconnects | backpressure only | yes: bytes are taken only by a `Ready(Ok(n))` |
//! | `read` | bytes, end of stream or the session's end | `Ok(0)` is the peer's shutdown or a clean close | – | yes |
//! | `flush` | every byte written so far is in a live transport (the kernel's send buffer, the transport flushed); waits across a reconnect | as `TcpStream::flush`: nothing left in this process for the kernel to take | fails with the session's error | yes |
//! | `shutdown` (`AsyncWriteExt::shutdown` or [`FtStream::shutdown`]) | the peer **session acknowledged every byte** (both release policies acknowledge a FIN) and the FIN is written to a live transport | the peer session has the whole stream, its end on the way as a TCP FIN in the kernel; this side can still read | the close timeout: `TimedOut`, the session goes on | yes: requested by the first poll |
//! | [`FtStream::close`] / [`FtStream::close_timeout`] | the CLOSE exchange finished and the last CLOSE was written; unread input is discarded | both sessions know every byte arrived both ways | the close timeout (default `max_reconnect_time`): then the session is aborted and the call fails with `TimedOut` | the close goes on in the background, still bounded |
//! | drop | nothing | – | the background close, bounded by the close timeout, then abort; the driver ends and the session is freed either way | – |
//! | drop of an [`OwnedWriteHalf`] | nothing | – | a half-close in the background (the FIN follows every byte written), as dropping `tokio::net`'s `OwnedWriteHalf` shuts the write side down; the read half reads on ([`OwnedWriteHalf::forget`] skips it) | – |
//!
//! An error instead of `Ok` means the guarantee does not hold: the bytes may
//! not have arrived. If the runtime or the process ends before a background
//! close finished, the driver ends with it: bytes that an awaited `shutdown`
//! or `close` confirmed are in the peer session; the rest of the stream may
//! be lost and the peer's session expires after `max_reconnect_time`. So
//! `write_all; shutdown().await?; drop` delivers every byte even if the
//! runtime ends right after, as with TCP; without the `shutdown`, only the
//! kernel's copy is left, as after `flush`.
//!
//! The acknowledgment that completes `shutdown` may predate the FIN: under
//! the Ack policy a peer that already acknowledged every byte does not
//! acknowledge the same count again for the FIN. So `Ok` proves every byte
//! is in the peer session, not that its end of stream arrived; the FIN is
//! sent again after every resume while this session lives. Only if this
//! side's driver ends and that last transport breaks before the FIN gets
//! through does the peer, holding every byte, read `Expired` instead of end
//! of stream: an error, never a false end or a missing byte. `close` has no
//! such gap: its CLOSE exchange is confirmed by the peer's own CLOSE.
//!
//! ## Listener: drain and drop
//!
//! | call | effect |
//! |---|---|
//! | [`FtListener::stop_accepting`] | a fresh client is refused with REJECT `BUSY` (it retries with backoff within its `connect_timeout`, perhaps on another node); resumes are still served, so attached and parked sessions go on; `accept` fails with `NotConnected`; sessions established but not yet accepted are closed gracefully |
//! | [`FtListener::drain`] | `stop_accepting`, then waits until every session of the listener has ended and its task finished (last frames written); not bounded, cancel-safe |
//! | [`FtListener::drain_timeout`] | the same, `TimedOut` after the bound (the sessions go on) |
//! | drop | stops accepting transports at once (the port is released) and closes those still in their handshake; running sessions go on until they end, but a parked one can no longer resume and expires after `max_reconnect_time`: drain first to let them come back and finish |
//! | [`FtListener::stats`] | `endpoint` (the core's counts: `set.attached`, `set.parked`, `sessions`, handshakes...), `running` (session tasks still running, what `drain` waits for), `accepting` |
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use ft_session_tokio::{FtListener, FtStream};
//! use ft_session_core::Config;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = FtListener::bind("127.0.0.1:0", Config::default()).await?;
//! let addr = listener.local_addr()?;
//! let server = tokio::spawn(async move {
//!     let (mut stream, _peer) = listener.accept().await?;
//!     let mut buf = Vec::new();
//!     stream.read_to_end(&mut buf).await?; // until the client's half-close
//!     stream.write_all(&buf).await?;
//!     stream.close().await
//! });
//!
//! let mut client = FtStream::connect(addr, Config::default()).await?;
//! client.write_all(b"hello").await?;
//! client.shutdown().await?; // the server's session has every byte
//! let mut echo = Vec::new();
//! client.read_to_end(&mut echo).await?;
//! assert_eq!(echo, b"hello");
//! client.close().await?;
//! server.await??;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ft_session_async::{
    Accept, Accepted, ConnectFuture, Connected, SocketControl, SocketRef, SpareTransport,
};
use ft_session_core::{Config, ServerAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};

pub use ft_session_async::{
    Bytes, ListenerStats, SocketOptions, StreamStats, DEFAULT_IMPLICIT_SOCKET_BUFFER,
};
pub use ft_session_core::{SessionError, ToServerAddr};

/// The Tokio [`ft_session_async::Runtime`]: Tokio's (pausable) clock, timer and spawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

/// Tokio's sleep as a resettable [`ft_session_async::Timer`].
#[derive(Debug)]
pub struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl ft_session_async::Timer for TokioTimer {
    fn reset(&mut self, deadline: Instant) {
        self.0.as_mut().reset(deadline.into());
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl ft_session_async::Runtime for TokioRuntime {
    type Timer = TokioTimer;

    fn now(&self) -> Instant {
        // Tokio's clock, so tests with paused time drive the session's timers.
        tokio::time::Instant::now().into_std()
    }

    fn timer(&self, deadline: Instant) -> TokioTimer {
        TokioTimer(Box::pin(tokio::time::sleep_until(deadline.into())))
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        tokio::spawn(future);
    }
}

/// A Tokio I/O object seen through the `futures-io` traits the shared driver uses.
#[derive(Debug)]
pub struct Compat<T>(pub T);

impl<T: AsyncRead + Unpin> futures_io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut self.0).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Reads into the driver's buffer without zeroing it first (Tokio's
/// `ReadBuf` tracks uninitialized memory): put a `Compat` in a
/// [`SpareTransport`].
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ft_session_async::ReadSpare for Compat<T> {
    fn poll_read_spare(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        // `read_buf` holds no state between polls: a new one each time.
        let read = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(
            &mut self.get_mut().0,
            buf
        ));
        read.poll(cx)
    }
}

impl<T: AsyncWrite + Unpin> futures_io::AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A fault-tolerant session: `AsyncRead + AsyncWrite` across transport
/// crashes. See the crate docs for what `flush`, `shutdown`, `close` and
/// drop wait for.
#[derive(Debug)]
pub struct FtStream(ft_session_async::FtStream);

impl FtStream {
    /// Connects a session over TCP to `addr` and completes the first
    /// handshake. A host name is resolved again on every reconnect attempt,
    /// and each address it yields is tried in turn.
    ///
    /// Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
    /// the socket buffers are pinned before connect and their effective sizes
    /// reported, as [`SocketOptions`] describes (by default
    /// [`DEFAULT_IMPLICIT_SOCKET_BUFFER`]).
    pub async fn connect<A: ToServerAddr>(addr: A, config: Config) -> io::Result<FtStream> {
        FtStream::connect_opts(addr, config, SocketOptions::default()).await
    }

    /// [`FtStream::connect`] with explicit socket options: pinned buffer
    /// sizes, a middlebox's in-flight bytes.
    pub async fn connect_opts<A: ToServerAddr>(
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtStream> {
        config.validate()?;
        let dial = TcpDial {
            addr: addr.to_server_addr()?,
            pin: options.pin_for(config.release_policy),
            options,
        };
        ft_session_async::connect(TokioRuntime, config, dial)
            .await
            .map(FtStream)
    }

    /// Connects a session over transports made by `make_transport`, called
    /// for the first connection and again for every reconnect (TLS, Unix
    /// sockets, simulated networks...).
    ///
    /// Its transports report no buffer sizes: under
    /// [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
    /// this fails with `InvalidInput` ([`SessionError::Config`]). Use
    /// `ft_session_async::connect` with a `Connect` whose `Connected::info`
    /// gives the pinned, effective sizes.
    pub async fn connect_with<F, Fut, T>(config: Config, make_transport: F) -> io::Result<FtStream>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        ft_session_async::connect(TokioRuntime, config, MakeTransport(make_transport))
            .await
            .map(FtStream)
    }

    // close, close_timeout, shutdown, abort, stats, session_id, outcome,
    // peer_addr, local_addr, set_nodelay, nodelay, send_bytes, poll_send,
    // read_chunk, poll_read_chunk: the same in every async adapter.
    ft_session_async::forward_stream_methods! {
        /// Half-closes and waits until the peer session acknowledged every byte
        /// (the same as `AsyncWriteExt::shutdown`; see the crate docs).
        shutdown
    }

    /// Splits the stream into owned halves that can move to different tasks
    /// (like `TcpStream::into_split`). The session closes in the background
    /// once both halves are dropped, as when the stream is.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let inner = Arc::new(self.0);
        let write = OwnedWriteHalf {
            inner: inner.clone(),
            shutdown_on_drop: true,
        };
        (OwnedReadHalf(inner), write)
    }

    /// The runtime-neutral stream inside.
    pub fn into_inner(self) -> ft_session_async::FtStream {
        self.0
    }
}

fn tokio_read(
    s: &ft_session_async::FtStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let dst = buf.initialize_unfilled();
    match s.poll_read(cx, dst) {
        Poll::Ready(Ok(n)) => {
            buf.advance(n);
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// The session behind each of this crate's I/O types.
trait Inner {
    fn inner(&self) -> &ft_session_async::FtStream;
}

impl Inner for FtStream {
    fn inner(&self) -> &ft_session_async::FtStream {
        &self.0
    }
}

impl Inner for &FtStream {
    fn inner(&self) -> &ft_session_async::FtStream {
        &self.0
    }
}

impl Inner for OwnedReadHalf {
    fn inner(&self) -> &ft_session_async::FtStream {
        &self.0
    }
}

impl Inner for OwnedWriteHalf {
    fn inner(&self) -> &ft_session_async::FtStream {
        &self.inner
    }
}

/// `AsyncRead` for the stream, a shared reference to it (one task may read
/// while another writes, like `&TcpStream`) and the read half.
macro_rules! tokio_read_impls {
    ($($ty:ty),*) => {$(
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                tokio_read(self.inner(), cx, buf)
            }
        }
    )*};
}

/// `AsyncWrite` for the stream, a shared reference to it and the write half.
macro_rules! tokio_write_impls {
    ($($ty:ty),*) => {$(
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.inner().poll_write(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.inner().poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.inner().poll_shutdown(cx)
            }
        }
    )*};
}

tokio_read_impls!(FtStream, &FtStream, OwnedReadHalf);
tokio_write_impls!(FtStream, &FtStream, OwnedWriteHalf);

/// The reading half of an [`FtStream`] from [`FtStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf(Arc<ft_session_async::FtStream>);

/// The writing half of an [`FtStream`] from [`FtStream::into_split`]:
/// `write`, `flush` and `shutdown` as on the stream.
///
/// Dropping it half-closes the session, as dropping `tokio::net`'s
/// `OwnedWriteHalf` shuts the socket's write side down: the peer reads end
/// of stream after every byte written, sent in the background, while the
/// read half can still read; nothing waits for the peer's acknowledgment
/// (await [`OwnedWriteHalf::shutdown`] for that).
/// [`OwnedWriteHalf::forget`] drops it without the half-close.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    inner: Arc<ft_session_async::FtStream>,
    shutdown_on_drop: bool,
}

impl OwnedReadHalf {
    /// Joins the halves again; gives them back if they are not from the same stream.
    pub fn reunite(
        self,
        other: OwnedWriteHalf,
    ) -> Result<FtStream, (OwnedReadHalf, OwnedWriteHalf)> {
        if !Arc::ptr_eq(&self.0, &other.inner) {
            return Err((self, other));
        }
        other.forget();
        match Arc::try_unwrap(self.0) {
            Ok(s) => Ok(FtStream(s)),
            // Unreachable: the two halves held the only references.
            Err(arc) => Err((
                OwnedReadHalf(arc.clone()),
                OwnedWriteHalf {
                    inner: arc,
                    shutdown_on_drop: true,
                },
            )),
        }
    }

    /// The peer's address on the current transport.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    /// The local address of the current transport.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl OwnedWriteHalf {
    /// Half-closes and waits until the peer session acknowledged every byte.
    pub async fn shutdown(&self) -> io::Result<()> {
        self.inner.shutdown().await
    }

    /// Closes the whole session (see [`FtStream::close`]).
    pub async fn close(&self) -> io::Result<()> {
        self.inner.close().await
    }

    /// Drops the half without half-closing the session (like
    /// `tokio::net::tcp::OwnedWriteHalf::forget`): the session ends when the
    /// read half is dropped.
    pub fn forget(mut self) {
        self.shutdown_on_drop = false;
    }

    /// The peer's address on the current transport.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address of the current transport.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            self.inner.shutdown_in_background();
        }
    }
}

struct MakeTransport<F>(F);

impl<F, Fut, T> ft_session_async::Connect for MakeTransport<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<T>> + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn connect(&self) -> ConnectFuture {
        let fut = (self.0)();
        Box::pin(async move {
            let t = fut.await?;
            Ok(Connected::new(Box::new(SpareTransport::new(Compat(t)))))
        })
    }
}

/// A Tokio TCP stream shared between the session's driver (reads and
/// writes through `&TcpStream`) and the application (addresses, nodelay).
#[derive(Debug, Clone)]
struct TcpTransport(Arc<TcpStream>);

impl TcpTransport {
    /// Runs the non-blocking `op` once the socket is ready for it (`ready`
    /// is `poll_read_ready` or `poll_write_ready`); a `WouldBlock` means the
    /// readiness was stale (Tokio cleared it), so it waits again.
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        ready: fn(&TcpStream, &mut Context<'_>) -> Poll<io::Result<()>>,
        mut op: impl FnMut(&TcpStream) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match ready(&self.0, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match op(&self.0) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl futures_io::AsyncRead for TcpTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, TcpStream::poll_read_ready, |s| s.try_read(buf))
    }
}

impl ft_session_async::ReadSpare for TcpTransport {
    fn poll_read_spare(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        // Reads into the spare capacity without zeroing it.
        self.poll_io(cx, TcpStream::poll_read_ready, |s| s.try_read_buf(buf))
    }
}

impl futures_io::AsyncWrite for TcpTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, TcpStream::poll_write_ready, |s| s.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, TcpStream::poll_write_ready, |s| {
            s.try_write_vectored(bufs)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The kernel owns what was written.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

impl SocketControl for TcpTransport {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay)
    }
}

/// A TCP stream as the driver's transport plus its socket handle.
fn tcp_parts(s: TcpStream) -> (Box<dyn ft_session_async::Transport>, Option<SocketRef>) {
    let t = TcpTransport(Arc::new(s));
    let socket: SocketRef = Arc::new(t.clone());
    let fresh = Fresh {
        t,
        read: true,
        write: true,
    };
    (Box::new(SpareTransport::new(fresh)), Some(socket))
}

/// A new socket whose first read and first write are tried at once.
/// Tokio knows nothing of a socket's readiness until its I/O driver has
/// turned once since the registration, and waits for that before any
/// system call: for a connect, a hand-off to the thread polling the driver
/// and back before the HELLO goes out, and another before the server reads
/// a HELLO already in its socket. Each direction's first call goes to the
/// socket directly (non-blocking); only a `WouldBlock` waits for
/// readiness, and from then on every call goes through Tokio's.
struct Fresh {
    t: TcpTransport,
    /// The next read is the first.
    read: bool,
    /// The next write is the first.
    write: bool,
}

impl Fresh {
    /// `op` on the socket itself if `first` (cleared), `None` if it would
    /// block or was not tried.
    fn direct<R>(
        first: &mut bool,
        t: &TcpTransport,
        op: impl FnOnce(&socket2::Socket) -> io::Result<R>,
    ) -> Option<io::Result<R>> {
        if !std::mem::take(first) {
            return None;
        }
        match op(&socket2::SockRef::from(&*t.0)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }
}

impl futures_io::AsyncRead for Fresh {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = Fresh::direct(&mut this.read, &this.t, |mut s| io::Read::read(&mut s, buf))
        {
            return Poll::Ready(r);
        }
        Pin::new(&mut this.t).poll_read(cx, buf)
    }
}

impl ft_session_async::ReadSpare for Fresh {
    fn poll_read_spare(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = Fresh::direct(&mut this.read, &this.t, |s| {
            ft_session_async::read_spare(s, buf)
        }) {
            return Poll::Ready(r);
        }
        Pin::new(&mut this.t).poll_read_spare(cx, buf)
    }
}

impl futures_io::AsyncWrite for Fresh {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = Fresh::direct(&mut this.write, &this.t, |mut s| {
            io::Write::write(&mut s, buf)
        }) {
            return Poll::Ready(r);
        }
        Pin::new(&mut this.t).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = Fresh::direct(&mut this.write, &this.t, |mut s| {
            io::Write::write_vectored(&mut s, bufs)
        }) {
            return Poll::Ready(r);
        }
        Pin::new(&mut this.t).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.t).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.t).poll_close(cx)
    }
}

/// Resolves `addr` now (every attempt: a name may point elsewhere by now).
async fn resolve(addr: &ServerAddr) -> io::Result<Vec<SocketAddr>> {
    match addr {
        ServerAddr::Addrs(a) => Ok(a.clone()),
        ServerAddr::Host { host, port } => Ok(tokio::net::lookup_host((host.as_str(), *port))
            .await?
            .collect()),
    }
}

/// Dials TCP for every (re)connection, pinning buffers first if asked.
struct TcpDial {
    addr: ServerAddr,
    pin: Option<usize>,
    options: SocketOptions,
}

impl ft_session_async::Connect for TcpDial {
    fn connect(&self) -> ConnectFuture {
        let (addr, pin, options) = (self.addr.clone(), self.pin, self.options);
        Box::pin(async move {
            let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
            for a in resolve(&addr).await? {
                match dial_pinned(a, pin).await {
                    Ok(s) => {
                        let info = options.transport_info(read_back(&s, pin)?);
                        // The session's nodelay setting is applied by the driver.
                        let (transport, socket) = tcp_parts(s);
                        return Ok(Connected {
                            transport,
                            info,
                            socket,
                        });
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}

/// A new TCP socket for `addr`, its buffers pinned to `pin` (before connect
/// or listen: this turns Linux's autotuning off for the socket's life).
fn socket_for(addr: SocketAddr, pin: Option<usize>) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = pin {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        socket.set_send_buffer_size(size)?;
        socket.set_recv_buffer_size(size)?;
    }
    Ok(socket)
}

/// Whether a non-blocking connect's error only says "under way".
fn in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

/// Connects a TCP socket (its buffers pinned first if asked) without
/// blocking. A connect to a loopback address is usually complete when the
/// call returns: then the stream is used at once, with no turn of the
/// reactor to report it writable. Otherwise it waits for writability, as
/// `TcpStream::connect` does (the session's handshake timeout bounds it).
async fn dial_pinned(addr: SocketAddr, pin: Option<usize>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(size) = pin {
        socket.set_send_buffer_size(size)?;
        socket.set_recv_buffer_size(size)?;
    }
    socket.set_nonblocking(true)?;
    if let Err(e) = socket.connect(&addr.into()) {
        if !in_progress(&e) {
            return Err(e);
        }
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    if stream.peer_addr().is_err() {
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        // Not connected after all (a spurious readiness): say why.
        stream.peer_addr()?;
    }
    Ok(stream)
}

/// The effective `(SO_SNDBUF, SO_RCVBUF)` of a pinned socket, read back now
/// (an accepted socket inherits the listener's); `None` if not pinned.
fn read_back(s: &TcpStream, pin: Option<usize>) -> io::Result<Option<(usize, usize)>> {
    if pin.is_none() {
        return Ok(None);
    }
    let s = socket2::SockRef::from(s);
    Ok(Some((s.send_buffer_size()?, s.recv_buffer_size()?)))
}

struct TcpAccept {
    tcp: TcpListener,
    pin: Option<usize>,
    options: SocketOptions,
}

impl Accept for TcpAccept {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>> {
        let (pin, options) = (self.pin, self.options);
        self.tcp.poll_accept(cx).map(|r| {
            Some(r.and_then(|(s, peer)| {
                let info = options.transport_info(read_back(&s, pin)?);
                // The handshake is small and must not wait for Nagle; the
                // session applies its own setting once it owns the socket.
                s.set_nodelay(true)?;
                let (transport, socket) = tcp_parts(s);
                Ok(Accepted {
                    transport,
                    info,
                    peer: Some(peer),
                    socket,
                })
            }))
        })
    }
}

struct StreamAccept<S>(Pin<Box<S>>);

impl<S, T> Accept for StreamAccept<S>
where
    S: futures_core::Stream<Item = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>> {
        self.0.as_mut().poll_next(cx).map(|o| {
            o.map(|r| {
                r.map(|(t, peer)| Accepted {
                    peer,
                    ..Accepted::new(Box::new(SpareTransport::new(Compat(t))))
                })
            })
        })
    }
}

/// Binds the first of `addr`'s addresses that binds, with pinned buffers.
async fn listen_pinned<A: ToSocketAddrs>(addr: A, pin: Option<usize>) -> io::Result<TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
    for a in tokio::net::lookup_host(addr).await? {
        let bound = socket_for(a, pin).and_then(|s| {
            // Like `TcpListener::bind` on Unix: a restarted server can rebind
            // while old connections sit in TIME_WAIT.
            #[cfg(unix)]
            s.set_reuseaddr(true)?;
            s.bind(a)?;
            s.listen(1024)
        });
        match bound {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A server of fault-tolerant sessions: the counterpart of
/// `tokio::net::TcpListener`. Resumes are routed to their parked sessions in
/// the background; [`FtListener::accept`] yields new sessions only.
///
/// [`FtListener::drain`] stops admitting new sessions and waits until the
/// existing ones have ended, still serving their resumes; dropping the
/// listener stops at once, and parked sessions can no longer resume (see
/// the crate docs).
#[derive(Debug)]
pub struct FtListener {
    inner: ft_session_async::Listener<TokioRuntime>,
    local_addr: Option<SocketAddr>,
}

impl FtListener {
    /// Listens on TCP `addr`. An invalid `config` fails here with
    /// `InvalidInput` ([`SessionError::Config`]).
    ///
    /// Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
    /// the listening socket's buffers are pinned before listen (accepted
    /// sockets inherit them; their effective sizes are read back on each),
    /// as [`SocketOptions`] describes.
    pub async fn bind<A: ToSocketAddrs>(addr: A, config: Config) -> io::Result<FtListener> {
        FtListener::bind_opts(addr, config, SocketOptions::default()).await
    }

    /// [`FtListener::bind`] with explicit socket options: pinned buffer
    /// sizes, a middlebox's in-flight bytes.
    pub async fn bind_opts<A: ToSocketAddrs>(
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtListener> {
        config.validate()?;
        let pin = options.pin_for(config.release_policy);
        let tcp = match pin {
            None => TcpListener::bind(addr).await?,
            Some(_) => listen_pinned(addr, pin).await?,
        };
        let local_addr = Some(tcp.local_addr()?);
        let accept = TcpAccept { tcp, pin, options };
        Ok(FtListener {
            inner: ft_session_async::Listener::new(TokioRuntime, config, accept)?,
            local_addr,
        })
    }

    /// Serves sessions over transports from any stream (TLS acceptors, Unix
    /// listeners, simulated networks), each with its peer's address if known.
    pub fn from_incoming<S, T>(config: Config, incoming: S) -> io::Result<FtListener>
    where
        S: futures_core::Stream<Item = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Ok(FtListener {
            inner: ft_session_async::Listener::new(
                TokioRuntime,
                config,
                StreamAccept(Box::pin(incoming)),
            )?,
            local_addr: None,
        })
    }

    // accept, poll_accept, local_addr, stats, config, stop_accepting,
    // drain, drain_timeout: the same in every async adapter.
    ft_session_async::forward_listener_methods!();
}

// The README is the crates.io page: its code runs as a doctest, so it cannot
// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
