//! The experiments E1-E5, written once over [`Net`]: what a runtime must do
//! (serve, connect, move bytes), while the order of runs, the statistics and
//! the rows are decided here for every runtime alike.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ft_session_core::{Config, ReleasePolicy, SocketOptions};
use ft_session_testkit::{
    alternate, compare_alternating, median, FaultPlan, FaultProxy, RatioSummary,
};
use smol::channel::{Receiver, Sender};

use crate::net::SockOpts;
use crate::util::{quantile, summarize};
use crate::{Better, Ctx, Experiment, Sink};

/// Request and reply size of E2, E3 and E5 (the paper's 20 bytes).
pub(crate) const REQ: usize = 20;
/// Write and read size of E1.
pub(crate) const CHUNK: usize = 64 * 1024;
/// E4: the client writes this much per call, as fast as it can.
const RECOVERY_CHUNK: usize = 64 * 1024;
/// E4: the session's send buffer: bounds the bytes written but not yet sent
/// at a kill, which would otherwise add their transfer time to the resend.
const RECOVERY_SEND_BUFFER: usize = 1 << 20;
/// E4: how long to wait for a reconnect or the missed bytes before giving up.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// E5: one request per client every 10 ms = 100 requests/s each.
pub(crate) const LOAD_PERIOD: Duration = Duration::from_millis(10);

/// Raw TCP or a session with this configuration.
// A handful of values per run: the Config's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Raw,
    Session(Config),
    /// A session written with zero-copy `Bytes` and read by chunks, where
    /// the runtime offers it ([`Net::zero_copy`]).
    SessionZeroCopy(Config),
}

/// E4's receiver: bytes received so far, and when a target count was reached.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    received: AtomicU64,
    target: AtomicU64,
    reached: Mutex<Option<Instant>>,
}

impl Progress {
    /// Counts `n` received bytes; records the time the target is reached.
    pub(crate) fn add(&self, n: usize) {
        let r = self.received.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let t = self.target.load(Ordering::SeqCst);
        if t != 0
            && r >= t
            && self
                .target
                .compare_exchange(t, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            *self.reached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }

    /// Arms the target; returns at once if it is already reached.
    fn arm(&self, target: u64) {
        *self.reached.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.target.store(target, Ordering::SeqCst);
        // Reached before it was armed: count it as reached now.
        self.add(0);
    }

    fn reached(&self) -> Option<Instant> {
        *self.reached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a server does with each connection (or session).
#[derive(Debug, Clone)]
pub(crate) enum Service {
    /// Reads everything; after every `bytes` bytes, one message on `done`.
    Sink { bytes: u64, done: Sender<()> },
    /// Reads 20-byte requests, waits the service time (µs, little-endian
    /// u32 in the request's first 4 bytes), answers 20 bytes.
    Echo,
    /// Reads `n` 20-byte requests, then answers 20 bytes; again.
    Pipelined { n: u64 },
    /// Reads everything, counting it.
    Count(Arc<Progress>),
}

/// The service time a request asks for.
pub(crate) fn service_of(req: &[u8]) -> Duration {
    let mut b = [0u8; 4];
    b.copy_from_slice(&req[..4]);
    Duration::from_micros(u32::from_le_bytes(b).into())
}

/// A request asking for `service`.
pub(crate) fn request(service: Duration) -> [u8; REQ] {
    let mut r = [0u8; REQ];
    let us = u32::try_from(service.as_micros()).unwrap_or(u32::MAX);
    r[..4].copy_from_slice(&us.to_le_bytes());
    r
}

/// Counts bytes into whole units (a transfer, a batch of requests): the
/// servers of [`Service::Sink`] and [`Service::Pipelined`] act once per unit.
pub(crate) struct Units {
    size: u64,
    got: u64,
}

impl Units {
    pub(crate) fn new(size: u64) -> Units {
        Units {
            size: size.max(1),
            got: 0,
        }
    }

    /// Counts `n` more bytes; returns how many units they completed.
    pub(crate) fn add(&mut self, n: usize) -> u64 {
        self.got += n as u64;
        let k = self.got / self.size;
        self.got %= self.size;
        k
    }
}

/// A running server; stops accepting when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// Reads a session client's (reconnects, retransmitted bytes).
pub(crate) type Reconnects = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// Measures a load that clients run on other threads, each request counted
/// in `done`: waits `settle` (every client has started its cadence), then
/// returns the process's CPU use (% of one core) and the requests per
/// second over `window`.
pub(crate) fn measure_load(done: &AtomicU64, settle: Duration, window: Duration) -> (f64, f64) {
    std::thread::sleep(settle);
    let (c0, r0, t0) = (
        crate::util::cpu_time().unwrap_or_default(),
        done.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(window);
    let (c1, r1, el) = (
        crate::util::cpu_time().unwrap_or_default(),
        done.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    let secs = el.as_secs_f64();
    (
        (c1 - c0).as_secs_f64() / secs * 100.0,
        (r1 - r0) as f64 / secs,
    )
}

/// Stops a background writer and waits for it.
pub(crate) type Join = Box<dyn FnOnce() + Send>;

/// What a runtime offers the experiments. Client-side operations block the
/// caller until done.
pub(crate) trait Net {
    /// A client connection (raw or session).
    type Conn: Send;
    /// `std`, `tokio`, `smol`.
    fn name(&self) -> &'static str;
    /// The most concurrent connections (each side) this runtime can be
    /// asked for, and why not more.
    fn max_conns(&self) -> (usize, &'static str) {
        (usize::MAX, "")
    }
    /// Starts a server of `kind` on 127.0.0.1 running `svc` per connection.
    fn serve(&self, kind: &Kind, o: &SockOpts, svc: Service) -> io::Result<Server>;
    /// `n` client connections of `kind` to `addr`, one after the other.
    fn connect(
        &self,
        kind: &Kind,
        addr: SocketAddr,
        o: &SockOpts,
        n: usize,
    ) -> io::Result<Vec<Self::Conn>>;
    /// Whether sessions offer the zero-copy write and read path
    /// ([`Kind::SessionZeroCopy`]).
    fn zero_copy(&self) -> bool {
        false
    }
    /// The session's reconnect and retransmitted-bytes counters (`None` for raw TCP).
    fn reconnects(&self, c: &Self::Conn) -> Option<Reconnects>;
    /// Writes `bytes` in 64 KiB writes (zero-copy `Bytes` for
    /// [`Kind::SessionZeroCopy`]) and waits until the server has read them
    /// (`done`); the time from the first write.
    fn bulk(&self, c: &mut Self::Conn, bytes: u64, done: &Receiver<()>) -> io::Result<Duration>;
    /// Every connection makes `k` requests one after the other, all
    /// connections at once; every round-trip time in µs.
    fn rtt_round(
        &self,
        conns: &mut Vec<Self::Conn>,
        service: Duration,
        k: usize,
    ) -> io::Result<Vec<f64>>;
    /// Writes `n` requests without waiting and reads the one reply.
    fn pipelined(&self, c: &mut Self::Conn, n: usize) -> io::Result<Duration>;
    /// Every connection makes one request per `period`; after a settling
    /// period, measures process CPU over `window`: (CPU %, requests/s).
    fn load(
        &self,
        conns: &mut Vec<Self::Conn>,
        period: Duration,
        window: Duration,
    ) -> io::Result<(f64, f64)>;
    /// Writes `chunk` bytes after `chunk` bytes in the background, counting
    /// them into `written`, until `stop`; the returned function waits for it.
    fn start_writer(
        &self,
        c: Self::Conn,
        chunk: usize,
        written: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Join>;
}

/// Runs experiment `e` on `net`.
pub(crate) fn run<N: Net>(net: &N, e: Experiment, ctx: &Ctx, sink: &mut Sink) -> io::Result<()> {
    match e {
        Experiment::Bulk => bulk(net, ctx, sink),
        Experiment::Latency => latency(net, ctx, sink),
        Experiment::Pipelined => pipelined(net, ctx, sink),
        Experiment::Recovery => recovery(net, ctx, sink),
        Experiment::Footprint => crate::footprint::run(net, ctx, sink),
        Experiment::Core => Ok(()),
    }
}

pub(crate) fn session(policy: ReleasePolicy) -> Kind {
    let mut c = Config::default();
    c.release_policy = policy;
    Kind::Session(c)
}

fn session_zero_copy(policy: ReleasePolicy) -> Kind {
    let mut c = Config::default();
    c.release_policy = policy;
    Kind::SessionZeroCopy(c)
}

/// Calls `f`, keeping the first error in `err` (closures of the rounds
/// cannot return one).
fn keep<T>(err: &RefCell<Option<io::Error>>, fallback: T, r: io::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            err.borrow_mut().get_or_insert(e);
            fallback
        }
    }
}

fn first_error(err: RefCell<Option<io::Error>>) -> io::Result<()> {
    match err.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn one<T>(mut v: Vec<T>) -> io::Result<T> {
    v.pop().ok_or_else(|| io::Error::other("no connection"))
}

/// One bulk connection: its server, its client, and the server's "all
/// read" signal.
struct BulkPair<N: Net> {
    _server: Server,
    conn: N::Conn,
    done: Receiver<()>,
}

impl<N: Net> BulkPair<N> {
    fn new(net: &N, kind: &Kind, o: &SockOpts, bytes: u64) -> io::Result<Self> {
        let (tx, done) = smol::channel::unbounded();
        let server = net.serve(kind, o, Service::Sink { bytes, done: tx })?;
        let conn = one(net.connect(kind, server.addr, o, 1)?)?;
        Ok(BulkPair {
            _server: server,
            conn,
            done,
        })
    }
}

/// Environment variable that overrides the requested size E1 pins under the
/// implicit policy (bytes; default: the adapters' own,
/// `DEFAULT_IMPLICIT_SOCKET_BUFFER`), to see how the pinned size weighs on
/// Implicit against Ack.
pub const PIN_ENV: &str = "FT_BENCH_PIN";

/// E1's socket options under `policy`: implicit pins both sides' buffers to
/// the size the adapters pin (raw TCP too, so the baseline is comparable),
/// or to [`PIN_ENV`]'s size.
fn bulk_opts(cc: &Option<String>, policy: ReleasePolicy) -> SockOpts {
    let asked = std::env::var(PIN_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let options = match (policy, asked) {
        (ReleasePolicy::Implicit, Some(n)) => SocketOptions::new().buffer_size(n),
        _ => SocketOptions::default(),
    };
    SockOpts {
        cc: cc.clone(),
        pin: options.pin_for(policy),
    }
}

/// `rounds` alternating transfers of `bytes` on `a` (base) and `b`.
fn compare_bulk<N: Net>(
    net: &N,
    rounds: usize,
    bytes: u64,
    a: &mut BulkPair<N>,
    b: &mut BulkPair<N>,
) -> io::Result<RatioSummary> {
    let err = RefCell::new(None);
    let s = compare_alternating(
        rounds,
        bytes,
        || keep(&err, Duration::MAX, net.bulk(&mut a.conn, bytes, &a.done)),
        || keep(&err, Duration::MAX, net.bulk(&mut b.conn, bytes, &b.done)),
    );
    first_error(err)?;
    Ok(s)
}

/// The adapter benches' summary on `net`: raw vs session under Ack, pinned
/// raw vs session under Implicit, and Ack vs Implicit sessions.
pub(crate) fn bulk_summary<N: Net>(
    net: &N,
    rounds: usize,
    bytes: u64,
    cc: &Option<String>,
) -> io::Result<Vec<(String, RatioSummary)>> {
    let (ack, imp) = (ReleasePolicy::Ack, ReleasePolicy::Implicit);
    let pair = |kind: &Kind, policy| BulkPair::new(net, kind, &bulk_opts(cc, policy), bytes);
    let mut out = Vec::new();
    let mut ses_ack = pair(&session(ack), ack)?;
    let mut ses_imp = pair(&session(imp), imp)?;
    out.push((
        "ack      (base raw_tcp, ft ft_ack): ratio ft/raw".to_string(),
        compare_bulk(
            net,
            rounds,
            bytes,
            &mut pair(&Kind::Raw, ack)?,
            &mut ses_ack,
        )?,
    ));
    out.push((
        "implicit (base raw_tcp_pinned, ft ft_implicit): ratio ft/raw".to_string(),
        compare_bulk(
            net,
            rounds,
            bytes,
            &mut pair(&Kind::Raw, imp)?,
            &mut ses_imp,
        )?,
    ));
    out.push((
        "policy   (base ft_ack, ft ft_implicit): ratio implicit/ack".to_string(),
        compare_bulk(net, rounds, bytes, &mut ses_ack, &mut ses_imp)?,
    ));
    if net.zero_copy() {
        let zc = |policy| pair(&session_zero_copy(policy), policy);
        let mut zc_ack = zc(ack)?;
        let mut zc_imp = zc(imp)?;
        out.push((
            "ack zero-copy      (base raw_tcp, ft ft_ack_zc): ratio ft/raw".to_string(),
            compare_bulk(net, rounds, bytes, &mut pair(&Kind::Raw, ack)?, &mut zc_ack)?,
        ));
        out.push((
            "implicit zero-copy (base raw_tcp_pinned, ft ft_implicit_zc): ratio ft/raw".to_string(),
            compare_bulk(net, rounds, bytes, &mut pair(&Kind::Raw, imp)?, &mut zc_imp)?,
        ));
        out.push((
            "policy zero-copy   (base ft_ack_zc, ft ft_implicit_zc): ratio implicit/ack"
                .to_string(),
            compare_bulk(net, rounds, bytes, &mut zc_ack, &mut zc_imp)?,
        ));
    }
    Ok(out)
}

/// E1: `bytes` one way in 64 KiB writes, raw and session alternating, per
/// release policy.
fn bulk<N: Net>(net: &N, ctx: &Ctx, sink: &mut Sink) -> io::Result<()> {
    let bytes = ctx.scale.bulk_bytes;
    let mut cases = vec![
        (ReleasePolicy::Ack, "ack/copy", session(ReleasePolicy::Ack)),
        (
            ReleasePolicy::Implicit,
            "implicit/copy",
            session(ReleasePolicy::Implicit),
        ),
    ];
    if net.zero_copy() {
        for (policy, name) in [
            (ReleasePolicy::Ack, "ack/zero-copy"),
            (ReleasePolicy::Implicit, "implicit/zero-copy"),
        ] {
            cases.push((policy, name, session_zero_copy(policy)));
        }
    }
    for (policy, name, kind) in cases {
        let o = bulk_opts(&ctx.cc, policy);
        let mut raw = BulkPair::new(net, &Kind::Raw, &o, bytes)?;
        let mut ses = BulkPair::new(net, &kind, &o, bytes)?;
        let s = compare_bulk(net, ctx.scale.bulk_rounds, bytes, &mut raw, &mut ses)?;
        sink.row(
            "bulk",
            net.name(),
            name,
            "throughput",
            "GiB/s",
            Better::Higher,
            Some(s.base_gib_s),
            s.ft_gib_s,
            Some(s.round_median),
        );
    }
    if !net.zero_copy() {
        sink.skip(
            "bulk",
            net.name(),
            "zero-copy write path: this adapter offers no zero-copy write".into(),
        );
    }
    Ok(())
}

/// E2: round-trip times of 20-byte requests with 1, 100, 1,000 clients and
/// service times 0, 1, 2 ms; the same connections serve every service time.
fn latency<N: Net>(net: &N, ctx: &Ctx, sink: &mut Sink) -> io::Result<()> {
    let o = SockOpts {
        cc: ctx.cc.clone(),
        pin: None,
    };
    let kind = session(ReleasePolicy::Ack);
    let raw_srv = net.serve(&Kind::Raw, &o, Service::Echo)?;
    let ses_srv = net.serve(&kind, &o, Service::Echo)?;
    for &clients in &ctx.scale.clients {
        if clients * 2 > crate::net::max_pairs() {
            sink.skip(
                "latency",
                net.name(),
                format!("{clients} clients: open-file limit too low"),
            );
            continue;
        }
        if clients > net.max_conns().0 {
            let why = net.max_conns().1;
            sink.skip("latency", net.name(), format!("{clients} clients: {why}"));
            continue;
        }
        let mut raw = net.connect(&Kind::Raw, raw_srv.addr, &o, clients)?;
        let mut ses = net.connect(&kind, ses_srv.addr, &o, clients)?;
        let k = ctx.scale.per_client(clients);
        for &svc in &ctx.scale.services {
            let err = RefCell::new(None);
            let round = |conns: &mut Vec<N::Conn>| {
                let mut v = keep(&err, Vec::new(), net.rtt_round(conns, svc, k));
                (quantile(&mut v, 0.5), quantile(&mut v, 0.99))
            };
            let rounds = alternate(
                ctx.scale.latency_rounds,
                || round(&mut raw),
                || round(&mut ses),
            );
            first_error(err)?;
            let variant = format!("clients={clients}/service={}ms", svc.as_millis());
            for (metric, pick) in [
                ("rtt_p50", (|r: &(f64, f64)| r.0) as fn(&(f64, f64)) -> f64),
                ("rtt_p99", |r: &(f64, f64)| r.1),
            ] {
                let pairs: Vec<(f64, f64)> =
                    rounds.iter().map(|(a, b)| (pick(a), pick(b))).collect();
                let (r, s, q) = summarize(&pairs);
                sink.row(
                    "latency",
                    net.name(),
                    &variant,
                    metric,
                    "µs",
                    Better::Lower,
                    Some(r),
                    s,
                    Some(q),
                );
            }
        }
    }
    Ok(())
}

/// E3: `n` 20-byte requests written without waiting, one reply after the
/// last; requests per second.
fn pipelined<N: Net>(net: &N, ctx: &Ctx, sink: &mut Sink) -> io::Result<()> {
    let n = ctx.scale.pipelined_requests;
    let o = SockOpts {
        cc: ctx.cc.clone(),
        pin: None,
    };
    let kind = session(ReleasePolicy::Ack);
    let svc = Service::Pipelined { n: n as u64 };
    let raw_srv = net.serve(&Kind::Raw, &o, svc.clone())?;
    let ses_srv = net.serve(&kind, &o, svc)?;
    let mut raw = one(net.connect(&Kind::Raw, raw_srv.addr, &o, 1)?)?;
    let mut ses = one(net.connect(&kind, ses_srv.addr, &o, 1)?)?;
    let err = RefCell::new(None);
    let rps = |d: Duration| n as f64 / d.as_secs_f64();
    let rounds = alternate(
        ctx.scale.pipelined_rounds,
        || rps(keep(&err, Duration::MAX, net.pipelined(&mut raw, n))),
        || rps(keep(&err, Duration::MAX, net.pipelined(&mut ses, n))),
    );
    first_error(err)?;
    let (r, s, q) = summarize(&rounds);
    sink.row(
        "pipelined",
        net.name(),
        &format!("{n} requests"),
        "requests_per_s",
        "1/s",
        Better::Higher,
        Some(r),
        s,
        Some(q),
    );
    Ok(())
}

/// E4: a session client writes as fast as it can; its transport is killed
/// (proxy RST to both ends, or `ss -K` of the client's socket) `kills`
/// times mid-transfer.
/// For each kill: the time until the client has resumed, until the server
/// has read every byte the client had written before the kill (the kill
/// discards what both kernels held, so those bytes are resent), and the
/// bytes resent.
fn recovery<N: Net>(net: &N, ctx: &Ctx, sink: &mut Sink) -> io::Result<()> {
    let o = SockOpts {
        cc: ctx.cc.clone(),
        pin: None,
    };
    let mut config = Config::default();
    config.send_buffer_capacity = RECOVERY_SEND_BUFFER;
    let kind = Kind::Session(config);
    let probe = ft_session_testkit::ss_kill_probe();
    for method in ["proxy-rst", "ss-K"] {
        if method == "ss-K" {
            if let Some(why) = probe.skip_reason() {
                sink.skip("recovery", net.name(), format!("ss -K: {why}"));
                continue;
            }
        }
        let progress = Arc::new(Progress::default());
        let srv = net.serve(&kind, &o, Service::Count(progress.clone()))?;
        let proxy = match method {
            "proxy-rst" => Some(FaultProxy::start(srv.addr, FaultPlan::new())?),
            _ => None,
        };
        let target = proxy.as_ref().map_or(srv.addr, |p| p.local_addr());
        let conn = one(net.connect(&kind, target, &o, 1)?)?;
        let reconnects = net
            .reconnects(&conn)
            .ok_or_else(|| io::Error::other("a session has a reconnect count"))?;
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let join = net.start_writer(conn, RECOVERY_CHUNK, written.clone(), stop.clone())?;
        let (mut resumed, mut delivered, mut call, mut resent) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut failure = None;
        for _ in 0..ctx.scale.kills {
            // Let the stream run between kills.
            std::thread::sleep(Duration::from_millis(30));
            let (before, resent0) = reconnects();
            let w0 = written.load(Ordering::SeqCst);
            progress.arm(w0);
            let t0 = Instant::now();
            let killed = match &proxy {
                Some(p) => p.kill_all(),
                None => ft_session_testkit::ss_kill_clients_of(srv.addr.port())?.killed(),
            };
            call.push(ms(t0.elapsed()));
            if killed == 0 {
                failure = Some("the kill found no connection".to_string());
                break;
            }
            let mut t_resumed = None;
            while t0.elapsed() < RECOVERY_TIMEOUT {
                if t_resumed.is_none() && reconnects().0 > before {
                    t_resumed = Some(t0.elapsed());
                }
                if t_resumed.is_some() && progress.reached().is_some() {
                    break;
                }
                // Polling granularity of the reconnect time.
                std::thread::sleep(Duration::from_micros(100));
            }
            match (t_resumed, progress.reached()) {
                (Some(r), Some(at)) => {
                    resumed.push(ms(r));
                    delivered.push(ms(at.saturating_duration_since(t0)));
                    resent.push((reconnects().1 - resent0) as f64 / 1024.0);
                }
                _ => {
                    failure = Some(format!(
                        "no recovery within {RECOVERY_TIMEOUT:?} (resumed: {t_resumed:?})"
                    ));
                    break;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        join();
        if let Some(why) = failure {
            sink.skip("recovery", net.name(), format!("{method}: {why}"));
            continue;
        }
        let variant = format!("{method}/{} kills", resumed.len());
        for (metric, unit, v) in [
            ("kill_to_resumed", "ms", &mut resumed),
            ("kill_to_redelivered", "ms", &mut delivered),
            ("kill_call", "ms", &mut call),
            ("resent", "KiB", &mut resent),
        ] {
            let max = v.iter().copied().fold(f64::NAN, f64::max);
            let p50 = median(v);
            for (stat, x) in [("p50", p50), ("max", max)] {
                sink.row(
                    "recovery",
                    net.name(),
                    &variant,
                    &format!("{metric}_{stat}"),
                    unit,
                    Better::Lower,
                    None,
                    x,
                    None,
                );
            }
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
