//! # ft-session-bench
//!
//! The paper's experiments, measured for ft-session on every runtime (std,
//! Tokio, smol) side by side with raw TCP on the same runtime, in one
//! process and one run: raw and session runs alternate (A B, B A, ...) and
//! every figure is reported as medians and the ratio session/raw. This is
//! the library behind `ft-session bench`; `cargo run --release -p
//! ft-session-bench --example bench -- --quick` runs it without the CLI.
//!
//! | experiment | what | metric |
//! |---|---|---|
//! | `bulk` (E1) | one way over loopback in 64 KiB writes, Ack and Implicit policies, copying write path | GiB/s |
//! | `latency` (E2) | 20-byte request, 20-byte reply, 1/100/1,000 concurrent clients, service time 0/1/2 ms | RTT p50, p99 (µs) |
//! | `pipelined` (E3) | 100,000 20-byte requests without waiting, one reply after the last | requests/s |
//! | `recovery` (E4) | kill the transport mid-transfer (proxy RST, `ss -K`) | kill → reconnected, kill → every byte written before the kill delivered (ms), p50 and max |
//! | `footprint` (E5) | 1/100/1,000 (10,000 with `full`) idle sessions, then 100 requests/s each; the clients in a second process where the binary allows ([`child_main`]) | connects/s, RSS per session of the server and of the client process (bytes), CPU (%) |
//! | `core` (E6) | the in-memory session pair against memcpy | GiB/s |
//!
//! Every socket has `TCP_NODELAY` and the congestion control `reno` (set per
//! socket and read back; [`Options::congestion`]), because this machine's
//! BBR settles per loopback connection into a fast or a slow mode. The
//! sessions therefore run over sockets the bench makes, through the public
//! transport hooks of each adapter (`ft_session_async::connect` and
//! `ft_session_async::Listener::new` with the Tokio and smol runtimes of the
//! adapter crates; `FtStream::connect_with` and `FtListener::from_incoming`
//! for std), set up the way the adapters' own `connect`/`bind` set up theirs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod asyncx;
mod connectx;
mod corex;
mod exec;
mod exp;
mod footprint;
mod net;
mod plot;
mod stdx;
mod util;

use std::fmt::Write as _;
use std::path::PathBuf;

pub use connectx::{Baseline, LatencySummary};
pub use plot::write_plots;

/// How long a run takes: sizes, rounds and client counts scale with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Seconds: checks that every experiment runs and reports (tests).
    Tiny,
    /// Under 2 minutes on 2 cores: few rounds, smaller transfers.
    Quick,
    /// The default: more rounds, 256 MiB transfers.
    Normal,
    /// The method: 1 GiB transfers, 20 rounds, 10,000 sessions.
    Full,
}

/// One of the experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experiment {
    /// E1: bulk throughput.
    Bulk,
    /// E2: request/reply latency under concurrent clients.
    Latency,
    /// E3: pipelined requests.
    Pipelined,
    /// E4: time to recover from a transport kill.
    Recovery,
    /// E5: memory and CPU per session.
    Footprint,
    /// E6: the in-memory core against memcpy.
    Core,
}

impl Experiment {
    /// Every experiment, in report order.
    pub const ALL: [Experiment; 6] = [
        Experiment::Bulk,
        Experiment::Latency,
        Experiment::Pipelined,
        Experiment::Recovery,
        Experiment::Footprint,
        Experiment::Core,
    ];

    /// The name used in the report and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Bulk => "bulk",
            Experiment::Latency => "latency",
            Experiment::Pipelined => "pipelined",
            Experiment::Recovery => "recovery",
            Experiment::Footprint => "footprint",
            Experiment::Core => "core",
        }
    }

    /// Parses [`Experiment::name`] (also `e1`..`e6`).
    pub fn parse(s: &str) -> Option<Experiment> {
        let s = s.to_ascii_lowercase();
        Experiment::ALL
            .into_iter()
            .enumerate()
            .find(|(i, e)| e.name() == s || format!("e{}", i + 1) == s)
            .map(|(_, e)| e)
    }
}

/// A runtime the session runs on (raw TCP runs on the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Blocking std threads (`ft-session-std`).
    Std,
    /// Tokio (`ft-session-tokio`).
    Tokio,
    /// smol (`ft-session-smol`).
    Smol,
}

impl Runtime {
    /// Every runtime, in report order.
    pub const ALL: [Runtime; 3] = [Runtime::Std, Runtime::Tokio, Runtime::Smol];

    /// The name used in the report and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Std => "std",
            Runtime::Tokio => "tokio",
            Runtime::Smol => "smol",
        }
    }

    /// Parses [`Runtime::name`].
    pub fn parse(s: &str) -> Option<Runtime> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.name() == s.to_ascii_lowercase())
    }
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sizes and rounds.
    pub mode: Mode,
    /// Pins the server side to one core and the client side to another.
    pub pin: bool,
    /// Experiments to run (all when empty).
    pub experiments: Vec<Experiment>,
    /// Runtimes to run them on (all when empty).
    pub runtimes: Vec<Runtime>,
    /// Congestion control for every socket (`None`: the system's default).
    pub congestion: Option<String>,
    /// Prints one line per measurement to stderr while running.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Normal,
            pin: false,
            experiments: Vec::new(),
            runtimes: Vec::new(),
            congestion: Some("reno".to_string()),
            progress: false,
        }
    }
}

impl Options {
    fn experiments(&self) -> Vec<Experiment> {
        if self.experiments.is_empty() {
            Experiment::ALL.to_vec()
        } else {
            self.experiments.clone()
        }
    }

    fn runtimes(&self) -> Vec<Runtime> {
        if self.runtimes.is_empty() {
            Runtime::ALL.to_vec()
        } else {
            self.runtimes.clone()
        }
    }
}

/// Whether a larger or a smaller figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughputs.
    Higher,
    /// Times, memory, CPU.
    Lower,
}

/// One figure: raw TCP and the session on one runtime, same run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `bulk`, `latency`, ...
    pub experiment: String,
    /// `std`, `tokio`, `smol`, or `core`.
    pub runtime: String,
    /// What varies inside an experiment (`ack/copy`, `clients=100/service=1ms`...).
    pub variant: String,
    /// What is measured (`throughput`, `rtt_p50`...).
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// Raw TCP's median (memcpy for `core`), or `None` where there is none.
    pub raw: Option<f64>,
    /// The session's median.
    pub session: f64,
    /// session/raw: the median of per-round ratios where rounds alternate,
    /// otherwise the ratio of the medians; `None` without a raw figure.
    pub ratio: Option<f64>,
}

/// Something that could not be measured, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The experiment.
    pub experiment: String,
    /// The runtime.
    pub runtime: String,
    /// Why.
    pub reason: String,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The figures, in the order measured.
    pub rows: Vec<Row>,
    /// What was not measured.
    pub skipped: Vec<Skipped>,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
}

fn num(v: Option<f64>) -> serde_json::Value {
    match v {
        Some(x) if x.is_finite() => serde_json::json!((x * 1e4).round() / 1e4),
        _ => serde_json::Value::Null,
    }
}

impl Report {
    /// The report as one JSON object: `{"experiments": [{"experiment":
    /// "bulk", "runtime": "tokio", "variant": "ack/copy", "metric":
    /// "throughput", "unit": "GiB/s", "better": "higher", "raw": 3.1,
    /// "session": 3.0, "ratio": 0.97}, ...]}` (`raw` and `ratio` null where
    /// there is no raw figure).
    pub fn to_json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "experiment": r.experiment,
                    "runtime": r.runtime,
                    "variant": r.variant,
                    "metric": r.metric,
                    "unit": r.unit,
                    "better": match r.better { Better::Higher => "higher", Better::Lower => "lower" },
                    "raw": num(r.raw),
                    "session": num(Some(r.session)),
                    "ratio": num(r.ratio),
                })
            })
            .collect();
        serde_json::json!({ "experiments": rows }).to_string()
    }

    /// The report as a Markdown table (what docs/BENCHMARKS.md shows).
    pub fn to_table(&self) -> String {
        let mut s = String::from(
            "| experiment | runtime | variant | metric | raw | session | session/raw |\n|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let f = |v: Option<f64>| match v {
                Some(x) if x.is_finite() => fmt_num(x),
                _ => "–".to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} ({}, {} is better) | {} | {} | {} |",
                r.experiment,
                r.runtime,
                r.variant,
                r.metric,
                r.unit,
                match r.better {
                    Better::Higher => "higher",
                    Better::Lower => "lower",
                },
                f(r.raw),
                f(Some(r.session)),
                r.ratio
                    .filter(|x| x.is_finite())
                    .map_or("–".to_string(), |x| format!("{x:.3}")),
            );
        }
        for k in &self.skipped {
            let _ = writeln!(
                s,
                "\nnot measured: {} on {}: {}",
                k.experiment, k.runtime, k.reason
            );
        }
        s
    }
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// Collects rows while the experiments run.
pub(crate) struct Sink {
    pub(crate) report: Report,
    progress: bool,
}

impl Sink {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn row(
        &mut self,
        experiment: &str,
        runtime: &str,
        variant: &str,
        metric: &str,
        unit: &str,
        better: Better,
        raw: Option<f64>,
        session: f64,
        ratio: Option<f64>,
    ) {
        let row = Row {
            experiment: experiment.into(),
            runtime: runtime.into(),
            variant: variant.into(),
            metric: metric.into(),
            unit: unit.into(),
            better,
            raw,
            session,
            ratio,
        };
        if self.progress {
            eprintln!(
                "{:<9} {:<5} {:<28} {:<14} raw {:>10} session {:>10} ratio {} {}",
                row.experiment,
                row.runtime,
                row.variant,
                row.metric,
                raw.map_or("-".into(), fmt_num),
                fmt_num(session),
                ratio.map_or("-".into(), |r| format!("{r:.3}")),
                row.unit
            );
        }
        self.report.rows.push(row);
    }

    pub(crate) fn skip(&mut self, experiment: &str, runtime: &str, reason: String) {
        if self.progress {
            eprintln!("{experiment:<9} {runtime:<5} not measured: {reason}");
        }
        self.report.skipped.push(Skipped {
            experiment: experiment.into(),
            runtime: runtime.into(),
            reason,
        });
    }
}

/// Call first in `main` of a binary that calls [`run`]. If the bench
/// started this process as E5's client process (it starts its own binary
/// again, with an environment variable saying what to connect to), this
/// serves the bench and exits the process. Otherwise it returns, and E5 may
/// then put its clients in such a child process, so that the bench process
/// holds only the server ends (10,000 sessions in a 20,000-descriptor
/// limit) and each side's memory is measured on its own. Without this call
/// (a test harness) E5 keeps both ends in the bench process.
pub fn child_main() {
    let Ok(spec) = std::env::var(footprint::CHILD_ENV) else {
        footprint::CAN_SPAWN.store(true, std::sync::atomic::Ordering::SeqCst);
        return;
    };
    net::raise_fd_limit();
    let r =
        footprint::parse_spec(&spec).and_then(|(runtime, kind, addr, o)| {
            match Runtime::parse(&runtime) {
                Some(Runtime::Std) => stdx::clients(&kind, addr, &o),
                Some(Runtime::Tokio) => asyncx::clients(exec::Tokio::new(false)?, &kind, addr, &o),
                Some(Runtime::Smol) => asyncx::clients(exec::Smol::new(false)?, &kind, addr, &o),
                None => Err(std::io::Error::other(format!("unknown runtime {runtime}"))),
            }
        });
    if let Err(e) = r {
        eprintln!("ft-session bench client process: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// Runs the chosen experiments on the chosen runtimes and returns the
/// figures. Failures of one measurement are reported in
/// [`Report::skipped`], not as a panic.
pub fn run(opts: &Options) -> Report {
    let start = std::time::Instant::now();
    let scale = util::Scale::of(opts.mode);
    net::raise_fd_limit();
    let mut sink = Sink {
        report: Report::default(),
        progress: opts.progress,
    };
    let ctx = Ctx {
        scale,
        cc: opts.congestion.clone(),
        pin: opts.pin,
    };
    for e in opts.experiments() {
        if e == Experiment::Core {
            corex::run(&ctx, &mut sink);
            continue;
        }
        for rt in opts.runtimes() {
            let r = match rt {
                Runtime::Std => stdx::run(e, &ctx, &mut sink),
                Runtime::Tokio => {
                    exec::Tokio::new(ctx.pin).and_then(|ex| asyncx::run(ex, e, &ctx, &mut sink))
                }
                Runtime::Smol => {
                    exec::Smol::new(ctx.pin).and_then(|ex| asyncx::run(ex, e, &ctx, &mut sink))
                }
            };
            if let Err(err) = r {
                sink.skip(e.name(), rt.name(), format!("failed: {err}"));
            }
        }
    }
    sink.report.seconds = start.elapsed().as_secs_f64();
    sink.report
}

/// The adapter benches' bulk summary on `runtime` (each crate's `benches/bulk.rs`
/// prints it): `rounds` alternating transfers of `bytes`, for raw TCP vs the
/// session under Ack, pinned raw TCP vs the session under Implicit, and the
/// Ack session vs the Implicit one; a label and the testkit's summary each.
pub fn bulk_summary(
    runtime: Runtime,
    rounds: usize,
    bytes: u64,
    congestion: Option<String>,
) -> std::io::Result<Vec<(String, ft_session_testkit::RatioSummary)>> {
    net::raise_fd_limit();
    match runtime {
        Runtime::Std => stdx::bulk_summary(false, rounds, bytes, &congestion),
        Runtime::Tokio => {
            asyncx::bulk_summary(exec::Tokio::new(false)?, rounds, bytes, &congestion)
        }
        Runtime::Smol => asyncx::bulk_summary(exec::Smol::new(false)?, rounds, bytes, &congestion),
    }
}

/// The adapter benches' connect summary on `runtime`: `rounds` rounds of
/// `per_round` raw TCP connects, `per_round` floor operations (a TCP
/// connect and one 1-byte round trip with a server thread or task) and
/// `per_round` session connects (TCP connect and the session's first
/// handshake through the adapter's own `FtStream::connect` /
/// `FtListener::bind`, on loopback, default `Config`), in an order rotating
/// from round to round; each round's figure the median of its operations.
/// The graceful close after each session connect is not timed.
pub fn connect_summary(
    runtime: Runtime,
    rounds: usize,
    per_round: usize,
) -> std::io::Result<LatencySummary> {
    connectx::run(runtime, rounds, per_round.max(1))
}

/// Whether the adapter benches print the summary `which` (`"bulk"` or
/// `"connect"`): `FT_BENCH_SUMMARY` unset or any other value prints both,
/// `0` neither, `bulk` or `connect` only that one.
pub fn summary_wanted(which: &str) -> bool {
    match std::env::var("FT_BENCH_SUMMARY").as_deref() {
        Ok("0") => false,
        Ok(v @ ("bulk" | "connect")) => v == which,
        _ => true,
    }
}

/// Prints the connect summary of `runtime` (see [`connect_summary`]) as
/// every adapter's bench does: `FT_BENCH_ROUNDS` rounds (default 20) of
/// `FT_BENCH_CONNECTS` connects per side (default 50).
pub fn print_connect_summary(runtime: Runtime) -> std::io::Result<()> {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (rounds, per_round) = (env("FT_BENCH_ROUNDS", 20), env("FT_BENCH_CONNECTS", 50));
    println!("\n== connect summary ({}) ==", runtime.name());
    let s = connect_summary(runtime, rounds, per_round)?;
    println!("{s}");
    Ok(())
}

/// The congestion control the benches use: `FT_BENCH_CC` (`system` for the
/// system's default), else `reno`.
pub fn congestion_from_env() -> Option<String> {
    match std::env::var("FT_BENCH_CC") {
        Ok(v) if v == "system" => None,
        Ok(v) => Some(v),
        Err(_) => Some("reno".to_string()),
    }
}

/// What every experiment needs to know.
pub(crate) struct Ctx {
    pub(crate) scale: util::Scale,
    pub(crate) cc: Option<String>,
    pub(crate) pin: bool,
}

/// Parses the bench's command-line flags (shared by the CLI's `bench`
/// subcommand and the example): `--quick`, `--full`, `--tiny`, `--pin`,
/// `--json`, `--plots DIR`, `--only e1,latency`, `--runtimes std,tokio`,
/// `--cc NAME|system`, `--progress`. Returns the options, whether JSON was
/// asked for, and the plot directory.
pub fn parse_args<I: IntoIterator<Item = String>>(
    args: I,
) -> Result<(Options, bool, Option<PathBuf>), String> {
    let mut o = Options::default();
    let (mut json, mut plots) = (false, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.mode = Mode::Quick,
            "--full" => o.mode = Mode::Full,
            "--tiny" => o.mode = Mode::Tiny,
            "--pin" => o.pin = true,
            "--json" => json = true,
            "--progress" => o.progress = true,
            "--plots" => plots = Some(PathBuf::from(it.next().ok_or("--plots needs a directory")?)),
            "--cc" => {
                let v = it.next().ok_or("--cc needs a name or `system`")?;
                o.congestion = (v != "system").then_some(v);
            }
            "--only" => {
                let v = it.next().ok_or("--only needs experiments")?;
                for name in v.split(',') {
                    o.experiments
                        .push(Experiment::parse(name).ok_or(format!("unknown experiment {name}"))?);
                }
            }
            "--runtimes" => {
                let v = it.next().ok_or("--runtimes needs runtimes")?;
                for name in v.split(',') {
                    o.runtimes
                        .push(Runtime::parse(name).ok_or(format!("unknown runtime {name}"))?);
                }
            }
            other => return Err(format!("unknown bench option {other}")),
        }
    }
    Ok((o, json, plots))
}

/// The usage text of [`parse_args`]'s flags.
pub const USAGE: &str = "\
bench [--quick|--full|--tiny] [--pin] [--json] [--plots DIR] [--progress]
      [--only bulk,latency,pipelined,recovery,footprint,core] [--runtimes std,tokio,smol]
      [--cc reno|cubic|system]
  Runs the paper's experiments for raw TCP and ft-session on each runtime,
  alternating raw and session runs, and prints medians and session/raw ratios
  (a Markdown table, or one JSON object with --json).";
