//! Issue 12 regressions: what flush, shutdown, close and drop promise.
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{bounded, fast_config, wait_until, Net, Transfer};
use ft_session_core::Config;
use ft_session_testkit::{pattern, sha256_hex};
use ft_session_tokio::{FtListener, FtStream, SessionError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

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

/// write_all 8 MiB; flush; shutdown; drop; the client's runtime ends: the
/// server reads every byte (length and sha256) and a clean end of stream.
#[test]
fn shutdown_then_runtime_end_delivers_every_byte() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let listener = server_rt
        .block_on(FtListener::bind("127.0.0.1:0", fast_config()))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server_rt.spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        (got.len(), sha256_hex(&got))
    });
    let data = pattern(7, LEN);
    {
        let client_rt = tokio::runtime::Runtime::new().unwrap();
        client_rt.block_on(async {
            let mut c = FtStream::connect(addr, fast_config()).await.unwrap();
            c.write_all(&data).await.unwrap();
            c.flush().await.unwrap();
            c.shutdown().await.unwrap();
            drop(c);
        });
        // The client's runtime (and its driver) ends here.
    }
    let (n, sha) = server_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), server).await })
        .unwrap()
        .unwrap();
    assert_eq!(n, LEN, "every byte arrived");
    assert_eq!(sha, sha256_hex(&data), "the bytes are exact");
}

/// Closing while the peer still sends: unread input is discarded, both
/// closes complete, and the listener frees the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_unread_input_completes_and_frees() {
    bounded(async {
        let mut cfg = fast_config();
        cfg.recv_buffer_capacity = 64 * 1024;
        let (listener, c, s) = pair(cfg).await;
        let writer = tokio::spawn(async move {
            let mut c = c;
            let _ = c.write_all(&pattern(1, 512 * 1024)).await;
            c.close().await
        });
        s.close_timeout(Duration::from_secs(10)).await.unwrap();
        let r = writer.await.unwrap();
        // The client's close ends too (Ok, or the session's typed error).
        if let Err(e) = &r {
            assert!(SessionError::from_io(e).is_some(), "{e}");
        }
        drop(s);
        wait_until("listener frees the session", || {
            listener.stats().running == 0
        })
        .await;
    })
    .await;
}

/// Dropping a stream without close frees the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_close_frees_the_session() {
    bounded(async {
        let (listener, c, s) = pair(fast_config()).await;
        c.write_all_ref(b"x").await;
        drop(c);
        drop(s);
        wait_until("listener frees the session", || {
            listener.stats().running == 0
        })
        .await;
    })
    .await;
}

/// A bad configuration fails at bind, not at every session.
#[tokio::test]
async fn bind_with_a_bad_config_fails() {
    let mut cfg = fast_config();
    cfg.max_frame_payload = 0;
    let e = FtListener::bind("127.0.0.1:0", cfg).await.unwrap_err();
    assert!(
        matches!(SessionError::from_io(&e), Some(SessionError::Config(_))),
        "{e}"
    );
}

/// Dropping the write half of a split stream half-closes the session, as
/// for `tokio::net`'s `OwnedWriteHalf`: the server reads every byte, then
/// end of stream, and its reply still reaches the read half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_write_half_half_closes() {
    bounded(async {
        let (_listener, c, mut s) = pair(fast_config()).await;
        let (mut r, mut w) = c.into_split();
        let data = pattern(4, 300_000);
        w.write_all(&data).await.unwrap();
        drop(w);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len(), "every byte, then end of stream");
        assert_eq!(sha256_hex(&got), sha256_hex(&data));
        let reply = pattern(5, 50_000);
        s.write_all(&reply).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        assert_eq!(
            sha256_hex(&back),
            sha256_hex(&reply),
            "the read half reads on"
        );
        drop(r);
        s.close().await.unwrap();
    })
    .await;
}

/// Writes of a TCP transport that the test can hold back (they pend).
#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    /// A write was attempted while closed.
    blocked: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    fn set(&self, closed: bool) {
        self.closed.store(closed, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

struct Gated(TcpStream, Arc<Gate>);

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.1.closed.load(Ordering::SeqCst) {
            *self.1.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.1.closed.load(Ordering::SeqCst) {
                self.1.blocked.store(true, Ordering::SeqCst);
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Under the Ack policy the peer acknowledges every byte before any FIN
/// (and does not acknowledge that count again for the FIN): shutdown is
/// not `Ok` while its FIN is still unwritten, and once it is, the server
/// reads every byte and end of stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_ok_before_its_fin_is_written() {
    bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Arc::new(Gate::default());
        let g = gate.clone();
        let c = FtStream::connect_with(fast_config(), move || {
            let g = g.clone();
            async move { Ok(Gated(TcpStream::connect(addr).await?, g)) }
        })
        .await
        .unwrap();
        let (mut s, _) = listener.accept().await.unwrap();
        let data = pattern(6, 100_000);
        c.write_all_ref(&data).await;
        wait_until("the server acknowledged every byte", || {
            c.stats().core.released_bytes == data.len() as u64
        })
        .await;
        gate.set(true);
        let mut shutdown = std::pin::pin!(c.shutdown());
        tokio::select! {
            r = &mut shutdown => panic!("shutdown returned {r:?} before its FIN was written"),
            () = wait_until("the FIN's write is held", || gate.blocked.load(Ordering::SeqCst)) => {}
        }
        assert!(
            futures::poll!(&mut shutdown).is_pending(),
            "shutdown is not Ok while its FIN is unwritten"
        );
        gate.set(false);
        shutdown.await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len());
        assert_eq!(sha256_hex(&got), sha256_hex(&data));
        let (a, b) = tokio::join!(c.close(), s.close());
        a.unwrap();
        b.unwrap();
    })
    .await;
}

/// A close whose peer never answers (its bytes held by a paused proxy)
/// ends at its bound with `TimedOut`, and the session is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_timeout_bounds_a_close_the_peer_never_answers() {
    bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let proxy = ft_session_testkit::FaultProxy::start(
            listener.local_addr().unwrap(),
            ft_session_testkit::FaultPlan::new(),
        )
        .unwrap();
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
        common::drop_proxy(proxy).await;
    })
    .await;
}

/// Drain: after `drain` started, `accept` fails, a fresh client is refused,
/// a parked session still resumes and moves every byte both ways, and the
/// drain ends once the last session closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_serves_resumes_refuses_new_sessions_and_ends_with_the_last() {
    bounded(async {
        let listener = Arc::new(
            FtListener::bind("127.0.0.1:0", fast_config())
                .await
                .unwrap(),
        );
        let addr = listener.local_addr().unwrap();
        let net = Net::new(addr);
        let c = net.connect(fast_config()).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let l = listener.clone();
        let drain = tokio::spawn(async move { l.drain().await });
        wait_until("the listener stopped accepting", || {
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

        assert_eq!(net.kill_all(), 1);
        let e = listener
            .drain_timeout(Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "a session still runs");
        assert!(!drain.is_finished());
        // Both ways, then both half-close, which ends the session.
        let t = Transfer::start(c, s, 256 * 1024);
        t.release();
        let (c, s) = t.finish().await;
        assert!(c.stats().reconnects >= 1, "resumed while draining");
        assert!(s.stats().reconnects >= 1);
        drop((c, s));
        drain.await.unwrap();
        assert_eq!(listener.stats().running, 0);
    })
    .await;
}

/// `stop_accepting` closes sessions established but never accepted: their
/// client reads end of stream and closes cleanly, and nothing keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_accepting_closes_sessions_never_accepted() {
    bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let mut c = FtStream::connect(listener.local_addr().unwrap(), fast_config())
            .await
            .unwrap();
        assert_eq!(listener.stats().endpoint.accepted, 1);
        listener.stop_accepting();
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).await.unwrap(), 0);
        c.close().await.unwrap();
        wait_until("nothing runs", || listener.stats().running == 0).await;
        assert!(listener.accept().await.is_err());
    })
    .await;
}

trait WriteRef {
    async fn write_all_ref(&self, b: &[u8]);
}

impl WriteRef for FtStream {
    async fn write_all_ref(&self, b: &[u8]) {
        let mut r = self;
        r.write_all(b).await.unwrap();
    }
}
