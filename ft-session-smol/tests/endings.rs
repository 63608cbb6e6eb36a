//! Issue 12 regressions on smol: what flush, shutdown, close, drop and a
//! listener's drain promise (the Tokio adapter's `tests/endings.rs` checks
//! the same on Tokio).
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, fast_config, recv_all, run_bounded, Dialer, Transfer};
use ft_session_core::Config;
use ft_session_smol::{FtListener, FtStream, SessionError, SmolRuntime};
use ft_session_testkit::{pattern, sha256_hex, FaultPlan, FaultProxy};
use smol::io::AsyncWriteExt;
use smol::Executor;

const LEN: usize = 8 << 20;

/// A listener on loopback, a client session and the server's end of it.
async fn pair(config: Config) -> (FtListener, FtStream, FtStream) {
    let listener = FtListener::bind("127.0.0.1:0", config.clone())
        .await
        .unwrap();
    let c = FtStream::connect(listener.local_addr().unwrap(), config)
        .await
        .unwrap();
    let (s, _) = listener.accept().await.unwrap();
    (listener, c, s)
}

/// write_all 8 MiB; flush; shutdown; drop; the client's executor stops
/// running: the server reads every byte (length and sha256) and a clean
/// end of stream.
#[test]
fn shutdown_then_executor_end_delivers_every_byte() {
    run_bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = smol::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            recv_all(&s, &AtomicU64::new(0)).await.unwrap()
        });
        let data = pattern(7, LEN);
        // The client's own executor, on a thread the test stops.
        let ex = Arc::new(Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let runner = {
            let ex = ex.clone();
            std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
        };
        let mut c = FtStream::connect_on(SmolRuntime::executor(ex), addr, fast_config())
            .await
            .unwrap();
        c.write_all(&data).await.unwrap();
        c.flush().await.unwrap();
        c.shutdown().await.unwrap();
        drop(c);
        stop.send(()).await.unwrap();
        runner.join().unwrap().unwrap();
        // Nothing runs the client's driver any more.
        let (n, sha) = server.await;
        assert_eq!(n, LEN as u64, "every byte arrived");
        assert_eq!(sha, sha256_hex(&data), "the bytes are exact");
    });
}

/// Closing while the peer still sends: unread input is discarded, both
/// closes complete, and the listener frees the session.
#[test]
fn close_with_unread_input_completes_and_frees() {
    run_bounded(async {
        let mut cfg = fast_config();
        cfg.recv_buffer_capacity = 64 * 1024;
        let (listener, c, s) = pair(cfg).await;
        let writer = smol::spawn(async move {
            let _ = (&c).write_all(&pattern(1, 512 * 1024)).await;
            c.close().await
        });
        s.close_timeout(Duration::from_secs(10)).await.unwrap();
        // The client's close ends too (Ok, or the session's typed error).
        if let Err(e) = writer.await {
            assert!(SessionError::from_io(&e).is_some(), "{e}");
        }
        drop(s);
        eventually("listener frees the session", || {
            listener.stats().running == 0
        })
        .await;
    });
}

/// Dropping a stream without close frees the session.
#[test]
fn drop_without_close_frees_the_session() {
    run_bounded(async {
        let (listener, c, s) = pair(fast_config()).await;
        (&c).write_all(b"x").await.unwrap();
        drop(c);
        drop(s);
        eventually("listener frees the session", || {
            listener.stats().running == 0
        })
        .await;
    });
}

/// A close whose peer never answers (its bytes held by a paused proxy)
/// ends at its bound with `TimedOut`, and the session is aborted.
#[test]
fn close_timeout_bounds_a_close_the_peer_never_answers() {
    run_bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), FaultPlan::new()).unwrap();
        let c = FtStream::connect(proxy.local_addr(), fast_config())
            .await
            .unwrap();
        let (_s, _) = listener.accept().await.unwrap();
        proxy.pause();
        let e = c
            .close_timeout(Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(matches!(c.outcome(), Some(Err(_))), "aborted");
        proxy.resume();
    });
}

/// A bad configuration fails at bind and at from_incoming.
#[test]
fn constructors_refuse_a_bad_config() {
    run_bounded(async {
        let mut cfg = fast_config();
        cfg.max_frame_payload = 0;
        let e = FtListener::bind("127.0.0.1:0", cfg.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(SessionError::from_io(&e), Some(SessionError::Config(_))),
            "{e}"
        );
        let none = smol::stream::empty::<io::Result<(smol::net::TcpStream, _)>>();
        let e = FtListener::from_incoming(cfg, none).unwrap_err();
        assert!(
            matches!(SessionError::from_io(&e), Some(SessionError::Config(_))),
            "{e}"
        );
    });
}

/// Drain: after `drain` started, `accept` fails, a fresh client is refused,
/// a parked session still resumes and moves every byte both ways, and the
/// drain ends once the last session closed.
#[test]
fn drain_serves_resumes_refuses_new_sessions_and_ends_with_the_last() {
    run_bounded(async {
        let listener = Arc::new(
            FtListener::bind("127.0.0.1:0", fast_config())
                .await
                .unwrap(),
        );
        let addr = listener.local_addr().unwrap();
        let dialer = Dialer::new(addr);
        let c = dialer
            .connect(SmolRuntime::global(), fast_config())
            .await
            .unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let l = listener.clone();
        let drain = smol::spawn(async move { l.drain().await });
        eventually("the listener stopped accepting", || {
            !listener.stats().accepting
        })
        .await;
        let e = listener.accept().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");

        let mut cfg = fast_config();
        cfg.connect_timeout = Duration::from_millis(300);
        let refused = FtStream::connect(addr, cfg).await.unwrap_err();
        let st = listener.stats().endpoint;
        assert!(st.rejected_handshakes >= 1, "{refused} {st:?}");
        assert_eq!(st.accepted, 1, "no new session while draining");

        assert_eq!(dialer.reset_all(), 1);
        let e = listener
            .drain_timeout(Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "a session still runs");
        assert!(!drain.is_finished());
        // Both ways, then both half-close, which ends the session.
        let t = Transfer::start(c, s, 256 * 1024, common::on_smol);
        t.release();
        let (c, s) = t.finish().await;
        assert!(c.stats().reconnects >= 1, "resumed while draining");
        assert!(s.stats().reconnects >= 1);
        drop((c, s));
        drain.await;
        assert_eq!(listener.stats().running, 0);
    });
}
