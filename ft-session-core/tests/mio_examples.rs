//! The mio examples, a server through the core's `Endpoint` and clients
//! that drive a `Session` each, over real loopback TCP whose connections are
//! killed mid-stream: by the test kit's proxy (RST), and from outside the
//! process with `ss -K`. Every client's echo must come back whole (length
//! and sha256 of what it sent), and the server must report each session
//! closed cleanly after echoing exactly what its client sent.
#![allow(clippy::unwrap_used)]

#[path = "../examples/mio_client.rs"]
mod mio_client;
#[path = "../examples/mio_server.rs"]
mod mio_server;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ft_session_core::{Config, Stats};
use ft_session_testkit::{pattern, sha256_hex, ss_kill, ss_kill_probe, FaultPlan, FaultProxy};

/// Short timers, so that faults are noticed and repaired within a second.
fn config() -> Config {
    let ms = Duration::from_millis;
    let mut c = Config::default();
    (c.heartbeat_interval, c.idle_timeout) = (ms(100), ms(2000));
    (c.handshake_timeout, c.max_reconnect_time) = (ms(2000), Duration::from_secs(20));
    (c.backoff_initial, c.backoff_max) = (ms(10), ms(200));
    c
}

/// Runs `f` on a thread and fails the test if it takes longer than 30 s.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(30))
        .expect("test exceeded its time limit of 30 s")
}

/// The example server on a thread, stopped by [`Server::finish`].
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<u64>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            mio_server::serve(listener, config(), &s)
                .map_err(|e| e.to_string())
                .unwrap()
        });
        Server { addr, stop, thread }
    }

    /// Stops it; the bytes each cleanly ended session echoed, sorted.
    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut echoed = self.thread.join().unwrap();
        echoed.sort_unstable();
        echoed
    }
}

/// `clients` example clients at once, each echoing `len` bytes of its own
/// pattern through `target`; checks each echo, returns their counters.
fn run_clients(target: SocketAddr, clients: u64, len: usize) -> Vec<JoinHandle<Stats>> {
    (0..clients)
        .map(|i| {
            thread::spawn(move || {
                let sent = pattern(i, len);
                let (echo, stats) = mio_client::echo_client(target, config(), &sent)
                    .map_err(|e| e.to_string())
                    .unwrap();
                assert_eq!(echo.len(), sent.len(), "client {i}: echo length");
                assert_eq!(
                    sha256_hex(&echo),
                    sha256_hex(&sent),
                    "client {i}: echo sha256"
                );
                stats
            })
        })
        .collect()
}

#[test]
fn mio_server_and_clients_through_proxy_kills() {
    const CLIENTS: u64 = 8;
    const LEN: usize = 1 << 20;
    const KILLS: u64 = 12;
    bounded(|| {
        let server = Server::start();
        // Every connection dies after 64-256 KiB client -> server, until 12 have.
        let plan = FaultPlan::random_kills(7, 64 << 10, 256 << 10).max_kills(KILLS);
        let proxy = FaultProxy::start(server.addr, plan).unwrap();
        let clients = run_clients(proxy.local_addr(), CLIENTS, LEN);
        let stats: Vec<Stats> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let resumes: u64 = stats.iter().map(|s| s.resumes).sum();
        eprintln!(
            "{} kills, {resumes} resumes, {} connections",
            proxy.kills(),
            proxy.connections()
        );
        assert_eq!(server.finish(), vec![LEN as u64; CLIENTS as usize]);
        assert_eq!(proxy.kills(), KILLS);
        assert!(resumes >= KILLS, "{resumes} resumes for {KILLS} kills");
    });
}

#[test]
fn mio_server_and_clients_through_ss_kill() {
    if let Some(reason) = ss_kill_probe().skip_reason() {
        eprintln!("skipped: `ss -K` does not work here: {reason}");
        return;
    }
    const CLIENTS: u64 = 4;
    const LEN: usize = 3 << 20;
    bounded(|| {
        let server = Server::start();
        let clients = run_clients(server.addr, CLIENTS, LEN);
        // Kill every connection to the server, from both ends, while the
        // clients run (the first right away, while they surely are).
        let mut killed = 0;
        while killed < 10 && clients.iter().any(|c| !c.is_finished()) {
            killed += ss_kill(server.addr.port()).unwrap().killed();
            thread::sleep(Duration::from_millis(20));
        }
        let stats: Vec<Stats> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let lost: u64 = stats.iter().map(|s| s.transports_lost).sum();
        let resumes: u64 = stats.iter().map(|s| s.resumes).sum();
        eprintln!(
            "ss -K: {killed} sockets killed; clients lost {lost} transports, {resumes} resumes"
        );
        assert_eq!(server.finish(), vec![LEN as u64; CLIENTS as usize]);
        assert!(
            killed >= 1,
            "ss -K killed nothing although the probe worked"
        );
        assert!(
            lost >= 1 && resumes >= 1,
            "no kill hit a live session: lost {lost}, resumes {resumes}"
        );
    });
}
