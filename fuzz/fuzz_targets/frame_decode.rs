//! Arbitrary bytes into the frame decoders and the handshake decoders.
//!
//! - `FrameDecoder` (streaming), fed in arbitrary chunk sizes, never panics,
//!   always makes progress on non-empty input, never allocates, and hands out
//!   payload only up to each data frame's announced length, which is within
//!   the configured limit.
//! - `Frame::decode` (whole buffer) allocates at most one payload of at most
//!   the limit, and agrees with the streaming decoder frame for frame and on
//!   the error.
//! - Every accepted frame re-encodes to exactly the bytes it came from.
//! - `ClientHello::decode` and `ServerReply::decode` never panic; accepted
//!   messages re-encode identically and no strict prefix of them decodes.
#![no_main]

use std::alloc::System;

use bytes::{Bytes, BytesMut};
use ft_session_core::frame::{
    ClientHello, DecodeError, Decoded, Frame, FrameDecoder, Head, ServerReply, TAG_LEN, T_REJECT,
};
use libfuzzer_sys::fuzz_target;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

// Counts allocations, so the target can tell what the decoders themselves
// allocate (libFuzzer runs the target on one thread).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `f` and returns its result with (allocations, bytes allocated): with
/// at most one allocation, the bytes are that allocation's size.
fn counted<T>(f: impl FnOnce() -> T) -> (T, (usize, usize)) {
    let region = Region::new(GLOBAL);
    let r = f();
    let c = region.change();
    (
        r,
        (
            c.allocations + c.reallocations,
            c.bytes_allocated + c.bytes_reallocated.max(0) as usize,
        ),
    )
}

/// What a decoder made of the input: whole frames, then how it stopped.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
}

fn stream(data: &[u8], limit: u32, cuts: &[u8]) -> Outcome {
    let mut d = FrameDecoder::new(limit);
    let mut frames = Vec::new();
    let mut partial: Option<(u64, u32, Vec<u8>)> = None;
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(cuts[i % cuts.len()]) + 1).min(rest.len());
        i += 1;
        let (mut piece, tail) = rest.split_at(n);
        rest = tail;
        while !piece.is_empty() {
            let (r, (allocs, _)) = counted(|| d.decode(piece));
            assert_eq!(allocs, 0, "the streaming decoder allocated");
            let (used, item) = match r {
                Ok(x) => x,
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(e),
                    }
                }
            };
            assert!(
                used > 0 && used <= piece.len(),
                "no progress: used {used} of {}",
                piece.len()
            );
            match item {
                Some(Decoded::Head(Head::Data { offset, len })) => {
                    assert!(partial.is_none(), "a header inside a payload");
                    assert!(
                        len > 0 && len <= limit,
                        "data frame of {len} bytes past the limit {limit}"
                    );
                    partial = Some((offset, len, Vec::new()));
                }
                Some(Decoded::Head(Head::Control(f))) => {
                    assert!(partial.is_none(), "a header inside a payload");
                    assert!(!matches!(f, Frame::Data { .. }));
                    frames.push(f);
                }
                Some(Decoded::Payload(p)) => {
                    let Some((offset, len, buf)) = partial.as_mut() else {
                        panic!("payload without a data header");
                    };
                    assert!(
                        p.len() <= *len as usize - buf.len(),
                        "payload past the announced length"
                    );
                    buf.extend_from_slice(p);
                    if buf.len() == *len as usize {
                        let payload = Bytes::from(std::mem::take(buf));
                        frames.push(Frame::Data {
                            offset: *offset,
                            payload,
                        });
                        partial = None;
                    }
                }
                None => assert_eq!(used, piece.len(), "stopped early without an item"),
            }
            piece = &piece[used..];
        }
    }
    assert_eq!(
        d.is_idle(),
        partial.is_none() && whole_prefix_len(&frames) == data.len()
    );
    Outcome {
        frames,
        error: None,
    }
}

fn whole_prefix_len(frames: &[Frame]) -> usize {
    frames.iter().map(Frame::encoded_len).sum()
}

fn whole(data: &[u8], limit: u32) -> Outcome {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let (r, (allocs, largest)) = counted(|| Frame::decode(&data[at..], limit));
        // At most one payload, copied once, never larger than the limit.
        assert!(allocs <= 1, "Frame::decode allocated {allocs} times");
        assert!(
            largest <= limit as usize,
            "Frame::decode allocated {largest} bytes, limit {limit}"
        );
        match r {
            Ok(Some((f, n))) => {
                assert!(n > 0 && at + n <= data.len());
                if let Frame::Data { payload, .. } = &f {
                    assert!(!payload.is_empty() && payload.len() <= limit as usize);
                }
                let mut enc = BytesMut::new();
                f.encode(&mut enc);
                assert_eq!(enc.len(), f.encoded_len());
                assert_eq!(
                    &enc[..],
                    &data[at..at + n],
                    "accepted frame re-encodes differently"
                );
                frames.push(f);
                at += n;
            }
            Ok(None) => {
                return Outcome {
                    frames,
                    error: None,
                }
            }
            Err(e) => {
                return Outcome {
                    frames,
                    error: Some(e),
                }
            }
        }
    }
}

fn handshakes(data: &[u8]) {
    if let Ok(Some((m, n))) = ClientHello::decode(data) {
        let mut enc = BytesMut::new();
        m.encode(&mut enc);
        assert_eq!(&enc[..], &data[..n], "client hello re-encodes differently");
        assert_eq!(n, m.encoded_len());
        for cut in 0..n {
            assert_eq!(
                ClientHello::decode(&data[..cut]),
                Ok(None),
                "prefix of {cut} bytes decoded"
            );
        }
    }
    if let Ok(Some((m, n))) = ServerReply::decode(data) {
        let enc = m.to_bytes();
        assert_eq!(n, m.encoded_len());
        let mut expected = data[..n].to_vec();
        if let ServerReply::Reject { .. } = m {
            // A REJECT is understood from a server of any version; it
            // re-encodes with ours.
            assert_eq!(expected[TAG_LEN - 1], T_REJECT);
            expected[TAG_LEN - 2] = ft_session_core::frame::VERSION;
        }
        assert_eq!(
            &enc[..],
            &expected[..],
            "server reply re-encodes differently"
        );
        for cut in 0..n {
            assert_eq!(
                ServerReply::decode(&data[..cut]),
                Ok(None),
                "prefix of {cut} bytes decoded"
            );
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // Header: a frame limit (small, so lying lengths are refused often) and
    // chunk sizes; the rest is the stream.
    if input.len() < 3 {
        return;
    }
    let (head, data) = input.split_at(3);
    let limit = 1 + (u32::from(u16::from_be_bytes([head[0], head[1]])) % 4096);
    let cuts: Vec<u8> = (0..8).map(|i| head[2].rotate_left(i) % 64).collect();
    let streamed = stream(data, limit, &cuts);
    let decoded = whole(data, limit);
    // The decoders agree frame for frame. The whole-buffer decoder waits for
    // a complete data frame where the streaming one already reports the header.
    assert_eq!(streamed.frames, decoded.frames, "decoders disagree");
    assert_eq!(streamed.error, decoded.error, "decoders stop differently");
    handshakes(data);
    handshakes(input);
});
