//! E6: the in-memory session pair against memcpy, with the core's own
//! simulation helpers (the same code `ft-session-core/benches/pair.rs` times).

use std::cell::Cell;
use std::time::Instant;

use ft_session_core::sim::{bulk_transfer, established_pair, memcpy_transfer, pattern};
use ft_session_core::Config;
use ft_session_testkit::compare_alternating;

use crate::exp::CHUNK;
use crate::{Better, Ctx, Sink};

/// Moves `core_bytes` in 64 KiB zero-copy sends through a pair of sessions,
/// alternating with a memcpy of the same bytes.
pub(crate) fn run(ctx: &Ctx, sink: &mut Sink) {
    let bytes = ctx.scale.core_bytes;
    let chunks = (bytes / CHUNK as u64) as usize;
    let chunk = pattern(1, CHUNK);
    let mut dst = vec![0u8; CHUNK];
    // The core takes the time as an input: one instant serves the whole run.
    let now = Instant::now();
    let (mut cl, mut sv, ct, st) = established_pair(now, Config::default(), Config::default());
    let mut buf = vec![0u8; CHUNK];
    let short = Cell::new(false);
    let s = compare_alternating(
        ctx.scale.core_rounds,
        bytes,
        || {
            let t = Instant::now();
            let n = memcpy_transfer(&chunk, chunks, &mut dst);
            short.set(short.get() | (n != bytes));
            t.elapsed()
        },
        || {
            let t = Instant::now();
            let n = bulk_transfer(now, &mut cl, &mut sv, ct, st, &chunk, chunks, &mut buf);
            short.set(short.get() | (n != bytes));
            t.elapsed()
        },
    );
    if short.get() {
        sink.skip(
            "core",
            "core",
            "a transfer moved fewer bytes than asked".into(),
        );
        return;
    }
    sink.row(
        "core",
        "core",
        "pair/ack (raw = memcpy)",
        "throughput",
        "GiB/s",
        Better::Higher,
        Some(s.base_gib_s),
        s.ft_gib_s,
        Some(s.round_median),
    );
}
