//! # ft-session-core
//!
//! A sans-IO state machine for one end of a **fault-tolerant session**: a
//! byte stream that survives transport crashes with no byte lost, duplicated
//! or reordered, after *Session-Based Fault-Tolerant Design Patterns*
//! (Ivaki, Araujo, Barros).
//!
//! - Each side keeps a [stream buffer](StreamBuffer) of bytes sent but not
//!   known to be received, and counts the bytes it received.
//! - When the transport fails the **client** asks for a new one
//!   ([`Output::Connect`]) with backoff, within [`Config::max_reconnect_time`].
//! - A **resume handshake** exchanges the session id and both counts,
//!   authenticated with a secret issued at the first handshake; each side
//!   retransmits exactly what the other missed.
//! - The server's [`ConnectionSet`] parks a session until its client returns
//!   or the time runs out.
//!
//! The crate performs no I/O, reads no clock and draws no randomness: time is
//! an argument, bytes are inputs, and everything to do comes out of
//! [`Session::poll_output`]. Adapters (`ft-session-std`, `ft-session-tokio`,
//! `ft-session-smol`) move bytes and time. The wire protocol is specified in
//! `docs/PROTOCOL.md`.
//!
//! ## The drive loop
//!
//! After every input ([`Session::handle_input`]) or application call
//! ([`Session::send`], [`Session::write`], [`Session::read`],
//! [`Session::shutdown`], [`Session::close`], [`Session::abort`]), drain
//! [`Session::poll_output`] until it returns `None`, then wait for transport
//! bytes or [`Session::poll_timeout`]. A `Transmit` must be written whole
//! before the next output is polled.
//!
//! Two sessions wired back to back in memory, through one transport crash:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use ft_session_core::*;
//!
//! let now = Instant::now();
//! let mut client = Session::client(Config::default(), now, 7);
//! let mut set = ConnectionSet::new(Config::default());
//! let mut server: Option<Session> = None;
//! let mut reader: Option<HandshakeReader> = None;
//! let mut entropy = SeededEntropy::new(1); // use a CSPRNG in production
//! let mut server_transport = 0u64;
//!
//! // Moves every output of both sides once; returns whether anything moved.
//! let mut pump = |client: &mut Session, server: &mut Option<Session>,
//!                 reader: &mut Option<HandshakeReader>, server_transport: &mut u64| {
//!     let mut moved = false;
//!     while let Some(out) = client.poll_output() {
//!         moved = true;
//!         match out {
//!             Output::Connect { transport } => {
//!                 // A real adapter dials here; the new server-side transport gets an id too.
//!                 *server_transport += 1;
//!                 *reader = Some(HandshakeReader::new(now, set.config()));
//!                 client.handle_input(now, Input::TransportUp { transport, info: TransportInfo::default() });
//!             }
//!             Output::Transmit(t) => {
//!                 let mut bytes = Vec::new();
//!                 t.write_to(&mut bytes);
//!                 let mut data = &bytes[..];
//!                 if let Some(r) = reader.as_mut() {
//!                     match r.feed(data) {
//!                         HandshakeStep::Hello { hello, consumed } => {
//!                             *reader = None;
//!                             data = &data[consumed..];
//!                             let info = TransportInfo::default();
//!                             match set.admit(now, *server_transport, info, hello, &mut entropy) {
//!                                 Admission::Fresh(s) => *server = Some(*s),
//!                                 Admission::Resume { resume, .. } => {
//!                                     let transport = *server_transport;
//!                                     server.as_mut().unwrap().handle_input(now, Input::Resume { transport, resume, info });
//!                                 }
//!                                 Admission::Reject { .. } => unreachable!(),
//!                             }
//!                         }
//!                         _ => continue,
//!                     }
//!                 }
//!                 let transport = *server_transport;
//!                 server.as_mut().unwrap().handle_input(now, Input::Received { transport, data });
//!             }
//!             _ => {}
//!         }
//!     }
//!     if let Some(server) = server.as_mut() {
//!         while let Some(out) = server.poll_output() {
//!             moved = true;
//!             if let Output::Transmit(t) = out {
//!                 let mut bytes = Vec::new();
//!                 t.write_to(&mut bytes);
//!                 let transport = client.transport().unwrap();
//!                 client.handle_input(now, Input::Received { transport, data: &bytes });
//!             }
//!         }
//!     }
//!     moved
//! };
//!
//! client.send(&mut Bytes::from_static(b"hello, ")).unwrap();
//! while pump(&mut client, &mut server, &mut reader, &mut server_transport) {}
//!
//! // The transport dies; the client reconnects and resumes by itself.
//! let lost = client.transport().unwrap();
//! client.handle_input(now, Input::TransportLost { transport: lost });
//! client.write(b"world").unwrap();
//! while pump(&mut client, &mut server, &mut reader, &mut server_transport) {}
//!
//! let server = server.as_mut().unwrap();
//! let mut buf = [0u8; 64];
//! let n = server.read(&mut buf).unwrap();
//! assert_eq!(&buf[..n], b"hello, world");
//! assert_eq!(client.stats().resumes, 1);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod connection_set;
pub mod error;
pub mod frame;
pub mod handshake;
mod recv_queue;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stream_buffer;

pub use config::{
    Config, ReleasePolicy, SocketOptions, TransportInfo, DEFAULT_IMPLICIT_SOCKET_BUFFER,
};
pub use connection_set::{Admission, ConnectionSet, SetCounts, SetEvent};
pub use error::{ReadError, SessionError, Violation, WriteError};
pub use frame::{ClientHello, Code, Params, SessionId};
pub use handshake::{Entropy, HandshakeReader, HandshakeStep, SeededEntropy};
pub use session::{
    Event, Input, Output, Role, Session, SessionState, Stats, Transmit, TransportId, VerifiedResume,
};
pub use stream_buffer::StreamBuffer;
