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
//! The protocol lives in [`ft_session_core`]; this crate only moves bytes and
//! time. Per session a **driver** thread runs the core's timers (heartbeats,
//! dead links, backoff, expiry) even while the application is blocked or not
//! reading, and each transport has a **reader** and a **writer** thread.
//! The listener's threads route resumes to parked sessions whether or not the
//! application calls `accept`, and each handshake runs in its own thread,
//! bounded by the handshake timeout.
//!
//! Reads and writes never report a transient transport failure; they fail
//! only when the session is lost, with an [`std::io::Error`] wrapping the
//! core's [`SessionError`].
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
//! let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
//!     let mut stream = listener.accept()?;
//!     let mut got = Vec::new();
//!     stream.read_to_end(&mut got)?; // until the client's shutdown
//!     stream.write_all(b"bye")?;
//!     stream.close()?;
//!     Ok(got)
//! });
//!
//! let mut client = FtStream::connect(addr, config)?;
//! client.write_all(b"hello")?;
//! client.shutdown(std::net::Shutdown::Write)?;
//! let mut reply = Vec::new();
//! client.read_to_end(&mut reply)?;
//! client.close()?;
//! assert_eq!(reply, b"bye");
//! assert_eq!(server.join().unwrap()?, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod driver;
mod entropy;
mod listener;
mod stream;
mod transport;

pub use entropy::OsEntropy;
pub use ft_session_core::TransportInfo;
pub use ft_session_core::{
    Config, ReleasePolicy, SessionError, SessionId, SessionState, SetCounts, Stats,
};
pub use listener::FtListener;
pub use stream::{FtStats, FtStream};
pub use transport::{
    Locked, ShutdownFn, SocketOptions, Transport, TransportHalves, DEFAULT_IMPLICIT_SOCKET_BUFFER,
};
