//! The core's `poll_loop` example (a client `Session` driven by hand over a
//! non-blocking std socket) against this crate's blocking echo server,
//! through a proxy that kills the transport mid-stream: the echo must come
//! back whole (length and sha256) and the server must have echoed exactly
//! what was sent.
#![allow(clippy::unwrap_used)]
mod common;

#[path = "../../ft-session-core/examples/poll_loop.rs"]
mod poll_loop;

use std::io::{Read, Write};

use common::*;
use ft_session_std::FtListener;
use ft_session_testkit::{pattern, sha256_hex, FaultPlan, FaultProxy};

#[test]
fn poll_loop_client_survives_kills() {
    bounded(60, || {
        const LEN: usize = 3 << 20;
        const KILLS: u64 = 6;
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let plan = FaultPlan::random_kills(5, 64 * 1024, 256 * 1024).max_kills(KILLS);
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        // The listener outlives the session: a client whose last CLOSE was
        // cut resumes to learn the outcome.
        let server = std::thread::spawn(move || {
            let (mut s, _peer) = listener.accept().unwrap();
            let (mut buf, mut echoed) = (vec![0u8; 64 * 1024], 0u64);
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).unwrap();
                echoed += n as u64;
            }
            s.close().unwrap();
            (echoed, listener)
        });
        let data = pattern(5, LEN);
        let echo = poll_loop::echo_client(proxy.local_addr(), config(), &data).unwrap();
        let (server_echoed, _listener) = server.join().unwrap();
        assert_eq!(echo.len(), data.len());
        assert_eq!(sha256_hex(&echo), sha256_hex(&data));
        assert_eq!(server_echoed, LEN as u64);
        assert_eq!(proxy.kills(), KILLS);
    });
}
