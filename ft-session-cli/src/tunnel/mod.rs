//! `ft-session tunnel`: local TCP connections carried over fault-tolerant
//! sessions.
//!
//! The client accepts local connections and opens one session per
//! connection to the server; the server opens one TCP connection to its
//! forward address per session. Both ends then pipe bytes both ways:
//!
//! - an end of stream (FIN) from a local peer becomes the session's
//!   half-close, and the session's end of stream a FIN on the other side's
//!   local connection, so half-close passes through both ways;
//! - when the session is truly lost (expired, aborted, data lost...), the
//!   local connection is **reset** (`SO_LINGER` 0, then closed), never
//!   closed cleanly: a truncated stream must not look like a complete one;
//! - when a local peer resets its connection, the session is aborted, so the
//!   far side's local connection is reset too.
//!
//! The async runtimes (Tokio, smol) share [`pipe`]; the std adapter runs the
//! same steps on threads ([`blocking`]).

mod blocking;
mod pipe;
mod smol_glue;
mod tokio_glue;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use ft_session_core::{Config, SessionId};
use rustls::ClientConfig;
use socket2::Socket;

use crate::options::{RuntimeKind, SessionOpts};
use crate::stats::{Probe, Registration, TunnelStats};
use crate::tls;

/// Abort code sent when the local peer reset its connection.
pub const ABORT_LOCAL_RESET: u16 = 0x1001;
/// Abort code sent when the server cannot reach its forward address.
pub const ABORT_FORWARD_UNREACHABLE: u16 = 0x1002;
/// Abort code sent when the tunnel end is stopped (SIGINT, SIGTERM).
pub const ABORT_SHUTDOWN: u16 = 0x1003;
/// After a stop signal, how long the aborts get to reach the peers before
/// the process exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);
/// Bytes each direction copies at once.
pub const COPY_BUFFER: usize = 64 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors), so a
/// persistent error does not spin.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// `ft-session tunnel ...`
#[derive(Debug, Args)]
pub struct TunnelArgs {
    #[command(subcommand)]
    role: Role,
}

/// The two ends of a tunnel.
#[derive(Debug, Subcommand)]
enum Role {
    /// Accept sessions; connect each to the forward address.
    Server(ServerArgs),
    /// Accept local TCP connections; carry each over a session to the server.
    Client(ClientArgs),
}

/// `tunnel server`
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to accept sessions on.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// TCP address every session is connected to.
    #[arg(long, value_name = "ADDR")]
    pub forward: String,
    #[command(flatten)]
    pub opts: SessionOpts,
}

/// `tunnel client`
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The tunnel server's address.
    #[arg(long, value_name = "ADDR")]
    pub server: String,
    /// Local address to accept TCP connections on.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    #[command(flatten)]
    pub opts: SessionOpts,
}

/// Runs a tunnel end until killed.
pub fn run(args: TunnelArgs) -> Result<ExitCode, String> {
    let opts = match &args.role {
        Role::Server(a) => &a.opts,
        Role::Client(a) => &a.opts,
    };
    let stats = TunnelStats::default();
    {
        // Exiting would close the local connections cleanly (FIN): reset them
        // first, and abort the sessions so the far side resets its own.
        let stats = stats.clone();
        ctrlc::set_handler(move || {
            let n = stats.reset_all(ABORT_SHUTDOWN);
            tracing::warn!("stopping: {n} sessions aborted, their local connections reset");
            std::thread::sleep(SHUTDOWN_GRACE);
            std::process::exit(130);
        })
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    if let Some(period) = opts.stats {
        stats
            .print_every(period)
            .map_err(|e| format!("cannot start the stats thread: {e}"))?;
    }
    let result = match (opts.runtime, args.role) {
        (RuntimeKind::Tokio, Role::Server(a)) => tokio_glue::server(a, stats),
        (RuntimeKind::Tokio, Role::Client(a)) => tokio_glue::client(a, stats),
        (RuntimeKind::Smol, Role::Server(a)) => smol_glue::server(a, stats),
        (RuntimeKind::Smol, Role::Client(a)) => smol_glue::client(a, stats),
        (RuntimeKind::Std, Role::Server(a)) => blocking::server(a, stats),
        (RuntimeKind::Std, Role::Client(a)) => blocking::client(a, stats),
    };
    result.map(|()| ExitCode::SUCCESS)
}

/// Announces the bound address on stdout (scripts and tests read it; a port
/// of 0 in `--listen` picks a free one).
pub fn announce(role: &str, addr: SocketAddr, detail: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr} ({role}, {detail})");
    let _ = out.flush();
}

/// Arms a reset: the socket's last close sends an RST instead of a FIN.
/// `handle` is a duplicate of the local connection's descriptor (socket
/// options belong to the socket, not the descriptor); the caller then drops
/// every handle without shutting anything down.
pub fn arm_reset(handle: &Socket) {
    // Failing here leaves a clean close; say so, it is the one thing the
    // tunnel promises not to do.
    if let Err(e) = handle.set_linger(Some(Duration::ZERO)) {
        tracing::error!("cannot set SO_LINGER 0 on a local connection to reset it: {e}");
    }
}

/// How a pipe between a local connection and a session ended.
#[derive(Debug)]
pub enum PipeEnd {
    /// Both directions reached end of stream.
    Done,
    /// The session failed: the local connection must be reset.
    SessionLost(std::io::Error),
    /// The local connection failed: the session must be aborted.
    LocalFailed(std::io::Error),
}

/// A session piped to a local connection: counted in the stats from
/// [`Piped::start`] until [`Piped::finish`] acts on how the pipe ended.
pub struct Piped<'a> {
    session: Arc<dyn Probe>,
    reset: Arc<Socket>,
    reg: Registration,
    id: String,
    label: &'a str,
}

impl<'a> Piped<'a> {
    /// Counts `session` (its local connection reset through `reset`, a
    /// duplicate of its descriptor) and says it started.
    pub fn start(
        stats: &TunnelStats,
        session: Arc<dyn Probe>,
        id: Option<SessionId>,
        reset: Arc<Socket>,
        label: &'a str,
    ) -> Piped<'a> {
        let reg = stats.register(session.clone(), reset.clone());
        let id = id.map(|id| id.to_string()).unwrap_or_default();
        tracing::info!(session = %id, "{label}: session started");
        Piped {
            session,
            reset,
            reg,
            id,
            label,
        }
    }

    /// Says how the pipe ended and acts on it: a lost session resets the
    /// local connection, a failed local connection aborts the session (and
    /// is reset). Every handle is then dropped without a shutdown: a clean
    /// end already sent its FIN, a reset sends an RST.
    pub fn finish(mut self, end: PipeEnd) {
        let (id, label) = (&self.id, self.label);
        let c = self.session.counters();
        match end {
            PipeEnd::Done => tracing::info!(
                session = %id,
                reconnects = c.reconnects,
                retransmitted = c.retransmitted,
                "{label}: session ended cleanly"
            ),
            PipeEnd::SessionLost(e) => {
                tracing::warn!(session = %id, "{label}: session lost ({e}); resetting the local connection");
                self.reg.mark_lost();
                arm_reset(&self.reset);
            }
            PipeEnd::LocalFailed(e) => {
                tracing::warn!(session = %id, "{label}: local connection failed ({e}); aborting the session");
                self.session.abort(ABORT_LOCAL_RESET);
                arm_reset(&self.reset);
            }
        }
    }
}

/// How a tunnel client opens sessions: TCP, or TLS through a runtime's
/// connector `T`.
// Clippy sizes the generic `Tls(T)` as empty; every connector holds a
// `Config` too, so the variants are alike in size.
#[allow(clippy::large_enum_variant)]
pub enum Dial<T> {
    /// Plain TCP to the server.
    Tcp {
        /// The server's address.
        server: String,
        /// The sessions' configuration.
        config: Config,
    },
    /// TLS to the server.
    Tls(T),
}

/// A runtime's TLS connector maker ([`tls::tokio_connector`] and its
/// siblings): client config, server address, certificate name, session
/// configuration.
type TlsConnector<T> = fn(Arc<ClientConfig>, String, &str, Config) -> Result<T, String>;

impl<T> Dial<T> {
    /// The dial `a` asks for; `tls` makes the runtime's TLS connector.
    pub fn new(a: &ClientArgs, config: Config, tls: TlsConnector<T>) -> Result<Dial<T>, String> {
        if !a.opts.tls.tls {
            return Ok(Dial::Tcp {
                server: a.server.clone(),
                config,
            });
        }
        let name = a
            .opts
            .tls
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(&a.server).to_owned());
        let tls_config = tls::client_config(&a.opts.tls)?;
        Ok(Dial::Tls(tls(tls_config, a.server.clone(), &name, config)?))
    }
}

/// The host part of `host:port`, for TLS server names.
pub fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}
