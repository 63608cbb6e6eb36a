//! The server-side handshake reader: split, bounded, and refusing bad input
//! clearly; and the entropy sources the handshake draws ids and secrets from.
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use ft_session_core::frame::{
    ClientHello, Code, DecodeError, Params, Resume, ServerReply, SessionId, RESUME_LEN,
};
use ft_session_core::handshake::SeededEntropy;
use ft_session_core::{Config, Entropy, HandshakeReader, HandshakeStep};

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

#[test]
fn seeded_entropy_is_splitmix64() {
    // Reference outputs of splitmix64 (Vigna): simulations and recorded
    // schedules replay only if the generator is exactly this one.
    let mut e = SeededEntropy::new(0);
    assert_eq!(
        [e.next_u64(), e.next_u64(), e.next_u64()],
        [
            0xe220_a839_7b1d_cdaf,
            0x6e78_9e6a_a1b9_65f4,
            0x06c4_5d18_8009_454f
        ]
    );
    let mut e = SeededEntropy::new(1_234_567);
    assert_eq!(
        [e.next_u64(), e.next_u64(), e.next_u64()],
        [
            0x599e_d017_fb08_fc85,
            0x2c73_f084_5854_0fa5,
            0x883e_bce5_a3f2_7c77
        ]
    );
}

#[test]
fn seeded_entropy_fills_little_endian_words_and_partial_tails() {
    let mut e = SeededEntropy::new(0);
    let mut buf = [0u8; 11];
    Entropy::fill(&mut e, &mut buf);
    let first = 0xe220_a839_7b1d_cdaf_u64.to_le_bytes();
    let second = 0x6e78_9e6a_a1b9_65f4_u64.to_le_bytes();
    assert_eq!(&buf[..8], &first);
    assert_eq!(
        &buf[8..],
        &second[..3],
        "a short tail takes a word's first bytes"
    );
    // The tail used a whole word: the next draw is the third output.
    assert_eq!(e.next_u64(), 0x06c4_5d18_8009_454f);
}

#[test]
fn a_closure_is_an_entropy_source() {
    let mut calls = 0;
    let mut source = |dest: &mut [u8]| {
        calls += 1;
        dest.fill(0xa5);
    };
    let mut buf = [0u8; 5];
    Entropy::fill(&mut source, &mut buf);
    assert_eq!(buf, [0xa5; 5]);
    assert_eq!(calls, 1);
}

#[test]
fn reader_holds_at_most_one_message_whatever_it_is_fed() {
    // A RESUME one byte short, then a megabyte: the reader may take the one
    // byte it lacks and nothing more (its Debug shows what it holds).
    let hello = ClientHello::Resume(Resume {
        session_id: SessionId([4; 16]),
        attempt: 2,
        received: 0,
        retained_from: 0,
        params: Params::default(),
        proof: [0; 32],
    });
    let bytes = encode_hello(&hello);
    assert_eq!(bytes.len(), RESUME_LEN);
    let mut r = HandshakeReader::new(Instant::now(), &Config::default());
    assert!(matches!(
        r.feed(&bytes[..RESUME_LEN - 1]),
        HandshakeStep::NeedMore
    ));
    let mut rest = vec![bytes[RESUME_LEN - 1]];
    rest.extend_from_slice(&vec![0xee; 1 << 20]);
    match r.feed(&rest) {
        HandshakeStep::Hello { hello: h, consumed } => {
            assert_eq!((h, consumed), (hello, 1));
        }
        s => panic!("{s:?}"),
    }
    let debug = format!("{r:?}");
    let held = debug
        .split_once("buf: [")
        .and_then(|(_, tail)| tail.split_once(']'))
        .map(|(list, _)| list.split(", ").count())
        .unwrap();
    assert_eq!(held, RESUME_LEN, "{debug}");
}
