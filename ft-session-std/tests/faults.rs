//! Blackholes, half-open transports, expiry and server restarts.
#![allow(clippy::unwrap_used)]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ft_session_std::{FtListener, FtStream, SessionError};
use ft_session_testkit::{pattern, FaultPlan, FaultProxy};

/// Polls `cond` every 10 ms for at most `secs`.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn blackhole_is_detected_and_the_session_resumes_after_it() {
    bounded(60, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), FaultPlan::new()).unwrap();
        let client = Arc::new(FtStream::connect(proxy.local_addr(), config()).unwrap());
        let server = Arc::new(listener.accept().unwrap().0);
        let len = 4 << 20;
        // Part of the stream before the hole, the rest written into it.
        (&*client).write_all(&pattern(1, len)[..len / 4]).unwrap();
        proxy.blackhole(true);
        let (c, s) = (client.clone(), server.clone());
        let cside = duplex_rest(c, pattern(1, len), len / 4);
        let sside = duplex(s, Arc::new(pattern(2, len)));
        // Both sides declare the silent transport dead (idle timeout).
        assert!(wait_for(20, || client.stats().transports_lost >= 1
            && server.stats().transports_lost >= 1));
        proxy.blackhole(false);
        let cside = cside.join().unwrap().unwrap();
        let sside = sside.join().unwrap().unwrap();
        assert_exchange(&cside, &sside, len, len);
        assert!(client.stats().reconnects >= 1);
        client.close().unwrap();
        server.close().unwrap();
    });
}

/// Like `duplex`, for a stream whose first `skip` bytes of `data` were
/// already written.
fn duplex_rest(
    stream: Arc<FtStream>,
    data: Vec<u8>,
    skip: usize,
) -> thread::JoinHandle<std::io::Result<Side>> {
    let full = ft_session_testkit::sha256_hex(&data);
    let h = duplex(stream, Arc::new(data[skip..].to_vec()));
    thread::spawn(move || {
        let mut side = h.join().unwrap()?;
        side.sent_sha = full;
        Ok(side)
    })
}

#[test]
fn half_open_server_still_believes_in_the_old_transport() {
    bounded(60, || {
        // The server would notice the dead transport only after 30 s: when the
        // client resumes, its old transport is still "up" there.
        let mut server_cfg = config();
        server_cfg.idle_timeout = Duration::from_secs(30);
        let listener = FtListener::bind("127.0.0.1:0", server_cfg).unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = FaultProxy::start(addr, FaultPlan::new()).unwrap();
        let proxy_addr = proxy.local_addr();
        // First transport through the proxy, later ones direct.
        let dials = Arc::new(AtomicUsize::new(0));
        let d = dials.clone();
        let client = FtStream::connect_with(config(), move || {
            let target = if d.fetch_add(1, Ordering::SeqCst) == 0 {
                proxy_addr
            } else {
                addr
            };
            TcpStream::connect(target)
        })
        .unwrap();
        let client = Arc::new(client);
        let server = Arc::new(listener.accept().unwrap().0);
        // Pause holds every byte (and every FIN) in the kernel: the server's
        // transport neither delivers nor fails.
        proxy.pause();
        let len = 2 << 20;
        let cside = duplex(client.clone(), Arc::new(pattern(3, len)));
        let sside = duplex(server.clone(), Arc::new(pattern(4, len)));
        let cside = cside.join().unwrap().unwrap();
        let sside = sside.join().unwrap().unwrap();
        assert_exchange(&cside, &sside, len, len);
        assert!(dials.load(Ordering::SeqCst) >= 2);
        let ss = server.stats();
        assert_eq!(ss.reconnects, 1, "{ss:?}");
        // The server dropped the old transport when the resume arrived.
        assert_eq!(ss.transports_lost, 1, "{ss:?}");
        client.close().unwrap();
        server.close().unwrap();
        drop(proxy);
    });
}

#[test]
fn reconnect_time_exceeded_expires_both_sides() {
    bounded(60, || {
        let mut cfg = config();
        cfg.max_reconnect_time = Duration::from_millis(1500);
        let listener = FtListener::bind("127.0.0.1:0", cfg.clone()).unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), FaultPlan::new()).unwrap();
        let client = FtStream::connect(proxy.local_addr(), cfg).unwrap();
        let server = listener.accept().unwrap().0;
        (&client).write_all(b"before").unwrap();
        let mut buf = [0u8; 6];
        (&server).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"before");
        // The only path to the server disappears for good.
        drop(proxy);
        let s = thread::spawn(move || (&server).read(&mut [0u8; 16]).unwrap_err());
        let ce = (&client).read(&mut [0u8; 16]).unwrap_err();
        let se = s.join().unwrap();
        for e in [&ce, &se] {
            assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
            assert_eq!(
                SessionError::from_io(e),
                Some(&SessionError::Expired),
                "{e}"
            );
        }
        // Writes fail the same way: the error is sticky.
        let we = (&client).write(b"x").unwrap_err();
        assert_eq!(SessionError::from_io(&we), Some(&SessionError::Expired));
    });
}

#[test]
fn restarted_server_answers_unknown_session() {
    bounded(60, || {
        let first = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let proxy = FaultProxy::start(first.local_addr().unwrap(), FaultPlan::new()).unwrap();
        // The "restarted" server: same service, new process state.
        let second = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let (proxy_addr, second_addr) = (proxy.local_addr(), second.local_addr().unwrap());
        let dials = Arc::new(AtomicUsize::new(0));
        let d = dials.clone();
        // An unproven REJECT is retried until the reconnect time runs out.
        let mut cc = config();
        cc.max_reconnect_time = Duration::from_secs(2);
        let client = FtStream::connect_with(cc, move || {
            let target = if d.fetch_add(1, Ordering::SeqCst) == 0 {
                proxy_addr
            } else {
                second_addr
            };
            TcpStream::connect(target)
        })
        .unwrap();
        let _old = first.accept().unwrap().0;
        (&client).write_all(b"hello").unwrap();
        proxy.kill_all();
        let e = (&client).read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        assert_eq!(
            SessionError::from_io(&e),
            Some(&SessionError::UnknownSession),
            "{e}"
        );
        let refused = second.counts().rejected_resumes;
        assert!(refused >= 2, "retried within max_reconnect_time: {refused}");
    });
}
