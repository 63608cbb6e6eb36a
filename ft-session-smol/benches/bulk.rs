//! Bulk throughput over loopback (127.0.0.1) on smol: 256 MiB one way in
//! 64 KiB writes, raw `smol::Async<TcpStream>` beside the session on the same
//! executor, alternating rounds, under both release policies.
//!
//! `cargo bench -p ft-session-smol --bench bulk`
//!
//! The summary is the one every adapter's bench prints (std and Tokio after
//! their criterion groups), computed by `ft_session_bench::bulk_summary`:
//! `FT_BENCH_ROUNDS` (default 20) rounds alternating the two connections, the
//! order swapped every round, after one untimed transfer each; medians as
//! GiB/s, "ratio" from the medians and the median and range of the per-round
//! ratios. Lines: Ack session vs raw TCP (autotuned buffers), Implicit
//! session vs raw TCP with the same pinned buffers, Implicit vs Ack. Every
//! socket has `TCP_NODELAY` and `reno` (`FT_BENCH_CC=cubic|system`). The
//! sessions run on smol executor threads, as many as cores, through the
//! adapter's runtime (`SmolRuntime`) over sockets the bench sets up as
//! `connect`/`Listener::bind` set up theirs (docs/BENCHMARKS.md).
//!
//! Before it, the connect summary every adapter's bench prints
//! (`ft_session_bench::print_connect_summary`): `FT_BENCH_ROUNDS` rounds
//! rotating `FT_BENCH_CONNECTS` (default 50) raw TCP connects, as many floor
//! operations (a TCP connect plus one 1-byte round trip with a server task)
//! and as many `FtStream::connect`s; "ratio ft/raw" = median session connect
//! / median TCP connect, "ratio ft/floor" = median session connect / median
//! floor. `FT_BENCH_SUMMARY=bulk` or `connect` prints only one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ft_session_bench::{bulk_summary, congestion_from_env, Runtime};

const TOTAL: u64 = 256 << 20;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if ft_session_bench::summary_wanted("connect") {
        ft_session_bench::print_connect_summary(Runtime::Smol).expect("connect summary");
    }
    if !ft_session_bench::summary_wanted("bulk") {
        return;
    }
    let rounds = std::env::var("FT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cc = congestion_from_env();
    println!(
        "\n== summary (smol, congestion control {}) ==",
        cc.as_deref().unwrap_or("system default")
    );
    for (label, s) in bulk_summary(Runtime::Smol, rounds, TOTAL, cc).expect("bulk summary") {
        println!("{label}; {s}");
    }
}
