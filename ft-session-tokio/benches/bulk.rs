//! Bulk throughput over loopback (127.0.0.1) on a multi-thread Tokio
//! runtime: 256 MiB one way in 64 KiB writes, raw `tokio::net::TcpStream`
//! beside `ft_session_tokio::FtStream` (acknowledgment policy) in the same
//! run, plus the cost of opening a session beside a raw TCP connect.
//!
//! `cargo bench -p ft-session-tokio --bench bulk`
//!
//! Connections are made once per benchmark function; an iteration is one
//! 256 MiB transfer, timed from the first write until the receiving task has
//! read the last byte. Sender and receiver are tasks on the runtime's worker
//! threads. Every socket has `TCP_NODELAY` (as the adapter sets) and the
//! same congestion control, `reno` by default (`FT_BENCH_CC=cubic`, or
//! `FT_BENCH_CC=system` for the system default): this machine's BBR settles
//! per connection into a fast or a slow mode on loopback (docs/BENCHMARKS.md).
//! The sessions therefore run over sockets made here, through the public
//! `FtStream::connect_with` / `FtListener::from_incoming`, set up as
//! `FtStream::connect` / `FtListener::bind` set them up.
//!
//! After criterion, the binary prints the summary every adapter's bench
//! prints (`ft_session_bench::bulk_summary`): `FT_BENCH_ROUNDS` (default 20)
//! rounds alternating raw and ft (the order swaps every round), each timed
//! with `Instant`, "ratio ft/raw" from the medians, under Ack and Implicit
//! (raw TCP pinned alike), and Implicit vs Ack.
//! Then the connect summary (`ft_session_bench::print_connect_summary`):
//! `FT_BENCH_ROUNDS` rounds alternating `FT_BENCH_CONNECTS` (default 50) raw
//! TCP connects and as many `FtStream::connect`s, "ratio ft/raw" = median
//! session connect / median TCP connect (target: at most 2).
//! `FT_BENCH_SUMMARY=0` skips both summaries, `bulk` or `connect` prints
//! only that one; a criterion filter matching no group (`-- zzz`) skips
//! criterion.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use ft_session_core::Config;
use ft_session_tokio::{FtListener, FtStream};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const CHUNK: usize = 64 * 1024;
const TOTAL: usize = 256 << 20;

/// The congestion control every benchmark socket uses (`None`: the system's).
fn congestion() -> Option<String> {
    match std::env::var("FT_BENCH_CC") {
        Ok(v) if v == "system" => None,
        Ok(v) => Some(v),
        Err(_) => Some("reno".to_string()),
    }
}

/// Sets the benchmark's socket options on `s`, before any data flows; fails
/// loudly, since a silent fallback to BBR would make the figures bimodal.
fn prepare(s: &TcpStream) {
    s.set_nodelay(true).unwrap();
    if let Some(cc) = congestion() {
        let r = SockRef::from(s);
        r.set_tcp_congestion(cc.as_bytes())
            .unwrap_or_else(|e| panic!("TCP_CONGESTION {cc}: {e} (try FT_BENCH_CC=system)"));
        // The kernel answers with the name padded by NULs.
        let got = r.tcp_congestion().unwrap();
        assert_eq!(got.split(|&b| b == 0).next(), Some(cc.as_bytes()));
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    prepare(&s);
    Ok(s)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// One direction of bulk data: the sending task writes `TOTAL` bytes per
/// transfer; a receiving task reads until it has them and says so.
struct Bulk {
    writer: Option<Writer>,
    done: mpsc::UnboundedReceiver<()>,
    /// What must live as long as the connection (the session's listener).
    _keep: Option<FtListener>,
}

impl Bulk {
    fn new<R: AsyncRead + Send + Unpin + 'static>(writer: Writer, mut reader: R) -> Bulk {
        let (tx, done) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0usize;
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        got += n;
                        if got >= TOTAL {
                            assert_eq!(got, TOTAL, "one transfer at a time");
                            got = 0;
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Bulk {
            writer: Some(writer),
            done,
            _keep: None,
        }
    }

    /// One transfer, from the first write (on a worker thread) until the
    /// last byte is read.
    fn transfer(&mut self, rt: &Runtime) -> Duration {
        let mut w = self.writer.take().unwrap();
        let (w, elapsed) = rt.block_on(async {
            let start = Instant::now();
            let w = tokio::spawn(async move {
                let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 7 + 1) as u8).collect();
                for _ in 0..TOTAL / CHUNK {
                    w.write_all(&chunk).await.unwrap();
                }
                w.flush().await.unwrap();
                w
            })
            .await
            .unwrap();
            self.done.recv().await.unwrap();
            (w, start.elapsed())
        });
        self.writer = Some(w);
        elapsed
    }
}

fn raw_pair(rt: &Runtime) -> Bulk {
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        prepare(&server);
        Bulk::new(Box::new(client), server)
    })
}

fn ft_pair(rt: &Runtime) -> Bulk {
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let incoming = futures::stream::unfold(l, |l| async move {
            let r = l.accept().await.map(|(s, peer)| {
                prepare(&s);
                (s, Some(peer))
            });
            Some((r, l))
        });
        let listener = FtListener::from_incoming(Config::default(), incoming).unwrap();
        let client = FtStream::connect_with(Config::default(), move || connect(addr))
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut bulk = Bulk::new(Box::new(client), server);
        bulk._keep = Some(listener);
        bulk
    })
}

/// Sets up one connection for a benchmark function.
type MakePair = fn(&Runtime) -> Bulk;

fn bulk(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("tokio_bulk_256MiB");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    let cases: [(&str, MakePair); 2] = [("raw_tcp", raw_pair), ("ft_ack", ft_pair)];
    for (name, make) in cases {
        g.bench_function(name, |b| {
            let mut pair = make(&rt);
            b.iter_custom(|iters| (0..iters).map(|_| pair.transfer(&rt)).sum())
        });
    }
    g.finish();
}

fn connect_latency(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("tokio_connect");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));

    g.bench_function("raw_tcp", |b| {
        let addr = rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            });
            addr
        });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let s = TcpStream::connect(addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    t += start.elapsed();
                    drop(s);
                }
                t
            })
        })
    });

    g.bench_function("ft_session", |b| {
        let addr = rt.block_on(async {
            let l = FtListener::bind("127.0.0.1:0", Config::default())
                .await
                .unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    // Until the client's close, then close gracefully in
                    // the background.
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
                    });
                }
            });
            addr
        });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let s = FtStream::connect(addr, Config::default()).await.unwrap();
                    t += start.elapsed();
                    // Not timed: the graceful close, so sessions do not pile up.
                    s.close().await.unwrap();
                }
                t
            })
        })
    });
    g.finish();
}

/// The alternating-rounds summary every adapter's bench prints (computed by
/// `ft_session_bench::bulk_summary`): Ack vs raw TCP, Implicit vs raw TCP
/// with the same pinned buffers, Implicit vs Ack.
fn summary() {
    let rounds: usize = std::env::var("FT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!(
        "\n== summary (tokio multi-thread, congestion control {}) ==",
        congestion().as_deref().unwrap_or("system default")
    );
    let lines = ft_session_bench::bulk_summary(
        ft_session_bench::Runtime::Tokio,
        rounds,
        TOTAL as u64,
        congestion(),
    )
    .unwrap();
    for (label, s) in lines {
        println!("{label}; {s}");
    }
}

criterion_group!(benches, bulk, connect_latency);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    if bench_mode && ft_session_bench::summary_wanted("bulk") {
        summary();
    }
    if bench_mode && ft_session_bench::summary_wanted("connect") {
        ft_session_bench::print_connect_summary(ft_session_bench::Runtime::Tokio).unwrap();
    }
}
