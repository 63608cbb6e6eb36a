//! The server side as one sans-IO object: transports in, sessions out.
//!
//! An [`Endpoint`] owns everything a server of fault-tolerant sessions must
//! remember: the [`ConnectionSet`] (which sessions exist, which are parked,
//! the limits), a [`HandshakeReader`] and its deadline per transport that has
//! not yet sent its first message, the routes from transports to sessions,
//! and the sessions themselves. Its inputs name only transports
//! ([`EndpointInput`]): opened, bytes received, lost, and the passing of
//! time. Its outputs ([`EndpointOutput`]) say what to write to which
//! transport, which transport to drop, which new session is ready to be
//! accepted, and what happened to each session. The application reaches an
//! accepted session by its [`SessionHandle`] ([`Endpoint::session_mut`]) to
//! read and write it; parking, resume routing, eviction, expiry and the
//! freeing of ended sessions are the endpoint's business.
//!
//! There is no client-side counterpart: a client has one session, and
//! [`Session`] already is the whole client (it asks for transports with
//! [`crate::Output::Connect`] and resumes by itself).
//!
//! ## Drive loop
//!
//! As for a [`Session`]: after every [`Endpoint::handle_input`] and every
//! application call on a session ([`Endpoint::session_mut`]), drain
//! [`Endpoint::poll_output`] until it returns `None`, then wait for transport
//! bytes or [`Endpoint::poll_timeout`] and feed [`EndpointInput::Timeout`].
//! Transport ids are the caller's: each transport gets an id that is never
//! reused during the endpoint's life.
//!
//! ## Held and taken sessions: one object, or one task per session
//!
//! A session starts *held* by the endpoint: its bytes are routed to it
//! through [`EndpointInput::Received`], its timers are part of
//! [`Endpoint::poll_timeout`], and its outputs come out of
//! [`Endpoint::poll_output`]. That is the whole server in one object, which
//! is what an event loop (or a simulation) wants.
//!
//! A multi-threaded adapter runs each session in its own task instead, and
//! one lock over an endpoint holding every session would serialise all of
//! their data paths. So, as quinn-proto's `Endpoint` routes datagrams while
//! the caller owns each `Connection`, a session may be *taken*
//! ([`Endpoint::take_session`], right after its
//! [`EndpointOutput::Accepted`]). The endpoint then keeps only its routing
//! entry, and the two talk by handle, in plain data:
//!
//! - endpoint → session: [`EndpointOutput::Deliver`] carries a [`Delivery`]
//!   (an authenticated resume on a new transport, with the bytes that
//!   followed it, or an eviction) for the caller to [`Delivery::apply`];
//! - session → endpoint: the caller passes each event the session emits to
//!   [`Endpoint::handle_session_event`] (only `Parked` and `Finished` matter).
//!
//! The adapter's lock over the endpoint is then held only for routing a
//! handshake, never for a session's reads, writes or I/O; the sessions'
//! own locks are independent. Reports of a session that has since been
//! resumed again are recognised as stale by their attempt number, so no
//! lock ordering between sessions and the endpoint is needed beyond
//! "never take a session's lock while holding the endpoint's".
//!
//! The endpoint's state is plain data (no callbacks, no references into the
//! caller, its entropy a keyed generator), so it can be snapshotted whole.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Config, TransportInfo};
use crate::connection_set::{Admission, ConnectionSet, SetCounts, SetEvent};
use crate::error::SessionError;
use crate::frame::{ClientHello, FrameHead, SessionId};
use crate::handshake::{Entropy, HandshakeReader, HandshakeStep};
use crate::session::{
    Event, Input, Output, Session, SessionState, Transmit, TransportId, VerifiedResume,
};

/// Names one session of an [`Endpoint`] for its whole life (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle(u64);

impl std::fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Something that happened to the endpoint's transports, or the time passing.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndpointInput<'a> {
    /// A transport was accepted: its first message is awaited until
    /// [`Config::handshake_timeout`]; beyond [`Config::max_pending_handshakes`]
    /// it is dropped at once.
    TransportOpened {
        /// A new id, never used before on this endpoint.
        transport: TransportId,
        /// Its buffer sizes, as the session must see them (the adapter adds
        /// what its writer may hold, see [`TransportInfo::with_writer_hold`]).
        info: TransportInfo,
    },
    /// Bytes arrived on a transport.
    Received {
        /// Where.
        transport: TransportId,
        /// The bytes.
        data: &'a [u8],
    },
    /// The transport accepted `bytes` more of the Transmits polled for it
    /// (after [`Endpoint::set_reports_written`]; see [`Input::Written`]).
    Written {
        /// Where.
        transport: TransportId,
        /// How many bytes the write took.
        bytes: usize,
    },
    /// The transport failed or was closed by the peer.
    TransportLost {
        /// Which one.
        transport: TransportId,
    },
    /// [`Endpoint::poll_timeout`] may have passed.
    Timeout,
}

/// Something for the caller to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndpointOutput {
    /// Write these bytes to their transport, whole, before the next write to
    /// it (or, after [`Endpoint::set_reports_written`], queue them, write in
    /// batches and report what the transport took). A transmit for a
    /// transport already dropped is moot.
    Transmit(Transmit),
    /// Close this transport and stop reading it.
    DropTransport {
        /// Which one.
        transport: TransportId,
    },
    /// A new session completed its first handshake on `transport` and is
    /// ready to be accepted. To drive it elsewhere, take it now
    /// ([`Endpoint::take_session`]), before polling again.
    Accepted {
        /// The new session.
        session: SessionHandle,
        /// Its transport (routed to it from now on).
        transport: TransportId,
    },
    /// A held session's event (`Finished` is its last).
    Event {
        /// Whose.
        session: SessionHandle,
        /// What.
        event: Event,
    },
    /// Something for a taken session: apply it where that session lives.
    Deliver {
        /// For whom.
        session: SessionHandle,
        /// What.
        delivery: Delivery,
    },
}

/// Input the endpoint routed to a session the caller took
/// ([`Endpoint::take_session`]).
#[derive(Debug)]
pub struct Delivery(DeliveryKind);

#[derive(Debug)]
enum DeliveryKind {
    Resume {
        transport: TransportId,
        resume: VerifiedResume,
        info: TransportInfo,
        /// Bytes that followed the client's resume on the transport.
        leftover: Bytes,
    },
    Evicted,
}

impl Delivery {
    /// The new transport a resume brings: the caller hands that transport's
    /// I/O to the session before applying the delivery.
    pub fn transport(&self) -> Option<TransportId> {
        match &self.0 {
            DeliveryKind::Resume { transport, .. } => Some(*transport),
            DeliveryKind::Evicted => None,
        }
    }

    /// Feeds it to the session (then drain the session's outputs).
    pub fn apply(self, now: Instant, session: &mut Session) {
        match self.0 {
            DeliveryKind::Resume {
                transport,
                resume,
                info,
                leftover,
            } => {
                session.handle_input(
                    now,
                    Input::Resume {
                        transport,
                        resume,
                        info,
                    },
                );
                if !leftover.is_empty() {
                    session.handle_input(
                        now,
                        Input::ReceivedBytes {
                            transport,
                            data: leftover,
                        },
                    );
                }
            }
            DeliveryKind::Evicted => session.handle_input(now, Input::Evicted),
        }
    }
}

/// Counts for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The connection set's counts.
    pub set: SetCounts,
    /// Sessions the endpoint remembers (held, or taken and not finished).
    pub sessions: usize,
    /// Sessions held by the endpoint (a subset of `sessions`).
    pub held: usize,
    /// Transports waiting for their first message.
    pub pending_handshakes: usize,
    /// Transports routed to held sessions: one per attached held session,
    /// plus one it is leaving until that drop is polled. Taken sessions
    /// have none (their caller routes their transport).
    pub routed_transports: usize,
    /// Sessions accepted so far.
    pub accepted: u64,
    /// Transports dropped at once: [`Config::max_pending_handshakes`] reached.
    pub refused_handshakes: u64,
    /// Transports dropped at their handshake deadline.
    pub expired_handshakes: u64,
    /// Transports whose first message was malformed or refused.
    pub rejected_handshakes: u64,
}

/// A session the endpoint knows.
#[derive(Debug)]
struct Slot {
    id: SessionId,
    /// `None` once the caller took it. Boxed: a taken session's slot stays
    /// until the session finishes, and must not keep a session's worth of
    /// room (some 2 KiB per session of a one-task-per-session server).
    session: Option<Box<Session>>,
    /// Transports routed to it (held sessions only; usually one).
    routes: Vec<TransportId>,
    /// Its deadline as booked in `Endpoint::timers`.
    timer: Option<Instant>,
}

/// A transport waiting for its first message.
#[derive(Debug)]
struct Pending {
    reader: HandshakeReader,
    info: TransportInfo,
}

/// Session ids and secrets come from a keyed pseudo-random function
/// (HMAC-SHA256 over a counter): unpredictable without the seed, and plain
/// data, unlike a handle on the operating system's generator.
#[derive(Clone)]
struct KeyedEntropy {
    key: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for KeyedEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedEntropy").finish_non_exhaustive()
    }
}

impl Entropy for KeyedEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            self.counter += 1;
            // HMAC accepts keys of any length, so this cannot fail.
            let mut m =
                <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
            m.update(b"ft-session v1 endpoint entropy");
            m.update(&self.counter.to_be_bytes());
            let block = m.finalize().into_bytes();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

/// The server side of fault-tolerant sessions. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    set: ConnectionSet,
    entropy: KeyedEntropy,
    now: Instant,
    pending: HashMap<TransportId, Pending>,
    /// Pending transports by deadline.
    deadlines: BTreeSet<(Instant, TransportId)>,
    slots: HashMap<SessionHandle, Slot>,
    ids: HashMap<SessionId, SessionHandle>,
    routes: HashMap<TransportId, SessionHandle>,
    /// Held sessions by their next deadline.
    timers: BTreeSet<(Instant, SessionHandle)>,
    /// Held sessions that may have outputs, a new deadline, or be done.
    dirty: BTreeSet<SessionHandle>,
    out: VecDeque<EndpointOutput>,
    next_handle: u64,
    stats: EndpointStats,
    /// Every new session reports written bytes (see
    /// [`Session::set_reports_written`]).
    reports_written: bool,
    /// False while draining: fresh HELLOs are refused, resumes still routed.
    accepting: bool,
}

impl Endpoint {
    /// An endpoint with no sessions. `seed` keys the generator of session
    /// ids and secrets: take it from a CSPRNG (anyone who knows it can
    /// predict every secret). Fails if `config` does not validate.
    pub fn new(config: Config, now: Instant, seed: [u8; 32]) -> Result<Endpoint, SessionError> {
        config.validate()?;
        Ok(Endpoint {
            set: ConnectionSet::new(config),
            entropy: KeyedEntropy {
                key: seed,
                counter: 0,
            },
            now,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            slots: HashMap::new(),
            ids: HashMap::new(),
            routes: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: BTreeSet::new(),
            out: VecDeque::new(),
            next_handle: 0,
            stats: EndpointStats::default(),
            reports_written: false,
            accepting: true,
        })
    }

    /// Chooses the drive contract of every session admitted from now on
    /// ([`Session::set_reports_written`]): `true` when the caller writes
    /// Transmits in batches and reports what each transport accepted with
    /// [`EndpointInput::Written`] (held sessions) or [`Input::Written`]
    /// (taken ones).
    pub fn set_reports_written(&mut self, on: bool) {
        self.reports_written = on;
    }

    // ---- getters ----

    /// The configuration of the endpoint and of its sessions.
    pub fn config(&self) -> &Config {
        self.set.config()
    }

    /// Current counts.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            set: self.set.counts(),
            sessions: self.slots.len(),
            held: self.slots.values().filter(|s| s.session.is_some()).count(),
            pending_handshakes: self.pending.len(),
            routed_transports: self.routes.len(),
            ..self.stats
        }
    }

    /// A held session, to inspect.
    pub fn session(&self, handle: SessionHandle) -> Option<&Session> {
        self.slots.get(&handle)?.session.as_deref()
    }

    /// A held session, to read, write, shut down or close; drain
    /// [`Self::poll_output`] afterwards. `None` once the session is gone: a
    /// finished session stays until everything it received has been read.
    pub fn session_mut(&mut self, handle: SessionHandle) -> Option<&mut Session> {
        let session = self.slots.get_mut(&handle)?.session.as_deref_mut()?;
        self.dirty.insert(handle);
        Some(session)
    }

    /// False while bytes of `transport` should stay in the kernel: its
    /// session's receive queue is full (TCP then slows the peer down), or
    /// the endpoint does not know the transport.
    pub fn wants_input(&self, transport: TransportId) -> bool {
        if self.pending.contains_key(&transport) {
            return true;
        }
        self.routes
            .get(&transport)
            .and_then(|h| self.session(*h))
            .is_some_and(Session::wants_input)
    }

    /// When [`EndpointInput::Timeout`] next has work: handshake deadlines,
    /// the connection set's expiries and every held session's timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.deadlines.first().map(|d| d.0),
            self.timers.first().map(|t| t.0),
            self.set.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Stops (`false`) or restarts admitting new sessions. While stopped, a
    /// fresh HELLO is refused with REJECT `BUSY` (its client retries with
    /// backoff within its connect timeout, perhaps on another node) and
    /// counted in `rejected_handshakes`; resumes are routed as before, so
    /// existing sessions can finish. This is how a server drains.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// False after `set_accepting(false)`.
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    // ---- inputs ----

    /// Feeds one input.
    pub fn handle_input(&mut self, now: Instant, input: EndpointInput<'_>) {
        self.now = self.now.max(now);
        match input {
            EndpointInput::TransportOpened { transport, info } => self.on_opened(transport, info),
            EndpointInput::Received { transport, data } => self.on_received(transport, data),
            EndpointInput::Written { transport, bytes } => {
                if let Some(&h) = self.routes.get(&transport) {
                    self.feed(h, Input::Written { transport, bytes });
                }
            }
            EndpointInput::TransportLost { transport } => self.on_lost(transport),
            EndpointInput::Timeout => self.on_timeout(),
        }
    }

    fn on_opened(&mut self, transport: TransportId, info: TransportInfo) {
        if self.pending.contains_key(&transport) || self.routes.contains_key(&transport) {
            // A reused id is the caller's bug; the live transport keeps it.
            return;
        }
        if self.pending.len() >= self.config().max_pending_handshakes {
            self.stats.refused_handshakes += 1;
            self.out
                .push_back(EndpointOutput::DropTransport { transport });
            return;
        }
        let reader = HandshakeReader::new(self.now, self.config());
        self.deadlines.insert((reader.deadline(), transport));
        self.pending.insert(transport, Pending { reader, info });
    }

    fn forget_pending(&mut self, transport: TransportId) -> Option<Pending> {
        let p = self.pending.remove(&transport)?;
        self.deadlines.remove(&(p.reader.deadline(), transport));
        Some(p)
    }

    fn on_received(&mut self, transport: TransportId, data: &[u8]) {
        if let Some(p) = self.pending.get_mut(&transport) {
            match p.reader.feed(data) {
                HandshakeStep::NeedMore => {}
                HandshakeStep::Reject { reply, .. } => {
                    self.forget_pending(transport);
                    self.reject(transport, reply);
                }
                HandshakeStep::Hello { hello, consumed } => {
                    let info = p.info;
                    self.forget_pending(transport);
                    let rest = data.get(consumed..).unwrap_or_default();
                    self.admit(transport, info, hello, rest);
                }
            }
            return;
        }
        // Bytes of a transport already dropped are stale: ignored.
        if let Some(&h) = self.routes.get(&transport) {
            self.feed(h, Input::Received { transport, data });
        }
    }

    fn on_lost(&mut self, transport: TransportId) {
        if self.forget_pending(transport).is_some() {
            return;
        }
        if let Some(&h) = self.routes.get(&transport) {
            self.feed(h, Input::TransportLost { transport });
        }
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        while let Some(&(deadline, transport)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            // A stalled or hostile handshake costs at most its deadline.
            self.forget_pending(transport);
            self.stats.expired_handshakes += 1;
            self.out
                .push_back(EndpointOutput::DropTransport { transport });
        }
        self.set.handle_timeout(now);
        self.set_events();
        while let Some(&(deadline, h)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.remove(&(deadline, h));
            if let Some(slot) = self.slots.get_mut(&h) {
                slot.timer = None;
            }
            self.feed(h, Input::Timeout);
        }
    }

    /// Feeds a held session (taken ones are the caller's) and marks it for
    /// draining.
    fn feed(&mut self, h: SessionHandle, input: Input<'_>) {
        let now = self.now;
        if let Some(s) = self.session_mut(h) {
            s.handle_input(now, input);
        }
    }

    fn reject(&mut self, transport: TransportId, reply: Option<Bytes>) {
        self.stats.rejected_handshakes += 1;
        if let Some(payload) = reply {
            self.out.push_back(EndpointOutput::Transmit(Transmit {
                transport,
                head: FrameHead::EMPTY,
                payload,
            }));
        }
        self.out
            .push_back(EndpointOutput::DropTransport { transport });
    }

    fn admit(
        &mut self,
        transport: TransportId,
        info: TransportInfo,
        hello: ClientHello,
        rest: &[u8],
    ) {
        let now = self.now;
        if !self.accepting && matches!(hello, ClientHello::Fresh(_)) {
            let busy = crate::frame::ServerReply::Reject {
                code: crate::frame::Code::Busy,
                detail: 0,
            };
            return self.reject(transport, Some(busy.to_bytes()));
        }
        let admission = self
            .set
            .admit(now, transport, info, hello, &mut self.entropy);
        match admission {
            Admission::Fresh(mut session) => {
                session.set_reports_written(self.reports_written);
                let Some(id) = session.session_id() else {
                    return self.reject(transport, None);
                };
                if !rest.is_empty() {
                    session.handle_input(
                        now,
                        Input::Received {
                            transport,
                            data: rest,
                        },
                    );
                }
                self.next_handle += 1;
                let h = SessionHandle(self.next_handle);
                self.slots.insert(
                    h,
                    Slot {
                        id,
                        session: Some(session),
                        routes: vec![transport],
                        timer: None,
                    },
                );
                self.ids.insert(id, h);
                self.routes.insert(transport, h);
                self.dirty.insert(h);
                self.stats.accepted += 1;
                self.out.push_back(EndpointOutput::Accepted {
                    session: h,
                    transport,
                });
            }
            Admission::Resume { session_id, resume } => {
                let Some(&h) = self.ids.get(&session_id) else {
                    // The set knows it but it has no session: it just ended.
                    return self.reject(transport, None);
                };
                let delivery = Delivery(DeliveryKind::Resume {
                    transport,
                    resume,
                    info,
                    leftover: Bytes::copy_from_slice(rest),
                });
                self.deliver(h, delivery);
            }
            Admission::Reject { reply, .. } => self.reject(transport, Some(reply)),
        }
        // Admission runs the set's timers: they may have evicted someone.
        self.set_events();
    }

    /// Applies a delivery to a held session, or hands it out for a taken one.
    fn deliver(&mut self, h: SessionHandle, delivery: Delivery) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(&h) else {
            return;
        };
        match slot.session.as_deref_mut() {
            Some(s) => {
                if let Some(t) = delivery.transport() {
                    slot.routes.push(t);
                    self.routes.insert(t, h);
                }
                delivery.apply(now, s);
                self.dirty.insert(h);
            }
            None => self.out.push_back(EndpointOutput::Deliver {
                session: h,
                delivery,
            }),
        }
    }

    /// Acts on the connection set's evictions and expiries.
    fn set_events(&mut self) {
        while let Some(e) = self.set.poll_event() {
            match e {
                SetEvent::Evicted(id) => {
                    if let Some(&h) = self.ids.get(&id) {
                        self.deliver(h, Delivery(DeliveryKind::Evicted));
                    }
                }
                SetEvent::Expired(id) => {
                    // The session's own timer ends it; make sure it runs.
                    if let Some(&h) = self.ids.get(&id) {
                        self.feed(h, Input::Timeout);
                    }
                }
            }
        }
    }

    /// A taken session's event: pass every event the session emits (only
    /// `Parked` and `Finished` change anything). `session` is its state
    /// right after emitting it. Reports of held sessions are ignored (the
    /// endpoint sees their events itself).
    pub fn handle_session_event(
        &mut self,
        now: Instant,
        handle: SessionHandle,
        session: &Session,
        event: &Event,
    ) {
        self.now = self.now.max(now);
        if !self.slots.get(&handle).is_some_and(|s| s.session.is_none()) {
            return;
        }
        self.observe(handle, session, event);
        if matches!(event, Event::Finished(_)) {
            self.slots.remove(&handle);
        }
    }

    /// The endpoint's part of a session event.
    fn observe(&mut self, h: SessionHandle, session: &Session, event: &Event) {
        let Some(id) = self.slots.get(&h).map(|s| s.id) else {
            return;
        };
        if note(&mut self.set, &mut self.ids, self.now, id, session, event) {
            self.set_events();
        }
    }

    /// Takes a session out to drive it elsewhere (one task per session):
    /// from now on the caller feeds it its transport's bytes and timers,
    /// drains its outputs, reports its events with
    /// [`Self::handle_session_event`] and applies what
    /// [`EndpointOutput::Deliver`] brings it. Take it right after its
    /// [`EndpointOutput::Accepted`] and none of its outputs have been drained
    /// yet. `None` if the session is not held.
    pub fn take_session(&mut self, handle: SessionHandle) -> Option<Session> {
        let slot = self.slots.get_mut(&handle)?;
        let session = *slot.session.take()?;
        for t in slot.routes.drain(..) {
            self.routes.remove(&t);
        }
        if let Some(t) = slot.timer.take() {
            self.timers.remove(&(t, handle));
        }
        self.dirty.remove(&handle);
        if session.is_finished() {
            // Its end was already reported: nothing left to route.
            self.slots.remove(&handle);
        }
        Some(session)
    }

    // ---- outputs ----

    /// The next thing to do, or `None` until new input or the next timeout.
    pub fn poll_output(&mut self) -> Option<EndpointOutput> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Some(o);
            }
            let h = *self.dirty.first()?;
            if let Some(o) = self.drain(h) {
                return Some(o);
            }
        }
    }

    /// One output of a dirty held session; `None` once it has none left
    /// (then its timer is booked again, or it is freed).
    fn drain(&mut self, h: SessionHandle) -> Option<EndpointOutput> {
        let Some(session) = self
            .slots
            .get_mut(&h)
            .and_then(|s| s.session.as_deref_mut())
        else {
            self.dirty.remove(&h);
            return None;
        };
        match session.poll_output() {
            Some(Output::Transmit(t)) => Some(EndpointOutput::Transmit(t)),
            Some(Output::DropTransport { transport }) => {
                if self.routes.get(&transport) == Some(&h) {
                    self.routes.remove(&transport);
                }
                if let Some(slot) = self.slots.get_mut(&h) {
                    slot.routes.retain(|&t| t != transport);
                }
                Some(EndpointOutput::DropTransport { transport })
            }
            // A server session never dials.
            Some(Output::Connect { .. }) => None,
            Some(Output::Event(event)) => {
                let id = self.slots.get(&h).map(|s| s.id);
                let slot = self.slots.get(&h).and_then(|s| s.session.as_deref());
                if let (Some(id), Some(s)) = (id, slot) {
                    if note(&mut self.set, &mut self.ids, self.now, id, s, &event) {
                        self.set_events();
                    }
                }
                Some(EndpointOutput::Event { session: h, event })
            }
            None => {
                self.settle(h);
                None
            }
        }
    }

    /// A held session has no more outputs: book its next deadline, or free
    /// it once it has finished and everything it received was read.
    fn settle(&mut self, h: SessionHandle) {
        self.dirty.remove(&h);
        let Some(slot) = self.slots.get_mut(&h) else {
            return;
        };
        if let Some(t) = slot.timer.take() {
            self.timers.remove(&(t, h));
        }
        let Some(s) = slot.session.as_deref() else {
            return;
        };
        if s.is_finished() {
            if s.readable() == 0 {
                for t in &slot.routes {
                    self.routes.remove(t);
                }
                self.slots.remove(&h);
            }
            return;
        }
        slot.timer = s.poll_timeout();
        if let Some(t) = slot.timer {
            self.timers.insert((t, h));
        }
    }
}

/// Books a session's `Parked` or `Finished` in the set; true if it did.
fn note(
    set: &mut ConnectionSet,
    ids: &mut HashMap<SessionId, SessionHandle>,
    now: Instant,
    id: SessionId,
    session: &Session,
    event: &Event,
) -> bool {
    match event {
        // A Parked drained after a newer resume was applied is stale: the
        // session's attempt already matches the set's, so the state decides.
        Event::Parked if session.state() == SessionState::Parked => set.parked(now, session),
        Event::Finished(outcome) => {
            set.finished(now, id, outcome);
            ids.remove(&id);
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A taken session's slot stays until the session finishes: it must not
    /// keep a session's worth of room (the session itself is boxed), or a
    /// server with one task per session pays for each session twice.
    #[test]
    fn a_slot_is_small_beside_a_session() {
        let (slot, session) = (std::mem::size_of::<Slot>(), std::mem::size_of::<Session>());
        assert!(slot <= 96, "Slot is {slot} bytes");
        assert!(
            session > 4 * slot,
            "Session is {session} bytes, Slot {slot}"
        );
    }
}
