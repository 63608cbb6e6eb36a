//! Options shared by the tunnel's server and client: runtime, session
//! configuration, TLS files.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ft_session_core::{Config, ReleasePolicy};

/// Which adapter carries the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// ft-session-tokio on a multi-threaded Tokio runtime.
    Tokio,
    /// ft-session-smol on smol's global executor.
    Smol,
    /// ft-session-std: blocking, threads per connection.
    Std,
}

/// When a sender may forget bytes it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Release {
    /// On the peer's acknowledgments (default; sound through proxies and TLS).
    Ack,
    /// The paper's policy: keep send buffer + peer receive buffer (pinned sockets, no TLS).
    Implicit,
}

/// Session options of both ends.
#[derive(Debug, Clone, Args)]
pub struct SessionOpts {
    /// Adapter (and runtime) that carries the sessions.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Tokio)]
    pub runtime: RuntimeKind,
    /// Seconds a session survives without a transport before it is lost
    /// (its local connection is then reset).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub reconnect_time: Option<Duration>,
    /// Client: seconds a new session may take to make its first connection.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub connect_timeout: Option<Duration>,
    /// Seconds without traffic after which a heartbeat is sent.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub heartbeat: Option<Duration>,
    /// Seconds without anything received after which a transport is declared dead.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub idle_timeout: Option<Duration>,
    /// Bytes each session retains for retransmission (its send buffer).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub buffer: Option<u64>,
    /// Release policy of the retained bytes.
    #[arg(long, value_enum, default_value_t = Release::Ack)]
    pub release: Release,
    /// Server: connections waiting for their first message (TLS handshakes
    /// included) at once; beyond it a new connection is closed unanswered.
    #[arg(long, value_name = "N")]
    pub max_pending_handshakes: Option<usize>,
    /// Print sessions, reconnects and retransmitted bytes every SECS seconds (stdout).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub stats: Option<Duration>,
    /// TLS on the transport (rustls).
    #[command(flatten)]
    pub tls: TlsOpts,
}

/// TLS files. The server takes `--cert`/`--key`, or generates a self-signed
/// pair and writes its certificate to `--self-signed-cert`; the client
/// trusts `--ca`.
#[derive(Debug, Clone, Args)]
pub struct TlsOpts {
    /// Run every transport over TLS.
    #[arg(long)]
    pub tls: bool,
    /// Server: certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Server: private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Server without --cert/--key: where to write the generated self-signed
    /// certificate (for the client's --ca).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "ft-session-self-signed.pem"
    )]
    pub self_signed_cert: PathBuf,
    /// Client: certificate authority to trust (PEM), e.g. the server's self-signed certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client: name the server's certificate must carry (default: the --server host).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
}

impl SessionOpts {
    /// The session configuration these options describe.
    pub fn config(&self) -> Result<Config, String> {
        let mut c = Config::default();
        if let Some(t) = self.reconnect_time {
            c.max_reconnect_time = t;
        }
        if let Some(t) = self.connect_timeout {
            c.connect_timeout = t;
        }
        if let Some(t) = self.heartbeat {
            c.heartbeat_interval = t;
        }
        if let Some(t) = self.idle_timeout {
            c.idle_timeout = t;
        } else if self.heartbeat.is_some() {
            // Keep the default ratio: ten missed heartbeats.
            c.idle_timeout = c.heartbeat_interval * 10;
        }
        if let Some(b) = self.buffer {
            c.send_buffer_capacity = usize::try_from(b).map_err(|_| "--buffer too large")?;
        }
        if let Some(n) = self.max_pending_handshakes {
            c.max_pending_handshakes = n;
        }
        c.release_policy = match self.release {
            Release::Ack => ReleasePolicy::Ack,
            Release::Implicit => ReleasePolicy::Implicit,
        };
        if self.tls.tls && self.release == Release::Implicit {
            // TLS buffers bytes no kernel reports: the implicit bound would be a guess.
            return Err(
                "--release implicit needs plain TCP transports; use --release ack with --tls"
                    .into(),
            );
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// Seconds, possibly fractional ("0.5").
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("`{s}` is not a valid duration"))
}

/// Bytes with an optional binary suffix: 65536, 64K, 16M, 1G (KiB, MiB, GiB).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let mult = match unit.as_str() {
                "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                _ => return Err(format!("unknown unit in `{s}` (use K, M or G)")),
            };
            (&t[..i], mult)
        }
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("12X").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
