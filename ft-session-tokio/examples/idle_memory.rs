//! Memory of idle sessions: opens N sessions (both ends in this process),
//! each moves one small request and reply, then all sit idle; prints the
//! growth of heap bytes in use and of RSS per session end.
//!
//! `cargo run --release -p ft-session-tokio --example idle_memory -- 2000`

use std::alloc::System;
use std::time::Duration;

use ft_session_core::Config;
use ft_session_tokio::{FtListener, FtStream};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<usize>().ok())
        .map_or(0, |k| k * 1024)
}

fn in_use() -> isize {
    let s = GLOBAL.stats();
    // Reallocations are already counted in both totals.
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let size: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let listener = FtListener::bind("127.0.0.1:0", Config::default()).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let mut kept = Vec::new();
        while kept.len() < n {
            let (mut s, _) = listener.accept().await?;
            let mut buf = vec![0u8; size];
            s.read_exact(&mut buf).await?;
            s.write_all(&buf).await?;
            s.flush().await?;
            kept.push(s);
        }
        Ok::<_, std::io::Error>((listener, kept))
    });
    // Warm up: one session through the whole path, so lazy runtime state is
    // not counted.
    {
        let mut c = FtStream::connect(addr, Config::default()).await?;
        c.write_all(&vec![1u8; size]).await?;
        let mut buf = vec![0u8; size];
        c.read_exact(&mut buf).await?;
        std::mem::forget(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss0, heap0) = (rss(), in_use());
    let _region = Region::new(GLOBAL);
    let mut clients = Vec::new();
    for _ in 1..n {
        let mut c = FtStream::connect(addr, Config::default()).await?;
        c.write_all(&vec![1u8; size]).await?;
        let mut buf = vec![0u8; size];
        c.read_exact(&mut buf).await?;
        clients.push(c);
    }
    let (listener, kept) = server.await.expect("server task")?;
    // Let acknowledgments and heartbeats settle.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (rss1, heap1) = (rss(), in_use());
    let ends = 2 * (n - 1);
    println!(
        "{n} sessions, {size}-byte request: heap in use {} B per end, RSS {} B per end",
        (heap1 - heap0) / ends as isize,
        (rss1 as isize - rss0 as isize) / ends as isize
    );
    drop((listener, kept, clients));
    Ok(())
}
