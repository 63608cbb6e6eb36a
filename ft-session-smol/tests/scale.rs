//! A thousand concurrent sessions on an application-owned `smol::Executor`,
//! with a seeded tenth of their transports reset mid-conversation.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ft_session_smol::{FtListener, FtStream, SmolRuntime};
use ft_session_testkit::{pattern, SplitMix64};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::lock::Barrier;
use smol::Executor;

/// Runs `ex` on `threads` threads until the returned guard is dropped.
fn run_executor(ex: &Arc<Executor<'static>>, threads: usize) -> impl Drop {
    struct Stop(
        Option<smol::channel::Sender<()>>,
        Vec<std::thread::JoinHandle<()>>,
    );
    impl Drop for Stop {
        fn drop(&mut self) {
            // Closing the channel ends every `run`.
            self.0.take();
            for t in self.1.drain(..) {
                t.join().unwrap();
            }
        }
    }
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let workers = (0..threads)
        .map(|_| {
            let (ex, stopped) = (ex.clone(), stopped.clone());
            std::thread::spawn(move || {
                let _ = smol::block_on(ex.run(stopped.recv()));
            })
        })
        .collect();
    Stop(Some(stop), workers)
}

/// Answers `rounds` requests of `len` bytes, each reversed, then closes.
async fn echo_reversed(s: FtStream, rounds: u64, len: usize) {
    let mut buf = vec![0u8; len];
    for _ in 0..rounds {
        (&mut &s).read_exact(&mut buf).await.unwrap();
        buf.reverse();
        (&mut &s).write_all(&buf).await.unwrap();
    }
    s.close().await.unwrap();
}

/// Sends each request and checks that it comes back reversed.
async fn ask_reversed(mut s: &FtStream, requests: impl Iterator<Item = Vec<u8>>) {
    for req in requests {
        s.write_all(&req).await.unwrap();
        let mut resp = vec![0u8; req.len()];
        s.read_exact(&mut resp).await.unwrap();
        resp.reverse();
        assert!(resp == req, "a response differs from its request");
    }
}

/// Awaits every task, in order.
async fn futures_all<T>(tasks: Vec<smol::Task<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await);
    }
    out
}

#[test]
fn thousand_sessions_request_response_with_ten_percent_reset() {
    const SESSIONS: usize = 1000;
    const KILLED: usize = SESSIONS / 10;
    const ROUNDS: u64 = 4;
    const REQ: usize = 512;
    let ex = Arc::new(Executor::new());
    let _workers = run_executor(&ex, 2);
    let rt = SmolRuntime::executor(ex.clone());
    run_bounded(async {
        let mut cfg = fast_config();
        // A thousand handshakes queue up on two cores: give them time.
        cfg.handshake_timeout = Duration::from_secs(10);
        cfg.idle_timeout = Duration::from_secs(10);
        cfg.heartbeat_interval = Duration::from_secs(1);
        let listener = FtListener::bind_on(rt.clone(), "127.0.0.1:0", cfg.clone())
            .await
            .unwrap();
        let listener = Arc::new(listener);
        let dialer = Dialer::new(listener.local_addr().unwrap());
        let cfg = Arc::new(cfg);

        // Echo server: one task per session, every request back reversed.
        let (l, spawner) = (listener.clone(), ex.clone());
        let server = ex.spawn(async move {
            let mut echoes = Vec::with_capacity(SESSIONS);
            while echoes.len() < SESSIONS {
                let (s, _) = l.accept().await.unwrap();
                echoes.push(spawner.spawn(echo_reversed(s, ROUNDS, REQ)));
            }
            futures_all(echoes).await;
        });

        // Every client stops halfway, idle mid-conversation, while the test
        // resets transports; then finishes its rounds.
        let halfway = Arc::new(Barrier::new(SESSIONS + 1));
        let go_on = Arc::new(Barrier::new(SESSIONS + 1));
        let clients: Vec<_> = (0..SESSIONS as u64)
            .map(|i| {
                let (dialer, rt, cfg) = (dialer.clone(), rt.clone(), cfg.clone());
                let (halfway, go_on) = (halfway.clone(), go_on.clone());
                ex.spawn(async move {
                    let s = dialer.connect(rt, (*cfg).clone()).await.unwrap();
                    let requests = |rounds: std::ops::Range<u64>| {
                        rounds.map(move |r| pattern(i * 100 + r, REQ))
                    };
                    ask_reversed(&s, requests(0..ROUNDS / 2)).await;
                    halfway.wait().await;
                    go_on.wait().await;
                    ask_reversed(&s, requests(ROUNDS / 2..ROUNDS)).await;
                    s.close().await.unwrap();
                    s.stats().reconnects
                })
            })
            .collect();

        halfway.wait().await;
        assert_eq!(dialer.dials(), SESSIONS as u64, "one transport per session");
        let mut rng = SplitMix64::new(42);
        let mut picked = vec![false; SESSIONS];
        let mut n = 0;
        while n < KILLED {
            let k = rng.range_inclusive(0, SESSIONS as u64 - 1) as usize;
            n += usize::from(!std::mem::replace(&mut picked[k], true));
        }
        assert_eq!(dialer.reset_where(|i| picked[i]), KILLED);
        go_on.wait().await;

        let reconnects = futures_all(clients).await;
        server.await;
        // As many sessions resumed as transports were reset, each once (dial
        // order is not session order, so which ones is not checked), and
        // nothing else redialed.
        let resumed = reconnects.iter().filter(|&&r| r > 0).count();
        assert_eq!(resumed, KILLED);
        assert_eq!(reconnects.iter().sum::<u64>(), KILLED as u64);
        assert_eq!(dialer.dials(), (SESSIONS + KILLED) as u64);
        eventually("every server driver finished", || {
            listener.stats().endpoint.sessions == 0
        })
        .await;
    });
}
