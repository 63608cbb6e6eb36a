//! One end of a fault-tolerant session: the sans-IO state machine.
//!
//! Inputs arrive through [`Session::handle_input`], outputs leave through
//! [`Session::poll_output`]; [`Session::poll_timeout`] says when to call
//! `handle_input(now, Input::Timeout)`. After every input or application
//! call, drain `poll_output` until it returns `None`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::{later, Config, ReleasePolicy, TransportInfo};
use crate::error::{ReadError, SessionError, Violation, WriteError};
use crate::frame::{
    ClientHello, Code, Decoded, Frame, FrameDecoder, FrameHead, Head, Params, Resume, ServerReply,
    SessionId, SECRET_LEN,
};
use crate::handshake::{
    accept_proof, encode_hello, ended_proof, resume_proof, verify_accept, verify_ended,
};
use crate::recv_queue::RecvQueue;
use crate::stream_buffer::StreamBuffer;

/// Bit 63 of a DATA_LOST detail: the lost bytes were the client's (the rest
/// of the detail is the server's received count); clear, they were the
/// server's (the detail is the oldest offset the server retains).
pub(crate) const DATA_LOST_CLIENT_STREAM: u64 = 1 << 63;

/// Identifies one transport of a session (a generation): inputs tagged with
/// a superseded transport are ignored. Ids need only be unique within one
/// session (the client's are 1, 2, 3, ...; a server adapter may number its
/// accepted transports globally).
pub type TransportId = u64;

/// Which end of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connects and reconnects.
    Client,
    /// Accepts; parks the session while the client is away.
    Server,
}

/// A resume the server's [`crate::ConnectionSet`] has authenticated.
///
/// Only the set makes one, after the client's proof verified: a value of
/// this type is the evidence that lets a new transport supersede a live one
/// (R3 of `docs/PROTOCOL.md`), so it cannot be built or altered elsewhere.
///
/// ```compile_fail
/// use ft_session_core::VerifiedResume;
/// let forged = VerifiedResume { attempt: 9, received: 0, retained_from: 0, params: Default::default() };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedResume {
    attempt: u64,
    received: u64,
    retained_from: u64,
    params: Params,
}

impl VerifiedResume {
    /// Made only by the connection set, once the proof verified.
    pub(crate) fn new(attempt: u64, received: u64, retained_from: u64, params: Params) -> Self {
        VerifiedResume {
            attempt,
            received,
            retained_from,
            params,
        }
    }

    /// The attempt number (already checked to be fresh).
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// Bytes the client has received from this side.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Oldest offset the client still retains.
    pub fn retained_from(&self) -> u64 {
        self.retained_from
    }

    /// The client's parameters on the new transport.
    pub fn params(&self) -> Params {
        self.params
    }
}

/// Something that happened outside the state machine.
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// Client: the transport requested by [`Output::Connect`] is connected.
    TransportUp {
        /// The id from `Output::Connect`.
        transport: TransportId,
        /// Buffer sizes of the transport, if known.
        info: TransportInfo,
    },
    /// Bytes arrived on a transport.
    Received {
        /// Where they arrived.
        transport: TransportId,
        /// The bytes.
        data: &'a [u8],
    },
    /// Bytes arrived on a transport, owned: payload is kept by reference, not
    /// copied (read buffers of adapters that own them, in-memory transports).
    ReceivedBytes {
        /// Where they arrived.
        transport: TransportId,
        /// The bytes.
        data: Bytes,
    },
    /// The transport accepted the next `bytes` bytes of the Transmits polled
    /// for it, in the order they were polled (a write, possibly partial, of
    /// the adapter's queue). Only meaningful after
    /// [`Session::set_reports_written`]`(true)`: the implicit release bound
    /// then counts only bytes reported here. Reports for a transport other
    /// than the one the queue belongs to, and bytes beyond what was polled,
    /// are ignored.
    Written {
        /// The transport written to.
        transport: TransportId,
        /// How many bytes it accepted (what the write call returned).
        bytes: usize,
    },
    /// The transport failed or closed (or, client, could not be connected).
    TransportLost {
        /// Which one.
        transport: TransportId,
    },
    /// A timer from [`Session::poll_timeout`] may have expired.
    Timeout,
    /// Server: an authenticated resume arrived on a new transport.
    Resume {
        /// The new transport (the adapter picks a fresh id).
        transport: TransportId,
        /// What the client sent.
        resume: VerifiedResume,
        /// Buffer sizes of the new transport, if known.
        info: TransportInfo,
    },
    /// Server: the connection set evicted this parked session.
    Evicted,
}

/// Bytes to write to a transport: `head` then `payload`.
///
/// Two drive contracts (see the crate docs): by default the adapter finishes
/// writing one `Transmit` before it polls the next output, and a polled
/// Transmit counts as handed to the transport. After
/// [`Session::set_reports_written`]`(true)` the adapter may poll many ahead
/// (a [`crate::TransmitQueue`] writes them vectored) and reports what the transport
/// accepted with [`Input::Written`].
///
/// A `Transmit` may name a transport the session has already given up (a
/// REJECT or ABORT written just before [`Output::DropTransport`] for it):
/// write it if the transport still takes bytes, and drop it if the write
/// would block or fail.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// The transport to write to.
    pub transport: TransportId,
    /// Frame header, held inline (may be empty).
    pub head: FrameHead,
    /// Payload, shared with the stream buffer (no copy).
    pub payload: Bytes,
}

impl Transmit {
    /// Total bytes to write.
    pub fn len(&self) -> usize {
        self.head.as_slice().len() + self.payload.len()
    }

    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the bytes into `out` (for simple adapters and tests).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head.as_slice());
        out.extend_from_slice(&self.payload);
    }
}

/// What the application and observers learn.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The first handshake completed.
    Established {
        /// The session's id.
        session_id: SessionId,
    },
    /// The current transport was lost (or declared dead).
    TransportLost {
        /// Which one.
        transport: TransportId,
    },
    /// Server: the session waits for its client to resume.
    Parked,
    /// A resume handshake completed on a new transport.
    Resumed {
        /// The client's attempt number.
        attempt: u64,
        /// Bytes this side had received.
        local_received: u64,
        /// Bytes the peer had received.
        peer_received: u64,
    },
    /// Bytes `[from, to)` are sent again after a resume.
    Retransmit {
        /// First offset.
        from: u64,
        /// One past the last offset.
        to: u64,
    },
    /// The stream buffer released bytes before `up_to`.
    Released {
        /// New start of the stream buffer.
        up_to: u64,
        /// Bytes released by this step.
        bytes: u64,
    },
    /// Bytes (or end of stream) can be read.
    Readable,
    /// `send`/`write` can accept bytes again.
    Writable,
    /// The peer finished its direction: reads return 0 once drained.
    PeerFinished,
    /// The session ended: `Ok` after a clean close, else why. Last event.
    Finished(Result<(), SessionError>),
}

/// Something for the adapter to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Write these bytes.
    Transmit(Transmit),
    /// Client: open a new transport and report it with `TransportUp` (or
    /// `TransportLost` if it fails).
    Connect {
        /// Id for the new transport.
        transport: TransportId,
    },
    /// Close this transport and stop reading it.
    DropTransport {
        /// Which one.
        transport: TransportId,
    },
    /// Tell the application.
    Event(Event),
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Client: waiting for a requested transport to connect.
    Connecting,
    /// Client: hello or resume sent, waiting for the answer.
    Handshaking,
    /// Client: waiting before the next reconnect attempt.
    Backoff,
    /// Data flows.
    Established,
    /// Server: transport lost, waiting for the client.
    Parked,
    /// Ended (see [`Session::error`]).
    Finished,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Resume handshakes completed.
    pub resumes: u64,
    /// Transports lost or declared dead.
    pub transports_lost: u64,
    /// Connect attempts requested (client).
    pub connect_attempts: u64,
    /// Bytes sent again after resumes.
    pub retransmitted_bytes: u64,
    /// Bytes released from the stream buffer.
    pub released_bytes: u64,
    /// Payload bytes received.
    pub received_bytes: u64,
    /// Payload bytes accepted from the application.
    pub written_bytes: u64,
    /// Most bytes ever retained at once.
    pub max_retained: u64,
}

/// One end of a session. See the crate docs for the drive loop.
///
/// A client is made with [`Session::client`]; a server session only by the
/// connection set, which admits, counts and resumes it:
///
/// ```compile_fail
/// use std::time::Instant;
/// use ft_session_core::*;
/// let s = Session::server(Config::default(), Instant::now(), 1, TransportInfo::default(),
///     Params::default(), SessionId([0; 16]), [0; 32]);
/// ```
#[derive(Debug)]
pub struct Session {
    role: Role,
    cfg: Config,
    now: Instant,
    state: SessionState,
    id: Option<SessionId>,
    secret: Option<[u8; SECRET_LEN]>,
    transport: Option<TransportId>,
    next_transport: TransportId,
    info: TransportInfo,
    decoder: FrameDecoder,
    hs_buf: Vec<u8>,
    out: VecDeque<Output>,
    rng: u64,

    // Sending side.
    sbuf: StreamBuffer,
    tail: BytesMut,
    cursor: u64,
    high: u64,
    peer_acked: u64,
    fin_requested: bool,
    close_requested: bool,
    fin_on_transport: bool,
    fin_sent: bool,
    close_on_transport: bool,
    close_sent: bool,
    write_blocked: bool,
    peer_params: Params,
    /// Stream offset up to which bytes are known to be in the transport:
    /// polled (default contract) or reported by [`Input::Written`]. The
    /// implicit bound and the implicit send capacity count from here.
    accepted: u64,
    /// The adapter reports written bytes ([`Session::set_reports_written`]).
    reports_written: bool,
    /// Transmits polled for `unwritten_on` and not yet reported written, in
    /// order (reports only).
    unwritten: VecDeque<Unwritten>,
    unwritten_on: Option<TransportId>,
    /// Bytes of `unwritten`'s front already reported.
    unwritten_done: usize,
    unwritten_bytes: u64,

    // Receiving side.
    received: u64,
    rbuf: RecvQueue,
    peer_fin: Option<u64>,
    peer_close_requested: bool,
    acked_sent: u64,
    pending_ack: bool,
    pending_heartbeat: bool,

    // Timers.
    last_rx: Instant,
    last_tx: Instant,
    handshake_deadline: Option<Instant>,
    reconnect_deadline: Option<Instant>,
    next_attempt: Option<Instant>,
    failures: u32,
    attempt: u64,
    /// Client: why the last resume attempt was refused without proof (an
    /// unauthenticated REJECT, a RESUME_OK that did not verify...): the
    /// error the session ends with if the reconnect time runs out next.
    last_refusal: Option<SessionError>,

    error: Option<SessionError>,
    stats: Stats,
}

impl Session {
    fn new(role: Role, cfg: Config, now: Instant, seed: u64) -> Self {
        let decoder = FrameDecoder::new(cfg.max_frame_payload);
        Session {
            role,
            now,
            state: SessionState::Connecting,
            id: None,
            secret: None,
            transport: None,
            next_transport: 0,
            info: TransportInfo::default(),
            decoder,
            hs_buf: Vec::new(),
            out: VecDeque::new(),
            rng: seed | 1,
            sbuf: StreamBuffer::new(),
            tail: BytesMut::new(),
            cursor: 0,
            high: 0,
            peer_acked: 0,
            fin_requested: false,
            close_requested: false,
            fin_on_transport: false,
            fin_sent: false,
            close_on_transport: false,
            close_sent: false,
            write_blocked: false,
            peer_params: Params::default(),
            accepted: 0,
            reports_written: false,
            unwritten: VecDeque::new(),
            unwritten_on: None,
            unwritten_done: 0,
            unwritten_bytes: 0,
            received: 0,
            rbuf: RecvQueue::default(),
            peer_fin: None,
            peer_close_requested: false,
            acked_sent: 0,
            pending_ack: false,
            pending_heartbeat: false,
            last_rx: now,
            last_tx: now,
            handshake_deadline: None,
            reconnect_deadline: Some(later(now, cfg.connect_timeout)),
            next_attempt: None,
            failures: 0,
            attempt: 0,
            last_refusal: None,
            error: None,
            stats: Stats::default(),
            cfg,
        }
    }

    /// A client session; its first output asks for a transport. `seed`
    /// drives reconnect jitter. An invalid `config` fails the session at once.
    pub fn client(config: Config, now: Instant, seed: u64) -> Session {
        let mut s = Session::new(Role::Client, config, now, seed);
        if let Err(e) = s.cfg.validate() {
            s.fail(e);
            return s;
        }
        s.start_connect();
        s
    }

    /// A server session for a fresh hello, made only by
    /// [`crate::ConnectionSet::admit`] (a session outside the set could be
    /// neither resumed nor counted against its limits); its first output is
    /// the server hello.
    pub(crate) fn server(
        config: Config,
        now: Instant,
        transport: TransportId,
        info: TransportInfo,
        client_params: Params,
        session_id: SessionId,
        secret: [u8; SECRET_LEN],
    ) -> Session {
        // A server never reconnects, so it needs no jitter seed.
        let mut s = Session::new(Role::Server, config, now, 1);
        s.id = Some(session_id);
        s.secret = Some(secret);
        s.transport = Some(transport);
        s.info = info;
        s.peer_params = client_params;
        if let Err(e) = s.cfg.validate() {
            s.fail(e);
            return s;
        }
        let reply = ServerReply::Accept {
            session_id,
            secret,
            params: s.own_params(),
        };
        s.push_transmit(transport, FrameHead::EMPTY, reply.to_bytes());
        s.established(now);
        s.emit(Event::Established { session_id });
        if let Err(e) = s.check_implicit() {
            s.fail(e);
        }
        s
    }

    // ---- getters ----

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session id, once known.
    pub fn session_id(&self) -> Option<SessionId> {
        self.id
    }

    /// Current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The error that ended the session, if it failed.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    /// True once the session has ended (cleanly or not).
    pub fn is_finished(&self) -> bool {
        self.state == SessionState::Finished
    }

    /// The transport in use, if any.
    pub fn transport(&self) -> Option<TransportId> {
        self.transport
    }

    /// The attempt number of the current (or last) transport: the client's
    /// connect attempt, or on the server the attempt of the last resume.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Payload bytes received from the peer.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes retained in the stream buffer (written and not yet released).
    pub fn retained(&self) -> u64 {
        self.sbuf.len() + self.tail.len() as u64
    }

    /// Offset of the oldest retained byte.
    pub fn retained_from(&self) -> u64 {
        self.sbuf.start()
    }

    /// Server: the client did more than a HELLO: it sent payload, or
    /// acknowledged bytes, or a resume of it verified.
    pub(crate) fn is_proven(&self) -> bool {
        self.received > 0 || self.peer_acked > 0 || self.stats.resumes > 0
    }

    /// The policy this side releases under with its current peer: the
    /// configured one, except that an implicit side whose peer releases on
    /// acknowledgments releases on them too (PROTOCOL.md section 4, mixed
    /// policies). Its acknowledgments travel behind its data, and the peer
    /// reads ahead only a send buffer's worth of it; a sender not held to
    /// that window could fill the transport with data the peer does not
    /// read and so stall the acknowledgments the peer waits for.
    pub fn effective_release_policy(&self) -> ReleasePolicy {
        match self.cfg.release_policy {
            ReleasePolicy::Implicit if !self.peer_params.wants_acks => ReleasePolicy::Implicit,
            _ => ReleasePolicy::Ack,
        }
    }

    /// True if the peer releases on this side's acknowledgments: it asked
    /// for them, or it is implicit and this side is not (so it falls back
    /// to acknowledgments; see [`Self::effective_release_policy`]).
    fn peer_releases_on_acks(&self) -> bool {
        self.peer_params.wants_acks || self.cfg.release_policy == ReleasePolicy::Ack
    }

    /// The most bytes the stream buffer may hold under the current policy.
    pub fn retain_capacity(&self) -> u64 {
        let cap = self.cfg.send_buffer_capacity as u64;
        match self.effective_release_policy() {
            ReleasePolicy::Ack => cap,
            ReleasePolicy::Implicit => cap.saturating_add(self.implicit_bound().unwrap_or(0)),
        }
    }

    /// Bytes `send`/`write` would accept now.
    pub fn send_capacity(&self) -> usize {
        // A parked session takes no writes: what it retains stays what the
        // connection set counted against its parked-bytes budget.
        if matches!(self.state, SessionState::Finished | SessionState::Parked) || self.fin_requested
        {
            return 0;
        }
        let queued_end = self.sbuf.end() + self.tail.len() as u64;
        let used = match self.effective_release_policy() {
            ReleasePolicy::Ack => queued_end - self.sbuf.start(),
            ReleasePolicy::Implicit => queued_end - self.accepted.max(self.sbuf.start()),
        };
        (self.cfg.send_buffer_capacity as u64).saturating_sub(used) as usize
    }

    /// Received bytes waiting to be read.
    pub fn readable(&self) -> usize {
        self.rbuf.len()
    }

    /// False while the receive queue is full: the adapter should stop reading
    /// the transport until the application reads (TCP then pushes back).
    ///
    /// "Full" depends on the peer's policy (PROTOCOL.md section 4, flow
    /// control). From a peer that releases on acknowledgments the queue may
    /// hold [`Config::recv_buffer_capacity`] plus the peer's send buffer
    /// (clamped by [`Config::max_peer_send_buffer`]): acknowledgments never
    /// run more than `recv_buffer_capacity` ahead of what the application
    /// read, so such a peer cannot send more, and its own acknowledgments,
    /// which travel behind its data, can always be read. Once the peer has
    /// sent all it may, reading brings only control frames and stays on.
    /// From a peer that releases implicitly (both sides chose the implicit
    /// policy: [`Self::effective_release_policy`]) the queue holds
    /// `recv_buffer_capacity`.
    ///
    /// Always true during a handshake: the answer must be read even when the
    /// application is not reading, or the resume could never complete (the
    /// queue may then exceed its capacity by what one read delivers). Also
    /// true once the peer finished its direction: only control frames can
    /// follow its FIN.
    pub fn wants_input(&self) -> bool {
        self.state == SessionState::Handshaking
            || self.peer_fin.is_some()
            || (self.rbuf.len() as u64) < self.recv_allowance()
            || self
                .peer_window()
                .is_some_and(|w| self.received >= self.acked_sent.saturating_add(w))
    }

    /// The peer's announced send buffer, if it releases on acknowledgments:
    /// the most it may send beyond this side's last acknowledged count.
    fn peer_window(&self) -> Option<u64> {
        self.peer_releases_on_acks()
            .then_some(self.peer_params.retain_capacity)
    }

    /// The most received bytes the queue holds before it counts as full:
    /// the receive window, plus the peer's send buffer (clamped) for a peer
    /// that releases on acknowledgments.
    fn recv_allowance(&self) -> u64 {
        let window = self.cfg.recv_buffer_capacity as u64;
        match self.peer_window() {
            Some(w) => window.saturating_add(w.min(self.cfg.max_peer_send_buffer)),
            None => window,
        }
    }

    /// The count this side acknowledges now: what it received, but never
    /// more than the application's reads plus the receive window, less what
    /// the peer's send buffer exceeds [`Config::max_peer_send_buffer`] by
    /// (so the peer's unacknowledged bytes fit in [`Self::recv_allowance`]).
    /// After the peer's FIN nothing more can come: everything is
    /// acknowledged. Never below an acknowledgment already sent.
    fn ack_point(&self) -> u64 {
        if self.peer_fin.is_some() {
            return self.received;
        }
        let consumed = self.received - self.rbuf.len() as u64;
        let limit = match self.peer_window() {
            Some(w) => consumed
                .saturating_add(self.recv_allowance())
                .saturating_sub(w),
            None => consumed.saturating_add(self.cfg.recv_buffer_capacity as u64),
        };
        self.received.min(limit).max(self.acked_sent)
    }

    /// Received bytes between two acknowledgments: a quarter of the peer's
    /// send buffer, so it never waits for a whole buffer's round trip.
    fn ack_every(&self) -> u64 {
        (self.peer_params.retain_capacity / 4).max(1)
    }

    /// Schedules an ACK if the peer releases on acknowledgments and the
    /// count it may be told moved a quarter of its buffer.
    fn maybe_ack(&mut self) {
        if self.peer_releases_on_acks()
            && !self.pending_ack
            && self.ack_point() - self.acked_sent >= self.ack_every()
        {
            self.pending_ack = true;
        }
    }

    /// True while an acknowledgment waits to be polled. An application read
    /// can open the receive window and make one due: an adapter that does
    /// not drain `poll_output` after every read must do so when this turns
    /// true, or the peer waits for the next heartbeat.
    pub fn ack_pending(&self) -> bool {
        self.pending_ack && self.state == SessionState::Established
    }

    /// True once everything written was handed to the transport and the
    /// session has nothing queued to transmit (with
    /// [`Session::set_reports_written`]: and the transport accepted every
    /// polled byte).
    pub fn is_flushed(&self) -> bool {
        self.tail.is_empty()
            && self.cursor == self.sbuf.end()
            && self.out.is_empty()
            && self.unwritten() == 0
    }

    /// Switches the drive contract. `false` (the default): the adapter
    /// writes each `Transmit` whole before it polls the next, and a polled
    /// Transmit counts as handed to the transport. `true`: the adapter may
    /// poll many Transmits ahead and write them in batches, partially, and
    /// reports every byte the transport accepted with [`Input::Written`]; the
    /// implicit release bound and the implicit send capacity then count only
    /// reported bytes, never bytes merely polled. Safe to switch at any
    /// time: what was polled before counts as written.
    pub fn set_reports_written(&mut self, on: bool) {
        self.reports_written = on;
        self.accepted = self.accepted.max(self.high);
        self.unwritten.clear();
        self.unwritten_on = None;
        self.unwritten_done = 0;
        self.unwritten_bytes = 0;
    }

    /// Whether the adapter reports written bytes
    /// ([`Session::set_reports_written`]).
    pub fn reports_written(&self) -> bool {
        self.reports_written
    }

    /// Bytes of Transmits polled for the current transport that the adapter
    /// has not yet reported written (0 without
    /// [`Session::set_reports_written`]).
    pub fn unwritten(&self) -> u64 {
        if self.unwritten_on.is_some() && self.unwritten_on == self.transport {
            self.unwritten_bytes
        } else {
            0
        }
    }

    /// Stream offset up to which this side's bytes are known to be in the
    /// transport (polled, or reported written; see
    /// [`Session::set_reports_written`]).
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Bytes the peer is known to have received: its highest acknowledgment
    /// or resume count.
    pub fn peer_received(&self) -> u64 {
        self.peer_acked
    }

    /// True once this side's FIN was sent (after [`Session::shutdown`] or
    /// [`Session::close`]) and the peer acknowledged every byte written
    /// before it: the peer session holds the whole stream. A peer
    /// acknowledges a FIN whatever the release policy (PROTOCOL.md R10).
    pub fn is_fin_acked(&self) -> bool {
        self.fin_sent && self.tail.is_empty() && self.peer_acked >= self.sbuf.end()
    }

    // ---- application calls ----

    fn check_writable(&mut self) -> Result<usize, WriteError> {
        if let Some(e) = &self.error {
            return Err(WriteError::Session(e.clone()));
        }
        if self.state == SessionState::Finished {
            return Err(WriteError::Session(SessionError::Closed));
        }
        if self.fin_requested {
            if self.peer_close_requested && !self.close_requested {
                return Err(WriteError::Session(SessionError::ClosedByPeer {
                    undelivered: 0,
                }));
            }
            return Err(WriteError::Finished);
        }
        let cap = self.send_capacity();
        if cap == 0 {
            self.write_blocked = true;
            return Err(WriteError::Blocked);
        }
        Ok(cap)
    }

    /// Queues bytes without copying: takes as much of `data` as fits (split
    /// off its front) and leaves the rest. Returns the bytes taken.
    pub fn send(&mut self, data: &mut Bytes) -> Result<usize, WriteError> {
        if data.is_empty() {
            return Ok(0);
        }
        let cap = self.check_writable()?;
        let n = cap.min(data.len());
        self.flush_tail();
        self.sbuf.push(data.split_to(n));
        self.after_write(n);
        Ok(n)
    }

    /// Copies bytes in; returns how many fit.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if data.is_empty() {
            return Ok(0);
        }
        let cap = self.check_writable()?;
        let n = cap.min(data.len());
        if self.tail.is_empty() && self.tail.capacity() < n {
            // Reuse a released allocation rather than a fresh one.
            if let Some(spare) = self.sbuf.take_spare() {
                self.tail = spare;
            }
        }
        self.tail.extend_from_slice(&data[..n]);
        if self.tail.len() >= self.cfg.max_frame_payload as usize {
            self.flush_tail();
        }
        self.after_write(n);
        Ok(n)
    }

    fn after_write(&mut self, n: usize) {
        self.stats.written_bytes += n as u64;
        self.stats.max_retained = self.stats.max_retained.max(self.retained());
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.sbuf.push(chunk);
        }
    }

    /// Reads received bytes. `Ok(0)` is end of stream (the peer finished and
    /// everything was read, or the session closed cleanly).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if !self.rbuf.is_empty() {
            let n = self.rbuf.read(buf);
            self.maybe_ack();
            return Ok(n);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(e) = &self.error {
            return Err(ReadError::Session(e.clone()));
        }
        if self.peer_fin.is_some() || self.state == SessionState::Finished {
            return Ok(0);
        }
        Err(ReadError::Blocked)
    }

    /// Takes the next contiguous piece of received bytes without copying
    /// (input given as [`Input::ReceivedBytes`] is handed back by reference).
    /// An empty result is end of stream.
    pub fn read_chunk(&mut self) -> Result<Bytes, ReadError> {
        if !self.rbuf.is_empty() {
            let chunk = self.rbuf.read_chunk();
            self.maybe_ack();
            return Ok(chunk);
        }
        if let Some(e) = &self.error {
            return Err(ReadError::Session(e.clone()));
        }
        if self.peer_fin.is_some() || self.state == SessionState::Finished {
            return Ok(Bytes::new());
        }
        Err(ReadError::Blocked)
    }

    /// Half-close: no more data will be sent; the peer reads end of stream
    /// after everything already written.
    pub fn shutdown(&mut self) {
        self.fin_requested = true;
    }

    /// Closes the session cleanly: finishes this direction, asks the peer to
    /// finish its own, and ends with `Finished(Ok)` once both sides know
    /// every byte arrived.
    pub fn close(&mut self) {
        self.fin_requested = true;
        self.close_requested = true;
    }

    /// Ends the session at once and tells the peer (if connected) with `code`.
    /// Application codes are 0x1000..=0xFFFF; smaller values are reserved for
    /// the protocol and are raised to 0x1000.
    pub fn abort(&mut self, code: u16) {
        self.fail(SessionError::Aborted {
            code: Code::Application(code.max(crate::frame::APPLICATION_CODE_BASE)),
            by_peer: false,
        });
    }

    // ---- inputs ----

    /// Feeds one input.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.now = now.max(self.now);
        if self.state == SessionState::Finished {
            // Late transports of a finished session are simply dropped.
            if let Input::TransportUp { transport, .. } | Input::Resume { transport, .. } = input {
                self.out.push_back(Output::DropTransport { transport });
            }
            return;
        }
        match input {
            Input::TransportUp { transport, info } => self.on_transport_up(transport, info),
            Input::Received { transport, data } => {
                if self.transport == Some(transport) {
                    self.on_received(data, None);
                }
            }
            Input::ReceivedBytes { transport, data } => {
                if self.transport == Some(transport) {
                    self.on_received(&data, Some(&data));
                }
            }
            Input::Written { transport, bytes } => self.on_written(transport, bytes),
            Input::TransportLost { transport } => {
                if self.transport == Some(transport) {
                    self.on_transport_lost();
                }
            }
            Input::Timeout => self.on_timeout(),
            Input::Resume {
                transport,
                resume,
                info,
            } => self.on_resume(transport, resume, info),
            Input::Evicted => self.fail(SessionError::Evicted),
        }
    }

    fn on_transport_up(&mut self, transport: TransportId, info: TransportInfo) {
        if self.role != Role::Client
            || self.transport != Some(transport)
            || self.state != SessionState::Connecting
        {
            self.out.push_back(Output::DropTransport { transport });
            return;
        }
        self.info = info;
        self.state = SessionState::Handshaking;
        self.last_rx = self.now;
        if self.id.is_some() {
            self.trim_to_window();
        }
        let hello = match (self.id, self.secret) {
            (Some(session_id), Some(secret)) => ClientHello::Resume(Resume {
                session_id,
                attempt: self.attempt,
                received: self.received,
                retained_from: self.sbuf.start(),
                params: self.own_params(),
                proof: resume_proof(
                    &secret,
                    &session_id,
                    self.attempt,
                    self.received,
                    self.sbuf.start(),
                    &self.own_params(),
                ),
            }),
            _ => ClientHello::Fresh(self.own_params()),
        };
        self.push_transmit(transport, FrameHead::EMPTY, encode_hello(&hello));
    }

    /// `owned` is `data` itself when the caller gave `Bytes`.
    fn on_received(&mut self, data: &[u8], owned: Option<&Bytes>) {
        if data.is_empty() {
            return;
        }
        self.last_rx = self.now;
        match self.state {
            SessionState::Handshaking => {
                // Hold at most one reply plus what followed it in this read.
                self.hs_buf.extend_from_slice(data);
                let buf = std::mem::take(&mut self.hs_buf);
                match ServerReply::decode(&buf) {
                    Ok(None) => self.hs_buf = buf,
                    Ok(Some((reply, used))) => {
                        self.on_server_reply(reply);
                        if self.state == SessionState::Established && used < buf.len() {
                            self.on_frames(&buf[used..], None);
                        }
                    }
                    // Garbage where a RESUME's answer belongs proves nothing:
                    // a failed attempt. A new session has nothing to keep.
                    Err(e) if self.id.is_some() => self.refused(Some(Violation::Decode(e).into())),
                    Err(e) => self.fail(SessionError::ProtocolViolation(e.into())),
                }
            }
            SessionState::Established => self.on_frames(data, owned),
            _ => {}
        }
    }

    fn on_frames(&mut self, input: &[u8], owned: Option<&Bytes>) {
        let mut pos = 0;
        while pos < input.len() && self.state == SessionState::Established {
            let data = &input[pos..];
            let (used, item) = match self.decoder.decode(data) {
                Ok(x) => x,
                Err(e) => return self.fail(SessionError::ProtocolViolation(e.into())),
            };
            let start = pos;
            pos += used;
            let Some(item) = item else {
                continue;
            };
            let result = match item {
                Decoded::Head(Head::Data { offset, len }) => {
                    let end = offset.saturating_add(u64::from(len));
                    let allowed = self
                        .peer_window()
                        .map(|w| self.acked_sent.saturating_add(w));
                    if self.peer_fin.is_some() {
                        Err(Violation::FinOffset {
                            fin: self.peer_fin.unwrap_or(0),
                            received: self.received,
                        })
                    } else if offset != self.received {
                        Err(Violation::DataOffset {
                            got: offset,
                            expected: self.received,
                        })
                    } else if let Some(allowed) = allowed.filter(|&a| end > a) {
                        // Checked from the header, before any payload is
                        // buffered: what wants_input reads ahead for is bounded.
                        Err(Violation::BeyondWindow { end, allowed })
                    } else {
                        Ok(())
                    }
                }
                Decoded::Payload(p) => {
                    // A payload is always the front of the input it came from.
                    match owned {
                        Some(b) => {
                            self.on_payload(p.len(), |q| q.push_bytes(b.slice(start..start + used)))
                        }
                        None => self.on_payload(p.len(), |q| q.push_slice(p)),
                    }
                    Ok(())
                }
                Decoded::Head(Head::Control(f)) => self.on_control(f),
            };
            if let Err(v) = result {
                return self.fail(SessionError::ProtocolViolation(v));
            }
        }
    }

    fn on_payload(&mut self, len: usize, push: impl FnOnce(&mut RecvQueue)) {
        let was_empty = self.rbuf.is_empty();
        push(&mut self.rbuf);
        self.received += len as u64;
        self.stats.received_bytes += len as u64;
        if was_empty {
            self.emit(Event::Readable);
        }
        self.maybe_ack();
    }

    fn on_control(&mut self, f: Frame) -> Result<(), Violation> {
        match f {
            Frame::Data { .. } | Frame::Heartbeat => {}
            Frame::Ack { received } => {
                // After a resume the peer said what it had: it can have
                // received only what was (re)sent since, up to the cursor.
                if received > self.cursor {
                    return Err(Violation::AckBeyondSent {
                        acked: received,
                        sent: self.cursor,
                    });
                }
                if received < self.peer_acked {
                    return Err(Violation::AckRegressed {
                        previous: self.peer_acked,
                        acked: received,
                    });
                }
                self.peer_acked = received;
                self.release_to(received);
            }
            Frame::Fin { offset, close } => {
                if offset != self.received || self.peer_fin.is_some_and(|f| f != offset) {
                    return Err(Violation::FinOffset {
                        fin: offset,
                        received: self.received,
                    });
                }
                if self.peer_fin.is_none() {
                    self.peer_fin = Some(offset);
                    self.emit(Event::PeerFinished);
                    self.emit(Event::Readable);
                    // Acknowledge a FIN whatever the peer's policy: its
                    // shutdown and close wait for proof that every byte
                    // arrived (under the implicit policy this is the only
                    // ACK the peer ever gets).
                    if self.acked_sent < self.received {
                        self.pending_ack = true;
                    }
                }
                if close {
                    self.peer_close_requested = true;
                    self.fin_requested = true;
                }
            }
            Frame::Close => {
                if self.peer_fin.is_none() {
                    return Err(Violation::CloseBeforeFin);
                }
                match self.role {
                    // The client closes first; the server answers and ends.
                    Role::Server => {
                        if !self.fin_sent {
                            return Err(Violation::CloseBeforeFin);
                        }
                        let end = self.sbuf.end();
                        self.release_to(end);
                        if let Some(t) = self.transport {
                            self.push_transmit(t, FrameHead::control(&Frame::Close), Bytes::new());
                        }
                        self.finish_ok();
                    }
                    Role::Client => {
                        if !self.close_sent {
                            return Err(Violation::CloseBeforeFin);
                        }
                        let end = self.sbuf.end();
                        self.release_to(end);
                        self.finish_ok();
                    }
                }
            }
            Frame::Abort { code } => {
                self.end(Err(SessionError::from_peer_abort(code)), false);
            }
        }
        Ok(())
    }

    fn on_server_reply(&mut self, reply: ServerReply) {
        if self.id.is_some() {
            return self.on_resume_reply(reply);
        }
        match reply {
            ServerReply::Accept {
                session_id,
                secret,
                params,
            } => {
                self.id = Some(session_id);
                self.secret = Some(secret);
                self.peer_params = params;
                self.established(self.now);
                self.emit(Event::Established { session_id });
                if let Err(e) = self.check_implicit() {
                    self.fail(e);
                }
            }
            ServerReply::Reject {
                code: Code::Busy, ..
            } => {
                // Transient: try again later.
                self.on_transport_lost();
            }
            // A new session has nothing to lose: refusals end it.
            ServerReply::Reject {
                code: Code::UnsupportedVersion,
                detail,
            } => self.end(
                Err(SessionError::UnsupportedVersion { server: detail }),
                false,
            ),
            ServerReply::Reject {
                code: Code::Malformed,
                ..
            } => self.end(Err(Violation::RejectedAsMalformed.into()), false),
            ServerReply::Reject { code, detail } => self.on_ended(code, detail),
            ServerReply::Resumed { .. } | ServerReply::Ended { .. } => {
                self.fail(SessionError::ProtocolViolation(Violation::WrongSessionId));
            }
        }
    }

    /// The answer to a RESUME. Only what is proven with the session secret
    /// (RESUME_OK, ENDED) can end or continue the session; anything else
    /// (a REJECT, which anyone on the path or a misrouting balancer can
    /// send, or an answer whose proof fails) is a failed attempt, retried
    /// within the maximum reconnect time (PROTOCOL.md 2.6).
    fn on_resume_reply(&mut self, reply: ServerReply) {
        let (Some(id), Some(secret)) = (self.id, self.secret) else {
            return;
        };
        let refusal = match reply {
            ServerReply::Resumed {
                session_id,
                received,
                params,
                proof,
            } => {
                if session_id != id {
                    Some(Violation::WrongSessionId.into())
                } else if !verify_accept(&secret, &id, self.attempt, received, &params, &proof) {
                    Some(Violation::BadServerProof.into())
                } else {
                    return self.on_resumed(received, params);
                }
            }
            ServerReply::Ended {
                session_id,
                code,
                detail,
                proof,
            } => {
                if session_id != id {
                    Some(Violation::WrongSessionId.into())
                } else if !verify_ended(&secret, &id, self.attempt, code, detail, &proof) {
                    Some(Violation::BadServerProof.into())
                } else {
                    return self.on_ended(code, detail);
                }
            }
            ServerReply::Accept { .. } => Some(Violation::WrongSessionId.into()),
            ServerReply::Reject { code, detail } => match code {
                Code::Busy => None,
                Code::UnknownSession => Some(SessionError::UnknownSession),
                Code::UnsupportedVersion => {
                    Some(SessionError::UnsupportedVersion { server: detail })
                }
                Code::Malformed => Some(Violation::RejectedAsMalformed.into()),
                code => Some(SessionError::from_peer_abort(code)),
            },
        };
        self.refused(refusal);
    }

    /// A resume attempt failed without a proven answer: back off and retry;
    /// `refusal` is what the session ends with if the time runs out first.
    fn refused(&mut self, refusal: Option<SessionError>) {
        self.on_transport_lost();
        self.last_refusal = refusal;
    }

    fn on_resumed(&mut self, received: u64, params: Params) {
        self.peer_params = params;
        if let Err(e) = self.resume_from(received) {
            // Tell the server on this transport before leaving it.
            self.state = SessionState::Established;
            return self.fail(e);
        }
        let attempt = self.attempt;
        self.established(self.now);
        self.emit(Event::Resumed {
            attempt,
            local_received: self.received,
            peer_received: received,
        });
        if let Err(e) = self.check_implicit() {
            self.fail(e);
        }
    }

    /// A proven ENDED: the server ended the session, and says how.
    fn on_ended(&mut self, code: Code, detail: u64) {
        let outcome = match code {
            Code::SessionClosed if self.close_sent => Ok(()),
            Code::SessionClosed => Err(Violation::UnexpectedSessionClosed.into()),
            Code::DataLost if detail & DATA_LOST_CLIENT_STREAM != 0 => {
                Err(SessionError::DataLost {
                    needed: detail & !DATA_LOST_CLIENT_STREAM,
                    retained_from: self.sbuf.start(),
                })
            }
            Code::DataLost => Err(SessionError::DataLost {
                needed: self.received,
                retained_from: detail,
            }),
            code => Err(SessionError::from_peer_abort(code)),
        };
        if let Ok(()) = outcome {
            let end = self.sbuf.end();
            self.release_to(end);
        }
        self.end(outcome, false);
    }

    fn on_resume(&mut self, transport: TransportId, resume: VerifiedResume, info: TransportInfo) {
        if self.role != Role::Server {
            self.out.push_back(Output::DropTransport { transport });
            return;
        }
        if let Some(old) = self.transport.take() {
            // The half-open case: the server still believed in the old transport.
            self.lose_transport(old);
        }
        self.transport = Some(transport);
        self.info = info;
        // Under the parameters the client released by so far.
        self.trim_to_window();
        self.peer_params = resume.params;
        self.attempt = resume.attempt;
        // Both directions are judged here, so both sides end with one verdict,
        // in the order of PROTOCOL.md 2.4: counts outside what was sent (R4),
        // then data lost (R5).
        let verdict = if let Err(v) = self.check_peer_count(resume.received) {
            Err((v.into(), Code::ProtocolViolation, 0))
        } else if self.received < resume.retained_from {
            // Client-to-server bytes are gone: tell the client what we needed.
            let e = SessionError::DataLost {
                needed: self.received,
                retained_from: resume.retained_from,
            };
            Err((e, Code::DataLost, DATA_LOST_CLIENT_STREAM | self.received))
        } else {
            let start = self.sbuf.start();
            self.resume_from(resume.received)
                .map_err(|e| (e, Code::DataLost, start))
        };
        let (Some(session_id), Some(secret)) = (self.id, self.secret) else {
            return self.fail(SessionError::Config("server session without id"));
        };
        if let Err((e, code, detail)) = verdict {
            // Proven with the secret, so the client takes it as final.
            let reply = ServerReply::Ended {
                session_id,
                code,
                detail,
                proof: ended_proof(&secret, &session_id, resume.attempt, code, detail),
            };
            self.push_transmit(transport, FrameHead::EMPTY, reply.to_bytes());
            return self.end(Err(e), false);
        }
        let reply = ServerReply::Resumed {
            session_id,
            received: self.received,
            params: self.own_params(),
            proof: accept_proof(
                &secret,
                &session_id,
                resume.attempt,
                self.received,
                &self.own_params(),
            ),
        };
        self.push_transmit(transport, FrameHead::EMPTY, reply.to_bytes());
        self.established(self.now);
        self.emit(Event::Resumed {
            attempt: resume.attempt,
            local_received: self.received,
            peer_received: resume.received,
        });
        if let Err(e) = self.check_implicit() {
            self.fail(e);
        }
    }

    /// Before this side states its count in a resume handshake: received
    /// bytes it never acknowledged and that lie beyond the receive window
    /// are dropped and counted as not received, so the peer, which released
    /// only what was acknowledged, sends them again. The handshake count
    /// releases the peer's buffer up to it, and the peer may then send a
    /// whole buffer more: without the trim, a queue already full would grow
    /// past [`Self::recv_allowance`] at every resume, and the peer could
    /// stall behind data this side no longer reads. Nothing is lost (the
    /// peer still retains every byte past the last acknowledgment) or
    /// duplicated (those bytes were never delivered to the application).
    /// Only for a peer that releases on acknowledgments and has not
    /// finished its direction.
    fn trim_to_window(&mut self) {
        if !self.peer_releases_on_acks() || self.peer_fin.is_some() {
            return;
        }
        // Never below what the application already read: those bytes
        // cannot be given back (the acknowledged count can lag them when
        // the peer announced a send buffer above max_peer_send_buffer).
        let consumed = self.received - self.rbuf.len() as u64;
        let keep = self.ack_point().max(consumed);
        if keep < self.received {
            let drop = self.received - keep;
            self.rbuf.truncate_back(drop as usize);
            self.received = keep;
        }
    }

    /// Applies the peer's count after a resume: releases what it has, and
    /// rewinds the transmit cursor to what it misses.
    fn resume_from(&mut self, peer_received: u64) -> Result<(), SessionError> {
        self.check_peer_count(peer_received)?;
        if peer_received < self.sbuf.start() {
            return Err(SessionError::DataLost {
                needed: peer_received,
                retained_from: self.sbuf.start(),
            });
        }
        self.peer_acked = self.peer_acked.max(peer_received);
        self.release_to(peer_received);
        if peer_received < self.high {
            self.emit(Event::Retransmit {
                from: peer_received,
                to: self.high,
            });
            self.stats.retransmitted_bytes += self.high - peer_received;
        }
        self.cursor = peer_received;
        self.stats.resumes += 1;
        Ok(())
    }

    /// R4: a peer's count in a handshake can be neither ahead of what this
    /// side sent (up to the cursor: bytes rewound at the last resume were
    /// not received) nor behind what the peer acknowledged before.
    fn check_peer_count(&self, claimed: u64) -> Result<(), Violation> {
        if claimed > self.cursor {
            return Err(Violation::CountAhead {
                claimed,
                sent: self.cursor,
            });
        }
        if claimed < self.peer_acked {
            return Err(Violation::AckRegressed {
                previous: self.peer_acked,
                acked: claimed,
            });
        }
        Ok(())
    }

    fn established(&mut self, now: Instant) {
        self.state = SessionState::Established;
        self.decoder = FrameDecoder::new(self.cfg.max_frame_payload);
        self.hs_buf = Vec::new();
        self.last_rx = now;
        self.last_tx = now;
        self.handshake_deadline = None;
        self.reconnect_deadline = None;
        self.next_attempt = None;
        self.failures = 0;
        self.fin_on_transport = false;
        self.close_on_transport = false;
        self.pending_heartbeat = false;
        // After a resume the peer learns our count from the handshake.
        self.acked_sent = self.received;
        self.pending_ack = false;
        self.last_refusal = None;
        // Writes were refused while parked.
        if self.write_blocked && self.send_capacity() > 0 {
            self.write_blocked = false;
            self.emit(Event::Writable);
        }
    }

    fn on_transport_lost(&mut self) {
        let Some(t) = self.transport.take() else {
            return;
        };
        let was_established = self.state == SessionState::Established;
        // This attempt failed without a refusal (a refusal is noted after).
        self.last_refusal = None;
        self.lose_transport(t);
        if self.reconnect_deadline.is_none() {
            self.reconnect_deadline = Some(later(self.now, self.cfg.max_reconnect_time));
        }
        match self.role {
            Role::Server => {
                self.state = SessionState::Parked;
                self.emit(Event::Parked);
            }
            Role::Client if was_established => self.start_connect(),
            Role::Client => self.schedule_backoff(),
        }
    }

    fn lose_transport(&mut self, t: TransportId) {
        self.out.push_back(Output::DropTransport { transport: t });
        self.emit(Event::TransportLost { transport: t });
        self.stats.transports_lost += 1;
        self.hs_buf.clear();
        self.decoder = FrameDecoder::new(self.cfg.max_frame_payload);
        self.handshake_deadline = None;
    }

    fn start_connect(&mut self) {
        self.next_transport += 1;
        let t = self.next_transport;
        self.transport = Some(t);
        self.attempt += 1;
        self.stats.connect_attempts += 1;
        self.state = SessionState::Connecting;
        self.next_attempt = None;
        self.handshake_deadline = Some(later(self.now, self.cfg.handshake_timeout));
        self.out.push_back(Output::Connect { transport: t });
    }

    fn schedule_backoff(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let base = self
            .cfg
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.cfg.backoff_max);
        // Jitter in [base/2, base): clients that lost one server do not return in lockstep.
        let r = self.next_random() % 1024;
        let delay = base / 2 + base.mul_f64(r as f64 / 2048.0);
        self.state = SessionState::Backoff;
        self.next_attempt = Some(later(self.now, delay.max(Duration::from_millis(1))));
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: jitter only, not security.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        match self.state {
            SessionState::Connecting
            | SessionState::Handshaking
            | SessionState::Backoff
            | SessionState::Parked => {
                if self.reconnect_deadline.is_some_and(|d| now >= d) {
                    if let Some(t) = self.transport.take() {
                        self.out.push_back(Output::DropTransport { transport: t });
                    }
                    let e = match (self.id, self.last_refusal.take()) {
                        (Some(_), Some(refusal)) => refusal,
                        (Some(_), None) => SessionError::Expired,
                        (None, _) => SessionError::Unreachable,
                    };
                    return self.end(Err(e), false);
                }
                if self.handshake_deadline.is_some_and(|d| now >= d) {
                    self.on_transport_lost();
                } else if self.state == SessionState::Backoff
                    && self.next_attempt.is_some_and(|d| now >= d)
                {
                    self.start_connect();
                }
            }
            SessionState::Established => {
                if !self.wants_input() {
                    // We stopped reading: silence proves nothing.
                    self.last_rx = now;
                }
                if now >= later(self.last_rx, self.cfg.idle_timeout) {
                    return self.on_transport_lost();
                }
                if now >= later(self.last_tx, self.cfg.heartbeat_interval) {
                    self.pending_heartbeat = true;
                    if self.peer_releases_on_acks() && self.ack_point() > self.acked_sent {
                        self.pending_ack = true;
                    }
                }
            }
            SessionState::Finished => {}
        }
    }

    /// The earliest time at which `handle_input(now, Input::Timeout)` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SessionState::Connecting | SessionState::Handshaking | SessionState::Parked => {
                min_opt(self.reconnect_deadline, self.handshake_deadline)
            }
            SessionState::Backoff => min_opt(self.reconnect_deadline, self.next_attempt),
            SessionState::Established => {
                let idle = later(self.last_rx, self.cfg.idle_timeout);
                let hb = later(self.last_tx, self.cfg.heartbeat_interval);
                Some(if self.pending_heartbeat {
                    idle
                } else {
                    idle.min(hb)
                })
            }
            SessionState::Finished => None,
        }
    }

    // ---- outputs ----

    /// The next thing to do, or `None` when there is nothing until new input
    /// or the next timeout.
    pub fn poll_output(&mut self) -> Option<Output> {
        let (out, data_offset) = self.next_output()?;
        if let Output::Transmit(t) = &out {
            if self.reports_written {
                self.note_polled(t, data_offset);
            } else if let Some(offset) = data_offset {
                // Default contract: polled is handed to the transport.
                let end = offset + t.payload.len() as u64;
                if end > self.accepted {
                    self.accepted = end;
                    self.release_implicit();
                }
            }
        }
        Some(out)
    }

    /// Records a Transmit the adapter will report written (reports only).
    fn note_polled(&mut self, t: &Transmit, data_offset: Option<u64>) {
        if self.unwritten_on != Some(t.transport) {
            // A new transport: what the old one never took is retransmitted
            // after a resume, if the peer misses it.
            self.unwritten.clear();
            self.unwritten_on = Some(t.transport);
            self.unwritten_done = 0;
            self.unwritten_bytes = 0;
        }
        if t.is_empty() {
            return;
        }
        self.unwritten_bytes += t.len() as u64;
        self.unwritten.push_back(Unwritten {
            len: t.len(),
            head: t.head.as_slice().len(),
            offset: data_offset,
        });
    }

    /// The transport accepted `bytes` more of the polled Transmits.
    fn on_written(&mut self, transport: TransportId, mut bytes: usize) {
        if !self.reports_written || self.unwritten_on != Some(transport) {
            return;
        }
        let before = self.accepted;
        while bytes > 0 {
            let Some(front) = self.unwritten.front() else {
                // More than was polled: the adapter's mistake; ignored.
                break;
            };
            let take = bytes.min(front.len - self.unwritten_done);
            bytes -= take;
            self.unwritten_bytes -= take as u64;
            self.unwritten_done += take;
            if let Some(offset) = front.offset {
                let payload_done = self.unwritten_done.saturating_sub(front.head);
                self.accepted = self.accepted.max(offset + payload_done as u64);
            }
            if self.unwritten_done == front.len {
                self.unwritten.pop_front();
                self.unwritten_done = 0;
            }
        }
        if self.accepted > before {
            self.release_implicit();
        }
    }

    /// The next output, with the stream offset of its payload if it is a
    /// data frame.
    fn next_output(&mut self) -> Option<(Output, Option<u64>)> {
        if let Some(o) = self.out.pop_front() {
            return Some((o, None));
        }
        if self.state != SessionState::Established {
            return None;
        }
        let t = self.transport?;
        if self.pending_ack {
            self.pending_ack = false;
            self.acked_sent = self.ack_point();
            let ack = Frame::Ack {
                received: self.acked_sent,
            };
            return Some((self.control(t, ack), None));
        }
        if self.cursor == self.sbuf.end() {
            self.flush_tail();
        }
        if self.cursor < self.sbuf.end() {
            let max = self.cfg.max_frame_payload as usize;
            if let Some(payload) = self.sbuf.slice(self.cursor, max) {
                let offset = self.cursor;
                let head = FrameHead::data(offset, payload.len() as u32);
                self.cursor += payload.len() as u64;
                self.high = self.high.max(self.cursor);
                self.last_tx = self.now;
                self.pending_heartbeat = false;
                let t = Transmit {
                    transport: t,
                    head,
                    payload,
                };
                return Some((Output::Transmit(t), Some(offset)));
            }
        }
        if self.fin_requested && !self.fin_on_transport && self.cursor == self.sbuf.end() {
            self.fin_on_transport = true;
            self.fin_sent = true;
            let fin = Frame::Fin {
                offset: self.sbuf.end(),
                close: self.close_requested,
            };
            return Some((self.control(t, fin), None));
        }
        if self.role == Role::Client
            && self.fin_on_transport
            && self.peer_fin.is_some()
            && !self.close_on_transport
        {
            self.close_on_transport = true;
            self.close_sent = true;
            return Some((self.control(t, Frame::Close), None));
        }
        if self.pending_heartbeat {
            self.pending_heartbeat = false;
            return Some((self.control(t, Frame::Heartbeat), None));
        }
        None
    }

    fn control(&mut self, t: TransportId, f: Frame) -> Output {
        self.last_tx = self.now;
        self.pending_heartbeat = false;
        Output::Transmit(Transmit {
            transport: t,
            head: FrameHead::control(&f),
            payload: Bytes::new(),
        })
    }

    fn push_transmit(&mut self, transport: TransportId, head: FrameHead, payload: Bytes) {
        self.last_tx = self.now;
        self.out.push_back(Output::Transmit(Transmit {
            transport,
            head,
            payload,
        }));
    }

    fn emit(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    // ---- release ----

    fn release_to(&mut self, offset: u64) {
        let bytes = self.sbuf.release_to(offset);
        if bytes > 0 {
            if self.sbuf.is_empty() && self.tail.is_empty() {
                // Everything written was released: the copy buffer's last
                // allocation (whose front went out in frames) goes too, so
                // an idle session holds none.
                self.tail = BytesMut::new();
            }
            self.stats.released_bytes += bytes;
            self.emit(Event::Released {
                up_to: self.sbuf.start(),
                bytes,
            });
            if self.write_blocked && self.send_capacity() > 0 {
                self.write_blocked = false;
                self.emit(Event::Writable);
            }
        }
    }

    fn implicit_bound(&self) -> Option<u64> {
        implicit_bound(&self.cfg, self.info, &self.peer_params)
    }

    fn check_implicit(&self) -> Result<(), SessionError> {
        // Only where the policy is in effect: with a peer under Ack this side
        // releases on ACKs and needs no sizes.
        if self.effective_release_policy() == ReleasePolicy::Implicit
            && self.implicit_bound().is_none()
        {
            return Err(SessionError::Config(
                "implicit release needs this transport's send buffer and the peer's receive buffer, \
                 each positive and at most implicit_max_buffer; pin the socket buffers or use \
                 ReleasePolicy::Ack",
            ));
        }
        Ok(())
    }

    fn release_implicit(&mut self) {
        if self.effective_release_policy() != ReleasePolicy::Implicit {
            return;
        }
        // Only bytes in the transport count: bytes an adapter polled but
        // has not written could still be lost with it.
        if let Some(b) = self.implicit_bound() {
            if self.accepted > b {
                self.release_to(self.accepted - b);
            }
        }
        if self.write_blocked && self.send_capacity() > 0 {
            self.write_blocked = false;
            self.emit(Event::Writable);
        }
    }

    fn own_params(&self) -> Params {
        Params {
            wants_acks: self.cfg.release_policy == ReleasePolicy::Ack,
            retain_capacity: self.cfg.send_buffer_capacity as u64,
            recv_buffer: self.info.recv_buffer.unwrap_or(0),
        }
    }

    // ---- endings ----

    /// Fails with a local error: tells the peer with ABORT when possible.
    fn fail(&mut self, e: SessionError) {
        self.end(Err(e), true);
    }

    fn finish_ok(&mut self) {
        self.end(Ok(()), false);
    }

    fn end(&mut self, outcome: Result<(), SessionError>, tell_peer: bool) {
        if self.state == SessionState::Finished {
            return;
        }
        if let Some(t) = self.transport.take() {
            if tell_peer && self.state == SessionState::Established {
                if let Err(e) = &outcome {
                    let f = Frame::Abort {
                        code: e.abort_code(),
                    };
                    self.push_transmit(t, FrameHead::control(&f), Bytes::new());
                }
            }
            self.out.push_back(Output::DropTransport { transport: t });
        }
        self.state = SessionState::Finished;
        if let Err(e) = &outcome {
            self.error = Some(e.clone());
        }
        self.pending_ack = false;
        self.pending_heartbeat = false;
        self.emit(Event::Readable);
        self.emit(Event::Writable);
        self.emit(Event::Finished(outcome));
    }
}

/// b = own send buffer + peer receive buffer + margin, if both are known
/// and within [`Config::implicit_max_buffer`] (what a peer may announce).
pub(crate) fn implicit_bound(cfg: &Config, info: TransportInfo, peer: &Params) -> Option<u64> {
    let max = cfg.implicit_max_buffer;
    let own = info.send_buffer.filter(|&b| b > 0 && b <= max)?;
    let peer = Some(peer.recv_buffer).filter(|&b| b > 0 && b <= max)?;
    Some(
        own.saturating_add(peer)
            .saturating_add(cfg.effective_implicit_margin()),
    )
}

/// A polled Transmit not yet reported written.
#[derive(Debug)]
struct Unwritten {
    len: usize,
    head: usize,
    /// Stream offset of its payload, for a data frame.
    offset: Option<u64>,
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
