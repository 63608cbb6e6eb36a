//! Socket options shared by the runtime bindings: what the implicit release
//! policy needs from their TCP sockets. No socket code lives here (each
//! binding pins and reads back with its runtime's own socket types); this is
//! the one place that decides what to pin and what to report.

use ft_session_core::{Config, ReleasePolicy, TransportInfo};

/// Requested `SO_SNDBUF`/`SO_RCVBUF` when a session uses
/// [`ReleasePolicy::Implicit`] and [`SocketOptions::buffer_size`] is not set.
/// Linux doubles it (the effective size read back, 512 KiB, is what the
/// bound uses). Same value as the blocking adapter's.
pub const DEFAULT_IMPLICIT_SOCKET_BUFFER: usize = 256 * 1024;

/// How a runtime binding makes its own TCP sockets (`connect_opts`,
/// `Listener::bind_opts` in `ft-session-tokio` and `ft-session-smol`).
///
/// The implicit release policy keeps only the last
/// `b = own send buffer + peer receive buffer + margin` bytes, so both kernel
/// buffers must be **pinned** (set before connect, or on the listening
/// socket before listen, which turns Linux's autotuning off) and their
/// **effective** sizes read back (Linux doubles the requested value and caps
/// it at twice `wmem_max`/`rmem_max`). The bindings do both; with the
/// acknowledgment policy they pin only when asked to.
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

    /// The size a binding must pin before connect/listen for `policy`, if any.
    pub fn pin_for(&self, policy: ReleasePolicy) -> Option<usize> {
        self.buffer_size.or(match policy {
            ReleasePolicy::Implicit => Some(DEFAULT_IMPLICIT_SOCKET_BUFFER),
            ReleasePolicy::Ack => None,
        })
    }

    /// What a binding reports for a connected or accepted socket: `sizes`
    /// are its effective `(SO_SNDBUF, SO_RCVBUF)` read back from the socket
    /// if its buffers were pinned, `None` if they were not (an autotuned
    /// size read now would be a guessed, too small bound). The middlebox's
    /// bytes are added to the send buffer.
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

/// The transport's info as the core must see it. The driver writes each
/// `Transmit` whole before it polls the next output, so it holds at most one
/// frame the kernel has not taken yet: bytes the core already counts as
/// handed to the transport. Under the implicit policy they are added to the
/// send buffer so b covers them (as the blocking adapter does); the core's
/// own margin (one packet buffer and one frame) stays for the kernel's
/// overshoot and the receiver's partially decoded frame. Unknown sizes stay
/// unknown (the core then refuses the implicit policy).
pub(crate) fn with_writer_hold(info: TransportInfo, cfg: &Config) -> TransportInfo {
    TransportInfo {
        send_buffer: info
            .send_buffer
            .map(|s| s.saturating_add(u64::from(cfg.max_frame_payload))),
        ..info
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
    fn info_adds_middlebox_and_one_frame() {
        let o = SocketOptions::new().middlebox_in_flight(1000);
        assert_eq!(o.transport_info(None), TransportInfo::default());
        let info = o.transport_info(Some((8192, 4096)));
        assert_eq!(info.send_buffer, Some(9192));
        assert_eq!(info.recv_buffer, Some(4096));
        let cfg = Config::default();
        let held = with_writer_hold(info, &cfg);
        assert_eq!(
            held.send_buffer,
            Some(9192 + u64::from(cfg.max_frame_payload))
        );
        assert_eq!(held.recv_buffer, Some(4096));
        assert_eq!(
            with_writer_hold(TransportInfo::default(), &cfg),
            TransportInfo::default()
        );
    }
}
