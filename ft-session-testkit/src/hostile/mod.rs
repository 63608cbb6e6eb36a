//! Hostile peers on real sockets (issue 15): one list of attacks run against
//! every adapter's listener, with the same checks after each.
//!
//! An adapter's test file implements [`Target`] (bind a listener, run
//! [`Service`] for every accepted session, connect a legitimate client) and
//! lists the cases with [`hostile_suite!`](crate::hostile_suite); the
//! attacks speak raw bytes from `docs/PROTOCOL.md` ([`wire`], encoded here
//! independently of the core).
//!
//! Each case, on a fresh listener:
//! 1. a legitimate exchange (warms the process up, so the memory baseline
//!    includes the runtime);
//! 2. the case's setup, if any, then a legitimate session is **parked**: it
//!    runs through a [`FaultProxy`](crate::FaultProxy) whose transport is
//!    killed and which refuses reconnects until the attack is over;
//! 3. the **attack**, which must observe the documented answer;
//! 4. the checks: the listener's accounting within its configured limits;
//!    the resident set grew by at most the case's bound; the parked session
//!    resumes and completes its exchange exactly (length and sha256 both
//!    ways); a new legitimate exchange is exact too.
//!
//! Every check runs even after one failed, and the case prints one line per
//! check (`cargo test -- --nocapture` shows them), then fails if any did.
//! Cases run one at a time in a process (a lock), so the resident set
//! measures one attack. `FT_HOSTILE_CONNECTIONS` sets the volume cases'
//! connection count (default [`DEFAULT_VOLUME`]; issue 15 asks for 10,000).

mod cases;
mod raw;
mod target;
pub mod wire;

use std::cell::RefCell;
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ft_session_core::Config;

pub use cases::{Case, Ctx, CASES};
pub use raw::{End, Observed, RawPeer};
pub use target::{
    check_reply, legit_exchange, request, rss_bytes, wait_for, Counts, LegitStream, Parked, Reply,
    Service, ServiceLog, Target, CHUNK, SUMMARY_LEN,
};

/// Connections of the volume cases when `FT_HOSTILE_CONNECTIONS` is unset.
pub const DEFAULT_VOLUME: usize = 1000;
/// `max_reconnect_time` of the volume cases: 10,000 connections take tens
/// of seconds on a loaded machine.
pub const VOLUME_RECONNECT_TIME: Duration = Duration::from_secs(120);
/// A case that takes longer fails.
pub const CASE_LIMIT: Duration = Duration::from_secs(180);

/// Declares one `#[test]` per case of the suite for a [`Target`], plus a
/// test that every case of [`CASES`] is listed. Attributes before a case
/// name (`#[ignore = "..."]`) apply to its test.
///
/// ```ignore
/// ft_session_testkit::hostile_suite!(MyTarget; garbage, wrong_magic, /* ... */);
/// ```
#[macro_export]
macro_rules! hostile_suite {
    ($target:ty; $( $(#[$meta:meta])* $case:ident ),* $(,)?) => {
        $(
            $(#[$meta])*
            #[test]
            fn $case() {
                $crate::hostile::run::<$target>(stringify!($case));
            }
        )*
        #[test]
        fn every_hostile_case_is_listed() {
            $crate::hostile::assert_all_listed(&[$(stringify!($case)),*]);
        }
    };
}

/// Fails unless `names` are exactly the suite's cases.
pub fn assert_all_listed(names: &[&str]) {
    let mut want: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    let mut got = names.to_vec();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "the test file must list every hostile case");
}

/// The suite's base configuration: short timers so that every case ends in
/// seconds.
pub fn base_config() -> Config {
    let ms = Duration::from_millis;
    let mut c = Config::default();
    c.heartbeat_interval = ms(100);
    c.idle_timeout = ms(1000);
    c.handshake_timeout = ms(1000);
    c.backoff_initial = ms(10);
    c.backoff_max = ms(100);
    c.max_reconnect_time = Duration::from_secs(30);
    c
}

/// The volume cases' connection count.
pub fn volume() -> usize {
    std::env::var("FT_HOSTILE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_VOLUME)
}

/// Raises the soft limit on open files as far as needed for `fds` (and as
/// the hard limit allows); returns the limit in force.
fn raise_fd_limit(fds: u64) -> u64 {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    if soft >= fds {
        return soft;
    }
    // Root may raise the hard limit too; otherwise stay under it.
    if rlimit::setrlimit(rlimit::Resource::NOFILE, fds, fds.max(hard)).is_ok() {
        return fds;
    }
    let to = fds.min(hard);
    if rlimit::setrlimit(rlimit::Resource::NOFILE, to, hard).is_ok() {
        to
    } else {
        soft
    }
}

/// Descriptors kept for everything but the volume cases' connections.
const FD_MARGIN: u64 = 256;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs case `name` against a fresh `T`; panics with every failed check.
pub fn run<T: Target + 'static>(name: &'static str) {
    let case = CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no hostile case {name}"));
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("hostile-{name}"))
        .spawn(move || {
            let _ = tx.send(run_case::<T>(case));
        })
        .unwrap_or_else(|e| panic!("cannot start case {name}: {e}"));
    let lines = match rx.recv_timeout(CASE_LIMIT) {
        Ok(lines) => lines,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{} {name}: not finished within {CASE_LIMIT:?}", T::NAME)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{} {name}: the case panicked", T::NAME)
        }
    };
    let mut failed = false;
    for (ok, line) in &lines {
        failed |= !ok;
        println!(
            "HOSTILE {} {name}: {} {line}",
            T::NAME,
            if *ok { "ok  " } else { "FAIL" }
        );
    }
    assert!(
        !failed,
        "{} {name}: a check failed (see the lines above)",
        T::NAME
    );
}

type Lines = Vec<(bool, String)>;

fn run_case<T: Target>(case: &'static Case) -> Lines {
    let mut lines: Lines = Vec::new();
    let mut line = |ok: bool, s: String| lines.push((ok, s));
    let mut config = base_config();
    (case.config)(&mut config);
    let mut volume = 1;
    if case.per_thousand {
        // The legitimate session stays parked through the whole flood.
        config.max_reconnect_time = config.max_reconnect_time.max(VOLUME_RECONNECT_TIME);
        volume = volume_for_fds();
        if volume < self::volume() {
            line(
                true,
                format!(
                    "volume {volume}: open-file limit too low for {}",
                    self::volume()
                ),
            );
        }
    }
    let t = match T::start(config.clone()) {
        Ok(t) => t,
        Err(e) => {
            line(false, format!("cannot start the listener: {e}"));
            return lines;
        }
    };
    if let Err(e) = legit_exchange(&t, &config, 1, 100_000, 100_000) {
        line(false, format!("legitimate exchange before the attack: {e}"));
        return lines;
    }
    let counts = || t.counts();
    let ctx = Ctx {
        addr: t.addr(),
        config: &config,
        parked_id: [0; 16],
        volume,
        counts: &counts,
        log: t.log(),
        peak_rss: RefCell::new(0),
        notes: RefCell::new(Vec::new()),
        stash: RefCell::new(Vec::new()),
    };
    if let Some(setup) = case.setup {
        if let Err(e) = setup(&ctx) {
            line(false, format!("setup: {e}"));
            return lines;
        }
    }
    let parked = match Parked::park(&t, &config) {
        Ok(p) => p,
        Err(e) => {
            line(false, format!("parking a legitimate session: {e}"));
            return lines;
        }
    };
    let ctx = Ctx {
        parked_id: parked.id,
        ..ctx
    };
    let rss0 = rss_bytes().unwrap_or(0);
    *ctx.peak_rss.borrow_mut() = rss0;
    let start = Instant::now();
    let attack = (case.attack)(&ctx);
    let took = start.elapsed();
    ctx.sample();
    for n in ctx.notes.borrow().iter() {
        line(true, format!("note: {n}"));
    }
    match attack {
        Ok(s) => line(true, format!("answer: {s} [{took:?}]")),
        Err(s) => line(
            false,
            format!("answer: expected {}; observed {s} [{took:?}]", case.expect),
        ),
    }
    // Accounting within the configured limits.
    let n = t.counts();
    let s = n.set;
    let within = s.parked <= config.max_parked
        && s.parked_bytes <= config.parked_bytes_budget
        && s.attached + s.parked <= config.max_sessions
        && n.pending_handshakes
            .map_or(true, |p| p <= config.max_pending_handshakes);
    line(
        within,
        format!(
            "accounting: attached {}, parked {} (max {}), parked bytes {} (budget {}), evicted {}, \
             rejected resumes {}, sessions {:?}, pending handshakes {:?}, refused handshakes {:?}",
            s.attached,
            s.parked,
            config.max_parked,
            s.parked_bytes,
            config.parked_bytes_budget,
            s.evicted,
            s.rejected_resumes,
            n.sessions,
            n.pending_handshakes,
            n.refused_handshakes
        ),
    );
    let peak = *ctx.peak_rss.borrow();
    let bound = if case.per_thousand {
        case.rss_mib * (volume as u64).div_ceil(1000)
    } else {
        case.rss_mib
    } << 20;
    let grew = peak.saturating_sub(rss0);
    line(
        rss0 == 0 || grew <= bound,
        format!(
            "memory: VmRSS {} before, peak {} (+{}, bound +{})",
            mib_s(rss0),
            mib_s(peak),
            mib_s(grew),
            mib_s(bound)
        ),
    );
    let resumed = parked.resume_and_check();
    line(
        resumed.is_ok(),
        format!(
            "parked legitimate session: {}",
            resumed
                .err()
                .unwrap_or_else(|| "resumed, exact bytes both ways".into())
        ),
    );
    let fresh = legit_exchange(&t, &config, 2, 250_000, 250_000);
    line(
        fresh.is_ok(),
        format!(
            "new legitimate session: {}",
            fresh
                .err()
                .unwrap_or_else(|| "exact bytes both ways".into())
        ),
    );
    drop(t);
    lines
}

fn mib_s(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The volume to use: `volume()`, reduced if the open-file limit cannot
/// hold two descriptors per connection (both ends live in this process).
fn volume_for_fds() -> usize {
    let want = volume();
    let limit = raise_fd_limit(2 * want as u64 + FD_MARGIN);
    want.min(usize::try_from(limit.saturating_sub(FD_MARGIN) / 2).unwrap_or(usize::MAX))
}
