//! `connect` behaves like `TcpStream::connect`: a session the server ends at
//! once is still connected, and reads tell how it ended.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::thread;

use common::{bounded, config};
use ft_session_std::{FtListener, FtStream};

#[test]
fn connect_succeeds_when_the_server_closes_at_once() {
    bounded(30, || {
        let listener = FtListener::bind("127.0.0.1:0", config()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let s = listener.accept().unwrap().0;
            // Close without reading: the client may not even have seen
            // the handshake complete yet.
            s.close().unwrap();
            listener
        });
        let mut c = FtStream::connect(addr, config()).unwrap();
        let mut got = Vec::new();
        assert_eq!(
            c.read_to_end(&mut got).unwrap(),
            0,
            "end of stream, no bytes"
        );
        c.close().unwrap();
        drop(server.join().unwrap());
    });
}
