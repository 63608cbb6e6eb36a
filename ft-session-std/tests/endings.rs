//! Issue 12 regressions for std: what flush, shutdown, close and drop
//! promise, when the calling thread or the whole process ends right after.
//! Process ends run this test binary again as a child (`child_role`).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_exchange, bounded, config, duplex};
use ft_session_std::{Config, FtListener, FtStream, SessionError};
use ft_session_testkit::{pattern, sha256_hex};

const LEN: usize = 8 << 20;
/// Set in a child process: the role it plays (see `child_role`).
const ROLE: &str = "FT_ENDINGS_ROLE";
/// The address a child client connects to.
const ADDR: &str = "FT_ENDINGS_ADDR";

/// A short `max_reconnect_time`, so a lost final frame shows up as an
/// `Expired` error within the test's bound, not as a hang.
fn short() -> Config {
    let mut c = config();
    c.max_reconnect_time = Duration::from_secs(4);
    c
}

/// Polls `cond` every 10 ms for at most 20 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A child process running this binary's `child_role` as `role`; killed
/// if the test fails first.
struct ChildProc {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl ChildProc {
    fn spawn(role: &str, addr: Option<SocketAddr>) -> ChildProc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["child_role", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .stdout(Stdio::piped());
        if let Some(a) = addr {
            cmd.env(ADDR, a.to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        ChildProc { child, out }
    }

    /// What follows `key` on the child's next stdout line that has it.
    fn line(&mut self, key: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "child ended before {key}");
            // libtest may have started the line ("test child_role ... ").
            if let Some(i) = line.find(key) {
                return line[i + key.len()..].trim().to_string();
            }
        }
    }

    /// Waits for the child to exit; true if it exited with 0.
    fn success(&mut self) -> bool {
        self.child.wait().unwrap().success()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a child process does; a no-op (passing) test in a normal run.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let code = match role.as_str() {
        // write_all, flush, shutdown(Write), drop, exit at once.
        "client-shutdown-exit" => {
            let addr: SocketAddr = std::env::var(ADDR).unwrap().parse().unwrap();
            let mut c = FtStream::connect(addr, short()).unwrap();
            c.write_all(&pattern(7, LEN)).unwrap();
            c.flush().unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            drop(c);
            0
        }
        // Serves one session (read to the end, reply, close), then exits
        // the moment close returns: its answering CLOSE must be out.
        "server-close-exit" => {
            let l = FtListener::bind("127.0.0.1:0", short()).unwrap();
            println!("ADDR {}", l.local_addr().unwrap());
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            println!("GOT {} {}", got.len(), sha256_hex(&got));
            s.write_all(&pattern(8, LEN)).unwrap();
            match s.close() {
                Ok(()) => 0,
                Err(e) => {
                    println!("CLOSE-FAILED {e}");
                    3
                }
            }
        }
        other => panic!("unknown role {other}"),
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// write_all 8 MiB; flush; shutdown(Write); drop; the client's thread
/// ends: the server reads every byte (length and sha256).
#[test]
fn shutdown_drop_then_thread_end_delivers_every_byte() {
    bounded(60, || {
        let listener = FtListener::bind("127.0.0.1:0", short()).unwrap();
        let addr = listener.local_addr().unwrap();
        let data = pattern(7, LEN);
        let d = data.clone();
        let client = thread::spawn(move || {
            let mut c = FtStream::connect(addr, short()).unwrap();
            c.write_all(&d).unwrap();
            c.flush().unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            drop(c);
        });
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        client.join().unwrap();
        assert_eq!(got.len(), LEN, "every byte arrived");
        assert_eq!(sha256_hex(&got), sha256_hex(&data), "the bytes are exact");
    });
}

/// The same when the whole client process exits right after the drop: an
/// `Ok` shutdown means the server's session has every byte.
#[test]
fn shutdown_drop_then_process_exit_delivers_every_byte() {
    bounded(60, || {
        let listener = FtListener::bind("127.0.0.1:0", short()).unwrap();
        let mut child = ChildProc::spawn("client-shutdown-exit", listener.local_addr().ok());
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert!(child.success(), "the child's calls all returned Ok");
        assert_eq!(got.len(), LEN, "every byte arrived");
        assert_eq!(sha256_hex(&got), sha256_hex(&pattern(7, LEN)));
    });
}

/// `close` returns only once its last frame is written: a server process
/// that exits the moment its `close` returns still lets the client's close
/// end cleanly (a lost answering CLOSE would leave the client resuming to
/// a dead server until `Expired`). Both directions checked by length and
/// sha256.
#[test]
fn close_waits_for_its_last_frame_before_the_process_exits() {
    bounded(60, || {
        let mut child = ChildProc::spawn("server-close-exit", None);
        let addr: SocketAddr = child.line("ADDR").parse().unwrap();
        let mut c = FtStream::connect(addr, short()).unwrap();
        let data = pattern(9, LEN);
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), LEN, "server->client length");
        assert_eq!(sha256_hex(&got), sha256_hex(&pattern(8, LEN)));
        let server_got = child.line("GOT");
        assert_eq!(server_got, format!("{} {}", LEN, sha256_hex(&data)));
        c.close().unwrap();
        assert!(child.success(), "the server's close returned Ok");
    });
}

/// Closing while the peer still sends: unread input is discarded, both
/// closes complete within their bound, and the listener frees the session.
#[test]
fn close_with_unread_input_completes_and_frees() {
    bounded(60, || {
        let mut cfg = short();
        cfg.recv_buffer_capacity = 64 * 1024;
        let listener = FtListener::bind("127.0.0.1:0", cfg.clone()).unwrap();
        let c = FtStream::connect(listener.local_addr().unwrap(), cfg).unwrap();
        let (s, _) = listener.accept().unwrap();
        let writer = thread::spawn(move || {
            let _ = (&c).write_all(&pattern(1, 512 * 1024));
            c.close()
        });
        s.close_timeout(Duration::from_secs(10)).unwrap();
        let r = writer.join().unwrap();
        // The client's close ends too (Ok, or the session's typed error).
        if let Err(e) = &r {
            assert!(SessionError::from_io(e).is_some(), "{e}");
        }
        drop(s);
        wait_until("listener frees the session", || {
            listener.stats().sessions == 0
        });
    });
}

/// Dropping both ends without close frees the session.
#[test]
fn drop_without_close_frees_the_session() {
    bounded(60, || {
        let listener = FtListener::bind("127.0.0.1:0", short()).unwrap();
        let c = FtStream::connect(listener.local_addr().unwrap(), short()).unwrap();
        let (s, _) = listener.accept().unwrap();
        (&c).write_all(b"x").unwrap();
        assert_eq!(listener.stats().sessions, 1);
        drop(c);
        drop(s);
        wait_until("listener frees the session", || {
            listener.stats().sessions == 0
        });
    });
}

/// A bad configuration fails at bind and at connect.
#[test]
fn a_bad_config_fails_at_once() {
    let mut cfg = config();
    cfg.max_frame_payload = 0;
    let e = FtListener::bind("127.0.0.1:0", cfg.clone()).unwrap_err();
    assert!(
        matches!(SessionError::from_io(&e), Some(SessionError::Config(_))),
        "{e}"
    );
    let e = FtStream::connect("127.0.0.1:1", cfg).unwrap_err();
    assert!(
        matches!(SessionError::from_io(&e), Some(SessionError::Config(_))),
        "{e}"
    );
}

/// Drain: new sessions are refused (REJECT `BUSY`), `accept` fails, a
/// session whose transport dies meanwhile still resumes, and `drain`
/// returns once that last session has ended; bytes checked both ways.
#[test]
fn drain_serves_resumes_refuses_new_sessions_and_ends_with_the_last() {
    bounded(60, || {
        let listener = Arc::new(FtListener::bind("127.0.0.1:0", config()).unwrap());
        let addr = listener.local_addr().unwrap();
        // The test keeps a clone of every client transport, to kill it.
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let l2 = live.clone();
        let c = FtStream::connect_with(config(), move || {
            let s = TcpStream::connect(addr)?;
            l2.lock().unwrap().push(s.try_clone()?);
            Ok(s)
        })
        .unwrap();
        let (s, _) = listener.accept().unwrap();
        let l = listener.clone();
        let drain = thread::spawn(move || l.drain());
        wait_until("the listener stopped accepting", || {
            !listener.is_accepting()
        });
        let e = listener.accept().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");

        let mut cfg = config();
        cfg.connect_timeout = Duration::from_millis(300);
        let refused = FtStream::connect(addr, cfg).unwrap_err();
        let st = listener.stats();
        assert!(st.rejected_handshakes >= 1, "{refused} {st:?}");
        assert_eq!(st.accepted, 1, "no new session while draining");

        // The running session loses its transport and resumes.
        let killed = live.lock().unwrap().pop().unwrap();
        killed.shutdown(Shutdown::Both).unwrap();
        let e = listener
            .drain_timeout(Duration::from_millis(50))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "a session still runs");
        assert!(!drain.is_finished());
        // Both ways, then both half-close, which ends the session.
        let (c, s) = (Arc::new(c), Arc::new(s));
        let len = 256 * 1024;
        let cside = duplex(c.clone(), Arc::new(pattern(21, len)));
        let sside = duplex(s.clone(), Arc::new(pattern(22, len)));
        let cside = cside.join().unwrap().unwrap();
        let sside = sside.join().unwrap().unwrap();
        assert_exchange(&cside, &sside, len, len);
        assert!(c.stats().reconnects >= 1, "resumed while draining");
        assert!(s.stats().reconnects >= 1);
        drop((c, s));
        drain.join().unwrap();
        assert_eq!(listener.running(), 0);
    });
}
