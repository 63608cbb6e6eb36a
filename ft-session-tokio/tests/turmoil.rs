//! A simulated network (turmoil): partitions and holds during a transfer
//! through `FtStream::connect_with`; the delivered bytes are exact both ways.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{pattern_sha, read_all};
use ft_session_tokio::{FtListener, FtStream};
use tokio::io::AsyncWrite;

const LEN: u64 = 512 * 1024;
const PORT: u16 = 9000;

fn sim_config() -> ft_session_core::Config {
    let mut c = common::fast_config();
    c.max_reconnect_time = Duration::from_secs(30);
    c
}

/// Writes pattern `seed` in small paced chunks, so faults land mid-transfer.
async fn paced_write<W: AsyncWrite + Unpin>(w: &mut W, seed: u64) -> std::io::Result<()> {
    const CHUNK: u64 = 8 * 1024;
    let mut off = 0;
    let mut buf = vec![0u8; CHUNK as usize];
    while off < LEN {
        let n = CHUNK.min(LEN - off) as usize;
        ft_session_testkit::pattern_at(seed, off, &mut buf[..n]);
        tokio::io::AsyncWriteExt::write_all(w, &buf[..n]).await?;
        off += n as u64;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::io::AsyncWriteExt::shutdown(w).await
}

async fn wait_for(counter: &AtomicU64, at_least: u64) {
    while counter.load(Ordering::SeqCst) < at_least {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn run_sim() -> turmoil::Result {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .build();

    sim.host("server", || async {
        let tcp = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
        let incoming = futures::stream::unfold(tcp, |l| async move {
            let r = l.accept().await.map(|(s, a)| (s, Some::<SocketAddr>(a)));
            Some((r, l))
        });
        let listener = FtListener::from_incoming(sim_config(), incoming)?;
        let (s, _) = listener.accept().await?;
        let (mut r, mut w) = tokio::io::split(s);
        let got = Arc::new(AtomicU64::new(0));
        let (wr, rd) = tokio::join!(paced_write(&mut w, 2), read_all(&mut r, got));
        wr?;
        let (n, sha) = rd?;
        assert_eq!(n, LEN);
        assert_eq!(sha, pattern_sha(1, LEN), "client→server bytes exact");
        r.unsplit(w).close().await?;
        // A server outlives its sessions' close: if the answering CLOSE is
        // lost with the transport, the client resumes to learn the outcome
        // (PROTOCOL.md R12), and only a live listener can answer. Returning
        // here would take the host down and leave the client `TimedOut`.
        std::future::pending::<()>().await;
        drop(listener);
        Ok(())
    });

    sim.client("client", async {
        let s = FtStream::connect_with(sim_config(), || {
            turmoil::net::TcpStream::connect(("server", PORT))
        })
        .await?;
        let (mut r, mut w) = tokio::io::split(s);
        let got = Arc::new(AtomicU64::new(0));
        let faults = {
            let got = got.clone();
            async move {
                // A partition longer than the idle timeout: both sides give
                // the transport up; the client resumes after the repair.
                wait_for(&got, LEN / 4).await;
                turmoil::partition("client", "server");
                tokio::time::sleep(Duration::from_secs(3)).await;
                turmoil::repair("client", "server");
                // A short hold only delays bytes.
                wait_for(&got, LEN / 2).await;
                turmoil::hold("client", "server");
                tokio::time::sleep(Duration::from_millis(300)).await;
                turmoil::release("client", "server");
                // A long hold looks like a dead path: the client moves on.
                wait_for(&got, 3 * LEN / 4).await;
                turmoil::hold("client", "server");
                tokio::time::sleep(Duration::from_secs(3)).await;
                turmoil::release("client", "server");
            }
        };
        let (wr, rd, ()) = tokio::join!(paced_write(&mut w, 1), read_all(&mut r, got), faults);
        wr?;
        let (n, sha) = rd?;
        assert_eq!(n, LEN);
        assert_eq!(sha, pattern_sha(2, LEN), "server→client bytes exact");
        let s = r.unsplit(w);
        s.close().await?;
        assert!(s.stats().reconnects >= 2, "{:?}", s.stats());
        Ok(())
    });

    sim.run()
}

#[test]
fn partitions_and_holds_during_a_transfer() {
    // Bounded in wall-clock time too: the simulation runs on its own thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = run_sim().map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(common::TEST_LIMIT)
        .expect("simulation exceeded its time limit");
    r.unwrap();
}
