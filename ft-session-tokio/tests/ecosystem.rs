//! FtStream composes with the Tokio ecosystem under transport kills, and
//! scales to a thousand concurrent sessions.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ft_session_testkit::{pattern, FaultPlan, FaultProxy};
use ft_session_tokio::{FtListener, FtStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_length_delimited_echo_under_kills() {
    bounded(async {
        const FRAMES: u64 = 400;
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let plan = FaultPlan::random_kills(11, 8 * 1024, 96 * 1024).max_kills(10);
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();

        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut framed = Framed::new(s, LengthDelimitedCodec::new());
            let mut n = 0u64;
            while let Some(frame) = framed.next().await {
                let mut frame = frame.unwrap();
                frame.reverse();
                framed.send(frame.freeze()).await.unwrap();
                n += 1;
            }
            framed.into_inner().close().await.unwrap();
            n
        });

        let client = FtStream::connect(proxy.local_addr(), fast_config())
            .await
            .unwrap();
        let mut framed = Framed::new(client, LengthDelimitedCodec::new());
        for i in 0..FRAMES {
            // Sizes from 1 byte to ~8 KiB, so frames straddle the kills.
            let len = 1 + (i as usize * 2749) % 8192;
            let sent = pattern(i, len);
            framed.send(Bytes::from(sent.clone())).await.unwrap();
            let mut echo = framed.next().await.unwrap().unwrap().to_vec();
            echo.reverse();
            assert_eq!(echo, sent, "frame {i}");
        }
        let mut client = framed.into_inner();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        client.close().await.unwrap();
        assert_eq!(server.await.unwrap(), FRAMES);
        assert_eq!(proxy.kills(), 10);
        assert_eq!(client.stats().reconnects, 10, "{:?}", client.stats());
        drop_proxy(proxy).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_bidirectional_gateway_to_tcp_under_kills() {
    bounded(async {
        const UP: u64 = 2 << 20;
        const DOWN: u64 = 2 << 20;
        // A plain TCP backend: hashes what it gets, sends pattern 2 back.
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let backend_task = tokio::spawn(async move {
            let (s, _) = backend.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            let got = Arc::new(AtomicU64::new(0));
            let (rd, wr) =
                tokio::join!(read_all(&mut r, got), write_pattern(&mut w, 2, DOWN, None));
            wr.unwrap();
            rd.unwrap()
        });

        // The gateway: one session spliced onto one TCP connection.
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let plan = FaultPlan::random_kills(5, 32 * 1024, 256 * 1024).max_kills(12);
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let gateway = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut tcp = tokio::net::TcpStream::connect(backend_addr).await.unwrap();
            let moved = tokio::io::copy_bidirectional(&mut s, &mut tcp)
                .await
                .unwrap();
            s.close().await.unwrap();
            moved
        });

        let client = FtStream::connect(proxy.local_addr(), fast_config())
            .await
            .unwrap();
        let (mut r, mut w) = tokio::io::split(client);
        let got = Arc::new(AtomicU64::new(0));
        let (wr, rd) = tokio::join!(write_pattern(&mut w, 1, UP, None), read_all(&mut r, got));
        wr.unwrap();
        let (n, sha) = rd.unwrap();
        assert_eq!(n, DOWN);
        assert_eq!(sha, pattern_sha(2, DOWN), "backend→client bytes exact");
        let client = r.unsplit(w);
        client.close().await.unwrap();

        let (bn, bsha) = backend_task.await.unwrap();
        assert_eq!(bn, UP);
        assert_eq!(bsha, pattern_sha(1, UP), "client→backend bytes exact");
        assert_eq!(gateway.await.unwrap(), (UP, DOWN));
        assert!(proxy.kills() >= 6, "kills: {}", proxy.kills());
        assert_eq!(client.stats().reconnects, proxy.kills());
        drop_proxy(proxy).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sessions_request_response_with_ten_percent_killed() {
    bounded(async {
        const SESSIONS: usize = 1000;
        const ROUNDS: u64 = 4;
        const REQ: usize = 512;
        let mut cfg = fast_config();
        // A thousand handshakes queue up on two cores: give them time.
        cfg.handshake_timeout = Duration::from_secs(10);
        cfg.idle_timeout = Duration::from_secs(10);
        cfg.heartbeat_interval = Duration::from_secs(1);
        let listener = Arc::new(FtListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap());
        let net = Net::new(listener.local_addr().unwrap());
        let (net, cfg) = (Arc::new(net), Arc::new(cfg));

        // Echo server: every request comes back reversed.
        let l = listener.clone();
        let server = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..SESSIONS {
                let (mut s, _) = l.accept().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; REQ];
                    for _ in 0..ROUNDS {
                        s.read_exact(&mut buf).await.unwrap();
                        buf.reverse();
                        s.write_all(&buf).await.unwrap();
                    }
                    s.close().await.unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });

        let halfway = Arc::new(tokio::sync::Barrier::new(SESSIONS + 1));
        let go_on = Arc::new(tokio::sync::Barrier::new(SESSIONS + 1));
        let mut clients = Vec::new();
        for i in 0..SESSIONS {
            let (net, cfg) = (net.clone(), cfg.clone());
            let (halfway, go_on) = (halfway.clone(), go_on.clone());
            clients.push(tokio::spawn(async move {
                let mut s = net.connect((*cfg).clone()).await.unwrap();
                for round in 0..ROUNDS {
                    if round == ROUNDS / 2 {
                        // Idle mid-conversation while the test kills transports.
                        halfway.wait().await;
                        go_on.wait().await;
                    }
                    let req = pattern(i as u64 * 100 + round, REQ);
                    s.write_all(&req).await.unwrap();
                    let mut resp = vec![0u8; REQ];
                    s.read_exact(&mut resp).await.unwrap();
                    resp.reverse();
                    assert_eq!(resp, req, "session {i} round {round}");
                }
                s.close().await.unwrap();
                s.stats().reconnects
            }));
        }
        halfway.wait().await;
        let live = net.live();
        assert_eq!(live, SESSIONS, "one live transport per session");
        // Every session is mid-conversation: kill a seeded 10% of the transports.
        let mut rng = ft_session_testkit::SplitMix64::new(42);
        let mut picked = vec![false; SESSIONS];
        let mut n = 0;
        while n < SESSIONS / 10 {
            let k = rng.range_inclusive(0, SESSIONS as u64 - 1) as usize;
            if !picked[k] {
                picked[k] = true;
                n += 1;
            }
        }
        let killed = net.kill_where(|i| picked[i]);
        assert_eq!(killed, SESSIONS / 10);
        go_on.wait().await;

        let mut reconnects = Vec::new();
        for c in clients {
            reconnects.push(c.await.unwrap());
        }
        server.await.unwrap();
        // Exactly the killed sessions resumed, each once.
        let resumed = reconnects.iter().filter(|&&r| r > 0).count();
        let total: u64 = reconnects.iter().sum();
        assert_eq!(resumed, SESSIONS / 10);
        assert_eq!(total, (SESSIONS / 10) as u64);
        assert_eq!(
            net.dials.load(Ordering::SeqCst),
            (SESSIONS + SESSIONS / 10) as u64
        );
        wait_until("every server driver finished", || {
            listener.stats().endpoint.sessions == 0
        })
        .await;
    })
    .await
}
