//! The application's handle: a blocking, socket-like session. Every call
//! runs on the caller's thread against the shared driver's session
//! (`ft_session_async::FtStream`), parking until it can go on.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ft_session_async::{Bytes, ConnectFuture, Connected};
use ft_session_core::{Config, SessionId, SessionState, Stats, ToServerAddr};

use crate::dial::TcpDial;
use crate::runtime::{block_on, runtime, wait, Live};
use crate::transport::{open, Opened, SocketOptions, Transport};

/// A snapshot of a session's counters and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FtStats {
    /// Where the session is.
    pub state: SessionState,
    /// Resume handshakes completed (reconnects that kept the stream).
    pub reconnects: u64,
    /// Bytes sent again after resumes.
    pub retransmitted_bytes: u64,
    /// Transports lost or declared dead.
    pub transports_lost: u64,
    /// All of the core's counters.
    pub core: Stats,
    /// The most bytes the stream buffer may hold under the current policy
    /// (with the implicit policy: the send capacity plus the bound b of the
    /// current transport).
    pub retain_capacity: u64,
}

#[derive(Default, Clone, Copy)]
struct Timeouts {
    read: Option<Duration>,
    write: Option<Duration>,
}

/// A fault-tolerant byte stream: the counterpart of [`std::net::TcpStream`].
///
/// Reads and writes block across reconnects and never report a transient
/// transport failure. They fail only when the session is lost, with an
/// [`io::Error`] whose inner error (`get_ref`/`into_inner`) is the core's
/// [`SessionError`](crate::SessionError) (expired, unknown session, data
/// lost, aborted, protocol violation...).
///
/// What `flush`, `shutdown`, `close` and drop wait for is in the crate docs'
/// table. Dropping a stream closes the session gracefully in the background
/// (bounded by the close timeout); [`close`](Self::close) does the same and
/// waits for the outcome.
pub struct FtStream {
    inner: ft_session_async::FtStream,
    timeouts: Mutex<Timeouts>,
    /// Counts this session end for the I/O threads' number.
    _live: Live,
}

impl std::fmt::Debug for FtStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtStream")
            .field("session", &self.inner.session_id())
            .field("state", &self.inner.stats().state)
            .finish()
    }
}

/// Opens client transports with the user's blocking function: on the
/// thread blocked in `connect_with` while it runs the session (the first
/// connect: no hand-off to another thread and back), else on a thread of
/// the blocking pool (never on an I/O thread).
struct BlockingConnect {
    f: Arc<Mutex<dyn FnMut() -> io::Result<Opened> + Send>>,
    caller: std::thread::ThreadId,
}

impl ft_session_async::Connect for BlockingConnect {
    fn connect(&self) -> ConnectFuture {
        let (f, caller) = (self.f.clone(), self.caller);
        Box::pin(async move {
            let open = move || (f.lock().unwrap_or_else(PoisonError::into_inner))();
            // Checked where the future runs: an I/O thread must not block.
            let opened = if std::thread::current().id() == caller {
                open()?
            } else {
                smol::unblock(open).await?
            };
            Ok(Connected {
                transport: opened.transport,
                info: opened.info,
                socket: opened.socket,
            })
        })
    }
}

impl FtStream {
    /// Connects to an [`FtListener`](crate::FtListener) over TCP and
    /// completes the first handshake. Every reconnect resolves `addr` again
    /// (a host name may point elsewhere by then) and dials each address in
    /// turn.
    ///
    /// Like the core, a client that cannot reach the server keeps trying
    /// with backoff and fails with `TimedOut` ([`SessionError::Expired`](crate::SessionError::Expired))
    /// after `max_reconnect_time`.
    ///
    /// Under [`ReleasePolicy::Implicit`](crate::ReleasePolicy::Implicit)
    /// the socket buffers are pinned as [`SocketOptions`] describes (by
    /// default [`DEFAULT_IMPLICIT_SOCKET_BUFFER`](crate::DEFAULT_IMPLICIT_SOCKET_BUFFER)).
    pub fn connect(addr: impl ToServerAddr, config: Config) -> io::Result<FtStream> {
        Self::connect_opts(addr, config, SocketOptions::default())
    }

    /// [`connect`](Self::connect) with explicit socket options: pinned
    /// buffer sizes, a middlebox's in-flight bytes.
    pub fn connect_opts(
        addr: impl ToServerAddr,
        config: Config,
        options: SocketOptions,
    ) -> io::Result<FtStream> {
        config.validate()?;
        let addr = addr.to_server_addr()?;
        let rt = runtime()?;
        // The first attempt blocks this thread (no hand-off to an I/O
        // thread and back), the reconnects are the smol adapter's dial on
        // the reactor.
        let dial = TcpDial::new(addr, &config, options);
        let s = block_on(ft_session_async::connect(rt, config, dial))?;
        Ok(FtStream::new(s))
    }

    /// Connects over transports made by `connector` (TCP, Unix sockets,
    /// TLS...): on this thread for the first connection (and its retries
    /// until the first handshake), then again for each reconnect, on a
    /// background thread. Blocks until the first handshake completes.
    ///
    /// A `TcpStream`, a `UnixStream` (or halves split from a `TcpStream`)
    /// is driven by the I/O threads like [`connect`](Self::connect)'s;
    /// other transports cost a reader and a writer thread each (see
    /// [`Transport`]).
    ///
    /// Under [`ReleasePolicy::Implicit`](crate::ReleasePolicy::Implicit) the
    /// connector must return [`TransportHalves`](crate::TransportHalves)
    /// whose `info` gives the transport's pinned, effective buffer sizes
    /// (the adapter cannot inspect a TLS stream, a Unix socket or a user's
    /// transport); otherwise the first handshake fails with `InvalidInput`
    /// ([`SessionError::Config`](crate::SessionError::Config)) rather than
    /// run on a guessed bound.
    pub fn connect_with<C, T>(config: Config, mut connector: C) -> io::Result<FtStream>
    where
        C: FnMut() -> io::Result<T> + Send + 'static,
        T: Transport,
    {
        config.validate()?;
        let rt = runtime()?;
        let open_one = move || connector().and_then(open);
        let dial = BlockingConnect {
            f: Arc::new(Mutex::new(open_one)),
            caller: std::thread::current().id(),
        };
        let s = block_on(ft_session_async::connect(rt, config, dial))?;
        Ok(FtStream::new(s))
    }

    pub(crate) fn new(inner: ft_session_async::FtStream) -> FtStream {
        FtStream {
            inner,
            timeouts: Mutex::new(Timeouts::default()),
            _live: Live::new(),
        }
    }

    fn timeouts(&self) -> Timeouts {
        *self.timeouts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session id (known once established).
    pub fn session_id(&self) -> Option<SessionId> {
        self.inner.session_id()
    }

    /// Counters and state.
    pub fn stats(&self) -> FtStats {
        let s = self.inner.stats();
        FtStats {
            state: s.state,
            reconnects: s.reconnects,
            retransmitted_bytes: s.retransmitted_bytes,
            transports_lost: s.transports_lost,
            core: s.core,
            retain_capacity: s.retain_capacity,
        }
    }

    /// Bounds how long a read waits (`None`: forever). A read that times out
    /// fails with `WouldBlock` and the session goes on.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.timeouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read = timeout;
    }

    /// Bounds how long a write (or a `flush`) waits (`None`: forever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.timeouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write = timeout;
    }

    /// `Shutdown::Write` half-closes the session: the peer reads end of
    /// stream after every byte written. It returns `Ok` once the peer session
    /// acknowledged every byte before the FIN (both release policies
    /// acknowledge a FIN), the session's error if it failed first, or
    /// `TimedOut` after the close timeout (the session goes on).
    /// `Shutdown::Read` does nothing (the session keeps receiving).
    /// `Shutdown::Both` does both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if !matches!(how, Shutdown::Write | Shutdown::Both) {
            return Ok(());
        }
        block_on(self.inner.shutdown())
    }

    /// Closes the session gracefully and waits, at most the close timeout
    /// (the session's `max_reconnect_time`), until both sides know every
    /// byte arrived and the last CLOSE frame is written into the transport,
    /// so a process that exits right after loses nothing. Unread input is
    /// discarded. Fails with the session's error if it was lost, and with
    /// `TimedOut` (the session aborted) if the bound passed.
    pub fn close(&self) -> io::Result<()> {
        block_on(self.inner.close())
    }

    /// [`close`](Self::close) with an explicit bound; when it passes the
    /// session is aborted and the call fails with `TimedOut`.
    pub fn close_timeout(&self, timeout: Duration) -> io::Result<()> {
        block_on(self.inner.close_timeout(timeout))
    }

    /// The peer's address on the current transport (it may change with each
    /// reconnect); `NotConnected` while there is none, `Unsupported` for
    /// transports without a socket.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address of the current transport (see [`peer_addr`](Self::peer_addr)).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Sets `TCP_NODELAY` on the current transport and every later one
    /// (default `true`: handshakes, acknowledgments and heartbeats are small
    /// and must not wait for Nagle).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// The `TCP_NODELAY` setting of the session's transports.
    pub fn nodelay(&self) -> bool {
        self.inner.nodelay()
    }

    /// Ends the session at once and tells the peer `code` (an application
    /// code, 0x1000..=0xFFFF).
    pub fn abort(&self, code: u16) {
        self.inner.abort(code)
    }

    /// Writes all of `data` without copying it (the zero-copy `write_all`):
    /// the session keeps a reference to the buffer (a clone of the `Bytes`,
    /// so the caller may keep and reuse its own) until the peer has the
    /// bytes, across reconnects. Blocks while the stream buffer is full.
    ///
    /// `Ok` means what `write_all` returning `Ok` means: every byte is the
    /// session's. It fails with the session's error if the session is lost
    /// (or was shut down for writing), and with `WouldBlock` if the write
    /// timeout passes first; then, as with `write_all`, a prefix of `data`
    /// may have been taken and will be delivered.
    pub fn send_bytes(&self, mut data: Bytes) -> io::Result<()> {
        let deadline = self.timeouts().write.map(|d| Instant::now() + d);
        while !data.is_empty() {
            wait(deadline, |cx| self.inner.poll_send(cx, &mut data)).unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "send_bytes timed out",
                ))
            })?;
        }
        Ok(())
    }

    /// Reads the next piece of received bytes without copying it: the chunk
    /// shares the buffer the I/O thread read the transport into. Blocks
    /// until bytes, end of stream or the session's end; an **empty chunk is
    /// end of stream** (the peer's shutdown or a clean close), as `Ok(0)`
    /// is for `read`. A chunk is the next contiguous piece of the receive
    /// queue (at most one read of the transport); `read` and `read_chunk`
    /// take from the same queue, in order, so they may be mixed.
    ///
    /// Fails with the session's error if the session is lost, and with
    /// `WouldBlock` if the read timeout passes first (nothing taken, the
    /// session goes on).
    pub fn read_chunk(&self) -> io::Result<Bytes> {
        let deadline = self.timeouts().read.map(|d| Instant::now() + d);
        wait(deadline, |cx| self.inner.poll_read_chunk(cx))
            .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::WouldBlock, "read timed out")))
    }

    fn read_impl(&self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.timeouts().read.map(|d| Instant::now() + d);
        wait(deadline, |cx| self.inner.poll_read(cx, buf))
            .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::WouldBlock, "read timed out")))
    }

    fn write_impl(&self, buf: &[u8]) -> io::Result<usize> {
        let deadline = self.timeouts().write.map(|d| Instant::now() + d);
        wait(deadline, |cx| self.inner.poll_write(cx, buf))
            .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::WouldBlock, "write timed out")))
    }

    fn flush_impl(&self) -> io::Result<()> {
        let deadline = self.timeouts().write.map(|d| Instant::now() + d);
        wait(deadline, |cx| self.inner.poll_flush(cx))
            .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::WouldBlock, "flush timed out")))
    }
}

impl Read for &FtStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_impl(buf)
    }
}

impl Read for FtStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_impl(buf)
    }
}

impl Write for &FtStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_impl(buf)
    }

    /// Waits until every byte written so far is in a live transport (the
    /// kernel's send buffer), across a reconnect if one is under way; see
    /// the crate docs. Bounded by the write timeout if one is set
    /// (`WouldBlock`).
    fn flush(&mut self) -> io::Result<()> {
        self.flush_impl()
    }
}

impl Write for FtStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_impl(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_impl()
    }
}
