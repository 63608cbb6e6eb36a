//! Bulk throughput over loopback (127.0.0.1): 256 MiB one way in 64 KiB
//! writes, raw `TcpStream` beside `FtStream` in the same run, plus the cost
//! of opening a session beside a raw TCP connect.
//!
//! `cargo bench -p ft-session-std --bench bulk`
//!
//! * `bulk_256MiB/raw_tcp` vs `bulk_256MiB/ft_ack`: the default
//!   acknowledgment policy, kernel-autotuned socket buffers on both.
//! * `bulk_256MiB/raw_tcp_pinned` vs `bulk_256MiB/ft_implicit`: the
//!   implicit (no-ack) policy, whose socket buffers are pinned to
//!   [`DEFAULT_IMPLICIT_SOCKET_BUFFER`]; the raw baseline pins the same size.
//! * `connect/raw_tcp` vs `connect/ft_session`: TCP connect alone vs
//!   `FtStream::connect` (TCP connect and session handshake, each hop
//!   through the adapter's I/O threads).
//!
//! Connections are made once per benchmark function; an iteration is one
//! 256 MiB transfer, timed from the first write until the receiver has read
//! the last byte. Every socket has `TCP_NODELAY` (as the adapter sets) and
//! the same congestion control, `reno` by default (`FT_BENCH_CC=cubic`, or
//! `FT_BENCH_CC=system` for the system default): this machine's BBR settles
//! per connection into a fast or a slow mode on loopback (docs/BENCHMARKS.md).
//! The sessions therefore run over sockets made here, through the public
//! `FtStream::connect_with` / `FtListener::from_incoming`, set up exactly as
//! `FtStream::connect` / `FtListener::bind` would set them up.
//!
//! After criterion, the binary prints the summary every adapter's bench
//! prints (`ft_session_bench::bulk_summary`): `FT_BENCH_ROUNDS` (default 20)
//! rounds alternating raw and ft (the order swaps every round), each timed
//! with `Instant`, and "ratio ft/raw" from the medians, for both write
//! paths (copying `write_all`/`read`, and zero-copy `FtStream::send_bytes`
//! with a `FtStream::read_chunk` sink), each under Ack and Implicit.
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

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use ft_session_std::{
    Config, FtListener, FtStream, ReleasePolicy, Transport, TransportHalves, TransportInfo,
    DEFAULT_IMPLICIT_SOCKET_BUFFER,
};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

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

/// Sets the benchmark's congestion control on `s`; fails loudly, since a
/// silent fallback to BBR would make the figures bimodal.
fn set_cc(s: SockRef<'_>) {
    if let Some(cc) = congestion() {
        s.set_tcp_congestion(cc.as_bytes())
            .unwrap_or_else(|e| panic!("TCP_CONGESTION {cc}: {e} (try FT_BENCH_CC=system)"));
        // The kernel answers with the name padded by NULs.
        let got = s.tcp_congestion().unwrap();
        assert_eq!(got.split(|&b| b == 0).next(), Some(cc.as_bytes()));
    }
}

fn new_socket(pin: Option<usize>) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    set_cc(SockRef::from(&s));
    if let Some(size) = pin {
        // Before connect/listen, as the adapter pins them.
        s.set_send_buffer_size(size).unwrap();
        s.set_recv_buffer_size(size).unwrap();
    }
    s
}

fn listen(pin: Option<usize>) -> TcpListener {
    let s = new_socket(pin);
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(1024).unwrap();
    s.into()
}

fn connect(addr: SocketAddr, pin: Option<usize>) -> std::io::Result<TcpStream> {
    let s = new_socket(pin);
    s.connect(&addr.into())?;
    let s: TcpStream = s.into();
    s.set_nodelay(true)?;
    Ok(s)
}

fn accepted(s: TcpStream) -> TcpStream {
    // Accepted sockets inherit the listener's; set again so it is certain.
    set_cc(SockRef::from(&s));
    s.set_nodelay(true).unwrap();
    s
}

/// A TCP transport for a session, with its effective buffer sizes when
/// pinned (what `FtStream::connect_opts` / `FtListener::bind_opts` report).
fn halves(s: TcpStream, pinned: bool) -> std::io::Result<TransportHalves> {
    let info = if pinned {
        let r = SockRef::from(&s);
        TransportInfo {
            send_buffer: Some(r.send_buffer_size()? as u64),
            recv_buffer: Some(r.recv_buffer_size()? as u64),
        }
    } else {
        TransportInfo::default()
    };
    let mut h = s.split()?;
    h.info = info;
    Ok(h)
}

/// One direction of bulk data: the sender writes `TOTAL` bytes per
/// transfer; a receiver thread reads until it has them and says so.
struct Bulk {
    writer: Box<dyn Write + Send>,
    done: mpsc::Receiver<()>,
    chunk: Vec<u8>,
    /// What must live as long as the connection (the session's listener).
    _keep: Option<FtListener>,
}

impl Bulk {
    fn new<R: Read + Send + 'static>(writer: Box<dyn Write + Send>, mut reader: R) -> Bulk {
        let (tx, done) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0usize;
            loop {
                match reader.read(&mut buf) {
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
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 7 + 1) as u8).collect();
        Bulk {
            writer,
            done,
            chunk,
            _keep: None,
        }
    }

    /// One transfer: first write to last byte read.
    fn transfer(&mut self) -> Duration {
        let start = Instant::now();
        for _ in 0..TOTAL / CHUNK {
            self.writer.write_all(&self.chunk).unwrap();
        }
        self.writer.flush().unwrap();
        self.done.recv().unwrap();
        start.elapsed()
    }
}

fn raw_pair(pin: Option<usize>) -> Bulk {
    let l = listen(pin);
    let addr = l.local_addr().unwrap();
    let client = connect(addr, pin).unwrap();
    let (server, _) = l.accept().unwrap();
    Bulk::new(Box::new(client), accepted(server))
}

fn ft_pair(policy: ReleasePolicy) -> Bulk {
    let mut config = Config::default();
    config.release_policy = policy;
    let pin = match policy {
        ReleasePolicy::Implicit => Some(DEFAULT_IMPLICIT_SOCKET_BUFFER),
        _ => None,
    };
    let l = listen(pin);
    let addr = l.local_addr().unwrap();
    let incoming = std::iter::from_fn(move || {
        Some(
            l.accept()
                .and_then(|(s, _)| halves(accepted(s), pin.is_some())),
        )
    });
    let listener = FtListener::from_incoming(config.clone(), incoming).unwrap();
    let client =
        FtStream::connect_with(config, move || halves(connect(addr, pin)?, pin.is_some())).unwrap();
    let server = listener.accept().unwrap().0;
    let mut bulk = Bulk::new(Box::new(client), server);
    bulk._keep = Some(listener);
    bulk
}

/// Sets up one connection for a benchmark function.
type MakePair = fn() -> Bulk;

fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulk_256MiB");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    let cases: [(&str, MakePair); 4] = [
        ("raw_tcp", || raw_pair(None)),
        ("ft_ack", || ft_pair(ReleasePolicy::Ack)),
        ("raw_tcp_pinned", || {
            raw_pair(Some(DEFAULT_IMPLICIT_SOCKET_BUFFER))
        }),
        ("ft_implicit", || ft_pair(ReleasePolicy::Implicit)),
    ];
    for (name, make) in cases {
        g.bench_function(name, |b| {
            let mut pair = make();
            b.iter_custom(|iters| (0..iters).map(|_| pair.transfer()).sum())
        });
    }
    g.finish();
}

fn connect_latency(c: &mut Criterion) {
    let mut g = c.benchmark_group("connect");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));

    g.bench_function("raw_tcp", |b| {
        let l = listen(None);
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming() {
                drop(s);
            }
        });
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                t += start.elapsed();
                drop(s);
            }
            t
        })
    });

    g.bench_function("ft_session", |b| {
        let l = FtListener::bind("127.0.0.1:0", Config::default()).unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            while let Ok((mut s, _)) = l.accept() {
                // Until the client's close, then close: a session the
                // server closes at once may finish before the client's
                // `connect` returns, which then fails with `Closed`.
                thread::spawn(move || {
                    let _ = io::copy(&mut s, &mut io::sink());
                });
            }
        });
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let s = FtStream::connect(addr, Config::default()).unwrap();
                t += start.elapsed();
                // Not timed: the graceful close, so sessions do not pile up.
                s.close().unwrap();
            }
            t
        })
    });
    g.finish();
}

/// The alternating-rounds summary every adapter's bench prints (computed by
/// `ft_session_bench::bulk_summary`): Ack vs raw TCP, Implicit vs raw TCP
/// with the same pinned buffers, Implicit vs Ack.
fn summary() {
    let rounds = std::env::var("FT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!(
        "\n== summary (std, congestion control {}) ==",
        congestion().as_deref().unwrap_or("system default")
    );
    let lines = ft_session_bench::bulk_summary(
        ft_session_bench::Runtime::Std,
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
        ft_session_bench::print_connect_summary(ft_session_bench::Runtime::Std).unwrap();
    }
}
