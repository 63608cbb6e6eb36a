//! The adapter benches' connect summary: a session connect (TCP connect and
//! the session's handshake, through each adapter's own `FtStream::connect`
//! and `FtListener::bind`) beside two baselines on the same runtime, in
//! rotating rounds: a raw TCP connect (the target: at most 2x) and
//! the floor, a TCP connect plus one application round trip (a 1-byte ping
//! answered by 1 byte), since the session's handshake is one round trip.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use ft_session_core::Config;
use ft_session_testkit::median;

use crate::Runtime;

/// One baseline of [`LatencySummary`]: its median and the session's ratio
/// to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Median baseline operation, in µs (median over rounds of each
    /// round's median).
    pub base_us: f64,
    /// Median session connect / `base_us`.
    pub ratio: f64,
    /// Median of the per-round ratios.
    pub round_median: f64,
    /// Smallest per-round ratio.
    pub round_min: f64,
    /// Largest per-round ratio.
    pub round_max: f64,
}

/// What [`connect_summary`](crate::connect_summary) measured: the median
/// session connect and its ratio to each baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    /// Rounds measured (after one untimed round each).
    pub rounds: usize,
    /// Operations per side and round.
    pub per_round: usize,
    /// Median session connect, in µs (median over rounds of each round's
    /// median).
    pub ft_us: f64,
    /// Against a raw TCP connect: how many TCP connects a session connect
    /// costs (the target: at most 2).
    pub connect: Baseline,
    /// Against the floor, a TCP connect plus one application round trip
    /// (1 byte each way, the server a thread or task answering it): how far
    /// above what any handshake must cost the session is.
    pub floor: Baseline,
}

impl LatencySummary {
    /// The line of one baseline, `name` naming it in the figures.
    fn line(&self, f: &mut std::fmt::Formatter<'_>, name: &str, b: &Baseline) -> std::fmt::Result {
        write!(
            f,
            "{} rounds x {} connects, medians: {name} {:.1} µs, ft {:.1} µs; ratio ft/{name} = {:.2} \
             (median of per-round ratios {:.2}, range {:.2}-{:.2})",
            self.rounds,
            self.per_round,
            b.base_us,
            self.ft_us,
            b.ratio,
            b.round_median,
            b.round_min,
            b.round_max
        )
    }
}

impl std::fmt::Display for LatencySummary {
    /// Two lines: against a raw TCP connect, then against the floor.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connect  (base raw TCP connect, ft FtStream::connect): ratio ft/raw; "
        )?;
        self.line(f, "raw", &self.connect)?;
        write!(
            f,
            "\nfloor    (base TCP connect + 1-byte round trip, ft FtStream::connect): \
             ratio ft/floor; "
        )?;
        self.line(f, "floor", &self.floor)
    }
}

/// Sessions the std server holds before dropping the oldest.
const HELD: usize = 64;

/// A timed operation of the comparison.
type Op<'a> = &'a mut (dyn FnMut() -> io::Result<Duration> + 'a);

/// `rounds` rounds of `per_round` timed operations of each of `raw`,
/// `floor` and `ft`, the order rotating from round to round, after one
/// untimed round of each; a round's figure is the median of its operations
/// (in µs).
fn compare<'a>(
    rounds: usize,
    per_round: usize,
    raw: Op<'a>,
    floor: Op<'a>,
    ft: Op<'a>,
) -> io::Result<LatencySummary> {
    let mut ops: [Op<'a>; 3] = [raw, floor, ft];
    let round = |op: &mut dyn FnMut() -> io::Result<Duration>| -> io::Result<f64> {
        let mut v = Vec::with_capacity(per_round);
        for _ in 0..per_round {
            v.push(op()?.as_secs_f64() * 1e6);
        }
        Ok(median(&mut v))
    };
    for op in ops.iter_mut() {
        round(&mut **op)?;
    }
    let mut times: [Vec<f64>; 3] = Default::default();
    for i in 0..rounds {
        for k in 0..3 {
            let j = (i + k) % 3;
            let t = round(&mut *ops[j])?;
            times[j].push(t);
        }
    }
    let [mut raw_t, mut floor_t, mut ft_t] = times;
    let baseline = |base: &mut Vec<f64>, ft: &[f64]| {
        let mut r: Vec<f64> = ft.iter().zip(base.iter()).map(|(f, b)| f / b).collect();
        let mut fts = ft.to_vec();
        let (mb, mf) = (median(base), median(&mut fts));
        Baseline {
            base_us: mb,
            ratio: mf / mb,
            round_median: median(&mut r),
            round_min: r.iter().copied().fold(f64::INFINITY, f64::min),
            round_max: r.iter().copied().fold(0.0, f64::max),
        }
    };
    let connect = baseline(&mut raw_t, &ft_t);
    let floor = baseline(&mut floor_t, &ft_t);
    Ok(LatencySummary {
        rounds,
        per_round,
        ft_us: median(&mut ft_t),
        connect,
        floor,
    })
}

pub(crate) fn run(runtime: Runtime, rounds: usize, per_round: usize) -> io::Result<LatencySummary> {
    match runtime {
        Runtime::Std => std_connects(rounds, per_round),
        Runtime::Tokio => tokio_connects(rounds, per_round),
        Runtime::Smol => smol_connects(rounds, per_round),
    }
}

fn std_connects(rounds: usize, per_round: usize) -> io::Result<LatencySummary> {
    use ft_session_std::{FtListener, FtStream};
    use std::net::{TcpListener, TcpStream};

    let raw = TcpListener::bind("127.0.0.1:0")?;
    let raw_addr = raw.local_addr()?;
    // Accepted and dropped at once, as a server that only counts connects.
    std::thread::spawn(move || {
        for s in raw.incoming() {
            drop(s);
        }
    });
    let floor = TcpListener::bind("127.0.0.1:0")?;
    let floor_addr = floor.local_addr()?;
    // One thread answers each connection's ping, one connection at a time.
    std::thread::spawn(move || {
        for s in floor.incoming() {
            let _ = s.and_then(|mut s| {
                s.set_nodelay(true)?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                s.write_all(&b)
            });
        }
    });
    let l = FtListener::bind("127.0.0.1:0", Config::default())?;
    let ft_addr = l.local_addr()?;
    std::thread::spawn(move || {
        // Each session is held, unread, until long after its client closed
        // it (the session answers the client's FIN and CLOSE by itself),
        // then dropped: one the server closed at once could finish before
        // the client's connect returns, which then fails with `Closed`. No
        // thread per session: the raw servers start none either.
        let mut held = std::collections::VecDeque::new();
        while let Ok((s, _)) = l.accept() {
            held.push_back(s);
            if held.len() > HELD {
                held.pop_front();
            }
        }
    });
    compare(
        rounds,
        per_round,
        &mut || {
            let start = Instant::now();
            let s = TcpStream::connect(raw_addr)?;
            s.set_nodelay(true)?;
            Ok(start.elapsed())
        },
        &mut || {
            let start = Instant::now();
            let mut s = TcpStream::connect(floor_addr)?;
            s.set_nodelay(true)?;
            s.write_all(&[1])?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            Ok(start.elapsed())
        },
        &mut || {
            let start = Instant::now();
            let s = FtStream::connect(ft_addr, Config::default())?;
            let t = start.elapsed();
            // Not timed: the graceful close, so sessions do not pile up.
            s.close()?;
            Ok(t)
        },
    )
}

fn tokio_connects(rounds: usize, per_round: usize) -> io::Result<LatencySummary> {
    use ft_session_tokio::{FtListener, FtStream};
    use tokio::net::{TcpListener, TcpStream};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (raw_addr, floor_addr, ft_addr) = rt.block_on(async {
        let raw = TcpListener::bind("127.0.0.1:0").await?;
        let raw_addr = raw.local_addr()?;
        tokio::spawn(async move {
            while let Ok((s, _)) = raw.accept().await {
                drop(s);
            }
        });
        let floor = TcpListener::bind("127.0.0.1:0").await?;
        let floor_addr = floor.local_addr()?;
        // One task answers each connection's ping, one connection at a time.
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = floor.accept().await {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(&b).await;
                }
            }
        });
        let l = FtListener::bind("127.0.0.1:0", Config::default()).await?;
        let ft_addr = l.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
                });
            }
        });
        io::Result::Ok((raw_addr, floor_addr, ft_addr))
    })?;
    // The connects run in `block_on` on this thread, the sessions' and the
    // servers' tasks on the runtime's workers.
    compare(
        rounds,
        per_round,
        &mut || {
            rt.block_on(async {
                let start = Instant::now();
                let s = TcpStream::connect(raw_addr).await?;
                s.set_nodelay(true)?;
                Ok(start.elapsed())
            })
        },
        &mut || {
            rt.block_on(async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let start = Instant::now();
                let mut s = TcpStream::connect(floor_addr).await?;
                s.set_nodelay(true)?;
                s.write_all(&[1]).await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                Ok(start.elapsed())
            })
        },
        &mut || {
            rt.block_on(async {
                let start = Instant::now();
                let s = FtStream::connect(ft_addr, Config::default()).await?;
                let t = start.elapsed();
                s.close().await?;
                Ok(t)
            })
        },
    )
}

fn smol_connects(rounds: usize, per_round: usize) -> io::Result<LatencySummary> {
    use ft_session_smol::{FtListener, FtStream};
    use smol::net::{TcpListener, TcpStream};

    let (raw_addr, floor_addr, ft_addr) = smol::block_on(async {
        let raw = TcpListener::bind("127.0.0.1:0").await?;
        let raw_addr = raw.local_addr()?;
        smol::spawn(async move {
            while let Ok((s, _)) = raw.accept().await {
                drop(s);
            }
        })
        .detach();
        let floor = TcpListener::bind("127.0.0.1:0").await?;
        let floor_addr = floor.local_addr()?;
        // One task answers each connection's ping, one connection at a time.
        smol::spawn(async move {
            use smol::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = floor.accept().await {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(&b).await;
                }
            }
        })
        .detach();
        let l = FtListener::bind("127.0.0.1:0", Config::default()).await?;
        let ft_addr = l.local_addr()?;
        smol::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                smol::spawn(async move {
                    let _ = smol::io::copy(&s, &mut smol::io::sink()).await;
                })
                .detach();
            }
        })
        .detach();
        io::Result::Ok((raw_addr, floor_addr, ft_addr))
    })?;
    // The sessions run on smol's global executor (its own threads), the
    // servers too; the connects on this thread, as `smol::block_on` runs them.
    compare(
        rounds,
        per_round,
        &mut || {
            smol::block_on(async {
                let start = Instant::now();
                let s = TcpStream::connect(raw_addr).await?;
                s.set_nodelay(true)?;
                Ok(start.elapsed())
            })
        },
        &mut || {
            smol::block_on(async {
                use smol::io::{AsyncReadExt, AsyncWriteExt};
                let start = Instant::now();
                let mut s = TcpStream::connect(floor_addr).await?;
                s.set_nodelay(true)?;
                s.write_all(&[1]).await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                Ok(start.elapsed())
            })
        },
        &mut || {
            smol::block_on(async {
                let start = Instant::now();
                let s = FtStream::connect(ft_addr, Config::default()).await?;
                let t = start.elapsed();
                s.close().await?;
                Ok(t)
            })
        },
    )
}
