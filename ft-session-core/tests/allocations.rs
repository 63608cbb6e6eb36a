//! How many heap allocations the steady state of a bulk transfer makes per
//! chunk, counted with an instrumented global allocator.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::alloc::System;
use std::time::Instant;

use ft_session_core::sim::{bulk_transfer, established_pair, pattern};
use ft_session_core::Config;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn steady_state_makes_no_allocation_per_chunk() {
    let now = Instant::now();
    let (mut c, mut s, ct, st) = established_pair(now, Config::default(), Config::default());
    let chunk = pattern(3, 64 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    // Warm-up: queues and receive buffers reach their working size, and the
    // chunk's `Bytes` becomes shared (its one-time promotion allocates).
    assert_eq!(
        bulk_transfer(now, &mut c, &mut s, ct, st, &chunk, 256, &mut buf),
        256 * 65536
    );

    // The counter is process-wide: the test harness's own threads allocate
    // now and then (2-4 times in about 1 run of 30 on a loaded machine).
    // The core is deterministic, so an allocation of its own per chunk shows
    // in every attempt; the harness's are rare enough never to fall in all
    // three.
    let chunks = 4096; // 256 MiB
    let mut counts = Vec::new();
    for _ in 0..3 {
        let region = Region::new(GLOBAL);
        let n = bulk_transfer(now, &mut c, &mut s, ct, st, &chunk, chunks, &mut buf);
        let stats = region.change();
        assert_eq!(n, chunks as u64 * 65536);
        counts.push(stats.allocations + stats.reallocations);
        if counts.last() == Some(&0) {
            return;
        }
    }
    panic!(
        "steady state allocated in every attempt: {counts:?} times per {chunks} chunks of 64 KiB"
    );
}
