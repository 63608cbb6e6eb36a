//! Issue 12 regressions: what flush, shutdown, close and drop promise.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{bounded, fast_config, wait_until};
use ft_session_testkit::{pattern, sha256_hex};
use ft_session_tokio::{FtListener, FtStream, SessionError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LEN: usize = 8 << 20;

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
        let listener = FtListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
        let c = FtStream::connect(listener.local_addr().unwrap(), cfg)
            .await
            .unwrap();
        let (s, _) = listener.accept().await.unwrap();
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
            listener.stats().sessions == 0
        })
        .await;
    })
    .await;
}

/// Dropping a stream without close frees the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_close_frees_the_session() {
    bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let c = FtStream::connect(listener.local_addr().unwrap(), fast_config())
            .await
            .unwrap();
        let (s, _) = listener.accept().await.unwrap();
        c.write_all_ref(b"x").await;
        drop(c);
        drop(s);
        wait_until("listener frees the session", || {
            listener.stats().sessions == 0
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

trait WriteRef {
    async fn write_all_ref(&self, b: &[u8]);
}

impl WriteRef for FtStream {
    async fn write_all_ref(&self, b: &[u8]) {
        let mut r = self;
        r.write_all(b).await.unwrap();
    }
}
