//! The server's connection set: a sans-IO registry of sessions that routes
//! authenticated resumes, parks sessions whose transport failed, and enforces
//! limits on sessions, parked sessions and the bytes they retain.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{Config, TransportInfo};
use crate::error::SessionError;
use crate::frame::{ClientHello, Code, ServerReply, SessionId, SECRET_LEN, SESSION_ID_LEN};
use crate::handshake::{verify_resume, Entropy};
use crate::session::{Session, TransportId, VerifiedResume};

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
        /// Encoded REJECT.
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
    Parked {
        since: Instant,
        retained: u64,
    },
    /// Ended: answers an authenticated resume with how it ended
    /// (SESSION_CLOSED after a clean close), so both sides agree.
    Closed {
        until: Instant,
        code: Code,
    },
}

#[derive(Debug)]
struct Entry {
    secret: [u8; SECRET_LEN],
    last_attempt: u64,
    state: EntryState,
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
    /// Ended sessions remembered for late resumes.
    pub closed: usize,
    /// Resumes refused (unknown, forged, replayed or expired).
    pub rejected_resumes: u64,
    /// Sessions evicted by the limits.
    pub evicted: u64,
    /// Parked sessions that expired.
    pub expired: u64,
}

/// The server's registry of sessions. See the module docs.
#[derive(Debug)]
pub struct ConnectionSet {
    cfg: Config,
    entries: HashMap<SessionId, Entry>,
    events: Vec<SetEvent>,
    counts: SetCounts,
}

impl ConnectionSet {
    /// An empty set; `config` gives the limits and the sessions' settings.
    pub fn new(config: Config) -> Self {
        ConnectionSet {
            cfg: config,
            entries: HashMap::new(),
            events: Vec::new(),
            counts: SetCounts::default(),
        }
    }

    /// The configuration given to new sessions.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Current counts.
    pub fn counts(&self) -> SetCounts {
        let mut c = self.counts;
        c.attached = 0;
        c.parked = 0;
        c.parked_bytes = 0;
        c.closed = 0;
        for e in self.entries.values() {
            match e.state {
                EntryState::Attached => c.attached += 1,
                EntryState::Parked { retained, .. } => {
                    c.parked += 1;
                    c.parked_bytes += retained;
                }
                EntryState::Closed { .. } => c.closed += 1,
            }
        }
        c
    }

    /// Sessions attached or parked.
    pub fn live(&self) -> usize {
        self.entries
            .values()
            .filter(|e| !matches!(e.state, EntryState::Closed { .. }))
            .count()
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
                    },
                );
                let session =
                    Session::server(self.cfg.clone(), now, transport, info, params, id, secret);
                Admission::Fresh(Box::new(session))
            }
            ClientHello::Resume(r) => {
                // Unknown id, wrong proof, replay and expiry all get one answer.
                let Some(entry) = self.entries.get_mut(&r.session_id) else {
                    self.counts.rejected_resumes += 1;
                    return Self::reject(Code::UnknownSession);
                };
                if !verify_resume(&entry.secret, &r) || r.attempt <= entry.last_attempt {
                    self.counts.rejected_resumes += 1;
                    return Self::reject(Code::UnknownSession);
                }
                entry.last_attempt = r.attempt;
                if let EntryState::Closed { code, .. } = entry.state {
                    return Self::reject(code);
                }
                entry.state = EntryState::Attached;
                Admission::Resume {
                    session_id: r.session_id,
                    resume: VerifiedResume {
                        attempt: r.attempt,
                        received: r.received,
                        retained_from: r.retained_from,
                        params: r.params,
                    },
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
        if let Some(e) = self.entries.get_mut(&id) {
            let stale = session.attempt() < e.last_attempt;
            if !stale && matches!(e.state, EntryState::Attached) {
                e.state = EntryState::Parked {
                    since: now,
                    retained: session.retained(),
                };
            }
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
        if let Some(e) = self.entries.get_mut(&id) {
            e.state = EntryState::Closed {
                until: now + self.cfg.max_reconnect_time,
                code,
            };
        }
        self.enforce_limits();
    }

    fn enforce_limits(&mut self) {
        loop {
            let c = self.counts();
            if c.parked <= self.cfg.max_parked && c.parked_bytes <= self.cfg.parked_bytes_budget {
                break;
            }
            let oldest = self
                .entries
                .iter()
                .filter_map(|(id, e)| match e.state {
                    EntryState::Parked { since, .. } => Some((since, *id)),
                    _ => None,
                })
                .min();
            let Some((since, id)) = oldest else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&id) {
                e.state = EntryState::Closed {
                    until: since + self.cfg.max_reconnect_time,
                    code: Code::Evicted,
                };
            }
            self.counts.evicted += 1;
            self.events.push(SetEvent::Evicted(id));
        }
        // Tombstones are small but bounded too: the oldest go first.
        let mut closed: Vec<(Instant, SessionId)> = self
            .entries
            .iter()
            .filter_map(|(id, e)| match e.state {
                EntryState::Closed { until, .. } => Some((until, *id)),
                _ => None,
            })
            .collect();
        if closed.len() > self.cfg.max_parked {
            closed.sort_unstable();
            let excess = closed.len() - self.cfg.max_parked;
            for (_, id) in &closed[..excess] {
                self.entries.remove(id);
            }
        }
    }

    /// Expires parked sessions and forgets tombstones whose time ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        let max = self.cfg.max_reconnect_time;
        let mut gone = Vec::new();
        self.entries.retain(|id, e| match e.state {
            EntryState::Parked { since, .. } if now >= since + max => {
                e.state = EntryState::Closed {
                    until: now + max,
                    code: Code::Expired,
                };
                gone.push(*id);
                true
            }
            EntryState::Closed { until, .. } => now < until,
            _ => true,
        });
        self.counts.expired += gone.len() as u64;
        self.events.extend(gone.into_iter().map(SetEvent::Expired));
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match e.state {
                EntryState::Parked { since, .. } => Some(since + self.cfg.max_reconnect_time),
                EntryState::Closed { until, .. } => Some(until),
                EntryState::Attached => None,
            })
            .min()
    }

    /// Next eviction or expiry to act on.
    pub fn poll_event(&mut self) -> Option<SetEvent> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
    }
}
