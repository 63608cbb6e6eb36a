//! An echo client of one fault-tolerant session on mio: the core's
//! [`Session`] is the whole client (it asks for transports, reconnects with
//! backoff and resumes by itself); this loop dials without blocking, moves
//! bytes, keeps what a non-blocking socket did not take, and sleeps in
//! `mio::Poll` until the socket is ready or the session's one timer is due.
//!
//! ```text
//! cargo run -p ft-session-core --example mio_server -- 127.0.0.1:7000
//! cargo run -p ft-session-core --example mio_client -- 127.0.0.1:7000
//! ```
// The tests include this file for its functions; `main` is unused there.
#![allow(dead_code)]
// This is the event loop: it owns the clock the core itself must not read.
#![allow(clippy::disallowed_methods)]

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ft_session_core::{
    Config, Event, Input, Output, ReadError, Session, Stats, TransportId, TransportInfo, WriteError,
};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// The session's current TCP connection.
struct Conn {
    id: TransportId,
    sock: TcpStream,
    /// The non-blocking connect has completed.
    connected: bool,
    /// mio is edge-triggered: readable until a read would block.
    readable: bool,
    /// The Transmit the socket has not taken whole yet.
    unsent: Vec<u8>,
}

/// Sends `data` to the echo server at `addr` over one session, half-closes,
/// reads the echo to its end and closes the session. Returns the echo and
/// the session's counters (resumes, transports lost...).
pub fn echo_client(
    addr: SocketAddr,
    config: Config,
    data: &[u8],
) -> Result<(Vec<u8>, Stats), Box<dyn Error>> {
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed)?; // reconnect jitter: clients must not move in lockstep
    let mut session = Session::client(config, Instant::now(), u64::from_le_bytes(seed));
    let (mut poll, mut events) = (Poll::new()?, Events::with_capacity(16));
    let mut conn: Option<Conn> = None;
    let (mut offered, mut closing, mut busy) = (0, false, true);
    let mut echo = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];

    loop {
        // Sleep until the socket is ready or the one timer is due; not at
        // all if the last turn did something.
        let timer = session
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, if busy { Some(Duration::ZERO) } else { timer }) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e.into()),
            _ => {}
        }
        let now = Instant::now(); // the loop's clock, once per turn
        busy = false;
        if let Some(c) = conn.as_mut() {
            c.readable |= events.iter().any(|ev| ev.token() == Token(c.id as usize));
        }

        // Application: offer what is left (the session takes what fits),
        // read what arrived, close once the echo has ended.
        while offered < data.len() {
            match session.write(&data[offered..]) {
                Ok(n) => offered += n,
                Err(WriteError::Blocked) => break, // full: Event::Writable, later
                Err(e) => return Err(e.into()),
            }
            busy = true;
            if offered == data.len() {
                session.shutdown(); // half-close: the server reads end of stream
            }
        }
        loop {
            match session.read(&mut buf) {
                Ok(0) if !closing && offered == data.len() => {
                    session.close(); // Finished(Ok) once both sides know all arrived
                    closing = true;
                }
                Ok(0) | Err(ReadError::Blocked) => break,
                Ok(n) => echo.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.into()),
            }
            busy = true;
        }

        // The session gave up this transport (dead link, handshake timeout):
        // its socket and unwritten bytes are worthless now.
        if conn
            .as_ref()
            .is_some_and(|c| Some(c.id) != session.transport())
        {
            (conn, busy) = (None, true);
        }
        // Outputs, drained after every input and call, but never past a
        // Transmit the socket has not taken whole.
        while conn.as_ref().map_or(true, |c| c.unsent.is_empty()) {
            let Some(output) = session.poll_output() else {
                break;
            };
            busy = true;
            match output {
                Output::Connect { transport } => match TcpStream::connect(addr) {
                    Ok(mut sock) => {
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        poll.registry()
                            .register(&mut sock, Token(transport as usize), interest)?;
                        let (connected, readable, unsent) = (false, false, Vec::new());
                        conn = Some(Conn {
                            id: transport,
                            sock,
                            connected,
                            readable,
                            unsent,
                        });
                    }
                    Err(_) => session.handle_input(now, Input::TransportLost { transport }),
                },
                Output::Transmit(t) => {
                    if let Some(c) = conn.as_mut().filter(|c| c.id == t.transport) {
                        t.write_to(&mut c.unsent); // written below, whole, before the next output
                    }
                }
                Output::DropTransport { transport }
                    if conn.as_ref().is_some_and(|c| c.id == transport) =>
                {
                    conn = None; // dropping the socket closes it and leaves the poll
                }
                Output::Event(Event::Finished(Ok(()))) => return Ok((echo, session.stats())),
                Output::Event(Event::Finished(Err(e))) => return Err(e.into()),
                _ => {} // other events, and bytes for a transport already gone
            }
        }

        if let Some(c) = conn.as_mut() {
            let mut lost = false;
            // A non-blocking connect is done once the socket has a peer.
            if !c.connected {
                match (c.sock.take_error(), c.sock.peer_addr()) {
                    (Ok(None), Ok(_)) => {
                        c.sock.set_nodelay(true)?;
                        c.connected = true;
                        let info = TransportInfo::default(); // sizes unknown: the Ack policy
                        session.handle_input(
                            now,
                            Input::TransportUp {
                                transport: c.id,
                                info,
                            },
                        );
                        busy = true;
                    }
                    (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => {}
                    _ => lost = true, // refused, unreachable...
                }
            }
            // Write what the socket takes now; the rest waits for it to drain.
            while c.connected && !lost && !c.unsent.is_empty() {
                match c.sock.write(&c.unsent) {
                    Ok(n) => drop(c.unsent.drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => lost = true,
                }
                busy = true;
            }
            // Read what arrived, unless the session's receive queue is full.
            while c.connected && !lost && c.readable && session.wants_input() {
                match c.sock.read(&mut buf) {
                    Ok(0) => lost = true, // the server closed this transport
                    Ok(n) => session.handle_input(
                        now,
                        Input::Received {
                            transport: c.id,
                            data: &buf[..n],
                        },
                    ),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                    Err(_) => lost = true,
                }
                busy = true;
            }
            if lost {
                // The session reconnects (Output::Connect) and resumes.
                session.handle_input(now, Input::TransportLost { transport: c.id });
                (conn, busy) = (None, true);
            }
        }

        // The one timer: heartbeats, dead links, backoff, expiry.
        if session.poll_timeout().is_some_and(|t| t <= now) {
            session.handle_input(now, Input::Timeout);
            busy = true;
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i ^ (i >> 11)) as u8).collect();
    let (echo, stats) = echo_client(addr.parse()?, Config::default(), &data)?;
    if echo != data {
        return Err("echo differs".into());
    }
    println!(
        "{} bytes echoed intact, {} resumes",
        echo.len(),
        stats.resumes
    );
    Ok(())
}
