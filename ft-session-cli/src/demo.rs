//! `ft-session demo`: one process, real loopback sockets. A session server
//! and client (Tokio adapter) exchange `--size` bytes each way through the
//! testkit's fault proxy, which resets the transport about every
//! `size / KILLS` bytes and blackholes it once; every byte is checked by
//! length and sha256 on the far side. Then the same transfer over plain TCP
//! through the same faults, which fails at the first kill.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ft_session_core::Config;
use ft_session_testkit::{pattern_at, FaultPlan, FaultProxy, Sha256Tracker};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::options::parse_bytes;

/// About this many transport kills per transfer (one every `size / KILLS` bytes).
const KILLS: u64 = 16;
/// The smallest kill interval, so tiny `--size` runs still move data between kills.
const MIN_KILL_INTERVAL: u64 = 64 * 1024;
/// How long the blackhole lasts.
const BLACKHOLE_TIME: Duration = Duration::from_secs(1);
/// How often the monitor samples kills, resumes and progress.
const SAMPLE: Duration = Duration::from_millis(1);
/// Bytes written at once.
const CHUNK: usize = 64 * 1024;
/// Seeds of the two directions' data (the kill offsets use `--seed`).
const SEED_UP: u64 = 0x5eed_0001;
const SEED_DOWN: u64 = 0x5eed_0002;
/// Bound on the plain-TCP contrast run (it normally fails within a second).
const TCP_RUN_LIMIT: Duration = Duration::from_secs(120);

/// `ft-session demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Bytes to move each way (suffixes K, M, G: binary units).
    #[arg(long, default_value = "256M", value_parser = parse_bytes)]
    size: u64,
    /// Seed of the proxy's kill offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The session configuration of the demo: quick to notice the blackhole
/// (idle timeout), quick to retry while it refuses connections.
fn demo_config() -> Config {
    let mut c = Config::default();
    c.heartbeat_interval = Duration::from_millis(100);
    c.idle_timeout = Duration::from_millis(500);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

/// One side's view of an exchange.
#[derive(Debug, Clone, Default)]
struct Side {
    sent_hash: String,
    received: u64,
    received_hash: String,
}

/// Sends `size` bytes of the pattern `seed`, half-closes, and receives until
/// end of stream, hashing both; `progress` counts received bytes.
async fn exchange<R, W>(
    mut rd: R,
    mut wr: W,
    seed: u64,
    size: u64,
    progress: &AtomicU64,
) -> io::Result<Side>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let send = async {
        let mut sent = Sha256Tracker::new();
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0u64;
        while offset < size {
            let n = usize::try_from((size - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
            pattern_at(seed, offset, &mut buf[..n]);
            sent.update(&buf[..n]);
            wr.write_all(&buf[..n]).await?;
            offset += n as u64;
        }
        // futures-io close: a half-close on both a session and a TCP stream.
        wr.close().await?;
        Ok::<_, io::Error>(sent.finish())
    };
    let receive = async {
        let mut got = Sha256Tracker::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.update(&buf[..n]);
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok::<_, io::Error>((got.bytes(), got.finish()))
    };
    let (sent_hash, (received, received_hash)) =
        futures_lite::future::try_zip(send, receive).await?;
    Ok(Side {
        sent_hash,
        received,
        received_hash,
    })
}

/// What the monitor saw.
#[derive(Debug, Default)]
struct Timeline {
    /// When each fault happened (kills as the proxy counted them, the blackhole's start).
    faults: Vec<Instant>,
    /// When each resume completed (client side).
    resumes: Vec<Instant>,
    kills: u64,
    blackhole_dropped: u64,
}

impl Timeline {
    /// Per fault: time until the next resume after it.
    fn recoveries(&self) -> Vec<Duration> {
        let mut out: Vec<Duration> = self
            .faults
            .iter()
            .filter_map(|&f| self.resumes.iter().find(|&&r| r >= f).map(|&r| r - f))
            .collect();
        out.sort();
        out
    }
}

/// The fault-tolerant run's outcome.
struct FtReport {
    client: Side,
    server: Side,
    elapsed: Duration,
    timeline: Timeline,
    resumes: u64,
    retransmitted: (u64, u64),
    closed: Result<(), String>,
}

fn fault_plan(size: u64, seed: u64) -> FaultPlan {
    let every = (size / KILLS).max(MIN_KILL_INTERVAL);
    FaultPlan::random_kills(seed, every * 3 / 4, every * 5 / 4).refuse_while_blackholed(true)
}

fn progress_bar(total: u64) -> ProgressBar {
    if !io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:36}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

async fn run_ft(size: u64, seed: u64) -> io::Result<FtReport> {
    let config = demo_config();
    let listener = ft_session_tokio::FtListener::bind("127.0.0.1:0", config.clone()).await?;
    let proxy = Arc::new(FaultProxy::start(
        listener.local_addr()?,
        fault_plan(size, seed),
    )?);
    // [client→server received by the server, server→client received by the client]
    let progress = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let start = Instant::now();

    let server = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let (stream, _peer) = listener.accept().await?;
            let stream = stream.into_inner();
            let side = exchange(&stream, &stream, SEED_DOWN, size, &progress[0]).await?;
            let closed = stream.close().await;
            let retx = stream.stats().retransmitted_bytes;
            // The listener answers a client resuming to learn the outcome: keep it until here.
            drop(listener);
            Ok::<_, io::Error>((side, closed, retx))
        })
    };
    let client = Arc::new(
        ft_session_tokio::FtStream::connect(proxy.local_addr(), config)
            .await?
            .into_inner(),
    );

    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (client, proxy, progress, done) = (
            client.clone(),
            proxy.clone(),
            progress.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            let pb = progress_bar(2 * size);
            let mut t = Timeline::default();
            let mut blackhole_on: Option<Instant> = None;
            let mut blackhole_done = false;
            let mut resumes = 0;
            while !done.load(Ordering::SeqCst) {
                let now = Instant::now();
                let kills = proxy.kills();
                while t.kills < kills {
                    t.kills += 1;
                    t.faults.push(now);
                }
                let r = client.stats().reconnects;
                while resumes < r {
                    resumes += 1;
                    t.resumes.push(now);
                }
                let moved =
                    progress[0].load(Ordering::Relaxed) + progress[1].load(Ordering::Relaxed);
                // Once, halfway: the path goes silent (bytes dropped, new
                // connections refused) for BLACKHOLE_TIME.
                if !blackhole_done && blackhole_on.is_none() && moved >= size {
                    proxy.blackhole(true);
                    blackhole_on = Some(now);
                    t.faults.push(now);
                }
                if let Some(since) = blackhole_on {
                    if now - since >= BLACKHOLE_TIME {
                        proxy.blackhole(false);
                        blackhole_on = None;
                        blackhole_done = true;
                    }
                }
                pb.set_position(moved);
                pb.set_message(format!(
                    "kills {}, resumes {}{}",
                    t.kills,
                    resumes,
                    if blackhole_on.is_some() {
                        ", blackhole"
                    } else {
                        ""
                    }
                ));
                tokio::time::sleep(SAMPLE).await;
            }
            proxy.blackhole(false);
            pb.finish_and_clear();
            t.blackhole_dropped = proxy
                .bytes_dropped(ft_session_testkit::Direction::ClientToServer)
                + proxy.bytes_dropped(ft_session_testkit::Direction::ServerToClient);
            t
        })
    };

    let client_side = exchange(&*client, &*client, SEED_UP, size, &progress[1]).await;
    let client_closed = match &client_side {
        Ok(_) => client.close().await,
        Err(_) => Ok(()),
    };
    let elapsed = start.elapsed();
    let server_result = server.await.map_err(io::Error::other)?;
    done.store(true, Ordering::SeqCst);
    let timeline = monitor.await.map_err(io::Error::other)?;
    let client_side = client_side?;
    let (server_side, server_closed, server_retx) = server_result?;
    let stats = client.stats();
    let closed = match (client_closed, server_closed) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), _) => Err(format!("client close: {e}")),
        (_, Err(e)) => Err(format!("server close: {e}")),
    };
    Ok(FtReport {
        client: client_side,
        server: server_side,
        elapsed,
        timeline,
        resumes: stats.reconnects,
        retransmitted: (stats.retransmitted_bytes, server_retx),
        closed,
    })
}

/// The plain-TCP run's outcome.
struct TcpReport {
    /// Bytes received [by the server, by the client].
    received: [u64; 2],
    kills: u64,
    /// The first error, if it failed.
    error: Option<String>,
    /// Every byte arrived and matched (only possible if no kill happened).
    complete: bool,
}

async fn run_tcp(size: u64, seed: u64) -> io::Result<TcpReport> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy = FaultProxy::start(listener.local_addr()?, fault_plan(size, seed))?;
    let progress = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let server = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let (r, w) = s.split();
            exchange(
                ft_session_tokio::Compat(r),
                ft_session_tokio::Compat(w),
                SEED_DOWN,
                size,
                &progress[0],
            )
            .await
        })
    };
    let mut c = tokio::net::TcpStream::connect(proxy.local_addr()).await?;
    let (r, w) = c.split();
    let client = tokio::time::timeout(
        TCP_RUN_LIMIT,
        exchange(
            ft_session_tokio::Compat(r),
            ft_session_tokio::Compat(w),
            SEED_UP,
            size,
            &progress[1],
        ),
    )
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "stalled")));
    drop(c);
    let server = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "server stalled"))
        .and_then(|j| j.map_err(io::Error::other))
        .and_then(|r| r);
    let received = [
        progress[0].load(Ordering::Relaxed),
        progress[1].load(Ordering::Relaxed),
    ];
    let (error, complete) = match (&client, &server) {
        (Err(e), _) | (_, Err(e)) => (Some(e.to_string()), false),
        (Ok(c), Ok(s)) => {
            let ok = c.received == size
                && s.received == size
                && c.received_hash == s.sent_hash
                && s.received_hash == c.sent_hash;
            (None, ok)
        }
    };
    Ok(TcpReport {
        received,
        kills: proxy.kills(),
        error,
        complete,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// Runs the demo; exit status 0 only if every byte matched both ways.
pub fn run(args: DemoArgs) -> Result<ExitCode, String> {
    let size = args.size;
    if size == 0 {
        return Err("--size must be positive".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Tokio runtime: {e}"))?;
    let every = (size / KILLS).max(MIN_KILL_INTERVAL);
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "ft-session demo: {} each way between a session client and server on 127.0.0.1,\n\
         through a fault proxy that resets the transport about every {} and blackholes it once for {}.",
        mib(size),
        mib(every),
        ms(BLACKHOLE_TIME)
    );
    let _ = out.flush();
    drop(out);

    let ft = rt
        .block_on(run_ft(size, args.seed))
        .map_err(|e| format!("ft-session run failed: {e}"))?;
    let tcp = rt
        .block_on(run_tcp(size, args.seed))
        .map_err(|e| format!("plain TCP run could not start: {e}"))?;

    let up_ok = ft.server.received == size && ft.server.received_hash == ft.client.sent_hash;
    let down_ok = ft.client.received == size && ft.client.received_hash == ft.server.sent_hash;
    let rec = ft.timeline.recoveries();
    let yes = |b: bool| if b { "yes" } else { "NO" };
    let rows: Vec<(String, String)> = vec![
        (
            "bytes client -> server".into(),
            format!(
                "{} of {} ({})",
                ft.server.received,
                size,
                mib(ft.server.received)
            ),
        ),
        (
            "bytes server -> client".into(),
            format!(
                "{} of {} ({})",
                ft.client.received,
                size,
                mib(ft.client.received)
            ),
        ),
        (
            "sha256 match".into(),
            format!(
                "client -> server {}, server -> client {}",
                yes(up_ok),
                yes(down_ok)
            ),
        ),
        (
            "transport kills (RST)".into(),
            format!(
                "{}, plus 1 blackhole of {}",
                ft.timeline.kills,
                ms(BLACKHOLE_TIME)
            ),
        ),
        ("resumes".into(), ft.resumes.to_string()),
        (
            "bytes retransmitted".into(),
            format!(
                "{} (client {}, server {})",
                ft.retransmitted.0 + ft.retransmitted.1,
                ft.retransmitted.0,
                ft.retransmitted.1
            ),
        ),
        (
            "recovery time".into(),
            match (rec.get((rec.len().max(1) - 1) / 2), rec.last()) {
                (Some(p50), Some(max)) => format!(
                    "p50 {}, max {} (fault to resumed, {} faults)",
                    ms(*p50),
                    ms(*max),
                    rec.len()
                ),
                _ => "no fault recovered".into(),
            },
        ),
        (
            "elapsed".into(),
            format!(
                "{} ({:.0} MiB/s each way)",
                ms(ft.elapsed),
                size as f64 / (1024.0 * 1024.0) / ft.elapsed.as_secs_f64().max(1e-9)
            ),
        ),
        (
            "session close".into(),
            match &ft.closed {
                Ok(()) => "clean on both sides".into(),
                Err(e) => e.clone(),
            },
        ),
        (
            "plain TCP, same faults".into(),
            match (&tcp.error, tcp.complete) {
                (Some(e), _) => format!(
                    "FAILED at kill {}: {e}; arrived client -> server {}, server -> client {} of {}",
                    tcp.kills,
                    mib(tcp.received[0]),
                    mib(tcp.received[1]),
                    mib(size)
                ),
                (None, true) => format!("completed ({} kills happened)", tcp.kills),
                (None, false) => format!(
                    "ended early without an error: {} / {} of {} arrived",
                    mib(tcp.received[0]),
                    mib(tcp.received[1]),
                    mib(size)
                ),
            },
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = io::stdout().lock();
    let _ = writeln!(out);
    for (k, v) in &rows {
        let _ = writeln!(out, "  {k:<width$}  {v}");
    }
    let ok = up_ok && down_ok;
    let _ = writeln!(
        out,
        "\n{}",
        if ok {
            "every byte arrived, in order, unchanged: OK"
        } else {
            "MISMATCH: the stream was not delivered intact"
        }
    );
    let _ = out.flush();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
