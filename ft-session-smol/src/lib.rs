//! # ft-session-smol
//!
//! Fault-tolerant byte streams for smol (and anything else built on
//! futures-io and async-io, such as async-std): an [`FtStream`] is a
//! `futures_io::AsyncRead + AsyncWrite` that survives transport crashes. The
//! client reconnects and resumes by itself; the server parks the session and
//! routes the resume to it, with no byte lost, duplicated or reordered.
//!
//! This crate only binds smol: the drive logic lives in `ft-session-async`
//! (shared with the Tokio adapter) and the protocol in `ft-session-core`.
//! smol's sockets already speak futures-io, so they are used as they are.
//!
//! The names mirror `smol::net` / `std::net` and are the same in
//! `ft-session-tokio` and `ft-session-std`:
//!
//! - Client: [`FtStream::connect`] over TCP (the address is resolved again
//!   on every reconnect), [`FtStream::connect_opts`] with [`SocketOptions`],
//!   [`FtStream::connect_with`] over any futures-io transport (TLS, Unix
//!   sockets, async-std's `TcpStream`...).
//! - Server: [`FtListener::bind`] / [`FtListener::bind_opts`] over TCP,
//!   [`FtListener::from_incoming`] over any stream of transports;
//!   [`FtListener::accept`] returns `(FtStream, Option<SocketAddr>)`.
//! - [`FtStream::peer_addr`], [`FtStream::local_addr`] (of the current
//!   transport), [`FtStream::set_nodelay`] (applied to every new transport),
//!   and I/O through `&FtStream`.
//! - Errors are `io::Error`s; [`SessionError::from_io`] gets the core's typed
//!   [`SessionError`] out of one. Every constructor validates its `Config`.
//! - Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
//!   (no acknowledgments), `connect` and `bind` pin the socket buffers before
//!   connect/listen and report their effective sizes ([`SocketOptions`]).
//!   Transports from `connect_with` or `from_incoming` carry no sizes, so the
//!   implicit policy refuses them (`InvalidInput`, `SessionError::Config`).
//!   It is in effect only when both sides chose it: facing a peer under
//!   `Ack`, an implicit side releases on acknowledgments and needs no sizes.
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
//! | [`FtStream::shutdown`], and futures-io `poll_close` | the peer **session acknowledged every byte** (both release policies acknowledge a FIN) and the FIN is written to a live transport | the peer session has the whole stream, its end on the way as a TCP FIN in the kernel; this side can still read | the close timeout: `TimedOut`, the session goes on | yes: requested by the first poll |
//! | [`FtStream::close`] / [`FtStream::close_timeout`] | the CLOSE exchange finished and the last CLOSE was written; unread input is discarded | both sessions know every byte arrived both ways | the close timeout (default `max_reconnect_time`): then the session is aborted and the call fails with `TimedOut` | the close goes on in the background, still bounded |
//! | drop | nothing | – | the background close, bounded by the close timeout, then abort; the driver ends and the session is freed either way | – |
//!
//! An error instead of `Ok` means the guarantee does not hold: the bytes may
//! not have arrived. If the executor or the process ends before a background
//! close finished, the driver ends with it: bytes that an awaited `shutdown`
//! or `close` confirmed are in the peer session; the rest of the stream may
//! be lost and the peer's session expires after `max_reconnect_time`.
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
//! **`close` is the session's close.** futures-io has a single `poll_close`
//! ("close the writer"); on smol's `TcpStream` it is `shutdown(Write)`, and
//! generic code (`futures::io::copy` then `close`, a codec's sink) calls it
//! to end its writing and then expects the reply. So the trait's
//! `poll_close` is the half-close [`FtStream::shutdown`]. The inherent
//! [`FtStream::close`] (which a direct `stream.close()` call picks before
//! `AsyncWriteExt::close`) ends the whole session, with the same meaning as
//! in the Tokio and std adapters.
//!
//! ## Executors and timers
//!
//! Every session runs one driver task, and a listener two more (accepting and
//! expiring parked sessions). By default they are spawned on smol's global
//! executor (`smol::spawn`), which runs on its own threads, so an application
//! that merely calls `smol::block_on` works. Programs that run their own
//! [`smol::Executor`] hand it over with [`SmolRuntime::executor`] and the
//! `*_on` constructors; other executors (async-std's) plug in through
//! [`SmolRuntime::spawn_with`]. Timers are async-io's ([`smol::Timer`]) on
//! the standard clock; async-io's reactor serves them and the sockets from
//! its own thread whenever no `block_on` is driving it, so any executor works.
//!
//! ## Example
//!
//! ```
//! use ft_session_core::Config;
//! use ft_session_smol::{FtListener, FtStream};
//! use smol::io::{AsyncReadExt, AsyncWriteExt};
//!
//! smol::block_on(async {
//!     let listener = FtListener::bind("127.0.0.1:0", Config::default()).await?;
//!     let addr = listener.local_addr()?;
//!     let server = smol::spawn(async move {
//!         let (mut stream, _peer) = listener.accept().await?;
//!         let mut buf = Vec::new();
//!         stream.read_to_end(&mut buf).await?; // until the client's half-close
//!         stream.write_all(&buf).await?;
//!         stream.close().await
//!     });
//!
//!     let mut client = FtStream::connect(addr, Config::default()).await?;
//!     client.write_all(b"hello").await?;
//!     client.shutdown().await?; // the server's session has every byte
//!     let mut echo = Vec::new();
//!     client.read_to_end(&mut echo).await?;
//!     assert_eq!(echo, b"hello");
//!     client.close().await?;
//!     server.await
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ft_session_async::{
    Accept, AcceptStream, Accepted, ConnectFn, ConnectFuture, Connected, SocketControl, SocketRef,
    Transport,
};
use ft_session_core::{Config, ServerAddr};
use smol::future::FutureExt as _;
use smol::net::AsyncToSocketAddrs;
use smol::stream::Stream;
use smol::{Async, Executor, Timer};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

pub use ft_session_async::{
    Bytes, ListenerStats, SocketOptions, SpareTransport, StreamStats,
    DEFAULT_IMPLICIT_SOCKET_BUFFER,
};
pub use ft_session_core::{SessionError, ToServerAddr};

/// A boxed task, as handed to a [`SmolRuntime::spawn_with`] function.
pub type BoxTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

type SpawnFn = dyn Fn(BoxTask) + Send + Sync + 'static;

#[derive(Clone)]
enum Spawner {
    Global,
    Executor(Arc<Executor<'static>>),
    Custom(Arc<SpawnFn>),
}

/// Where the sessions' background tasks run: the [`ft_session_async::Runtime`]
/// of this crate. Clock and timers are async-io's in every case; only the
/// executor differs.
#[derive(Clone)]
pub struct SmolRuntime {
    spawner: Spawner,
}

impl std::fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let executor = match self.spawner {
            Spawner::Global => "smol global",
            Spawner::Executor(_) => "smol::Executor",
            Spawner::Custom(_) => "custom spawn function",
        };
        f.debug_struct("SmolRuntime")
            .field("executor", &executor)
            .finish()
    }
}

impl Default for SmolRuntime {
    fn default() -> Self {
        SmolRuntime::global()
    }
}

impl SmolRuntime {
    /// Tasks go to smol's global executor (`smol::spawn`), which starts its
    /// own threads (`SMOL_THREADS`, default one) on first use.
    pub fn global() -> SmolRuntime {
        SmolRuntime {
            spawner: Spawner::Global,
        }
    }

    /// Tasks go to `executor`; the application must keep running it (e.g.
    /// `executor.run(...)` on a few threads) for sessions to make progress.
    pub fn executor(executor: Arc<Executor<'static>>) -> SmolRuntime {
        SmolRuntime {
            spawner: Spawner::Executor(executor),
        }
    }

    /// Tasks are handed to `spawn`, which must run them to completion in the
    /// background, e.g. `|task| drop(async_std::task::spawn(task))`.
    pub fn spawn_with<F>(spawn: F) -> SmolRuntime
    where
        F: Fn(BoxTask) + Send + Sync + 'static,
    {
        SmolRuntime {
            spawner: Spawner::Custom(Arc::new(spawn)),
        }
    }
}

/// async-io's timer as a resettable [`ft_session_async::Timer`].
#[derive(Debug)]
pub struct SmolTimer(smol::Timer);

impl ft_session_async::Timer for SmolTimer {
    fn reset(&mut self, deadline: Instant) {
        self.0.set_at(deadline);
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A fired one-shot async-io timer stays pending until it is reset,
        // which is what the driver expects: it re-arms before polling again.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl ft_session_async::Runtime for SmolRuntime {
    type Timer = SmolTimer;

    fn now(&self) -> Instant {
        // async-io's timers run on the standard monotonic clock.
        Instant::now()
    }

    fn timer(&self, deadline: Instant) -> SmolTimer {
        SmolTimer(smol::Timer::at(deadline))
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        // Detached: a session's driver ends by itself once the session has
        // finished, and the listener's tasks once the listener is dropped.
        match &self.spawner {
            Spawner::Global => smol::spawn(future).detach(),
            Spawner::Executor(ex) => ex.spawn(future).detach(),
            Spawner::Custom(spawn) => spawn(Box::pin(future)),
        }
    }
}

/// A fault-tolerant session: `futures_io::AsyncRead + AsyncWrite` across
/// transport crashes. See the crate docs for what `flush`, `shutdown`,
/// `close` and drop wait for.
#[derive(Debug)]
pub struct FtStream(ft_session_async::FtStream);

impl FtStream {
    /// Connects a session over TCP to `addr` and completes the first
    /// handshake, on smol's global executor. A host name is resolved again
    /// on every reconnect attempt, and each address it yields is tried in turn.
    ///
    /// Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
    /// the socket buffers are pinned before connect and their effective sizes
    /// reported, as [`SocketOptions`] describes (by default
    /// [`DEFAULT_IMPLICIT_SOCKET_BUFFER`]).
    pub async fn connect<A: ToServerAddr>(addr: A, config: Config) -> io::Result<FtStream> {
        FtStream::connect_opts_on(
            SmolRuntime::global(),
            addr,
            config,
            SocketOptions::default(),
        )
        .await
    }

    /// Like [`FtStream::connect`], with the session running on `rt`.
    pub async fn connect_on<A: ToServerAddr>(
        rt: SmolRuntime,
        addr: A,
        config: Config,
    ) -> io::Result<FtStream> {
        FtStream::connect_opts_on(rt, addr, config, SocketOptions::default()).await
    }

    /// [`FtStream::connect`] with explicit socket options: pinned buffer
    /// sizes, a middlebox's in-flight bytes.
    pub async fn connect_opts<A: ToServerAddr>(
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtStream> {
        FtStream::connect_opts_on(SmolRuntime::global(), addr, config, options).await
    }

    /// Like [`FtStream::connect_opts`], with the session running on `rt`.
    pub async fn connect_opts_on<A: ToServerAddr>(
        rt: SmolRuntime,
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtStream> {
        config.validate()?;
        let dial = tcp_dial(addr.to_server_addr()?, &config, options);
        ft_session_async::connect(rt, config, dial)
            .await
            .map(FtStream)
    }

    /// Connects a session over transports made by `make_transport`, called
    /// for the first connection and again for every reconnect. Any
    /// futures-io stream will do: smol's or async-std's `TcpStream`, a TLS
    /// stream, a Unix socket. Runs on smol's global executor.
    ///
    /// Its transports report no buffer sizes: under
    /// [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
    /// this fails with `InvalidInput` ([`SessionError::Config`]).
    pub async fn connect_with<F, Fut, T>(config: Config, make_transport: F) -> io::Result<FtStream>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: Transport,
    {
        FtStream::connect_with_on(SmolRuntime::global(), config, make_transport).await
    }

    /// Like [`FtStream::connect_with`], with the session running on `rt`.
    pub async fn connect_with_on<F, Fut, T>(
        rt: SmolRuntime,
        config: Config,
        make_transport: F,
    ) -> io::Result<FtStream>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: Transport,
    {
        ft_session_async::connect(rt, config, ConnectFn(make_transport))
            .await
            .map(FtStream)
    }

    // close, close_timeout, shutdown, abort, stats, session_id, outcome,
    // peer_addr, local_addr, set_nodelay, nodelay, send_bytes, poll_send,
    // read_chunk, poll_read_chunk: the same in every async adapter.
    ft_session_async::forward_stream_methods! {
        /// Half-closes and waits until the peer session acknowledged every byte
        /// (what the futures-io `poll_close` does; see the crate docs).
        shutdown
    }

    /// The runtime-neutral stream inside.
    pub fn into_inner(self) -> ft_session_async::FtStream {
        self.0
    }
}

/// futures-io for the stream and for `&FtStream` (one task may read while
/// another writes, like `&TcpStream`). `poll_close` is the half-close.
macro_rules! futures_io_impls {
    ($($ty:ty),*) => {$(
        impl smol::io::AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.0.poll_read(cx, buf)
            }
        }

        impl smol::io::AsyncWrite for $ty {
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

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.0.poll_shutdown(cx)
            }
        }
    )*};
}

futures_io_impls!(FtStream, &FtStream);

/// A TCP stream as a session's transport, for a
/// [`Connect`](ft_session_async::Connect) or [`Accept`] of your own:
/// wrapped in a [`SpareTransport`], the
/// driver reads it into its reused buffers (see [`read_spare_flowing`]);
/// a clone is its socket handle ([`SocketControl`]), the same socket.
#[derive(Debug, Clone)]
pub struct TcpTransport(Arc<Async<TcpStream>>, bool);

impl TcpTransport {
    /// Wraps a registered TCP stream.
    pub fn new(stream: Async<TcpStream>) -> TcpTransport {
        TcpTransport(Arc::new(stream), false)
    }
}

/// Most bytes one read of [`read_spare_flowing`] initializes and reads
/// into while data flows (the driver's read buffers are 64 KiB).
const FLOWING_READ_MAX: usize = 256 * 1024;

/// Reads what a non-blocking `reader` (a `&TcpStream` under a reactor) has
/// into the spare capacity of `buf`, for [`ReadSpare`](ft_session_async::ReadSpare)
/// implementations: `Ok(n)` appended `n` bytes (`Ok(0)`: end of stream),
/// `WouldBlock` if there was nothing. `flowing` is the transport's own
/// state between calls, `false` at first and after a `WouldBlock`.
///
/// [`ft_session_async::read_spare`] (`read_to_end`) reads into the spare
/// capacity without initializing it, but reads 8 KiB first and doubles:
/// four `recv` calls for 64 KiB. So after a read that filled its buffer
/// (data flows) this one initializes the room (the driver's buffer is a
/// reused, cache-warm one) and reads it with one `recv`; otherwise, when
/// the read may find nothing, it uses `read_spare`.
pub fn read_spare_flowing<R: io::Read>(
    mut reader: R,
    buf: &mut Vec<u8>,
    flowing: &mut bool,
) -> io::Result<usize> {
    let start = buf.len();
    if buf.capacity() == start || !*flowing {
        let r = ft_session_async::read_spare(reader, buf);
        *flowing = r.is_ok() && buf.len() == buf.capacity();
        return r;
    }
    let end = buf.capacity().min(start + FLOWING_READ_MAX);
    buf.resize(end, 0);
    let r = reader.read(&mut buf[start..]);
    let n = *r.as_ref().unwrap_or(&0);
    buf.truncate(start + n);
    *flowing = n > 0 && start + n == end;
    r
}

impl smol::io::AsyncRead for TcpTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl ft_session_async::ReadSpare for TcpTransport {
    fn poll_read_spare(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            // Reads into the driver's buffer, never a fresh zeroed one.
            match read_spare_flowing(this.0.get_ref(), buf, &mut this.1) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return Poll::Ready(r),
            }
            this.1 = false;
            match this.0.poll_readable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl smol::io::AsyncWrite for TcpTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The kernel owns what was written.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

impl SocketControl for TcpTransport {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.get_ref().set_nodelay(nodelay)
    }
}

/// A TCP stream as the driver's transport plus its socket handle (both are
/// the same socket).
fn tcp_parts(s: Async<TcpStream>) -> (Box<dyn Transport>, Option<SocketRef>) {
    let t = TcpTransport::new(s);
    let socket: SocketRef = Arc::new(t.clone());
    // A `SpareTransport`: through `poll_read` the driver zeroes a fresh
    // 64 KiB allocation per read, which the allocator churns (trimmed and
    // faulted in again, page by page); `read_spare_flowing` keeps one
    // `recv` per read while data flows.
    (
        Box::new(ft_session_async::SpareTransport::new(t)),
        Some(socket),
    )
}

/// Resolves `addr` now (every attempt: a name may point elsewhere by now).
async fn resolve(addr: &ServerAddr) -> io::Result<Vec<SocketAddr>> {
    match addr {
        ServerAddr::Addrs(a) => Ok(a.clone()),
        ServerAddr::Host { host, port } => smol::net::resolve((host.as_str(), *port)).await,
    }
}

/// The TCP dial of [`FtStream::connect_opts_on`] as a
/// [`Connect`](ft_session_async::Connect) of its own: for adapters built on
/// this one (ft-session-std dials its reconnects with it).
#[doc(hidden)]
pub fn tcp_dial(
    addr: ServerAddr,
    config: &Config,
    options: SocketOptions,
) -> impl ft_session_async::Connect {
    TcpDial {
        addr,
        pin: options.pin_for(config.release_policy),
        options,
        timeout: config.handshake_timeout,
    }
}

/// Dials TCP for every (re)connection, pinning buffers first if asked.
struct TcpDial {
    addr: ServerAddr,
    pin: Option<usize>,
    options: SocketOptions,
    timeout: Duration,
}

impl ft_session_async::Connect for TcpDial {
    fn connect(&self) -> ConnectFuture {
        let (addr, pin, options, timeout) =
            (self.addr.clone(), self.pin, self.options, self.timeout);
        Box::pin(async move {
            let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
            for a in resolve(&addr).await? {
                match dial(a, pin, timeout).await {
                    Ok(s) => {
                        let info = options.transport_info(read_back(s.get_ref(), pin)?);
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

/// A new TCP socket for `addr`, its buffers pinned to `size` (before connect
/// or listen: this turns Linux's autotuning off for the socket's life).
fn pinned_socket(addr: SocketAddr, size: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_send_buffer_size(size)?;
    socket.set_recv_buffer_size(size)?;
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
/// call returns: then the stream is used at once, with no wait for the
/// reactor to report it writable (on the std adapter that wait is a hand-off
/// between threads). Otherwise it waits for writability, at most `timeout`.
async fn dial(
    addr: SocketAddr,
    pin: Option<usize>,
    timeout: Duration,
) -> io::Result<Async<TcpStream>> {
    let socket = match pin {
        Some(size) => pinned_socket(addr, size)?,
        None => Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?,
    };
    socket.set_nonblocking(true)?;
    if let Err(e) = socket.connect(&addr.into()) {
        if !in_progress(&e) {
            return Err(e);
        }
    }
    let stream = Async::new(TcpStream::from(socket))?;
    if stream.get_ref().peer_addr().is_err() {
        let writable = async { stream.writable().await.map(|()| true) };
        // Bounded here too, as a blocking connect would be (the session's
        // handshake timeout also gives the attempt up).
        let timer = async {
            Timer::after(timeout).await;
            Ok(false)
        };
        if !writable.or(timer).await? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TCP connect timed out",
            ));
        }
        if let Some(e) = stream.get_ref().take_error()? {
            return Err(e);
        }
        // Not connected after all (a spurious readiness): say why.
        stream.get_ref().peer_addr()?;
    }
    Ok(stream)
}

fn listen_pinned(addr: SocketAddr, size: usize) -> io::Result<TcpListener> {
    let socket = pinned_socket(addr, size)?;
    // Like std's `TcpListener::bind` on Unix: a restarted server can rebind
    // while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The effective `(SO_SNDBUF, SO_RCVBUF)` of a pinned socket, read back now
/// (an accepted socket inherits the listener's); `None` if not pinned.
fn read_back(s: &TcpStream, pin: Option<usize>) -> io::Result<Option<(usize, usize)>> {
    if pin.is_none() {
        return Ok(None);
    }
    let s = SockRef::from(s);
    Ok(Some((s.send_buffer_size()?, s.recv_buffer_size()?)))
}

/// Accepts TCP transports straight from the reactor: no boxed future per
/// accept, unlike going through `TcpListener::accept` as a stream.
struct TcpAccept {
    tcp: Async<TcpListener>,
    pin: Option<usize>,
    options: SocketOptions,
}

impl Accept for TcpAccept {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>> {
        loop {
            match self.tcp.get_ref().accept() {
                Ok((s, peer)) => return Poll::Ready(Some(self.accepted(s, peer))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Registers interest; readiness seen since the last
                    // WouldBlock makes it return at once, so nothing is missed.
                    match self.tcp.poll_readable(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl TcpAccept {
    fn accepted(&self, s: TcpStream, peer: SocketAddr) -> io::Result<Accepted> {
        let info = self.options.transport_info(read_back(&s, self.pin)?);
        // The handshake is small and must not wait for Nagle; the session
        // applies its own setting once it owns the socket.
        s.set_nodelay(true)?;
        // Async::new makes the socket non-blocking (accepted sockets are not).
        let (transport, socket) = tcp_parts(Async::new(s)?);
        Ok(Accepted {
            transport,
            info,
            peer: Some(peer),
            socket,
        })
    }
}

/// A server of fault-tolerant sessions: the counterpart of
/// `smol::net::TcpListener`. Resumes are routed to their parked sessions in
/// the background; [`FtListener::accept`] yields new sessions only.
///
/// [`FtListener::drain`] stops admitting new sessions and waits until the
/// existing ones have ended, still serving their resumes; dropping the
/// listener stops at once, and parked sessions can no longer resume (see
/// the crate docs).
#[derive(Debug)]
pub struct FtListener {
    inner: ft_session_async::Listener<SmolRuntime>,
    local_addr: Option<SocketAddr>,
}

impl FtListener {
    /// Listens on TCP `addr` (the first resolved address that binds), with
    /// the sessions on smol's global executor. An invalid `config` fails
    /// here with `InvalidInput` ([`SessionError::Config`]).
    ///
    /// Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
    /// the listening socket's buffers are pinned before listen (accepted
    /// sockets inherit them; their effective sizes are read back on each),
    /// as [`SocketOptions`] describes.
    pub async fn bind<A: AsyncToSocketAddrs>(addr: A, config: Config) -> io::Result<FtListener> {
        FtListener::bind_opts_on(
            SmolRuntime::global(),
            addr,
            config,
            SocketOptions::default(),
        )
        .await
    }

    /// Like [`FtListener::bind`], with the listener's and sessions' tasks on `rt`.
    pub async fn bind_on<A: AsyncToSocketAddrs>(
        rt: SmolRuntime,
        addr: A,
        config: Config,
    ) -> io::Result<FtListener> {
        FtListener::bind_opts_on(rt, addr, config, SocketOptions::default()).await
    }

    /// [`FtListener::bind`] with explicit socket options: pinned buffer
    /// sizes, a middlebox's in-flight bytes.
    pub async fn bind_opts<A: AsyncToSocketAddrs>(
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtListener> {
        FtListener::bind_opts_on(SmolRuntime::global(), addr, config, options).await
    }

    /// Like [`FtListener::bind_opts`], with the tasks on `rt`.
    pub async fn bind_opts_on<A: AsyncToSocketAddrs>(
        rt: SmolRuntime,
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtListener> {
        config.validate()?;
        let pin = options.pin_for(config.release_policy);
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
        for addr in smol::net::resolve(addr).await? {
            let bound = match pin {
                None => Async::<TcpListener>::bind(addr),
                Some(size) => listen_pinned(addr, size).and_then(Async::new),
            };
            match bound {
                Ok(tcp) => {
                    let local_addr = Some(tcp.get_ref().local_addr()?);
                    let accept = TcpAccept { tcp, pin, options };
                    let inner = ft_session_async::Listener::new(rt, config, accept)?;
                    return Ok(FtListener { inner, local_addr });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Serves sessions over transports from any stream of futures-io
    /// transports (TLS acceptors, Unix listeners, async-std's `TcpListener`),
    /// each with its peer's address if known; on smol's global executor.
    pub fn from_incoming<S, T>(config: Config, incoming: S) -> io::Result<FtListener>
    where
        S: Stream<Item = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
        T: Transport,
    {
        FtListener::from_incoming_on(SmolRuntime::global(), config, incoming)
    }

    /// Like [`FtListener::from_incoming`], with the tasks on `rt`.
    pub fn from_incoming_on<S, T>(
        rt: SmolRuntime,
        config: Config,
        incoming: S,
    ) -> io::Result<FtListener>
    where
        S: Stream<Item = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
        T: Transport,
    {
        let inner = ft_session_async::Listener::new(rt, config, AcceptStream::new(incoming))?;
        Ok(FtListener {
            inner,
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
