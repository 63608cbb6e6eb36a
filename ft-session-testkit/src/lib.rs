//! Test support for ft-session, shared by every adapter's tests, the CLI and the
//! benchmarks.
//!
//! * [`FaultProxy`]: a TCP proxy on 127.0.0.1 that injects faults into the
//!   connections it forwards — resets after a byte count (fixed, or drawn per
//!   connection from a seed), resets at accept, manual [`FaultProxy::kill_all`],
//!   blackhole (bytes dropped) and pause (bytes held). Blocking std threads only, no
//!   async runtime; deterministic from the [`FaultPlan`].
//! * [`pattern`] / [`pattern_at`]: deterministic pseudo-random data, addressable by
//!   offset so multi-MiB streams can be produced and checked chunk by chunk.
//! * [`sha256_hex`] and [`Sha256Tracker`]: compare what was sent with what arrived.
//! * [`ss_kill`]: kill loopback connections from outside the process with `ss -K`.
//!
//! A kill resets **both** sides: the proxy sets `SO_LINGER` to 0 on the client-facing
//! and on the upstream-facing socket and closes them, so both endpoints get an RST
//! (reads fail with `ECONNRESET`, or end once the reset has been reported). The bytes
//! up to a kill offset are handed to the kernel before the reset, but an RST discards
//! whatever is still unsent, so the receiver gets *at most* that many bytes;
//! [`FaultProxy::kill_log`] records exactly how many the proxy forwarded.
//!
//! # Example
//!
//! ```
//! use ft_session_testkit::{pattern, sha256_hex, Direction, FaultPlan, FaultProxy};
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//!
//! // An upstream server that reads 1000 bytes and replies with their hash.
//! let server = TcpListener::bind("127.0.0.1:0")?;
//! let upstream = server.local_addr()?;
//! let handle = std::thread::spawn(move || -> std::io::Result<()> {
//!     let (mut s, _) = server.accept()?;
//!     let mut buf = vec![0u8; 1000];
//!     s.read_exact(&mut buf)?;
//!     s.write_all(sha256_hex(&buf).as_bytes())
//! });
//!
//! // Kill the second connection (index 1) after 10 bytes; the first is left alone.
//! let plan = FaultPlan::new().kill_connection_after(1, Direction::ClientToServer, 10);
//! let proxy = FaultProxy::start(upstream, plan)?;
//! let mut client = TcpStream::connect(proxy.local_addr())?;
//! client.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
//! let data = pattern(1, 1000);
//! client.write_all(&data)?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?;
//! assert_eq!(reply, sha256_hex(&data));
//! handle.join().expect("server thread")?;
//! assert_eq!(proxy.kills(), 0);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # `ss -K` on the development machine
//!
//! Observed on the project's machine (Linux 6.18, `CONFIG_INET_DIAG_DESTROY=y`,
//! iproute2 6.1.0, running as root): `ss -K dst 127.0.0.1 dport = :PORT` destroys the
//! client's socket of an established loopback connection, prints it, and exits 0. The
//! destroyed side's next read fails with `ECONNABORTED` ("Software caused connection
//! abort") and its peer's with `ECONNRESET`; `sport` works the same from the other
//! side. `ss` also prints `RTNETLINK answers: Invalid argument` on stderr on every
//! `-K` run, even when nothing matches, which is harmless and ignored here. When the
//! kernel lacks `SOCK_DESTROY` support, `ss` skips sockets silently, so [`ss_kill`]
//! reports [`SsKillOutcome::NothingKilled`]; use [`ss_kill_probe`] to find out
//! whether it really works before relying on it.

#![forbid(unsafe_code)]

mod hash;
pub mod hostile;
mod proxy;
mod ratio;
mod rng;
mod ss;

pub use hash::{sha256_hex, Sha256Tracker};
pub use proxy::{
    Direction, FaultPlan, FaultProxy, KillCause, KillPoint, KillRecord, KillRule, ProxyOptions,
};
pub use ratio::{alternate, compare_alternating, median, RatioSummary};
pub use rng::{pattern, pattern_at, splitmix64_at, SplitMix64};
pub use ss::{ss_kill, ss_kill_clients_of, ss_kill_probe, SsKillOutcome};
