//! Where the sessions run: one process-wide executor with async-io's
//! reactor (the `polling` crate) on a few background threads, driving every
//! session's one task (`ft_session_async`'s driver, the same as Tokio's and
//! smol's). The application's blocking calls run on the caller's thread: they
//! poll the session and park the thread until its waker fires or a deadline
//! passes.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use ft_session_smol::SmolRuntime;
use parking::{Parker, Unparker};
use smol::Executor;

/// Upper bound of the default number of I/O threads: they only move bytes
/// between sockets and sessions, so a few serve any number of sessions.
const MAX_DEFAULT_THREADS: usize = 2;
/// Environment variable that sets the number of I/O threads (1 to 64).
const THREADS_ENV: &str = "FT_SESSION_STD_THREADS";

static RUNTIME: OnceLock<Result<SmolRuntime, String>> = OnceLock::new();

fn threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_DEFAULT_THREADS)
        })
}

fn start() -> Result<SmolRuntime, String> {
    let ex = Arc::new(Executor::new());
    let mut started = 0;
    for i in 0..threads() {
        let ex = ex.clone();
        // `smol::block_on` drives async-io's reactor whenever the executor
        // has nothing to run, so sockets and timers need no other thread.
        let spawned = std::thread::Builder::new()
            .name(format!("ft-session-io-{i}"))
            .spawn(move || smol::block_on(ex.run(std::future::pending::<()>())));
        match spawned {
            Ok(_) => started += 1,
            Err(e) if started == 0 => return Err(format!("cannot start the I/O thread: {e}")),
            // Fewer threads than asked still serve every session.
            Err(e) => tracing::warn!(error = %e, "cannot start another I/O thread"),
        }
    }
    Ok(SmolRuntime::executor(ex))
}

/// The process-wide runtime, started on first use.
pub(crate) fn runtime() -> io::Result<SmolRuntime> {
    RUNTIME.get_or_init(start).clone().map_err(io::Error::other)
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
