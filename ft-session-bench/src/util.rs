//! Sizes per mode, percentiles and ratios, and the process's own RSS and CPU
//! time from /proc.

use std::time::Duration;

use ft_session_testkit::median;

use crate::Mode;

/// Every size and count a run uses, from its [`Mode`].
#[derive(Debug, Clone)]
pub(crate) struct Scale {
    /// E1: bytes per transfer.
    pub bulk_bytes: u64,
    /// E1: alternating rounds.
    pub bulk_rounds: usize,
    /// E2: concurrent clients.
    pub clients: Vec<usize>,
    /// E2: service times.
    pub services: Vec<Duration>,
    /// E2: requests per round over all clients (each client does at least
    /// `latency_min_per_client`).
    pub latency_requests: usize,
    /// E2: the least requests per client and round.
    pub latency_min_per_client: usize,
    /// E2: alternating rounds.
    pub latency_rounds: usize,
    /// E3: requests per run.
    pub pipelined_requests: usize,
    /// E3: alternating rounds.
    pub pipelined_rounds: usize,
    /// E4: kills per method.
    pub kills: usize,
    /// E5: session counts.
    pub sessions: Vec<usize>,
    /// E5: CPU measuring window.
    pub window: Duration,
    /// E6: bytes per transfer.
    pub core_bytes: u64,
    /// E6: alternating rounds.
    pub core_rounds: usize,
}

const MS: fn(u64) -> Duration = Duration::from_millis;

impl Scale {
    pub(crate) fn of(mode: Mode) -> Scale {
        match mode {
            Mode::Tiny => Scale {
                bulk_bytes: 4 << 20,
                bulk_rounds: 1,
                clients: vec![1, 10],
                services: vec![MS(0), MS(1)],
                latency_requests: 20,
                latency_min_per_client: 2,
                latency_rounds: 1,
                pipelined_requests: 2_000,
                pipelined_rounds: 1,
                kills: 1,
                sessions: vec![1, 10],
                window: MS(100),
                core_bytes: 16 << 20,
                core_rounds: 1,
            },
            Mode::Quick => Scale {
                bulk_bytes: 128 << 20,
                bulk_rounds: 3,
                clients: vec![1, 100, 1000],
                services: vec![MS(0), MS(1), MS(2)],
                latency_requests: 100,
                latency_min_per_client: 2,
                latency_rounds: 2,
                pipelined_requests: 100_000,
                pipelined_rounds: 2,
                kills: 5,
                sessions: vec![1, 100, 1000],
                window: MS(500),
                core_bytes: 1 << 30,
                core_rounds: 3,
            },
            Mode::Normal => Scale {
                bulk_bytes: 256 << 20,
                bulk_rounds: 10,
                clients: vec![1, 100, 1000],
                services: vec![MS(0), MS(1), MS(2)],
                latency_requests: 1_000,
                latency_min_per_client: 3,
                latency_rounds: 4,
                pipelined_requests: 100_000,
                pipelined_rounds: 10,
                kills: 20,
                sessions: vec![1, 100, 1000],
                window: MS(1000),
                core_bytes: 1 << 30,
                core_rounds: 10,
            },
            Mode::Full => Scale {
                bulk_bytes: 1 << 30,
                bulk_rounds: 20,
                clients: vec![1, 100, 1000],
                services: vec![MS(0), MS(1), MS(2)],
                latency_requests: 1_000,
                latency_min_per_client: 5,
                latency_rounds: 6,
                pipelined_requests: 100_000,
                pipelined_rounds: 20,
                kills: 20,
                sessions: vec![1, 100, 1000, 10_000],
                window: MS(2000),
                core_bytes: 1 << 30,
                core_rounds: 20,
            },
        }
    }

    /// E2: requests per client and round with `clients` clients.
    pub(crate) fn per_client(&self, clients: usize) -> usize {
        (self.latency_requests / clients.max(1)).max(self.latency_min_per_client)
    }
}

/// The `q`-quantile (0..=1) of `v` by nearest rank (sorts `v`).
pub(crate) fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Medians of alternating rounds of `(raw, session)` and the median of the
/// per-round ratios session/raw.
pub(crate) fn summarize(rounds: &[(f64, f64)]) -> (f64, f64, f64) {
    let mut raw: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    let mut ses: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    let mut ratio: Vec<f64> = rounds.iter().map(|r| r.1 / r.0).collect();
    (median(&mut raw), median(&mut ses), median(&mut ratio))
}

/// This process's resident set size in bytes (`VmRSS` of /proc/self/status).
pub(crate) fn rss_bytes() -> Option<u64> {
    rss_of("/proc/self/status")
}

/// The `VmRSS` of a /proc/PID/status file, bytes.
pub(crate) fn rss_of(status: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) of this process so far, from /proc/self/stat.
pub(crate) fn cpu_time() -> Option<Duration> {
    cpu_time_of("/proc/self/stat")
}

/// CPU time (user + system) from a /proc/PID/stat file (clock ticks of
/// 1/100 s, Linux's `USER_HZ` for /proc).
pub(crate) fn cpu_time_of(stat: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Gives the allocator a moment and returns the RSS (retried reads settle
/// after threads exit).
pub(crate) fn settled_rss() -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    rss_bytes().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_proc() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut v, 1.0), 100.0);
        assert!(rss_bytes().unwrap_or(0) > 0);
        assert!(cpu_time().is_some());
        let (r, s, q) = summarize(&[(2.0, 1.0), (4.0, 4.0), (1.0, 1.0)]);
        assert_eq!((r, s, q), (2.0, 1.0, 1.0));
    }
}
