//! `connect` behaves like `TcpStream::connect`: a session the server ends at
//! once is still connected, and reads tell how it ended.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{bounded, config};
use ft_session_std::{FtListener, FtStream, SessionError};

#[test]
fn connect_succeeds_when_the_server_closes_at_once() {
    bounded(30, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let s = listener.accept().unwrap().0;
            // Close without reading: the client may not even have seen
            // the handshake complete yet.
            s.close().unwrap();
            listener
        });
        let mut c = FtStream::connect(addr, config()).unwrap();
        let mut got = Vec::new();
        assert_eq!(
            c.read_to_end(&mut got).unwrap(),
            0,
            "end of stream, no bytes"
        );
        c.close().unwrap();
        drop(server.join().unwrap());
    });
}

/// The first attempts wait for the server's reply in a blocking read on the
/// caller's thread: a server that accepts and never answers still costs
/// each attempt only the handshake timeout, the session retries, and the
/// connect fails with `Unreachable` after `connect_timeout` (a read that
/// waited for ever would fail the test's bound).
#[test]
fn connect_gives_up_on_a_server_that_never_answers() {
    bounded(30, || {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            for s in tcp.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                // Read nothing, answer nothing, close nothing.
                held.push(s);
            }
        });
        let mut cfg = config();
        cfg.handshake_timeout = Duration::from_millis(200);
        cfg.connect_timeout = Duration::from_millis(1500);
        let e = FtStream::connect(addr, cfg).unwrap_err();
        assert!(
            matches!(SessionError::from_io(&e), Some(SessionError::Unreachable)),
            "{e}"
        );
        let n = accepted.load(Ordering::SeqCst);
        assert!(
            n >= 2,
            "each attempt gave up at its handshake timeout: {n} attempts"
        );
    });
}
