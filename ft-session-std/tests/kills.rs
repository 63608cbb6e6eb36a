//! Transfers through real connection kills (FaultProxy resets both sides).
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::Arc;

use common::*;
use ft_session_std::{FtListener, FtStream};
use ft_session_testkit::{pattern, Direction, FaultPlan, FaultProxy};

/// Runs a duplex transfer of `c2s`/`s2c` bytes between a client connected
/// through `proxy` and the session `listener` accepts; returns both stats.
fn transfer(
    listener: FtListener,
    proxy: &FaultProxy,
    c2s: usize,
    s2c: usize,
) -> (ft_session_std::FtStats, ft_session_std::FtStats) {
    let (id_tx, id_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let id = id_rx.recv().unwrap();
        // A handshake cut after the server's ACCEPT leaves an orphan session
        // in the queue (it expires by itself): serve only the client's.
        let s = loop {
            let s = listener.accept().unwrap().0;
            if s.session_id() == Some(id) {
                break Arc::new(s);
            }
        };
        let side = duplex(s.clone(), Arc::new(pattern(2, s2c)))
            .join()
            .unwrap()
            .unwrap();
        s.close().unwrap();
        // The listener must outlive the client's close too: a client whose
        // last CLOSE was cut resumes and learns the session closed.
        (side, s.stats(), listener)
    });
    let client = Arc::new(FtStream::connect(proxy.local_addr(), config()).unwrap());
    id_tx.send(client.session_id().unwrap()).unwrap();
    let cside = duplex(client.clone(), Arc::new(pattern(1, c2s)))
        .join()
        .unwrap()
        .unwrap();
    let (sside, sstats, listener) = server.join().unwrap();
    client.close().unwrap();
    drop(listener);
    assert_exchange(&cside, &sside, c2s, s2c);
    (client.stats(), sstats)
}

#[test]
fn duplex_64mib_through_random_kills() {
    bounded(120, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        // Kill every connection after a random 0.5-3 MiB client->server.
        let plan = FaultPlan::random_kills(0xF7, 512 << 10, 3 << 20);
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let len = 64 << 20;
        let (c, s) = transfer(listener, &proxy, len, len);
        eprintln!(
            "64 MiB each way: {} kills, client {} resumes / {} B retransmitted, server {} B retransmitted",
            proxy.kills(),
            c.reconnects,
            c.retransmitted_bytes,
            s.retransmitted_bytes
        );
        assert!(proxy.kills() >= 20, "only {} kills", proxy.kills());
        assert!(c.reconnects >= 20);
    });
}

#[test]
fn kills_during_handshakes_and_retransmission() {
    bounded(60, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let plan = FaultPlan::new()
            // First hello cut after 5 bytes.
            .kill_connection_after(0, Direction::ClientToServer, 5)
            // Reset right at accept: the server sees a transport die unread.
            .kill_connection_at_accept(1)
            // The server's ACCEPT cut after 10 bytes: the session it created is orphaned.
            .kill_connection_after(2, Direction::ServerToClient, 10)
            // Established; killed in the middle of the data.
            .kill_connection_after(3, Direction::ClientToServer, 1 << 20)
            // RESUME cut after 20 bytes.
            .kill_connection_after(4, Direction::ClientToServer, 20)
            // RESUME_OK cut after 30 bytes.
            .kill_connection_after(5, Direction::ServerToClient, 30)
            // Killed while the retransmission after the resume is under way.
            .kill_connection_after(6, Direction::ClientToServer, 256 << 10);
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let len = 8 << 20;
        let (c, s) = transfer(listener, &proxy, len, len);
        eprintln!(
            "handshake kills: {} kills, client {:?}, server retransmitted {}",
            proxy.kills(),
            c,
            s.retransmitted_bytes
        );
        assert_eq!(proxy.kills(), 7);
        assert!(c.retransmitted_bytes > 0);
    });
}
