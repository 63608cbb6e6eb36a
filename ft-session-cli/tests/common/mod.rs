//! Helpers for the CLI's end-to-end tests: the built binary as child
//! processes, an echo service, and a checked transfer through the tunnel.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use ft_session_testkit::{pattern_at, Sha256Tracker};

/// Every blocking socket operation in a test gives up after this long.
pub const IO_LIMIT: Duration = Duration::from_secs(30);
/// A tunnel end must announce its address within this time.
pub const ANNOUNCE_LIMIT: Duration = Duration::from_secs(30);
/// Options that make tunnels notice dead transports quickly.
pub const FAST: &[&str] = &["--heartbeat", "0.1", "--idle-timeout", "1"];

/// The runtimes the tunnel runs on.
pub const RUNTIMES: [&str; 3] = ["tokio", "smol", "std"];

/// A running `ft-session` child; killed on drop.
pub struct Proc {
    child: Child,
    /// The address it announced.
    pub addr: SocketAddr,
    /// Its later stdout lines (stats).
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Its stderr (logs), printed if the test fails.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `ft-session ARGS` and waits for its `listening ADDR` line.
    pub fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ft-session"))
            .args(args)
            .env("RUST_LOG", "warn,ft_session=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ft-session");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = BufReader::new(child.stderr.take().expect("stderr"));
        let sink = stderr.clone();
        thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        // Read on a thread so a child that never announces fails the test
        // instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut first = String::new();
            let r = out.read_line(&mut first).map(|_| first);
            let _ = tx.send((r, out));
        });
        let (first, out) = match rx.recv_timeout(ANNOUNCE_LIMIT) {
            Ok((Ok(first), out)) => (first, out),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ft-session {args:?} did not announce in time: {:?}",
                    other.map(|(r, _)| r)
                );
            }
        };
        let addr = first
            .strip_prefix("listening ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ft-session {args:?} did not announce an address: {first:?}; stderr: {:?}",
                    stderr.lock().unwrap_or_else(PoisonError::into_inner)
                )
            });
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout.clone();
        thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Proc {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    /// Kills the process now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.child.wait().expect("wait for the child")
    }

    /// The last stats line printed so far, if any.
    pub fn last_stats(&self) -> Option<String> {
        self.stdout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|l| l.starts_with("stats:"))
            .cloned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- ft-session {} stderr:", self.addr);
            for l in self
                .stderr
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
            {
                eprintln!("{l}");
            }
        }
    }
}

/// A tunnel server on 127.0.0.1 forwarding to `forward`.
pub fn tunnel_server(runtime: &str, forward: SocketAddr, extra: &[&str]) -> Proc {
    let fwd = forward.to_string();
    let mut args = vec![
        "tunnel",
        "server",
        "--runtime",
        runtime,
        "--listen",
        "127.0.0.1:0",
        "--forward",
        &fwd,
    ];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

/// A tunnel client on 127.0.0.1 to `server`.
pub fn tunnel_client(runtime: &str, server: SocketAddr, extra: &[&str]) -> Proc {
    let srv = server.to_string();
    let mut args = vec![
        "tunnel",
        "client",
        "--runtime",
        runtime,
        "--server",
        &srv,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

/// An echo service on 127.0.0.1: echoes each connection until its end of
/// stream, then half-closes.
pub fn echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let addr = l.local_addr().expect("echo addr");
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            let _ = s.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    addr
}

/// What an echo transfer saw.
#[derive(Debug)]
pub struct Echoed {
    pub sent: u64,
    pub sent_hash: String,
    pub received: u64,
    pub received_hash: String,
}

/// Sends `size` bytes of pattern `seed` through `addr` in 64 KiB writes,
/// calling `at_milestone(i)` after each of `milestones` equal parts (while
/// the writer waits), half-closes, and reads the echo until end of stream.
pub fn echo_transfer(
    addr: SocketAddr,
    size: u64,
    seed: u64,
    milestones: u64,
    mut at_milestone: impl FnMut(u64) + Send + 'static,
) -> io::Result<Echoed> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(IO_LIMIT))?;
    s.set_write_timeout(Some(IO_LIMIT))?;
    let mut w = s.try_clone()?;
    let writer = thread::spawn(move || -> io::Result<(u64, String)> {
        let mut sent = Sha256Tracker::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0u64;
        let step = if milestones > 0 {
            size / (milestones + 1)
        } else {
            u64::MAX
        };
        let mut next = 1;
        while off < size {
            let n = (size - off).min(buf.len() as u64) as usize;
            pattern_at(seed, off, &mut buf[..n]);
            w.write_all(&buf[..n])?;
            sent.update(&buf[..n]);
            off += n as u64;
            if next <= milestones && off >= next * step {
                at_milestone(next);
                next += 1;
            }
        }
        w.shutdown(Shutdown::Write)?;
        Ok((sent.bytes(), sent.finish()))
    });
    let mut r = s;
    let mut got = Sha256Tracker::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read_result = loop {
        match r.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => got.update(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let (sent, sent_hash) = writer.join().expect("writer thread")?;
    read_result?;
    Ok(Echoed {
        sent,
        sent_hash,
        received: got.bytes(),
        received_hash: got.finish(),
    })
}

/// Asserts an echo came back whole: same length, same sha256.
pub fn assert_intact(e: &Echoed, size: u64) {
    assert_eq!(e.sent, size, "sent bytes");
    assert_eq!(e.received, size, "echoed bytes");
    assert_eq!(e.received_hash, e.sent_hash, "sha256 of the echo");
}
