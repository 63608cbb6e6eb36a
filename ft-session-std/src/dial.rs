//! [`FtStream::connect`](crate::FtStream::connect)'s TCP dial.
//!
//! The first connect runs on the calling thread, which has nothing else to
//! do until the handshake is over (the shared driver runs on the caller's
//! task until then, see `ft_session_async::connect`). An attempt polled
//! there dials a blocking socket and waits for the server's reply in one
//! blocking read, bounded by the handshake timeout: the reply wakes the
//! calling thread itself, instead of the I/O thread that holds the reactor,
//! which would then wake the caller (one hand-off between threads less on
//! every connect). This is rustls' model for blocking I/O: the same state
//! machine, driven with blocking calls on the caller's thread. The core
//! still runs the handshake; only the waiting changes.
//!
//! Attempts made anywhere else (every reconnect, on the I/O threads) are
//! the smol adapter's non-blocking dial on the reactor.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use ft_session_async::{Connect, ConnectFuture, Connected, ReadSpare, SocketRef, SpareTransport};
use ft_session_core::{Config, ServerAddr, SocketOptions};
use smol::Async;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::transport::{NativeSocket, SpareTcp};

/// Dials TCP for a session of `FtStream::connect`: blocking on the thread
/// that called it, on the reactor everywhere else.
pub(crate) struct TcpDial {
    addr: ServerAddr,
    pin: Option<usize>,
    options: SocketOptions,
    timeout: Duration,
    /// The thread in `FtStream::connect`: attempts polled there block.
    caller: ThreadId,
    /// Every other attempt.
    reactor: Arc<dyn Connect>,
}

impl TcpDial {
    /// A dial of `addr` for a session with `config`, blocking on the calling
    /// thread.
    pub(crate) fn new(addr: ServerAddr, config: &Config, options: SocketOptions) -> TcpDial {
        TcpDial {
            reactor: Arc::new(ft_session_smol::tcp_dial(addr.clone(), config, options)),
            addr,
            pin: options.pin_for(config.release_policy),
            options,
            timeout: config.handshake_timeout,
            caller: std::thread::current().id(),
        }
    }
}

impl Connect for TcpDial {
    fn connect(&self) -> ConnectFuture {
        if std::thread::current().id() != self.caller {
            return self.reactor.connect();
        }
        let (addr, pin, options, timeout, caller) = (
            self.addr.clone(),
            self.pin,
            self.options,
            self.timeout,
            self.caller,
        );
        let reactor = self.reactor.clone();
        Box::pin(async move {
            // Checked again where it runs: a future made on the caller's
            // thread but polled by an I/O thread must not block it.
            if std::thread::current().id() != caller {
                return reactor.connect().await;
            }
            blocking_dial(&addr, pin, options, timeout, caller)
        })
    }
}

/// Resolves and connects on this (the caller's) thread, each address in
/// turn, each bounded by `timeout`.
fn blocking_dial(
    addr: &ServerAddr,
    pin: Option<usize>,
    options: SocketOptions,
    timeout: Duration,
    caller: ThreadId,
) -> io::Result<Connected> {
    // The attempt's bound, as the session counts it from the same moment.
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = match addr {
        ServerAddr::Addrs(a) => a.clone(),
        ServerAddr::Host { host, port } => (host.as_str(), *port).to_socket_addrs()?.collect(),
    };
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out");
            break;
        }
        match connect_one(a, pin, left) {
            Ok(tcp) => {
                let info = options.transport_info(match pin {
                    Some(_) => {
                        let s = SockRef::from(&tcp);
                        Some((s.send_buffer_size()?, s.recv_buffer_size()?))
                    }
                    None => None,
                });
                // The session's nodelay setting is applied by the driver.
                let io = Arc::new(Async::new(tcp)?);
                let socket: SocketRef = Arc::new(NativeSocket(io.clone()));
                let transport = CallerBlocking {
                    inner: SpareTcp::from_async(io.clone()),
                    io,
                    caller,
                    deadline: Some(deadline),
                };
                return Ok(Connected {
                    transport: Box::new(SpareTransport::new(transport)),
                    info,
                    socket: Some(socket),
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A blocking connect of a new socket, its buffers pinned first if asked
/// (before connect: this turns Linux's autotuning off for its life).
fn connect_one(addr: SocketAddr, pin: Option<usize>, timeout: Duration) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(size) = pin {
        socket.set_send_buffer_size(size)?;
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// A TCP socket on the reactor whose first read, when polled on the
/// `caller`'s thread, blocks that thread until bytes arrive (the server's
/// reply to the HELLO) or `deadline` passes; every other read waits on the
/// reactor. Only the first: after it the session may be established and
/// the driver reads on until nothing is left, which must not block. Else
/// it is the adapter's native TCP transport ([`SpareTcp`]: the driver reads
/// into its reused buffers).
struct CallerBlocking {
    inner: SpareTcp,
    /// The same socket, for the blocking read.
    io: Arc<Async<TcpStream>>,
    caller: ThreadId,
    /// Until the first read; then `None`.
    deadline: Option<Instant>,
}

impl CallerBlocking {
    /// The blocking read, `None` if it is not to be (another thread, past
    /// the deadline) or timed out: then the reactor's read takes over.
    fn blocking_read(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let deadline = self.deadline.take()?;
        if std::thread::current().id() != self.caller {
            return None;
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())?;
        let s = self.io.get_ref();
        if let Err(e) = s.set_nonblocking(false) {
            return Some(Err(e));
        }
        let r = s
            .set_read_timeout(Some(left))
            .and_then(|()| (&*s).read(buf));
        // Non-blocking again whatever happened: the reactor's calls need it.
        if let Err(e) = s.set_nonblocking(true) {
            return Some(Err(e));
        }
        match r {
            // The timeout (WouldBlock on Unix) or a signal: the session's
            // timer decides what comes next.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            r => Some(r),
        }
    }
}

impl futures_io::AsyncRead for CallerBlocking {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this.blocking_read(buf) {
            return Poll::Ready(r);
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl ReadSpare for CallerBlocking {
    fn poll_read_spare(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        // The driver's first read is a plain small one; a big read here
        // means the handshake is long over.
        self.deadline = None;
        Pin::new(&mut self.inner).poll_read_spare(cx, buf)
    }
}

impl futures_io::AsyncWrite for CallerBlocking {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
