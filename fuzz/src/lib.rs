//! Shared oracle for the `handshake` and `registry_flood` fuzz targets: a
//! server [`ConnectionSet`] with real server [`Session`]s, driven the way an
//! adapter drives them, next to a model of what every admission must answer.
//!
//! The model knows each session's secret (read from its real SERVER_HELLO),
//! the highest attempt the set has seen with a valid proof, and whether the
//! session is live, ended, or forgotten. Every client message goes through a
//! [`HandshakeReader`] in chunks, then [`ConnectionSet::admit`], and the answer
//! is checked against the model: unknown ids, wrong proofs and replayed or
//! stale attempts get `Reject { code: UnknownSession }`; a valid fresh resume
//! of a live session is admitted (so exactly once); one of an ended session
//! learns how it ended. After every operation the set's counts must respect
//! the configured limits.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use ft_session_core::frame::{ClientHello, Params, Resume, ServerReply, SessionId, SECRET_LEN};
use ft_session_core::handshake::{resume_proof, verify_ended, SeededEntropy};
use ft_session_core::{
    Admission, Code, Config, ConnectionSet, Event, HandshakeReader, HandshakeStep, Input, Output,
    Session, SessionError, SessionState, SetEvent, TransportInfo,
};

/// Where the model thinks a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Attached, or parked since the given time.
    Live {
        /// When it parked, if it did.
        parked_since: Option<Instant>,
    },
    /// Ended with this code; the set may still remember it (tombstone).
    Ended(Code),
    /// The set answered `UnknownSession` to a valid fresh resume: gone for good.
    Forgotten,
}

/// One real session of the set.
#[derive(Debug)]
pub struct Known {
    /// Its id.
    pub id: SessionId,
    secret: [u8; SECRET_LEN],
    session: Session,
    transport: u64,
    /// Highest attempt the set saw with a valid proof while it knew the id.
    last_attempt: u64,
    /// What the model expects.
    pub model: Model,
}

/// Limits of the set under test, kept small so they are reached.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `Config::max_sessions`.
    pub max_sessions: usize,
    /// `Config::max_parked` (also bounds tombstones).
    pub max_parked: usize,
    /// `Config::parked_bytes_budget`.
    pub parked_bytes_budget: u64,
}

/// The set, its sessions and the model.
#[derive(Debug)]
pub struct Harness {
    /// The set under test.
    pub set: ConnectionSet,
    cfg: Config,
    /// The virtual clock.
    pub now: Instant,
    entropy: SeededEntropy,
    /// Every session ever admitted fresh.
    pub known: Vec<Known>,
    next_tid: u64,
    /// Encodings of resumes that were admitted (replaying one must fail).
    pub admitted_resumes: Vec<Vec<u8>>,
    /// Admissions per kind, so a target can tell the fuzzer reached them.
    pub stats: Stats,
}

/// What happened so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Fresh sessions created.
    pub fresh: u64,
    /// Resumes admitted.
    pub resumed: u64,
    /// Rejections.
    pub rejected: u64,
}

/// The code a session's outcome leaves in the set's tombstone.
fn tombstone_code(outcome: &Result<(), SessionError>) -> Option<Code> {
    Some(match outcome {
        Ok(()) => Code::SessionClosed,
        Err(SessionError::DataLost { .. }) => Code::DataLost,
        Err(SessionError::ProtocolViolation(_)) => Code::ProtocolViolation,
        Err(SessionError::Expired) => Code::Expired,
        Err(SessionError::Evicted) => Code::Evicted,
        Err(SessionError::Aborted { code, .. }) => *code,
        // Other errors map to a code the model need not predict.
        Err(_) => return None,
    })
}

impl Harness {
    /// A set with `limits`, entropy from `seed`, clock at `start`.
    pub fn new(start: Instant, seed: u64, limits: Limits) -> Harness {
        let mut cfg = ft_session_core::sim::fast_config();
        cfg.max_sessions = limits.max_sessions;
        cfg.max_parked = limits.max_parked;
        cfg.parked_bytes_budget = limits.parked_bytes_budget;
        Harness {
            set: ConnectionSet::new(cfg.clone()),
            cfg,
            now: start,
            entropy: SeededEntropy::new(seed),
            known: Vec::new(),
            next_tid: 1,
            admitted_resumes: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn tid(&mut self) -> u64 {
        self.next_tid += 1;
        self.next_tid
    }

    /// The limits hold: at most `max_parked` parked sessions and tombstones,
    /// parked bytes within the budget, at most `max_sessions` live.
    pub fn check_limits(&self) {
        let c = self.set.counts();
        assert!(
            c.parked <= self.cfg.max_parked,
            "parked {} > {}",
            c.parked,
            self.cfg.max_parked
        );
        assert!(
            c.parked_bytes <= self.cfg.parked_bytes_budget,
            "parked bytes {} > {}",
            c.parked_bytes,
            self.cfg.parked_bytes_budget
        );
        assert!(
            c.closed <= self.cfg.max_parked,
            "tombstones {} > {}",
            c.closed,
            self.cfg.max_parked
        );
        assert!(
            self.set.live() <= self.cfg.max_sessions,
            "live {} > {}",
            self.set.live(),
            self.cfg.max_sessions
        );
        assert_eq!(self.set.live(), c.attached + c.parked);
        // What parked sessions really retain, not the set's own bookkeeping.
        let real: u64 = self
            .known
            .iter()
            .filter(|k| k.session.state() == SessionState::Parked)
            .map(|k| k.session.retained())
            .sum();
        assert!(
            real <= self.cfg.parked_bytes_budget,
            "parked sessions retain {real} bytes > budget {}",
            self.cfg.parked_bytes_budget
        );
        assert_eq!(real, c.parked_bytes, "the set counts what parked sessions retain");
        let model_live = self
            .known
            .iter()
            .filter(|k| matches!(k.model, Model::Live { .. }))
            .count();
        assert_eq!(self.set.live(), model_live, "live sessions: set vs model");
    }

    /// Drains one session's outputs as an adapter would: transmits go
    /// nowhere, Parked and Finished are reported to the set.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(out) = self.known[i].session.poll_output() {
            match out {
                Output::Event(Event::Parked) => {
                    self.set.parked(now, &self.known[i].session);
                    if let Model::Live { parked_since: None } = self.known[i].model {
                        self.known[i].model = Model::Live {
                            parked_since: Some(now),
                        };
                    }
                }
                Output::Event(Event::Finished(r)) => {
                    let id = self.known[i].id;
                    self.set.finished(now, id, &r);
                    if self.known[i].model != Model::Forgotten {
                        self.known[i].model = match tombstone_code(&r) {
                            Some(code) => Model::Ended(code),
                            None => Model::Ended(Code::Other(0)),
                        };
                    }
                }
                _ => {}
            }
        }
    }

    /// Acts on the set's evictions and expiries as an adapter must, checking
    /// that only parked sessions are evicted and only overdue ones expire.
    fn drain_set(&mut self) {
        while let Some(ev) = self.set.poll_event() {
            let (SetEvent::Evicted(id) | SetEvent::Expired(id)) = ev;
            let Some(i) = self.known.iter().position(|k| k.id == id) else {
                panic!("event for a session never admitted: {ev:?}");
            };
            let since = match self.known[i].model {
                Model::Live {
                    parked_since: Some(s),
                } => s,
                m => panic!("{ev:?} for a session that is not parked: {m:?}"),
            };
            let input = match ev {
                SetEvent::Evicted(_) => {
                    self.known[i].model = Model::Ended(Code::Evicted);
                    Input::Evicted
                }
                SetEvent::Expired(_) => {
                    assert!(
                        self.now >= since + self.cfg.max_reconnect_time,
                        "expired before max_reconnect_time"
                    );
                    self.known[i].model = Model::Ended(Code::Expired);
                    Input::Timeout
                }
            };
            self.known[i].session.handle_input(self.now, input);
            self.drain(i);
        }
    }

    /// Runs every due timer of the set and the sessions, then checks limits.
    pub fn settle(&mut self) {
        for _ in 0..64 {
            self.set.handle_timeout(self.now);
            self.drain_set();
            let mut fired = false;
            for i in 0..self.known.len() {
                if self.known[i]
                    .session
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    self.known[i].session.handle_input(self.now, Input::Timeout);
                    fired = true;
                }
                self.drain(i);
            }
            self.drain_set();
            if !fired {
                break;
            }
        }
        self.check_limits();
    }

    /// Moves the clock and runs what fell due.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.settle();
    }

    /// Feeds `bytes` to a fresh [`HandshakeReader`] in pieces of `chunk`
    /// bytes (at least one) and checks the reader's contract: a message that
    /// is complete yields `Hello` with the right `consumed`, a strict prefix
    /// only ever `NeedMore` (and expires at the deadline), and a refusal
    /// carries a decodable REJECT unless the magic was wrong.
    pub fn read_hello(&mut self, bytes: &[u8], chunk: usize) -> Option<ClientHello> {
        let mut reader = HandshakeReader::new(self.now, self.set.config());
        let chunk = chunk.max(1);
        let mut fed = 0usize;
        for piece in bytes.chunks(chunk) {
            match reader.feed(piece) {
                HandshakeStep::NeedMore => fed += piece.len(),
                HandshakeStep::Hello { hello, consumed } => {
                    assert!(consumed <= piece.len());
                    let used = fed + consumed;
                    assert_eq!(
                        used,
                        hello.encoded_len(),
                        "consumed ends at the message's end"
                    );
                    let mut enc = BytesMut::new();
                    hello.encode(&mut enc);
                    assert_eq!(
                        &enc[..],
                        &bytes[..used],
                        "accepted hello re-encodes to its bytes"
                    );
                    // Once done, the reader takes no more.
                    assert!(matches!(reader.feed(b"FTSS"), HandshakeStep::NeedMore));
                    assert!(!reader.is_expired(self.now + Duration::from_secs(3600)));
                    return Some(hello);
                }
                HandshakeStep::Reject { reply, error } => {
                    if let Some(reply) = reply {
                        match ServerReply::decode(&reply) {
                            Ok(Some((ServerReply::Reject { code, .. }, n))) => {
                                assert_eq!(n, reply.len());
                                assert!(
                                    matches!(code, Code::Malformed | Code::UnsupportedVersion),
                                    "{code:?} for {error:?}"
                                );
                            }
                            other => panic!("reader's reply is no REJECT: {other:?}"),
                        }
                    }
                    return None;
                }
            }
        }
        // Incomplete: nothing admitted, and the deadline ends the wait.
        assert_eq!(
            ClientHello::decode(bytes),
            Ok(None),
            "the reader waits only for an incomplete message"
        );
        assert!(reader.is_expired(reader.deadline()));
        None
    }

    /// Admits `hello` and checks the answer against the model.
    pub fn admit(&mut self, hello: ClientHello) {
        // Timers due now run first, so the model sees what the set will see.
        self.settle();
        let tid = self.tid();
        let live_before = self.set.live();
        let info = TransportInfo::default();
        let adm = self
            .set
            .admit(self.now, tid, info, hello.clone(), &mut self.entropy);
        match hello {
            ClientHello::Fresh(_) => match adm {
                Admission::Fresh(session) => {
                    assert!(
                        live_before < self.cfg.max_sessions,
                        "admitted beyond max_sessions"
                    );
                    self.stats.fresh += 1;
                    self.adopt(*session, tid);
                }
                Admission::Reject {
                    code: Code::Busy,
                    reply,
                } => {
                    assert!(
                        live_before >= self.cfg.max_sessions,
                        "Busy below max_sessions"
                    );
                    assert_reject_bytes(&reply, Code::Busy);
                    self.stats.rejected += 1;
                }
                other => panic!("fresh hello answered with {other:?}"),
            },
            ClientHello::Resume(r) => self.check_resume(&r, adm, tid),
        }
        self.settle();
    }

    /// Keeps a freshly admitted session, reading its secret from the real
    /// SERVER_HELLO it transmits.
    fn adopt(&mut self, mut session: Session, tid: u64) {
        let id = session
            .session_id()
            .expect("a fresh server session has an id");
        let mut secret = None;
        let mut wire = Vec::new();
        while let Some(out) = session.poll_output() {
            if let Output::Transmit(t) = out {
                t.write_to(&mut wire);
            }
        }
        if let Ok(Some((
            ServerReply::Accept {
                session_id,
                secret: s,
                ..
            },
            _,
        ))) = ServerReply::decode(&wire)
        {
            assert_eq!(session_id, id, "SERVER_HELLO names the session");
            secret = Some(s);
        }
        let secret = secret.expect("a fresh session's first transmit is its SERVER_HELLO");
        assert!(
            self.known.iter().all(|k| k.id != id),
            "session id handed out twice"
        );
        self.known.push(Known {
            id,
            secret,
            session,
            transport: tid,
            last_attempt: 0,
            model: Model::Live { parked_since: None },
        });
    }

    fn check_resume(&mut self, r: &Resume, adm: Admission, tid: u64) {
        let Some(i) = self.known.iter().position(|k| k.id == r.session_id) else {
            assert_unknown(&adm, "unknown id");
            self.stats.rejected += 1;
            return;
        };
        let k = &self.known[i];
        let valid = resume_proof(
            &k.secret,
            &r.session_id,
            r.attempt,
            r.received,
            r.retained_from,
            &r.params,
        ) == r.proof;
        if !valid {
            assert_unknown(&adm, "wrong proof");
            self.stats.rejected += 1;
            return;
        }
        if r.attempt <= k.last_attempt {
            assert_unknown(&adm, "replayed or stale attempt");
            self.stats.rejected += 1;
            return;
        }
        match k.model {
            Model::Forgotten => {
                assert_unknown(&adm, "forgotten session");
                self.stats.rejected += 1;
            }
            Model::Ended(code) => {
                self.known[i].last_attempt = r.attempt;
                match adm {
                    Admission::Reject {
                        code: Code::UnknownSession,
                        ..
                    } => {
                        // The tombstone was dropped (time or tombstone limit).
                        self.known[i].model = Model::Forgotten;
                    }
                    Admission::Reject { code: got, reply } => {
                        if code != Code::Other(0) {
                            assert_eq!(got, code, "an ended session answers how it ended");
                        }
                        // Proven with the secret for this attempt: final for the client.
                        match ServerReply::decode(&reply) {
                            Ok(Some((
                                ServerReply::Ended {
                                    session_id,
                                    code: c,
                                    detail,
                                    proof,
                                },
                                n,
                            ))) => {
                                assert_eq!((session_id, c, n), (r.session_id, got, reply.len()));
                                assert!(
                                    verify_ended(
                                        &self.known[i].secret,
                                        &session_id,
                                        r.attempt,
                                        c,
                                        detail,
                                        &proof
                                    ),
                                    "an ENDED proves itself"
                                );
                            }
                            other => panic!("an ended session answers ENDED, not {other:?}"),
                        }
                    }
                    other => panic!("ended session ({code:?}) admitted: {other:?}"),
                }
                self.stats.rejected += 1;
            }
            Model::Live { .. } => {
                let Admission::Resume { session_id, resume } = adm else {
                    panic!("valid fresh resume of a live session refused: {adm:?}");
                };
                assert_eq!(session_id, r.session_id);
                assert_eq!(
                    (
                        resume.attempt(),
                        resume.received(),
                        resume.retained_from(),
                        resume.params()
                    ),
                    (r.attempt, r.received, r.retained_from, r.params)
                );
                let mut enc = BytesMut::new();
                ClientHello::Resume(r.clone()).encode(&mut enc);
                self.admitted_resumes.push(enc.to_vec());
                self.stats.resumed += 1;
                let k = &mut self.known[i];
                k.last_attempt = r.attempt;
                k.model = Model::Live { parked_since: None };
                k.transport = tid;
                k.session.handle_input(
                    self.now,
                    Input::Resume {
                        transport: tid,
                        resume,
                        info: TransportInfo::default(),
                    },
                );
                self.drain(i);
            }
        }
    }

    /// A resume of session `who` (modulo the sessions known) whose proof is
    /// valid, at `last attempt + step` (step 0 replays the last attempt).
    pub fn valid_resume(
        &self,
        who: usize,
        step: u64,
        received: u64,
        retained_from: u64,
        params: Params,
    ) -> Option<Resume> {
        let k = self.known.get(who % self.known.len().max(1))?;
        let attempt = k.last_attempt.saturating_add(step);
        Some(Resume {
            session_id: k.id,
            attempt,
            received,
            retained_from,
            params,
            proof: resume_proof(&k.secret, &k.id, attempt, received, retained_from, &params),
        })
    }

    /// Session `who` writes `bytes` (so it retains them) and loses its
    /// transport, as a crash would make it; it then reports itself parked.
    pub fn park(&mut self, who: usize, bytes: usize) {
        let Some(i) = (!self.known.is_empty()).then(|| who % self.known.len()) else {
            return;
        };
        if !matches!(self.known[i].model, Model::Live { parked_since: None }) {
            return;
        }
        let data = vec![0x5a; bytes.min(64 * 1024)];
        let _ = self.known[i].session.write(&data);
        self.drain(i);
        let transport = self.known[i].transport;
        self.known[i]
            .session
            .handle_input(self.now, Input::TransportLost { transport });
        self.drain(i);
        self.drain_set();
        // The application keeps writing to its parked session.
        let _ = self.known[i].session.write(&data);
        self.drain(i);
        self.check_limits();
    }

    /// Session `who` ends: cleanly (`None`) or aborted with an application code.
    pub fn finish(&mut self, who: usize, abort: Option<u16>) {
        let Some(i) = (!self.known.is_empty()).then(|| who % self.known.len()) else {
            return;
        };
        match abort {
            Some(code) => self.known[i].session.abort(code),
            // A clean end needs the peer: report the outcome as the adapter would.
            None => {
                if matches!(self.known[i].model, Model::Live { .. }) {
                    let id = self.known[i].id;
                    self.set.finished(self.now, id, &Ok(()));
                    self.known[i].model = Model::Ended(Code::SessionClosed);
                    // The real session is done with too: later inputs must not report it again.
                    self.known[i].session.abort(0);
                    while self.known[i].session.poll_output().is_some() {}
                }
            }
        }
        self.drain(i);
        self.drain_set();
        self.check_limits();
    }
}

fn assert_unknown(adm: &Admission, why: &str) {
    match adm {
        Admission::Reject {
            code: Code::UnknownSession,
            reply,
        } => assert_reject_bytes(reply, Code::UnknownSession),
        other => panic!("{why}: expected Reject(UnknownSession), got {other:?}"),
    }
}

fn assert_reject_bytes(reply: &[u8], code: Code) {
    match ServerReply::decode(reply) {
        Ok(Some((ServerReply::Reject { code: c, .. }, n))) => {
            assert_eq!(
                (c, n),
                (code, reply.len()),
                "REJECT bytes say what the admission says"
            );
        }
        other => panic!("reject reply does not decode: {other:?}"),
    }
}
