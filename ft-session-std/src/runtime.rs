//! Where the sessions run: one process-wide executor with async-io's
//! reactor (the `polling` crate) on a few background threads, driving every
//! session's one task (`ft_session_async`'s driver, the same as Tokio's and
//! smol's). The application's blocking calls run on the caller's thread: they
//! poll the session and park the thread until its waker fires or a deadline
//! passes.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use ft_session_smol::SmolRuntime;
use parking::{Parker, Unparker};
use smol::Executor;

/// Upper bound of the initial number of I/O threads: they only move bytes
/// between sockets and sessions, so a few serve many sessions.
const MAX_INITIAL_THREADS: usize = 2;
/// One more I/O thread per this many live session ends (streams not yet
/// dropped). The I/O threads serve every session, while the scheduler gives
/// each runnable thread an equal share of the CPU: with hundreds of busy
/// application threads, two I/O threads would get a sliver of it.
const SESSIONS_PER_THREAD: usize = 32;
/// Most I/O threads started as sessions grow.
const MAX_THREADS: usize = 16;
/// Environment variable that fixes the number of I/O threads (1 to 64).
const THREADS_ENV: &str = "FT_SESSION_STD_THREADS";

/// The executor and how many threads run it.
struct Io {
    rt: SmolRuntime,
    ex: Arc<Executor<'static>>,
    threads: AtomicUsize,
    /// Set by [`THREADS_ENV`]: no growth.
    fixed: bool,
}

static RUNTIME: OnceLock<Result<Io, String>> = OnceLock::new();
/// Live session ends of this process ([`Live`]).
static LIVE: AtomicUsize = AtomicUsize::new(0);

fn fixed_threads() -> Option<usize> {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
}

fn spawn_thread(ex: &Arc<Executor<'static>>, i: usize) -> io::Result<()> {
    let ex = ex.clone();
    // `smol::block_on` drives async-io's reactor whenever the executor has
    // nothing to run, so sockets and timers need no other thread.
    std::thread::Builder::new()
        .name(format!("ft-session-io-{i}"))
        .spawn(move || smol::block_on(ex.run(std::future::pending::<()>())))
        .map(drop)
}

fn start() -> Result<Io, String> {
    let ex = Arc::new(Executor::new());
    let fixed = fixed_threads();
    let n = fixed.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_INITIAL_THREADS)
    });
    let mut started = 0;
    for i in 0..n {
        match spawn_thread(&ex, i) {
            Ok(()) => started += 1,
            Err(e) if started == 0 => return Err(format!("cannot start the I/O thread: {e}")),
            // Fewer threads than asked still serve every session.
            Err(e) => tracing::warn!(error = %e, "cannot start another I/O thread"),
        }
    }
    Ok(Io {
        rt: SmolRuntime::executor(ex.clone()),
        ex,
        threads: AtomicUsize::new(started),
        fixed: fixed.is_some(),
    })
}

fn io() -> io::Result<&'static Io> {
    RUNTIME
        .get_or_init(start)
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

/// The process-wide runtime, started on first use.
pub(crate) fn runtime() -> io::Result<SmolRuntime> {
    io().map(|io| io.rt.clone())
}

/// Held by every live session end: counts it, and adds an I/O thread when
/// the sessions outgrow the ones running.
pub(crate) struct Live(());

impl Live {
    pub(crate) fn new() -> Live {
        let live = LIVE.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(io) = io().ok().filter(|io| !io.fixed) {
            let want = (live / SESSIONS_PER_THREAD).clamp(1, MAX_THREADS);
            let have = io.threads.load(Ordering::Relaxed);
            // One thread per call at most; a racing call adds the next.
            let more = have < want
                && io
                    .threads
                    .compare_exchange(have, have + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if more {
                if let Err(e) = spawn_thread(&io.ex, have) {
                    io.threads.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot start another I/O thread");
                }
            }
        }
        Live(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Threads stay: sessions tend to come back in the same numbers.
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Unpark(Unparker);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// One parker per application thread, and its waker (reused, so the
    /// session's `will_wake` check avoids a clone on every call).
    static PARKER: (Parker, Waker) = {
        let (p, u) = parking::pair();
        (p, Waker::from(Arc::new(Unpark(u))))
    };
}

/// Polls `poll` on this thread until it is ready, parking in between;
/// `None` if `deadline` passed first.
pub(crate) fn wait<T>(
    deadline: Option<Instant>,
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Option<T> {
    PARKER.with(|(parker, waker)| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(v) = poll(&mut cx) {
                return Some(v);
            }
            match deadline {
                None => parker.park(),
                Some(d) => {
                    if !parker.park_deadline(d) {
                        // Timed out: one last look, so a wake-up racing the
                        // deadline is not lost.
                        return match poll(&mut cx) {
                            Poll::Ready(v) => Some(v),
                            Poll::Pending => None,
                        };
                    }
                }
            }
        }
    })
}

/// Runs `future` to completion on this thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    loop {
        if let Some(v) = wait(None, |cx| future.as_mut().poll(cx)) {
            return v;
        }
    }
}
