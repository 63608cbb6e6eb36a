//! The smallest drive loop: one client [`Session`] over a non-blocking std
//! `TcpStream`, with nothing but std. It sends a buffer to an echo server,
//! half-closes, reads the echo back, closes the session and checks the echo;
//! kill its TCP connection at will, the session reconnects and resumes.
//!
//! ```text
//! cargo run -p ft-session-tokio --example echo -- server 127.0.0.1:7000   # any ft-session echo server
//! cargo run -p ft-session-core --example poll_loop -- 127.0.0.1:7000
//! ```
//!
//! The contract every drive loop keeps, whatever its event source:
//! 1. after every input and every application call, drain `poll_output`;
//! 2. write a `Transmit` whole, in order, before the next output (keep what
//!    the socket did not take and finish it first);
//! 3. keep one timer, at `poll_timeout`, and feed `Input::Timeout` when it
//!    fires;
//! 4. `now` is the loop's own clock, read once per turn;
//! 5. `write` returns how many bytes the session accepted: offer the rest
//!    later.
//!
//! std has no readiness API (epoll, kqueue), so when a turn does nothing this
//! loop sleeps a millisecond at most; a real loop blocks in `mio::Poll` or
//! `epoll_wait` until a socket is ready or the timer is due (see
//! `mio_client.rs`).
// The tests include this file for its functions; `main` is unused there.
#![allow(dead_code)]
// This is the event loop: it owns the clock the core itself must not read.
#![allow(clippy::disallowed_methods)]

use std::error::Error;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ft_session_core::{
    Config, Event, Input, Output, ReadError, Session, TransportId, TransportInfo, WriteError,
};

/// Sends `data` to the echo server at `addr` over one session and returns
/// what came back. Errors are the session's (`SessionError` inside).
pub fn echo_client(
    addr: SocketAddr,
    config: Config,
    data: &[u8],
) -> Result<Vec<u8>, Box<dyn Error>> {
    // Reconnect jitter needs a seed; std's hasher keys are random per process.
    let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
    let connect_timeout = config.handshake_timeout;
    let mut session = Session::client(config, Instant::now(), seed);
    // The current TCP connection and the session's name for it.
    let mut conn: Option<(TransportId, TcpStream)> = None;
    // Bytes of Transmits the socket has not taken yet (partial writes).
    let mut unsent: Vec<u8> = Vec::new();
    let mut offered = 0; // bytes of `data` the session has accepted
    let mut echo = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    let mut closing = false;

    loop {
        // One clock read per turn: every input of this turn carries it.
        let now = Instant::now();
        let mut busy = false;

        // Application, sending: the session takes what fits in its buffer.
        while offered < data.len() {
            match session.write(&data[offered..]) {
                Ok(n) => offered += n,
                Err(WriteError::Blocked) => break, // full: offer the rest later
                Err(e) => return Err(e.into()),
            }
            busy = true;
            if offered == data.len() {
                session.shutdown(); // half-close: the server reads end of stream
            }
        }
        // Application, receiving: everything readable; end of stream (0)
        // once the server half-closed after its echo, then close.
        loop {
            match session.read(&mut buf) {
                Ok(0) if !closing && offered == data.len() => {
                    session.close(); // ends with Finished(Ok) once both sides know all arrived
                    closing = true;
                }
                Ok(0) => break,
                Ok(n) => echo.extend_from_slice(&buf[..n]),
                Err(ReadError::Blocked) => break,
                Err(e) => return Err(e.into()),
            }
            busy = true;
        }

        // The session moved to another transport (loss, dead link): the old
        // socket and its unwritten bytes are worthless now.
        if conn
            .as_ref()
            .is_some_and(|(id, _)| Some(*id) != session.transport())
        {
            (conn, busy) = (None, true);
            unsent.clear();
        }

        // Outputs: drained after the calls above, but never past a Transmit
        // the socket has not taken whole (it must go out before the next).
        while unsent.is_empty() {
            let Some(output) = session.poll_output() else {
                break;
            };
            busy = true;
            match output {
                Output::Connect { transport } => {
                    match dial(addr, connect_timeout) {
                        Ok(s) => {
                            conn = Some((transport, s));
                            let info = TransportInfo::default(); // sizes unknown: Ack policy
                            session.handle_input(now, Input::TransportUp { transport, info });
                        }
                        Err(_) => session.handle_input(now, Input::TransportLost { transport }),
                    }
                }
                // Bytes for a transport we no longer hold are dropped.
                Output::Transmit(t) if conn.as_ref().is_some_and(|(id, _)| *id == t.transport) => {
                    t.write_to(&mut unsent)
                }
                Output::DropTransport { transport }
                    if conn.as_ref().is_some_and(|(id, _)| *id == transport) =>
                {
                    conn = None;
                }
                Output::Event(Event::Finished(Ok(()))) => return Ok(echo),
                Output::Event(Event::Finished(Err(e))) => return Err(e.into()),
                _ => {} // other events: Established, Resumed, Readable... (logging only here)
            }
        }

        if let Some((transport, sock)) = conn.as_mut() {
            let transport = *transport;
            // Write what the socket takes now; the rest waits for the next turn.
            let mut lost = false;
            while !unsent.is_empty() {
                match sock.write(&unsent) {
                    Ok(n) => drop(unsent.drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        lost = true;
                        break;
                    }
                }
                busy = true;
            }
            // Read what arrived, unless the session's receive queue is full
            // (then TCP pushes back on the server until the app reads).
            while !lost && session.wants_input() {
                match sock.read(&mut buf) {
                    Ok(0) => lost = true, // the peer closed this transport
                    Ok(n) => session.handle_input(
                        now,
                        Input::Received {
                            transport,
                            data: &buf[..n],
                        },
                    ),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => lost = true,
                }
                busy = true;
            }
            if lost {
                // Tell the session; it reconnects (Output::Connect) and resumes.
                session.handle_input(now, Input::TransportLost { transport });
                (conn, busy) = (None, true);
                unsent.clear();
            }
        }

        // The one timer: heartbeats, dead-link detection, backoff, expiry.
        let deadline = session.poll_timeout();
        if deadline.is_some_and(|d| d <= now) {
            session.handle_input(now, Input::Timeout);
            busy = true;
        }
        if !busy {
            // Nothing moved: wait for the socket or the timer (here: a nap).
            let nap = deadline.map_or(Duration::from_millis(1), |d| d - now);
            std::thread::sleep(nap.min(Duration::from_millis(1)));
        }
    }
}

/// std has no non-blocking connect: a bounded blocking one, then the socket
/// turns non-blocking for the loop.
fn dial(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?; // frames go out as soon as they are written
    Ok(s)
}

fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: poll_loop ADDR (of an echo server)")?;
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i ^ (i >> 11)) as u8).collect();
    let echo = echo_client(addr.parse()?, Config::default(), &data)?;
    if echo != data {
        return Err("echo differs".into());
    }
    println!("{} bytes echoed intact", echo.len());
    Ok(())
}
