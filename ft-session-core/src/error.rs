//! Typed outcomes: what ended a session, and why a call could not proceed.

use std::io;

use crate::frame::{Code, DecodeError};

/// A rule of `docs/PROTOCOL.md` the peer broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Bytes could not be decoded (bad magic, unknown type, oversized frame...).
    #[error("malformed input: {0}")]
    Decode(#[from] DecodeError),
    /// A data frame did not start at the next expected offset.
    #[error("data at offset {got}, expected {expected}")]
    DataOffset {
        /// Offset the frame carried.
        got: u64,
        /// Offset the receiver expected.
        expected: u64,
    },
    /// An acknowledgment for bytes that were never sent.
    #[error("acknowledgment of {acked} bytes but only {sent} were sent")]
    AckBeyondSent {
        /// Acknowledged count.
        acked: u64,
        /// Bytes ever sent.
        sent: u64,
    },
    /// An acknowledgment smaller than an earlier one.
    #[error("acknowledgment went back from {previous} to {acked}")]
    AckRegressed {
        /// Earlier acknowledgment.
        previous: u64,
        /// This one.
        acked: u64,
    },
    /// A peer's count in a handshake is ahead of what this side ever sent.
    #[error("peer claims {claimed} bytes received but only {sent} were sent")]
    CountAhead {
        /// Claimed count.
        claimed: u64,
        /// Bytes ever sent.
        sent: u64,
    },
    /// A FIN at an offset other than the end of received data, or data after FIN.
    #[error("end of stream at {fin} does not match {received} bytes received")]
    FinOffset {
        /// FIN offset.
        fin: u64,
        /// Bytes received so far.
        received: u64,
    },
    /// Data beyond what the peer may send: its announced send buffer
    /// (`retain_capacity`) past the last count this side acknowledged (an ACK
    /// or a handshake count). A peer that releases on acknowledgments can
    /// never have more unacknowledged bytes than that.
    #[error("data up to {end} but the peer may send only up to {allowed}")]
    BeyondWindow {
        /// One past the last byte of the frame.
        end: u64,
        /// Acknowledged count plus the peer's announced send buffer.
        allowed: u64,
    },
    /// A CLOSE before the peer's FIN.
    #[error("close before end of stream")]
    CloseBeforeFin,
    /// The server's resume proof did not verify.
    #[error("server failed to prove knowledge of the session secret")]
    BadServerProof,
    /// A server answered with another session id than the one resumed.
    #[error("server answered for another session")]
    WrongSessionId,
    /// The server refused the handshake as malformed.
    #[error("server reported our handshake as malformed")]
    RejectedAsMalformed,
    /// The server said the session closed cleanly although this side never closed it.
    #[error("server reports the session closed, but it was not closed here")]
    UnexpectedSessionClosed,
    /// The peer aborted reporting a violation on our side.
    #[error("peer reported a protocol violation")]
    ReportedByPeer,
}

/// Why a session ended with an error. Sticky: once a session has failed every
/// call returns the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer closed the session while this side still had bytes it had not
    /// acknowledged; `undelivered` counts them.
    #[error("session closed by peer; {undelivered} bytes written here were not delivered")]
    ClosedByPeer {
        /// Bytes accepted by `send`/`write` that the peer never received.
        undelivered: u64,
    },
    /// The session was aborted.
    #[error("session aborted by {} with code {code:?}", if *.by_peer { "peer" } else { "this side" })]
    Aborted {
        /// The abort code.
        code: Code,
        /// True if the peer aborted.
        by_peer: bool,
    },
    /// The transport stayed down longer than the maximum reconnect time (or the
    /// first connect never succeeded within it).
    #[error("no transport for longer than the maximum reconnect time")]
    Expired,
    /// A new session found no server within the connect timeout.
    #[error("no server reached within the connect timeout")]
    Unreachable,
    /// The server does not know the session (expired, evicted, or restarted).
    #[error("server does not know this session (expired, evicted or restarted)")]
    UnknownSession,
    /// The server dropped this parked session to respect its limits.
    #[error("session evicted by the server's limits")]
    Evicted,
    /// Bytes needed to resume had already been released: the stream cannot
    /// continue without a gap.
    #[error(
        "data lost: peer needs offset {needed} but the oldest byte retained is {retained_from}"
    )]
    DataLost {
        /// Offset the receiving side needed.
        needed: u64,
        /// Oldest offset the sending side still had.
        retained_from: u64,
    },
    /// The peer broke a protocol rule.
    #[error("protocol violation: {0}")]
    ProtocolViolation(#[from] Violation),
    /// The server speaks another protocol version.
    #[error("server speaks protocol version {server}, this side speaks {ours}", ours = crate::frame::VERSION)]
    UnsupportedVersion {
        /// The server's version.
        server: u64,
    },
    /// The configuration cannot work (e.g. implicit release without buffer sizes).
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The session already ended cleanly.
    #[error("session is closed")]
    Closed,
}

impl SessionError {
    /// The code sent in an ABORT frame for this error, where the peer must learn it.
    pub(crate) fn abort_code(&self) -> Code {
        match self {
            SessionError::DataLost { .. } => Code::DataLost,
            SessionError::ProtocolViolation(_) => Code::ProtocolViolation,
            SessionError::Expired => Code::Expired,
            SessionError::Evicted => Code::Evicted,
            SessionError::Config(_) => Code::Incompatible,
            SessionError::Aborted { code, .. } => *code,
            _ => Code::Other(0),
        }
    }

    /// The error a peer's ABORT with `code` means here.
    pub(crate) fn from_peer_abort(code: Code) -> SessionError {
        match code {
            Code::DataLost => SessionError::DataLost {
                needed: 0,
                retained_from: 0,
            },
            Code::ProtocolViolation => SessionError::ProtocolViolation(Violation::ReportedByPeer),
            Code::Expired => SessionError::Expired,
            Code::Evicted => SessionError::Evicted,
            code => SessionError::Aborted {
                code,
                by_peer: true,
            },
        }
    }

    /// The session error inside an `io::Error` an adapter returned (the
    /// typed reason a read, write, connect or close failed), if it has one.
    pub fn from_io(e: &io::Error) -> Option<&SessionError> {
        e.get_ref()?.downcast_ref::<SessionError>()
    }

    /// The closest `io::ErrorKind`.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            SessionError::ClosedByPeer { .. } => io::ErrorKind::BrokenPipe,
            SessionError::Aborted { .. } => io::ErrorKind::ConnectionAborted,
            SessionError::Expired => io::ErrorKind::TimedOut,
            SessionError::Unreachable => io::ErrorKind::ConnectionRefused,
            SessionError::UnknownSession | SessionError::Evicted => {
                io::ErrorKind::ConnectionRefused
            }
            SessionError::DataLost { .. } => io::ErrorKind::ConnectionReset,
            SessionError::ProtocolViolation(_) => io::ErrorKind::InvalidData,
            SessionError::UnsupportedVersion { .. } => io::ErrorKind::Unsupported,
            SessionError::Config(_) => io::ErrorKind::InvalidInput,
            SessionError::Closed => io::ErrorKind::NotConnected,
        }
    }
}

impl From<SessionError> for io::Error {
    fn from(e: SessionError) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

/// Why `send`/`write` accepted nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The stream buffer is full: wait for [`crate::Event::Writable`].
    #[error("stream buffer full")]
    Blocked,
    /// `shutdown` or `close` was called: no more data may be sent.
    #[error("sending direction already shut down")]
    Finished,
    /// The session ended.
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        match e {
            WriteError::Blocked => io::Error::new(io::ErrorKind::WouldBlock, e),
            WriteError::Finished => io::Error::new(io::ErrorKind::BrokenPipe, e),
            WriteError::Session(s) => s.into(),
        }
    }
}

/// Why `read` returned nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No bytes are available yet: wait for [`crate::Event::Readable`].
    #[error("no data available")]
    Blocked,
    /// The session ended; all bytes received before were delivered first.
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Blocked => io::Error::new(io::ErrorKind::WouldBlock, e),
            ReadError::Session(s) => s.into(),
        }
    }
}
