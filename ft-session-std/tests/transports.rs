//! Any transport: Unix sockets through `connect_with` / `from_incoming`.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]
mod common;

use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use common::*;
use ft_session_std::{FtListener, FtStream, TransportHalves};
use ft_session_testkit::pattern;

#[test]
fn unix_socket_session_survives_transport_shutdowns() {
    bounded(60, || {
        let path = std::env::temp_dir().join(format!("ft-std-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let unix = UnixListener::bind(&path).unwrap();
        let listener = FtListener::from_incoming(
            config(),
            std::iter::from_fn(move || Some(unix.accept().map(|(s, _)| s))),
        )
        .unwrap();
        // The test keeps a handle on every client transport to crash it.
        let live: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (p, l) = (path.clone(), live.clone());
        let client = FtStream::connect_with(config(), move || {
            let s = UnixStream::connect(&p)?;
            l.lock().unwrap().push(s.try_clone()?);
            Ok(s)
        })
        .unwrap();
        let client = Arc::new(client);
        let server = Arc::new(listener.accept().unwrap().0);
        let len = 8 << 20;
        let cside = duplex(client.clone(), Arc::new(pattern(7, len)));
        let sside = duplex(server.clone(), Arc::new(pattern(8, len)));
        let mut crashes = 0;
        while crashes < 3 && !cside.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if let Some(s) = live.lock().unwrap().pop() {
                let _ = s.shutdown(Shutdown::Both);
                crashes += 1;
            }
        }
        let cside = cside.join().unwrap().unwrap();
        let sside = sside.join().unwrap().unwrap();
        assert_exchange(&cside, &sside, len, len);
        client.close().unwrap();
        server.close().unwrap();
        eprintln!("unix: {crashes} transports shut down, {:?}", client.stats());
        let _ = std::fs::remove_file(&path);
    });
}

/// A writer that counts what goes through it.
struct Counting(std::net::TcpStream, Arc<std::sync::atomic::AtomicU64>);

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Halves a user builds over a TCP stream, with that stream as their
/// socket (for addresses): the session uses the user's reader and writer
/// (their threads), never the socket underneath them.
fn counted_halves(
    s: std::net::TcpStream,
    written: Arc<std::sync::atomic::AtomicU64>,
) -> std::io::Result<TransportHalves> {
    let control = Arc::new(s.try_clone()?);
    let shut = control.clone();
    Ok(TransportHalves {
        reader: Box::new(s.try_clone()?),
        writer: Box::new(Counting(s, written)),
        shutdown: Arc::new(move |how| {
            let _ = shut.shutdown(how);
        }),
        info: Default::default(),
        socket: Some(control),
    })
}

#[test]
fn user_halves_over_tcp_use_their_own_reader_and_writer() {
    use std::sync::atomic::{AtomicU64, Ordering};
    bounded(60, || {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let server_written = Arc::new(AtomicU64::new(0));
        let sw = server_written.clone();
        let listener = FtListener::from_incoming(
            config(),
            std::iter::from_fn(move || {
                Some(
                    tcp.accept()
                        .and_then(|(s, _)| counted_halves(s, sw.clone())),
                )
            }),
        )
        .unwrap();
        let client_written = Arc::new(AtomicU64::new(0));
        let cw = client_written.clone();
        let client = FtStream::connect_with(config(), move || {
            counted_halves(std::net::TcpStream::connect(addr)?, cw.clone())
        })
        .unwrap();
        assert_eq!(client.peer_addr().unwrap(), addr);
        let client = Arc::new(client);
        let server = Arc::new(listener.accept().unwrap().0);
        let len = 1 << 20;
        let cside = duplex(client.clone(), Arc::new(pattern(31, len)));
        let sside = duplex(server.clone(), Arc::new(pattern(32, len)));
        let cside = cside.join().unwrap().unwrap();
        let sside = sside.join().unwrap().unwrap();
        assert_exchange(&cside, &sside, len, len);
        assert!(client_written.load(Ordering::Relaxed) >= len as u64);
        assert!(server_written.load(Ordering::Relaxed) >= len as u64);
        client.close().unwrap();
        server.close().unwrap();
    });
}
