//! An echo larger than the server's receive and send buffers together: the
//! client writes while it reads the echo back, the server writes back each
//! chunk before it reads the next. It used to stall for good under the
//! acknowledgment policy: the server stopped reading its transport with a
//! full receive queue while the client's acknowledgments of the echo waited
//! there behind the client's data. Acknowledgments are now a window
//! (docs/PROTOCOL.md R10 and section 4), so they are always read.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::thread;

use common::{bounded, config};
use ft_session_std::{FtListener, FtStream, ReleasePolicy};
use ft_session_testkit::{pattern, sha256_hex, Sha256Tracker};

/// Bytes the client sends: 32 times each side's session buffers.
const LEN: usize = 8 << 20;

fn echo_larger_than_both_buffers(policy: ReleasePolicy) {
    let mut cfg = config();
    (cfg.send_buffer_capacity, cfg.recv_buffer_capacity) = (256 << 10, 256 << 10);
    cfg.release_policy = policy;
    let listener = FtListener::bind("127.0.0.1:0", cfg.clone()).unwrap();
    let addr = listener.local_addr().unwrap();
    // A blocking echo: nothing is read while a write back is blocked.
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut tracker = Sha256Tracker::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            tracker.update(&buf[..n]);
            stream.write_all(&buf[..n]).unwrap();
        }
        stream.close().unwrap();
        (tracker.bytes(), tracker.finish(), listener)
    });
    let data = Arc::new(pattern(13, LEN));
    let client = Arc::new(FtStream::connect(addr, cfg).unwrap());
    let writer = {
        let (w, d) = (client.clone(), data.clone());
        thread::spawn(move || {
            for chunk in d.chunks(64 * 1024) {
                (&*w).write_all(chunk).unwrap();
            }
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Sha256Tracker::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&*client).read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        echoed.update(&buf[..n]);
    }
    writer.join().unwrap();
    client.close().unwrap();
    let (server_read, server_sha, _listener) = server.join().unwrap();
    let sent_sha = sha256_hex(&data);
    assert_eq!(server_read, LEN as u64, "client->server length");
    assert_eq!(server_sha, sent_sha, "client->server sha256");
    assert_eq!(echoed.bytes(), LEN as u64, "server->client length");
    assert_eq!(echoed.finish(), sent_sha, "server->client sha256");
}

#[test]
fn echo_larger_than_both_buffers_completes() {
    bounded(30, || echo_larger_than_both_buffers(ReleasePolicy::Ack));
}

#[test]
fn echo_larger_than_both_buffers_completes_implicit() {
    bounded(30, || {
        echo_larger_than_both_buffers(ReleasePolicy::Implicit)
    });
}
