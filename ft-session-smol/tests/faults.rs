//! The real-socket fault matrix on smol: random kills both ways at once,
//! kills in handshakes and during replay, a blackhole, a half-open
//! transport, expiry on both sides and a restarted server. Every session
//! goes through the testkit's fault proxy; sessions run on smol's global
//! executor.
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::time::Duration;

use common::*;
use ft_session_core::{Config, SessionError};
use ft_session_smol::{FtListener, SmolRuntime};
use ft_session_testkit::{pattern, Direction, FaultPlan};
use smol::io::AsyncReadExt;

fn expired(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut && SessionError::from_io(e) == Some(&SessionError::Expired)
}

#[test]
fn random_kills_both_directions_at_once() {
    run_bounded(async {
        const LEN: u64 = 4 << 20;
        let plan = FaultPlan::random_kills(7, 16 * 1024, 256 * 1024).max_kills(30);
        assert_plan_reaches(&plan, 20, LEN);
        let (rig, client, server) =
            Rig::start(plan, Via::Connect, fast_config(), fast_config()).await;

        let transfer = Transfer::start(client, server, LEN, on_smol);
        transfer.release();
        let (c, s) = transfer.finish().await;
        let (cs, ss) = (c.stats(), s.stats());
        let kills = rig.proxy.kills();
        assert!(kills >= 20 && cs.reconnects >= 20, "{kills} kills, {cs:?}");
        assert_eq!(
            cs.reconnects, ss.reconnects,
            "both sides count the same resumes"
        );
        assert!(cs.retransmitted_bytes + ss.retransmitted_bytes > 0);
    })
}

#[test]
fn kills_in_handshakes_and_during_replay() {
    use Direction::{ClientToServer as Up, ServerToClient as Down};
    run_bounded(async {
        let kills = [
            // Inside the fresh hello: the client starts over with a new one.
            (0, Up, 10),
            // Mid data: the server has sent more than arrived.
            (1, Down, 300 * 1024),
            // Inside the resume hello.
            (2, Up, 20),
            // Right after the resume reply, while the server replays.
            (3, Down, 2000),
        ];
        let plan = kills
            .iter()
            .fold(FaultPlan::new(), |plan, &(conn, dir, bytes)| {
                plan.kill_connection_after(conn, dir, bytes)
            });
        let (rig, client, server) =
            Rig::start(plan, Via::Connect, fast_config(), fast_config()).await;

        let transfer = Transfer::start(client, server, 1 << 20, on_smol);
        transfer.release();
        let (c, s) = transfer.finish().await;
        assert_eq!(rig.proxy.kills(), kills.len() as u64);
        // Connections 3 and 4 resumed; connection 2 died inside its resume hello.
        assert_eq!(c.stats().reconnects, 2, "{:?}", c.stats());
        assert!(
            s.stats().retransmitted_bytes > 0,
            "the server replayed: {:?}",
            s.stats()
        );
    })
}

#[test]
fn blackhole_is_detected_by_idle_timeout_then_resumed() {
    run_bounded(async {
        let (rig, client, server) =
            Rig::start(FaultPlan::new(), Via::Dialer, fast_config(), fast_config()).await;
        let transfer = Transfer::start(client, server, 1 << 20, on_smol);
        eventually("first halves delivered", || transfer.halfway()).await;

        rig.proxy.blackhole(true);
        // The second halves fall into the hole: only a resume can deliver them.
        transfer.release();
        eventually("the client gave the path up and redialed", || {
            rig.proxy.connections() > 1
        })
        .await;
        rig.proxy.blackhole(false);

        let (c, _) = transfer.finish().await;
        assert!(rig.proxy.bytes_dropped(Direction::ClientToServer) > 0);
        assert!(c.stats().reconnects > 0, "{:?}", c.stats());
    })
}

#[test]
fn half_open_server_still_believes_in_old_transport() {
    run_bounded(async {
        // The server would notice the silence only after a minute: the
        // resume arrives while it still holds its old transport.
        let mut patient = fast_config();
        patient.idle_timeout = Duration::from_secs(60);
        let (rig, client, server) =
            Rig::start(FaultPlan::new(), Via::Dialer, fast_config(), patient).await;
        let transfer = Transfer::start(client, server, 1 << 20, on_smol);
        eventually("first halves delivered", || transfer.halfway()).await;

        // Freeze the old path (nothing is closed); new transports bypass it.
        rig.proxy.pause();
        rig.dialer.redirect(rig.direct());
        transfer.release();

        let (c, s) = transfer.finish().await;
        let (cs, ss) = (c.stats(), s.stats());
        assert!(cs.reconnects > 0 && ss.reconnects > 0, "{cs:?} {ss:?}");
        assert!(
            ss.transports_lost > 0,
            "the server dropped the old one: {ss:?}"
        );
        rig.proxy.resume();
    })
}

fn expiring_config() -> Config {
    let mut c = fast_config();
    c.max_reconnect_time = Duration::from_millis(1500);
    c
}

#[test]
fn expiry_ends_both_sides_with_expired() {
    run_bounded(async {
        let (rig, client, server) = Rig::start(
            FaultPlan::new(),
            Via::Dialer,
            expiring_config(),
            expiring_config(),
        )
        .await;
        pass(&client, &server, b"ping").await;

        // Every redial is refused from now on.
        rig.dialer.redirect(refusing_addr());
        assert_eq!(rig.proxy.kill_all(), 1);
        let mut buf = [0u8; 1];
        for (side, end) in [("client", &client), ("server", &server)] {
            let e = (&mut &*end).read(&mut buf).await.unwrap_err();
            assert!(expired(&e), "{side}: {e}");
        }
        assert!(rig.dialer.dials() > 1, "the client kept trying");
        eventually("the registry forgot the session", || {
            let st = rig.listener.stats();
            (
                st.endpoint.sessions,
                st.endpoint.set.parked,
                st.endpoint.set.attached,
            ) == (0, 0, 0)
        })
        .await;
    })
}

#[test]
fn parked_sessions_are_dropped_after_max_reconnect_time() {
    run_bounded(async {
        const N: usize = 20;
        const BYTES: usize = 10 * 1024;
        // Quiet clients: no heartbeat, hence no acknowledgment, during the
        // whole test, so every byte the servers wrote stays retained.
        let mut quiet = expiring_config();
        [quiet.heartbeat_interval, quiet.idle_timeout] = [10, 20].map(Duration::from_secs);
        let (rig, first_c, first_s) = Rig::start(
            FaultPlan::new(),
            Via::Dialer,
            quiet.clone(),
            expiring_config(),
        )
        .await;
        let mut pairs = vec![(first_c, first_s)];
        while pairs.len() < N {
            let c = rig
                .dialer
                .connect(SmolRuntime::global(), quiet.clone())
                .await
                .unwrap();
            pairs.push((c, rig.listener.accept().await.unwrap().0));
        }
        let data = pattern(3, BYTES);
        for (c, s) in &pairs {
            pass(s, c, &data).await;
        }
        assert_eq!(rig.listener.stats().endpoint.set.attached, N);

        rig.dialer.redirect(refusing_addr());
        assert_eq!(rig.proxy.kill_all(), N);
        eventually("every server session parked", || {
            rig.listener.stats().endpoint.set.parked == N
        })
        .await;
        let st = rig.listener.stats();
        assert_eq!(
            st.endpoint.set.parked_bytes,
            (N * BYTES) as u64,
            "all unacknowledged: {st:?}"
        );
        assert_eq!(st.endpoint.sessions, N);

        let mut buf = [0u8; 1];
        for end in pairs.iter().flat_map(|(c, s)| [s, c]) {
            let e = (&mut &*end).read(&mut buf).await.unwrap_err();
            assert!(expired(&e), "{e}");
        }
        drop(pairs);
        eventually("drivers gone, nothing parked", || {
            let st = rig.listener.stats();
            (
                st.endpoint.sessions,
                st.endpoint.set.parked,
                st.endpoint.set.parked_bytes,
            ) == (0, 0, 0)
        })
        .await;
        // The verdicts (tombstones) are forgotten one reconnect time later.
        eventually("tombstones forgotten", || {
            rig.listener.stats().endpoint.set.closed == 0
        })
        .await;
    })
}

#[test]
fn unknown_session_after_server_restart() {
    run_bounded(async {
        // An unproven REJECT is retried until the reconnect time runs out.
        let mut cc = fast_config();
        cc.max_reconnect_time = Duration::from_secs(2);
        let (rig, client, server) =
            Rig::start(FaultPlan::new(), Via::Dialer, cc, fast_config()).await;
        pass(&client, &server, b"hello").await;

        // A restarted server: same address family, empty registry.
        let restarted = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        rig.dialer.redirect(restarted.local_addr().unwrap());
        assert_eq!(rig.proxy.kill_all(), 1);
        let e = (&mut &client).read(&mut [0u8; 1]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert_eq!(
            SessionError::from_io(&e),
            Some(&SessionError::UnknownSession)
        );
        let st = restarted.stats();
        assert!(st.endpoint.set.rejected_resumes >= 2, "retried: {st:?}");
        assert_eq!(st.endpoint.sessions, 0, "{st:?}");
        server.abort(0x1000);
    })
}

#[test]
fn listener_over_a_stream_has_no_address() {
    let nothing = smol::stream::empty::<io::Result<(smol::Async<std::net::TcpStream>, _)>>();
    let listener = FtListener::from_incoming(fast_config(), nothing).unwrap();
    let e = listener.local_addr().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
}
