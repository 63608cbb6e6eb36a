//! E5 `footprint`: memory and CPU per connection with many connections
//! open, raw TCP beside the session on the same runtime.
//!
//! Two setups. Where the binary lets the bench start a copy of itself
//! ([`crate::child_main`], called first by the `ft-session` CLI and the
//! bench example), the clients run in a child process: the bench process
//! holds only the server ends (so 10,000 sessions fit in a 20,000-descriptor
//! limit), and each process's RSS growth is measured per session on its own
//! (`VmRSS` of /proc/self/status and /proc/PID/status). Elsewhere (a test
//! harness) both ends live in the bench process, as before, and the RSS
//! growth is per connection end, the two ends together.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ft_session_core::ReleasePolicy;

use crate::exp::{session, Kind, Net, Service, LOAD_PERIOD};
use crate::net::SockOpts;
use crate::util::{cpu_time, settled_rss};
use crate::{Better, Ctx, Sink};

/// The environment variable that makes a bench binary E5's client process:
/// `RUNTIME KIND ADDR CC` (`KIND` is `raw` or `session`, `CC` `-` for the
/// system's congestion control).
pub(crate) const CHILD_ENV: &str = "FT_SESSION_BENCH_E5_CLIENTS";

/// Set by [`crate::child_main`]: this binary can be started as the client process.
pub(crate) static CAN_SPAWN: AtomicBool = AtomicBool::new(false);

/// Connections opened per step, so a slowing connect rate shows (`--progress`).
const CONNECT_STEP: usize = 1000;

/// How long the client process may take to answer one command: 10,000
/// connects on a loaded machine take a minute or two.
const CHILD_TIMEOUT: Duration = Duration::from_secs(600);

/// E5's figures at one connection count.
#[derive(Debug, Clone, Copy, Default)]
struct Footprint {
    /// RSS growth per connection since the previous count, bytes: the bench
    /// process's (server ends; both ends in one process: per end).
    server: f64,
    /// The client process's, per connection (`None` in one process).
    client: Option<f64>,
    /// Connections opened per second up to this count.
    connect_rate: f64,
    /// CPU of the processes with every connection idle, %.
    idle: f64,
    /// CPU with each connection making 100 requests/s, %.
    busy: f64,
    /// Requests/s achieved under that load.
    rps: f64,
}

/// RSS growth per connection end and CPU, idle and under load, at each
/// count of connections to `addr`, with the clients in this process.
fn in_process<N: Net>(
    net: &N,
    kind: &Kind,
    addr: SocketAddr,
    o: &SockOpts,
    counts: &[usize],
    window: Duration,
) -> io::Result<Vec<Footprint>> {
    let mut conns = Vec::new();
    let mut out = Vec::new();
    let mut rss_prev = settled_rss();
    for &n in counts {
        let added = n.saturating_sub(conns.len());
        let t = Instant::now();
        let mut new = net.connect(kind, addr, o, added)?;
        let connect_rate = added as f64 / t.elapsed().as_secs_f64();
        // One request each, so every server end has run once.
        net.rtt_round(&mut new, Duration::ZERO, 1)?;
        conns.append(&mut new);
        let rss = settled_rss();
        let server = rss.saturating_sub(rss_prev) as f64 / (2 * added.max(1)) as f64;
        let c0 = cpu_time().unwrap_or_default();
        std::thread::sleep(window);
        let idle = percent(cpu_time().unwrap_or_default() - c0, window);
        let (busy, rps) = net.load(&mut conns, LOAD_PERIOD, window)?;
        out.push(Footprint {
            server,
            client: None,
            connect_rate,
            idle,
            busy,
            rps,
        });
        rss_prev = settled_rss();
    }
    let n = conns.len();
    drop(conns);
    // Let closes finish before the next set is measured.
    std::thread::sleep(Duration::from_millis(100 + n as u64 / 10));
    Ok(out)
}

fn percent(cpu: Duration, over: Duration) -> f64 {
    cpu.as_secs_f64() / over.as_secs_f64() * 100.0
}

/// The client process, as the bench process sees it.
struct Clients {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: std::sync::mpsc::Receiver<io::Result<String>>,
}

impl Clients {
    /// Starts this binary again as the client process of `kind` on `runtime`.
    fn spawn(runtime: &str, kind: &Kind, addr: SocketAddr, o: &SockOpts) -> io::Result<Clients> {
        let kind = match kind {
            Kind::Raw => "raw",
            _ => "session",
        };
        let cc = o.cc.as_deref().unwrap_or("-");
        let mut child = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, format!("{runtime} {kind} {addr} {cc}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        // A reader thread, so a silent child cannot hang the bench.
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Clients {
            child,
            stdin,
            replies,
        })
    }

    /// Sends one command and waits for its `ok ...` reply (the numbers after `ok`).
    fn ask(&mut self, cmd: &str) -> io::Result<Vec<f64>> {
        self.send(cmd)?;
        self.reply(cmd)
    }

    fn send(&mut self, cmd: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("client process closed"))?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()
    }

    /// The reply to the command `cmd`.
    fn reply(&mut self, cmd: &str) -> io::Result<Vec<f64>> {
        let line = match self.replies.recv_timeout(CHILD_TIMEOUT) {
            Ok(line) => line?,
            Err(_) => {
                return Err(io::Error::other(format!(
                    "client process: no reply to {cmd}"
                )))
            }
        };
        match line.strip_prefix("ok") {
            Some(rest) => Ok(rest
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()),
            None => Err(io::Error::other(format!("client process: {line}"))),
        }
    }

    /// The client process's RSS, bytes.
    fn rss(&self) -> u64 {
        crate::util::rss_of(&format!("/proc/{}/status", self.child.id())).unwrap_or(0)
    }

    /// The client process's CPU time so far.
    fn cpu(&self) -> Duration {
        crate::util::cpu_time_of(&format!("/proc/{}/stat", self.child.id())).unwrap_or_default()
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        // End of input: the child closes its connections and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`in_process`] with the clients in a child process: the growth of each
/// process's RSS per connection, the connect rate, and both processes' CPU.
fn two_processes<N: Net>(
    net: &N,
    kind: &Kind,
    addr: SocketAddr,
    o: &SockOpts,
    counts: &[usize],
    window: Duration,
    progress: bool,
) -> io::Result<Vec<Footprint>> {
    let mut clients = Clients::spawn(net.name(), kind, addr, o)?;
    let mut out = Vec::new();
    let mut open = 0;
    let (mut server_prev, mut client_prev) = (settled_rss(), clients.rss());
    for &n in counts {
        let added = n.saturating_sub(open);
        let t = Instant::now();
        while open < n {
            let step = (n - open).min(CONNECT_STEP);
            let s = Instant::now();
            clients.ask(&format!("connect {step}"))?;
            open += step;
            if progress && step == CONNECT_STEP {
                eprintln!(
                    "footprint {:<5} {:<7} {open:>6} open, {:.0} connects/s (server RSS {} MiB)",
                    net.name(),
                    if matches!(kind, Kind::Raw) {
                        "raw"
                    } else {
                        "session"
                    },
                    step as f64 / s.elapsed().as_secs_f64(),
                    crate::util::rss_bytes().unwrap_or(0) >> 20,
                );
            }
        }
        let connect_rate = added as f64 / t.elapsed().as_secs_f64();
        let (server_rss, client_rss) = (settled_rss(), clients.rss());
        let per = |now: u64, prev: u64| now.saturating_sub(prev) as f64 / added.max(1) as f64;
        let (server, client) = (per(server_rss, server_prev), per(client_rss, client_prev));
        let (s0, c0) = (cpu_time().unwrap_or_default(), clients.cpu());
        std::thread::sleep(window);
        let (s1, c1) = (cpu_time().unwrap_or_default(), clients.cpu());
        let idle = percent(s1 - s0 + (c1 - c0), window);
        // The child loads for 10 periods, then measures over `window`; the
        // server's CPU is measured over the same window here meanwhile.
        let period = LOAD_PERIOD;
        clients.send(&format!(
            "load {} {}",
            period.as_micros(),
            window.as_micros()
        ))?;
        std::thread::sleep(period * 10);
        let a = cpu_time().unwrap_or_default();
        std::thread::sleep(window);
        let server_busy = cpu_time().unwrap_or_default() - a;
        let load = clients.reply("load")?;
        let (client_busy, rps) = (load.first().copied(), load.get(1).copied());
        out.push(Footprint {
            server,
            client: Some(client),
            connect_rate,
            idle,
            busy: percent(server_busy, window) + client_busy.unwrap_or(0.0),
            rps: rps.unwrap_or(0.0),
        });
        server_prev = settled_rss();
        client_prev = clients.rss();
    }
    drop(clients);
    // Let the server ends see their clients go before the next set.
    std::thread::sleep(Duration::from_millis(100 + open as u64 / 10));
    Ok(out)
}

/// The client process's side: reads `connect N` and `load PERIOD_US
/// WINDOW_US` from stdin, answers `ok` (`ok CPU% REQUESTS/S` for a load)
/// or `err MESSAGE` on stdout, until end of input.
pub(crate) fn serve_parent<N: Net>(
    net: &N,
    kind: &Kind,
    addr: SocketAddr,
    o: &SockOpts,
) -> io::Result<()> {
    let mut conns = Vec::new();
    let mut out = io::stdout().lock();
    for line in io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        let reply = match (line.split_whitespace().next(), words.as_slice()) {
            (Some("connect"), &[n]) => (|| {
                let mut new = net.connect(kind, addr, o, n as usize)?;
                // One request each, so every end has run its read path.
                net.rtt_round(&mut new, Duration::ZERO, 1)?;
                conns.append(&mut new);
                Ok("ok".to_string())
            })(),
            (Some("load"), &[period, window]) => net
                .load(
                    &mut conns,
                    Duration::from_micros(period),
                    Duration::from_micros(window),
                )
                .map(|(cpu, rps)| format!("ok {cpu} {rps}")),
            _ => Err(io::Error::other(format!("unknown command {line:?}"))),
        };
        let failed = reply.is_err();
        writeln!(out, "{}", reply.unwrap_or_else(|e| format!("err {e}")))?;
        out.flush()?;
        if failed {
            break;
        }
    }
    let n = conns.len();
    drop(conns);
    // Sessions close in the background: give them a moment before exiting.
    std::thread::sleep(Duration::from_millis(100 + n as u64 / 10));
    Ok(())
}

/// Parses [`CHILD_ENV`]: runtime, kind, address, socket options.
pub(crate) fn parse_spec(spec: &str) -> io::Result<(String, Kind, SocketAddr, SockOpts)> {
    let bad = || io::Error::other(format!("bad {CHILD_ENV}: {spec:?}"));
    let w: Vec<&str> = spec.split_whitespace().collect();
    let [runtime, kind, addr, cc] = w.as_slice() else {
        return Err(bad());
    };
    let kind = match *kind {
        "raw" => Kind::Raw,
        "session" => session(ReleasePolicy::Ack),
        _ => return Err(bad()),
    };
    let addr = addr.parse().map_err(|_| bad())?;
    let o = SockOpts {
        cc: (*cc != "-").then(|| cc.to_string()),
        pin: None,
    };
    Ok((runtime.to_string(), kind, addr, o))
}

/// E5: RSS per connection and process CPU with 1, 100, 1,000 (10,000)
/// connections, idle and at 100 requests/s each; raw TCP first, then
/// sessions (idle sessions retain no bytes once acknowledged, so the
/// session's figure is its cost beyond retained bytes).
pub(crate) fn run<N: Net>(net: &N, ctx: &Ctx, sink: &mut Sink) -> io::Result<()> {
    let o = SockOpts {
        cc: ctx.cc.clone(),
        pin: None,
    };
    let kind = session(ReleasePolicy::Ack);
    let raw_srv = net.serve(&Kind::Raw, &o, Service::Echo)?;
    let ses_srv = net.serve(&kind, &o, Service::Echo)?;
    let split = CAN_SPAWN.load(Ordering::SeqCst);
    let (max, why) = net.max_conns();
    // Descriptors per process: server ends only, or both ends.
    let fds = if split {
        crate::net::max_ends()
    } else {
        crate::net::max_pairs()
    };
    // Past the open-file limit, the most that fits (in hundreds) stands in.
    let fit = fds.saturating_sub(64) / 100 * 100;
    let mut counts: Vec<usize> = Vec::new();
    for &n in &ctx.scale.sessions {
        if n > max {
            sink.skip("footprint", net.name(), format!("{n} sessions: {why}"));
        } else if n > fit {
            sink.skip(
                "footprint",
                net.name(),
                format!("{n} sessions: the open-file limit allows {fit}, measured instead"),
            );
            counts.push(fit);
        } else {
            counts.push(n);
        }
    }
    counts.dedup();
    let w = ctx.scale.window;
    let (raw, ses) = if split {
        let p = sink.progress;
        (
            two_processes(net, &Kind::Raw, raw_srv.addr, &o, &counts, w, p)?,
            two_processes(net, &kind, ses_srv.addr, &o, &counts, w, p)?,
        )
    } else {
        (
            in_process(net, &Kind::Raw, raw_srv.addr, &o, &counts, w)?,
            in_process(net, &kind, ses_srv.addr, &o, &counts, w)?,
        )
    };
    let ratio = |a: f64, b: f64| if a > 0.0 { Some(b / a) } else { None };
    let mut prev = 0;
    let name = net.name();
    for ((n, r), s) in counts.iter().zip(raw).zip(ses) {
        let grown = format!("sessions={prev}->{n}");
        let mut rows = vec![(
            "connect",
            "connects_per_s",
            "1/s",
            Better::Higher,
            r.connect_rate,
            s.connect_rate,
        )];
        match (r.client, s.client) {
            (Some(rc), Some(sc)) => {
                rows.push((
                    "idle",
                    "rss_per_session_server",
                    "bytes",
                    Better::Lower,
                    r.server,
                    s.server,
                ));
                rows.push((
                    "idle",
                    "rss_per_session_client",
                    "bytes",
                    Better::Lower,
                    rc,
                    sc,
                ));
            }
            _ => rows.push((
                "idle",
                "rss_per_end",
                "bytes",
                Better::Lower,
                r.server,
                s.server,
            )),
        }
        for (load, metric, unit, better, a, b) in rows {
            sink.row(
                "footprint",
                name,
                &format!("{grown}/{load}"),
                metric,
                unit,
                better,
                Some(a),
                b,
                ratio(a, b),
            );
        }
        prev = *n;
        let variant = format!("sessions={n}");
        for (load, metric, unit, better, a, b) in [
            ("idle", "cpu", "%", Better::Lower, r.idle, s.idle),
            ("100rps-each", "cpu", "%", Better::Lower, r.busy, s.busy),
            (
                "100rps-each",
                "requests_per_s",
                "1/s",
                Better::Higher,
                r.rps,
                s.rps,
            ),
        ] {
            sink.row(
                "footprint",
                name,
                &format!("{variant}/{load}"),
                metric,
                unit,
                better,
                Some(a),
                b,
                ratio(a, b),
            );
        }
    }
    Ok(())
}
