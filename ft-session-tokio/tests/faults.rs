//! The real-socket fault matrix: random kills, kills in handshakes and during
//! replay, blackholes, half-open transports, expiry, and a restarted server.
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ft_session_core::{Config, SessionError};
use ft_session_testkit::{Direction, FaultPlan, FaultProxy, KillPoint};
use ft_session_tokio::{FtListener, FtStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_both_directions_at_once() {
    bounded(async {
        const LEN: u64 = 4 << 20;
        let plan = FaultPlan::random_kills(7, 16 * 1024, 256 * 1024).max_kills(30);
        // The plan is deterministic: its first 20 kill points fit in the
        // client→server bytes this transfer must push, so ≥ 20 kills happen.
        let first20: u64 = (0..20)
            .map(|i| match plan.kill_point(i) {
                Some(KillPoint::AfterBytes { bytes, .. }) => bytes,
                _ => unreachable!(),
            })
            .sum();
        assert!(first20 < LEN);

        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let client = FtStream::connect(proxy.local_addr(), fast_config())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();

        let t = Transfer::start(client, server, LEN);
        t.release();
        let (c, s) = t.finish().await;
        assert!(proxy.kills() >= 20, "kills: {}", proxy.kills());
        assert!(c.stats().reconnects >= 20, "{:?}", c.stats());
        assert_eq!(c.stats().reconnects, s.stats().reconnects);
        assert!(c.stats().retransmitted_bytes + s.stats().retransmitted_bytes > 0);
        drop_proxy(proxy).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_in_handshakes_and_during_replay() {
    bounded(async {
        const LEN: u64 = 1 << 20;
        let plan = FaultPlan::new()
            // Mid fresh hello: the client starts over with a fresh hello.
            .kill_connection_after(0, Direction::ClientToServer, 10)
            // Mid data, server→client: the server has sent more than arrived.
            .kill_connection_after(1, Direction::ServerToClient, 300 * 1024)
            // Mid resume hello.
            .kill_connection_after(2, Direction::ClientToServer, 20)
            // Just after the resume reply, while the server replays.
            .kill_connection_after(3, Direction::ServerToClient, 2000);
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let client = FtStream::connect(proxy.local_addr(), fast_config())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();

        let t = Transfer::start(client, server, LEN);
        t.release();
        let (c, s) = t.finish().await;
        assert_eq!(proxy.kills(), 4);
        // Connections 3 and 4 resumed; 2 died inside its resume hello.
        assert_eq!(c.stats().reconnects, 2, "{:?}", c.stats());
        assert!(s.stats().retransmitted_bytes > 0, "{:?}", s.stats());
        drop_proxy(proxy).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_is_detected_by_idle_timeout_then_resumed() {
    bounded(async {
        const LEN: u64 = 1 << 20;
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), FaultPlan::new()).unwrap();
        let client = FtStream::connect(proxy.local_addr(), fast_config())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();

        let t = Transfer::start(client, server, LEN);
        let (cg, sg) = (t.client_got.clone(), t.server_got.clone());
        wait_until("first halves delivered", || {
            cg.load(Ordering::SeqCst) == LEN / 2 && sg.load(Ordering::SeqCst) == LEN / 2
        })
        .await;
        proxy.blackhole(true);
        // The second halves go into the hole: only a resume can deliver them.
        t.release();
        wait_until("client declared the path dead and redialed", || {
            proxy.connections() >= 2
        })
        .await;
        proxy.blackhole(false);
        let (c, _s) = t.finish().await;
        assert!(proxy.bytes_dropped(Direction::ClientToServer) > 0);
        assert!(c.stats().reconnects >= 1, "{:?}", c.stats());
        drop_proxy(proxy).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_server_still_believes_in_old_transport() {
    bounded(async {
        const LEN: u64 = 1 << 20;
        // The server would notice silence only after a minute: any resume in
        // this test arrives while it still holds its old transport.
        let mut server_cfg = fast_config();
        server_cfg.idle_timeout = Duration::from_secs(60);
        let listener = FtListener::bind("127.0.0.1:0", server_cfg).await.unwrap();
        let direct = listener.local_addr().unwrap();
        let proxy = FaultProxy::start(direct, FaultPlan::new()).unwrap();
        let net = Net::new(proxy.local_addr());
        let client = net.connect(fast_config()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();

        let t = Transfer::start(client, server, LEN);
        let (cg, sg) = (t.client_got.clone(), t.server_got.clone());
        wait_until("first halves delivered", || {
            cg.load(Ordering::SeqCst) == LEN / 2 && sg.load(Ordering::SeqCst) == LEN / 2
        })
        .await;
        // Freeze the old path (nothing is closed) and let new transports bypass it.
        proxy.pause();
        net.redirect(direct);
        t.release();
        let (c, s) = t.finish().await;
        assert!(c.stats().reconnects >= 1, "{:?}", c.stats());
        assert!(s.stats().reconnects >= 1, "{:?}", s.stats());
        assert!(s.stats().transports_lost >= 1, "{:?}", s.stats());
        proxy.resume();
        drop_proxy(proxy).await;
    })
    .await
}

/// A loopback address where nothing listens: reconnects are refused.
async fn dead_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn expiring_config() -> Config {
    let mut c = fast_config();
    c.max_reconnect_time = Duration::from_millis(1500);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_ends_both_sides_with_expired() {
    bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", expiring_config())
            .await
            .unwrap();
        let net = Net::new(listener.local_addr().unwrap());
        let mut client = net.connect(expiring_config()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        net.redirect(dead_addr().await);
        assert_eq!(net.kill_all(), 1);
        let ce = client.read(&mut buf).await.unwrap_err();
        let se = server.read(&mut buf).await.unwrap_err();
        assert_eq!(ce.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            SessionError::from_io(&ce),
            Some(&SessionError::Expired),
            "{ce}"
        );
        assert_eq!(se.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            SessionError::from_io(&se),
            Some(&SessionError::Expired),
            "{se}"
        );
        assert!(
            net.dials.load(Ordering::SeqCst) >= 2,
            "the client kept trying"
        );
        wait_until("registry forgot the session", || {
            let st = listener.stats();
            st.endpoint.sessions == 0
                && st.endpoint.set.parked == 0
                && st.endpoint.set.attached == 0
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_sessions_are_dropped_after_max_reconnect_time() {
    bounded(async {
        const N: usize = 20;
        const BYTES: usize = 10 * 1024;
        // Clients stay quiet (no heartbeat, so no acknowledgment) for the
        // whole test: the servers still retain what they wrote when parked.
        let mut client_cfg = expiring_config();
        client_cfg.heartbeat_interval = Duration::from_secs(10);
        client_cfg.idle_timeout = Duration::from_secs(20);
        let listener = FtListener::bind("127.0.0.1:0", expiring_config())
            .await
            .unwrap();
        let net = Net::new(listener.local_addr().unwrap());
        let mut pairs = Vec::new();
        for _ in 0..N {
            let c = net.connect(client_cfg.clone()).await.unwrap();
            let (s, _) = listener.accept().await.unwrap();
            pairs.push((c, s));
        }
        let data = ft_session_testkit::pattern(3, BYTES);
        for (c, s) in &mut pairs {
            s.write_all(&data).await.unwrap();
            let mut got = vec![0u8; BYTES];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(got, data);
        }
        assert_eq!(listener.stats().endpoint.set.attached, N);

        net.redirect(dead_addr().await);
        assert_eq!(net.kill_all(), N);
        wait_until("every server session parked", || {
            listener.stats().endpoint.set.parked == N
        })
        .await;
        let st = listener.stats();
        assert_eq!(st.endpoint.set.parked_bytes, (N * BYTES) as u64, "{st:?}");
        assert_eq!(st.endpoint.sessions, N);

        for (c, s) in &mut pairs {
            let mut b = [0u8; 1];
            let e = s.read(&mut b).await.unwrap_err();
            assert_eq!(SessionError::from_io(&e), Some(&SessionError::Expired));
            let e = c.read(&mut b).await.unwrap_err();
            assert_eq!(SessionError::from_io(&e), Some(&SessionError::Expired));
        }
        drop(pairs);
        wait_until("drivers gone, nothing parked", || {
            let st = listener.stats();
            st.endpoint.sessions == 0
                && st.endpoint.set.parked == 0
                && st.endpoint.set.parked_bytes == 0
        })
        .await;
        // The verdicts (tombstones) are forgotten one reconnect time later.
        wait_until("tombstones forgotten", || {
            listener.stats().endpoint.set.closed == 0
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_after_server_restart() {
    bounded(async {
        let first = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let net = Net::new(first.local_addr().unwrap());
        // An unproven REJECT is retried until the reconnect time runs out.
        let mut cc = fast_config();
        cc.max_reconnect_time = Duration::from_secs(2);
        let mut client = net.connect(cc).await.unwrap();
        let (mut server, _) = first.accept().await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();

        // A restarted server: same role, empty registry.
        let restarted = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        net.redirect(restarted.local_addr().unwrap());
        net.kill_all();
        let e = client.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert_eq!(
            SessionError::from_io(&e),
            Some(&SessionError::UnknownSession)
        );
        let refused = restarted.stats().endpoint.set.rejected_resumes;
        assert!(refused >= 2, "retried within max_reconnect_time: {refused}");
        assert_eq!(restarted.stats().endpoint.sessions, 0);
        server.abort(0x1000);
    })
    .await
}
