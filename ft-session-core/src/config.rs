//! Configuration and its named limits. Every limit the protocol relies on is here.

use std::time::{Duration, Instant};

use crate::error::SessionError;

/// Default for [`Config::max_reconnect_time`] (the paper's MAX_RECON_TIME).
pub const DEFAULT_MAX_RECONNECT_TIME: Duration = Duration::from_secs(30);
/// Default for [`Config::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Config::heartbeat_interval`].
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default for [`Config::idle_timeout`]: ten missed heartbeats, so one lost
/// heartbeat never kills a transport.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Config::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`Config::max_frame_payload`].
pub const DEFAULT_MAX_FRAME_PAYLOAD: u32 = 64 * 1024;
/// Largest accepted [`Config::max_frame_payload`].
pub const MAX_FRAME_PAYLOAD_LIMIT: u32 = 16 * 1024 * 1024;
/// Default for [`Config::send_buffer_capacity`].
pub const DEFAULT_SEND_BUFFER_CAPACITY: usize = 4 * 1024 * 1024;
/// Default for [`Config::recv_buffer_capacity`].
pub const DEFAULT_RECV_BUFFER_CAPACITY: usize = 4 * 1024 * 1024;
/// Default for [`Config::backoff_initial`].
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Default for [`Config::backoff_max`].
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default for [`Config::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default for [`Config::max_parked`].
pub const DEFAULT_MAX_PARKED: usize = 1_000;
/// Default for [`Config::parked_bytes_budget`].
pub const DEFAULT_PARKED_BYTES_BUDGET: u64 = 1 << 30;
/// Default for [`Config::max_pending_handshakes`].
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1024;
/// Default for [`Config::max_parked_unproven`].
pub const DEFAULT_MAX_PARKED_UNPROVEN: usize = 100;
/// Default for [`Config::implicit_retention_budget`]: 4 GiB, some 3,400
/// sessions with the adapters' default buffers (b of about 1.2 MiB each).
pub const DEFAULT_IMPLICIT_RETENTION_BUDGET: u64 = 4 << 30;
/// Longest duration [`Config::validate`] accepts (100 years): deadlines are
/// `now + duration`, and an `Instant` cannot hold an arbitrary sum.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Largest [`Config::implicit_margin`] and [`Config::implicit_max_buffer`]
/// accepted (1 TiB): sums of them stay far from `u64::MAX`.
pub const MAX_IMPLICIT_BYTES: u64 = 1 << 40;
/// Default for [`Config::max_peer_send_buffer`]: the default
/// [`Config::send_buffer_capacity`], so a peer with the default configuration
/// never has to wait for acknowledgments this side cannot read.
pub const DEFAULT_MAX_PEER_SEND_BUFFER: u64 = DEFAULT_SEND_BUFFER_CAPACITY as u64;
/// Default for [`Config::implicit_max_buffer`]: twice Linux's default
/// `rmem_max`/`wmem_max` ceiling of a pinned buffer is far below this.
pub const DEFAULT_IMPLICIT_MAX_BUFFER: u64 = 64 * 1024 * 1024;
/// Linux lets a pinned send queue overshoot SO_SNDBUF by up to one packet
/// buffer (65,112 bytes measured on loopback): the implicit bound adds this.
pub const IMPLICIT_PACKET_MARGIN: u64 = 64 * 1024;

/// When bytes leave the stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleasePolicy {
    /// Released on the peer's cumulative acknowledgments. Correct through
    /// proxies and TLS terminators; retained bytes never exceed
    /// [`Config::send_buffer_capacity`].
    Ack,
    /// The paper's policy: no acknowledgments; keep the last
    /// b = own send buffer + peer receive buffer + margin bytes written to the
    /// transport. Only correct when both transports' buffers are pinned and
    /// their effective sizes are given (see [`crate::TransportInfo`]).
    /// Takes effect only when the peer chose it too: with a peer under
    /// [`ReleasePolicy::Ack`] this side releases on acknowledgments as well
    /// ([`crate::Session::effective_release_policy`]), or its data could
    /// stall the peer's acknowledgments behind it.
    Implicit,
}

/// Configuration of one session (and, for the server, of its connection set).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// How long a session survives without a transport before it expires.
    pub max_reconnect_time: Duration,
    /// How long a new client session tries to make its first connection
    /// (with backoff) before it fails with [`SessionError::Unreachable`].
    pub connect_timeout: Duration,
    /// A heartbeat is sent after this long without transmitting.
    pub heartbeat_interval: Duration,
    /// A transport that delivered nothing for this long is declared dead.
    pub idle_timeout: Duration,
    /// A handshake must complete within this time after the transport is up.
    pub handshake_timeout: Duration,
    /// Largest data frame payload sent or accepted.
    pub max_frame_payload: u32,
    /// Bytes `send`/`write` may queue before backpressure (with
    /// [`ReleasePolicy::Ack`], the most bytes retained).
    pub send_buffer_capacity: usize,
    /// The receive window: how far beyond what the application has read
    /// this side acknowledges received bytes (PROTOCOL.md R10). From a peer
    /// that releases on acknowledgments the session may buffer this plus the
    /// peer's send buffer (at most [`Config::max_peer_send_buffer`]) and keeps
    /// reading the transport up to there; from a peer under the implicit
    /// policy it buffers this much, then asks the adapter to stop reading.
    pub recv_buffer_capacity: usize,
    /// How the stream buffer is released.
    pub release_policy: ReleasePolicy,
    /// Largest peer send buffer (the `retain_capacity` it announces) this
    /// side reads ahead for: received bytes beyond
    /// [`Config::recv_buffer_capacity`] that it buffers so that the peer's
    /// acknowledgments, which travel behind the peer's data, can always be
    /// read (PROTOCOL.md section 4, flow control). A peer announcing more is
    /// acknowledged as if its buffer were this large; a peer cannot make a
    /// session buffer more than `recv_buffer_capacity` plus this.
    pub max_peer_send_buffer: u64,
    /// Extra bytes kept beyond the implicit bound; `None` means
    /// [`IMPLICIT_PACKET_MARGIN`] plus one maximum frame.
    pub implicit_margin: Option<u64>,
    /// Largest transport buffer (own or announced by the peer) the implicit
    /// bound accepts: a peer cannot make this side retain without limit.
    pub implicit_max_buffer: u64,
    /// First reconnect delay after a failed attempt (the first attempt is immediate).
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Server: most sessions (attached or parked) in the connection set.
    pub max_sessions: usize,
    /// Server: most parked sessions; beyond it the oldest parked is evicted
    /// (unproven ones first, see [`Config::max_parked_unproven`]).
    pub max_parked: usize,
    /// Server: most parked sessions that never proved anything (no payload
    /// byte or acknowledgment received from the client, no resume
    /// verified), and most tombstones of such sessions. Beyond it the oldest
    /// of them is evicted; they are also evicted first when
    /// [`Config::max_parked`] or [`Config::parked_bytes_budget`] is exceeded,
    /// so a flood of HELLOs never pushes out a proven session.
    pub max_parked_unproven: usize,
    /// Server: most bytes retained by parked sessions together; beyond it the
    /// oldest parked is evicted (unproven ones first). A parked session
    /// accepts no writes, so what it retains cannot grow behind the budget.
    pub parked_bytes_budget: u64,
    /// Server: most transports waiting for their first message at once
    /// (each costs a [`crate::HandshakeReader`] until its deadline); a
    /// transport beyond it is dropped at once and counted in
    /// [`crate::EndpointStats::refused_handshakes`].
    pub max_pending_handshakes: usize,
    /// Server: most bytes the implicit bounds of all live sessions may add
    /// up to (each session may retain its bound b, which depends on the
    /// buffer size its client announces). A HELLO or RESUME that would
    /// exceed it is refused with `BUSY` (the client retries).
    pub implicit_retention_budget: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_reconnect_time: DEFAULT_MAX_RECONNECT_TIME,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame_payload: DEFAULT_MAX_FRAME_PAYLOAD,
            send_buffer_capacity: DEFAULT_SEND_BUFFER_CAPACITY,
            recv_buffer_capacity: DEFAULT_RECV_BUFFER_CAPACITY,
            release_policy: ReleasePolicy::Ack,
            max_peer_send_buffer: DEFAULT_MAX_PEER_SEND_BUFFER,
            implicit_margin: None,
            implicit_max_buffer: DEFAULT_IMPLICIT_MAX_BUFFER,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_parked: DEFAULT_MAX_PARKED,
            max_parked_unproven: DEFAULT_MAX_PARKED_UNPROVEN,
            parked_bytes_budget: DEFAULT_PARKED_BYTES_BUDGET,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            implicit_retention_budget: DEFAULT_IMPLICIT_RETENTION_BUDGET,
        }
    }
}

impl Config {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), SessionError> {
        if self.max_frame_payload == 0 || self.max_frame_payload > MAX_FRAME_PAYLOAD_LIMIT {
            return Err(SessionError::Config(
                "max_frame_payload must be in 1..=16 MiB",
            ));
        }
        if self.send_buffer_capacity == 0 || self.recv_buffer_capacity == 0 {
            return Err(SessionError::Config("buffer capacities must be positive"));
        }
        if self.heartbeat_interval.is_zero() || self.idle_timeout <= self.heartbeat_interval {
            return Err(SessionError::Config(
                "idle_timeout must exceed a positive heartbeat_interval",
            ));
        }
        if self.handshake_timeout.is_zero()
            || self.backoff_initial.is_zero()
            || self.connect_timeout.is_zero()
        {
            return Err(SessionError::Config("timeouts must be positive"));
        }
        if self.max_pending_handshakes == 0 {
            return Err(SessionError::Config(
                "max_pending_handshakes must be positive",
            ));
        }
        let durations = [
            self.max_reconnect_time,
            self.connect_timeout,
            self.heartbeat_interval,
            self.idle_timeout,
            self.handshake_timeout,
            self.backoff_initial,
            self.backoff_max,
        ];
        if durations.iter().any(|d| *d > MAX_DURATION) {
            return Err(SessionError::Config("durations must be at most 100 years"));
        }
        if self.implicit_max_buffer > MAX_IMPLICIT_BYTES
            || self.implicit_margin.is_some_and(|m| m > MAX_IMPLICIT_BYTES)
        {
            return Err(SessionError::Config(
                "implicit_max_buffer and implicit_margin must be at most 1 TiB",
            ));
        }
        Ok(())
    }

    /// The margin added to the implicit bound.
    pub fn effective_implicit_margin(&self) -> u64 {
        self.implicit_margin
            .unwrap_or(IMPLICIT_PACKET_MARGIN + u64::from(self.max_frame_payload))
    }
}

/// `now + d`, saturating instead of panicking: only a configuration that
/// [`Config::validate`] refuses can come near the end of `Instant`'s range,
/// and such a deadline then falls at `now + MAX_DURATION` or as far as the
/// platform can represent (never earlier than `now`).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    let mut d = d.min(MAX_DURATION);
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

/// What the adapter knows of one transport: the effective (read-back) kernel
/// buffer sizes, needed by [`ReleasePolicy::Implicit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransportInfo {
    /// Effective send buffer of this side's transport, in bytes.
    pub send_buffer: Option<u64>,
    /// Effective receive buffer of this side's transport, in bytes.
    pub recv_buffer: Option<u64>,
}

impl TransportInfo {
    /// The info as the core must see it when the adapter's writer may hold
    /// one frame the kernel has not taken yet (it writes each `Transmit`
    /// whole before polling the next): under the implicit policy those bytes
    /// are already counted as handed to the transport, so they are added to
    /// the send buffer and b covers them. The core's own margin (one packet
    /// buffer and one frame) stays for the kernel's overshoot and the
    /// receiver's partially decoded frame. Unknown sizes stay unknown.
    pub fn with_writer_hold(self, cfg: &Config) -> TransportInfo {
        TransportInfo {
            send_buffer: self
                .send_buffer
                .map(|s| s.saturating_add(u64::from(cfg.max_frame_payload))),
            ..self
        }
    }
}

/// Requested `SO_SNDBUF`/`SO_RCVBUF` when a session uses
/// [`ReleasePolicy::Implicit`] and [`SocketOptions::buffer_size`] is not set.
/// Linux doubles it: the effective size read back (512 KiB) is what the
/// bound uses.
pub const DEFAULT_IMPLICIT_SOCKET_BUFFER: usize = 256 * 1024;

/// What an adapter pins on the TCP sockets it makes itself, and what it then
/// reports as [`TransportInfo`]. Plain data: the adapters do the socket calls.
///
/// The implicit release policy keeps only the last
/// `b = own send buffer + peer receive buffer + margin` bytes, so both kernel
/// buffers must be **pinned** (set before connect, or on the listening
/// socket before listen, which turns Linux's autotuning off) and their
/// **effective** sizes read back (Linux doubles the requested value and caps
/// it at twice `wmem_max`/`rmem_max`). With the acknowledgment policy
/// adapters pin only when asked to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// Requested `SO_SNDBUF` and `SO_RCVBUF`. `None`: pin
    /// [`DEFAULT_IMPLICIT_SOCKET_BUFFER`] under the implicit policy, leave
    /// the kernel's autotuning alone under the acknowledgment policy.
    pub buffer_size: Option<usize>,
    /// Bytes a middlebox on the path (a proxy, a relay) may hold in each
    /// direction, beyond both endpoints' kernels: its own socket buffers and
    /// copy buffer. The implicit bound cannot see them, so they are added to
    /// this side's send buffer. Set it on both sides (each covers the bytes
    /// it sends). 0 (the default) for a direct path.
    pub middlebox_in_flight: u64,
}

impl SocketOptions {
    /// Defaults: see the fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins `SO_SNDBUF`/`SO_RCVBUF` to `bytes` (requested; the effective,
    /// read-back value is used).
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = Some(bytes);
        self
    }

    /// Declares what a middlebox on the path may hold per direction.
    pub fn middlebox_in_flight(mut self, bytes: u64) -> Self {
        self.middlebox_in_flight = bytes;
        self
    }

    /// The size to pin before connect/listen under `policy`, if any.
    pub fn pin_for(&self, policy: ReleasePolicy) -> Option<usize> {
        self.buffer_size.or(match policy {
            ReleasePolicy::Implicit => Some(DEFAULT_IMPLICIT_SOCKET_BUFFER),
            ReleasePolicy::Ack => None,
        })
    }

    /// What to report for a connected or accepted socket: `sizes` are its
    /// effective `(SO_SNDBUF, SO_RCVBUF)` read back if its buffers were
    /// pinned, `None` if they were not (an autotuned size read now would be
    /// a guessed, too small bound). The middlebox's bytes are added to the
    /// send buffer.
    pub fn transport_info(&self, sizes: Option<(usize, usize)>) -> TransportInfo {
        match sizes {
            Some((send, recv)) => TransportInfo {
                send_buffer: Some((send as u64).saturating_add(self.middlebox_in_flight)),
                recv_buffer: Some(recv as u64),
            },
            None => TransportInfo::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_only_under_implicit_unless_asked() {
        let o = SocketOptions::new();
        assert_eq!(o.pin_for(ReleasePolicy::Ack), None);
        assert_eq!(
            o.pin_for(ReleasePolicy::Implicit),
            Some(DEFAULT_IMPLICIT_SOCKET_BUFFER)
        );
        let o = o.buffer_size(4096);
        assert_eq!(o.pin_for(ReleasePolicy::Ack), Some(4096));
        assert_eq!(o.pin_for(ReleasePolicy::Implicit), Some(4096));
    }

    #[test]
    fn info_adds_middlebox_and_one_held_frame() {
        let o = SocketOptions::new().middlebox_in_flight(1000);
        assert_eq!(o.transport_info(None), TransportInfo::default());
        let info = o.transport_info(Some((8192, 4096)));
        assert_eq!(
            (info.send_buffer, info.recv_buffer),
            (Some(9192), Some(4096))
        );
        let cfg = Config::default();
        let held = info.with_writer_hold(&cfg);
        assert_eq!(
            held.send_buffer,
            Some(9192 + u64::from(cfg.max_frame_payload))
        );
        assert_eq!(held.recv_buffer, Some(4096));
        assert_eq!(
            TransportInfo::default().with_writer_hold(&cfg),
            TransportInfo::default()
        );
    }
}
