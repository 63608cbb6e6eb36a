//! # ft-session-async
//!
//! The runtime-neutral half of the async adapters of `ft-session`: the drive
//! logic is written once here and shared by `ft-session-tokio` and
//! `ft-session-smol`, which only supply a [`Runtime`] (clock, timer, spawn)
//! and their transports as [`futures_io`] streams.
//!
//! - [`connect`] starts a client session whose [`Connect`]or is called for
//!   every (re)connection, and waits for the first handshake.
//! - [`Listener`] accepts transports from any [`Accept`] source and gives
//!   them to the core's [`Endpoint`](ft_session_core::Endpoint), which reads
//!   each first message under its deadline (at most
//!   `Config::max_pending_handshakes` at once), starts fresh sessions for
//!   [`Listener::accept`] and routes resumes to parked sessions by itself.
//!   [`Listener::drain`] stops admitting new sessions and waits until the
//!   existing ones have ended, still serving their resumes. Both
//!   [`connect`] and [`Listener::new`] refuse an invalid `Config`.
//! - [`ConnectFn`] and [`AcceptStream`] turn functions and streams of
//!   futures-io transports (smol's, async-std's) into those two sources.
//! - [`FtStream`] is the application's end: reads, writes, flush
//!   ([`FtStream::poll_flush`]), half-close ([`FtStream::poll_shutdown`])
//!   and graceful close ([`FtStream::close`]); the adapters' crate docs have
//!   the table of what each waits for, and what drop does.
//!
//! - [`SocketOptions`] is what the bindings' TCP entry points take: pinned
//!   buffer sizes and a middlebox's in-flight bytes, for the implicit release
//!   policy (the bindings pin, read back and report the sizes as
//!   [`TransportInfo`]).
//!
//! Each session has exactly one driver task: it alone reads and writes the
//! session's transport (one task per socket was measured 25-30% faster than a
//! reader and a writer task). The application's calls only touch the
//! [`Session`](ft_session_core::Session) under a mutex and wake the driver;
//! the driver holds that mutex only to feed the session what its I/O did
//! and to poll the next frames, never across a system call. It writes
//! frames in vectored batches of up to 512 KiB (the core's batched
//! contract, `Session::set_reports_written`) and hands what it reads to the
//! core without a copy. [`FtStream::send_bytes`] and [`FtStream::read_chunk`]
//! are the zero-copy write and read.
//! A server session is taken out of the listener's endpoint and reports its
//! events back by handle, so the endpoint's lock never covers a session's
//! data path.
//!
//! A connect crosses as few tasks as it can: [`connect`] runs the new
//! session's driver on the caller's own task until the first handshake is
//! done (then it moves to a task of its own), and the listener's accept
//! loop feeds a new transport's first bytes to the endpoint before spawning
//! anything, the task that read a fresh HELLO becoming the session's
//! driver, which writes the ACCEPT at once.
//!
//! ## Example
//!
//! A runtime binding is three functions; here with Tokio, over loopback TCP:
//!
//! ```
//! use std::{future::Future, pin::Pin, task::{Context, Poll}, time::Instant};
//! use ft_session_async::{Accept, Accepted, Connected, Runtime, Timer, Transport};
//! use ft_session_core::{Config, TransportInfo};
//!
//! #[derive(Clone)]
//! struct Rt;
//! struct Sleep(Pin<Box<tokio::time::Sleep>>);
//! impl Timer for Sleep {
//!     fn reset(&mut self, at: Instant) { self.0.as_mut().reset(at.into()) }
//!     fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> { self.0.as_mut().poll(cx) }
//! }
//! impl Runtime for Rt {
//!     type Timer = Sleep;
//!     fn now(&self) -> Instant { tokio::time::Instant::now().into_std() }
//!     fn timer(&self, at: Instant) -> Sleep { Sleep(Box::pin(tokio::time::sleep_until(at.into()))) }
//!     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) { tokio::spawn(f); }
//! }
//!
//! // A minimal futures-io view of a Tokio TCP stream (ft-session-tokio has a complete one).
//! struct Io(tokio::net::TcpStream);
//! impl futures_io::AsyncRead for Io {
//!     fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
//!         let mut rb = tokio::io::ReadBuf::new(buf);
//!         match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut rb) {
//!             Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
//!             Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
//!             Poll::Pending => Poll::Pending,
//!         }
//!     }
//! }
//! impl futures_io::AsyncWrite for Io {
//!     fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
//!         tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, b)
//!     }
//!     fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> { Poll::Ready(Ok(())) }
//!     fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
//!         tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
//!     }
//! }
//!
//! struct Tcp(tokio::net::TcpListener);
//! impl Accept for Tcp {
//!     fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Accepted>>> {
//!         self.0.poll_accept(cx).map(|r| Some(r.map(|(s, peer)| Accepted {
//!             transport: Box::new(Io(s)), info: TransportInfo::default(), peer: Some(peer), socket: None,
//!         })))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = tcp.local_addr()?;
//! let listener = ft_session_async::Listener::new(Rt, Config::default(), Tcp(tcp))?;
//! let connector = move || -> ft_session_async::ConnectFuture {
//!     Box::pin(async move {
//!         let s = tokio::net::TcpStream::connect(addr).await?;
//!         Ok(Connected::new(Box::new(Io(s)) as Box<dyn Transport>))
//!     })
//! };
//! let mut client = ft_session_async::connect(Rt, Config::default(), connector).await?;
//! let (mut server, _peer) = listener.accept().await?;
//!
//! std::future::poll_fn(|cx| client.poll_write(cx, b"ping")).await?;
//! let mut buf = [0u8; 4];
//! let n = std::future::poll_fn(|cx| server.poll_read(cx, &mut buf)).await?;
//! assert_eq!(&buf[..n], b"ping");
//! client.close().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod adapt;
mod client;
mod driver;
mod entropy;
mod forward;
mod listener;
mod socket;
mod stream;

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ft_session_core::TransportInfo;

pub use adapt::{AcceptStream, ConnectFn};
/// The buffer type of the zero-copy calls ([`FtStream::send_bytes`],
/// [`FtStream::read_chunk`]).
pub use bytes::Bytes;
pub use client::connect;
pub use entropy::OsEntropy;
pub use ft_session_core::{ServerAddr, ToServerAddr};
pub use listener::{Listener, ListenerStats};
pub use socket::{SocketOptions, DEFAULT_IMPLICIT_SOCKET_BUFFER};
pub use stream::{default_close_timeout, FtStream, StreamStats};

/// What an async runtime must provide: a clock, a resettable timer and a way
/// to spawn the driver tasks.
pub trait Runtime: Clone + Send + Sync + Unpin + 'static {
    /// The runtime's timer.
    type Timer: Timer;
    /// The current time on the runtime's clock (Tokio: use
    /// `tokio::time::Instant::now().into_std()` so paused time works).
    fn now(&self) -> Instant;
    /// A timer that fires at `deadline`.
    fn timer(&self, deadline: Instant) -> Self::Timer;
    /// Runs `future` to completion in the background.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F);
}

/// A timer that can be moved to a new deadline without reallocation.
pub trait Timer: Send + Unpin + 'static {
    /// Moves the deadline (earlier or later).
    fn reset(&mut self, deadline: Instant);
    /// Ready once the deadline has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// A byte-stream transport under a session (TCP, TLS, Unix socket...).
/// Adapters wrap their runtime's streams into [`futures_io`] traits.
///
/// Every futures-io stream is one. The driver reads it through
/// `poll_read`, which needs initialized memory, so each read buffer is
/// zeroed first; a transport that can read into uninitialized memory is
/// wrapped in a [`SpareTransport`] instead, which the driver recognizes.
pub trait Transport:
    futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static
{
    /// The transport as `Any`, so the driver can recognize a
    /// [`SpareTransport`] (the blanket implementation cannot be overridden
    /// per type).
    #[doc(hidden)]
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static> Transport for T {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A transport that reads into uninitialized memory: into the spare
/// capacity of a `Vec<u8>`, so the driver never zeroes its read buffer.
pub trait ReadSpare: Transport {
    /// Appends at most `buf.capacity() - buf.len()` bytes read from the
    /// transport to `buf`, returning how many (the caller leaves spare
    /// capacity, so `Ok(0)` is end of stream). The bytes beyond `buf.len()`
    /// are not read or zeroed first.
    fn poll_read_spare(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>>;
}

/// A [`ReadSpare`] transport, boxed as a plain [`Transport`]: put it in
/// [`Connected::transport`] or [`Accepted::transport`] and the driver reads
/// through [`ReadSpare::poll_read_spare`], without zeroing its buffer.
pub struct SpareTransport(Box<dyn ReadSpare>);

impl SpareTransport {
    /// Wraps `transport`.
    pub fn new(transport: impl ReadSpare) -> SpareTransport {
        SpareTransport(Box::new(transport))
    }

    pub(crate) fn poll_read_spare(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_read_spare(cx, buf)
    }
}

impl std::fmt::Debug for SpareTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpareTransport").finish_non_exhaustive()
    }
}

impl futures_io::AsyncRead for SpareTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl futures_io::AsyncWrite for SpareTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_close(cx)
    }
}

/// Reads what a non-blocking `reader` (a `&std::net::TcpStream` under a
/// reactor) has into the spare capacity of `buf` without zeroing it first,
/// for [`ReadSpare`] implementations: `Ok(n)` appended `n` bytes (`Ok(0)`:
/// end of stream), `WouldBlock` if there was nothing. Reserves a little if
/// `buf` has no spare capacity.
///
/// A read error after some bytes returns those bytes; the next call sees
/// the error or the end of stream the kernel reports after it.
pub fn read_spare<R: io::Read>(reader: R, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() == buf.len() {
        buf.reserve(SPARE_MIN);
    }
    let start = buf.len();
    let spare = (buf.capacity() - start) as u64;
    // `read_to_end` reads into the spare capacity without initializing it
    // (std's own unsafe code); `take` keeps it inside that capacity.
    match io::Read::read_to_end(&mut reader.take(spare), buf) {
        Ok(n) => Ok(n),
        Err(_) if buf.len() > start => Ok(buf.len() - start),
        Err(e) => Err(e),
    }
}

/// What [`read_spare`] reserves when `buf` is full.
const SPARE_MIN: usize = 4096;

/// A boxed transport.
pub type BoxTransport = Box<dyn Transport>;

/// The socket under a transport, for what applications ask of a TCP
/// stream: addresses and `TCP_NODELAY`. Transports without a socket (TLS
/// over something else, in-memory pipes) simply have none.
pub trait SocketControl: Send + Sync + 'static {
    /// The local address of the socket.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Sets `TCP_NODELAY`.
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
}

/// A shared handle on a transport's socket.
pub type SocketRef = Arc<dyn SocketControl>;

/// A newly connected client transport.
pub struct Connected {
    /// The transport.
    pub transport: BoxTransport,
    /// Its kernel's effective (read-back) buffer sizes, if pinned and known.
    /// Needed only by the implicit release policy, which refuses to run
    /// without them (`SessionError::Config`). The driver reports what the
    /// transport accepted (the core's batched contract), so its own queue
    /// needs no margin here.
    pub info: TransportInfo,
    /// Its socket, if it has one: `FtStream::peer_addr`, `local_addr` and
    /// `set_nodelay` act on it.
    pub socket: Option<SocketRef>,
}

impl Connected {
    /// A transport with no known buffer sizes and no socket handle.
    pub fn new(transport: BoxTransport) -> Connected {
        Connected {
            transport,
            info: TransportInfo::default(),
            socket: None,
        }
    }
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("info", &self.info)
            .field("socket", &self.socket.is_some())
            .finish_non_exhaustive()
    }
}

/// The future a [`Connect`]or returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Connected>> + Send>>;

/// Opens client transports: called once for the first connection and again
/// for every reconnect.
pub trait Connect: Send + Sync + 'static {
    /// Starts opening a new transport.
    fn connect(&self) -> ConnectFuture;
}

impl<F: Fn() -> ConnectFuture + Send + Sync + 'static> Connect for F {
    fn connect(&self) -> ConnectFuture {
        self()
    }
}

/// A transport accepted by a server.
pub struct Accepted {
    /// The transport.
    pub transport: BoxTransport,
    /// Its buffer sizes, if pinned and known (as for [`Connected::info`]).
    pub info: TransportInfo,
    /// The peer's address, if the transport has one.
    pub peer: Option<SocketAddr>,
    /// Its socket, if it has one (as for [`Connected::socket`]).
    pub socket: Option<SocketRef>,
}

impl Accepted {
    /// A transport with no known sizes, peer address or socket handle.
    pub fn new(transport: BoxTransport) -> Accepted {
        Accepted {
            transport,
            info: TransportInfo::default(),
            peer: None,
            socket: None,
        }
    }
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("info", &self.info)
            .field("peer", &self.peer)
            .field("socket", &self.socket.is_some())
            .finish_non_exhaustive()
    }
}

/// A source of server transports (a TCP listener, a stream of TLS streams...).
pub trait Accept: Send + 'static {
    /// The next transport; `Ready(None)` when the source is exhausted.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>>;
}
