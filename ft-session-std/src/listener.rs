//! The server side: the shared async listener (`ft_session_async::Listener`,
//! on the core's [`Endpoint`](ft_session_core::Endpoint)) on this crate's
//! I/O threads. TCP is accepted on the reactor (the smol adapter's
//! acceptor); a user's iterator of transports runs on a thread of its own,
//! since its `next` blocks.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ft_session_async::{Accept, Accepted, ListenerStats};
use ft_session_core::{Config, EndpointStats, SetCounts};
use ft_session_smol::SmolRuntime;
use smol::stream::Stream;

use crate::runtime::{block_on, runtime, wait};
use crate::stream::FtStream;
use crate::transport::{open, SocketOptions, Transport};

/// Transports a user's iterator may have ready before the listener takes
/// them (it takes them as they come, so this rarely fills).
const INCOMING_BACKLOG: usize = 64;

enum Inner {
    /// TCP, accepted on the reactor.
    Tcp(ft_session_smol::FtListener),
    /// A user's source of transports.
    Incoming(ft_session_async::Listener<SmolRuntime>),
}

type Next = (ft_session_async::FtStream, Option<SocketAddr>);

impl Inner {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Next>> {
        match self {
            Inner::Tcp(l) => l
                .poll_accept(cx)
                .map(|r| r.map(|(s, p)| (s.into_inner(), p))),
            Inner::Incoming(l) => l.poll_accept(cx),
        }
    }

    fn stats(&self) -> ListenerStats {
        match self {
            Inner::Tcp(l) => l.stats(),
            Inner::Incoming(l) => l.stats(),
        }
    }

    fn stop_accepting(&self) {
        match self {
            Inner::Tcp(l) => l.stop_accepting(),
            Inner::Incoming(l) => l.stop_accepting(),
        }
    }

    async fn drain_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match (self, timeout) {
            (Inner::Tcp(l), Some(t)) => l.drain_timeout(t).await,
            (Inner::Incoming(l), Some(t)) => l.drain_timeout(t).await,
            (Inner::Tcp(l), None) => {
                l.drain().await;
                Ok(())
            }
            (Inner::Incoming(l), None) => {
                l.drain().await;
                Ok(())
            }
        }
    }
}

/// The transports a user's iterator yields, handed over by its thread.
struct Incoming(Pin<Box<smol::channel::Receiver<io::Result<Accepted>>>>);

impl Accept for Incoming {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// A listener for fault-tolerant sessions: the counterpart of
/// [`std::net::TcpListener`].
///
/// The I/O threads accept transports, feed each first message to the
/// session endpoint, and route resumes of known sessions to them, whether or
/// not the application is calling [`FtListener::accept`].
/// [`FtListener::drain`] stops admitting new sessions and waits until the
/// existing ones (attached or parked) have ended, still serving their
/// resumes. Dropping the listener instead stops accepting at once (a TCP
/// listener releases its port) and closes transports still in their
/// handshake: streams already accepted keep running until they end, but a
/// parked one can no longer be resumed and expires after
/// `max_reconnect_time`.
pub struct FtListener {
    inner: Inner,
    local_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for FtListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl FtListener {
    /// Binds a TCP listener and starts serving sessions on it.
    ///
    /// Under [`ReleasePolicy::Implicit`](crate::ReleasePolicy::Implicit) the
    /// listening socket's buffers are pinned before listen (accepted sockets
    /// inherit them; their effective sizes are read back on each), as
    /// [`SocketOptions`] describes.
    pub fn bind(addr: impl ToSocketAddrs, config: Config) -> io::Result<FtListener> {
        Self::bind_opts(addr, config, SocketOptions::default())
    }

    /// [`bind`](Self::bind) with explicit socket options: pinned buffer
    /// sizes, a middlebox's in-flight bytes.
    pub fn bind_opts(
        addr: impl ToSocketAddrs,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtListener> {
        config.validate()?;
        let rt = runtime()?;
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            let bound = block_on(ft_session_smol::FtListener::bind_opts_on(
                rt.clone(),
                a,
                config.clone(),
                options,
            ));
            match bound {
                Ok(l) => {
                    return Ok(FtListener {
                        local_addr: l.local_addr().ok(),
                        inner: Inner::Tcp(l),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")))
    }

    /// Serves sessions over transports from any source (Unix sockets, TLS
    /// acceptors, test harnesses). The iterator is driven on a thread of its
    /// own, since its `next` blocks; errors it yields are logged and
    /// skipped; when it ends, no new transports arrive and
    /// [`accept`](Self::accept) fails once the queue is drained.
    ///
    /// `TcpStream`s and `UnixStream`s (or halves split from a `TcpStream`)
    /// are then driven by the I/O threads; other transports cost a reader and
    /// a writer thread each (see [`Transport`]).
    ///
    /// Under [`ReleasePolicy::Implicit`](crate::ReleasePolicy::Implicit) the
    /// transports must be [`TransportHalves`](crate::TransportHalves) whose
    /// `info` gives their pinned, effective buffer sizes; sessions over
    /// transports without them are refused with
    /// [`SessionError::Config`](crate::SessionError::Config).
    pub fn from_incoming<I, T>(config: Config, incoming: I) -> io::Result<FtListener>
    where
        I: IntoIterator<Item = io::Result<T>>,
        I::IntoIter: Send + 'static,
        T: Transport,
    {
        config.validate()?;
        let rt = runtime()?;
        let (tx, rx) = smol::channel::bounded(INCOMING_BACKLOG);
        let iter = incoming.into_iter();
        std::thread::Builder::new()
            .name("ft-session-incoming".into())
            .spawn(move || {
                for t in iter {
                    let accepted = t.and_then(open).map(|o| Accepted {
                        transport: o.transport,
                        info: o.info,
                        peer: o.peer,
                        socket: o.socket,
                    });
                    // The listener is gone: stop taking transports.
                    if tx.send_blocking(accepted).is_err() {
                        break;
                    }
                }
            })?;
        let inner = ft_session_async::Listener::new(rt, config, Incoming(Box::pin(rx)))?;
        Ok(FtListener {
            inner: Inner::Incoming(inner),
            local_addr: None,
        })
    }

    /// Waits for the next new session (resumes never show up here) and its
    /// peer's address (if the transport has one).
    pub fn accept(&self) -> io::Result<(FtStream, Option<SocketAddr>)> {
        let (s, peer) = block_on(std::future::poll_fn(|cx| self.inner.poll_accept(cx)))?;
        Ok((FtStream::new(s), peer))
    }

    /// Like [`accept`](Self::accept), but gives up after `timeout`
    /// (`ErrorKind::TimedOut`).
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<(FtStream, Option<SocketAddr>)> {
        let deadline = Instant::now() + timeout;
        match wait(Some(deadline), |cx| self.inner.poll_accept(cx)) {
            Some(r) => r.map(|(s, peer)| (FtStream::new(s), peer)),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no new session in time",
            )),
        }
    }

    /// An endless iterator over new sessions, like `TcpListener::incoming`.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<FtStream>> + '_ {
        std::iter::from_fn(move || Some(self.accept().map(|(s, _)| s)))
    }

    /// The bound address (listeners from [`bind`](Self::bind) only).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr.ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "listener has no socket address")
        })
    }

    /// The connection set's counts (attached, parked, rejected resumes...).
    pub fn counts(&self) -> SetCounts {
        self.inner.stats().endpoint.set
    }

    /// Everything the endpoint counts: the set's counts, sessions, pending,
    /// refused and expired handshakes.
    pub fn stats(&self) -> EndpointStats {
        self.inner.stats().endpoint
    }

    /// Sessions of this listener whose task still runs: each counts from
    /// its admission until it ended and its last frames were written. What
    /// [`drain`](Self::drain) waits to see at 0.
    pub fn running(&self) -> usize {
        self.inner.stats().running
    }

    /// False once [`stop_accepting`](Self::stop_accepting) (or a drain) was
    /// called.
    pub fn is_accepting(&self) -> bool {
        self.inner.stats().accepting
    }

    /// Stops admitting new sessions, for a server about to stop: a fresh
    /// client is refused with REJECT `BUSY` (it retries with backoff within
    /// its `connect_timeout`, perhaps on another node), while resumes are
    /// still served, so attached and parked sessions go on until they end.
    /// [`accept`](Self::accept) then fails with `NotConnected`; sessions
    /// established but not yet accepted are closed gracefully. Idempotent.
    pub fn stop_accepting(&self) {
        self.inner.stop_accepting()
    }

    /// [`stop_accepting`](Self::stop_accepting), then blocks until every
    /// session of this listener has ended and its task finished, serving
    /// their resumes meanwhile: call it before dropping the listener to let
    /// parked sessions come back and finish. Not bounded (see
    /// [`drain_timeout`](Self::drain_timeout)).
    pub fn drain(&self) {
        // Unbounded: the only outcome is that every session ended.
        let _ = block_on(self.inner.drain_timeout(None));
    }

    /// [`drain`](Self::drain) bounded by `timeout`: `TimedOut` if sessions
    /// still run then (they go on; [`running`](Self::running) counts them,
    /// and dropping the listener stops serving their resumes).
    pub fn drain_timeout(&self, timeout: Duration) -> io::Result<()> {
        block_on(self.inner.drain_timeout(Some(timeout)))
    }
}
