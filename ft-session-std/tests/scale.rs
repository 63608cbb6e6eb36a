//! Many sessions at once through kills, and kills from outside the process.
#![allow(clippy::unwrap_used)]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use ft_session_std::{FtListener, FtStream};
use ft_session_testkit::{pattern, sha256_hex, ss_kill, ss_kill_probe, FaultPlan, FaultProxy};

const SESSIONS: u64 = 100;
const LEN: usize = 96 * 1024;

/// Writes `data`, half-closes, reads to the end; returns what was read.
fn exchange(s: &FtStream, data: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(60)));
    // Fits the send buffer, so one thread can write all before reading.
    let mut s = s;
    s.write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    got
}

#[test]
fn hundred_concurrent_sessions_with_kills() {
    bounded(120, || {
        let listener = Arc::new(FtListener::bind("127.0.0.1:0", config()).unwrap());
        // Kill connections after a random 16-160 KiB client->server.
        let plan = FaultPlan::random_kills(0x100, 16 << 10, 160 << 10);
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let l = listener.clone();
        let server = thread::spawn(move || {
            let handles: Vec<_> = (0..SESSIONS)
                .map(|_| {
                    let s = l.accept().unwrap().0;
                    thread::spawn(move || {
                        let mut first = [0u8; 8];
                        (&s).read_exact(&mut first).unwrap();
                        let n = u64::from_le_bytes(first);
                        let mut got = first.to_vec();
                        got.extend(exchange(&s, &pattern(1000 + n, LEN)));
                        s.close().unwrap();
                        (n, sha256_hex(&got), got.len())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        let addr = proxy.local_addr();
        let clients: Vec<_> = (0..SESSIONS)
            .map(|n| {
                thread::spawn(move || {
                    let s = FtStream::connect(addr, config()).unwrap();
                    let mut data = n.to_le_bytes().to_vec();
                    data.extend(pattern(n, LEN - 8));
                    let got = exchange(&s, &data);
                    s.close().unwrap();
                    assert_eq!(got.len(), LEN);
                    assert_eq!(sha256_hex(&got), sha256_hex(&pattern(1000 + n, LEN)));
                    (n, sha256_hex(&data), s.stats().reconnects)
                })
            })
            .collect();
        let sent: HashMap<u64, (String, u64)> = clients
            .into_iter()
            .map(|h| {
                let (n, sha, r) = h.join().unwrap();
                (n, (sha, r))
            })
            .collect();
        let received = server.join().unwrap();
        assert_eq!(received.len(), SESSIONS as usize);
        for (n, sha, len) in received {
            assert_eq!(len, LEN, "session {n}");
            assert_eq!(sent[&n].0, sha, "session {n}");
        }
        let resumed = sent.values().filter(|(_, r)| *r > 0).count();
        eprintln!(
            "100 sessions: {} kills, {resumed} sessions resumed",
            proxy.kills()
        );
        assert!(proxy.kills() >= 20, "only {} kills", proxy.kills());
    });
}

#[test]
fn transfer_survives_ss_kill_of_the_live_connection() {
    if let Some(reason) = ss_kill_probe().skip_reason() {
        eprintln!("skipped: `ss -K` does not work here: {reason}");
        return;
    }
    bounded(60, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Arc::new(FtStream::connect(("127.0.0.1", port), config()).unwrap());
        let server = Arc::new(listener.accept().unwrap().0);
        let len = 16 << 20;
        let cside = duplex(client.clone(), Arc::new(pattern(5, len)));
        let sside = duplex(server.clone(), Arc::new(pattern(6, len)));
        // The first kill comes right after connect, while the transport is
        // surely live; more follow while the transfer runs (the session ends
        // by itself once both directions are done, leaving nothing to kill).
        let mut kills = 0;
        while kills < 5 && !cside.is_finished() {
            kills += ss_kill(port).unwrap().killed();
            thread::sleep(Duration::from_millis(30));
        }
        let cside = cside.join().unwrap().unwrap();
        let sside = sside.join().unwrap().unwrap();
        assert_exchange(&cside, &sside, len, len);
        eprintln!("ss -K: {kills} sockets killed, client {:?}", client.stats());
        assert!(kills >= 1, "ss -K killed nothing although the probe worked");
        assert!(client.stats().transports_lost >= 1, "{:?}", client.stats());
        client.close().unwrap();
        server.close().unwrap();
    });
}
