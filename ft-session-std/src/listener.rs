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

use ft_session_async::{Accept, Accepted};
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

    fn stats(&self) -> EndpointStats {
        match self {
            Inner::Tcp(l) => l.stats().endpoint,
            Inner::Incoming(l) => l.stats().endpoint,
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
/// not the application is calling [`FtListener::accept`]. Dropping the
/// listener stops accepting; streams already accepted keep running.
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
        self.inner.stats().set
    }

    /// Everything the endpoint counts: the set's counts, sessions, pending,
    /// refused and expired handshakes.
    pub fn stats(&self) -> EndpointStats {
        self.inner.stats()
    }
}
