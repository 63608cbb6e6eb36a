//! The server-side handshake reader: split, bounded, and refusing bad input clearly.
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use ft_session_core::frame::{
    ClientHello, Code, DecodeError, Params, Resume, ServerReply, SessionId,
};
use ft_session_core::{Config, HandshakeReader, HandshakeStep};

fn encode_hello(h: &ClientHello) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    h.encode(&mut b);
    b.to_vec()
}

#[test]
fn reader_splits_hello_from_following_bytes() {
    let now = Instant::now();
    let mut r = HandshakeReader::new(now, &Config::default());
    let hello = ClientHello::Resume(Resume {
        session_id: SessionId([3; 16]),
        attempt: 1,
        received: 0,
        retained_from: 0,
        params: Params::default(),
        proof: [0; 32],
    });
    let mut bytes = encode_hello(&hello);
    bytes.extend_from_slice(b"rest");
    assert!(matches!(r.feed(&bytes[..10]), HandshakeStep::NeedMore));
    match r.feed(&bytes[10..]) {
        HandshakeStep::Hello { hello: h, consumed } => {
            assert_eq!(h, hello);
            assert_eq!(&bytes[10 + consumed..], b"rest");
        }
        s => panic!("{s:?}"),
    }
    assert!(!r.is_expired(now + Config::default().handshake_timeout));
}

#[test]
fn reader_rejects_wrong_version_with_our_version_and_garbage_silently() {
    let now = Instant::now();
    let mut r = HandshakeReader::new(now, &Config::default());
    match r.feed(b"FTSS\x09\x10") {
        HandshakeStep::Reject {
            reply: Some(reply),
            error,
        } => {
            assert_eq!(error, DecodeError::UnsupportedVersion(9));
            let (msg, _) = ServerReply::decode(&reply).unwrap().unwrap();
            assert_eq!(
                msg,
                ServerReply::Reject {
                    code: Code::UnsupportedVersion,
                    detail: 1
                }
            );
        }
        s => panic!("{s:?}"),
    }
    let mut r = HandshakeReader::new(now, &Config::default());
    assert!(matches!(
        r.feed(b"GET / HTTP/1.1\r\n"),
        HandshakeStep::Reject {
            reply: None,
            error: DecodeError::BadMagic
        }
    ));
    let r = HandshakeReader::new(now, &Config::default());
    assert!(r.is_expired(now + Config::default().handshake_timeout));
}
