//! Tunnel-wide counters: sessions, reconnects, retransmitted bytes, summed
//! over live sessions (read from each on demand) and finished ones.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socket2::Socket;

/// What one session reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Resumes completed.
    pub reconnects: u64,
    /// Bytes sent again after resumes.
    pub retransmitted: u64,
}

/// A live session the stats can read (and a shutdown can abort).
pub trait Probe: Send + Sync {
    /// Its counters now.
    fn counters(&self) -> Counters;
    /// Aborts it, telling the peer `code`.
    fn abort(&self, code: u16);
}

impl Probe for ft_session_async::FtStream {
    fn counters(&self) -> Counters {
        let s = self.stats();
        Counters {
            reconnects: s.reconnects,
            retransmitted: s.retransmitted_bytes,
        }
    }

    fn abort(&self, code: u16) {
        ft_session_async::FtStream::abort(self, code)
    }
}

impl Probe for ft_session_std::FtStream {
    fn counters(&self) -> Counters {
        let s = self.stats();
        Counters {
            reconnects: s.reconnects,
            retransmitted: s.retransmitted_bytes,
        }
    }

    fn abort(&self, code: u16) {
        ft_session_std::FtStream::abort(self, code)
    }
}

/// A live session and its local connection (a duplicate descriptor, to reset it).
struct Live {
    probe: Arc<dyn Probe>,
    local: Arc<Socket>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    live: HashMap<u64, Live>,
    total: u64,
    lost: u64,
    finished: Counters,
}

/// The tunnel's counters, shared by every connection task.
#[derive(Clone, Default)]
pub struct TunnelStats {
    inner: Arc<Mutex<Inner>>,
}

/// A snapshot for printing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Sessions carrying a connection now.
    pub active: usize,
    /// Sessions started.
    pub total: u64,
    /// Sessions that ended lost (their local connection was reset).
    pub lost: u64,
    /// Summed over every session.
    pub counters: Counters,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stats: sessions active={} total={} lost={} reconnects={} retransmitted_bytes={}",
            self.active,
            self.total,
            self.lost,
            self.counters.reconnects,
            self.counters.retransmitted
        )
    }
}

/// Keeps a session counted while it lives; dropping it records its end.
pub struct Registration {
    stats: TunnelStats,
    id: u64,
    lost: bool,
}

impl Registration {
    /// The session ended lost.
    pub fn mark_lost(&mut self) {
        self.lost = true;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut g = self.stats.lock();
        if let Some(l) = g.live.remove(&self.id) {
            let c = l.probe.counters();
            g.finished.reconnects += c.reconnects;
            g.finished.retransmitted += c.retransmitted;
        }
        if self.lost {
            g.lost += 1;
        }
    }
}

impl TunnelStats {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new session until the returned registration is dropped;
    /// `local` is its local connection, reset by [`TunnelStats::reset_all`].
    pub fn register(&self, probe: Arc<dyn Probe>, local: Arc<Socket>) -> Registration {
        let mut g = self.lock();
        let id = g.next_id;
        g.next_id += 1;
        g.total += 1;
        g.live.insert(id, Live { probe, local });
        Registration {
            stats: self.clone(),
            id,
            lost: false,
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        let mut counters = g.finished;
        for l in g.live.values() {
            let c = l.probe.counters();
            counters.reconnects += c.reconnects;
            counters.retransmitted += c.retransmitted;
        }
        Snapshot {
            active: g.live.len(),
            total: g.total,
            lost: g.lost,
            counters,
        }
    }

    /// The process is stopping: resets every local connection (so none
    /// looks complete when the process exits) and aborts every session (so
    /// the far side resets its own at once instead of waiting out the
    /// reconnect time). Returns how many sessions were live.
    pub fn reset_all(&self, code: u16) -> usize {
        let g = self.lock();
        for l in g.live.values() {
            crate::tunnel::arm_reset(&l.local);
            l.probe.abort(code);
        }
        g.live.len()
    }

    /// Prints a snapshot to stdout every `period`, from a thread of its own
    /// (whatever the runtime), for the life of the process.
    pub fn print_every(&self, period: Duration) -> std::io::Result<()> {
        let stats = self.clone();
        let period = period.max(Duration::from_millis(10));
        std::thread::Builder::new()
            .name("ft-session-stats".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let mut out = std::io::stdout().lock();
                // A closed stdout only silences the stats.
                let _ = writeln!(out, "{}", stats.snapshot());
                let _ = out.flush();
            })?;
        Ok(())
    }
}
