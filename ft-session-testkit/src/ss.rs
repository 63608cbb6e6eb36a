//! Killing loopback connections from outside the process with `ss -K`.
//!
//! `ss -K` asks the kernel (netlink `SOCK_DESTROY`) to abort matching sockets. An
//! aborted TCP socket reports `ECONNABORTED` to its own process and sends an RST, so
//! its peer sees `ECONNRESET`. It needs root (`CAP_NET_ADMIN`) and a kernel built with
//! `CONFIG_INET_DIAG_DESTROY`; when the kernel refuses with `EOPNOTSUPP`, `ss` skips
//! the socket silently and exits 0, which is why the outcome counts the sockets that
//! `ss` actually printed (it prints only the ones it destroyed).

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// What [`ss_kill`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SsKillOutcome {
    /// `ss` reported destroying this many sockets (at least one).
    Killed {
        /// Number of sockets `ss` printed as destroyed.
        sockets: usize,
    },
    /// `ss` ran without error but destroyed nothing: no socket matched, or the kernel
    /// lacks `CONFIG_INET_DIAG_DESTROY` (which `ss` does not report).
    NothingKilled {
        /// Human-readable explanation, suitable for a test's skip message.
        reason: String,
    },
    /// `ss -K` could not be used: the tool is missing, it failed, or the kernel
    /// refused (for example without `CAP_NET_ADMIN`).
    Unavailable {
        /// Human-readable explanation, suitable for a test's skip message.
        reason: String,
    },
}

impl SsKillOutcome {
    /// Number of sockets destroyed (0 unless [`SsKillOutcome::Killed`]).
    pub fn killed(&self) -> usize {
        match self {
            SsKillOutcome::Killed { sockets } => *sockets,
            _ => 0,
        }
    }

    /// Why nothing was killed, or `None` if something was.
    pub fn skip_reason(&self) -> Option<&str> {
        match self {
            SsKillOutcome::Killed { .. } => None,
            SsKillOutcome::NothingKilled { reason } | SsKillOutcome::Unavailable { reason } => {
                Some(reason)
            }
        }
    }
}

/// Runs one `ss -K` with the given filter; Ok(count) or Err(outcome) on failure.
fn run_ss(filter: &[&str]) -> Result<usize, SsKillOutcome> {
    let output = match Command::new("ss")
        .args(["-K", "-t", "-n"])
        .args(filter)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SsKillOutcome::Unavailable {
                reason: "`ss` not found (install iproute2)".to_owned(),
            })
        }
        Err(e) => {
            return Err(SsKillOutcome::Unavailable {
                reason: format!("could not run `ss`: {e}"),
            })
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    // `ss` prints "SOCK_DESTROY answers: <errno text>" when the kernel refuses for a
    // reason other than EOPNOTSUPP/ENOENT (typically EPERM).
    if let Some(line) = stderr.lines().find(|l| l.contains("SOCK_DESTROY")) {
        return Err(SsKillOutcome::Unavailable {
            reason: format!("kernel refused `ss -K`: {}", line.trim()),
        });
    }
    if !output.status.success() {
        return Err(SsKillOutcome::Unavailable {
            reason: format!(
                "`ss -K {}` exited with {}: {}",
                filter.join(" "),
                output.status,
                stderr.trim()
            ),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with("State") && !t.starts_with("Netid")
        })
        .count())
}

/// Destroys every TCP socket on 127.0.0.1 whose remote port is `port`
/// (`ss -K dst 127.0.0.1 dport = :PORT`, the clients' sockets) or whose local port is
/// `port` (`ss -K src 127.0.0.1 sport = :PORT`, the accepted sockets; listening
/// sockets are not matched).
///
/// Never fails for lack of support: `Ok` carries an outcome saying whether anything
/// was killed and, if not, why, so a test can print the reason and skip. `Err` is
/// reserved for future use and currently never returned.
pub fn ss_kill(port: u16) -> io::Result<SsKillOutcome> {
    let p = format!(":{port}");
    let mut total = 0;
    for filter in [
        ["dst", "127.0.0.1", "dport", "=", p.as_str()],
        ["src", "127.0.0.1", "sport", "=", p.as_str()],
    ] {
        match run_ss(&filter) {
            Ok(n) => total += n,
            Err(outcome) => return Ok(outcome),
        }
    }
    Ok(if total > 0 {
        SsKillOutcome::Killed { sockets: total }
    } else {
        SsKillOutcome::NothingKilled {
            reason: format!(
                "`ss -K` matched no socket on 127.0.0.1 port {port} (none open, or the kernel \
                 lacks CONFIG_INET_DIAG_DESTROY)"
            ),
        }
    })
}

/// Destroys only the TCP sockets on 127.0.0.1 whose remote port is `port`
/// (`ss -K dst 127.0.0.1 dport = :PORT`): the clients' ends of the connections
/// to a server (or proxy) listening on `port`. The server's ends learn of it
/// from the RST; unlike [`ss_kill`], a connection the client opens again at
/// once is not caught by a second, server-side pass.
///
/// Outcomes as for [`ss_kill`].
pub fn ss_kill_clients_of(port: u16) -> io::Result<SsKillOutcome> {
    let p = format!(":{port}");
    Ok(
        match run_ss(&["dst", "127.0.0.1", "dport", "=", p.as_str()]) {
            Ok(0) => SsKillOutcome::NothingKilled {
                reason: format!(
                    "`ss -K` matched no socket to 127.0.0.1 port {port} (none open, or the kernel \
                 lacks CONFIG_INET_DIAG_DESTROY)"
                ),
            },
            Ok(sockets) => SsKillOutcome::Killed { sockets },
            Err(outcome) => outcome,
        },
    )
}

/// Checks whether `ss -K` really kills loopback connections here: opens a private
/// 127.0.0.1 connection, runs [`ss_kill`] on its port and verifies that the client
/// then reads an error. Returns [`SsKillOutcome::Killed`] only if it worked.
pub fn ss_kill_probe() -> SsKillOutcome {
    match probe() {
        Ok(outcome) => outcome,
        Err(e) => SsKillOutcome::Unavailable {
            reason: format!("probe connection failed: {e}"),
        },
    }
}

/// The body of [`ss_kill_probe`].
fn probe() -> io::Result<SsKillOutcome> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (_server, _) = listener.accept()?;
    let outcome = ss_kill(port)?;
    if outcome.killed() == 0 {
        return Ok(outcome);
    }
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 1];
    Ok(match client.read(&mut buf) {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut => {
            outcome
        }
        other => SsKillOutcome::NothingKilled {
            reason: format!("`ss -K` reported success but the connection survived ({other:?})"),
        },
    })
}
