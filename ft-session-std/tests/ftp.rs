//! The FTP example's server and client, through connection kills.
#![allow(clippy::unwrap_used)]
mod common;

#[path = "../examples/ftp.rs"]
#[allow(unreachable_pub)]
mod ftp;

use std::io::Write;

use common::*;
use ft_session_std::FtListener;
use ft_session_testkit::{pattern, sha256_hex, FaultPlan, FaultProxy};

#[test]
fn ftp_file_arrives_intact_through_kills() {
    bounded(60, || {
        let dir = std::env::temp_dir().join(format!("ft-std-ftp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = pattern(42, 12 << 20);
        std::fs::File::create(dir.join("file.bin"))
            .unwrap()
            .write_all(&data)
            .unwrap();
        let listener = std::sync::Arc::new(FtListener::bind("127.0.0.1:0", config()).unwrap());
        // Kill after a random 1-4 MiB server->client.
        let plan = FaultPlan::random_kills_in(
            ft_session_testkit::Direction::ServerToClient,
            9,
            1 << 20,
            4 << 20,
        );
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan).unwrap();
        let root = dir.clone();
        // The listener outlives the server thread: a client whose last CLOSE
        // was cut resumes and learns the session closed.
        let l = listener.clone();
        let server = std::thread::spawn(move || {
            let s = l.accept().unwrap().0;
            ftp::serve_one(s, &root).unwrap()
        });
        let mut out = Vec::new();
        let (len, reconnects) =
            ftp::fetch(proxy.local_addr(), config(), "file.bin", &mut out).unwrap();
        assert_eq!(server.join().unwrap(), data.len() as u64);
        assert_eq!(len, data.len() as u64);
        assert_eq!(out.len(), data.len());
        assert_eq!(sha256_hex(&out), sha256_hex(&data));
        eprintln!("ftp: {} kills, {reconnects} reconnects", proxy.kills());
        assert!(proxy.kills() >= 2);
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
