//! The implicit release policy through the smol adapter on loopback: the
//! adapter's own pinned buffers, a proxy (declared as a middlebox) killed
//! while both readers stall behind a gate so every buffer is full, exact
//! bytes both ways. The full matrix (ss -K, undersized bound, refusal) runs
//! against the Tokio adapter, which shares the drive logic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::run_bounded;
use ft_session_core::{Config, ReleasePolicy, SessionState};
use ft_session_smol::{FtListener, FtStream, SocketOptions};
use ft_session_testkit::{pattern, sha256_hex, FaultPlan, FaultProxy, ProxyOptions, Sha256Tracker};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Timer;

const KIB: usize = 1024;
const LEN: usize = 8 * 1024 * KIB;
const KILLS: u64 = 10;
/// Gates every 400 KiB: the last lies at 4 MiB, well before the end.
const STEP: u64 = 400 * KIB as u64;

fn implicit_config() -> Config {
    let ms = Duration::from_millis;
    let mut c = Config::default();
    c.release_policy = ReleasePolicy::Implicit;
    // A stalled reader reads nothing from its transport for a while.
    (c.heartbeat_interval, c.idle_timeout) = (ms(50), Duration::from_secs(3));
    (c.handshake_timeout, c.max_reconnect_time) = (ms(1000), Duration::from_secs(10));
    (c.backoff_initial, c.backoff_max) = (ms(10), ms(100));
    c
}

/// Writes `data` and half-closes while reading slowly (32 KiB, then 1 ms)
/// to end of stream, never starting a read at or beyond `gate`; returns
/// what was read (bytes, sha256).
async fn slow_duplex(
    stream: Arc<FtStream>,
    data: Arc<Vec<u8>>,
    progress: Arc<AtomicU64>,
    gate: Arc<AtomicU64>,
) -> (u64, String) {
    let w = stream.clone();
    let writer = smol::spawn(async move {
        (&*w).write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut tracker = Sha256Tracker::new();
    let mut buf = vec![0u8; 32 * KIB];
    loop {
        while progress.load(Ordering::SeqCst) >= gate.load(Ordering::SeqCst) {
            Timer::after(Duration::from_millis(1)).await;
        }
        let n = match (&*stream).read(&mut buf).await {
            Ok(n) => n,
            Err(e) => panic!(
                "read failed: {e} ({:?})",
                ft_session_core::SessionError::from_io(&e)
            ),
        };
        if n == 0 {
            break;
        }
        tracker.update(&buf[..n]);
        progress.fetch_add(n as u64, Ordering::SeqCst);
        Timer::after(Duration::from_millis(1)).await;
    }
    writer.await;
    (tracker.bytes(), tracker.finish())
}

#[test]
fn adapter_sizing_survives_proxy_kills() {
    run_bounded(async {
        let cfg = implicit_config();
        let proxy_opts = ProxyOptions::default()
            .socket_buffer(64 * KIB)
            .copy_buffer(16 * KIB);
        let extra = proxy_opts.max_in_flight().unwrap().expect("pinned proxy");
        let opts = SocketOptions::new().middlebox_in_flight(extra);
        let listener = FtListener::bind_opts("127.0.0.1:0", cfg.clone(), opts)
            .await
            .unwrap();
        let proxy = Arc::new(
            FaultProxy::start_with(listener.local_addr().unwrap(), FaultPlan::new(), proxy_opts)
                .unwrap(),
        );
        let client = Arc::new(
            FtStream::connect_opts(proxy.local_addr(), cfg, opts)
                .await
                .unwrap(),
        );
        let (server, _) = listener.accept().await.unwrap();
        let server = Arc::new(server);

        let data = [Arc::new(pattern(5, LEN)), Arc::new(pattern(6, LEN))];
        let progress = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let gate = Arc::new(AtomicU64::new(STEP));
        let done = Arc::new(AtomicBool::new(false));
        let killing = {
            let (client, progress, gate, done, proxy) = (
                client.clone(),
                progress.clone(),
                gate.clone(),
                done.clone(),
                proxy.clone(),
            );
            smol::spawn(async move {
                let mut kills = 0;
                while !done.load(Ordering::SeqCst) && kills < KILLS {
                    let least = progress[0]
                        .load(Ordering::SeqCst)
                        .min(progress[1].load(Ordering::SeqCst));
                    if least < gate.load(Ordering::SeqCst) {
                        Timer::after(Duration::from_millis(1)).await;
                        continue;
                    }
                    // Both readers stalled: the senders fill every buffer.
                    Timer::after(Duration::from_millis(20)).await;
                    let before = client.stats().reconnects;
                    let p = proxy.clone();
                    if smol::unblock(move || p.kill_all()).await == 0 {
                        Timer::after(Duration::from_millis(5)).await;
                        continue;
                    }
                    kills += 1;
                    while client.stats().reconnects == before {
                        assert_ne!(client.stats().state, SessionState::Finished);
                        Timer::after(Duration::from_millis(2)).await;
                    }
                    gate.fetch_add(STEP, Ordering::SeqCst);
                }
                gate.store(u64::MAX, Ordering::SeqCst);
                kills
            })
        };
        let c = smol::spawn(slow_duplex(
            client.clone(),
            data[0].clone(),
            progress[0].clone(),
            gate.clone(),
        ));
        let s = smol::spawn(slow_duplex(
            server.clone(),
            data[1].clone(),
            progress[1].clone(),
            gate.clone(),
        ));
        let (c, s) = (c.await, s.await);
        done.store(true, Ordering::SeqCst);
        let kills = killing.await;

        assert_eq!(s, (LEN as u64, sha256_hex(&data[0])), "client -> server");
        assert_eq!(c, (LEN as u64, sha256_hex(&data[1])), "server -> client");
        assert_eq!(kills, KILLS);
        let (cs, ss) = (client.stats(), server.stats());
        for st in [&cs, &ss] {
            assert!(st.reconnects >= 1 && st.core.max_retained <= st.retain_capacity);
        }
        println!(
            "IMPLICIT-ROW | smol | default sizing, proxy | kills {kills} | 8 MiB each way | client max_retained {} retain_capacity {} retransmitted {} | server max_retained {} retain_capacity {} retransmitted {}",
            cs.core.max_retained, cs.retain_capacity, cs.retransmitted_bytes,
            ss.core.max_retained, ss.retain_capacity, ss.retransmitted_bytes,
        );
        let (a, b) = smol::future::zip(client.close(), server.close()).await;
        a.unwrap();
        b.unwrap();
        smol::unblock(move || drop(proxy)).await;
    });
}
