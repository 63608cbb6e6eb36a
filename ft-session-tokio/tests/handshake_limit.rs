//! The listener's endpoint bounds the handshakes in progress: beyond
//! `max_pending_handshakes` a new connection is closed at once, silent ones
//! are closed at their deadline, and a legitimate client gets in afterwards
//! with every byte exact.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use ft_session_tokio::{FtListener, FtStream};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_handshakes_are_bounded_then_expire() {
    bounded(async {
        let mut config = fast_config();
        config.max_pending_handshakes = 3;
        let listener = FtListener::bind("127.0.0.1:0", config.clone())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut silent = Vec::new();
        for _ in 0..5 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        wait_until("two connections refused at once", || {
            listener.stats().endpoint.refused_handshakes == 2
        })
        .await;
        assert_eq!(listener.stats().endpoint.pending_handshakes, 3);
        wait_until("the three silent ones expired", || {
            listener.stats().endpoint.expired_handshakes == 3
        })
        .await;
        // Every silent connection was closed by the server, unanswered.
        for mut s in silent {
            let mut b = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
            assert_eq!(read.expect("closed by the server").unwrap_or(0), 0);
        }
        let stats = listener.stats().endpoint;
        assert_eq!((stats.pending_handshakes, stats.accepted), (0, 0));

        let client = FtStream::connect(addr, config).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let t = Transfer::start(client, server, 256 * 1024);
        t.release();
        t.finish().await;
        assert_eq!(listener.stats().endpoint.accepted, 1);
    })
    .await
}
