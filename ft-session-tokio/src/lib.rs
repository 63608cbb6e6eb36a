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
//! - Client: [`connect`] over TCP, or a [`Connector`] over any transport
//!   (TLS, Unix sockets, simulated networks).
//! - Server: [`Listener::bind`] over TCP, or [`Listener::from_stream`] over
//!   any stream of transports.
//! - [`FtStream::poll_shutdown`](tokio::io::AsyncWriteExt::shutdown) is a
//!   half-close; [`FtStream::close`] closes gracefully and waits until both
//!   sides know every byte arrived.
//! - Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
//!   (no acknowledgments), [`connect`] and [`Listener::bind`] pin the socket
//!   buffers before connect/listen and report their effective sizes
//!   ([`SocketOptions`]; [`connect_opts`]/[`Listener::bind_opts`] to size
//!   them or declare a proxy's in-flight bytes). Transports from a
//!   [`Connector`] or [`Listener::from_stream`] carry no sizes, so the
//!   implicit policy refuses them (`InvalidInput`, `SessionError::Config`).
//! - Errors are `io::Error`s whose inner error is the core's
//!   [`SessionError`](ft_session_core::SessionError).
//! - `tracing` events report connects, losses, resumes (with both counts)
//!   and expiries.
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use ft_session_tokio::{connect, Listener};
//! use ft_session_core::Config;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = Listener::bind("127.0.0.1:0", Config::default()).await?;
//! let addr = listener.local_addr()?;
//! let server = tokio::spawn(async move {
//!     let (mut stream, _peer) = listener.accept().await?;
//!     let mut buf = Vec::new();
//!     stream.read_to_end(&mut buf).await?; // until the client's half-close
//!     stream.write_all(&buf).await?;
//!     stream.close().await
//! });
//!
//! let mut client = connect(addr, Config::default()).await?;
//! client.write_all(b"hello").await?;
//! client.shutdown().await?;
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

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ft_session_async::{Accept, Accepted, ConnectFuture, Connected};
use ft_session_core::{Config, SessionError, SessionId, TransportInfo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};

pub use ft_session_async::{
    ListenerStats, SocketOptions, StreamStats, DEFAULT_IMPLICIT_SOCKET_BUFFER,
};

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

/// A fault-tolerant session: `AsyncRead + AsyncWrite` across transport crashes.
///
/// `shutdown()` (from `AsyncWriteExt`) is a half-close: the peer reads end of
/// stream after everything written. [`FtStream::close`] ends the session
/// gracefully. Dropping the stream closes it gracefully in the background.
#[derive(Debug)]
pub struct FtStream(ft_session_async::FtStream);

impl FtStream {
    /// Closes the session gracefully: completes with `Ok` once both sides
    /// know every byte arrived (`Finished(Ok)`), or with the session's error.
    pub async fn close(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.0.poll_close_session(cx)).await
    }

    /// Aborts the session at once, telling the peer `code` (0x1000..=0xFFFF).
    pub fn abort(&self, code: u16) {
        self.0.abort(code)
    }

    /// Reconnects, retransmitted bytes, state and the core's counters.
    pub fn stats(&self) -> StreamStats {
        self.0.stats()
    }

    /// The session id.
    pub fn session_id(&self) -> Option<SessionId> {
        self.0.session_id()
    }

    /// How the session ended, once it has.
    pub fn outcome(&self) -> Option<Result<(), SessionError>> {
        self.0.outcome()
    }

    /// The runtime-neutral stream inside.
    pub fn into_inner(self) -> ft_session_async::FtStream {
        self.0
    }
}

impl AsyncRead for FtStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match self.0.poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for FtStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_shutdown(cx)
    }
}

/// Opens client sessions over transports made by a user function, called
/// for the first connection and again for every reconnect (TLS, Unix
/// sockets, simulated networks...).
///
/// Its transports report no buffer sizes: under
/// [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
/// [`Connector::connect`] fails with `InvalidInput`
/// ([`SessionError::Config`]). Use `ft_session_async::connect` with a
/// `Connect` whose `Connected::info` gives the pinned, effective sizes.
pub struct Connector {
    config: Config,
    make: Arc<dyn ft_session_async::Connect>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("config", &self.config)
            .finish_non_exhaustive()
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
            Ok(Connected {
                transport: Box::new(Compat(t)),
                info: TransportInfo::default(),
            })
        })
    }
}

impl Connector {
    /// A connector whose transports come from `make_transport`.
    pub fn new<F, Fut, T>(config: Config, make_transport: F) -> Connector
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Connector {
            config,
            make: Arc::new(MakeTransport(make_transport)),
        }
    }

    /// Starts a session and completes once its first handshake is done.
    pub async fn connect(&self) -> io::Result<FtStream> {
        let make = self.make.clone();
        let connector = move || make.connect();
        ft_session_async::connect(TokioRuntime, self.config.clone(), connector)
            .await
            .map(FtStream)
    }
}

/// Connects a session over TCP to `addr` (resolved once; every reconnect
/// dials the same address).
///
/// Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
/// the socket buffers are pinned before connect and their effective sizes
/// reported, as [`SocketOptions`] describes (by default
/// [`DEFAULT_IMPLICIT_SOCKET_BUFFER`]).
pub async fn connect<A: ToSocketAddrs>(addr: A, config: Config) -> io::Result<FtStream> {
    connect_opts(addr, config, SocketOptions::default()).await
}

/// [`connect`] with explicit socket options: pinned buffer sizes, a
/// middlebox's in-flight bytes.
pub async fn connect_opts<A: ToSocketAddrs>(
    addr: A,
    config: Config,
    options: SocketOptions,
) -> io::Result<FtStream> {
    let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host(addr).await?.collect();
    let dial = TcpDial {
        addrs,
        pin: options.pin_for(config.release_policy),
        options,
    };
    ft_session_async::connect(TokioRuntime, config, dial)
        .await
        .map(FtStream)
}

/// Dials TCP for every (re)connection, pinning buffers first if asked.
struct TcpDial {
    addrs: Arc<[SocketAddr]>,
    pin: Option<usize>,
    options: SocketOptions,
}

impl ft_session_async::Connect for TcpDial {
    fn connect(&self) -> ConnectFuture {
        let (addrs, pin, options) = (self.addrs.clone(), self.pin, self.options);
        Box::pin(async move {
            let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
            for &addr in addrs.iter() {
                match dial_pinned(addr, pin).await {
                    Ok(s) => {
                        let info = options.transport_info(read_back(&s, pin)?);
                        // Small frames (handshakes, acks, requests) must not wait for Nagle.
                        s.set_nodelay(true)?;
                        return Ok(Connected {
                            transport: Box::new(Compat(s)),
                            info,
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

async fn dial_pinned(addr: SocketAddr, pin: Option<usize>) -> io::Result<TcpStream> {
    match pin {
        None => TcpStream::connect(addr).await,
        Some(_) => socket_for(addr, pin)?.connect(addr).await,
    }
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
                s.set_nodelay(true)?;
                Ok(Accepted {
                    transport: Box::new(Compat(s)),
                    info,
                    peer: Some(peer),
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
                    transport: Box::new(Compat(t)),
                    info: TransportInfo::default(),
                    peer,
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

/// A server of fault-tolerant sessions. Resumes are routed to their parked
/// sessions in the background; [`Listener::accept`] yields new sessions only.
#[derive(Debug)]
pub struct Listener {
    inner: ft_session_async::Listener<TokioRuntime>,
    local_addr: Option<SocketAddr>,
}

impl Listener {
    /// Listens on TCP `addr`.
    ///
    /// Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
    /// the listening socket's buffers are pinned before listen (accepted
    /// sockets inherit them; their effective sizes are read back on each),
    /// as [`SocketOptions`] describes.
    pub async fn bind<A: ToSocketAddrs>(addr: A, config: Config) -> io::Result<Listener> {
        Listener::bind_opts(addr, config, SocketOptions::default()).await
    }

    /// [`Listener::bind`] with explicit socket options: pinned buffer sizes,
    /// a middlebox's in-flight bytes.
    pub async fn bind_opts<A: ToSocketAddrs>(
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<Listener> {
        let pin = options.pin_for(config.release_policy);
        let tcp = match pin {
            None => TcpListener::bind(addr).await?,
            Some(_) => listen_pinned(addr, pin).await?,
        };
        let local_addr = Some(tcp.local_addr()?);
        let accept = TcpAccept { tcp, pin, options };
        Ok(Listener {
            inner: ft_session_async::Listener::new(TokioRuntime, config, accept),
            local_addr,
        })
    }

    /// Serves sessions over transports from any stream (TLS acceptors, Unix
    /// listeners, simulated networks), each with its peer's address if known.
    pub fn from_stream<S, T>(stream: S, config: Config) -> Listener
    where
        S: futures_core::Stream<Item = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Listener {
            inner: ft_session_async::Listener::new(
                TokioRuntime,
                config,
                StreamAccept(Box::pin(stream)),
            ),
            local_addr: None,
        }
    }

    /// The next new session and its peer's address.
    pub async fn accept(&self) -> io::Result<(FtStream, Option<SocketAddr>)> {
        self.inner.accept().await.map(|(s, p)| (FtStream(s), p))
    }

    /// The bound TCP address (an error for [`Listener::from_stream`]).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr.ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "listener has no socket address")
        })
    }

    /// The registry's counts (`ConnectionSet::counts()`) and running sessions.
    pub fn stats(&self) -> ListenerStats {
        self.inner.stats()
    }
}
