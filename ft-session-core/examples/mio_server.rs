//! An echo server of fault-tolerant sessions on mio: one thread, one
//! `mio::Poll`, the core's [`Endpoint`] holding every session. The loop only
//! moves bytes and time: it accepts TCP connections, feeds what they deliver
//! to the endpoint, writes what the endpoint asks (keeping what a
//! non-blocking socket did not take), sleeps until a socket is ready or the
//! endpoint's one timer is due, and echoes each session's bytes back.
//! Handshakes, resumes onto new connections, parking and expiry are the
//! endpoint's business.
//!
//! ```text
//! cargo run -p ft-session-core --example mio_server -- 127.0.0.1:7000
//! cargo run -p ft-session-core --example mio_client -- 127.0.0.1:7000   # as many as you like
//! ```
//!
//! Kill connections at will (as root: `ss -K dst 127.0.0.1 dport = :7000`):
//! the clients reconnect and every echo still arrives whole.
// The tests include this file for its functions; `main` is unused there.
#![allow(dead_code)]
// This is the event loop: it owns the clock the core itself must not read.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::error::Error;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ft_session_core::{
    Config, Endpoint, EndpointInput, EndpointOutput, Event, Session, SessionHandle, TransportId,
    TransportInfo,
};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// Longest sleep, so that a `stop` request is seen.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// One accepted TCP connection.
struct Conn {
    sock: TcpStream,
    /// mio is edge-triggered: readable until a read would block.
    readable: bool,
    /// Transmits the socket has not taken yet, in order (at most what the
    /// session retains: the endpoint hands out frames as fast as it is polled).
    unsent: Vec<u8>,
}

impl Conn {
    /// Registers an accepted socket for both directions under `token`.
    fn new(mut sock: TcpStream, token: Token, poll: &Poll) -> io::Result<Conn> {
        sock.set_nodelay(true)?; // frames go out as soon as they are written
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry().register(&mut sock, token, interest)?;
        Ok(Conn {
            sock,
            readable: true,
            unsent: Vec::new(),
        })
    }
}

/// Serves echo sessions on `listener` until `stop` is set. Returns the bytes
/// echoed by each session that ended cleanly.
pub fn serve(
    listener: std::net::TcpListener,
    config: Config,
    stop: &AtomicBool,
) -> Result<Vec<u64>, Box<dyn Error>> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?; // keys session ids and secrets: must be unpredictable
    let mut ep = Endpoint::new(config, Instant::now(), seed)?;
    let (mut poll, mut events) = (Poll::new()?, Events::with_capacity(1024));
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: HashMap<TransportId, Conn> = HashMap::new();
    // Per session: bytes read but not yet taken back by its send buffer, and the count echoed.
    let mut echo: HashMap<SessionHandle, (Bytes, u64)> = HashMap::new();
    let (mut done, mut next_id, mut busy) = (Vec::new(), 0, false);
    let mut buf = vec![0u8; 64 * 1024];

    while !stop.load(Ordering::Relaxed) {
        // Sleep until a socket is ready or the one timer is due; not at all
        // if the last turn did something (its effects may enable more).
        let due = ep
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        let nap = if busy {
            Duration::ZERO
        } else {
            due.map_or(STOP_CHECK, |d| d.min(STOP_CHECK))
        };
        match poll.poll(&mut events, Some(nap)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e.into()),
            _ => {}
        }
        let now = Instant::now(); // the loop's clock, once per turn
        busy = false;
        for ev in &events {
            if ev.token() == LISTENER {
                // Accept until it would block (or fails: the next connection retries).
                while let Ok((sock, _peer)) = listener.accept() {
                    next_id += 1; // each transport gets an id never used before
                    let transport = next_id;
                    conns.insert(
                        transport,
                        Conn::new(sock, Token(transport as usize), &poll)?,
                    );
                    let info = TransportInfo::default(); // sizes unknown: the Ack policy
                    ep.handle_input(now, EndpointInput::TransportOpened { transport, info });
                }
            } else if let Some(c) = conns.get_mut(&(ev.token().0 as TransportId)) {
                c.readable = true;
            }
        }
        // Reads, while the endpoint wants them (a full session pushes back on TCP).
        let mut lost = Vec::new();
        for (&transport, c) in conns.iter_mut() {
            while c.readable && ep.wants_input(transport) {
                busy = true;
                match c.sock.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let data = &buf[..n];
                        ep.handle_input(now, EndpointInput::Received { transport, data });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                    _ => {
                        lost.push(transport); // closed by the peer (0 bytes) or failed
                        break;
                    }
                }
            }
        }
        for transport in lost {
            ep.handle_input(now, EndpointInput::TransportLost { transport });
            conns.remove(&transport);
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_input(now, EndpointInput::Timeout);
        }
        // Outputs, drained after every input and every call on a session.
        while let Some(output) = ep.poll_output() {
            busy = true;
            match output {
                EndpointOutput::Transmit(t) => {
                    if let Some(c) = conns.get_mut(&t.transport) {
                        t.write_to(&mut c.unsent); // written below, whole and in order
                    } // else its transport is gone: moot
                }
                EndpointOutput::DropTransport { transport } => {
                    if let Some(mut c) = conns.remove(&transport) {
                        // Last words (a CLOSE, a REJECT) go if the socket takes them now.
                        let _ = c.sock.write(&c.unsent);
                    } // dropping the socket closes it and leaves the poll
                }
                EndpointOutput::Event {
                    session,
                    event: Event::Finished(outcome),
                } => {
                    let (_, n) = echo.remove(&session).unwrap_or_default();
                    match outcome {
                        Ok(()) => done.push(n),
                        Err(e) => eprintln!("session {session} failed: {e}"),
                    }
                }
                // Readable, Writable, PeerFinished...: the session may have work.
                EndpointOutput::Event { session, .. } => {
                    let (held, n) = echo.entry(session).or_default();
                    if let Some(s) = ep.session_mut(session) {
                        *n += echo_some(s, held);
                    }
                }
                _ => {} // Accepted: its events follow
            }
        }
        // Writes: what each socket takes now; the rest waits for it to drain.
        for c in conns.values_mut() {
            while !c.unsent.is_empty() {
                match c.sock.write(&c.unsent) {
                    Ok(n) => drop(c.unsent.drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.unsent.clear(); // the next read reports the loss
                        c.readable = true;
                    }
                }
                busy = true;
            }
        }
    }
    Ok(done)
}

/// Echoes what `s` has received, as far as its send buffer takes it, without
/// copying (`read_chunk` hands out the received bytes, `send` keeps what it
/// cannot take yet in `held`). Returns the bytes echoed.
fn echo_some(s: &mut Session, held: &mut Bytes) -> u64 {
    let mut echoed = 0;
    loop {
        if held.is_empty() {
            match s.read_chunk() {
                Ok(chunk) if chunk.is_empty() => {
                    s.close(); // the client half-closed and has its echo: end cleanly
                    return echoed;
                }
                Ok(chunk) => *held = chunk,
                Err(_) => return echoed, // nothing yet, or ended (Finished says why)
            }
        }
        match s.send(held) {
            Ok(n) => echoed += n as u64,
            Err(_) => return echoed, // full: Event::Writable brings us back
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let listener = std::net::TcpListener::bind(addr)?;
    println!("echo server on {}", listener.local_addr()?);
    serve(listener, Config::default(), &AtomicBool::new(false))?; // runs until killed
    Ok(())
}
