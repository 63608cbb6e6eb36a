//! # ft-session-core
//!
//! A sans-IO state machine for one end of a **fault-tolerant session**: a
//! byte stream that survives transport crashes with no byte lost, duplicated
//! or reordered, after *Session-Based Fault-Tolerant Design Patterns*
//! (Ivaki, Araujo, Barros).
//!
//! - Each side keeps a stream buffer of bytes sent but not
//!   known to be received, and counts the bytes it received.
//! - When the transport fails the **client** asks for a new one
//!   ([`Output::Connect`]) with backoff, within [`Config::max_reconnect_time`].
//! - A **resume handshake** exchanges the session id and both counts,
//!   authenticated with a secret issued at the first handshake; each side
//!   retransmits exactly what the other missed.
//! - The server's [`Endpoint`] accepts transports, reads each client's
//!   first message under a deadline, starts new sessions and routes each
//!   resume to its session; its [`ConnectionSet`] parks a session until its
//!   client returns or the time runs out.
//!
//! The crate performs no I/O, reads no clock and draws no randomness: time is
//! an argument, bytes are inputs, and everything to do comes out of
//! `poll_output`. Adapters (`ft-session-std`, `ft-session-tokio`,
//! `ft-session-smol`) move bytes and time. The wire protocol is specified in
//! `docs/PROTOCOL.md`.
//!
//! ## Two objects: a client [`Session`], a server [`Endpoint`]
//!
//! A client is one [`Session`]: it asks for transports
//! ([`Output::Connect`]) and resumes by itself, so it needs nothing around
//! it. A server is one [`Endpoint`]: its inputs name only transports
//! (opened, bytes received, lost) and time; its outputs are bytes to write,
//! transports to drop, new sessions to accept and each session's events.
//! The application reads and writes an accepted session through its
//! [`SessionHandle`]; parking, resume routing, eviction and expiry are the
//! endpoint's business.
//!
//! ## The drive loop
//!
//! After every input (`handle_input`) or application call ([`Session::write`],
//! [`Session::read`], [`Session::close`]...), drain `poll_output` until it
//! returns `None`, then wait for transport bytes or `poll_timeout`. How
//! Transmits reach the transport is one of two contracts
//! (`docs/PROTOCOL.md` section 8):
//!
//! - **Whole transmits** (the default): a `Transmit` is written whole
//!   before the next output is polled; a polled Transmit counts as handed to
//!   the transport.
//! - **Batched, with written reports** ([`Session::set_reports_written`],
//!   [`Endpoint::set_reports_written`]): the adapter polls Transmits ahead
//!   into a [`TransmitQueue`] (hundreds of KiB, payloads shared with the
//!   stream buffer), writes them with vectored writes that may be partial,
//!   ideally outside any lock it shares with the session, and reports each
//!   accepted amount with [`Input::Written`] ([`EndpointInput::Written`]).
//!   The implicit release bound and the implicit send capacity then count
//!   only bytes the transport accepted, never bytes merely polled, so the
//!   adapter's own queue needs no margin ([`TransportInfo::with_writer_hold`]
//!   is for the whole-transmit contract). [`Session::is_flushed`] waits for
//!   the reports.
//!
//! Reads may hand the core an owned buffer ([`Input::ReceivedBytes`]):
//! payload is then kept by reference and [`Session::read_chunk`] gives it
//! back without a copy.
//!
//! ## Flow control
//!
//! Read the transport while [`Session::wants_input`] is true. Under the
//! acknowledgment policy acknowledgments are a window: a session
//! acknowledges at most [`Config::recv_buffer_capacity`] beyond what its
//! application read, so its peer (whose send buffer bounds what it may have
//! unacknowledged) can never send more than the session reads ahead for, and
//! `wants_input` stays true through a lagging application: the peer's own
//! acknowledgments, which travel behind its data, are always read, and a
//! bidirectional transfer larger than both buffers cannot deadlock. Memory
//! stays bounded by `recv_buffer_capacity` plus
//! [`Config::max_peer_send_buffer`]. An application read can make an
//! acknowledgment due: drain `poll_output` after reads (or at least when
//! [`Session::ack_pending`] turns true). `docs/PROTOCOL.md` (R10, section 4)
//! has the rule.
//!
//! A complete server embedding, with a client over an in-memory transport
//! that crashes once, and a client that never returns:
//!
//! ```
//! use std::time::Instant;
//! use ft_session_core::*;
//!
//! /// Moves every output of both ends until nothing moves. In memory, a
//! /// transport has the same id at both ends; `got` is what the server read.
//! fn run(now: Instant, client: &mut Session, server: &mut Endpoint, got: &mut Vec<u8>) {
//!     let (info, mut moved) = (TransportInfo::default(), true);
//!     while std::mem::take(&mut moved) {
//!         while let Some(out) = client.poll_output() {
//!             moved = true;
//!             match out {
//!                 Output::Connect { transport } => {
//!                     server.handle_input(now, EndpointInput::TransportOpened { transport, info });
//!                     client.handle_input(now, Input::TransportUp { transport, info });
//!                 }
//!                 Output::Transmit(t) => {
//!                     let mut data = Vec::new();
//!                     t.write_to(&mut data);
//!                     let transport = t.transport;
//!                     server.handle_input(now, EndpointInput::Received { transport, data: &data });
//!                 }
//!                 _ => {}
//!             }
//!         }
//!         while let Some(out) = server.poll_output() {
//!             moved = true;
//!             match out {
//!                 EndpointOutput::Transmit(t) => {
//!                     let mut data = Vec::new();
//!                     t.write_to(&mut data);
//!                     client.handle_input(now, Input::Received { transport: t.transport, data: &data });
//!                 }
//!                 EndpointOutput::Accepted { session, .. } => println!("new session {session}"),
//!                 // The application reaches its sessions by handle.
//!                 EndpointOutput::Event { session, event: Event::Readable } => {
//!                     let (s, mut buf) = (server.session_mut(session).unwrap(), [0u8; 64]);
//!                     while let Ok(n @ 1..) = s.read(&mut buf) { got.extend_from_slice(&buf[..n]) }
//!                 }
//!                 _ => {} // DropTransport: close it; other events
//!             }
//!         }
//!     }
//! }
//!
//! let mut now = Instant::now();
//! let seed = [7; 32]; // from a CSPRNG in production: it keys every session secret
//! let mut server = Endpoint::new(Config::default(), now, seed).unwrap();
//! let mut client = Session::client(Config::default(), now, 1);
//! let mut got = Vec::new();
//! client.write(b"hello, ").unwrap();
//! run(now, &mut client, &mut server, &mut got);
//!
//! // The transport dies with "world" on it; the client resumes and the
//! // endpoint routes the resume to the parked session: nothing is lost.
//! client.write(b"world").unwrap();
//! while let Some(Output::Transmit(_)) = client.poll_output() {}
//! let transport = client.transport().unwrap();
//! client.handle_input(now, Input::TransportLost { transport });
//! server.handle_input(now, EndpointInput::TransportLost { transport });
//! run(now, &mut client, &mut server, &mut got);
//! assert_eq!(got, b"hello, world");
//! assert_eq!(client.stats().retransmitted_bytes, 5);
//!
//! // The client vanishes: the endpoint's timers alone expire its session
//! // and free everything.
//! let transport = client.transport().unwrap();
//! server.handle_input(now, EndpointInput::TransportLost { transport });
//! let mut ended = None;
//! while let Some(at) = server.poll_timeout() {
//!     now = at;
//!     server.handle_input(now, EndpointInput::Timeout);
//!     while let Some(out) = server.poll_output() {
//!         if let EndpointOutput::Event { event: Event::Finished(r), .. } = out { ended = Some(r) }
//!     }
//! }
//! assert_eq!(ended, Some(Err(SessionError::Expired)));
//! assert_eq!(server.stats().sessions, 0);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod addr;
pub mod config;
mod connection_set;
mod endpoint;
mod error;
// Wire internals (frame layouts, decoder, constants) and the proof functions
// are the core's business: public only for the project's tests and fuzz
// targets (feature `testing`, implied by `sim`).
#[cfg(feature = "testing")]
pub mod frame;
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unreachable_pub)]
mod frame;
#[cfg(feature = "testing")]
pub mod handshake;
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unreachable_pub)]
mod handshake;
mod recv_queue;
mod session;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "testing")]
pub mod stream_buffer;
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unreachable_pub)]
mod stream_buffer;
mod transmit_queue;

pub use addr::{ServerAddr, ToServerAddr};
pub use config::{
    Config, ReleasePolicy, SocketOptions, TransportInfo, DEFAULT_IMPLICIT_SOCKET_BUFFER,
};
pub use connection_set::{Admission, ConnectionSet, SetCounts, SetEvent};
pub use endpoint::{
    Delivery, Endpoint, EndpointInput, EndpointOutput, EndpointStats, SessionHandle,
};
pub use error::{ReadError, SessionError, Violation, WriteError};
pub use frame::{ClientHello, Code, DecodeError, FrameHead, Params, SessionId};
pub use handshake::{Entropy, HandshakeReader, HandshakeStep};
pub use session::{
    Event, Input, Output, Role, Session, SessionState, Stats, Transmit, TransportId, VerifiedResume,
};
pub use transmit_queue::TransmitQueue;

// The README is the crates.io page: its code runs as a doctest, so it cannot
// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
