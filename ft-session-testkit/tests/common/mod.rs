//! Shared test fixtures: an echo server that reports how each connection ended, and
//! a client that sends data and reads until the end of the stream. Every socket has a
//! timeout, so nothing can hang.
#![allow(clippy::unwrap_used, dead_code)]

use ft_session_testkit::Sha256Tracker;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Upper bound for any single wait in the tests.
pub const LIMIT: Duration = Duration::from_secs(10);

/// How a stream ended for the side that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Orderly end of stream (read returned 0).
    Eof,
    /// A read or write failed with this error (reset, abort, broken pipe...).
    Error(io::ErrorKind),
    /// Nothing happened within the timeout.
    Timeout,
    /// The echo server was stopped.
    Stopped,
}

impl End {
    /// True for a reset/abort/broken-pipe error.
    pub fn is_reset(self) -> bool {
        matches!(
            self,
            End::Error(
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            )
        )
    }

    /// True if the connection is dead: EOF or reset, but not a timeout.
    pub fn is_dead(self) -> bool {
        self == End::Eof || self.is_reset()
    }
}

/// What the echo server saw on one connection.
#[derive(Debug, Clone)]
pub struct ServerEnd {
    pub received: u64,
    pub hash: String,
    pub end: End,
}

/// An echo server on 127.0.0.1 that reports each connection's end on a channel.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    ends: Receiver<ServerEnd>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (tx, ends) = mpsc::channel();
        let (s, a) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = thread::spawn(move || {
            let mut conns = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        let (s2, tx2) = (Arc::clone(&s), tx.clone());
                        conns.push(thread::spawn(move || echo(sock, &s2, &tx2)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                c.join().unwrap();
            }
        });
        EchoServer {
            addr,
            accepted,
            stop,
            ends,
            thread: Some(thread),
        }
    }

    /// The next connection end, waiting at most [`LIMIT`].
    pub fn next_end(&self) -> ServerEnd {
        self.ends
            .recv_timeout(LIMIT)
            .expect("echo server connection did not end")
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn echo(mut sock: TcpStream, stop: &AtomicBool, tx: &Sender<ServerEnd>) {
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    sock.set_write_timeout(Some(LIMIT)).unwrap();
    let mut tracker = Sha256Tracker::new();
    let mut buf = vec![0u8; 32 * 1024];
    let end = loop {
        if stop.load(Ordering::SeqCst) {
            break End::Stopped;
        }
        match sock.read(&mut buf) {
            Ok(0) => {
                let _ = sock.shutdown(Shutdown::Write);
                break End::Eof;
            }
            Ok(n) => {
                tracker.update(&buf[..n]);
                if let Err(e) = sock.write_all(&buf[..n]) {
                    break End::Error(e.kind());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break End::Error(e.kind()),
        }
    };
    let _ = tx.send(ServerEnd {
        received: tracker.bytes(),
        hash: tracker.hex(),
        end,
    });
}

/// A client connection with timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap()
}

/// A client connection with timeouts set, or the error if the connection died at
/// once (a proxy that resets at accept can make the connect itself fail).
pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, LIMIT)?;
    s.set_read_timeout(Some(LIMIT))?;
    s.set_write_timeout(Some(LIMIT))?;
    Ok(s)
}

/// Connects and reads until the end: how a connection the proxy kills at once ends.
pub fn connect_and_read(addr: SocketAddr) -> (Vec<u8>, End) {
    match try_connect(addr) {
        Ok(mut s) => read_to_end(&mut s),
        Err(e) => (Vec::new(), End::Error(e.kind())),
    }
}

/// Reads until EOF, error or timeout; returns the bytes read and how it ended.
pub fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, End) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, End::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (out, End::Timeout)
            }
            Err(e) => return (out, End::Error(e.kind())),
        }
    }
}

/// Reads exactly `n` bytes (panics on timeout or early end).
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// True if nothing arrives on `s` within `wait` (the socket stays open).
pub fn nothing_arrives(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1];
    let quiet = matches!(
        s.read(&mut buf),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
    );
    s.set_read_timeout(Some(LIMIT)).unwrap();
    quiet
}

/// Connects, sends `data` from a writer thread (then half-closes), reads until the
/// end of the stream. Returns what was read and how the stream ended.
pub fn exchange(addr: SocketAddr, data: &[u8]) -> (Vec<u8>, End) {
    let mut s = connect(addr);
    let mut w = s.try_clone().unwrap();
    let data = data.to_vec();
    let writer = thread::spawn(move || {
        for chunk in data.chunks(16 * 1024) {
            if w.write_all(chunk).is_err() {
                return;
            }
        }
        let _ = w.shutdown(Shutdown::Write);
    });
    let result = read_to_end(&mut s);
    writer.join().unwrap();
    result
}

/// Polls `cond` every few milliseconds for at most [`LIMIT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}
