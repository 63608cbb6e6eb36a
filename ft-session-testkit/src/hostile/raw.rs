//! A raw TCP peer: the attacker's side of every case, blocking std sockets.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::wire::{self, Answer, FrameReader};

/// How a connection ended, seen from the attacker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// An orderly close (end of stream).
    Eof,
    /// A reset (or another read error).
    Reset,
    /// Still open when the observer gave up.
    Open,
}

/// What the server sent until a connection ended (or the observer gave up).
#[derive(Debug)]
pub struct Observed {
    /// How it ended.
    pub end: End,
    /// Bytes received.
    pub bytes: u64,
    /// The first bytes received (at most 256).
    pub head: Vec<u8>,
    /// From the start of the observation to the end.
    pub elapsed: Duration,
}

/// One raw connection to the server.
#[derive(Debug)]
pub struct RawPeer {
    stream: TcpStream,
    inbox: Vec<u8>,
    drained: u64,
    /// Send a HEARTBEAT this often while reading frames.
    keep_alive: Option<(Duration, Instant)>,
}

/// A read that gives up after a short while, so deadlines are checked.
const POLL: Duration = Duration::from_millis(50);

impl RawPeer {
    /// Connects to `addr` (loopback).
    pub fn connect(addr: SocketAddr) -> io::Result<RawPeer> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawPeer {
            stream,
            inbox: Vec::new(),
            drained: 0,
            keep_alive: None,
        })
    }

    /// While [`read_frames`](Self::read_frames) runs, sends a HEARTBEAT
    /// every `every`, as a live client does (the server drops a transport
    /// silent for `idle_timeout`).
    pub fn keep_alive(&mut self, every: Duration) {
        self.keep_alive = Some((every, Instant::now()));
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `bytes` whole.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads what is there within one poll: `Ok(0)` at end of stream,
    /// `Err(TimedOut)` when nothing came.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(io::Error::new(io::ErrorKind::TimedOut, "nothing yet"))
            }
            r => r,
        }
    }

    /// Waits up to `limit` for the server's answer to a first message.
    /// `Err` carries what was seen instead (a close, garbage, nothing).
    pub fn answer(&mut self, limit: Duration) -> Result<Answer, String> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            match wire::parse_answer(&self.inbox)? {
                Some((a, used)) => {
                    self.inbox.drain(..used);
                    return Ok(a);
                }
                None if Instant::now() >= deadline => {
                    return Err(format!("no answer within {limit:?}"))
                }
                None => {}
            }
            match self.read_some(&mut buf) {
                Ok(0) => return Err(format!("closed after {} bytes", self.inbox.len())),
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("{} after {} bytes", e.kind(), self.inbox.len())),
            }
        }
    }

    /// Reads (and discards, keeping the first bytes) until the server ends
    /// the connection or `limit` passes.
    pub fn observe_end(&mut self, limit: Duration) -> Observed {
        let start = Instant::now();
        let mut head: Vec<u8> = std::mem::take(&mut self.inbox);
        let mut bytes = head.len() as u64;
        head.truncate(256);
        let mut buf = [0u8; 16 * 1024];
        let end = loop {
            if start.elapsed() >= limit {
                break End::Open;
            }
            match self.read_some(&mut buf) {
                Ok(0) => break End::Eof,
                Ok(n) => {
                    bytes += n as u64;
                    let room = 256usize.saturating_sub(head.len()).min(n);
                    head.extend_from_slice(&buf[..room]);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => break End::Reset,
            }
        };
        Observed {
            end,
            bytes,
            head,
            elapsed: start.elapsed(),
        }
    }

    /// Reads frames until the server ends the connection or `limit` passes;
    /// `until` may stop earlier (it sees the frames so far).
    pub fn read_frames(
        &mut self,
        limit: Duration,
        mut until: impl FnMut(&FrameReader) -> bool,
    ) -> (FrameReader, End) {
        let start = Instant::now();
        let mut r = FrameReader::default();
        r.push(&std::mem::take(&mut self.inbox));
        let mut buf = vec![0u8; 256 * 1024];
        let end = loop {
            if until(&r) {
                break End::Open;
            }
            if start.elapsed() >= limit {
                break End::Open;
            }
            if let Some((every, last)) = self.keep_alive {
                if last.elapsed() >= every {
                    let _ = self.stream.write_all(&wire::heartbeat());
                    self.keep_alive = Some((every, Instant::now()));
                }
            }
            match self.read_some(&mut buf) {
                Ok(0) => break End::Eof,
                Ok(n) => r.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => break End::Reset,
            }
        };
        (r, end)
    }

    /// Bytes [`closed_by_server`](Self::closed_by_server) read and dropped.
    pub fn drained(&self) -> u64 {
        self.drained
    }

    /// Whether the server has closed this connection, without waiting:
    /// drains what is readable.
    pub fn closed_by_server(&mut self) -> bool {
        let _ = self.stream.set_nonblocking(true);
        let mut buf = [0u8; 4096];
        let closed = loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => self.drained += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        let _ = self.stream.set_nonblocking(false);
        closed
    }
}
