//! The application's handle: a blocking, socket-like session.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ft_session_core::{
    Config, ReadError, ServerAddr, Session, SessionError, SessionId, SessionState, Stats,
    ToServerAddr, WriteError,
};

use crate::driver::{Connector, Inner, Shared};
use crate::entropy;
use crate::transport::{connect_pinned, tcp_halves, SocketOptions, Transport};

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

/// A fault-tolerant byte stream: the counterpart of [`std::net::TcpStream`].
///
/// Reads and writes block across reconnects and never report a transient
/// transport failure. They fail only when the session is lost, with an
/// [`io::Error`] whose inner error (`get_ref`/`into_inner`) is the core's
/// [`SessionError`] (expired, unknown session, data lost, aborted, protocol
/// violation...).
///
/// What `flush`, `shutdown`, `close` and drop wait for is in the crate docs'
/// table. Dropping a stream closes the session gracefully in the background
/// (bounded by the close timeout); [`close`](Self::close) does the same and
/// waits for the outcome.
pub struct FtStream {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FtStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.shared.lock();
        f.debug_struct("FtStream")
            .field("session", &g.session.session_id())
            .field("state", &g.session.state())
            .finish()
    }
}

impl FtStream {
    /// Connects to an [`FtListener`](crate::FtListener) over TCP and
    /// completes the first handshake. Every reconnect resolves `addr` again
    /// (a host name may point elsewhere by then) and dials each address in
    /// turn, each bounded by the handshake timeout.
    ///
    /// Like the core, a client that cannot reach the server keeps trying
    /// with backoff and fails with `TimedOut` ([`SessionError::Expired`])
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
        let addr = addr.to_server_addr()?;
        let timeout = config.handshake_timeout;
        let pin = options.pin_for(config.release_policy);
        let middlebox = options.middlebox_in_flight;
        Self::connect_with(config, move || {
            let addrs: Vec<SocketAddr> = match &addr {
                ServerAddr::Addrs(a) => a.clone(),
                ServerAddr::Host { host, port } => {
                    (host.as_str(), *port).to_socket_addrs()?.collect()
                }
            };
            let mut last = None;
            for a in &addrs {
                match connect_pinned(a, pin, timeout) {
                    Ok(s) => return tcp_halves(s, pin.is_some(), middlebox),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
            }))
        })
    }

    /// Connects over transports made by `connector` (TCP, Unix sockets,
    /// TLS...); it is called again for each reconnect, on a background
    /// thread. Blocks until the first handshake completes.
    ///
    /// Under [`ReleasePolicy::Implicit`](crate::ReleasePolicy::Implicit) the
    /// connector must return [`TransportHalves`](crate::TransportHalves)
    /// whose `info` gives the transport's pinned, effective buffer sizes
    /// (the adapter cannot inspect a TLS stream, a Unix socket or a user's
    /// transport); otherwise the first handshake fails with `InvalidInput`
    /// ([`SessionError::Config`]) rather than run on a guessed bound.
    pub fn connect_with<C, T>(config: Config, mut connector: C) -> io::Result<FtStream>
    where
        C: FnMut() -> io::Result<T> + Send + 'static,
        T: Transport,
    {
        config.validate()?;
        let connector: Connector = Box::new(move || connector().and_then(Transport::split));
        let session = Session::client(config, Instant::now(), entropy::seed());
        let shared = Shared::new(session, Some(connector));
        shared.start()?;
        let mut g = shared.lock();
        loop {
            // Established once is connected, like TcpStream: a session the
            // server ended at once is still returned, and reads report how
            // it ended (end of stream, or its error).
            if g.session.session_id().is_some() {
                // A configuration the session refused at its first handshake
                // (the implicit policy without buffer sizes) is the caller's
                // error, not a connection that ended.
                if let Some(e @ SessionError::Config(_)) = g.session.error() {
                    return Err(e.clone().into());
                }
                break;
            }
            if g.session.is_finished() {
                let e = g.session.error().cloned().unwrap_or(SessionError::Closed);
                return Err(e.into());
            }
            g = shared.wait(g, None);
        }
        drop(g);
        Ok(FtStream { shared })
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> FtStream {
        FtStream { shared }
    }

    /// The session id (known once established).
    pub fn session_id(&self) -> Option<SessionId> {
        self.shared.lock().session.session_id()
    }

    /// Counters and state.
    pub fn stats(&self) -> FtStats {
        let g = self.shared.lock();
        let core = g.session.stats();
        FtStats {
            state: g.session.state(),
            reconnects: core.resumes,
            retransmitted_bytes: core.retransmitted_bytes,
            transports_lost: core.transports_lost,
            core,
            retain_capacity: g.session.retain_capacity(),
        }
    }

    /// Bounds how long a read waits (`None`: forever). A read that times out
    /// fails with `WouldBlock` and the session goes on.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.shared.lock().read_timeout = timeout;
    }

    /// Bounds how long a write waits for buffer space (`None`: forever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.shared.lock().write_timeout = timeout;
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
        let mut g = self.shared.lock();
        g.session.shutdown();
        self.shared.pump(&mut g);
        let deadline = Instant::now() + close_bound(g.session.config());
        loop {
            if g.session.is_finished() {
                return match g.session.error() {
                    None => Ok(()),
                    Some(e) => Err(e.clone().into()),
                };
            }
            if g.session.is_fin_acked() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer did not acknowledge the stream's end within the close timeout",
                ));
            }
            g = self.shared.wait(g, Some(deadline));
        }
    }

    /// Closes the session gracefully and waits, at most the close timeout
    /// (the session's `max_reconnect_time`), until both sides know every
    /// byte arrived and the last CLOSE frame is written. Unread input is
    /// discarded. Fails with the session's error if it was lost, and with
    /// `TimedOut` (the session aborted) if the bound passed.
    pub fn close(&self) -> io::Result<()> {
        let bound = close_bound(self.shared.lock().session.config());
        self.close_timeout(bound)
    }

    /// [`close`](Self::close) with an explicit bound; when it passes the
    /// session is aborted and the call fails with `TimedOut`.
    pub fn close_timeout(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        g.session.close();
        self.shared.pump(&mut g);
        let mut sink = vec![0u8; 16 * 1024];
        loop {
            // Discard what the application will never read, so the peer's
            // end of stream can arrive.
            while let Ok(n) = g.session.read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
            self.shared.pump(&mut g);
            if g.session.is_finished() {
                if let Some(e) = g.session.error() {
                    return Err(e.clone().into());
                }
                // A process that exits right after `close` must not take the
                // last CLOSE with it: wait until the writers wrote every
                // final frame (they end once their queues are written).
                while g.writers > 0 && Instant::now() < deadline {
                    g = self.shared.wait(g, Some(deadline));
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                g.session.abort(0);
                self.shared.pump(&mut g);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "graceful close did not complete in time; session aborted",
                ));
            }
            g = self.shared.wait(g, Some(deadline));
        }
    }

    /// The peer's address on the current transport (it may change with each
    /// reconnect); `NotConnected` while there is none, `Unsupported` for
    /// transports without a socket.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let g = self.shared.lock();
        match g.socket() {
            Some(s) => s.peer_addr(),
            None => Err(no_socket(&g)),
        }
    }

    /// The local address of the current transport (see [`peer_addr`](Self::peer_addr)).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let g = self.shared.lock();
        match g.socket() {
            Some(s) => s.local_addr(),
            None => Err(no_socket(&g)),
        }
    }

    /// Sets `TCP_NODELAY` on the current transport and every later one
    /// (default `true`: handshakes, acknowledgments and heartbeats are small
    /// and must not wait for Nagle).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let mut g = self.shared.lock();
        g.nodelay = nodelay;
        match g.socket() {
            Some(s) => s.set_nodelay(nodelay),
            None => Ok(()),
        }
    }

    /// The `TCP_NODELAY` setting of the session's transports.
    pub fn nodelay(&self) -> bool {
        self.shared.lock().nodelay
    }

    /// Ends the session at once and tells the peer `code` (an application
    /// code, 0x1000..=0xFFFF).
    pub fn abort(&self, code: u16) {
        let mut g = self.shared.lock();
        g.session.abort(code);
        self.shared.pump(&mut g);
    }

    fn read_impl(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut g = self.shared.lock();
        let deadline = g.read_timeout.map(|d| Instant::now() + d);
        loop {
            match g.session.read(buf) {
                Ok(n) => {
                    // Reading may re-open the receive window: wake the readers.
                    self.shared.pump(&mut g);
                    return Ok(n);
                }
                Err(ReadError::Blocked) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(io::Error::new(io::ErrorKind::WouldBlock, "read timed out"));
                    }
                    g = self.shared.wait(g, deadline);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush_impl(&self) -> io::Result<()> {
        let mut g = self.shared.lock();
        let deadline = g.write_timeout.map(|d| Instant::now() + d);
        loop {
            if let Some(e) = g.session.error() {
                return Err(e.clone().into());
            }
            if g.session.is_finished()
                || (g.session.state() == SessionState::Established
                    && g.session.is_flushed()
                    && g.writer_idle())
            {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "flush timed out"));
            }
            self.shared.flushers.fetch_add(1, Ordering::AcqRel);
            // The writer notifies when its queue empties; the short wait
            // covers a notification sent just before this thread waits.
            let wake = Instant::now() + Duration::from_millis(50);
            g = self
                .shared
                .wait(g, Some(deadline.map_or(wake, |d| d.min(wake))));
            self.shared.flushers.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn write_impl(&self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.shared.lock();
        let deadline = g.write_timeout.map(|d| Instant::now() + d);
        loop {
            match g.session.write(buf) {
                Ok(n) => {
                    self.shared.pump(&mut g);
                    return Ok(n);
                }
                Err(WriteError::Blocked) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(io::Error::new(io::ErrorKind::WouldBlock, "write timed out"));
                    }
                    g = self.shared.wait(g, deadline);
                }
                Err(e) => return Err(e.into()),
            }
        }
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

fn no_socket(g: &Inner) -> io::Error {
    if g.session.transport().is_none() || g.session.is_finished() {
        io::Error::new(io::ErrorKind::NotConnected, "no transport at the moment")
    } else {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "the transport has no socket address",
        )
    }
}

/// The bound of `close`, of a dropped stream's background close and of
/// `shutdown`: the session's `max_reconnect_time`, so a close may wait out
/// one whole reconnect.
fn close_bound(config: &Config) -> Duration {
    config.max_reconnect_time
}

impl Drop for FtStream {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        if g.session.is_finished() {
            return;
        }
        // Like a socket's close: finish in the background, within a bound;
        // the driver discards unread input, aborts at the deadline, and the
        // session is freed once its threads end.
        let bound = close_bound(g.session.config());
        g.session.close();
        g.linger_deadline = Some(Instant::now() + bound);
        self.shared.pump(&mut g);
    }
}
