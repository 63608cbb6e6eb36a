//! What a session runs over: anything that can be read, written and shut
//! down from separate threads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use ft_session_core::TransportInfo;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Shuts a transport down from any thread; used to unblock its reader and
/// writer when the session drops it.
pub type ShutdownFn = Arc<dyn Fn(Shutdown) + Send + Sync>;

/// The socket under a transport, for what applications ask of a TCP
/// stream: addresses and `TCP_NODELAY`.
pub trait SocketControl: Send + Sync + 'static {
    /// The local address of the socket.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Sets `TCP_NODELAY`.
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
}

impl SocketControl for TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, nodelay)
    }
}

/// A shared handle on a transport's socket.
pub type SocketRef = Arc<dyn SocketControl>;

/// A transport split for the adapter's threads: one reads, one writes, and
/// `shutdown` unblocks both.
pub struct TransportHalves {
    /// Read side, owned by the transport's reader thread.
    pub reader: Box<dyn Read + Send>,
    /// Write side, owned by the transport's writer thread.
    pub writer: Box<dyn Write + Send>,
    /// Shuts the transport down (must make a blocked `read`/`write` return).
    pub shutdown: ShutdownFn,
    /// Kernel buffer sizes, if pinned and known (only
    /// [`ft_session_core::ReleasePolicy::Implicit`] needs them).
    pub info: TransportInfo,
    /// Its socket, if it has one: `FtStream::peer_addr`, `local_addr` and
    /// `set_nodelay` act on it.
    pub socket: Option<SocketRef>,
}

impl std::fmt::Debug for TransportHalves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportHalves")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A byte-stream transport the session can run over: TCP, Unix sockets, or
/// any `Read + Write` wrapped in [`Locked`] (e.g. a TLS stream).
///
/// The adapter reads and writes a transport from two threads at once (so a
/// long write never stops heartbeats and acknowledgments from being read),
/// hence the split.
pub trait Transport: Send + 'static {
    /// Splits the transport into independent halves.
    fn split(self) -> io::Result<TransportHalves>;
}

impl Transport for TcpStream {
    fn split(self) -> io::Result<TransportHalves> {
        // Session frames are small and latency-sensitive (heartbeats, acks, handshakes).
        self.set_nodelay(true)?;
        let reader = self.try_clone()?;
        let control = Arc::new(self.try_clone()?);
        let socket: SocketRef = control.clone();
        Ok(TransportHalves {
            reader: Box::new(reader),
            writer: Box::new(self),
            shutdown: Arc::new(move |how| {
                // Already shut down or reset: nothing left to unblock.
                let _ = control.shutdown(how);
            }),
            info: TransportInfo::default(),
            socket: Some(socket),
        })
    }
}

#[cfg(unix)]
impl Transport for std::os::unix::net::UnixStream {
    fn split(self) -> io::Result<TransportHalves> {
        let reader = self.try_clone()?;
        let control = self.try_clone()?;
        Ok(TransportHalves {
            reader: Box::new(reader),
            writer: Box::new(self),
            shutdown: Arc::new(move |how| {
                let _ = control.shutdown(how);
            }),
            info: TransportInfo::default(),
            socket: None,
        })
    }
}

impl Transport for TransportHalves {
    fn split(self) -> io::Result<TransportHalves> {
        Ok(self)
    }
}

/// Makes any `Read + Write + Send` usable as a [`Transport`] when it cannot
/// be split (e.g. a TLS stream): reads and writes take turns on one lock.
///
/// The reader holds the lock while it waits for bytes, so the underlying
/// socket **must have a short read timeout** (say 10-50 ms); the adapter
/// treats `WouldBlock`/`TimedOut` as "nothing yet" and lets the writer in.
/// `shutdown` is called when the session drops the transport; it should shut
/// down the underlying socket (e.g. through a `TcpStream::try_clone`).
pub struct Locked<T> {
    inner: Arc<Mutex<T>>,
    shutdown: ShutdownFn,
}

impl<T> std::fmt::Debug for Locked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locked").finish_non_exhaustive()
    }
}

impl<T: Read + Write + Send + 'static> Locked<T> {
    /// Wraps `stream`; `shutdown` shuts its underlying socket down.
    pub fn new(stream: T, shutdown: impl Fn(Shutdown) + Send + Sync + 'static) -> Self {
        Locked {
            inner: Arc::new(Mutex::new(stream)),
            shutdown: Arc::new(shutdown),
        }
    }
}

struct LockedHalf<T>(Arc<Mutex<T>>);

impl<T: Read> Read for LockedHalf<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(buf)
    }
}

impl<T: Write> Write for LockedHalf<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

impl<T: Read + Write + Send + 'static> Transport for Locked<T> {
    fn split(self) -> io::Result<TransportHalves> {
        Ok(TransportHalves {
            reader: Box::new(LockedHalf(self.inner.clone())),
            writer: Box::new(LockedHalf(self.inner)),
            shutdown: self.shutdown,
            info: TransportInfo::default(),
            socket: None,
        })
    }
}

// What to pin for the implicit policy and how to report it is plain data,
// shared by every adapter: it lives in the core.
pub use ft_session_core::{SocketOptions, DEFAULT_IMPLICIT_SOCKET_BUFFER};

/// Sets both kernel buffers of a socket not yet connected or listening.
pub(crate) fn pin_buffers(socket: &Socket, size: usize) -> io::Result<()> {
    socket.set_send_buffer_size(size)?;
    socket.set_recv_buffer_size(size)
}

/// A TCP stream split for the adapter; with `pinned`, its effective buffer
/// sizes (read back now: an accepted socket inherits the listener's pinned
/// sizes) plus `middlebox` go into [`TransportHalves::info`]. Unpinned
/// sockets report nothing: an autotuned size read at connect would be a
/// guessed, too small bound.
pub(crate) fn tcp_halves(
    stream: TcpStream,
    pinned: bool,
    middlebox: u64,
) -> io::Result<TransportHalves> {
    let sizes = if pinned {
        let s = SockRef::from(&stream);
        Some((s.send_buffer_size()?, s.recv_buffer_size()?))
    } else {
        None
    };
    let info = SocketOptions::new()
        .middlebox_in_flight(middlebox)
        .transport_info(sizes);
    let mut halves = stream.split()?;
    halves.info = info;
    Ok(halves)
}

/// Connects a new TCP socket to `addr`, its buffers pinned to `pin` first.
pub(crate) fn connect_pinned(
    addr: &SocketAddr,
    pin: Option<usize>,
    timeout: std::time::Duration,
) -> io::Result<TcpStream> {
    let Some(size) = pin else {
        return TcpStream::connect_timeout(addr, timeout);
    };
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Before connect: the SYN carries the window scale for this size, and
    // setting it turns autotuning off for the connection's whole life.
    pin_buffers(&socket, size)?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}

/// Binds a TCP listener whose accepted sockets inherit pinned buffers.
pub(crate) fn listen_pinned(addr: &SocketAddr, pin: Option<usize>) -> io::Result<TcpListener> {
    let Some(size) = pin else {
        return TcpListener::bind(addr);
    };
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Like std's `TcpListener::bind` on Unix: a restarted server can rebind
    // while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    // Before listen: accepted sockets copy the listener's buffer sizes.
    pin_buffers(&socket, size)?;
    socket.bind(&(*addr).into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
