//! # ft-session-std
//!
//! Blocking fault-tolerant sessions for `std`: [`FtStream`] and
//! [`FtListener`] replace [`TcpStream`](std::net::TcpStream) and
//! [`TcpListener`](std::net::TcpListener) one for one, and the byte stream
//! survives transport crashes: the client reconnects, both sides resume with
//! their counts, and exactly the missing bytes are sent again. This is the
//! blocking pattern of *Session-Based Fault-Tolerant Design Patterns*: one
//! thread per connection, a socket-like API.
//!
//! The protocol lives in [`ft_session_core`]; the data path is the one of
//! every adapter, `ft_session_async`'s driver (the same code runs under
//! `ft-session-tokio` and `ft-session-smol`): one task per session owns its
//! transport, reads and writes it and runs the core's timers (heartbeats,
//! dead links, backoff, expiry), and the listener's tasks give each new
//! transport to the core's [`Endpoint`](ft_session_core::Endpoint), which
//! routes resumes to parked sessions whether or not the application calls
//! `accept`, at most `Config::max_pending_handshakes` handshakes at once.
//!
//! Those tasks run on a small process-wide executor: background **I/O
//! threads** with async-io's reactor (the `polling` crate: epoll, kqueue...)
//! and sockets made non-blocking. They start on first use, one per core and
//! at most two, and more join as sessions grow, one per 32 live session ends
//! (up to 16): the
//! scheduler gives every runnable thread an equal share of the CPU, so with
//! hundreds of busy application threads two I/O threads would get too
//! little of it. The environment variable `FT_SESSION_STD_THREADS` fixes
//! their number instead (1 to 64). A session has no thread of its own, and
//! neither has a connect attempt or a handshake. [`FtStream::connect`] runs
//! the first TCP connect and handshake on the caller's thread with blocking
//! calls, as rustls drives its state machine: the caller connects, the
//! session writes its HELLO, and the caller waits for the reply in a
//! blocking read bounded by the handshake timeout, so the reply wakes it
//! directly; then the socket goes back to non-blocking and the session to
//! the I/O threads (reconnects dial on the reactor). The application's blocking
//! calls (`read`, `write`, `flush`, `shutdown`, `close`, `accept`) run on the
//! caller's thread: they take bytes from or give bytes to the session and
//! park the thread until the driver wakes it, honouring the read and write
//! timeouts. TCP dialing and accepting (with pinned buffers for the implicit
//! policy) is the smol adapter's, on the same reactor.
//!
//! Transports from [`FtStream::connect_with`] and
//! [`FtListener::from_incoming`]: a `TcpStream`, a `UnixStream` or
//! [`TransportHalves`] split from a `TcpStream` are driven the same way.
//! Any other transport (TLS through [`Locked`], a user's own halves) stays
//! blocking: it costs a reader and a writer thread per transport, and a
//! thread handoff per read and per write. The connector itself is blocking
//! too, so it runs on a thread of a shared blocking pool for each attempt,
//! and `from_incoming`'s iterator on a thread of its own per listener.
//!
//! Reads and writes never report a transient transport failure; they fail
//! only when the session is lost, with an [`std::io::Error`] wrapping the
//! core's [`SessionError`] ([`SessionError::from_io`] gets it out).
//!
//! The names are those of `std::net` and the same in `ft-session-tokio` and
//! `ft-session-smol`: [`FtStream::connect`] (the address is resolved again
//! on every reconnect), [`FtStream::connect_opts`], [`FtStream::connect_with`];
//! [`FtListener::bind`], [`FtListener::bind_opts`],
//! [`FtListener::from_incoming`], and [`FtListener::accept`] returning
//! `(FtStream, Option<SocketAddr>)`; [`FtStream::peer_addr`] and
//! [`FtStream::local_addr`] of the current transport,
//! [`FtStream::set_nodelay`] for every transport; [`FtStream::send_bytes`]
//! and [`FtStream::read_chunk`] to write and read a [`Bytes`] without a copy;
//! [`FtStream::close`] and
//! [`FtStream::close_timeout`]; [`FtListener::stop_accepting`],
//! [`FtListener::drain`] and [`FtListener::drain_timeout`] to stop a server
//! while its sessions finish (resumes still served). Every constructor
//! validates its `Config`.
//!
//! # Flush, shutdown, close and drop
//!
//! A session holds bytes the kernel does not, so each call that returns `Ok`
//! promises at least what the same call on a `TcpStream` promises:
//!
//! | call | waits until | `Ok` means | bounded by |
//! |---|---|---|---|
//! | `write` | room in the stream buffer | the bytes are the session's: kept until the peer has them, across reconnects | the write timeout, if set |
//! | `read` | bytes, end of stream or the session's end | `Ok(0)` is the peer's shutdown or a clean close | the read timeout, if set |
//! | [`FtStream::send_bytes`] | room in the stream buffer for all of it | as `write_all`: every byte is the session's, kept by reference (no copy) until the peer has it | the write timeout, if set (`WouldBlock`; a prefix may have been taken, as with `write_all`) |
//! | [`FtStream::read_chunk`] | bytes, end of stream or the session's end | the next received piece, without a copy; an empty chunk is end of stream | the read timeout, if set |
//! | `flush` | every byte written so far is in a live transport (written into the kernel's send buffer); waits across a reconnect | as `TcpStream::flush`: nothing left in this process for the kernel to take | the write timeout, if set (`WouldBlock`) |
//! | `shutdown(Write)` | the FIN was sent and the peer **session acknowledged every byte** before it (both release policies acknowledge a FIN) | the peer session has the whole stream; this side can still read | the close timeout: `TimedOut`, the session goes on |
//! | [`FtStream::close`] / [`FtStream::close_timeout`] | the CLOSE exchange finished and the last CLOSE frame was written; unread input is discarded | both sessions know every byte arrived both ways | the close timeout (default `max_reconnect_time`): then the session is aborted and the call fails with `TimedOut` |
//! | drop | nothing | – | the background close (unread input discarded), bounded by the close timeout, then abort; the session's task ends and it is freed either way |
//!
//! An error instead of `Ok` means the guarantee does not hold: the bytes may
//! not have arrived. If the process exits before a background close
//! finished, the I/O threads die with it: bytes that a returned `shutdown` or
//! `close` confirmed are in the peer session; the rest may be lost, and the
//! peer's session expires after `max_reconnect_time`. So `write_all`,
//! `shutdown(Write)?`, drop delivers every byte even if the process exits
//! right after, as with TCP.
//!
//! # The implicit (no-acknowledgment) release policy
//!
//! With [`ReleasePolicy::Implicit`] a sender keeps only the last
//! `b = own send buffer + peer receive buffer + margin` bytes (see
//! `docs/PROTOCOL.md` section 4). This adapter makes that bound hold on real
//! sockets:
//!
//! * [`FtStream::connect`] and [`FtListener::bind`] pin `SO_SNDBUF` and
//!   `SO_RCVBUF` before connect, and on the listening socket before listen
//!   (accepted sockets inherit them), which turns Linux's autotuning off;
//!   [`SocketOptions`] picks the size (default
//!   [`DEFAULT_IMPLICIT_SOCKET_BUFFER`], 256 KiB requested). Linux doubles
//!   the request; the effective size read back on each socket is what the
//!   core uses and announces to the peer.
//! * The session's driver (the shared one of `ft-session-async`) counts a
//!   byte as handed to the transport only once a write reported it taken by
//!   the kernel, so the frames it has queued stay retained and the reported
//!   send buffer is the kernel's alone.
//! * A proxy or relay on the path holds bytes neither kernel sees: declare
//!   them with [`SocketOptions::middlebox_in_flight`] on both sides.
//! * [`FtStream::connect_with`] and [`FtListener::from_incoming`] cannot
//!   inspect their transports (TLS, Unix sockets, anything of the user's):
//!   give the sizes in [`TransportHalves::info`], or the session is refused
//!   with `InvalidInput` ([`SessionError::Config`]).
//! * The policy is in effect only when both sides chose it: facing a peer
//!   under [`ReleasePolicy::Ack`], an implicit side releases on
//!   acknowledgments too and needs no sizes (`docs/PROTOCOL.md` section 4).
//!
//! On every platform this is the static bound (pinned sizes plus margin). The
//! Linux-exact variant (`SIOCOUTQ` on the dead socket with
//! `tcpi_bytes_acked`) is not provided: it needs an `ioctl` that no
//! maintained crate exposes safely, and this crate forbids unsafe code.
//! Whatever the sizing, a resume that needs released bytes ends both sides
//! with [`SessionError::DataLost`], never with corrupt data.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use ft_session_std::{Config, FtListener, FtStream};
//!
//! let mut config = Config::default();
//! config.max_reconnect_time = Duration::from_secs(5);
//! let listener = FtListener::bind("127.0.0.1:0", config.clone())?;
//! let addr = listener.local_addr()?;
//!
//! let server = std::thread::spawn(move || -> std::io::Result<_> {
//!     let (mut stream, _peer) = listener.accept()?;
//!     let mut got = Vec::new();
//!     stream.read_to_end(&mut got)?; // until the client's shutdown
//!     stream.write_all(b"bye")?;
//!     stream.close()?;
//!     // The listener answers the client if the last CLOSE is lost and it
//!     // resumes to learn the outcome: keep it until the client is done.
//!     Ok((got, listener))
//! });
//!
//! let mut client = FtStream::connect(addr, config)?;
//! client.write_all(b"hello")?;
//! client.shutdown(std::net::Shutdown::Write)?; // the server has every byte
//! let mut reply = Vec::new();
//! client.read_to_end(&mut reply)?;
//! client.close()?;
//! assert_eq!(reply, b"bye");
//! let (got, _listener) = server.join().unwrap()?;
//! assert_eq!(got, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod dial;
mod listener;
mod runtime;
mod stream;
mod threaded;
mod transport;

/// The buffer type of the zero-copy calls ([`FtStream::send_bytes`],
/// [`FtStream::read_chunk`]).
pub use ft_session_async::Bytes;
pub use ft_session_async::OsEntropy;
pub use ft_session_core::TransportInfo;
pub use ft_session_core::{
    Config, ReleasePolicy, SessionError, SessionId, SessionState, SetCounts, Stats,
};
pub use ft_session_core::{ServerAddr, ToServerAddr};
pub use listener::FtListener;
pub use stream::{FtStats, FtStream};
pub use transport::{
    Locked, ShutdownFn, SocketControl, SocketOptions, SocketRef, Transport, TransportHalves,
    DEFAULT_IMPLICIT_SOCKET_BUFFER,
};

// The README is the crates.io page: its code runs as a doctest, so it cannot
// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
