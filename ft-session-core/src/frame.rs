//! Wire format v1: handshake messages and frames (see `docs/PROTOCOL.md`).
//!
//! Every integer is big-endian. Handshake messages start with [`MAGIC`], the
//! version byte and a type byte; the session id, where present, sits at
//! [`SESSION_ID_OFFSET`] so a load balancer can stick on it.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The four bytes that open every handshake message.
pub const MAGIC: [u8; 4] = *b"FTSS";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of a session id in bytes.
pub const SESSION_ID_LEN: usize = 16;
/// Length of the resume secret in bytes.
pub const SECRET_LEN: usize = 32;
/// Length of a resume or accept proof (HMAC-SHA256) in bytes.
pub const PROOF_LEN: usize = 32;
/// Offset of the session id in a `SERVER_HELLO` and a `RESUME` message: behind
/// the fixed tag (magic, version, type).
pub const SESSION_ID_OFFSET: usize = 6;
/// Length of the handshake tag: magic, version, type.
pub const TAG_LEN: usize = 6;

/// Handshake message type: client's fresh hello.
pub const T_HELLO: u8 = 0x10;
/// Handshake message type: client's resume request.
pub const T_RESUME: u8 = 0x11;
/// Handshake message type: server's answer to a fresh hello.
pub const T_SERVER_HELLO: u8 = 0x20;
/// Handshake message type: server accepts a resume.
pub const T_RESUME_OK: u8 = 0x21;
/// Handshake message type: server refuses a handshake.
pub const T_REJECT: u8 = 0x22;
/// Handshake message type: server ends a resumed session, authenticated.
pub const T_ENDED: u8 = 0x23;

/// Frame type: stream data.
pub const F_DATA: u8 = 0x01;
/// Frame type: cumulative acknowledgment.
pub const F_ACK: u8 = 0x02;
/// Frame type: heartbeat.
pub const F_HEARTBEAT: u8 = 0x03;
/// Frame type: end of the sender's direction.
pub const F_FIN: u8 = 0x04;
/// Frame type: session close.
pub const F_CLOSE: u8 = 0x05;
/// Frame type: session abort.
pub const F_ABORT: u8 = 0x06;

/// Bytes in a data frame's header (type, offset, length).
pub const DATA_HEADER_LEN: usize = 13;
/// Size of the largest fixed-size frame header.
pub const MAX_HEAD_LEN: usize = 16;

/// Length of `HELLO`.
pub const HELLO_LEN: usize = TAG_LEN + PARAMS_LEN;
/// Length of `RESUME`.
pub const RESUME_LEN: usize = TAG_LEN + SESSION_ID_LEN + 8 + 8 + 8 + PARAMS_LEN + PROOF_LEN;
/// Length of `SERVER_HELLO`.
pub const SERVER_HELLO_LEN: usize = TAG_LEN + SESSION_ID_LEN + SECRET_LEN + PARAMS_LEN;
/// Length of `RESUME_OK`.
pub const RESUME_OK_LEN: usize = TAG_LEN + SESSION_ID_LEN + 8 + PARAMS_LEN + PROOF_LEN;
/// Length of `REJECT`.
pub const REJECT_LEN: usize = TAG_LEN + 2 + 8;
/// Length of `ENDED`.
pub const ENDED_LEN: usize = TAG_LEN + SESSION_ID_LEN + 2 + 8 + PROOF_LEN;
/// Length of the encoded [`Params`].
pub const PARAMS_LEN: usize = 1 + 8 + 8;

/// A session id: 16 random bytes chosen by the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// What went wrong while decoding bytes from the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message does not start with the magic bytes `FTSS`.
    #[error("bad magic: not an ft-session peer")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A handshake message type that is not valid here.
    #[error("unexpected handshake message type {0:#04x}")]
    UnexpectedMessage(u8),
    /// A frame type this version does not define.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    /// A data frame longer than the configured maximum.
    #[error("data frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Length announced by the frame.
        len: u32,
        /// Configured maximum payload.
        max: u32,
    },
    /// Reserved flag bits were set.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// A data frame with no payload.
    #[error("empty data frame")]
    EmptyData,
}

/// Parameters each side announces in its handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Params {
    /// The sender of this message releases its stream buffer on acknowledgments
    /// and asks the peer to send them.
    pub wants_acks: bool,
    /// Capacity of the sender's stream buffer in bytes (the peer acknowledges
    /// at least every quarter of it).
    pub retain_capacity: u64,
    /// The sender's transport receive buffer in bytes (0 if unknown); the peer
    /// uses it for the implicit retention bound.
    pub recv_buffer: u64,
}

impl Params {
    fn put(&self, out: &mut BytesMut) {
        out.put_slice(&self.to_wire());
    }

    /// The 17 bytes on the wire (also what the proofs cover).
    pub fn to_wire(&self) -> [u8; PARAMS_LEN] {
        let mut w = [0u8; PARAMS_LEN];
        let mut b: &mut [u8] = &mut w;
        b.put_u8(u8::from(self.wants_acks));
        b.put_u64(self.retain_capacity);
        b.put_u64(self.recv_buffer);
        w
    }

    fn get(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let flags = buf.get_u8();
        if flags & !1 != 0 {
            return Err(DecodeError::ReservedFlags(flags));
        }
        Ok(Params {
            wants_acks: flags & 1 == 1,
            retain_capacity: buf.get_u64(),
            recv_buffer: buf.get_u64(),
        })
    }
}

/// The client's request to resume a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Resume {
    /// The session to resume.
    pub session_id: SessionId,
    /// Strictly increasing per session; a replay carries an old one.
    pub attempt: u64,
    /// Payload bytes the client has received from the server.
    pub received: u64,
    /// Oldest offset the client still retains: if the server received less,
    /// the stream cannot continue, and the server says so to both sides.
    pub retained_from: u64,
    /// The client's parameters on the new transport.
    pub params: Params,
    /// HMAC over (session id, attempt, received, retained_from, params) with the session secret.
    pub proof: [u8; PROOF_LEN],
}

/// The first message of a client on a new transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ClientHello {
    /// Open a new session.
    Fresh(Params),
    /// Resume an existing session.
    Resume(Resume),
}

/// Why a server refuses a handshake, or why a side aborts a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Code {
    /// Unknown, expired or unauthenticated session: one answer for all, so
    /// a prober learns nothing.
    UnknownSession,
    /// The server does not speak the client's version; detail is its version.
    UnsupportedVersion,
    /// The server is at its session limit.
    Busy,
    /// The handshake message was malformed.
    Malformed,
    /// The session was closed cleanly; the resume is answered after its proof verified.
    SessionClosed,
    /// The peer needs bytes that are no longer retained.
    DataLost,
    /// The peer broke a protocol rule.
    ProtocolViolation,
    /// The session expired while its transport was down.
    Expired,
    /// Evicted by the server's limits on parked sessions.
    Evicted,
    /// The parameters exchanged cannot work on this side (e.g. the implicit
    /// policy without buffer sizes).
    Incompatible,
    /// The application aborted the session with this code (0x1000..=0xFFFF).
    Application(u16),
    /// A code this version does not know.
    Other(u16),
}

/// First application abort code.
pub const APPLICATION_CODE_BASE: u16 = 0x1000;

impl Code {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Code::UnknownSession => 1,
            Code::UnsupportedVersion => 2,
            Code::Busy => 3,
            Code::Malformed => 4,
            Code::SessionClosed => 5,
            Code::DataLost => 6,
            Code::ProtocolViolation => 7,
            Code::Expired => 8,
            Code::Evicted => 9,
            Code::Incompatible => 10,
            Code::Application(c) | Code::Other(c) => c,
        }
    }

    /// Parses a wire value.
    pub fn from_u16(v: u16) -> Code {
        match v {
            1 => Code::UnknownSession,
            2 => Code::UnsupportedVersion,
            3 => Code::Busy,
            4 => Code::Malformed,
            5 => Code::SessionClosed,
            6 => Code::DataLost,
            7 => Code::ProtocolViolation,
            8 => Code::Expired,
            9 => Code::Evicted,
            10 => Code::Incompatible,
            c if c >= APPLICATION_CODE_BASE => Code::Application(c),
            c => Code::Other(c),
        }
    }
}

/// The server's answer to a [`ClientHello`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ServerReply {
    /// A new session was created.
    Accept {
        /// The new session's id.
        session_id: SessionId,
        /// The secret that authenticates later resumes.
        secret: [u8; SECRET_LEN],
        /// The server's parameters.
        params: Params,
    },
    /// The resume was accepted.
    Resumed {
        /// The resumed session's id.
        session_id: SessionId,
        /// Payload bytes the server has received from the client.
        received: u64,
        /// The server's parameters on the new transport.
        params: Params,
        /// HMAC proving the server knows the secret.
        proof: [u8; PROOF_LEN],
    },
    /// The handshake was refused. Not authenticated: a client resuming a
    /// session only counts it as a failed attempt.
    Reject {
        /// Why.
        code: Code,
        /// Code-specific detail (the server's version for `UnsupportedVersion`).
        detail: u64,
    },
    /// A resume was answered with how the session ended, proven with the
    /// session secret: final for the client.
    Ended {
        /// The session's id.
        session_id: SessionId,
        /// How it ended.
        code: Code,
        /// Code-specific detail (see `DATA_LOST`).
        detail: u64,
        /// HMAC proving the server knows the secret.
        proof: [u8; PROOF_LEN],
    },
}

fn put_tag(out: &mut BytesMut, ty: u8) {
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(ty);
}

/// Checks the tag of a handshake message. `Ok(None)` means more bytes are needed.
/// Bytes that already contradict the magic are rejected early, so a stray
/// peer fails fast instead of waiting for a timeout.
fn check_tag(buf: &[u8]) -> Result<Option<u8>, DecodeError> {
    let n = buf.len().min(MAGIC.len());
    if buf[..n] != MAGIC[..n] {
        return Err(DecodeError::BadMagic);
    }
    if buf.len() < TAG_LEN {
        return Ok(None);
    }
    if buf[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(buf[4]));
    }
    Ok(Some(buf[5]))
}

impl ClientHello {
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        match self {
            ClientHello::Fresh(_) => HELLO_LEN,
            ClientHello::Resume(_) => RESUME_LEN,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            ClientHello::Fresh(p) => {
                put_tag(out, T_HELLO);
                p.put(out);
            }
            ClientHello::Resume(r) => {
                put_tag(out, T_RESUME);
                out.put_slice(&r.session_id.0);
                out.put_u64(r.attempt);
                out.put_u64(r.received);
                out.put_u64(r.retained_from);
                r.params.put(out);
                out.put_slice(&r.proof);
            }
        }
    }

    /// Decodes one message from the front of `buf`: `Ok(None)` if incomplete,
    /// else the message and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(ClientHello, usize)>, DecodeError> {
        let Some(ty) = check_tag(buf)? else {
            return Ok(None);
        };
        let len = match ty {
            T_HELLO => HELLO_LEN,
            T_RESUME => RESUME_LEN,
            t => return Err(DecodeError::UnexpectedMessage(t)),
        };
        if buf.len() < len {
            return Ok(None);
        }
        let mut b = &buf[TAG_LEN..len];
        let msg = if ty == T_HELLO {
            ClientHello::Fresh(Params::get(&mut b)?)
        } else {
            let session_id = SessionId(take_array(&mut b));
            let attempt = b.get_u64();
            let received = b.get_u64();
            let retained_from = b.get_u64();
            let params = Params::get(&mut b)?;
            let proof = take_array(&mut b);
            ClientHello::Resume(Resume {
                session_id,
                attempt,
                received,
                retained_from,
                params,
                proof,
            })
        };
        Ok(Some((msg, len)))
    }
}

impl ServerReply {
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        match self {
            ServerReply::Accept { .. } => SERVER_HELLO_LEN,
            ServerReply::Resumed { .. } => RESUME_OK_LEN,
            ServerReply::Reject { .. } => REJECT_LEN,
            ServerReply::Ended { .. } => ENDED_LEN,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            ServerReply::Accept {
                session_id,
                secret,
                params,
            } => {
                put_tag(out, T_SERVER_HELLO);
                out.put_slice(&session_id.0);
                out.put_slice(secret);
                params.put(out);
            }
            ServerReply::Resumed {
                session_id,
                received,
                params,
                proof,
            } => {
                put_tag(out, T_RESUME_OK);
                out.put_slice(&session_id.0);
                out.put_u64(*received);
                params.put(out);
                out.put_slice(proof);
            }
            ServerReply::Reject { code, detail } => {
                put_tag(out, T_REJECT);
                out.put_u16(code.to_u16());
                out.put_u64(*detail);
            }
            ServerReply::Ended {
                session_id,
                code,
                detail,
                proof,
            } => {
                put_tag(out, T_ENDED);
                out.put_slice(&session_id.0);
                out.put_u16(code.to_u16());
                out.put_u64(*detail);
                out.put_slice(proof);
            }
        }
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes one message from the front of `buf`: `Ok(None)` if incomplete.
    pub fn decode(buf: &[u8]) -> Result<Option<(ServerReply, usize)>, DecodeError> {
        // A REJECT keeps its layout in every version, so a client learns why
        // a server of another version refused it.
        if buf.len() >= TAG_LEN && buf[..4] == MAGIC && buf[5] == T_REJECT {
            if buf.len() < REJECT_LEN {
                return Ok(None);
            }
            let mut b = &buf[TAG_LEN..REJECT_LEN];
            let code = Code::from_u16(b.get_u16());
            let detail = b.get_u64();
            return Ok(Some((ServerReply::Reject { code, detail }, REJECT_LEN)));
        }
        let Some(ty) = check_tag(buf)? else {
            return Ok(None);
        };
        let len = match ty {
            T_SERVER_HELLO => SERVER_HELLO_LEN,
            T_RESUME_OK => RESUME_OK_LEN,
            T_ENDED => ENDED_LEN,
            t => return Err(DecodeError::UnexpectedMessage(t)),
        };
        if buf.len() < len {
            return Ok(None);
        }
        let mut b = &buf[TAG_LEN..len];
        let session_id = SessionId(take_array(&mut b));
        let msg = if ty == T_ENDED {
            let code = Code::from_u16(b.get_u16());
            let detail = b.get_u64();
            let proof = take_array(&mut b);
            ServerReply::Ended {
                session_id,
                code,
                detail,
                proof,
            }
        } else if ty == T_SERVER_HELLO {
            let secret = take_array(&mut b);
            let params = Params::get(&mut b)?;
            ServerReply::Accept {
                session_id,
                secret,
                params,
            }
        } else {
            let received = b.get_u64();
            let params = Params::get(&mut b)?;
            let proof = take_array(&mut b);
            ServerReply::Resumed {
                session_id,
                received,
                params,
                proof,
            }
        };
        Ok(Some((msg, len)))
    }
}

fn take_array<const N: usize>(b: &mut &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    b.copy_to_slice(&mut a);
    a
}

/// A frame after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream bytes starting at `offset`.
    Data {
        /// Stream offset of the first payload byte.
        offset: u64,
        /// The bytes.
        payload: Bytes,
    },
    /// Cumulative acknowledgment: the sender has received `received` bytes.
    Ack {
        /// Payload bytes received.
        received: u64,
    },
    /// Keeps an idle transport alive.
    Heartbeat,
    /// The sender's direction ends at `offset`.
    Fin {
        /// Total bytes the sender will ever send.
        offset: u64,
        /// The sender closes the whole session and asks the peer to finish its direction.
        close: bool,
    },
    /// The sender has received the peer's FIN and sent its own: the session is done.
    Close,
    /// The session ends at once.
    Abort {
        /// Why.
        code: Code,
    },
}

/// A frame header held inline, so transmitting data needs no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    bytes: [u8; MAX_HEAD_LEN],
    len: u8,
}

impl fmt::Debug for FrameHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameHead({:02x?})", self.as_slice())
    }
}

impl FrameHead {
    /// An empty header (for transmits that carry only a payload).
    pub const EMPTY: FrameHead = FrameHead {
        bytes: [0; MAX_HEAD_LEN],
        len: 0,
    };

    /// The header bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn build(f: impl FnOnce(&mut &mut [u8])) -> FrameHead {
        let mut bytes = [0u8; MAX_HEAD_LEN];
        let mut w: &mut [u8] = &mut bytes;
        f(&mut w);
        let len = MAX_HEAD_LEN - w.len();
        FrameHead {
            bytes,
            len: len as u8, // at most MAX_HEAD_LEN
        }
    }

    /// Header of a data frame of `len` bytes at `offset`.
    pub fn data(offset: u64, len: u32) -> FrameHead {
        FrameHead::build(|w| {
            w.put_u8(F_DATA);
            w.put_u64(offset);
            w.put_u32(len);
        })
    }

    /// The whole encoding of a frame without payload. Panics never; data frames
    /// encode only their header.
    pub fn control(frame: &Frame) -> FrameHead {
        FrameHead::build(|w| match frame {
            Frame::Data { offset, payload } => {
                w.put_u8(F_DATA);
                w.put_u64(*offset);
                w.put_u32(payload.len() as u32);
            }
            Frame::Ack { received } => {
                w.put_u8(F_ACK);
                w.put_u64(*received);
            }
            Frame::Heartbeat => w.put_u8(F_HEARTBEAT),
            Frame::Fin { offset, close } => {
                w.put_u8(F_FIN);
                w.put_u64(*offset);
                w.put_u8(u8::from(*close));
            }
            Frame::Close => w.put_u8(F_CLOSE),
            Frame::Abort { code } => {
                w.put_u8(F_ABORT);
                w.put_u16(code.to_u16());
            }
        })
    }
}

/// Length of the fixed part of a frame of type `ty`, if the type is known.
fn head_len(ty: u8) -> Option<usize> {
    Some(match ty {
        F_DATA => DATA_HEADER_LEN,
        F_ACK => 9,
        F_HEARTBEAT => 1,
        F_FIN => 10,
        F_CLOSE => 1,
        F_ABORT => 3,
        _ => return None,
    })
}

impl Frame {
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Data { payload, .. } => DATA_HEADER_LEN + payload.len(),
            f => FrameHead::control(f).as_slice().len(),
        }
    }

    /// Appends the encoding to `out`. Data payloads must fit in a u32.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(FrameHead::control(self).as_slice());
        if let Frame::Data { payload, .. } = self {
            out.put_slice(payload);
        }
    }

    /// Decodes one whole frame from the front of `buf`: `Ok(None)` if more
    /// bytes are needed. Data payloads longer than `max_payload` are refused
    /// before anything is allocated.
    pub fn decode(buf: &[u8], max_payload: u32) -> Result<Option<(Frame, usize)>, DecodeError> {
        match FrameDecoder::decode_head(buf, max_payload)? {
            None => Ok(None),
            Some((Head::Data { offset, len }, hl)) => {
                let total = hl + len as usize;
                if buf.len() < total {
                    return Ok(None);
                }
                let payload = Bytes::copy_from_slice(&buf[hl..total]);
                Ok(Some((Frame::Data { offset, payload }, total)))
            }
            Some((Head::Control(f), hl)) => Ok(Some((f, hl))),
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// A data frame whose `len` payload bytes follow.
    Data {
        /// Stream offset of the first payload byte.
        offset: u64,
        /// Payload length.
        len: u32,
    },
    /// A complete control frame.
    Control(Frame),
}

/// Streaming frame decoder: data payloads pass through without being
/// buffered, so memory stays at one header whatever the frame size.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    head: [u8; MAX_HEAD_LEN],
    have: usize,
    payload_left: u32,
    max_payload: u32,
}

/// One step of [`FrameDecoder::decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A frame header (data) or a whole control frame.
    Head(Head),
    /// Payload bytes of the current data frame.
    Payload(&'a [u8]),
}

impl FrameDecoder {
    /// A decoder refusing data frames longer than `max_payload`.
    pub fn new(max_payload: u32) -> Self {
        FrameDecoder {
            head: [0; MAX_HEAD_LEN],
            have: 0,
            payload_left: 0,
            max_payload,
        }
    }

    /// True between frames (no partial header or payload pending).
    pub fn is_idle(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    fn decode_head(buf: &[u8], max_payload: u32) -> Result<Option<(Head, usize)>, DecodeError> {
        let Some(&ty) = buf.first() else {
            return Ok(None);
        };
        let hl = head_len(ty).ok_or(DecodeError::UnknownFrameType(ty))?;
        if buf.len() < hl {
            return Ok(None);
        }
        let mut b = &buf[1..hl];
        let head = match ty {
            F_DATA => {
                let offset = b.get_u64();
                let len = b.get_u32();
                if len > max_payload {
                    return Err(DecodeError::FrameTooLarge {
                        len,
                        max: max_payload,
                    });
                }
                if len == 0 {
                    return Err(DecodeError::EmptyData);
                }
                Head::Data { offset, len }
            }
            F_ACK => Head::Control(Frame::Ack {
                received: b.get_u64(),
            }),
            F_HEARTBEAT => Head::Control(Frame::Heartbeat),
            F_FIN => {
                let offset = b.get_u64();
                let flags = b.get_u8();
                if flags & !1 != 0 {
                    return Err(DecodeError::ReservedFlags(flags));
                }
                Head::Control(Frame::Fin {
                    offset,
                    close: flags == 1,
                })
            }
            F_CLOSE => Head::Control(Frame::Close),
            _ => Head::Control(Frame::Abort {
                code: Code::from_u16(b.get_u16()),
            }),
        };
        Ok(Some((head, hl)))
    }

    /// Consumes bytes from the front of `input`; returns how many were used
    /// and what they completed, if anything. Call again with the rest.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Decoded<'a>>), DecodeError> {
        if self.payload_left > 0 {
            let n = input.len().min(self.payload_left as usize);
            if n == 0 {
                return Ok((0, None));
            }
            self.payload_left -= n as u32;
            return Ok((n, Some(Decoded::Payload(&input[..n]))));
        }
        // Fill the header buffer only as far as this frame's header needs.
        let mut used = 0;
        loop {
            let need = if self.have == 0 {
                1
            } else {
                head_len(self.head[0]).ok_or(DecodeError::UnknownFrameType(self.head[0]))?
            };
            if self.have < need {
                let take = (need - self.have).min(input.len() - used);
                if take == 0 {
                    return Ok((used, None));
                }
                self.head[self.have..self.have + take].copy_from_slice(&input[used..used + take]);
                self.have += take;
                used += take;
                if self.have < need {
                    return Ok((used, None));
                }
                if need == 1 {
                    // Only the type byte so far: validate it and go on.
                    head_len(self.head[0]).ok_or(DecodeError::UnknownFrameType(self.head[0]))?;
                    if head_len(self.head[0]) != Some(1) {
                        continue;
                    }
                }
            }
            let (head, _) = Self::decode_head(&self.head[..self.have], self.max_payload)?
                .ok_or(DecodeError::EmptyData)?; // unreachable: the header is complete
            self.have = 0;
            if let Head::Data { len, .. } = head {
                self.payload_left = len;
            }
            return Ok((used, Some(Decoded::Head(head))));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn roundtrip_frame(f: Frame) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        assert_eq!(out.len(), f.encoded_len());
        let (g, n) = Frame::decode(&out, 1 << 20).unwrap().unwrap();
        assert_eq!((g, n), (f.clone(), out.len()));
        // Byte by byte through the streaming decoder.
        let mut d = FrameDecoder::new(1 << 20);
        let mut payload = Vec::new();
        let mut head = None;
        for i in 0..out.len() {
            let (used, item) = d.decode(&out[i..=i]).unwrap();
            assert_eq!(used, 1);
            match item {
                Some(Decoded::Head(h)) => head = Some(h),
                Some(Decoded::Payload(p)) => payload.extend_from_slice(p),
                None => {}
            }
        }
        assert!(d.is_idle());
        match (f, head.unwrap()) {
            (Frame::Data { offset, payload: p }, Head::Data { offset: o, len }) => {
                assert_eq!((offset, p.len() as u32, &p[..]), (o, len, &payload[..]));
            }
            (f, Head::Control(g)) => assert_eq!(f, g),
            (f, h) => panic!("{f:?} decoded as {h:?}"),
        }
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip_frame(Frame::Data {
            offset: u64::MAX - 10,
            payload: Bytes::from_static(b"hello"),
        });
        roundtrip_frame(Frame::Ack { received: 77 });
        roundtrip_frame(Frame::Heartbeat);
        roundtrip_frame(Frame::Fin {
            offset: 5,
            close: true,
        });
        roundtrip_frame(Frame::Close);
        roundtrip_frame(Frame::Abort {
            code: Code::Application(0x1234),
        });
    }

    #[test]
    fn oversized_data_frame_is_refused_before_payload() {
        let head = FrameHead::data(0, 1000);
        assert_eq!(
            Frame::decode(head.as_slice(), 999),
            Err(DecodeError::FrameTooLarge {
                len: 1000,
                max: 999
            })
        );
        let mut d = FrameDecoder::new(999);
        assert!(d.decode(head.as_slice()).is_err());
    }

    #[test]
    fn unknown_frame_type_is_named() {
        assert_eq!(
            Frame::decode(&[0x7f], 10),
            Err(DecodeError::UnknownFrameType(0x7f))
        );
        // A handshake message where a frame belongs is a frame-type error too.
        assert_eq!(
            Frame::decode(&MAGIC, 10),
            Err(DecodeError::UnknownFrameType(b'F'))
        );
    }

    #[test]
    fn empty_data_and_reserved_flags_are_refused() {
        assert_eq!(
            Frame::decode(FrameHead::data(0, 0).as_slice(), 10),
            Err(DecodeError::EmptyData)
        );
        let mut fin = FrameHead::control(&Frame::Fin {
            offset: 1,
            close: false,
        })
        .as_slice()
        .to_vec();
        fin[9] = 2;
        assert_eq!(Frame::decode(&fin, 10), Err(DecodeError::ReservedFlags(2)));
    }

    #[test]
    fn handshake_messages_roundtrip_and_id_at_fixed_offset() {
        let id = SessionId([7; 16]);
        let params = Params {
            wants_acks: true,
            retain_capacity: 1 << 20,
            recv_buffer: 65536,
        };
        let resume = ClientHello::Resume(Resume {
            session_id: id,
            attempt: 3,
            received: 99,
            retained_from: 50,
            params,
            proof: [9; 32],
        });
        for m in [ClientHello::Fresh(params), resume] {
            let mut out = BytesMut::new();
            m.encode(&mut out);
            assert_eq!(out.len(), m.encoded_len());
            for cut in 0..out.len() {
                assert_eq!(ClientHello::decode(&out[..cut]), Ok(None), "cut {cut}");
            }
            assert_eq!(
                ClientHello::decode(&out).unwrap().unwrap(),
                (m.clone(), out.len())
            );
            if let ClientHello::Resume(_) = m {
                assert_eq!(&out[..TAG_LEN], b"FTSS\x01\x11");
                assert_eq!(&out[SESSION_ID_OFFSET..SESSION_ID_OFFSET + 16], &id.0);
            }
        }
        let replies = [
            ServerReply::Accept {
                session_id: id,
                secret: [1; 32],
                params,
            },
            ServerReply::Resumed {
                session_id: id,
                received: 5,
                params,
                proof: [2; 32],
            },
            ServerReply::Reject {
                code: Code::UnknownSession,
                detail: 0,
            },
            ServerReply::Ended {
                session_id: id,
                code: Code::DataLost,
                detail: 1 << 63 | 7,
                proof: [3; 32],
            },
        ];
        for r in replies {
            let out = r.to_bytes();
            assert_eq!(out.len(), r.encoded_len());
            for cut in 0..out.len() {
                assert_eq!(ServerReply::decode(&out[..cut]), Ok(None), "cut {cut}");
            }
            assert_eq!(
                ServerReply::decode(&out).unwrap().unwrap(),
                (r.clone(), out.len())
            );
            if let ServerReply::Accept { .. } = r {
                assert_eq!(&out[..TAG_LEN], b"FTSS\x01\x20");
                assert_eq!(&out[SESSION_ID_OFFSET..SESSION_ID_OFFSET + 16], &id.0);
            }
        }
    }

    #[test]
    fn handshake_rejects_bad_magic_early_and_wrong_version() {
        assert_eq!(ClientHello::decode(b"GE"), Err(DecodeError::BadMagic));
        assert_eq!(
            ClientHello::decode(b"FTSS\x02\x10"),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert_eq!(
            ClientHello::decode(b"FTSS\x01\x20"),
            Err(DecodeError::UnexpectedMessage(0x20))
        );
        // A REJECT from a server of another version is still understood.
        let mut rej = ServerReply::Reject {
            code: Code::UnsupportedVersion,
            detail: 3,
        }
        .to_bytes()
        .to_vec();
        rej[4] = 3;
        assert!(matches!(
            ServerReply::decode(&rej),
            Ok(Some((
                ServerReply::Reject {
                    code: Code::UnsupportedVersion,
                    detail: 3
                },
                _
            )))
        ));
    }

    #[test]
    fn codes_roundtrip() {
        for v in 0..=u16::MAX {
            assert_eq!(Code::from_u16(v).to_u16(), v);
        }
    }

    #[test]
    fn session_id_prints_as_hex() {
        let mut raw = [0u8; SESSION_ID_LEN];
        raw[0] = 0xab;
        raw[1] = 0x01;
        raw[15] = 0xff;
        let hex = format!("ab01{}ff", "00".repeat(13));
        assert_eq!(SessionId(raw).to_string(), hex);
        assert_eq!(format!("{:?}", SessionId(raw)), format!("SessionId({hex})"));
        let head = FrameHead::control(&Frame::Ack { received: 0x0102 });
        assert_eq!(
            format!("{head:?}"),
            "FrameHead([02, 00, 00, 00, 00, 00, 00, 01, 02])"
        );
    }

    #[test]
    fn codes_are_application_codes_from_the_base_up() {
        assert_eq!(
            Code::from_u16(APPLICATION_CODE_BASE),
            Code::Application(APPLICATION_CODE_BASE)
        );
        assert_eq!(Code::from_u16(u16::MAX), Code::Application(u16::MAX));
        assert_eq!(
            Code::from_u16(APPLICATION_CODE_BASE - 1),
            Code::Other(APPLICATION_CODE_BASE - 1)
        );
        assert_eq!(Code::from_u16(0), Code::Other(0));
        assert_eq!(Code::from_u16(11), Code::Other(11));
    }

    #[test]
    fn params_flag_byte_is_exactly_wants_acks() {
        for wants_acks in [false, true] {
            let p = Params {
                wants_acks,
                retain_capacity: 3,
                recv_buffer: 4,
            };
            let w = p.to_wire();
            assert_eq!(w[0], u8::from(wants_acks));
            assert_eq!(Params::get(&mut &w[..]), Ok(p));
        }
        let mut w = Params::default().to_wire();
        w[0] = 0x81;
        assert_eq!(
            Params::get(&mut &w[..]),
            Err(DecodeError::ReservedFlags(0x81))
        );
    }

    #[test]
    fn decoder_is_busy_inside_a_header_and_a_payload() {
        let mut d = FrameDecoder::new(100);
        assert!(d.is_idle());
        let head = FrameHead::data(7, 3);
        assert_eq!(d.decode(&head.as_slice()[..4]).unwrap(), (4, None));
        assert!(!d.is_idle(), "a partial header is pending");
        assert_eq!(
            d.decode(&head.as_slice()[4..]).unwrap(),
            (
                DATA_HEADER_LEN - 4,
                Some(Decoded::Head(Head::Data { offset: 7, len: 3 }))
            )
        );
        assert!(!d.is_idle(), "the payload is pending");
        assert_eq!(d.decode(b"ab").unwrap(), (2, Some(Decoded::Payload(b"ab"))));
        assert!(!d.is_idle(), "one payload byte is pending");
        assert_eq!(
            d.decode(b"cXYZ").unwrap(),
            (1, Some(Decoded::Payload(b"c"))),
            "the payload ends where the frame does"
        );
        assert!(d.is_idle());
    }

    #[test]
    fn decoder_takes_one_header_at_a_time_from_a_larger_input() {
        // Several frames in one input, as a transport delivers them: each
        // call uses exactly one header or one payload, never more.
        let frames = [
            Frame::Ack { received: 9 },
            Frame::Data {
                offset: 0,
                payload: Bytes::from_static(b"xyz"),
            },
            Frame::Heartbeat,
            Frame::Fin {
                offset: 3,
                close: false,
            },
            Frame::Abort { code: Code::Busy },
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        // A payload of exactly the maximum is allowed.
        let mut d = FrameDecoder::new(3);
        let mut rest = &wire[..];
        let mut steps = Vec::new();
        while !rest.is_empty() {
            let (used, item) = d.decode(rest).unwrap();
            let item = match item.unwrap() {
                Decoded::Head(Head::Control(f)) => format!("{f:?}"),
                Decoded::Head(h) => format!("{h:?}"),
                Decoded::Payload(p) => format!("{p:?}"),
            };
            steps.push((used, item));
            rest = &rest[used..];
        }
        assert!(d.is_idle());
        let want = [
            (9, "Ack { received: 9 }".to_string()),
            (DATA_HEADER_LEN, "Data { offset: 0, len: 3 }".to_string()),
            (3, format!("{:?}", b"xyz")),
            (1, "Heartbeat".to_string()),
            (10, "Fin { offset: 3, close: false }".to_string()),
            (3, "Abort { code: Busy }".to_string()),
        ];
        assert_eq!(steps, want);
        // Frame::decode also takes one whole frame from the front of more.
        assert_eq!(
            Frame::decode(&wire[9..], 3),
            Ok(Some((frames[1].clone(), DATA_HEADER_LEN + 3)))
        );
        assert_eq!(
            Frame::decode(FrameHead::data(0, 3).as_slice(), 3),
            Ok(None),
            "a header of exactly the maximum waits for its payload"
        );
    }
}
