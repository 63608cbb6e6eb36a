//! Bulk throughput of an in-memory session pair (1 GiB in 64 KiB zero-copy
//! `send` calls), beside a plain memcpy of the same bytes in the same run.
//! Compare the two throughputs: the ratio is the figure that matters.
//!
//! `cargo bench -p ft-session-core --features sim --bench pair`
#![allow(clippy::disallowed_methods)] // the benchmark is the caller: it owns the clock
#![allow(clippy::unwrap_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ft_session_core::sim::{bulk_transfer, established_pair, memcpy_transfer, pattern};
use ft_session_core::Config;

const CHUNK: usize = 64 * 1024;
const TOTAL: usize = 1 << 30;

/// memcpy and the session pair, one after the other in the same run.
fn bench(c: &mut Criterion) {
    let chunk = pattern(1, CHUNK);
    let chunks = TOTAL / CHUNK;
    let mut g = c.benchmark_group("1GiB_in_64KiB");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);

    g.bench_function("memcpy", |b| {
        let mut dst = vec![0u8; CHUNK];
        b.iter(|| assert_eq!(memcpy_transfer(&chunk, chunks, &mut dst), TOTAL as u64))
    });

    g.bench_function("session_pair_ack", |b| {
        let now = Instant::now();
        let (mut cl, mut sv, ct, st) = established_pair(now, Config::default(), Config::default());
        let mut buf = vec![0u8; CHUNK];
        b.iter(|| {
            let n = bulk_transfer(now, &mut cl, &mut sv, ct, st, &chunk, chunks, &mut buf);
            assert_eq!(n, TOTAL as u64);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
