//! The resume handshake: proofs bound to (session id, attempt, count), and
//! the server-side reader of a client's first message.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;
use crate::frame::{
    ClientHello, Code, DecodeError, Params, ServerReply, SessionId, PROOF_LEN, RESUME_LEN,
    SECRET_LEN, VERSION,
};

type HmacSha256 = Hmac<Sha256>;

/// Domain labels keep one message's proof from being replayed as another's.
const RESUME_LABEL: &[u8] = b"ft-session v1 resume";
const ACCEPT_LABEL: &[u8] = b"ft-session v1 accept";
const ENDED_LABEL: &[u8] = b"ft-session v1 ended";

fn mac(
    secret: &[u8; SECRET_LEN],
    label: &[u8],
    id: &SessionId,
    attempt: u64,
    counts: [u64; 2],
    params: Option<&Params>,
) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(label);
    m.update(&id.0);
    m.update(&attempt.to_be_bytes());
    for c in counts {
        m.update(&c.to_be_bytes());
    }
    if let Some(p) = params {
        m.update(&p.to_wire());
    }
    m
}

/// The client's proof in a RESUME, bound to both of its counts and its
/// parameters (buffer sizes).
pub fn resume_proof(
    secret: &[u8; SECRET_LEN],
    id: &SessionId,
    attempt: u64,
    received: u64,
    retained_from: u64,
    params: &Params,
) -> [u8; PROOF_LEN] {
    mac(
        secret,
        RESUME_LABEL,
        id,
        attempt,
        [received, retained_from],
        Some(params),
    )
    .finalize()
    .into_bytes()
    .into()
}

/// The server's proof in a RESUME_OK, bound to its count and parameters.
pub fn accept_proof(
    secret: &[u8; SECRET_LEN],
    id: &SessionId,
    attempt: u64,
    received: u64,
    params: &Params,
) -> [u8; PROOF_LEN] {
    mac(
        secret,
        ACCEPT_LABEL,
        id,
        attempt,
        [received, 0],
        Some(params),
    )
    .finalize()
    .into_bytes()
    .into()
}

/// The server's proof in an ENDED, bound to the code and detail.
pub fn ended_proof(
    secret: &[u8; SECRET_LEN],
    id: &SessionId,
    attempt: u64,
    code: Code,
    detail: u64,
) -> [u8; PROOF_LEN] {
    let code = u64::from(code.to_u16());
    mac(secret, ENDED_LABEL, id, attempt, [code, detail], None)
        .finalize()
        .into_bytes()
        .into()
}

/// Constant-time check of a client's resume proof.
pub fn verify_resume(secret: &[u8; SECRET_LEN], r: &crate::frame::Resume) -> bool {
    mac(
        secret,
        RESUME_LABEL,
        &r.session_id,
        r.attempt,
        [r.received, r.retained_from],
        Some(&r.params),
    )
    .verify_slice(&r.proof)
    .is_ok()
}

/// Constant-time check of a server's accept proof.
pub fn verify_accept(
    secret: &[u8; SECRET_LEN],
    id: &SessionId,
    attempt: u64,
    received: u64,
    params: &Params,
    proof: &[u8],
) -> bool {
    mac(
        secret,
        ACCEPT_LABEL,
        id,
        attempt,
        [received, 0],
        Some(params),
    )
    .verify_slice(proof)
    .is_ok()
}

/// Constant-time check of a server's ENDED proof.
pub fn verify_ended(
    secret: &[u8; SECRET_LEN],
    id: &SessionId,
    attempt: u64,
    code: Code,
    detail: u64,
    proof: &[u8],
) -> bool {
    let code = u64::from(code.to_u16());
    mac(secret, ENDED_LABEL, id, attempt, [code, detail], None)
        .verify_slice(proof)
        .is_ok()
}

/// Source of random bytes for session ids, secrets and jitter. The core never
/// reads OS randomness itself; adapters pass a CSPRNG.
pub trait Entropy {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

impl<F: FnMut(&mut [u8])> Entropy for F {
    fn fill(&mut self, dest: &mut [u8]) {
        self(dest)
    }
}

/// Deterministic, NOT cryptographically secure entropy (splitmix64), for
/// simulations and tests only: secrets from it can be predicted.
#[derive(Debug, Clone)]
pub struct SeededEntropy(u64);

impl SeededEntropy {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededEntropy(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Result of feeding bytes to a [`HandshakeReader`].
#[derive(Debug)]
pub enum HandshakeStep {
    /// The message is incomplete: feed more.
    NeedMore,
    /// The client's message, and how many bytes of the last input it used;
    /// the rest belongs to the session.
    Hello {
        /// The decoded message.
        hello: ClientHello,
        /// Bytes of the last `feed` input consumed.
        consumed: usize,
    },
    /// Not a valid first message: write `reply` (if any) and close the transport.
    Reject {
        /// Bytes to send back before closing.
        reply: Option<Bytes>,
        /// What was wrong.
        error: DecodeError,
    },
}

/// Server side: reads a client's first message on a new transport, with a
/// bounded buffer and a deadline, so a stalled or hostile peer costs at most
/// one message and [`Config::handshake_timeout`].
#[derive(Debug)]
pub struct HandshakeReader {
    buf: Vec<u8>,
    deadline: Instant,
    done: bool,
}

impl HandshakeReader {
    /// A reader for a transport accepted at `now`.
    pub fn new(now: Instant, config: &Config) -> Self {
        HandshakeReader {
            buf: Vec::with_capacity(RESUME_LEN),
            deadline: crate::config::later(now, config.handshake_timeout),
            done: false,
        }
    }

    /// When the transport must be dropped if no complete message arrived.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// True once `now` is past the deadline.
    pub fn is_expired(&self, now: Instant) -> bool {
        !self.done && now >= self.deadline
    }

    /// Feeds bytes read from the transport.
    pub fn feed(&mut self, data: &[u8]) -> HandshakeStep {
        if self.done {
            return HandshakeStep::NeedMore;
        }
        // Never hold more than the longest message.
        let take = data.len().min(RESUME_LEN - self.buf.len());
        let before = self.buf.len();
        self.buf.extend_from_slice(&data[..take]);
        match ClientHello::decode(&self.buf) {
            Ok(None) => HandshakeStep::NeedMore,
            Ok(Some((hello, used))) => {
                self.done = true;
                HandshakeStep::Hello {
                    hello,
                    consumed: used - before,
                }
            }
            Err(error) => {
                self.done = true;
                let code = match error {
                    DecodeError::UnsupportedVersion(_) => Code::UnsupportedVersion,
                    DecodeError::BadMagic => {
                        // Not our protocol: say nothing it could misread.
                        return HandshakeStep::Reject { reply: None, error };
                    }
                    _ => Code::Malformed,
                };
                let reply = ServerReply::Reject {
                    code,
                    detail: u64::from(VERSION),
                }
                .to_bytes();
                HandshakeStep::Reject {
                    reply: Some(reply),
                    error,
                }
            }
        }
    }
}

/// Encodes a client hello into a new buffer.
pub(crate) fn encode_hello(h: &ClientHello) -> Bytes {
    let mut b = BytesMut::with_capacity(h.encoded_len());
    h.encode(&mut b);
    b.freeze()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proofs_bind_every_field_and_role() {
        let s = [5u8; 32];
        let id = SessionId([1; 16]);
        let r = crate::frame::Resume {
            session_id: id,
            attempt: 2,
            received: 3,
            retained_from: 1,
            params: crate::frame::Params::default(),
            proof: resume_proof(&s, &id, 2, 3, 1, &crate::frame::Params::default()),
        };
        assert!(verify_resume(&s, &r));
        for bad in [
            crate::frame::Resume {
                attempt: 3,
                ..r.clone()
            },
            crate::frame::Resume {
                received: 4,
                ..r.clone()
            },
            crate::frame::Resume {
                retained_from: 0,
                ..r.clone()
            },
            crate::frame::Resume {
                session_id: SessionId([2; 16]),
                ..r.clone()
            },
            crate::frame::Resume {
                params: crate::frame::Params {
                    recv_buffer: 1,
                    ..r.params
                },
                ..r.clone()
            },
        ] {
            assert!(!verify_resume(&s, &bad), "every field is bound: {bad:?}");
        }
        assert!(!verify_resume(&[6; 32], &r), "secret is bound");
        assert!(
            !verify_accept(&s, &id, 2, 3, &r.params, &r.proof),
            "a client proof is no server proof"
        );
        let p = crate::frame::Params::default();
        let ok = accept_proof(&s, &id, 2, 3, &p);
        assert!(verify_accept(&s, &id, 2, 3, &p, &ok));
        let bigger = crate::frame::Params {
            recv_buffer: 1 << 26,
            ..p
        };
        assert!(!verify_accept(&s, &id, 2, 3, &bigger, &ok), "params bound");
        let end = ended_proof(&s, &id, 2, Code::Evicted, 0);
        assert!(verify_ended(&s, &id, 2, Code::Evicted, 0, &end));
        assert!(
            !verify_ended(&s, &id, 2, Code::Expired, 0, &end),
            "code bound"
        );
        assert!(
            !verify_ended(&s, &id, 2, Code::Evicted, 1, &end),
            "detail bound"
        );
        assert!(
            !verify_ended(&s, &id, 3, Code::Evicted, 0, &end),
            "attempt bound"
        );
        let mut flipped = r.clone();
        flipped.proof[31] ^= 1;
        assert!(!verify_resume(&s, &flipped), "a flipped bit fails");
    }
}
