//! The zero-copy calls of the blocking stream: `send_bytes` and
//! `read_chunk` move a `Bytes` in and out, both ways, checked by length and
//! sha256 on the far side, over a clean connection and through connection
//! kills.
#![allow(clippy::unwrap_used)]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use ft_session_std::{Bytes, FtListener, FtStream, SessionError};
use ft_session_testkit::{pattern, sha256_hex, FaultPlan, FaultProxy, Sha256Tracker};

/// Sends `data` with `send_bytes` in slices of `piece` bytes (each a view
/// of the same buffer, nothing copied) then half-closes, while reading with
/// `read_chunk` to end of stream (the empty chunk).
fn duplex_zero_copy(
    stream: Arc<FtStream>,
    data: Bytes,
    piece: usize,
) -> thread::JoinHandle<std::io::Result<Side>> {
    thread::spawn(move || {
        stream.set_read_timeout(Some(Duration::from_secs(60)));
        let w = stream.clone();
        let d = data.clone();
        let writer = thread::spawn(move || -> std::io::Result<()> {
            let mut at = 0;
            while at < d.len() {
                let end = (at + piece).min(d.len());
                w.send_bytes(d.slice(at..end))?;
                at = end;
            }
            w.shutdown(Shutdown::Write)
        });
        let mut tracker = Sha256Tracker::new();
        loop {
            let chunk = stream.read_chunk()?;
            if chunk.is_empty() {
                break;
            }
            tracker.update(&chunk);
        }
        writer.join().unwrap()?;
        Ok(Side {
            sent_sha: sha256_hex(&data),
            received: tracker.bytes(),
            received_sha: tracker.finish(),
        })
    })
}

/// A client and the session the listener accepted for it.
fn pair(listener: &FtListener, addr: std::net::SocketAddr) -> (Arc<FtStream>, Arc<FtStream>) {
    let client = FtStream::connect(addr, config()).unwrap();
    let id = client.session_id().unwrap();
    // A handshake cut after the server's ACCEPT leaves an orphan session in
    // the queue (it expires by itself): take the client's.
    let server = loop {
        let s = listener.accept().unwrap().0;
        if s.session_id() == Some(id) {
            break s;
        }
    };
    (Arc::new(client), Arc::new(server))
}

#[test]
fn zero_copy_both_ways_exact_bytes() {
    bounded(60, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let (client, server) = pair(&listener, listener.local_addr().unwrap());
        let (c2s, s2c) = (8 << 20, (6 << 20) + 12_345);
        let data_c = Bytes::from(pattern(11, c2s));
        let data_s = Bytes::from(pattern(12, s2c));
        let s = duplex_zero_copy(server.clone(), data_s, 64 * 1024 + 7);
        let c = duplex_zero_copy(client.clone(), data_c, 200 * 1024);
        let (cside, sside) = (c.join().unwrap().unwrap(), s.join().unwrap().unwrap());
        assert_exchange(&cside, &sside, c2s, s2c);
        // End of stream stays end of stream.
        assert!(client.read_chunk().unwrap().is_empty());
        assert!(server.read_chunk().unwrap().is_empty());
        let server_close = thread::spawn(move || server.close());
        client.close().unwrap();
        server_close.join().unwrap().unwrap();
    });
}

#[test]
fn zero_copy_mixes_with_copying_calls() {
    bounded(60, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let (client, server) = pair(&listener, listener.local_addr().unwrap());
        let data = pattern(21, 3 << 20);
        let third = data.len() / 3;
        let (a, b, c) = (
            data[..third].to_vec(),
            Bytes::copy_from_slice(&data[third..2 * third]),
            data[2 * third..].to_vec(),
        );
        let writer = {
            let client = client.clone();
            thread::spawn(move || -> std::io::Result<()> {
                (&*client).write_all(&a)?;
                client.send_bytes(b)?;
                (&*client).write_all(&c)?;
                client.shutdown(Shutdown::Write)
            })
        };
        // Read alternately by chunks and by copies: the same queue, in order.
        let mut tracker = Sha256Tracker::new();
        let mut buf = vec![0u8; 10_000];
        let mut by_chunk = true;
        loop {
            let n = if by_chunk {
                let chunk = server.read_chunk().unwrap();
                tracker.update(&chunk);
                chunk.len()
            } else {
                let n = (&*server).read(&mut buf).unwrap();
                tracker.update(&buf[..n]);
                n
            };
            if n == 0 {
                break;
            }
            by_chunk = !by_chunk;
        }
        writer.join().unwrap().unwrap();
        assert_eq!(tracker.bytes(), data.len() as u64);
        assert_eq!(tracker.finish(), sha256_hex(&data));
        let server_close = thread::spawn(move || server.close());
        client.close().unwrap();
        server_close.join().unwrap().unwrap();
    });
}

#[test]
fn read_chunk_times_out_and_the_session_goes_on() {
    bounded(30, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let (client, server) = pair(&listener, listener.local_addr().unwrap());
        server.set_read_timeout(Some(Duration::from_millis(50)));
        let e = server.read_chunk().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        client
            .send_bytes(Bytes::from_static(b"after the timeout"))
            .unwrap();
        server.set_read_timeout(Some(Duration::from_secs(20)));
        let mut got = Vec::new();
        while got.len() < 17 {
            let chunk = server.read_chunk().unwrap();
            assert!(!chunk.is_empty(), "end of stream before the bytes");
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, b"after the timeout");
        let server_close = thread::spawn(move || server.close());
        client.close().unwrap();
        server_close.join().unwrap().unwrap();
    });
}

#[test]
fn zero_copy_calls_fail_with_the_sessions_error() {
    bounded(30, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let (client, server) = pair(&listener, listener.local_addr().unwrap());
        client.abort(0x1234);
        let e = server.read_chunk().unwrap_err();
        assert!(
            matches!(
                SessionError::from_io(&e),
                Some(SessionError::Aborted { .. })
            ),
            "{e:?}"
        );
        let e = client
            .send_bytes(Bytes::from_static(b"too late"))
            .unwrap_err();
        assert!(SessionError::from_io(&e).is_some(), "{e:?}");
    });
}

#[test]
fn zero_copy_duplex_through_random_kills() {
    bounded(120, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        // Kill every connection after a random 256 KiB-1 MiB client->server.
        let plan = FaultPlan::random_kills(0x2C0, 256 << 10, 1 << 20);
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let (client, server) = pair(&listener, proxy.local_addr());
        let len = 16 << 20;
        let s = duplex_zero_copy(server.clone(), Bytes::from(pattern(32, len)), 64 * 1024);
        let c = duplex_zero_copy(client.clone(), Bytes::from(pattern(31, len)), 96 * 1024);
        let (cside, sside) = (c.join().unwrap().unwrap(), s.join().unwrap().unwrap());
        assert_exchange(&cside, &sside, len, len);
        let stats = client.stats();
        eprintln!(
            "zero-copy 16 MiB each way: {} kills, client {} resumes / {} B retransmitted, server {} B retransmitted",
            proxy.kills(),
            stats.reconnects,
            stats.retransmitted_bytes,
            server.stats().retransmitted_bytes
        );
        assert!(proxy.kills() >= 8, "only {} kills", proxy.kills());
        assert!(stats.reconnects >= 8);
        let server_close = thread::spawn(move || server.close());
        client.close().unwrap();
        server_close.join().unwrap().unwrap();
        // The listener outlives both closes: a client whose last CLOSE was
        // cut resumes to learn the outcome.
        drop(listener);
    });
}
