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
//! - Client: [`connect`] over TCP, or a [`Connector`] over any futures-io
//!   transport (TLS, Unix sockets, async-std's `TcpStream`...).
//! - Server: [`Listener::bind`] over TCP, or [`Listener::from_stream`] over
//!   any stream of transports.
//! - Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
//!   (no acknowledgments), [`connect`] and [`Listener::bind`] pin the socket
//!   buffers before connect/listen and report their effective sizes
//!   ([`SocketOptions`]; [`connect_opts`]/[`Listener::bind_opts`] to size
//!   them or declare a proxy's in-flight bytes). Transports from a
//!   [`Connector`] or [`Listener::from_stream`] carry no sizes, so the
//!   implicit policy refuses them (`InvalidInput`, `SessionError::Config`).
//! - Errors are `io::Error`s whose inner error is the core's
//!   [`SessionError`](ft_session_core::SessionError).
//!
//! ## `close` is a half-close; `close_session` ends the session
//!
//! futures-io has a single `poll_close` ("close the writer"), where Tokio has
//! `poll_shutdown`. On smol's own `TcpStream` it is `shutdown(Write)`: the
//! peer reads end of stream and may still answer. [`FtStream`] does the same,
//! because generic code (`futures::io::copy` followed by `close`, a codec's
//! sink closing its writer) closes its writer and then expects the reply to
//! arrive. So `AsyncWriteExt::close()` is the session's half-close and returns
//! at once; [`FtStream::close_session`] closes the whole session and waits
//! until both sides know every byte arrived. Dropping an `FtStream` closes it
//! gracefully in the background.
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
//! use ft_session_smol::{connect, Listener};
//! use smol::io::{AsyncReadExt, AsyncWriteExt};
//!
//! smol::block_on(async {
//!     let listener = Listener::bind("127.0.0.1:0", Config::default()).await?;
//!     let addr = listener.local_addr()?;
//!     let server = smol::spawn(async move {
//!         let (mut stream, _peer) = listener.accept().await?;
//!         let mut buf = Vec::new();
//!         stream.read_to_end(&mut buf).await?; // until the client's half-close
//!         stream.write_all(&buf).await?;
//!         stream.close_session().await
//!     });
//!
//!     let mut client = connect(addr, Config::default()).await?;
//!     client.write_all(b"hello").await?;
//!     client.close().await?; // futures-io close: a half-close
//!     let mut echo = Vec::new();
//!     client.read_to_end(&mut echo).await?;
//!     assert_eq!(echo, b"hello");
//!     client.close_session().await?;
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
    Accept, AcceptStream, Accepted, ConnectFn, ConnectFuture, Connected, Transport,
};
use ft_session_core::Config;
use smol::net::AsyncToSocketAddrs;
use smol::stream::Stream;
use smol::{Async, Executor};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

pub use ft_session_async::{
    FtStream, ListenerStats, SocketOptions, StreamStats, DEFAULT_IMPLICIT_SOCKET_BUFFER,
};

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

/// Opens client sessions over transports made by a user function, called for
/// the first connection and again for every reconnect. Any futures-io stream
/// will do: smol's or async-std's `TcpStream`, a TLS stream, a Unix socket.
pub struct Connector {
    rt: SmolRuntime,
    config: Config,
    make: Arc<dyn ft_session_async::Connect>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport function has no Debug of its own.
        let Connector { rt, config, .. } = self;
        write!(f, "Connector {{ rt: {rt:?}, config: {config:?}, .. }}")
    }
}

impl Connector {
    /// A connector whose transports come from `make_transport`; sessions run
    /// on smol's global executor.
    pub fn new<F, Fut, T>(config: Config, make_transport: F) -> Connector
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: Transport,
    {
        Connector::new_on(SmolRuntime::global(), config, make_transport)
    }

    /// Like [`Connector::new`], with sessions running on `rt`.
    pub fn new_on<F, Fut, T>(rt: SmolRuntime, config: Config, make_transport: F) -> Connector
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
        T: Transport,
    {
        Connector {
            rt,
            config,
            make: Arc::new(ConnectFn(make_transport)),
        }
    }

    /// Starts a session and completes once its first handshake is done.
    pub async fn connect(&self) -> io::Result<FtStream> {
        let make = self.make.clone();
        ft_session_async::connect(self.rt.clone(), self.config.clone(), move || make.connect())
            .await
    }
}

/// Connects a session over TCP to `addr` (resolved once; every reconnect
/// dials the same addresses), on smol's global executor.
///
/// Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
/// the socket buffers are pinned before connect and their effective sizes
/// reported, as [`SocketOptions`] describes (by default
/// [`DEFAULT_IMPLICIT_SOCKET_BUFFER`]).
pub async fn connect<A: AsyncToSocketAddrs>(addr: A, config: Config) -> io::Result<FtStream> {
    connect_on(SmolRuntime::global(), addr, config).await
}

/// Like [`connect`], with the session running on `rt`.
pub async fn connect_on<A: AsyncToSocketAddrs>(
    rt: SmolRuntime,
    addr: A,
    config: Config,
) -> io::Result<FtStream> {
    connect_opts_on(rt, addr, config, SocketOptions::default()).await
}

/// [`connect`] with explicit socket options: pinned buffer sizes, a
/// middlebox's in-flight bytes.
pub async fn connect_opts<A: AsyncToSocketAddrs>(
    addr: A,
    config: Config,
    options: SocketOptions,
) -> io::Result<FtStream> {
    connect_opts_on(SmolRuntime::global(), addr, config, options).await
}

/// Like [`connect_opts`], with the session running on `rt`.
pub async fn connect_opts_on<A: AsyncToSocketAddrs>(
    rt: SmolRuntime,
    addr: A,
    config: Config,
    options: SocketOptions,
) -> io::Result<FtStream> {
    let addrs: Arc<[SocketAddr]> = smol::net::resolve(addr).await?.into();
    let dial = TcpDial {
        addrs,
        pin: options.pin_for(config.release_policy),
        options,
        timeout: config.handshake_timeout,
    };
    ft_session_async::connect(rt, config, dial).await
}

/// Dials TCP for every (re)connection, pinning buffers first if asked.
struct TcpDial {
    addrs: Arc<[SocketAddr]>,
    pin: Option<usize>,
    options: SocketOptions,
    timeout: Duration,
}

impl ft_session_async::Connect for TcpDial {
    fn connect(&self) -> ConnectFuture {
        let (addrs, pin, options, timeout) =
            (self.addrs.clone(), self.pin, self.options, self.timeout);
        Box::pin(async move {
            let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
            for &addr in addrs.iter() {
                let dialed = match pin {
                    None => Async::<TcpStream>::connect(addr).await,
                    Some(size) => {
                        // async-io makes its own socket; a pinned one is
                        // connected on the blocking pool, then registered.
                        smol::unblock(move || connect_pinned(addr, size, timeout))
                            .await
                            .and_then(Async::new)
                    }
                };
                match dialed {
                    Ok(s) => {
                        let info = options.transport_info(read_back(s.get_ref(), pin)?);
                        // Small frames (handshakes, acks, requests) must not wait for Nagle.
                        s.get_ref().set_nodelay(true)?;
                        let transport: Box<dyn Transport> = Box::new(s);
                        return Ok(Connected { transport, info });
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

fn connect_pinned(addr: SocketAddr, size: usize, timeout: Duration) -> io::Result<TcpStream> {
    let socket = pinned_socket(addr, size)?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
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
        s.set_nodelay(true)?;
        // Async::new makes the socket non-blocking (accepted sockets are not).
        let transport: Box<dyn Transport> = Box::new(Async::new(s)?);
        Ok(Accepted {
            transport,
            info,
            peer: Some(peer),
        })
    }
}

/// A server of fault-tolerant sessions. Resumes are routed to their parked
/// sessions in the background; [`Listener::accept`] yields new sessions
/// only. Dropping it stops accepting; running sessions go on, but can no
/// longer be resumed.
#[derive(Debug)]
pub struct Listener {
    inner: ft_session_async::Listener<SmolRuntime>,
    local_addr: Option<SocketAddr>,
}

impl Listener {
    /// Listens on TCP `addr` (the first resolved address that binds), with
    /// the sessions on smol's global executor.
    ///
    /// Under [`ReleasePolicy::Implicit`](ft_session_core::ReleasePolicy::Implicit)
    /// the listening socket's buffers are pinned before listen (accepted
    /// sockets inherit them; their effective sizes are read back on each),
    /// as [`SocketOptions`] describes.
    pub async fn bind<A: AsyncToSocketAddrs>(addr: A, config: Config) -> io::Result<Listener> {
        Listener::bind_on(SmolRuntime::global(), addr, config).await
    }

    /// Like [`Listener::bind`], with the listener's and sessions' tasks on `rt`.
    pub async fn bind_on<A: AsyncToSocketAddrs>(
        rt: SmolRuntime,
        addr: A,
        config: Config,
    ) -> io::Result<Listener> {
        Listener::bind_opts_on(rt, addr, config, SocketOptions::default()).await
    }

    /// [`Listener::bind`] with explicit socket options: pinned buffer sizes,
    /// a middlebox's in-flight bytes.
    pub async fn bind_opts<A: AsyncToSocketAddrs>(
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<Listener> {
        Listener::bind_opts_on(SmolRuntime::global(), addr, config, options).await
    }

    /// Like [`Listener::bind_opts`], with the tasks on `rt`.
    pub async fn bind_opts_on<A: AsyncToSocketAddrs>(
        rt: SmolRuntime,
        addr: A,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<Listener> {
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
                    let inner = ft_session_async::Listener::new(rt, config, accept);
                    return Ok(Listener { inner, local_addr });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Serves sessions over transports from any stream of futures-io
    /// transports (TLS acceptors, Unix listeners, async-std's `TcpListener`),
    /// each with its peer's address if known; on smol's global executor.
    pub fn from_stream<S, T>(stream: S, config: Config) -> Listener
    where
        S: Stream<Item = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
        T: Transport,
    {
        Listener::from_stream_on(SmolRuntime::global(), stream, config)
    }

    /// Like [`Listener::from_stream`], with the tasks on `rt`.
    pub fn from_stream_on<S, T>(rt: SmolRuntime, stream: S, config: Config) -> Listener
    where
        S: Stream<Item = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
        T: Transport,
    {
        let inner = ft_session_async::Listener::new(rt, config, AcceptStream::new(stream));
        Listener {
            inner,
            local_addr: None,
        }
    }

    /// The next new session and its peer's address.
    pub async fn accept(&self) -> io::Result<(FtStream, Option<SocketAddr>)> {
        self.inner.accept().await
    }

    /// Polls for the next new session.
    pub fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(FtStream, Option<SocketAddr>)>> {
        self.inner.poll_accept(cx)
    }

    /// The bound TCP address; an `Unsupported` error for a listener made by
    /// [`Listener::from_stream`], whose transports have no address of its own.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.local_addr {
            Some(addr) => Ok(addr),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a listener over a stream of transports has no address",
            )),
        }
    }

    /// The registry's counts (attached, parked, expired...) and the sessions
    /// whose driver still runs.
    pub fn stats(&self) -> ListenerStats {
        self.inner.stats()
    }

    /// The configuration given to new sessions.
    pub fn config(&self) -> &Config {
        self.inner.config()
    }
}
