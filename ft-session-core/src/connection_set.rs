//! The server's connection set: a sans-IO registry of sessions that routes
//! authenticated resumes, parks sessions whose transport failed, and enforces
//! limits on sessions, parked sessions and the bytes they retain.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use crate::config::{later, Config, ReleasePolicy, TransportInfo};
use crate::error::SessionError;
use crate::frame::{ClientHello, Code, ServerReply, SessionId, SECRET_LEN, SESSION_ID_LEN};
use crate::handshake::{ended_proof, verify_resume, Entropy};
use crate::session::{implicit_bound, Session, TransportId, VerifiedResume};

/// Key of the dummy proof computed for unknown ids: the work is what
/// matters (an answer as slow as for a known id), not the result.
const DUMMY_SECRET: [u8; SECRET_LEN] = [0x5a; SECRET_LEN];

/// What to do with a new transport after its first message.
#[derive(Debug)]
pub enum Admission {
    /// A new session, already attached to the transport; drive it.
    Fresh(Box<Session>),
    /// An authenticated resume: give it to the session with this id as
    /// [`crate::Input::Resume`].
    Resume {
        /// The session to route to.
        session_id: SessionId,
        /// The input for that session.
        resume: VerifiedResume,
    },
    /// Refused: write `reply`, then close the transport.
    Reject {
        /// Encoded REJECT, or ENDED (authenticated) for a session that ended.
        reply: Bytes,
        /// Why (never sent in more detail than `reply`).
        code: Code,
    },
}

/// Something the adapter must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetEvent {
    /// A parked session was evicted to respect the limits: feed it
    /// [`crate::Input::Evicted`].
    Evicted(SessionId),
    /// A parked session outlived the maximum reconnect time (its own timer
    /// ends it with `Expired`; feeding `Input::Timeout` is enough).
    Expired(SessionId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryState {
    Attached,
    /// `proven`: the client did more than a HELLO (see
    /// [`Config::max_parked_unproven`]).
    Parked {
        since: Instant,
        retained: u64,
        proven: bool,
    },
    /// Ended: answers an authenticated resume with how it ended
    /// (SESSION_CLOSED after a clean close), so both sides agree.
    Closed {
        until: Instant,
        code: Code,
        proven: bool,
    },
}

#[derive(Debug)]
struct Entry {
    secret: [u8; SECRET_LEN],
    last_attempt: u64,
    state: EntryState,
    /// A resume was verified for it: the client holds the secret.
    proven: bool,
    /// Its share of [`Config::implicit_retention_budget`].
    reserved: u64,
}

/// Counts for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetCounts {
    /// Sessions with a transport.
    pub attached: usize,
    /// Sessions waiting for their client.
    pub parked: usize,
    /// Bytes retained by parked sessions.
    pub parked_bytes: u64,
    /// Parked sessions that never proved anything.
    pub parked_unproven: usize,
    /// Implicit bounds of live sessions, added up.
    pub implicit_reserved: u64,
    /// Ended sessions remembered for late resumes.
    pub closed: usize,
    /// Resumes refused (unknown, forged, replayed or expired).
    pub rejected_resumes: u64,
    /// Sessions evicted by the limits.
    pub evicted: u64,
    /// Parked sessions that expired.
    pub expired: u64,
    /// Resume proofs computed: one per resume, whether its id is known or
    /// not, so the time of an answer does not tell which ids are live.
    pub proofs_computed: u64,
}

/// The server's registry of sessions. See the module docs.
///
/// Every operation costs O(log n) in the number of sessions: counts are kept
/// as entries change, and parked sessions and tombstones are ordered by
/// their deadlines.
#[derive(Debug)]
pub struct ConnectionSet {
    cfg: Config,
    entries: HashMap<SessionId, Entry>,
    /// Parked sessions by the time they parked (oldest evicted first).
    parked_order: BTreeSet<(Instant, SessionId)>,
    /// Tombstones by the time they are forgotten.
    closed_order: BTreeSet<(Instant, SessionId)>,
    /// The unproven among the parked and the tombstones.
    parked_unproven: BTreeSet<(Instant, SessionId)>,
    closed_unproven: BTreeSet<(Instant, SessionId)>,
    attached: usize,
    parked_bytes: u64,
    reserved: u64,
    events: VecDeque<SetEvent>,
    counts: SetCounts,
}

impl ConnectionSet {
    /// An empty set; `config` gives the limits and the sessions' settings.
    pub fn new(config: Config) -> Self {
        ConnectionSet {
            cfg: config,
            entries: HashMap::new(),
            parked_order: BTreeSet::new(),
            closed_order: BTreeSet::new(),
            parked_unproven: BTreeSet::new(),
            closed_unproven: BTreeSet::new(),
            attached: 0,
            parked_bytes: 0,
            reserved: 0,
            events: VecDeque::new(),
            counts: SetCounts::default(),
        }
    }

    /// The configuration given to new sessions.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Current counts.
    pub fn counts(&self) -> SetCounts {
        SetCounts {
            attached: self.attached,
            parked: self.parked_order.len(),
            parked_bytes: self.parked_bytes,
            parked_unproven: self.parked_unproven.len(),
            implicit_reserved: self.reserved,
            closed: self.closed_order.len(),
            ..self.counts
        }
    }

    /// Sessions attached or parked.
    pub fn live(&self) -> usize {
        self.attached + self.parked_order.len()
    }

    /// Books an entry's state into the counts and orders.
    fn book(&mut self, id: SessionId, st: EntryState) {
        match st {
            EntryState::Attached => self.attached += 1,
            EntryState::Parked {
                since,
                retained,
                proven,
            } => {
                self.parked_order.insert((since, id));
                if !proven {
                    self.parked_unproven.insert((since, id));
                }
                self.parked_bytes += retained;
            }
            EntryState::Closed { until, proven, .. } => {
                self.closed_order.insert((until, id));
                if !proven {
                    self.closed_unproven.insert((until, id));
                }
            }
        }
    }

    /// Takes an entry's state out of the counts and orders.
    fn unbook(&mut self, id: SessionId, st: EntryState) {
        match st {
            EntryState::Attached => self.attached -= 1,
            EntryState::Parked {
                since, retained, ..
            } => {
                self.parked_order.remove(&(since, id));
                self.parked_unproven.remove(&(since, id));
                self.parked_bytes -= retained;
            }
            EntryState::Closed { until, .. } => {
                self.closed_order.remove(&(until, id));
                self.closed_unproven.remove(&(until, id));
            }
        }
    }

    /// Sets an entry's share of the implicit retention budget.
    fn reserve(&mut self, id: SessionId, bytes: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            self.reserved = self.reserved - e.reserved + bytes;
            e.reserved = bytes;
        }
    }

    /// What a session on a transport with `info` and a client announcing
    /// `params` may retain under the implicit policy (0 when it releases on
    /// acknowledgments: under this server's acknowledgment policy, or with a
    /// client that asks for them; bounded by the server's own capacity).
    fn implicit_share(&self, info: TransportInfo, params: crate::frame::Params) -> u64 {
        match self.cfg.release_policy {
            ReleasePolicy::Implicit if !params.wants_acks => {
                implicit_bound(&self.cfg, info, &params).unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// Moves an existing entry to `st`, or forgets it (`None`).
    fn set_state(&mut self, id: SessionId, st: Option<EntryState>) {
        let Some(old) = self.entries.get(&id).map(|e| e.state) else {
            return;
        };
        self.unbook(id, old);
        if matches!(st, None | Some(EntryState::Closed { .. })) {
            // An ended session retains nothing.
            self.reserve(id, 0);
        }
        match st {
            Some(st) => {
                self.book(id, st);
                if let Some(e) = self.entries.get_mut(&id) {
                    e.state = st;
                }
            }
            None => {
                self.entries.remove(&id);
            }
        }
    }

    fn reject(code: Code) -> Admission {
        Admission::Reject {
            reply: ServerReply::Reject { code, detail: 0 }.to_bytes(),
            code,
        }
    }

    /// Decides about a client's first message on a new transport.
    pub fn admit(
        &mut self,
        now: Instant,
        transport: TransportId,
        info: TransportInfo,
        hello: ClientHello,
        entropy: &mut dyn Entropy,
    ) -> Admission {
        self.handle_timeout(now);
        match hello {
            ClientHello::Fresh(params) => {
                if self.live() >= self.cfg.max_sessions {
                    return Self::reject(Code::Busy);
                }
                let share = self.implicit_share(info, params);
                if self.reserved.saturating_add(share) > self.cfg.implicit_retention_budget {
                    return Self::reject(Code::Busy);
                }
                let mut id = SessionId([0; SESSION_ID_LEN]);
                // A collision of 128 random bits means broken entropy; refuse
                // rather than hand out someone else's session.
                entropy.fill(&mut id.0);
                if self.entries.contains_key(&id) {
                    return Self::reject(Code::Busy);
                }
                let mut secret = [0u8; SECRET_LEN];
                entropy.fill(&mut secret);
                self.entries.insert(
                    id,
                    Entry {
                        secret,
                        last_attempt: 0,
                        state: EntryState::Attached,
                        proven: false,
                        reserved: 0,
                    },
                );
                self.book(id, EntryState::Attached);
                self.reserve(id, share);
                let session =
                    Session::server(self.cfg.clone(), now, transport, info, params, id, secret);
                Admission::Fresh(Box::new(session))
            }
            ClientHello::Resume(r) => {
                // Unknown id, wrong proof, replay and expiry all get one
                // answer, after the same work: an unknown id costs a proof too.
                self.counts.proofs_computed += 1;
                let Some(entry) = self.entries.get_mut(&r.session_id) else {
                    std::hint::black_box(verify_resume(&DUMMY_SECRET, &r));
                    self.counts.rejected_resumes += 1;
                    return Self::reject(Code::UnknownSession);
                };
                if !verify_resume(&entry.secret, &r) || r.attempt <= entry.last_attempt {
                    self.counts.rejected_resumes += 1;
                    return Self::reject(Code::UnknownSession);
                }
                entry.last_attempt = r.attempt;
                if let EntryState::Closed { code, .. } = entry.state {
                    // Proven with the secret: the client takes it as final.
                    let reply = ServerReply::Ended {
                        session_id: r.session_id,
                        code,
                        detail: 0,
                        proof: ended_proof(&entry.secret, &r.session_id, r.attempt, code, 0),
                    };
                    return Admission::Reject {
                        reply: reply.to_bytes(),
                        code,
                    };
                }
                let (old_share, share) = (entry.reserved, self.implicit_share(info, r.params));
                if (self.reserved - old_share).saturating_add(share)
                    > self.cfg.implicit_retention_budget
                {
                    // Not refused as unknown: the client retries while the
                    // session stays as it was.
                    return Self::reject(Code::Busy);
                }
                if let Some(e) = self.entries.get_mut(&r.session_id) {
                    e.proven = true;
                }
                self.reserve(r.session_id, share);
                self.set_state(r.session_id, Some(EntryState::Attached));
                Admission::Resume {
                    session_id: r.session_id,
                    resume: VerifiedResume::new(r.attempt, r.received, r.retained_from, r.params),
                }
            }
        }
    }

    /// The session lost its transport (after [`crate::Event::Parked`]). A
    /// report that arrives after a newer resume of the session was admitted
    /// is stale and ignored, so adapters need no lock ordering between the
    /// set and their sessions. May evict older parked sessions (see
    /// [`Self::poll_event`]).
    pub fn parked(&mut self, now: Instant, session: &Session) {
        let Some(id) = session.session_id() else {
            return;
        };
        let fresh = self.entries.get(&id).is_some_and(|e| {
            session.attempt() >= e.last_attempt && e.state == EntryState::Attached
        });
        if fresh {
            let proven = session.is_proven() || self.entries.get(&id).is_some_and(|e| e.proven);
            let st = EntryState::Parked {
                since: now,
                retained: session.retained(),
                proven,
            };
            self.set_state(id, Some(st));
        }
        self.enforce_limits();
    }

    /// The session ended ([`crate::Event::Finished`]). The outcome is
    /// remembered for the maximum reconnect time, so a client that returns
    /// (its last CLOSE lost, or away while the server expired it) learns how
    /// the session ended instead of a bare "unknown session".
    pub fn finished(&mut self, now: Instant, id: SessionId, outcome: &Result<(), SessionError>) {
        let code = match outcome {
            Ok(()) => Code::SessionClosed,
            Err(e) => e.abort_code(),
        };
        let until = later(now, self.cfg.max_reconnect_time);
        // A clean close took a FIN and CLOSE exchange: more than a HELLO.
        let proven = outcome.is_ok()
            || self.entries.get(&id).is_some_and(|e| match e.state {
                EntryState::Parked { proven, .. } | EntryState::Closed { proven, .. } => proven,
                EntryState::Attached => e.proven,
            });
        self.set_state(
            id,
            Some(EntryState::Closed {
                until,
                code,
                proven,
            }),
        );
        self.enforce_limits();
    }

    fn enforce_limits(&mut self) {
        loop {
            let unproven_over = self.parked_unproven.len() > self.cfg.max_parked_unproven;
            let over = self.parked_order.len() > self.cfg.max_parked
                || self.parked_bytes > self.cfg.parked_bytes_budget;
            // Strangers go first: a proven session is evicted only when the
            // proven ones alone exceed the limits.
            let victim = match (unproven_over || over, self.parked_unproven.first()) {
                (false, _) => break,
                (true, Some(&v)) => v,
                (true, None) => match self.parked_order.first() {
                    Some(&v) => v,
                    None => break,
                },
            };
            let (since, id) = victim;
            let proven = !self.parked_unproven.contains(&victim);
            let until = later(since, self.cfg.max_reconnect_time);
            let code = Code::Evicted;
            self.set_state(
                id,
                Some(EntryState::Closed {
                    until,
                    code,
                    proven,
                }),
            );
            self.counts.evicted += 1;
            self.events.push_back(SetEvent::Evicted(id));
        }
        // Tombstones are small but bounded too: the oldest go first, the
        // unproven within their own quota and before any proven one.
        while self.closed_unproven.len() > self.cfg.max_parked_unproven
            || self.closed_order.len() > self.cfg.max_parked
        {
            let Some(&(_, id)) = self
                .closed_unproven
                .first()
                .or_else(|| self.closed_order.first())
            else {
                break;
            };
            self.set_state(id, None);
        }
    }

    /// Expires parked sessions and forgets tombstones whose time ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        let max = self.cfg.max_reconnect_time;
        while let Some(&(since, id)) = self.parked_order.first() {
            if now < later(since, max) {
                break;
            }
            let proven = !self.parked_unproven.contains(&(since, id));
            let st = EntryState::Closed {
                until: later(now, max),
                code: Code::Expired,
                proven,
            };
            self.set_state(id, Some(st));
            self.counts.expired += 1;
            self.events.push_back(SetEvent::Expired(id));
        }
        while let Some(&(until, id)) = self.closed_order.first() {
            if now < until {
                break;
            }
            self.set_state(id, None);
        }
        self.enforce_limits();
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let parked = self
            .parked_order
            .first()
            .map(|&(since, _)| later(since, self.cfg.max_reconnect_time));
        let closed = self.closed_order.first().map(|&(until, _)| until);
        match (parked, closed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next eviction or expiry to act on.
    pub fn poll_event(&mut self) -> Option<SetEvent> {
        self.events.pop_front()
    }
}
