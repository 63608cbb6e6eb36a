//! The adapter benches' connect summary: a session connect (TCP connect and
//! the session's handshake, through each adapter's own `FtStream::connect`
//! and `FtListener::bind`) beside a raw TCP connect on the same runtime, in
//! alternating rounds. The target: at most 2x a TCP connect (one
//! handshake round trip more is the floor).

use std::io;
use std::time::{Duration, Instant};

use ft_session_core::Config;
use ft_session_testkit::{alternate, median};

use crate::Runtime;

/// What [`connect_summary`](crate::connect_summary) measured: the median
/// connect times and their ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    /// Rounds measured (after one untimed round each).
    pub rounds: usize,
    /// Connects per side and round.
    pub per_round: usize,
    /// Median raw TCP connect, in µs (median over rounds of each round's median).
    pub base_us: f64,
    /// Median session connect, in µs (the same way).
    pub ft_us: f64,
    /// `ft_us / base_us`: how many TCP connects a session connect costs.
    pub ratio: f64,
    /// Median of the per-round ratios.
    pub round_median: f64,
    /// Smallest per-round ratio.
    pub round_min: f64,
    /// Largest per-round ratio.
    pub round_max: f64,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rounds x {} connects, medians: raw {:.1} µs, ft {:.1} µs; ratio ft/raw = {:.2} \
             (median of per-round ratios {:.2}, range {:.2}-{:.2})",
            self.rounds,
            self.per_round,
            self.base_us,
            self.ft_us,
            self.ratio,
            self.round_median,
            self.round_min,
            self.round_max
        )
    }
}

/// `rounds` alternating rounds of `per_round` timed operations each; a
/// round's figure is the median of its operations (in µs).
fn compare(
    rounds: usize,
    per_round: usize,
    mut base: impl FnMut() -> io::Result<Duration>,
    mut ft: impl FnMut() -> io::Result<Duration>,
) -> io::Result<LatencySummary> {
    let mut err = None;
    let mut round = |op: &mut dyn FnMut() -> io::Result<Duration>| -> f64 {
        let mut v: Vec<f64> = (0..per_round)
            .filter_map(|_| match op() {
                Ok(d) => Some(d.as_secs_f64() * 1e6),
                Err(e) => {
                    err.get_or_insert(e);
                    None
                }
            })
            .collect();
        median(&mut v)
    };
    let pairs = {
        let round = std::cell::RefCell::new(&mut round);
        alternate(
            rounds,
            || (round.borrow_mut())(&mut base),
            || (round.borrow_mut())(&mut ft),
        )
    };
    if let Some(e) = err {
        return Err(e);
    }
    let (mut b, mut f, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for (tb, tf) in pairs {
        b.push(tb);
        f.push(tf);
        r.push(tf / tb);
    }
    let (mb, mf) = (median(&mut b), median(&mut f));
    Ok(LatencySummary {
        rounds,
        per_round,
        base_us: mb,
        ft_us: mf,
        ratio: mf / mb,
        round_median: median(&mut r),
        round_min: r.iter().copied().fold(f64::INFINITY, f64::min),
        round_max: r.iter().copied().fold(0.0, f64::max),
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
    let l = FtListener::bind("127.0.0.1:0", Config::default())?;
    let ft_addr = l.local_addr()?;
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = l.accept() {
            // Read until the client's close, then close: a session the
            // server closes at once may finish before the client's connect
            // returns, which then fails with `Closed`.
            std::thread::spawn(move || {
                let _ = io::copy(&mut s, &mut io::sink());
            });
        }
    });
    compare(
        rounds,
        per_round,
        || {
            let start = Instant::now();
            let s = TcpStream::connect(raw_addr)?;
            s.set_nodelay(true)?;
            Ok(start.elapsed())
        },
        || {
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
    let (raw_addr, ft_addr) = rt.block_on(async {
        let raw = TcpListener::bind("127.0.0.1:0").await?;
        let raw_addr = raw.local_addr()?;
        tokio::spawn(async move {
            while let Ok((s, _)) = raw.accept().await {
                drop(s);
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
        io::Result::Ok((raw_addr, ft_addr))
    })?;
    // The connects run in `block_on` on this thread, the sessions' and the
    // servers' tasks on the runtime's workers.
    compare(
        rounds,
        per_round,
        || {
            rt.block_on(async {
                let start = Instant::now();
                let s = TcpStream::connect(raw_addr).await?;
                s.set_nodelay(true)?;
                Ok(start.elapsed())
            })
        },
        || {
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

    let (raw_addr, ft_addr) = smol::block_on(async {
        let raw = TcpListener::bind("127.0.0.1:0").await?;
        let raw_addr = raw.local_addr()?;
        smol::spawn(async move {
            while let Ok((s, _)) = raw.accept().await {
                drop(s);
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
        io::Result::Ok((raw_addr, ft_addr))
    })?;
    // The sessions run on smol's global executor (its own threads), the
    // servers too; the connects on this thread, as `smol::block_on` runs them.
    compare(
        rounds,
        per_round,
        || {
            smol::block_on(async {
                let start = Instant::now();
                let s = TcpStream::connect(raw_addr).await?;
                s.set_nodelay(true)?;
                Ok(start.elapsed())
            })
        },
        || {
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
