//! The wire protocol as `docs/PROTOCOL.md` writes it, encoded here a second
//! time, independently of `ft-session-core`: the attackers speak raw bytes,
//! and a spec that the core and this encoder read differently shows up as a
//! failing case.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `FTSS`, the first four bytes of every handshake message (2).
pub const MAGIC: [u8; 4] = *b"FTSS";
/// The protocol version spoken by the servers under test.
pub const VERSION: u8 = 1;
/// HELLO message type.
pub const T_HELLO: u8 = 0x10;
/// RESUME message type.
pub const T_RESUME: u8 = 0x11;
/// SERVER_HELLO message type.
pub const T_SERVER_HELLO: u8 = 0x20;
/// RESUME_OK message type.
pub const T_RESUME_OK: u8 = 0x21;
/// REJECT message type.
pub const T_REJECT: u8 = 0x22;
/// ENDED message type: a verified resume of an ended session (2.1).
pub const T_ENDED: u8 = 0x23;
/// Length of a HELLO.
pub const HELLO_LEN: usize = 23;
/// Length of a RESUME.
pub const RESUME_LEN: usize = 95;
const SERVER_HELLO_LEN: usize = 71;
const RESUME_OK_LEN: usize = 79;
const REJECT_LEN: usize = 16;
const ENDED_LEN: usize = 64;

/// REJECT and ABORT codes (3.1).
pub mod code {
    /// Unknown id, wrong proof or replayed attempt (R2).
    pub const UNKNOWN_SESSION: u16 = 1;
    /// Version other than 1.
    pub const UNSUPPORTED_VERSION: u16 = 2;
    /// `max_sessions` reached.
    pub const BUSY: u16 = 3;
    /// Unparseable handshake.
    pub const MALFORMED: u16 = 4;
    /// Resume of a cleanly closed session.
    pub const SESSION_CLOSED: u16 = 5;
    /// R5.
    pub const DATA_LOST: u16 = 6;
    /// R4, R7-R12.
    pub const PROTOCOL_VIOLATION: u16 = 7;
    /// Resume of a session that expired.
    pub const EXPIRED: u16 = 8;
    /// Resume of a session evicted by limits.
    pub const EVICTED: u16 = 9;
    /// Parameters that cannot work here.
    pub const INCOMPATIBLE: u16 = 10;
}

/// The 17-byte `Params` both sides send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Flags byte; bit 0 = the sender releases on acknowledgments.
    pub flags: u8,
    /// The sender's stream buffer capacity.
    pub retain_capacity: u64,
    /// The sender's transport receive buffer (0 = unknown).
    pub recv_buffer: u64,
}

impl Params {
    /// A sender that wants acknowledgments and retains `retain_capacity`.
    pub fn acks(retain_capacity: u64) -> Params {
        Params {
            flags: 1,
            retain_capacity,
            recv_buffer: 0,
        }
    }

    /// A sender under the implicit policy announcing `recv_buffer`.
    pub fn implicit(retain_capacity: u64, recv_buffer: u64) -> Params {
        Params {
            flags: 0,
            retain_capacity,
            recv_buffer,
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.push(self.flags);
        out.extend_from_slice(&self.retain_capacity.to_be_bytes());
        out.extend_from_slice(&self.recv_buffer.to_be_bytes());
    }

    fn get(b: &[u8]) -> Params {
        Params {
            flags: b[0],
            retain_capacity: be64(&b[1..9]),
            recv_buffer: be64(&b[9..17]),
        }
    }
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn tag(version: u8, kind: u8) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.push(version);
    v.push(kind);
    v
}

/// A HELLO of `version` (a server speaks version 1).
pub fn hello_version(version: u8, p: Params) -> Vec<u8> {
    let mut v = tag(version, T_HELLO);
    p.put(&mut v);
    v
}

/// A version-1 HELLO.
pub fn hello(p: Params) -> Vec<u8> {
    hello_version(VERSION, p)
}

/// The fields of a RESUME other than its proof.
#[derive(Clone, Copy, Debug)]
pub struct Resume {
    /// The session to resume.
    pub id: [u8; 16],
    /// The client's connect attempt number (R1).
    pub attempt: u64,
    /// Payload bytes the client received from the server.
    pub received: u64,
    /// Oldest offset the client still retains.
    pub retained_from: u64,
    /// The client's parameters.
    pub params: Params,
}

type HmacSha256 = Hmac<Sha256>;

fn proof(
    secret: &[u8; 32],
    label: &[u8],
    id: &[u8; 16],
    nums: [u64; 3],
    params: Option<&Params>,
) -> [u8; 32] {
    // HMAC takes keys of any length.
    #[allow(clippy::unwrap_used)]
    let mut m = HmacSha256::new_from_slice(secret).unwrap();
    m.update(label);
    m.update(id);
    for n in nums {
        m.update(&n.to_be_bytes());
    }
    if let Some(p) = params {
        let mut wire = Vec::with_capacity(17);
        p.put(&mut wire);
        m.update(&wire);
    }
    m.finalize().into_bytes().into()
}

impl Resume {
    /// The client's proof (2.3): it covers the Params too.
    pub fn proof(&self, secret: &[u8; 32]) -> [u8; 32] {
        proof(
            secret,
            b"ft-session v1 resume",
            &self.id,
            [self.attempt, self.received, self.retained_from],
            Some(&self.params),
        )
    }

    /// The RESUME bytes with `proof` (right or wrong).
    pub fn encode_with(&self, proof: [u8; 32]) -> Vec<u8> {
        let mut v = tag(VERSION, T_RESUME);
        v.extend_from_slice(&self.id);
        v.extend_from_slice(&self.attempt.to_be_bytes());
        v.extend_from_slice(&self.received.to_be_bytes());
        v.extend_from_slice(&self.retained_from.to_be_bytes());
        self.params.put(&mut v);
        v.extend_from_slice(&proof);
        v
    }

    /// The RESUME bytes with the right proof for `secret`.
    pub fn encode(&self, secret: &[u8; 32]) -> Vec<u8> {
        self.encode_with(self.proof(secret))
    }
}

/// The server's proof in a RESUME_OK (with its `params`) for a RESUME of
/// `attempt` (2.3).
pub fn accept_proof(
    secret: &[u8; 32],
    id: &[u8; 16],
    attempt: u64,
    received: u64,
    params: &Params,
) -> [u8; 32] {
    proof(
        secret,
        b"ft-session v1 accept",
        id,
        [attempt, received, 0],
        Some(params),
    )
}

/// The server's proof in an ENDED answering a RESUME of `attempt` (2.3).
pub fn ended_proof(
    secret: &[u8; 32],
    id: &[u8; 16],
    attempt: u64,
    code: u16,
    detail: u64,
) -> [u8; 32] {
    proof(
        secret,
        b"ft-session v1 ended",
        id,
        [attempt, u64::from(code), detail],
        None,
    )
}

/// A server's answer to a client's first message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A new session.
    ServerHello {
        /// Its id.
        id: [u8; 16],
        /// Its resume secret.
        secret: [u8; 32],
        /// The server's parameters.
        params: Params,
    },
    /// A resume accepted.
    ResumeOk {
        /// The session id.
        id: [u8; 16],
        /// Payload bytes the server received from the client.
        received: u64,
        /// The server's parameters.
        params: Params,
        /// The server's proof.
        proof: [u8; 32],
    },
    /// A verified resume of a session that has ended: final (2.6).
    Ended {
        /// The session id.
        id: [u8; 16],
        /// How it ended (3.1).
        code: u16,
        /// Its detail.
        detail: u64,
        /// The server's proof.
        proof: [u8; 32],
    },
    /// A refusal (never final for a resuming client, 2.6).
    Reject {
        /// The code (3.1).
        code: u16,
        /// Its detail.
        detail: u64,
    },
}

/// Parses a server answer at the start of `b`: `Ok(None)` while incomplete,
/// else the answer and its length; `Err` for bytes that are no answer.
pub fn parse_answer(b: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    if b.len() < 6 {
        return Ok(None);
    }
    if b[..4] != MAGIC {
        return Err(format!("answer without magic: {:02x?}", &b[..6]));
    }
    let need = match b[5] {
        T_SERVER_HELLO => SERVER_HELLO_LEN,
        T_RESUME_OK => RESUME_OK_LEN,
        T_REJECT => REJECT_LEN,
        T_ENDED => ENDED_LEN,
        t => return Err(format!("unknown answer type {t:#04x}")),
    };
    if b.len() < need {
        return Ok(None);
    }
    let id = || {
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[6..22]);
        id
    };
    let a = match b[5] {
        T_SERVER_HELLO => {
            let mut secret = [0u8; 32];
            secret.copy_from_slice(&b[22..54]);
            Answer::ServerHello {
                id: id(),
                secret,
                params: Params::get(&b[54..71]),
            }
        }
        T_RESUME_OK => {
            let mut proof = [0u8; 32];
            proof.copy_from_slice(&b[47..79]);
            Answer::ResumeOk {
                id: id(),
                received: be64(&b[22..30]),
                params: Params::get(&b[30..47]),
                proof,
            }
        }
        T_ENDED => {
            let mut proof = [0u8; 32];
            proof.copy_from_slice(&b[32..64]);
            Answer::Ended {
                id: id(),
                code: u16::from_be_bytes([b[22], b[23]]),
                detail: be64(&b[24..32]),
                proof,
            }
        }
        _ => Answer::Reject {
            code: u16::from_be_bytes([b[6], b[7]]),
            detail: be64(&b[8..16]),
        },
    };
    Ok(Some((a, need)))
}

/// A DATA frame header announcing `len` payload bytes at `offset`.
pub fn data_header(offset: u64, len: u32) -> Vec<u8> {
    let mut v = vec![0x01];
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// A whole DATA frame.
pub fn data(offset: u64, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut v = data_header(offset, len);
    v.extend_from_slice(payload);
    v
}

/// An ACK frame: the sender received `count` bytes.
pub fn ack(count: u64) -> Vec<u8> {
    let mut v = vec![0x02];
    v.extend_from_slice(&count.to_be_bytes());
    v
}

/// A HEARTBEAT frame.
pub fn heartbeat() -> Vec<u8> {
    vec![0x03]
}

/// A FIN frame: the sender's direction ends at `offset`.
pub fn fin(offset: u64, close: bool) -> Vec<u8> {
    let mut v = vec![0x04];
    v.extend_from_slice(&offset.to_be_bytes());
    v.push(u8::from(close));
    v
}

/// A frame received from the server (DATA payloads are counted, not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A DATA header.
    Data {
        /// Its stream offset.
        offset: u64,
        /// Its payload length.
        len: u32,
    },
    /// An acknowledgment.
    Ack(u64),
    /// A heartbeat.
    Heartbeat,
    /// A half-close.
    Fin {
        /// Where the stream ends.
        offset: u64,
        /// The close bit.
        close: bool,
    },
    /// CLOSE.
    Close,
    /// ABORT with a code.
    Abort(u16),
}

/// Splits a server's frame stream as it arrives.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    payload_left: u64,
    /// Payload bytes received in DATA frames.
    pub payload: u64,
    /// Every frame header seen, in order (DATA included).
    pub frames: Vec<Frame>,
    /// Set when the bytes stop making sense (an unknown type).
    pub garbled: Option<u8>,
}

impl FrameReader {
    /// Feeds received bytes.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.garbled.is_none() {
            if self.payload_left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload += n as u64;
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            self.buf.push(data[0]);
            data = &data[1..];
            let b = &self.buf;
            let (frame, done) = match b[0] {
                0x01 if b.len() == 13 => {
                    let len = u32::from_be_bytes([b[9], b[10], b[11], b[12]]);
                    self.payload_left = u64::from(len);
                    (
                        Some(Frame::Data {
                            offset: be64(&b[1..9]),
                            len,
                        }),
                        true,
                    )
                }
                0x02 if b.len() == 9 => (Some(Frame::Ack(be64(&b[1..9]))), true),
                0x03 => (Some(Frame::Heartbeat), true),
                0x04 if b.len() == 10 => (
                    Some(Frame::Fin {
                        offset: be64(&b[1..9]),
                        close: b[9] & 1 == 1,
                    }),
                    true,
                ),
                0x05 => (Some(Frame::Close), true),
                0x06 if b.len() == 3 => {
                    (Some(Frame::Abort(u16::from_be_bytes([b[1], b[2]]))), true)
                }
                0x01 | 0x02 | 0x04 | 0x06 => (None, false),
                t => {
                    self.garbled = Some(t);
                    (None, false)
                }
            };
            if done {
                self.buf.clear();
            }
            if let Some(f) = frame {
                self.frames.push(f);
            }
        }
    }

    /// The ABORT code received, if any.
    pub fn abort(&self) -> Option<u16> {
        self.frames.iter().find_map(|f| match f {
            Frame::Abort(c) => Some(*c),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_the_documented_lengths() {
        assert_eq!(hello(Params::acks(1)).len(), HELLO_LEN);
        let r = Resume {
            id: [7; 16],
            attempt: 2,
            received: 3,
            retained_from: 0,
            params: Params::acks(1),
        };
        assert_eq!(r.encode(&[1; 32]).len(), RESUME_LEN);
        assert_ne!(r.proof(&[1; 32]), r.proof(&[2; 32]));
    }

    #[test]
    fn frame_reader_splits_anywhere() {
        let mut bytes = data(0, &[9; 100]);
        bytes.extend(heartbeat());
        bytes.extend(ack(5));
        bytes.extend(fin(100, true));
        bytes.extend([0x06, 0, 7]);
        let mut r = FrameReader::default();
        for b in &bytes {
            r.push(std::slice::from_ref(b));
        }
        assert_eq!(r.payload, 100);
        assert_eq!(r.frames.len(), 5);
        assert_eq!(r.abort(), Some(7));
        assert_eq!(r.garbled, None);
    }
}
