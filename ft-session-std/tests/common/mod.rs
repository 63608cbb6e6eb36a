//! Shared test helpers: a short config, bounded test bodies, duplex transfers
//! checked by length and sha256.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use ft_session_std::{Config, FtStream};
use ft_session_testkit::{sha256_hex, Sha256Tracker};

/// Short timers so faults are detected and healed quickly.
pub fn config() -> Config {
    let mut c = Config::default();
    c.heartbeat_interval = Duration::from_millis(50);
    c.idle_timeout = Duration::from_millis(1000);
    c.handshake_timeout = Duration::from_millis(1000);
    c.max_reconnect_time = Duration::from_secs(10);
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(100);
    c
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs`
/// (a bug must fail, not hang).
pub fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    init_tracing();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("test body panicked"),
    }
}

/// What one side of a duplex transfer saw.
#[derive(Debug)]
pub struct Side {
    /// sha256 of what this side sent.
    pub sent_sha: String,
    /// Bytes received.
    pub received: u64,
    /// sha256 of what this side received.
    pub received_sha: String,
}

/// Sends `data` (then half-closes) while reading to end of stream, at once.
pub fn duplex(stream: Arc<FtStream>, data: Arc<Vec<u8>>) -> thread::JoinHandle<io::Result<Side>> {
    thread::spawn(move || {
        stream.set_read_timeout(Some(Duration::from_secs(60)));
        let w = stream.clone();
        let d = data.clone();
        let writer = thread::spawn(move || -> io::Result<()> {
            for chunk in d.chunks(256 * 1024) {
                (&*w).write_all(chunk)?;
            }
            w.shutdown(Shutdown::Write)
        });
        let mut tracker = Sha256Tracker::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = (&*stream).read(&mut buf)?;
            if n == 0 {
                break;
            }
            tracker.update(&buf[..n]);
        }
        writer.join().unwrap()?;
        Ok(Side {
            sent_sha: sha256_hex(&data),
            received: tracker.bytes(),
            received_sha: tracker.finish(),
        })
    })
}

/// Asserts both directions arrived whole: lengths and sha256.
pub fn assert_exchange(client: &Side, server: &Side, c2s_len: usize, s2c_len: usize) {
    assert_eq!(server.received, c2s_len as u64, "client->server length");
    assert_eq!(client.received, s2c_len as u64, "server->client length");
    assert_eq!(
        server.received_sha, client.sent_sha,
        "client->server sha256"
    );
    assert_eq!(
        client.received_sha, server.sent_sha,
        "server->client sha256"
    );
}
