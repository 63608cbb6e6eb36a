//! Any transport: Unix sockets through `connect_with` / `from_incoming`.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]
mod common;

use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use common::*;
use ft_session_std::{FtListener, FtStream};
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
