//! One test per rule (R1–R15), handshake decision (2.4, 2.5) and code (3.1)
//! of `docs/PROTOCOL.md`, each named after what it checks.
//!
//! A small in-file harness drives client `Session`s and a server (a
//! `ConnectionSet` plus `HandshakeReader`s and the sessions it admits) by
//! hand, in virtual time, so tests can cut links, hold transports half-open
//! and inject hand-crafted bytes on either side. Every test checks what goes
//! on the wire (decoded REJECT / ABORT codes), how each side ends
//! (`Event::Finished`, `Session::error`) and that transports are dropped.
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ft_session_core::frame::{
    ClientHello, DecodeError, Frame, FrameHead, Params, ServerReply, MAGIC, RESUME_LEN,
};
use ft_session_core::handshake::{accept_proof, ended_proof, resume_proof, SeededEntropy};
use ft_session_core::{
    Admission, Code, Config, ConnectionSet, Event, HandshakeReader, HandshakeStep, Input, Output,
    ReadError, ReleasePolicy, Session, SessionError, SessionId, SessionState, SetEvent,
    TransportId, TransportInfo, Violation, WriteError,
};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Something a session asked for, as recorded by the harness.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    Tx(TransportId, Vec<u8>),
    Connect(TransportId),
    Drop(TransportId),
    Ev(Event),
}

/// Records with the virtual time (since the origin) they were emitted at.
type Log = Vec<(Duration, Rec)>;

/// Decides whether bytes written on a link reach the other side.
type Filter = fn(&[u8]) -> bool;

fn pass(_: &[u8]) -> bool {
    true
}

fn cut(_: &[u8]) -> bool {
    false
}

/// One client transport as seen by both ends.
struct Conn {
    client_t: TransportId,
    server_t: TransportId,
    reader: Option<HandshakeReader>,
    sid: Option<SessionId>,
}

struct Client {
    s: Session,
    log: Log,
    info: TransportInfo,
    conn: Option<Conn>,
    pending: Option<TransportId>,
}

struct Server {
    s: Session,
    log: Log,
}

struct Net {
    t0: Instant,
    now: Instant,
    set: ConnectionSet,
    entropy: SeededEntropy,
    server_info: TransportInfo,
    clients: Vec<Client>,
    servers: HashMap<SessionId, Server>,
    next_server_t: TransportId,
    /// `Connect` succeeds (else it is refused at once).
    accept: bool,
    /// `Connect` stays pending until `complete_connect`.
    manual_connect: bool,
    /// A side dropping a transport is noticed by the other side (false: half-open).
    notify_loss: bool,
    c2s: Filter,
    s2c: Filter,
    /// Replies written by the reader or the connection set (not by a session).
    set_replies: Vec<Vec<u8>>,
    /// Client bytes the `c2s` filter held back.
    captured: Vec<Vec<u8>>,
}

impl Net {
    fn new(client: Config, server: Config) -> Net {
        Net::with_info(
            client,
            TransportInfo::default(),
            server,
            TransportInfo::default(),
        )
    }

    fn with_info(
        client: Config,
        client_info: TransportInfo,
        server: Config,
        server_info: TransportInfo,
    ) -> Net {
        let t0 = Instant::now();
        let mut n = Net {
            t0,
            now: t0,
            set: ConnectionSet::new(server),
            entropy: SeededEntropy::new(42),
            server_info,
            clients: Vec::new(),
            servers: HashMap::new(),
            next_server_t: 1000,
            accept: true,
            manual_connect: false,
            notify_loss: true,
            c2s: pass,
            s2c: pass,
            set_replies: Vec::new(),
            captured: Vec::new(),
        };
        n.add_client(client, client_info);
        n
    }

    fn add_client(&mut self, cfg: Config, info: TransportInfo) -> usize {
        let seed = 7 + self.clients.len() as u64;
        self.clients.push(Client {
            s: Session::client(cfg, self.now, seed),
            log: Vec::new(),
            info,
            conn: None,
            pending: None,
        });
        self.clients.len() - 1
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    // ---- accessors ----

    fn c(&mut self, i: usize) -> &mut Session {
        &mut self.clients[i].s
    }

    fn clog(&self, i: usize) -> &Log {
        &self.clients[i].log
    }

    fn sid(&self, i: usize) -> SessionId {
        self.clients[i].s.session_id().unwrap()
    }

    fn s(&mut self, i: usize) -> &mut Session {
        let id = self.sid(i);
        &mut self.servers.get_mut(&id).unwrap().s
    }

    fn slog(&self, i: usize) -> &Log {
        &self.servers[&self.sid(i)].log
    }

    fn server_t(&self, i: usize) -> TransportId {
        self.clients[i].conn.as_ref().unwrap().server_t
    }

    /// The secret of client `i`'s session, read from the server's SERVER_HELLO.
    fn secret(&self, i: usize) -> [u8; 32] {
        replies(self.slog(i))
            .into_iter()
            .find_map(|r| match r {
                ServerReply::Accept { secret, .. } => Some(secret),
                _ => None,
            })
            .unwrap()
    }

    /// An authentic RESUME for client `i`'s session.
    fn resume_msg(&self, i: usize, attempt: u64, received: u64, retained_from: u64) -> Vec<u8> {
        let id = self.sid(i);
        let proof = resume_proof(
            &self.secret(i),
            &id,
            attempt,
            received,
            retained_from,
            &Params::default(),
        );
        encode_hello(&ClientHello::Resume(ft_session_core::frame::Resume {
            session_id: id,
            attempt,
            received,
            retained_from,
            params: Params::default(),
            proof,
        }))
    }

    // ---- driving ----

    fn pump(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the network did not settle");
    }

    fn step(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.clients.len() {
            while let Some(out) = self.clients[i].s.poll_output() {
                moved = true;
                self.on_client_output(i, out);
            }
        }
        let mut ids: Vec<SessionId> = self.servers.keys().copied().collect();
        ids.sort();
        for id in ids {
            while let Some(out) = self.servers.get_mut(&id).unwrap().s.poll_output() {
                moved = true;
                self.on_server_output(id, out);
            }
        }
        while let Some(ev) = self.set.poll_event() {
            moved = true;
            let (id, input) = match ev {
                SetEvent::Evicted(id) => (id, Input::Evicted),
                SetEvent::Expired(id) => (id, Input::Timeout),
            };
            if let Some(srv) = self.servers.get_mut(&id) {
                srv.s.handle_input(self.now, input);
            }
        }
        moved
    }

    fn on_client_output(&mut self, i: usize, out: Output) {
        let at = self.elapsed();
        let now = self.now;
        match out {
            Output::Connect { transport } => {
                self.clients[i].log.push((at, Rec::Connect(transport)));
                if self.manual_connect {
                    self.clients[i].pending = Some(transport);
                } else if self.accept {
                    self.open(i, transport);
                } else {
                    self.clients[i]
                        .s
                        .handle_input(now, Input::TransportLost { transport });
                }
            }
            Output::Transmit(t) => {
                let mut bytes = Vec::new();
                t.write_to(&mut bytes);
                self.clients[i]
                    .log
                    .push((at, Rec::Tx(t.transport, bytes.clone())));
                let live = self.clients[i]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.client_t == t.transport);
                if !live {
                    return;
                }
                if (self.c2s)(&bytes) {
                    self.deliver_to_server(i, &bytes);
                } else {
                    self.captured.push(bytes);
                }
            }
            Output::DropTransport { transport } => {
                self.clients[i].log.push((at, Rec::Drop(transport)));
                if self.clients[i].pending == Some(transport) {
                    self.clients[i].pending = None;
                }
                let live = self.clients[i]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.client_t == transport);
                if live {
                    let c = self.clients[i].conn.take().unwrap();
                    if self.notify_loss {
                        if let Some(srv) = c.sid.and_then(|id| self.servers.get_mut(&id)) {
                            srv.s.handle_input(
                                now,
                                Input::TransportLost {
                                    transport: c.server_t,
                                },
                            );
                        }
                    }
                }
            }
            Output::Event(e) => self.clients[i].log.push((at, Rec::Ev(e))),
            o => panic!("unknown output {o:?}"),
        }
    }

    fn open(&mut self, i: usize, client_t: TransportId) {
        self.next_server_t += 1;
        let server_t = self.next_server_t;
        let reader = HandshakeReader::new(self.now, self.set.config());
        self.clients[i].conn = Some(Conn {
            client_t,
            server_t,
            reader: Some(reader),
            sid: None,
        });
        let info = self.clients[i].info;
        self.clients[i].s.handle_input(
            self.now,
            Input::TransportUp {
                transport: client_t,
                info,
            },
        );
    }

    /// Completes a `Connect` held by `manual_connect`.
    fn complete_connect(&mut self, i: usize) {
        let t = self.clients[i].pending.take().unwrap();
        self.open(i, t);
        self.pump();
    }

    fn deliver_to_server(&mut self, i: usize, bytes: &[u8]) {
        let now = self.now;
        let Some(conn) = self.clients[i].conn.as_mut() else {
            return;
        };
        let server_t = conn.server_t;
        let mut data = bytes;
        if let Some(reader) = conn.reader.as_mut() {
            match reader.feed(data) {
                HandshakeStep::NeedMore => return,
                HandshakeStep::Reject { reply, .. } => {
                    conn.reader = None;
                    if let Some(r) = &reply {
                        self.set_replies.push(r.to_vec());
                    }
                    return self.server_closes(i, reply);
                }
                HandshakeStep::Hello { hello, consumed } => {
                    conn.reader = None;
                    data = &data[consumed..];
                    let info = self.server_info;
                    match self
                        .set
                        .admit(now, server_t, info, hello, &mut self.entropy)
                    {
                        Admission::Fresh(s) => {
                            let id = s.session_id().unwrap();
                            conn.sid = Some(id);
                            self.servers.insert(
                                id,
                                Server {
                                    s: *s,
                                    log: Vec::new(),
                                },
                            );
                        }
                        Admission::Resume { session_id, resume } => {
                            conn.sid = Some(session_id);
                            if let Some(srv) = self.servers.get_mut(&session_id) {
                                srv.s.handle_input(
                                    now,
                                    Input::Resume {
                                        transport: server_t,
                                        resume,
                                        info,
                                    },
                                );
                            }
                        }
                        Admission::Reject { reply, .. } => {
                            self.set_replies.push(reply.to_vec());
                            return self.server_closes(i, Some(reply));
                        }
                    }
                }
            }
        }
        if data.is_empty() {
            return;
        }
        let sid = self.clients[i].conn.as_ref().and_then(|c| c.sid);
        if let Some(srv) = sid.and_then(|id| self.servers.get_mut(&id)) {
            srv.s.handle_input(
                now,
                Input::Received {
                    transport: server_t,
                    data,
                },
            );
        }
    }

    /// The server side writes `reply` (if any) and closes client `i`'s transport.
    fn server_closes(&mut self, i: usize, reply: Option<Bytes>) {
        let Some(conn) = self.clients[i].conn.take() else {
            return;
        };
        let now = self.now;
        if let Some(r) = reply {
            if (self.s2c)(&r) {
                self.clients[i].s.handle_input(
                    now,
                    Input::Received {
                        transport: conn.client_t,
                        data: &r,
                    },
                );
            }
        }
        if self.notify_loss {
            self.clients[i].s.handle_input(
                now,
                Input::TransportLost {
                    transport: conn.client_t,
                },
            );
        }
    }

    fn client_of(&self, server_t: TransportId) -> Option<usize> {
        self.clients.iter().position(|c| {
            c.conn
                .as_ref()
                .is_some_and(|c| c.server_t == server_t && c.reader.is_none())
        })
    }

    fn on_server_output(&mut self, id: SessionId, out: Output) {
        let at = self.elapsed();
        let now = self.now;
        match out {
            Output::Transmit(t) => {
                let mut bytes = Vec::new();
                t.write_to(&mut bytes);
                let log = &mut self.servers.get_mut(&id).unwrap().log;
                log.push((at, Rec::Tx(t.transport, bytes.clone())));
                if let Some(i) = self.client_of(t.transport) {
                    if (self.s2c)(&bytes) {
                        let ct = self.clients[i].conn.as_ref().unwrap().client_t;
                        self.clients[i].s.handle_input(
                            now,
                            Input::Received {
                                transport: ct,
                                data: &bytes,
                            },
                        );
                    }
                }
            }
            Output::DropTransport { transport } => {
                let log = &mut self.servers.get_mut(&id).unwrap().log;
                log.push((at, Rec::Drop(transport)));
                if let Some(i) = self.client_of(transport) {
                    let c = self.clients[i].conn.take().unwrap();
                    if self.notify_loss {
                        self.clients[i].s.handle_input(
                            now,
                            Input::TransportLost {
                                transport: c.client_t,
                            },
                        );
                    }
                }
            }
            Output::Event(e) => {
                match &e {
                    Event::Parked => {
                        self.set.parked(now, &self.servers[&id].s);
                    }
                    Event::Finished(outcome) => self.set.finished(now, id, outcome),
                    _ => {}
                }
                let log = &mut self.servers.get_mut(&id).unwrap().log;
                log.push((at, Rec::Ev(e)));
            }
            Output::Connect { .. } => panic!("a server never connects"),
            o => panic!("unknown output {o:?}"),
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter_map(|c| c.s.poll_timeout())
            .chain(self.servers.values().filter_map(|s| s.s.poll_timeout()))
            .chain(self.set.poll_timeout())
            .min()
    }

    fn tick(&mut self) {
        let now = self.now;
        for c in &mut self.clients {
            c.s.handle_input(now, Input::Timeout);
        }
        for s in self.servers.values_mut() {
            s.s.handle_input(now, Input::Timeout);
        }
        self.set.handle_timeout(now);
        self.pump();
    }

    /// Runs every timer due up to `t`, at its exact virtual time.
    fn run_until(&mut self, t: Instant) {
        self.pump();
        for _ in 0..1_000_000 {
            match self.next_timer() {
                Some(d) if d <= t => {
                    self.now = self.now.max(d);
                    self.tick();
                }
                _ => {
                    self.now = self.now.max(t);
                    self.tick();
                    return;
                }
            }
        }
        panic!("timers did not settle");
    }

    // ---- faults and injections ----

    /// The transport of client `i` dies and both ends notice.
    fn kill(&mut self, i: usize) {
        let now = self.now;
        if let Some(c) = self.clients[i].conn.take() {
            self.clients[i].s.handle_input(
                now,
                Input::TransportLost {
                    transport: c.client_t,
                },
            );
            if let Some(srv) = c.sid.and_then(|id| self.servers.get_mut(&id)) {
                srv.s.handle_input(
                    now,
                    Input::TransportLost {
                        transport: c.server_t,
                    },
                );
            }
        }
        self.pump();
    }

    /// Only the client notices its transport died (the server's stays half-open).
    fn client_loses(&mut self, i: usize) {
        let now = self.now;
        // The harness may already have forgotten the link (the server dropped it unnoticed).
        let t = match self.clients[i].conn.take() {
            Some(c) => c.client_t,
            None => self.clients[i].s.transport().unwrap(),
        };
        self.clients[i]
            .s
            .handle_input(now, Input::TransportLost { transport: t });
        self.pump();
    }

    /// Bytes arrive at client `i`'s server session on its current transport.
    fn inject_server(&mut self, i: usize, bytes: &[u8]) {
        let now = self.now;
        let t = self.s(i).transport().unwrap();
        self.s(i).handle_input(
            now,
            Input::Received {
                transport: t,
                data: bytes,
            },
        );
        self.pump();
    }

    /// Bytes arrive at client `i` on its current transport.
    fn inject_client(&mut self, i: usize, bytes: &[u8]) {
        let now = self.now;
        let t = self.c(i).transport().unwrap();
        self.c(i).handle_input(
            now,
            Input::Received {
                transport: t,
                data: bytes,
            },
        );
        self.pump();
    }

    /// A new transport (not a harness client's) opens with `bytes`; returns
    /// the server side's answer on it, if any.
    fn raw_connect(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.next_server_t += 1;
        let st = self.next_server_t;
        let now = self.now;
        let mut reader = HandshakeReader::new(now, self.set.config());
        match reader.feed(bytes) {
            HandshakeStep::NeedMore => None,
            HandshakeStep::Reject { reply, .. } => reply.map(|r| r.to_vec()),
            HandshakeStep::Hello { hello, .. } => {
                let info = self.server_info;
                match self.set.admit(now, st, info, hello, &mut self.entropy) {
                    Admission::Reject { reply, .. } => Some(reply.to_vec()),
                    Admission::Fresh(_) => panic!("raw_connect is for resumes"),
                    Admission::Resume { session_id, resume } => {
                        let srv = self.servers.get_mut(&session_id).unwrap();
                        srv.s.handle_input(
                            now,
                            Input::Resume {
                                transport: st,
                                resume,
                                info,
                            },
                        );
                        self.pump();
                        self.servers.values().find_map(|s| {
                            s.log.iter().find_map(|(_, r)| match r {
                                Rec::Tx(t, b) if *t == st => Some(b.clone()),
                                _ => None,
                            })
                        })
                    }
                }
            }
        }
    }
}

// ---- log helpers ----

fn encode_hello(h: &ClientHello) -> Vec<u8> {
    let mut b = BytesMut::new();
    h.encode(&mut b);
    b.to_vec()
}

fn ctl(f: &Frame) -> Vec<u8> {
    FrameHead::control(f).as_slice().to_vec()
}

fn data_frame(offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = FrameHead::data(offset, payload.len() as u32)
        .as_slice()
        .to_vec();
    b.extend_from_slice(payload);
    b
}

/// The ENDED the server sends client `0` on its `attempt`, proof included.
fn ended_bytes(n: &Net, attempt: u64, code: Code, detail: u64) -> Vec<u8> {
    let id = n.sid(0);
    ServerReply::Ended {
        session_id: id,
        code,
        detail,
        proof: ended_proof(&n.secret(0), &id, attempt, code, detail),
    }
    .to_bytes()
    .to_vec()
}

fn reject_bytes(code: Code, detail: u64) -> Vec<u8> {
    ServerReply::Reject { code, detail }.to_bytes().to_vec()
}

fn decode_reply(bytes: &[u8]) -> ServerReply {
    let (r, n) = ServerReply::decode(bytes).unwrap().unwrap();
    assert_eq!(n, bytes.len(), "one whole reply");
    match r {
        // Proofs are checked where the attempt is known (see `ended_bytes`).
        ServerReply::Ended { code, detail, .. } => ended(code, detail),
        r => r,
    }
}

/// An ENDED as `decode_reply` shows it: id and proof blanked.
fn ended(code: Code, detail: u64) -> ServerReply {
    ServerReply::Ended {
        session_id: SessionId([0; 16]),
        code,
        detail,
        proof: [0; 32],
    }
}

fn is_handshake(b: &[u8]) -> bool {
    b.starts_with(&MAGIC)
}

/// Frames written in `log` (handshake messages skipped).
fn frames(log: &[(Duration, Rec)]) -> Vec<Frame> {
    let mut out = Vec::new();
    for (_, r) in log {
        if let Rec::Tx(_, b) = r {
            if is_handshake(b) {
                continue;
            }
            let mut rest = &b[..];
            while !rest.is_empty() {
                let (f, n) = Frame::decode(rest, u32::MAX).unwrap().unwrap();
                out.push(f);
                rest = &rest[n..];
            }
        }
    }
    out
}

fn aborts(log: &[(Duration, Rec)]) -> Vec<Code> {
    frames(log)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Abort { code } => Some(code),
            _ => None,
        })
        .collect()
}

fn count_frames(log: &[(Duration, Rec)], pred: impl Fn(&Frame) -> bool) -> usize {
    frames(log).iter().filter(|f| pred(f)).count()
}

/// Handshake messages a server wrote.
fn replies(log: &[(Duration, Rec)]) -> Vec<ServerReply> {
    log.iter()
        .filter_map(|(_, r)| match r {
            Rec::Tx(_, b) if is_handshake(b) => Some(decode_reply(b)),
            _ => None,
        })
        .collect()
}

/// Handshake messages a client wrote.
fn hellos(log: &[(Duration, Rec)]) -> Vec<ClientHello> {
    log.iter()
        .filter_map(|(_, r)| match r {
            Rec::Tx(_, b) if is_handshake(b) => Some(ClientHello::decode(b).unwrap().unwrap().0),
            _ => None,
        })
        .collect()
}

fn events(log: &[(Duration, Rec)]) -> Vec<Event> {
    log.iter()
        .filter_map(|(_, r)| match r {
            Rec::Ev(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn drops(log: &[(Duration, Rec)]) -> Vec<TransportId> {
    log.iter()
        .filter_map(|(_, r)| match r {
            Rec::Drop(t) => Some(*t),
            _ => None,
        })
        .collect()
}

fn connects(log: &[(Duration, Rec)]) -> Vec<(Duration, TransportId)> {
    log.iter()
        .filter_map(|(at, r)| match r {
            Rec::Connect(t) => Some((*at, *t)),
            _ => None,
        })
        .collect()
}

/// The session's outcome, checking it was announced at most once.
fn outcome(log: &[(Duration, Rec)]) -> Option<Result<(), SessionError>> {
    let ends: Vec<_> = events(log)
        .into_iter()
        .filter_map(|e| match e {
            Event::Finished(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(
        ends.len() <= 1,
        "Finished announced more than once: {ends:?}"
    );
    ends.into_iter().next()
}

fn finished_at(log: &[(Duration, Rec)]) -> Duration {
    log.iter()
        .find_map(|(at, r)| match r {
            Rec::Ev(Event::Finished(_)) => Some(*at),
            _ => None,
        })
        .unwrap()
}

/// Checks the documented end of a failed session: one `Finished(Err(e))`,
/// the same sticky `error()`, state `Finished`, and `transport` dropped.
fn assert_failed(s: &Session, log: &Log, e: &SessionError, transport: Option<TransportId>) {
    assert_eq!(outcome(log), Some(Err(e.clone())), "outcome");
    assert_eq!(s.error(), Some(e), "sticky error");
    assert_eq!(s.state(), SessionState::Finished);
    assert_eq!(s.transport(), None);
    if let Some(t) = transport {
        assert!(drops(log).contains(&t), "transport {t} dropped: {log:?}");
    }
}

fn assert_closed_ok(s: &Session, log: &Log) {
    assert_eq!(outcome(log), Some(Ok(())));
    assert_eq!(s.error(), None);
    assert_eq!(s.state(), SessionState::Finished);
}

fn read_all(s: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// DATA_LOST detail bit 63: the client's stream broke (PROTOCOL.md 2.4.3).
const CLIENT_STREAM: u64 = 1 << 63;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Client and server established over one transport, default configs.
fn up() -> Net {
    up_with(Config::default(), Config::default())
}

fn up_with(client: Config, server: Config) -> Net {
    let mut n = Net::new(client, server);
    n.pump();
    assert_eq!(n.c(0).state(), SessionState::Established);
    assert_eq!(n.s(0).state(), SessionState::Established);
    n
}

/// A client that sent its HELLO and waits for an answer the test forges.
fn handshaking() -> Net {
    let mut n = Net::new(Config::default(), Config::default());
    n.c2s = cut;
    n.pump();
    assert_eq!(n.c(0).state(), SessionState::Handshaking);
    n
}

/// An established session whose client lost its transport and sent a
/// RESUME that is held back; returns the RESUME's attempt number.
fn resuming(n: &mut Net) -> u64 {
    n.c2s = cut;
    n.kill(0);
    assert_eq!(n.c(0).state(), SessionState::Handshaking);
    let resume = n.captured.last().unwrap().clone();
    match ClientHello::decode(&resume).unwrap().unwrap().0 {
        ClientHello::Resume(r) => r.attempt,
        h => panic!("expected a RESUME, got {h:?}"),
    }
}

/// Feeds `bytes` to the server on its live transport and checks R13: the
/// server sends ABORT PROTOCOL_VIOLATION, drops the transport and ends with
/// `expected`; the client ends with `ReportedByPeer` and drops its transport.
fn assert_server_rejects(n: &mut Net, bytes: &[u8], expected: Violation) {
    let st = n.server_t(0);
    let ct = n.c(0).transport().unwrap();
    let (smark, cmark) = (n.slog(0).len(), n.clog(0).len());
    n.inject_server(0, bytes);
    let slog = n.slog(0)[smark..].to_vec();
    assert_eq!(
        aborts(&slog),
        vec![Code::ProtocolViolation],
        "ABORT 7 on the wire"
    );
    assert_failed(n.s(0), &slog, &expected.into(), Some(st));
    let clog = n.clog(0)[cmark..].to_vec();
    let reported = SessionError::ProtocolViolation(Violation::ReportedByPeer);
    assert_failed(n.c(0), &clog, &reported, Some(ct));
    assert!(aborts(&clog).is_empty(), "an ABORT is not answered");
}

/// The mirror image: bytes injected into the client.
fn assert_client_rejects(n: &mut Net, bytes: &[u8], expected: Violation) {
    let st = n.server_t(0);
    let ct = n.c(0).transport().unwrap();
    let (smark, cmark) = (n.slog(0).len(), n.clog(0).len());
    n.inject_client(0, bytes);
    let clog = n.clog(0)[cmark..].to_vec();
    assert_eq!(
        aborts(&clog),
        vec![Code::ProtocolViolation],
        "ABORT 7 on the wire"
    );
    assert_failed(n.c(0), &clog, &expected.into(), Some(ct));
    let slog = n.slog(0)[smark..].to_vec();
    let reported = SessionError::ProtocolViolation(Violation::ReportedByPeer);
    assert_failed(n.s(0), &slog, &reported, Some(st));
}

// ---------------------------------------------------------------------------
// 2.3 Resume authentication: R1, R2, R3
// ---------------------------------------------------------------------------

#[test]
fn r1_client_numbers_attempts_strictly_increasing() {
    let mut n = up();
    n.kill(0);
    n.accept = false;
    n.kill(0); // one refused connect attempt in between still uses a number
    n.accept = true;
    n.run_until(n.at(secs(1)));
    n.kill(0);
    let attempts: Vec<Option<u64>> = hellos(n.clog(0))
        .into_iter()
        .map(|h| match h {
            ClientHello::Fresh(_) => None,
            ClientHello::Resume(r) => Some(r.attempt),
        })
        .collect();
    assert_eq!(attempts, vec![None, Some(2), Some(4), Some(5)]);
    assert_eq!(n.c(0).stats().connect_attempts, 5);
    assert_eq!(n.c(0).stats().resumes, 3);
}

#[test]
fn r1_replayed_attempt_is_rejected() {
    let mut n = up();
    n.kill(0);
    assert_eq!(n.c(0).stats().resumes, 1);
    // The genuine RESUME just admitted, captured and replayed on a new transport.
    let replay = match &n.clog(0).iter().rev().find_map(|(_, r)| match r {
        Rec::Tx(_, b) if is_handshake(b) => Some(b.clone()),
        _ => None,
    }) {
        Some(b) => b.clone(),
        None => panic!("no RESUME"),
    };
    let st = n.server_t(0);
    let smark = n.slog(0).len();
    let reply = n.raw_connect(&replay).unwrap();
    assert_eq!(
        decode_reply(&reply),
        ServerReply::Reject {
            code: Code::UnknownSession,
            detail: 0
        }
    );
    // An older attempt (with a valid proof) is a replay too.
    let older = n.resume_msg(0, 1, 0, 0);
    let reply = n.raw_connect(&older).unwrap();
    assert_eq!(
        decode_reply(&reply),
        ServerReply::Reject {
            code: Code::UnknownSession,
            detail: 0
        }
    );
    assert_eq!(n.set.counts().rejected_resumes, 2);
    // The live session was not touched.
    assert!(n.slog(0)[smark..].is_empty());
    assert_eq!(n.s(0).transport(), Some(st));
    n.c(0).write(b"still here").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(0)), b"still here");
}

#[test]
fn r2_unknown_id_wrong_proof_and_replay_get_identical_unknown_session() {
    let mut n = up();
    n.kill(0);
    let replay = hellos(n.clog(0)).pop().unwrap();
    let replay = encode_hello(&replay);
    let mut wrong_proof = n.resume_msg(0, 9, 0, 0);
    wrong_proof[RESUME_LEN - 1] ^= 1;
    let mut unknown_id = n.resume_msg(0, 9, 0, 0);
    unknown_id[6] ^= 0xff;
    let st = n.server_t(0);
    let answers: Vec<Vec<u8>> = [replay, wrong_proof, unknown_id]
        .iter()
        .map(|m| n.raw_connect(m).unwrap())
        .collect();
    let expected = reject_bytes(Code::UnknownSession, 0);
    for a in &answers {
        assert_eq!(a, &expected, "byte-identical answers: no oracle");
    }
    assert_eq!(n.set.counts().rejected_resumes, 3);
    assert_eq!(n.s(0).state(), SessionState::Established);
    assert_eq!(n.s(0).transport(), Some(st));
    assert_eq!(n.c(0).state(), SessionState::Established);
}

#[test]
fn r2_ended_session_reveals_nothing_without_a_valid_proof() {
    let mut n = up();
    n.c(0).close();
    n.pump();
    assert!(n.s(0).is_finished());
    let mut forged = n.resume_msg(0, 10, 0, 0);
    forged[RESUME_LEN - 1] ^= 1;
    assert_eq!(
        n.raw_connect(&forged).unwrap(),
        reject_bytes(Code::UnknownSession, 0),
        "not SESSION_CLOSED: the proof did not verify"
    );
    let genuine = n.resume_msg(0, 10, 0, 0);
    assert_eq!(
        n.raw_connect(&genuine).unwrap(),
        ended_bytes(&n, 10, Code::SessionClosed, 0),
        "proven with the secret, for this attempt"
    );
}

#[test]
fn r3_forged_resume_does_not_drop_half_open_transport() {
    let mut n = up();
    n.notify_loss = false;
    let st = n.server_t(0);
    let smark = n.slog(0).len();
    let mut forged = n.resume_msg(0, 2, 0, 0);
    forged[RESUME_LEN - 1] ^= 1;
    let reply = n.raw_connect(&forged).unwrap();
    assert_eq!(
        decode_reply(&reply),
        ServerReply::Reject {
            code: Code::UnknownSession,
            detail: 0
        }
    );
    assert!(
        n.slog(0)[smark..].is_empty(),
        "nothing happened to the live session: {:?}",
        &n.slog(0)[smark..]
    );
    assert_eq!(n.s(0).transport(), Some(st));
    assert_eq!(n.s(0).state(), SessionState::Established);
    n.s(0).write(b"live").unwrap();
    n.pump();
    assert_eq!(read_all(n.c(0)), b"live");
}

#[test]
fn r3_verified_resume_supersedes_half_open_transport() {
    let mut n = up();
    n.notify_loss = false;
    let old = n.server_t(0);
    let smark = n.slog(0).len();
    n.client_loses(0); // the server still believes in `old`
    let new = n.server_t(0);
    assert_ne!(old, new);
    let log = n.slog(0)[smark..].to_vec();
    let pos = |want: &dyn Fn(&Rec) -> bool| log.iter().position(|(_, r)| want(r)).unwrap();
    let dropped = pos(&|r| *r == Rec::Drop(old));
    let lost = pos(&|r| *r == Rec::Ev(Event::TransportLost { transport: old }));
    let resumed = pos(&|r| matches!(r, Rec::Ev(Event::Resumed { attempt: 2, .. })));
    assert!(dropped < resumed && lost < resumed, "{log:?}");
    assert!(!events(&log).contains(&Event::Parked));
    assert_eq!(n.s(0).transport(), Some(new));
    n.c(0).write(b"after").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(0)), b"after");
}

// ---------------------------------------------------------------------------
// 2.4 Server decisions on RESUME: tombstones, R4, R5, client checks
// ---------------------------------------------------------------------------

#[test]
fn resume_releases_what_peer_received_and_retransmits_the_rest() {
    let mut n = up();
    n.s(0).write(&pattern(20)).unwrap();
    n.pump();
    assert_eq!(n.c(0).received(), 20);
    assert_eq!(n.s(0).retained(), 20, "no ACK yet (quarter of 4 MiB)");
    n.c2s = cut;
    n.c(0).write(b"thirty bytes of client data...").unwrap();
    n.pump();
    n.c2s = pass;
    let (cmark, smark) = (n.clog(0).len(), n.slog(0).len());
    n.kill(0);
    let slog = n.slog(0)[smark..].to_vec();
    let clog = n.clog(0)[cmark..].to_vec();
    // Server: RESUME_OK with its count; releases everything before the client's.
    assert!(replies(&slog)
        .iter()
        .any(|r| matches!(r, ServerReply::Resumed { received: 0, .. })));
    assert!(events(&slog).contains(&Event::Released {
        up_to: 20,
        bytes: 20
    }));
    assert_eq!(n.s(0).retained(), 0);
    // Client: retransmits from the server's count.
    assert!(events(&clog).contains(&Event::Retransmit { from: 0, to: 30 }));
    assert_eq!(
        frames(&clog)
            .into_iter()
            .filter(|f| matches!(f, Frame::Data { .. }))
            .collect::<Vec<_>>(),
        vec![Frame::Data {
            offset: 0,
            payload: Bytes::from_static(b"thirty bytes of client data...")
        }]
    );
    assert_eq!(read_all(n.s(0)), b"thirty bytes of client data...");
}

/// An answer to a RESUME that is not proven with the secret (PROTOCOL.md
/// 2.6) is a failed attempt: the client drops the transport, sends nothing
/// to whoever answered, backs off, and resumes with the real server.
fn assert_failed_attempt(n: &mut Net, ct: TransportId, mark: usize, what: &str) {
    let log = n.clog(0)[mark..].to_vec();
    assert_eq!(outcome(&log), None, "{what}: not final: {log:?}");
    assert_eq!(n.c(0).error(), None, "{what}");
    assert!(drops(&log).contains(&ct), "{what}: transport dropped");
    assert!(
        aborts(&log).is_empty(),
        "{what}: nothing is sent to an impostor"
    );
    assert_eq!(n.c(0).state(), SessionState::Backoff, "{what}");
    n.c2s = pass;
    let t = n.now + secs(3);
    n.run_until(t);
    assert_eq!(n.c(0).state(), SessionState::Established, "{what}");
    n.c(0).write(b"on").unwrap();
    n.pump();
    assert!(read_all(n.s(0)).ends_with(b"on"), "{what}");
}

#[test]
fn resume_ok_with_wrong_session_id_is_a_failed_attempt() {
    let mut n = up();
    let attempt = resuming(&mut n);
    let ct = n.c(0).transport().unwrap();
    let mark = n.clog(0).len();
    let secret = n.secret(0);
    let other = SessionId([0xee; 16]);
    let reply = ServerReply::Resumed {
        session_id: other,
        received: 0,
        params: Params::default(),
        proof: accept_proof(&secret, &other, attempt, 0, &Params::default()),
    };
    n.inject_client(0, &reply.to_bytes());
    assert_failed_attempt(&mut n, ct, mark, "wrong id");
}

#[test]
fn resume_ok_with_bad_proof_is_a_failed_attempt() {
    type Forge = fn(&[u8; 32], &SessionId, u64) -> [u8; 32];
    let p = Params::default();
    let variants: [(&str, Forge); 4] = [
        ("wrong secret", |_, id, a| {
            accept_proof(&[0; 32], id, a, 0, &Params::default())
        }),
        ("older attempt", |s, id, a| {
            accept_proof(s, id, a - 1, 0, &Params::default())
        }),
        ("client's label", |s, id, a| {
            resume_proof(s, id, a, 0, 0, &Params::default())
        }),
        ("other params", |s, id, a| {
            let p = Params {
                recv_buffer: 1,
                ..Params::default()
            };
            accept_proof(s, id, a, 0, &p)
        }),
    ];
    for (what, forge) in variants {
        let mut n = up();
        let attempt = resuming(&mut n);
        let ct = n.c(0).transport().unwrap();
        let mark = n.clog(0).len();
        let id = n.sid(0);
        let reply = ServerReply::Resumed {
            session_id: id,
            received: 0,
            params: p,
            proof: forge(&n.secret(0), &id, attempt),
        };
        n.inject_client(0, &reply.to_bytes());
        assert_failed_attempt(&mut n, ct, mark, what);
    }
}

#[test]
fn server_hello_in_answer_to_resume_is_a_failed_attempt() {
    let mut n = up();
    resuming(&mut n);
    let ct = n.c(0).transport().unwrap();
    let mark = n.clog(0).len();
    let reply = ServerReply::Accept {
        session_id: n.sid(0),
        secret: [1; 32],
        params: Params::default(),
    };
    n.inject_client(0, &reply.to_bytes());
    assert_failed_attempt(&mut n, ct, mark, "SERVER_HELLO");
}

#[test]
fn unproven_rejects_and_forged_ended_are_failed_attempts() {
    let forged_ended = |n: &Net| {
        ServerReply::Ended {
            session_id: n.sid(0),
            code: Code::SessionClosed,
            detail: 0,
            proof: [7; 32],
        }
        .to_bytes()
        .to_vec()
    };
    for code in [
        Code::UnknownSession,
        Code::SessionClosed,
        Code::Expired,
        Code::Evicted,
        Code::DataLost,
        Code::ProtocolViolation,
        Code::Malformed,
        Code::UnsupportedVersion,
        Code::Busy,
    ] {
        let mut n = up();
        resuming(&mut n);
        let ct = n.c(0).transport().unwrap();
        let mark = n.clog(0).len();
        n.inject_client(0, &reject_bytes(code, 0));
        assert_failed_attempt(&mut n, ct, mark, &format!("REJECT {code:?}"));
    }
    let mut n = up();
    resuming(&mut n);
    let ct = n.c(0).transport().unwrap();
    let mark = n.clog(0).len();
    let bytes = forged_ended(&n);
    n.inject_client(0, &bytes);
    assert_failed_attempt(&mut n, ct, mark, "ENDED with a bad proof");
    let mut n = up();
    resuming(&mut n);
    let ct = n.c(0).transport().unwrap();
    let mark = n.clog(0).len();
    n.inject_client(0, b"FTSS\x01\x7f garbage");
    assert_failed_attempt(&mut n, ct, mark, "garbage");
}

#[test]
fn code_1_unknown_session_is_retried_until_max_reconnect_time() {
    let mut n = up();
    n.c(0).write(b"sent").unwrap();
    n.pump();
    // Every attempt meets a server that does not know the session.
    n.set = ConnectionSet::new(Config::default());
    n.servers.clear();
    let mark = n.clog(0).len();
    n.kill(0);
    assert_ne!(n.c(0).state(), SessionState::Finished);
    n.run_until(n.at(secs(29)));
    assert_ne!(
        n.c(0).state(),
        SessionState::Finished,
        "retried within the limit"
    );
    n.run_until(n.at(secs(31)));
    let log = n.clog(0)[mark..].to_vec();
    assert_failed(n.c(0), &log, &SessionError::UnknownSession, None);
    let refused = n.set.counts().rejected_resumes;
    assert!(refused > 5, "{refused} attempts");
    assert!(connects(&log).len() as u64 >= refused);
}

#[test]
fn r4_resume_count_ahead_is_rejected_with_protocol_violation() {
    let mut n = up();
    let other = n.add_client(Config::default(), TransportInfo::default());
    n.pump();
    n.s(0).write(b"12345").unwrap();
    n.pump();
    n.notify_loss = false;
    let old = n.server_t(0);
    let smark = n.slog(0).len();
    let forged = n.resume_msg(0, 2, 6, 0);
    let reply = n.raw_connect(&forged).unwrap();
    assert_eq!(decode_reply(&reply), ended(Code::ProtocolViolation, 0));
    let slog = n.slog(0)[smark..].to_vec();
    let expected = Violation::CountAhead {
        claimed: 6,
        sent: 5,
    };
    assert_failed(n.s(0), &slog, &expected.into(), Some(old));
    assert_eq!(drops(&slog).len(), 2, "old and new transport dropped");
    // Only that session is affected.
    assert_eq!(n.c(other).state(), SessionState::Established);
    n.c(other).write(b"ok").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(other)), b"ok");
    // The genuine client learns the verdict when it resumes (2.4.1).
    n.accept = false;
    n.client_loses(0); // attempt 2 is refused, attempt 3 reaches the server
    n.accept = true;
    n.run_until(n.at(secs(1)));
    assert_eq!(
        decode_reply(n.set_replies.last().unwrap()),
        ended(Code::ProtocolViolation, 0)
    );
    let log = n.clog(0).clone();
    let reported = SessionError::ProtocolViolation(Violation::ReportedByPeer);
    assert_failed(n.c(0), &log, &reported, None);
}

#[test]
fn r4_resume_ok_count_ahead_ends_client_with_count_ahead_and_abort() {
    let mut n = up();
    n.c(0).write(b"12345").unwrap();
    n.pump();
    let attempt = resuming(&mut n);
    let ct = n.c(0).transport().unwrap();
    let mark = n.clog(0).len();
    let id = n.sid(0);
    let reply = ServerReply::Resumed {
        session_id: id,
        received: 6,
        params: Params::default(),
        proof: accept_proof(&n.secret(0), &id, attempt, 6, &Params::default()),
    };
    n.inject_client(0, &reply.to_bytes());
    let log = n.clog(0)[mark..].to_vec();
    let expected = Violation::CountAhead {
        claimed: 6,
        sent: 5,
    };
    assert_failed(n.c(0), &log, &expected.into(), Some(ct));
    assert_eq!(aborts(&log), vec![Code::ProtocolViolation]);
}

#[test]
fn r4_count_ahead_is_judged_before_data_lost() {
    let mut n = up();
    n.s(0).write(b"12345").unwrap();
    n.pump();
    n.notify_loss = false;
    assert_eq!(n.s(0).received(), 0);
    // received 6 > 5 sent (R4) and retained_from 1 > 0 received (R5).
    let forged = n.resume_msg(0, 2, 6, 1);
    let reply = n.raw_connect(&forged).unwrap();
    assert_eq!(decode_reply(&reply), ended(Code::ProtocolViolation, 0));
    assert_eq!(
        n.s(0).error(),
        Some(
            &Violation::CountAhead {
                claimed: 6,
                sent: 5
            }
            .into()
        )
    );
}

/// Both sides under the implicit policy (it applies only when both chose
/// it) with tiny buffers: each keeps only the last 20 bytes handed to the
/// transport (10 + 10 + margin 0).
fn implicit_net() -> Net {
    mixed_net(ReleasePolicy::Implicit, ReleasePolicy::Implicit)
}

/// Tiny buffers (implicit bound 20 bytes), each side with its own policy.
fn mixed_net(client: ReleasePolicy, server: ReleasePolicy) -> Net {
    let tiny = TransportInfo {
        send_buffer: Some(10),
        recv_buffer: Some(10),
    };
    let with = |policy| {
        let mut c = Config::default();
        c.release_policy = policy;
        c.implicit_margin = Some(0);
        c
    };
    let mut n = Net::with_info(with(client), tiny, with(server), tiny);
    n.pump();
    assert_eq!(n.c(0).state(), SessionState::Established);
    n
}

/// Section 4, mixed policies: an implicit side whose peer wants acks
/// releases on them like an Ack side (nothing released while its data is
/// cut off, however far past the implicit bound), and the Ack side sends it
/// windowed ACKs; with both sides implicit, the same write is released
/// down to the bound without any ACK.
#[test]
fn mixed_policies_release_on_acks() {
    for (c, s) in [
        (ReleasePolicy::Implicit, ReleasePolicy::Ack),
        (ReleasePolicy::Ack, ReleasePolicy::Implicit),
    ] {
        let mut n = mixed_net(c, s);
        assert_eq!(n.c(0).effective_release_policy(), ReleasePolicy::Ack);
        assert_eq!(n.s(0).effective_release_policy(), ReleasePolicy::Ack);
        n.c2s = cut;
        n.s2c = cut;
        n.c(0).write(&pattern(100)).unwrap();
        n.s(0).write(&pattern(100)).unwrap();
        n.pump();
        assert_eq!(
            n.c(0).retained_from(),
            0,
            "{c:?}/{s:?}: client released unacknowledged bytes"
        );
        assert_eq!(
            n.s(0).retained_from(),
            0,
            "{c:?}/{s:?}: server released unacknowledged bytes"
        );
        n.c2s = pass;
        n.s2c = pass;
        let (cmark, smark) = (n.clog(0).len(), n.slog(0).len());
        n.kill(0);
        n.run_until(n.at(secs(2)));
        assert_eq!(
            n.c(0).state(),
            SessionState::Established,
            "{c:?}/{s:?}: resumed"
        );
        assert_eq!((n.c(0).received(), n.s(0).received()), (100, 100));
        // Each side acknowledged the other, whatever it announced.
        for log in [&n.clog(0)[cmark..], &n.slog(0)[smark..]] {
            assert!(
                count_frames(log, |f| matches!(f, Frame::Ack { .. })) > 0,
                "{c:?}/{s:?}: no ACK sent"
            );
        }
        assert_eq!((n.c(0).retained(), n.s(0).retained()), (0, 0));
    }
    let mut n = implicit_net();
    assert_eq!(n.c(0).effective_release_policy(), ReleasePolicy::Implicit);
    n.c2s = cut;
    n.c(0).write(&pattern(100)).unwrap();
    n.pump();
    assert_eq!(n.c(0).retained_from(), 80, "implicit release kept 20 bytes");
}

#[test]
fn r5_server_missing_bytes_the_client_released_is_data_lost() {
    let mut n = implicit_net();
    n.c2s = cut;
    n.c(0).write(&pattern(100)).unwrap();
    n.pump();
    assert_eq!(n.c(0).retained_from(), 80, "implicit release kept 20 bytes");
    n.c2s = pass;
    let (cmark, smark) = (n.clog(0).len(), n.slog(0).len());
    n.kill(0);
    let slog = n.slog(0)[smark..].to_vec();
    let new_st = n.next_server_t;
    assert_eq!(
        replies(&slog),
        // Bit 63 and 0: the offset the server needed.
        vec![ended(Code::DataLost, CLIENT_STREAM)]
    );
    let server_err = SessionError::DataLost {
        needed: 0,
        retained_from: 80,
    };
    assert_failed(n.s(0), &slog, &server_err, Some(new_st));
    let clog = n.clog(0)[cmark..].to_vec();
    let ct = connects(&clog).last().unwrap().1;
    assert_failed(n.c(0), &clog, &server_err, Some(ct));
    // The tombstone tells a late resume the same.
    let late = n.resume_msg(0, 9, 0, 80);
    assert_eq!(
        decode_reply(&n.raw_connect(&late).unwrap()),
        ended(Code::DataLost, 0)
    );
}

#[test]
fn r5_client_data_lost_names_the_offset_the_server_needed() {
    let mut n = implicit_net();
    n.s(0).write(b"1234567").unwrap();
    n.pump();
    assert_eq!(n.c(0).received(), 7);
    n.c2s = cut;
    n.c(0).write(&pattern(100)).unwrap();
    n.pump();
    n.c2s = pass;
    n.kill(0);
    let err = SessionError::DataLost {
        needed: 0,
        retained_from: 80,
    };
    assert_eq!(n.s(0).error(), Some(&err));
    // Both sides should describe the same loss: the server needed offset 0 of
    // the client's stream, which the client released up to 80.
    assert_eq!(n.c(0).error(), Some(&err));
}

#[test]
fn r5_client_missing_bytes_the_server_released_is_data_lost() {
    let mut n = implicit_net();
    n.s2c = cut;
    n.s(0).write(&pattern(100)).unwrap();
    n.pump();
    assert_eq!(n.s(0).retained_from(), 80);
    n.s2c = pass;
    let (cmark, smark) = (n.clog(0).len(), n.slog(0).len());
    n.kill(0);
    let slog = n.slog(0)[smark..].to_vec();
    let new_st = n.next_server_t;
    assert_eq!(replies(&slog), vec![ended(Code::DataLost, 80)]);
    let err = SessionError::DataLost {
        needed: 0,
        retained_from: 80,
    };
    assert_failed(n.s(0), &slog, &err, Some(new_st));
    let clog = n.clog(0)[cmark..].to_vec();
    let ct = connects(&clog).last().unwrap().1;
    assert_failed(n.c(0), &clog, &err, Some(ct));
}

#[test]
fn r5_resume_ok_below_client_retained_ends_data_lost_with_abort() {
    let mut n = implicit_net();
    n.c2s = cut;
    n.c(0).write(&pattern(100)).unwrap();
    n.pump();
    assert_eq!(n.c(0).retained_from(), 80);
    let attempt = resuming(&mut n);
    let ct = n.c(0).transport().unwrap();
    let mark = n.clog(0).len();
    let id = n.sid(0);
    let reply = ServerReply::Resumed {
        session_id: id,
        received: 0,
        params: Params::default(),
        proof: accept_proof(&n.secret(0), &id, attempt, 0, &Params::default()),
    };
    n.inject_client(0, &reply.to_bytes());
    let log = n.clog(0)[mark..].to_vec();
    let err = SessionError::DataLost {
        needed: 0,
        retained_from: 80,
    };
    assert_failed(n.c(0), &log, &err, Some(ct));
    assert_eq!(aborts(&log), vec![Code::DataLost], "R13: ABORT DATA_LOST");
}

// ---------------------------------------------------------------------------
// 2.5 Handshake errors, R6
// ---------------------------------------------------------------------------

#[test]
fn handshake_garbage_first_bytes_get_no_answer() {
    let now = Instant::now();
    for garbage in [&b"GET / HTTP/1.1\r\n"[..], b"FX", b"\x16\x03\x01"] {
        let mut r = HandshakeReader::new(now, &Config::default());
        match r.feed(garbage) {
            HandshakeStep::Reject { reply, error } => {
                assert_eq!(reply, None, "no answer to {garbage:?}");
                assert_eq!(error, DecodeError::BadMagic);
            }
            s => panic!("{s:?}"),
        }
    }
}

#[test]
fn handshake_client_sends_no_frames_before_answer_and_reads_frames_after_it() {
    let mut n = handshaking();
    assert_eq!(n.c(0).write(b"early").unwrap(), 5);
    n.pump();
    assert_eq!(n.captured.len(), 1, "only the HELLO: {:?}", n.captured);
    let mut answer = ServerReply::Accept {
        session_id: SessionId([9; 16]),
        secret: [3; 32],
        params: Params {
            wants_acks: true,
            retain_capacity: 1 << 20,
            recv_buffer: 0,
        },
    }
    .to_bytes()
    .to_vec();
    answer.extend_from_slice(&data_frame(0, b"hi"));
    n.inject_client(0, &answer);
    assert_eq!(n.c(0).state(), SessionState::Established);
    assert_eq!(read_all(n.c(0)), b"hi");
    assert_eq!(
        frames(n.clog(0)),
        vec![Frame::Data {
            offset: 0,
            payload: Bytes::from_static(b"early")
        }]
    );
}

#[test]
fn handshake_garbage_answer_ends_client_with_violation() {
    let mut n = handshaking();
    let ct = n.c(0).transport().unwrap();
    n.inject_client(0, b"HTTP/1.1 400 Bad Request\r\n");
    let log = n.clog(0).clone();
    let err = SessionError::ProtocolViolation(Violation::Decode(DecodeError::BadMagic));
    assert_failed(n.c(0), &log, &err, Some(ct));
}

#[test]
fn r6_server_handshake_reader_expires_at_handshake_timeout() {
    let t0 = Instant::now();
    let mut cfg = Config::default();
    cfg.handshake_timeout = secs(3);
    let mut r = HandshakeReader::new(t0, &cfg);
    assert_eq!(r.deadline(), t0 + secs(3));
    let hello = encode_hello(&ClientHello::Fresh(Params::default()));
    assert!(matches!(r.feed(&hello[..10]), HandshakeStep::NeedMore));
    assert!(!r.is_expired(t0 + secs(3) - ms(1)));
    assert!(
        r.is_expired(t0 + secs(3)),
        "incomplete at the deadline: drop"
    );
    // A reader whose message completed in time never expires.
    let mut done = HandshakeReader::new(t0, &cfg);
    assert!(matches!(done.feed(&hello), HandshakeStep::Hello { .. }));
    assert!(!done.is_expired(t0 + secs(60)));
}

#[test]
fn r6_client_drops_unanswered_handshake_and_backs_off() {
    let mut n = Net::new(Config::default(), Config::default());
    n.manual_connect = true;
    n.pump();
    assert_eq!(connects(n.clog(0)), vec![(Duration::ZERO, 1)]);
    // The connection comes up late, and the server never answers.
    n.run_until(n.at(secs(3)));
    n.c2s = cut;
    n.complete_connect(0);
    assert_eq!(n.c(0).state(), SessionState::Handshaking);
    n.run_until(n.at(secs(5) - ms(1)));
    assert!(drops(n.clog(0)).is_empty());
    // handshake_timeout (5 s) counts from the Connect, not from TransportUp.
    n.run_until(n.at(secs(5)));
    let log = n.clog(0).clone();
    assert_eq!(drops(&log), vec![1]);
    assert!(events(&log).contains(&Event::TransportLost { transport: 1 }));
    assert_eq!(n.c(0).state(), SessionState::Backoff);
    assert_eq!(n.c(0).stats().transports_lost, 1);
    n.run_until(n.at(secs(6)));
    let c = connects(n.clog(0));
    assert_eq!(c.len(), 2);
    let gap = c[1].0 - secs(5);
    assert!(gap >= ms(25) && gap < ms(50), "first backoff {gap:?}");
    n.c2s = pass;
    n.complete_connect(0);
    assert_eq!(n.c(0).state(), SessionState::Established);
    assert!(n.c(0).error().is_none());
}

// ---------------------------------------------------------------------------
// 3. Frames: R7–R13
// ---------------------------------------------------------------------------

#[test]
fn r7_oversized_data_frame_is_violation_from_header() {
    let mut n = up();
    let max = Config::default().max_frame_payload;
    // Only the header: the violation needs no payload.
    let head = FrameHead::data(0, max + 1).as_slice().to_vec();
    let expected = Violation::Decode(DecodeError::FrameTooLarge { len: max + 1, max });
    assert_server_rejects(&mut n, &head, expected);
    assert_eq!(n.s(0).received(), 0);
}

#[test]
fn r7_frame_of_exactly_max_payload_is_accepted_and_limit_is_16_mib() {
    let mut s = Config::default();
    s.max_frame_payload = 100;
    let mut n = up_with(Config::default(), s.clone());
    n.inject_server(0, &data_frame(0, &pattern(100)));
    assert_eq!(n.s(0).received(), 100);
    assert!(n.s(0).error().is_none());
    assert_server_rejects(
        &mut n,
        FrameHead::data(100, 101).as_slice(),
        Violation::Decode(DecodeError::FrameTooLarge { len: 101, max: 100 }),
    );
    // The sender splits writes into frames of at most max_frame_payload.
    let mut n = up_with(s.clone(), s);
    n.c(0).write(&pattern(250)).unwrap();
    n.pump();
    let lens: Vec<usize> = frames(n.clog(0))
        .into_iter()
        .filter_map(|f| match f {
            Frame::Data { payload, .. } => Some(payload.len()),
            _ => None,
        })
        .collect();
    assert_eq!(lens, vec![100, 100, 50]);
    // At most 16 MiB: a larger setting is a configuration error.
    let mut c = Config::default();
    c.max_frame_payload = 16 * 1024 * 1024 + 1;
    let mut s = Session::client(c, Instant::now(), 1);
    assert!(matches!(s.error(), Some(SessionError::Config(_))));
    let mut finished = false;
    while let Some(o) = s.poll_output() {
        assert!(!matches!(o, Output::Connect { .. }), "never connects");
        finished |= matches!(
            o,
            Output::Event(Event::Finished(Err(SessionError::Config(_))))
        );
    }
    assert!(finished);
}

#[test]
fn r7_zero_length_data_frame_is_violation() {
    let mut n = up();
    let head = FrameHead::data(0, 0).as_slice().to_vec();
    assert_server_rejects(&mut n, &head, Violation::Decode(DecodeError::EmptyData));
}

#[test]
fn r7_partial_data_payload_counts_as_received() {
    let mut n = up();
    let mut b = FrameHead::data(0, 10).as_slice().to_vec();
    b.extend_from_slice(b"abcd");
    n.inject_server(0, &b);
    assert_eq!(n.s(0).received(), 4);
    assert_eq!(read_all(n.s(0)), b"abcd");
    n.inject_server(0, b"efghij");
    assert_eq!(n.s(0).received(), 10);
    assert_eq!(read_all(n.s(0)), b"efghij");
    assert!(n.s(0).error().is_none());
}

#[test]
fn r8_unknown_frame_type_is_violation() {
    let mut n = up();
    assert_server_rejects(
        &mut n,
        &[0x07],
        Violation::Decode(DecodeError::UnknownFrameType(0x07)),
    );
    let mut n = up();
    assert_client_rejects(
        &mut n,
        &[0xff],
        Violation::Decode(DecodeError::UnknownFrameType(0xff)),
    );
}

#[test]
fn r8_reserved_fin_flags_are_violation() {
    let mut n = up();
    let mut fin = ctl(&Frame::Fin {
        offset: 0,
        close: false,
    });
    fin[9] = 0x02;
    assert_server_rejects(
        &mut n,
        &fin,
        Violation::Decode(DecodeError::ReservedFlags(0x02)),
    );
}

#[test]
fn r9_data_at_wrong_offset_is_violation() {
    for got in [3u64, 9, 0] {
        let mut n = up();
        n.c(0).write(b"hello").unwrap();
        n.pump();
        assert_eq!(n.s(0).received(), 5);
        assert_server_rejects(
            &mut n,
            &data_frame(got, b"xx"),
            Violation::DataOffset { got, expected: 5 },
        );
        assert_eq!(n.s(0).received(), 5, "nothing of the bad frame delivered");
    }
}

#[test]
fn r10_ack_beyond_sent_is_violation() {
    let mut n = up();
    assert_server_rejects(
        &mut n,
        &ctl(&Frame::Ack { received: 1 }),
        Violation::AckBeyondSent { acked: 1, sent: 0 },
    );
}

#[test]
fn r10_ack_regressed_is_violation() {
    let mut n = up();
    n.s(0).write(&pattern(10)).unwrap();
    n.pump();
    n.inject_server(0, &ctl(&Frame::Ack { received: 8 }));
    assert_eq!(n.s(0).retained(), 2, "ACK 8 released 8 bytes");
    assert_server_rejects(
        &mut n,
        &ctl(&Frame::Ack { received: 4 }),
        Violation::AckRegressed {
            previous: 8,
            acked: 4,
        },
    );
}

/// A repeated acknowledgment (the same count again) is not a regression.
#[test]
fn r10_repeated_ack_is_no_violation() {
    let mut n = up();
    n.s(0).write(&pattern(10)).unwrap();
    n.pump();
    n.inject_server(0, &ctl(&Frame::Ack { received: 8 }));
    n.inject_server(0, &ctl(&Frame::Ack { received: 8 }));
    n.pump();
    assert_eq!(n.s(0).error(), None);
    assert_eq!(n.s(0).state(), SessionState::Established);
    assert_eq!(n.s(0).retained(), 2);
}

#[test]
fn r10_ack_after_quarter_of_peer_retain_capacity() {
    let mut c = Config::default();
    c.send_buffer_capacity = 4000;
    let mut n = up_with(c, Config::default());
    let mark = n.slog(0).len();
    n.c(0).write(&pattern(999)).unwrap();
    n.pump();
    assert_eq!(n.s(0).received(), 999);
    assert_eq!(count_frames(&n.slog(0)[mark..], |_| true), 0, "no ACK yet");
    n.c(0).write(&pattern(1)).unwrap();
    n.pump();
    assert_eq!(
        frames(&n.slog(0)[mark..]),
        vec![Frame::Ack { received: 1000 }]
    );
    assert_eq!(n.c(0).retained(), 0, "the ACK released the client's bytes");
    n.c(0).write(&pattern(1000)).unwrap();
    n.pump();
    assert_eq!(
        frames(&n.slog(0)[mark..]),
        vec![Frame::Ack { received: 1000 }, Frame::Ack { received: 2000 }]
    );
}

#[test]
fn r10_ack_on_heartbeat_tick_and_on_fin() {
    let mut n = up();
    let mark = n.slog(0).len();
    n.c(0).write(&pattern(10)).unwrap();
    n.pump();
    assert!(frames(&n.slog(0)[mark..]).is_empty());
    n.run_until(n.at(secs(1)));
    assert_eq!(
        frames(&n.slog(0)[mark..]),
        vec![Frame::Ack { received: 10 }],
        "the tick's ACK stands for the heartbeat"
    );
    assert_eq!(n.c(0).retained(), 0);
    // On FIN.
    let mark = n.slog(0).len();
    n.c(0).write(&pattern(7)).unwrap();
    n.c(0).shutdown();
    n.pump();
    assert_eq!(
        frames(&n.slog(0)[mark..]),
        vec![Frame::Ack { received: 17 }]
    );
    assert!(events(n.slog(0)).contains(&Event::PeerFinished));
}

#[test]
fn r10_a_peer_that_does_not_want_acks_gets_only_the_fin_ack() {
    let mut n = implicit_net();
    n.c(0).write(&pattern(5000)).unwrap();
    n.run_until(n.at(secs(2)));
    assert_eq!(n.s(0).received(), 5000);
    assert_eq!(
        count_frames(n.slog(0), |f| matches!(f, Frame::Ack { .. })),
        0,
        "no acknowledgments while data flows"
    );
    assert!(!n.c(0).is_fin_acked());
    n.c(0).shutdown();
    n.run_until(n.at(secs(4)));
    assert_eq!(
        frames(n.slog(0))
            .into_iter()
            .filter(|f| matches!(f, Frame::Ack { .. }))
            .collect::<Vec<_>>(),
        vec![Frame::Ack { received: 5000 }],
        "the FIN is acknowledged whatever the policy"
    );
    assert!(
        n.c(0).is_fin_acked(),
        "the sender knows the peer has every byte"
    );
    assert!(count_frames(n.slog(0), |f| *f == Frame::Heartbeat) >= 2);
}

/// The client writes until its buffer is full, pumping after each write.
fn write_until_blocked(n: &mut Net, data: &[u8], sent: &mut usize) {
    while *sent < data.len() {
        match n.c(0).write(&data[*sent..]) {
            Ok(k) => *sent += k,
            Err(WriteError::Blocked) => break,
            Err(e) => panic!("write failed: {e:?}"),
        }
        n.pump();
    }
}

/// R10: acknowledgments are a window, not receipts. With its application
/// not reading, the server acknowledges `recv_buffer_capacity` bytes only,
/// so the client can send no more than that plus its own buffer; the server
/// keeps reading its transport (only control frames can follow), and each
/// read moves the window and makes an ACK due at once.
#[test]
fn r10_acknowledgments_are_a_window_not_receipts() {
    let mut c = Config::default();
    c.send_buffer_capacity = 4000;
    let mut s = Config::default();
    s.recv_buffer_capacity = 1000;
    let mut n = up_with(c, s);
    let mark = n.slog(0).len();
    let data = pattern(20_000);
    let mut sent = 0;
    write_until_blocked(&mut n, &data, &mut sent);
    assert_eq!(sent, 5000, "the 1000 acknowledged plus a full buffer");
    assert_eq!(n.s(0).received(), 5000);
    assert_eq!(
        frames(&n.slog(0)[mark..]),
        vec![Frame::Ack { received: 1000 }],
        "only the window is acknowledged"
    );
    assert_eq!(n.c(0).retained(), 4000);
    assert!(
        n.s(0).wants_input(),
        "the client may send nothing more: reading stays on"
    );
    let mut buf = [0u8; 2500];
    assert_eq!(n.s(0).read(&mut buf).unwrap(), 2500);
    assert!(n.s(0).ack_pending(), "the read opened the window");
    n.pump();
    assert_eq!(
        frames(&n.slog(0)[mark..]).last(),
        Some(&Frame::Ack { received: 3500 })
    );
    let mut got = buf.to_vec();
    while sent < data.len() || got.len() < data.len() {
        write_until_blocked(&mut n, &data, &mut sent);
        got.extend(read_all(n.s(0)));
        n.pump();
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "every byte, once, in order");
}

/// R10: DATA beyond the acknowledged count plus the peer's announced send
/// buffer is a violation, detected from the header (a peer that releases on
/// acknowledgments cannot have more unacknowledged).
#[test]
fn r10_data_beyond_the_window_is_a_violation() {
    let mut c = Config::default();
    c.send_buffer_capacity = 1000;
    let mut n = up_with(c, Config::default());
    assert_server_rejects(
        &mut n,
        &data_frame(0, &pattern(1001)),
        Violation::BeyondWindow {
            end: 1001,
            allowed: 1000,
        },
    );
}

/// R15: bytes the application already read are never given back, even
/// when the acknowledged count lags them (a peer send buffer larger than
/// the receive window plus `max_peer_send_buffer` is acknowledged late).
#[test]
fn r15_resume_never_gives_back_bytes_already_read() {
    let mut c = Config::default();
    c.send_buffer_capacity = 4000;
    let mut s = Config::default();
    s.recv_buffer_capacity = 1000;
    s.max_peer_send_buffer = 0;
    let mut n = up_with(c, s);
    let data = pattern(20_000);
    let mut sent = 0;
    write_until_blocked(&mut n, &data, &mut sent);
    let mut buf = [0u8; 2000];
    assert_eq!(n.s(0).read(&mut buf).unwrap(), 2000);
    n.pump();
    n.kill(0);
    n.run_until(n.at(secs(2)));
    assert_eq!(n.c(0).state(), SessionState::Established);
    let mut got = buf.to_vec();
    while sent < data.len() || got.len() < data.len() {
        write_until_blocked(&mut n, &data, &mut sent);
        got.extend(read_all(n.s(0)));
        n.pump();
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "nothing duplicated across the resume");
}

/// R15: a resume states the received count after giving back the bytes
/// beyond the window that were never acknowledged; the client, which still
/// retains them, sends them again, and the stream arrives exact.
#[test]
fn r15_resume_gives_back_unacknowledged_bytes_beyond_the_window() {
    let mut c = Config::default();
    c.send_buffer_capacity = 4000;
    let mut s = Config::default();
    s.recv_buffer_capacity = 1000;
    let mut n = up_with(c, s);
    let data = pattern(20_000);
    let mut sent = 0;
    write_until_blocked(&mut n, &data, &mut sent);
    assert_eq!((sent, n.s(0).received()), (5000, 5000));
    let (cmark, smark) = (n.clog(0).len(), n.slog(0).len());
    n.kill(0);
    n.run_until(n.at(secs(2)));
    assert_eq!(n.c(0).state(), SessionState::Established);
    let clog = n.clog(0)[cmark..].to_vec();
    assert!(
        replies(&n.slog(0)[smark..])
            .iter()
            .any(|r| matches!(r, ServerReply::Resumed { received: 1000, .. })),
        "the server states its window, not the 5000 it had"
    );
    assert!(events(&clog).contains(&Event::Retransmit {
        from: 1000,
        to: 5000
    }));
    let mut got = Vec::new();
    while sent < data.len() || got.len() < data.len() {
        write_until_blocked(&mut n, &data, &mut sent);
        got.extend(read_all(n.s(0)));
        n.pump();
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "nothing lost or duplicated across the resume");
}

#[test]
fn r11_fin_at_wrong_offset_is_violation() {
    let mut n = up();
    n.c(0).write(b"hello").unwrap();
    n.pump();
    assert_server_rejects(
        &mut n,
        &ctl(&Frame::Fin {
            offset: 3,
            close: false,
        }),
        Violation::FinOffset {
            fin: 3,
            received: 5,
        },
    );
}

#[test]
fn r11_data_after_fin_is_violation() {
    let mut n = up();
    n.c(0).write(b"hello").unwrap();
    n.c(0).shutdown();
    n.pump();
    assert!(events(n.slog(0)).contains(&Event::PeerFinished));
    assert_server_rejects(
        &mut n,
        &data_frame(5, b"x"),
        Violation::FinOffset {
            fin: 5,
            received: 5,
        },
    );
}

#[test]
fn r11_duplicate_fin_at_same_offset_is_fine() {
    let mut n = up();
    n.c(0).write(b"hello").unwrap();
    n.c(0).shutdown();
    n.pump();
    let fin = ctl(&Frame::Fin {
        offset: 5,
        close: false,
    });
    n.inject_server(0, &fin);
    n.inject_server(0, &fin);
    assert!(n.s(0).error().is_none());
    assert_eq!(n.s(0).state(), SessionState::Established);
    let finished = events(n.slog(0))
        .iter()
        .filter(|e| **e == Event::PeerFinished)
        .count();
    assert_eq!(finished, 1);
    // A FIN at another offset after it still is a violation.
    assert_server_rejects(
        &mut n,
        &ctl(&Frame::Fin {
            offset: 6,
            close: false,
        }),
        Violation::FinOffset {
            fin: 6,
            received: 5,
        },
    );
}

#[test]
fn r11_close_bit_makes_peer_writes_fail_and_peer_fin_follow() {
    let mut n = up();
    n.s(0).write(b"abc").unwrap(); // accepted before the client's FIN arrives
    let mark = n.slog(0).len();
    n.s2c = cut; // keep the server's answer from completing the close
    n.c(0).close();
    n.pump();
    assert_eq!(
        frames(n.clog(0)),
        vec![Frame::Fin {
            offset: 0,
            close: true
        }]
    );
    assert_eq!(
        n.s(0).write(b"more"),
        Err(WriteError::Session(SessionError::ClosedByPeer {
            undelivered: 0
        }))
    );
    assert_eq!(
        n.s(0).send(&mut Bytes::from_static(b"more")),
        Err(WriteError::Session(SessionError::ClosedByPeer {
            undelivered: 0
        }))
    );
    assert_eq!(
        frames(&n.slog(0)[mark..]),
        vec![
            Frame::Data {
                offset: 0,
                payload: Bytes::from_static(b"abc")
            },
            Frame::Fin {
                offset: 3,
                close: false
            },
        ]
    );
    assert!(events(&n.slog(0)[mark..]).contains(&Event::PeerFinished));
    assert_eq!(n.s(0).read(&mut [0u8; 8]), Ok(0), "end of stream");
    assert_eq!(n.s(0).state(), SessionState::Established);
}

#[test]
fn r12_full_close_sequence_ends_both_ok() {
    let mut n = up();
    n.c(0).write(b"ping").unwrap();
    n.s(0).write(b"pong").unwrap();
    n.pump();
    let (ct, st) = (n.c(0).transport().unwrap(), n.server_t(0));
    n.c(0).close();
    n.pump();
    let (clog, slog) = (n.clog(0).clone(), n.slog(0).clone());
    let cf: Vec<Frame> = frames(&clog)
        .into_iter()
        .filter(|f| matches!(f, Frame::Fin { .. } | Frame::Close))
        .collect();
    let sf: Vec<Frame> = frames(&slog)
        .into_iter()
        .filter(|f| matches!(f, Frame::Fin { .. } | Frame::Close))
        .collect();
    assert_eq!(
        cf,
        vec![
            Frame::Fin {
                offset: 4,
                close: true
            },
            Frame::Close
        ]
    );
    assert_eq!(
        sf,
        vec![
            Frame::Fin {
                offset: 4,
                close: false
            },
            Frame::Close
        ]
    );
    assert!(aborts(&clog).is_empty() && aborts(&slog).is_empty());
    assert_closed_ok(n.c(0), &clog);
    assert_closed_ok(n.s(0), &slog);
    assert!(drops(&clog).contains(&ct));
    assert!(drops(&slog).contains(&st));
    assert_eq!(read_all(n.s(0)), b"ping");
    assert_eq!(read_all(n.c(0)), b"pong");
    assert_eq!(n.set.counts().closed, 1, "a tombstone answers late resumes");
    assert_eq!(
        n.c(0).write(b"x"),
        Err(WriteError::Session(SessionError::Closed))
    );
}

#[test]
fn r12_close_before_fin_is_violation() {
    let mut n = up();
    assert_server_rejects(&mut n, &ctl(&Frame::Close), Violation::CloseBeforeFin);
}

#[test]
fn r12_close_before_server_sent_its_fin_is_violation() {
    let mut n = up();
    let mut b = ctl(&Frame::Fin {
        offset: 0,
        close: false,
    });
    b.extend_from_slice(&ctl(&Frame::Close));
    assert_server_rejects(&mut n, &b, Violation::CloseBeforeFin);
}

#[test]
fn r12_client_rejects_close_it_did_not_send_first() {
    let mut n = up();
    assert_client_rejects(&mut n, &ctl(&Frame::Close), Violation::CloseBeforeFin);
    // With the server's FIN but without its own CLOSE sent.
    let mut n = up();
    let mut b = ctl(&Frame::Fin {
        offset: 0,
        close: false,
    });
    b.extend_from_slice(&ctl(&Frame::Close));
    assert_client_rejects(&mut n, &b, Violation::CloseBeforeFin);
}

#[test]
fn r12_fin_resent_after_retransmitted_data_on_resume() {
    let mut n = up();
    n.c2s = cut;
    n.c(0).write(b"abc").unwrap();
    n.c(0).close();
    n.pump();
    n.c2s = pass;
    let mark = n.clog(0).len();
    n.kill(0);
    let clog = n.clog(0)[mark..].to_vec();
    assert_eq!(
        frames(&clog),
        vec![
            Frame::Data {
                offset: 0,
                payload: Bytes::from_static(b"abc")
            },
            Frame::Fin {
                offset: 3,
                close: true
            },
            Frame::Close,
        ]
    );
    assert_closed_ok(n.c(0), &clog);
    let slog = n.slog(0).clone();
    assert_closed_ok(n.s(0), &slog);
    assert_eq!(read_all(n.s(0)), b"abc");
}

#[test]
fn r12_lost_client_close_is_resent_after_resume() {
    let mut n = up();
    n.c2s = |b: &[u8]| b != [0x05u8].as_slice();
    n.c(0).close();
    n.pump();
    assert_eq!(count_frames(n.clog(0), |f| *f == Frame::Close), 1);
    assert_eq!(n.s(0).state(), SessionState::Established, "CLOSE lost");
    n.c2s = pass;
    let mark = n.clog(0).len();
    n.kill(0);
    let clog = n.clog(0)[mark..].to_vec();
    assert_eq!(
        frames(&clog),
        vec![
            Frame::Fin {
                offset: 0,
                close: true
            },
            Frame::Close
        ]
    );
    assert_closed_ok(n.c(0), &clog);
    let slog = n.slog(0).clone();
    assert_closed_ok(n.s(0), &slog);
}

#[test]
fn r13_abort_ends_both_sides_at_once_with_code() {
    let mut n = up();
    n.c(0).write(b"unsent?").unwrap();
    let (ct, st) = (n.c(0).transport().unwrap(), n.server_t(0));
    n.c(0).abort(0x1234);
    n.pump();
    let clog = n.clog(0).clone();
    assert_eq!(aborts(&clog), vec![Code::Application(0x1234)]);
    assert_eq!(count_frames(&clog, |f| matches!(f, Frame::Data { .. })), 0);
    let mine = SessionError::Aborted {
        code: Code::Application(0x1234),
        by_peer: false,
    };
    assert_failed(n.c(0), &clog, &mine, Some(ct));
    let slog = n.slog(0).clone();
    let theirs = SessionError::Aborted {
        code: Code::Application(0x1234),
        by_peer: true,
    };
    assert_failed(n.s(0), &slog, &theirs, Some(st));
    assert!(aborts(&slog).is_empty());
    // 2.4.1: a late resume learns the code.
    let late = n.resume_msg(0, 9, 0, 0);
    assert_eq!(
        decode_reply(&n.raw_connect(&late).unwrap()),
        ended(Code::Application(0x1234), 0)
    );
}

#[test]
fn r13_application_codes_below_range_are_raised() {
    let mut n = up();
    n.s(0).abort(5);
    n.pump();
    let slog = n.slog(0).clone();
    assert_eq!(aborts(&slog), vec![Code::Application(0x1000)]);
    let clog = n.clog(0).clone();
    let theirs = SessionError::Aborted {
        code: Code::Application(0x1000),
        by_peer: true,
    };
    assert_failed(n.c(0), &clog, &theirs, None);
}

// ---------------------------------------------------------------------------
// 3.1 Codes
// ---------------------------------------------------------------------------

#[test]
fn code_2_unsupported_version_hello_gets_reject_with_server_version() {
    let mut hello = encode_hello(&ClientHello::Fresh(Params::default()));
    hello[4] = 2;
    let mut r = HandshakeReader::new(Instant::now(), &Config::default());
    match r.feed(&hello) {
        HandshakeStep::Reject {
            reply: Some(reply),
            error,
        } => {
            assert_eq!(error, DecodeError::UnsupportedVersion(2));
            assert_eq!(
                decode_reply(&reply),
                ServerReply::Reject {
                    code: Code::UnsupportedVersion,
                    detail: 1
                }
            );
        }
        s => panic!("{s:?}"),
    }
}

#[test]
fn code_2_client_ends_with_unsupported_version_even_from_another_version() {
    let mut n = handshaking();
    let ct = n.c(0).transport().unwrap();
    // A version-2 server's REJECT keeps the layout; only the version byte differs.
    let mut rej = reject_bytes(Code::UnsupportedVersion, 2);
    rej[4] = 2;
    n.inject_client(0, &rej);
    let log = n.clog(0).clone();
    let err = SessionError::UnsupportedVersion { server: 2 };
    assert_failed(n.c(0), &log, &err, Some(ct));
}

#[test]
fn code_3_busy_at_max_sessions_client_backs_off_then_unreachable() {
    let mut s = Config::default();
    s.max_sessions = 1;
    let mut n = up_with(Config::default(), s);
    let b = n.add_client(Config::default(), TransportInfo::default());
    n.pump();
    assert_eq!(
        decode_reply(n.set_replies.last().unwrap()),
        ServerReply::Reject {
            code: Code::Busy,
            detail: 0
        }
    );
    assert_eq!(
        n.c(b).state(),
        SessionState::Backoff,
        "BUSY is a failed attempt"
    );
    n.run_until(n.at(secs(31)));
    let log = n.clog(b).clone();
    let times: Vec<Duration> = connects(&log).into_iter().map(|(at, _)| at).collect();
    assert_eq!(times[0], Duration::ZERO, "first attempt immediate");
    assert!(times.len() > 5, "{times:?}");
    for k in 1..times.len() {
        let base = (ms(50) * (1u32 << (k - 1).min(20))).min(secs(2));
        let gap = times[k] - times[k - 1];
        assert!(
            gap >= base / 2 && gap < base,
            "attempt {k}: gap {gap:?}, base {base:?}"
        );
    }
    assert_eq!(
        n.set_replies.len(),
        times.len(),
        "every attempt was answered BUSY"
    );
    assert!(n.set_replies.iter().all(|r| decode_reply(r)
        == ServerReply::Reject {
            code: Code::Busy,
            detail: 0
        }));
    assert_eq!(drops(&log).len(), times.len());
    // A new session that never got through ends Unreachable after connect_timeout (section 5).
    assert_failed(n.c(b), &log, &SessionError::Unreachable, None);
    assert_eq!(finished_at(&log), Config::default().connect_timeout);
    // The admitted session never noticed.
    assert_eq!(n.c(0).state(), SessionState::Established);
}

#[test]
fn code_4_malformed_hello_gets_malformed() {
    let mut unknown_type = encode_hello(&ClientHello::Fresh(Params::default()));
    unknown_type[5] = 0x12;
    let mut server_type = encode_hello(&ClientHello::Fresh(Params::default()));
    server_type[5] = 0x20;
    let mut reserved = encode_hello(&ClientHello::Fresh(Params::default()));
    reserved[6] = 0x02;
    for (bytes, error) in [
        (unknown_type, DecodeError::UnexpectedMessage(0x12)),
        (server_type, DecodeError::UnexpectedMessage(0x20)),
        (reserved, DecodeError::ReservedFlags(0x02)),
    ] {
        let mut r = HandshakeReader::new(Instant::now(), &Config::default());
        match r.feed(&bytes) {
            HandshakeStep::Reject {
                reply: Some(reply),
                error: e,
            } => {
                assert_eq!(e, error);
                assert!(matches!(
                    decode_reply(&reply),
                    ServerReply::Reject {
                        code: Code::Malformed,
                        ..
                    }
                ));
            }
            s => panic!("{s:?}"),
        }
    }
}

#[test]
fn code_4_client_rejected_as_malformed_ends_with_protocol_violation() {
    let mut n = handshaking();
    let ct = n.c(0).transport().unwrap();
    n.inject_client(0, &reject_bytes(Code::Malformed, 1));
    let log = n.clog(0).clone();
    assert_failed(
        n.c(0),
        &log,
        &Violation::RejectedAsMalformed.into(),
        Some(ct),
    );
}

#[test]
fn code_5_session_closed_after_lost_last_close_ends_client_ok() {
    let mut n = up();
    n.c(0).write(b"bye").unwrap();
    n.s2c = |b: &[u8]| b != [0x05u8].as_slice(); // the server's CLOSE is lost
    n.c(0).close();
    n.pump();
    let slog = n.slog(0).clone();
    assert_closed_ok(n.s(0), &slog);
    assert_eq!(count_frames(n.clog(0), |f| *f == Frame::Close), 1);
    // The client resumed and was told how the session ended.
    assert_eq!(n.c(0).stats().connect_attempts, 2);
    assert_eq!(
        decode_reply(n.set_replies.last().unwrap()),
        ended(Code::SessionClosed, 0)
    );
    let clog = n.clog(0).clone();
    assert_closed_ok(n.c(0), &clog);
    assert_eq!(n.c(0).transport(), None);
    assert_eq!(drops(&clog).len(), 2, "both transports dropped");
    assert_eq!(n.c(0).retained(), 0);
    assert_eq!(read_all(n.s(0)), b"bye");
}

#[test]
fn code_5_session_closed_without_own_close_is_violation() {
    let mut n = up();
    let attempt = resuming(&mut n);
    let ct = n.c(0).transport().unwrap();
    let bytes = ended_bytes(&n, attempt, Code::SessionClosed, 0);
    n.inject_client(0, &bytes);
    let log = n.clog(0).clone();
    assert_failed(
        n.c(0),
        &log,
        &Violation::UnexpectedSessionClosed.into(),
        Some(ct),
    );
}

#[test]
fn code_6_data_lost_ended_ends_client_with_data_lost() {
    let mut n = up();
    let attempt = resuming(&mut n);
    let ct = n.c(0).transport().unwrap();
    let mark = n.clog(0).len();
    let bytes = ended_bytes(&n, attempt, Code::DataLost, 80);
    n.inject_client(0, &bytes);
    let log = n.clog(0)[mark..].to_vec();
    // Bit 63 clear: the server's stream broke; the detail is what it retains.
    let err = SessionError::DataLost {
        needed: 0,
        retained_from: 80,
    };
    assert_failed(n.c(0), &log, &err, Some(ct));
    // Bit 63 set: the client's stream broke; the detail is what the server needed.
    let mut n = up();
    let attempt = resuming(&mut n);
    let bytes = ended_bytes(&n, attempt, Code::DataLost, CLIENT_STREAM | 5);
    n.inject_client(0, &bytes);
    assert_eq!(
        n.c(0).error(),
        Some(&SessionError::DataLost {
            needed: 5,
            retained_from: 0
        })
    );
}

#[test]
fn code_6_data_lost_abort_ends_peer_with_data_lost() {
    let mut n = up();
    assert_eq!(n.c(0).state(), SessionState::Established);
    let st = n.server_t(0);
    let mark = n.slog(0).len();
    n.inject_server(
        0,
        &ctl(&Frame::Abort {
            code: Code::DataLost,
        }),
    );
    let log = n.slog(0)[mark..].to_vec();
    assert!(matches!(
        outcome(&log),
        Some(Err(SessionError::DataLost { .. }))
    ));
    assert!(drops(&log).contains(&st));
    assert!(aborts(&log).is_empty());
}

#[test]
fn code_7_protocol_violation_reaches_peer_and_late_resume() {
    let mut n = up();
    assert_server_rejects(
        &mut n,
        &[0x42],
        Violation::Decode(DecodeError::UnknownFrameType(0x42)),
    );
    let late = n.resume_msg(0, 9, 0, 0);
    assert_eq!(
        decode_reply(&n.raw_connect(&late).unwrap()),
        ended(Code::ProtocolViolation, 0)
    );
    // A resuming client told PROTOCOL_VIOLATION ends with ReportedByPeer.
    let mut n = up();
    let attempt = resuming(&mut n);
    let bytes = ended_bytes(&n, attempt, Code::ProtocolViolation, 0);
    n.inject_client(0, &bytes);
    assert_eq!(
        n.c(0).error(),
        Some(&SessionError::ProtocolViolation(Violation::ReportedByPeer))
    );
}

#[test]
fn code_8_expired_parked_session_answers_late_resume_with_expired() {
    let mut c = Config::default();
    c.max_reconnect_time = secs(60); // the client outlives the server's limit
    let mut n = up_with(c, Config::default());
    n.accept = false;
    n.kill(0);
    assert_eq!(n.s(0).state(), SessionState::Parked);
    assert_eq!(n.set.counts().parked, 1);
    n.run_until(n.at(secs(31)));
    let slog = n.slog(0).clone();
    assert_failed(n.s(0), &slog, &SessionError::Expired, None);
    assert_eq!(finished_at(&slog), secs(30));
    assert_eq!(n.c(0).state(), SessionState::Backoff);
    n.accept = true;
    n.run_until(n.at(secs(34)));
    assert_eq!(
        decode_reply(n.set_replies.last().unwrap()),
        ended(Code::Expired, 0)
    );
    let clog = n.clog(0).clone();
    let t = connects(&clog).last().unwrap().1;
    assert_failed(n.c(0), &clog, &SessionError::Expired, Some(t));
}

#[test]
fn code_8_client_expires_max_reconnect_time_after_loss() {
    let mut n = up();
    n.run_until(n.at(secs(5)));
    n.accept = false;
    n.kill(0);
    n.run_until(n.at(secs(35) - ms(1)));
    assert!(!n.c(0).is_finished());
    n.run_until(n.at(secs(35)));
    let log = n.clog(0).clone();
    assert_failed(n.c(0), &log, &SessionError::Expired, None);
    assert_eq!(finished_at(&log), secs(35));
}

#[test]
fn new_session_without_server_ends_unreachable_after_connect_timeout() {
    let mut n = Net::new(Config::default(), Config::default());
    n.accept = false;
    let limit = Config::default().connect_timeout;
    n.run_until(n.at(limit - ms(1)));
    assert!(!n.c(0).is_finished());
    assert!(connects(n.clog(0)).len() > 3, "it kept trying");
    n.run_until(n.at(limit));
    let log = n.clog(0).clone();
    assert_failed(n.c(0), &log, &SessionError::Unreachable, None);
    assert_eq!(finished_at(&log), limit);
}

#[test]
fn code_9_evicted_by_max_parked_answers_resume_with_evicted() {
    let mut s = Config::default();
    s.max_parked = 1;
    let mut n = up_with(Config::default(), s);
    let other = n.add_client(Config::default(), TransportInfo::default());
    n.pump();
    n.accept = false;
    n.run_until(n.at(secs(1)));
    n.kill(0);
    n.run_until(n.at(secs(2)));
    n.kill(other); // a second parked session: the oldest (0) is evicted
    let slog = n.slog(0).clone();
    assert_failed(n.s(0), &slog, &SessionError::Evicted, None);
    assert_eq!(n.s(other).state(), SessionState::Parked);
    assert_eq!(n.set.counts().evicted, 1);
    n.accept = true;
    n.run_until(n.at(secs(5)));
    let clog = n.clog(0).clone();
    assert_failed(n.c(0), &clog, &SessionError::Evicted, None);
    assert!(n
        .set_replies
        .iter()
        .any(|r| decode_reply(r) == ended(Code::Evicted, 0)));
    assert_eq!(n.c(other).state(), SessionState::Established);
    assert_eq!(n.s(other).state(), SessionState::Established);
}

#[test]
fn code_9_evicted_by_parked_bytes_budget() {
    let mut s = Config::default();
    s.parked_bytes_budget = 10;
    let mut n = up_with(Config::default(), s);
    n.s2c = cut;
    n.s(0).write(&pattern(100)).unwrap();
    n.pump();
    n.s2c = pass;
    n.accept = false;
    n.kill(0);
    let slog = n.slog(0).clone();
    assert_failed(n.s(0), &slog, &SessionError::Evicted, None);
    n.accept = true;
    n.run_until(n.at(secs(1)));
    let clog = n.clog(0).clone();
    assert_failed(n.c(0), &clog, &SessionError::Evicted, None);
    assert_eq!(
        decode_reply(n.set_replies.last().unwrap()),
        ended(Code::Evicted, 0)
    );
}

#[test]
fn code_reserved_values_end_with_aborted_other() {
    let mut n = up();
    let ct = n.c(0).transport().unwrap();
    let mark = n.clog(0).len();
    n.inject_client(
        0,
        &ctl(&Frame::Abort {
            code: Code::Other(0x42),
        }),
    );
    let log = n.clog(0)[mark..].to_vec();
    let err = SessionError::Aborted {
        code: Code::Other(0x42),
        by_peer: true,
    };
    assert_failed(n.c(0), &log, &err, Some(ct));
    // In a REJECT too; and application codes in a REJECT.
    for code in [Code::Other(0x42), Code::Application(0x2000)] {
        let mut n = handshaking();
        n.inject_client(0, &reject_bytes(code, 0));
        assert_eq!(
            n.c(0).error(),
            Some(&SessionError::Aborted {
                code,
                by_peer: true
            })
        );
    }
}

#[test]
fn tombstone_answers_until_max_reconnect_time_then_unknown_session() {
    let mut n = up();
    n.c(0).close();
    n.pump();
    assert!(n.s(0).is_finished());
    n.run_until(n.at(secs(29)));
    let msg = n.resume_msg(0, 10, 0, 0);
    assert_eq!(
        decode_reply(&n.raw_connect(&msg).unwrap()),
        ended(Code::SessionClosed, 0)
    );
    n.run_until(n.at(secs(30)));
    let msg = n.resume_msg(0, 11, 0, 0);
    assert_eq!(
        decode_reply(&n.raw_connect(&msg).unwrap()),
        ServerReply::Reject {
            code: Code::UnknownSession,
            detail: 0
        }
    );
    assert_eq!(n.set.counts().closed, 0);
}

#[test]
fn tombstones_are_bounded_by_max_parked() {
    let mut s = Config::default();
    s.max_parked = 1;
    let mut n = up_with(Config::default(), s);
    let other = n.add_client(Config::default(), TransportInfo::default());
    n.pump();
    n.c(0).abort(0x1001);
    n.pump();
    n.run_until(n.at(secs(1)));
    n.c(other).abort(0x1002);
    n.pump();
    assert_eq!(n.set.counts().closed, 1);
    let first = n.resume_msg(0, 10, 0, 0);
    let second = n.resume_msg(other, 10, 0, 0);
    assert_eq!(
        decode_reply(&n.raw_connect(&first).unwrap()),
        ServerReply::Reject {
            code: Code::UnknownSession,
            detail: 0
        }
    );
    assert_eq!(
        decode_reply(&n.raw_connect(&second).unwrap()),
        ended(Code::Application(0x1002), 0)
    );
}

// ---------------------------------------------------------------------------
// 5. Liveness: R14, stale transports
// ---------------------------------------------------------------------------

#[test]
fn r14_heartbeat_after_interval_idle() {
    let mut n = up();
    let (cmark, smark) = (n.clog(0).len(), n.slog(0).len());
    n.run_until(n.at(secs(1) - ms(1)));
    assert!(frames(&n.clog(0)[cmark..]).is_empty());
    assert!(frames(&n.slog(0)[smark..]).is_empty());
    n.run_until(n.at(secs(1)));
    assert_eq!(frames(&n.clog(0)[cmark..]), vec![Frame::Heartbeat]);
    assert_eq!(frames(&n.slog(0)[smark..]), vec![Frame::Heartbeat]);
    // Data resets the interval.
    n.run_until(n.at(ms(1500)));
    n.c(0).write(b"x").unwrap();
    let cmark = n.clog(0).len();
    n.run_until(n.at(ms(2499)));
    assert_eq!(
        count_frames(&n.clog(0)[cmark..], |f| *f == Frame::Heartbeat),
        0
    );
    // Heartbeats keep a quiet session alive indefinitely.
    n.run_until(n.at(secs(60)));
    assert_eq!(n.c(0).stats().transports_lost, 0);
    assert_eq!(n.s(0).stats().transports_lost, 0);
    assert!(count_frames(n.clog(0), |f| *f == Frame::Heartbeat) >= 55);
}

#[test]
fn r14_idle_transport_declared_dead() {
    let mut n = up();
    let (ct, st) = (n.c(0).transport().unwrap(), n.server_t(0));
    // The transport silently stops delivering in both directions.
    n.c2s = cut;
    n.s2c = cut;
    n.notify_loss = false;
    n.run_until(n.at(secs(10) - ms(1)));
    assert!(drops(n.clog(0)).is_empty());
    assert!(drops(n.slog(0)).is_empty());
    n.run_until(n.at(secs(10)));
    let clog = n.clog(0).clone();
    assert_eq!(drops(&clog), vec![ct]);
    assert!(events(&clog).contains(&Event::TransportLost { transport: ct }));
    assert_eq!(connects(&clog).last().unwrap(), &(secs(10), ct + 1));
    let slog = n.slog(0).clone();
    assert_eq!(drops(&slog), vec![st]);
    assert!(events(&slog).contains(&Event::Parked));
    assert_eq!(n.set.counts().parked, 1);
    let at = |log: &Log, want: &Rec| log.iter().find(|(_, r)| r == want).unwrap().0;
    assert_eq!(at(&clog, &Rec::Drop(ct)), secs(10));
    assert_eq!(at(&slog, &Rec::Drop(st)), secs(10));
}

#[test]
fn r14_full_receive_queue_does_not_judge_silence() {
    let mut s = Config::default();
    s.recv_buffer_capacity = 10;
    // No read-ahead for the client's send buffer: 20 bytes fill the queue
    // while the client may still send (R10, section 4).
    s.max_peer_send_buffer = 0;
    let mut n = up_with(Config::default(), s);
    n.c(0).write(&pattern(20)).unwrap();
    n.pump();
    assert!(!n.s(0).wants_input(), "the application is not reading");
    n.c2s = cut;
    n.s2c = cut;
    n.notify_loss = false;
    n.accept = false;
    n.run_until(n.at(secs(30)));
    assert!(
        drops(n.clog(0)).contains(&1),
        "the client (reading) did judge"
    );
    assert_eq!(n.s(0).state(), SessionState::Established);
    assert!(drops(n.slog(0)).is_empty());
    assert_eq!(read_all(n.s(0)), pattern(20));
    assert!(n.s(0).wants_input());
    n.run_until(n.at(secs(38)));
    assert_eq!(n.s(0).state(), SessionState::Established);
    n.run_until(n.at(secs(40)));
    assert_eq!(n.s(0).state(), SessionState::Parked);
}

#[test]
fn stale_bytes_from_superseded_transport_are_ignored() {
    let mut n = up();
    let (old_ct, old_st) = (n.c(0).transport().unwrap(), n.server_t(0));
    n.kill(0);
    let (ct, st) = (n.c(0).transport().unwrap(), n.server_t(0));
    assert_ne!((ct, st), (old_ct, old_st));
    let (cmark, smark) = (n.clog(0).len(), n.slog(0).len());
    let now = n.now;
    for bytes in [&[0x07u8][..], &data_frame(0, b"zz"), &ctl(&Frame::Close)] {
        n.c(0).handle_input(
            now,
            Input::Received {
                transport: old_ct,
                data: bytes,
            },
        );
        n.s(0).handle_input(
            now,
            Input::Received {
                transport: old_st,
                data: bytes,
            },
        );
    }
    n.c(0)
        .handle_input(now, Input::TransportLost { transport: old_ct });
    n.s(0)
        .handle_input(now, Input::TransportLost { transport: old_st });
    n.pump();
    assert!(n.clog(0)[cmark..].is_empty(), "{:?}", &n.clog(0)[cmark..]);
    assert!(n.slog(0)[smark..].is_empty(), "{:?}", &n.slog(0)[smark..]);
    assert_eq!(n.c(0).transport(), Some(ct));
    assert_eq!(n.s(0).transport(), Some(st));
    assert_eq!(n.s(0).received(), 0);
    // A late TransportUp for the old transport is just closed.
    n.c(0).handle_input(
        now,
        Input::TransportUp {
            transport: old_ct,
            info: TransportInfo::default(),
        },
    );
    n.pump();
    assert_eq!(&n.clog(0)[cmark..], &[(n.elapsed(), Rec::Drop(old_ct))]);
    assert_eq!(n.c(0).transport(), Some(ct));
    n.c(0).write(b"fresh").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(0)), b"fresh");
}

// ---------------------------------------------------------------------------
// 4. Retention
// ---------------------------------------------------------------------------

#[test]
fn backpressure_blocked_at_capacity_writable_after_ack() {
    let mut c = Config::default();
    c.send_buffer_capacity = 100;
    let mut n = up_with(c, Config::default());
    let mut data = Bytes::from(pattern(150));
    assert_eq!(n.c(0).send(&mut data), Ok(100));
    assert_eq!(data.len(), 50);
    assert_eq!(n.c(0).send_capacity(), 0);
    assert_eq!(n.c(0).send(&mut data), Err(WriteError::Blocked));
    assert_eq!(n.c(0).write(b"x"), Err(WriteError::Blocked));
    assert_eq!(n.c(0).retained(), 100);
    let mark = n.clog(0).len();
    n.pump();
    let log = n.clog(0)[mark..].to_vec();
    assert!(events(&log).contains(&Event::Writable), "{log:?}");
    assert_eq!(n.c(0).retained(), 0);
    assert_eq!(n.c(0).send(&mut data), Ok(50));
    n.pump();
    assert_eq!(read_all(n.s(0)), pattern(150));
}

#[test]
fn retained_never_exceeds_capacity() {
    let mut c = Config::default();
    c.send_buffer_capacity = 1000;
    c.max_frame_payload = 300;
    let mut n = up_with(c, Config::default());
    let data = pattern(20_000);
    let mut sent = 0;
    let mut got = Vec::new();
    while sent < data.len() {
        match n.c(0).write(&data[sent..]) {
            Ok(k) => sent += k,
            Err(WriteError::Blocked) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(n.c(0).retained() <= 1000);
        n.pump();
        assert!(n.c(0).retained() <= 1000);
        got.extend(read_all(n.s(0)));
    }
    n.pump();
    got.extend(read_all(n.s(0)));
    assert_eq!(got, data);
    assert!(n.c(0).stats().max_retained <= 1000);
    assert!(n.c(0).stats().max_retained > 0);
}

#[test]
fn implicit_without_buffer_sizes_is_config_error() {
    let mut c = Config::default();
    c.release_policy = ReleasePolicy::Implicit;
    // With a peer under Ack the implicit policy is not in effect (section 4,
    // mixed policies): no sizes are needed, and the session is up.
    let mut mixed = Net::new(c.clone(), Config::default());
    mixed.pump();
    assert_eq!(mixed.c(0).state(), SessionState::Established);
    assert_eq!(mixed.c(0).effective_release_policy(), ReleasePolicy::Ack);
    // Both implicit, over transports whose sizes nobody knows: refused.
    let mut n = Net::new(c.clone(), c.clone());
    n.pump();
    let log = n.clog(0).clone();
    assert!(matches!(outcome(&log), Some(Err(SessionError::Config(_)))));
    assert!(matches!(n.c(0).error(), Some(SessionError::Config(_))));
    assert!(!drops(&log).is_empty());
    // Only the client's receive buffer unknown: the server, which needs it,
    // refuses, and the client learns why with a defined code (3.1:
    // INCOMPATIBLE).
    let client_info = TransportInfo {
        send_buffer: Some(65536),
        recv_buffer: None,
    };
    let server_info = TransportInfo {
        send_buffer: Some(65536),
        recv_buffer: Some(65536),
    };
    let mut n = Net::with_info(c.clone(), client_info, c, server_info);
    n.pump();
    assert!(matches!(n.s(0).error(), Some(SessionError::Config(_))));
    assert_eq!(aborts(n.slog(0)), vec![Code::Incompatible]);
    assert_eq!(
        n.c(0).error(),
        Some(&SessionError::Aborted {
            code: Code::Incompatible,
            by_peer: true
        })
    );
}

// ---------------------------------------------------------------------------
// Errors as io::Error
// ---------------------------------------------------------------------------

#[test]
fn session_error_io_kinds() {
    use io::ErrorKind as K;
    let cases = [
        (SessionError::ClosedByPeer { undelivered: 3 }, K::BrokenPipe),
        (
            SessionError::Aborted {
                code: Code::Application(0x1000),
                by_peer: true,
            },
            K::ConnectionAborted,
        ),
        (SessionError::Expired, K::TimedOut),
        (SessionError::Unreachable, K::ConnectionRefused),
        (SessionError::UnknownSession, K::ConnectionRefused),
        (SessionError::Evicted, K::ConnectionRefused),
        (
            SessionError::DataLost {
                needed: 0,
                retained_from: 1,
            },
            K::ConnectionReset,
        ),
        (Violation::CloseBeforeFin.into(), K::InvalidData),
        (
            SessionError::UnsupportedVersion { server: 2 },
            K::Unsupported,
        ),
        (SessionError::Config("x"), K::InvalidInput),
        (SessionError::Closed, K::NotConnected),
    ];
    for (e, kind) in cases {
        assert_eq!(e.io_kind(), kind, "{e:?}");
        let io_err: io::Error = e.clone().into();
        assert_eq!(io_err.kind(), kind, "{e:?}");
        let inner = io_err.get_ref().unwrap().downcast_ref::<SessionError>();
        assert_eq!(inner, Some(&e), "the typed error travels inside");
        let w: io::Error = WriteError::Session(e.clone()).into();
        assert_eq!(w.kind(), kind);
        let r: io::Error = ReadError::Session(e.clone()).into();
        assert_eq!(r.kind(), kind);
    }
    assert_eq!(io::Error::from(WriteError::Blocked).kind(), K::WouldBlock);
    assert_eq!(io::Error::from(WriteError::Finished).kind(), K::BrokenPipe);
    assert_eq!(io::Error::from(ReadError::Blocked).kind(), K::WouldBlock);
}

/// A client whose application stopped reading (receive queue full) still
/// reads the server's answer on a new transport, so the resume completes.
#[test]
fn full_receive_queue_does_not_block_the_resume_handshake() {
    // Under Ack the resume first gives back what it may not acknowledge
    // (R15), which empties this queue; from an implicit peer nothing is
    // given back, and only the handshake rule keeps the input open.
    for policy in [ReleasePolicy::Ack, ReleasePolicy::Implicit] {
        let now = Instant::now();
        let mut cfg = Config::default();
        cfg.release_policy = policy;
        cfg.recv_buffer_capacity = 16;
        // No read-ahead for the server's send buffer (R10, section 4).
        cfg.max_peer_send_buffer = 0;
        let mut server = Config::default();
        server.release_policy = policy;
        let (mut c, _s, ct, _st) = ft_session_core::sim::established_pair(now, cfg, server);
        // Fill the client's receive queue as if the server had sent 16 bytes.
        let head = FrameHead::data(0, 16);
        c.handle_input(
            now,
            Input::Received {
                transport: ct,
                data: head.as_slice(),
            },
        );
        c.handle_input(
            now,
            Input::Received {
                transport: ct,
                data: &[7u8; 16],
            },
        );
        assert!(!c.wants_input(), "{policy:?}");
        c.handle_input(now, Input::TransportLost { transport: ct });
        let mut next = None;
        while let Some(o) = c.poll_output() {
            if let Output::Connect { transport } = o {
                next = Some(transport);
            }
        }
        let t = next.unwrap();
        let info = TransportInfo {
            send_buffer: Some(65536),
            recv_buffer: Some(65536),
        };
        c.handle_input(now, Input::TransportUp { transport: t, info });
        assert_eq!(c.state(), SessionState::Handshaking);
        assert_eq!(
            c.readable(),
            if policy == ReleasePolicy::Ack { 0 } else { 16 }
        );
        assert!(
            c.wants_input(),
            "{policy:?}: the handshake answer must be read"
        );
    }
}

// ---------------------------------------------------------------------------
// Holes closed after review (issue 10, section 2): each test failed before
// its fix.
// ---------------------------------------------------------------------------

/// A stranger's transport: a fresh HELLO of 23 bytes, admitted, then the
/// transport drops at once without a byte more (its session parks).
fn stranger_hello_then_drop(n: &mut Net) -> SessionId {
    n.next_server_t += 1;
    let st = n.next_server_t;
    let now = n.now;
    let hello = encode_hello(&ClientHello::Fresh(Params::default()));
    assert_eq!(hello.len(), 23);
    let mut reader = HandshakeReader::new(now, n.set.config());
    let HandshakeStep::Hello { hello, .. } = reader.feed(&hello) else {
        panic!("a HELLO is read whole");
    };
    let info = n.server_info;
    let Admission::Fresh(mut s) = n.set.admit(now, st, info, hello, &mut n.entropy) else {
        panic!("a fresh HELLO below max_sessions is admitted");
    };
    let id = s.session_id().unwrap();
    s.handle_input(now, Input::TransportLost { transport: st });
    n.servers.insert(
        id,
        Server {
            s: *s,
            log: Vec::new(),
        },
    );
    n.pump();
    id
}

#[test]
fn hole_1_strangers_hellos_never_evict_a_proven_parked_session() {
    let mut n = up();
    n.c(0).write(b"proven").unwrap();
    n.s(0).write(b"both ways").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(0)), b"proven");
    assert_eq!(read_all(n.c(0)), b"both ways");
    n.accept = false;
    n.kill(0);
    assert_eq!(n.s(0).state(), SessionState::Parked);
    // Later, as many strangers as max_parked (1,000), each gone at once.
    n.run_until(n.at(ms(10)));
    for _ in 0..Config::default().max_parked {
        stranger_hello_then_drop(&mut n);
    }
    assert_eq!(
        n.s(0).state(),
        SessionState::Parked,
        "the proven session is still parked"
    );
    n.run_until(n.at(ms(200)));
    n.accept = true;
    n.run_until(n.at(secs(3)));
    assert_eq!(
        n.c(0).state(),
        SessionState::Established,
        "{:?}",
        n.c(0).error()
    );
    assert_eq!(n.s(0).state(), SessionState::Established);
    assert!(n.set.counts().evicted > 0, "strangers displaced strangers");
    n.c(0).write(b" again").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(0)), b" again");
}

#[test]
fn hole_2_parked_bytes_budget_holds_while_parked_sessions_are_written() {
    const MIB: usize = 1 << 20;
    let mut s = Config::default();
    s.parked_bytes_budget = MIB as u64;
    let mut n = up_with(Config::default(), s);
    for _ in 1..12 {
        n.add_client(Config::default(), TransportInfo::default());
    }
    n.pump();
    n.accept = false;
    for i in 0..12 {
        n.kill(i);
        assert_eq!(n.s(i).state(), SessionState::Parked);
    }
    // The application keeps writing to its parked sessions.
    for i in 0..12 {
        let _ = n.s(i).write(&pattern(MIB));
    }
    n.pump();
    let real: u64 = n
        .servers
        .values()
        .filter(|s| s.s.state() == SessionState::Parked)
        .map(|s| s.s.retained())
        .sum();
    assert!(
        real <= MIB as u64,
        "parked sessions retain {real} bytes, the set believes {}",
        n.set.counts().parked_bytes
    );
    assert_eq!(n.set.counts().parked_bytes, real);
    // Back from parking, a blocked writer is told it may write again.
    n.accept = true;
    let mark = n.slog(0).len();
    n.run_until(n.at(secs(3)));
    assert_eq!(n.s(0).state(), SessionState::Established);
    assert!(events(&n.slog(0)[mark..]).contains(&Event::Writable));
    n.s(0).write(b"after").unwrap();
    n.pump();
    let got = read_all(n.c(0));
    assert!(got.ends_with(b"after"), "{} bytes", got.len());
}

/// A client transport announcing a 64 MiB receive buffer (at
/// `implicit_max_buffer`): the largest implicit bound a peer can ask for.
const BIG_RECV_CLIENT: TransportInfo = TransportInfo {
    send_buffer: Some(512 * 1024),
    recv_buffer: Some(64 << 20),
};

/// The server transport of the implicit budget tests.
const PLAIN_SERVER: TransportInfo = TransportInfo {
    send_buffer: Some(512 * 1024),
    recv_buffer: Some(512 * 1024),
};

/// True if the connection set answered any handshake with REJECT BUSY.
fn any_busy(n: &Net) -> bool {
    n.set_replies.iter().any(|r| {
        matches!(
            decode_reply(r),
            ServerReply::Reject {
                code: Code::Busy,
                ..
            }
        )
    })
}

#[test]
fn hole_3_implicit_retention_is_bounded_set_wide_whatever_peers_announce() {
    const MIB: u64 = 1 << 20;
    let implicit = || {
        let mut c = Config::default();
        c.release_policy = ReleasePolicy::Implicit;
        c
    };
    // Every client announces a 64 MiB receive buffer (at implicit_max_buffer).
    let (client_info, server_info) = (BIG_RECV_CLIENT, PLAIN_SERVER);
    let mut n = Net::with_info(implicit(), client_info, implicit(), server_info);
    for _ in 1..80 {
        n.add_client(implicit(), client_info);
    }
    n.pump();
    // What each may retain beyond its own send buffer: its implicit bound b.
    let cap = Config::default().send_buffer_capacity as u64;
    let reserved: u64 = n
        .servers
        .values()
        .map(|s| s.s.retain_capacity() - cap)
        .sum();
    // The set-wide default budget: 4 GiB for every implicit session together.
    assert!(
        reserved <= 4 << 30,
        "{} server sessions may retain {reserved} bytes together",
        n.servers.len()
    );
    assert_eq!(n.set.counts().implicit_reserved, reserved);
    let one = n.s(0).retain_capacity() - cap;
    assert!(one > 64 * MIB, "each peer still gets its bound: {one}");
    // Those refused were told BUSY and keep trying (a fresh session's
    // connect_timeout then ends them).
    assert!(any_busy(&n));
}

/// Mixed policies (section 4): a server under Implicit serving Ack clients
/// releases on their ACKs, so it reserves none of the implicit retention
/// budget for them, whatever receive buffers they announce, and refuses
/// none of them for it.
#[test]
fn an_implicit_server_reserves_nothing_for_ack_clients() {
    const MIB: u64 = 1 << 20;
    let mut implicit = Config::default();
    implicit.release_policy = ReleasePolicy::Implicit;
    implicit.implicit_retention_budget = 64 * MIB;
    let (client_info, server_info) = (BIG_RECV_CLIENT, PLAIN_SERVER);
    let mut n = Net::with_info(Config::default(), client_info, implicit, server_info);
    for _ in 1..20 {
        n.add_client(Config::default(), client_info);
    }
    n.pump();
    assert_eq!(n.servers.len(), 20, "every Ack client was admitted");
    assert_eq!(n.set.counts().implicit_reserved, 0);
    let cap = Config::default().send_buffer_capacity as u64;
    for s in n.servers.values() {
        assert_eq!(s.s.effective_release_policy(), ReleasePolicy::Ack);
        assert_eq!(s.s.retain_capacity(), cap);
    }
    assert!(!any_busy(&n));
}

#[test]
fn hole_4_ack_beyond_what_was_resent_after_a_resume_is_violation() {
    let mut n = up();
    // 1,000 server bytes sent on a transport that loses them.
    n.s2c = cut;
    n.s(0).write(&pattern(1000)).unwrap();
    n.pump();
    n.s2c = pass;
    let id = n.sid(0);
    let secret = n.secret(0);
    // The client resumes having received nothing: the server rewinds to 0.
    let attempt = resuming(&mut n);
    let bytes = n.captured.last().unwrap().clone();
    let now = n.now;
    let mut reader = HandshakeReader::new(now, n.set.config());
    let HandshakeStep::Hello { hello, .. } = reader.feed(&bytes) else {
        panic!("the captured RESUME is whole");
    };
    n.next_server_t += 1;
    let st = n.next_server_t;
    let info = n.server_info;
    let Admission::Resume { resume, .. } = n.set.admit(now, st, info, hello, &mut n.entropy) else {
        panic!("the genuine RESUME is admitted");
    };
    let _ = (id, secret, attempt);
    let s = n.s(0);
    s.handle_input(
        now,
        Input::Resume {
            transport: st,
            resume,
            info,
        },
    );
    // Before anything is resent, the (authenticated) peer acknowledges all
    // 1,000 bytes it just said it never received.
    s.handle_input(
        now,
        Input::Received {
            transport: st,
            data: &ctl(&Frame::Ack { received: 1000 }),
        },
    );
    let mut log = Vec::new();
    while let Some(o) = s.poll_output() {
        log.push(o);
    }
    assert_eq!(
        s.error(),
        Some(&SessionError::ProtocolViolation(Violation::AckBeyondSent {
            acked: 1000,
            sent: 0
        })),
        "state {:?}, outputs {log:?}",
        s.state()
    );
}

#[test]
fn hole_4_resume_count_below_an_earlier_ack_is_violation() {
    let mut n = up();
    n.s(0).write(&pattern(1000)).unwrap();
    n.pump();
    assert_eq!(read_all(n.c(0)).len(), 1000);
    // The client acknowledges on its next heartbeat tick.
    n.run_until(n.at(secs(2)));
    assert_eq!(n.s(0).retained(), 0, "acknowledged and released");
    n.notify_loss = false;
    let attempt = n.c(0).attempt() + 5;
    // An authentic RESUME (the peer knows the secret) that claims less
    // than it acknowledged.
    let lie = n.resume_msg(0, attempt, 100, 0);
    let reply = n.raw_connect(&lie).unwrap();
    let expected = SessionError::ProtocolViolation(Violation::AckRegressed {
        previous: 1000,
        acked: 100,
    });
    assert_eq!(n.s(0).error(), Some(&expected), "reply {reply:?}");
}

#[test]
fn hole_6_unknown_ids_cost_one_proof_like_known_ones() {
    let mut n = up();
    let before = n.set.counts();
    let mut unknown = n.resume_msg(0, 9, 0, 0);
    unknown[6] ^= 0xff;
    let reply = n.raw_connect(&unknown).unwrap();
    assert_eq!(reply, reject_bytes(Code::UnknownSession, 0));
    let after_unknown = n.set.counts();
    let mut wrong_proof = n.resume_msg(0, 9, 0, 0);
    wrong_proof[RESUME_LEN - 1] ^= 1;
    n.raw_connect(&wrong_proof).unwrap();
    let after_known = n.set.counts();
    assert_eq!(
        after_unknown.proofs_computed - before.proofs_computed,
        after_known.proofs_computed - after_unknown.proofs_computed,
        "the same work for an unknown id as for a known one"
    );
    assert_eq!(after_known.proofs_computed - before.proofs_computed, 2);
}

#[test]
fn hole_6_resume_params_are_covered_by_the_proof() {
    let mut n = up();
    n.notify_loss = false;
    let attempt = resuming(&mut n);
    let genuine = n.captured.last().unwrap().clone();
    // Flip the announced receive buffer (Params at offset 46: flags,
    // retain_capacity, recv_buffer).
    let mut altered = genuine.clone();
    altered[46 + 1 + 8 + 7] ^= 0x40;
    assert_ne!(altered, genuine);
    let reply = n.raw_connect(&altered).unwrap();
    assert_eq!(
        reply,
        reject_bytes(Code::UnknownSession, 0),
        "altered params of attempt {attempt} must not verify"
    );
}

#[test]
fn hole_7_durations_that_overflow_are_refused_or_harmless() {
    for huge in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let mut c = Config::default();
        c.max_reconnect_time = huge;
        if c.validate().is_err() {
            continue;
        }
        // Validated: then a loss and a resume must not panic.
        let mut n = up_with(c.clone(), c);
        n.kill(0);
        n.run_until(n.at(secs(1)));
        assert_eq!(n.c(0).state(), SessionState::Established);
    }
}

#[test]
fn hole_8_injected_reject_on_a_resume_is_retried_not_final() {
    let mut n = up();
    n.c(0).write(b"before").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(0)), b"before");
    resuming(&mut n);
    // A misrouting balancer (or anyone on the path) answers UNKNOWN_SESSION.
    n.inject_client(0, &reject_bytes(Code::UnknownSession, 0));
    assert_ne!(
        n.c(0).state(),
        SessionState::Finished,
        "an unauthenticated REJECT does not end a session: {:?}",
        n.c(0).error()
    );
    n.c2s = pass;
    n.run_until(n.at(secs(3)));
    assert_eq!(n.c(0).state(), SessionState::Established);
    n.c(0).write(b" after").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(0)), b" after");
}

// ---- connection-set bookkeeping (mutation survivors) ----

#[test]
fn set_counts_parked_bytes_and_unproven_while_parked_and_clears_them_on_resume() {
    let mut n = up();
    n.add_client(Config::default(), TransportInfo::default());
    n.pump();
    // Client 0 proves itself with payload; client 1 only said HELLO.
    n.c(0).write(b"proof").unwrap();
    n.pump();
    assert_eq!(read_all(n.s(0)), b"proof");
    // Both servers hold bytes their clients never got.
    n.s2c = cut;
    n.s(0).write(&pattern(1000)).unwrap();
    n.s(1).write(&pattern(300)).unwrap();
    n.pump();
    n.s2c = pass;
    n.accept = false;
    n.kill(0);
    n.kill(1);
    assert_eq!(n.s(0).state(), SessionState::Parked);
    assert_eq!(n.s(1).state(), SessionState::Parked);
    assert_eq!((n.s(0).retained(), n.s(1).retained()), (1000, 300));
    let c = n.set.counts();
    assert_eq!((c.attached, c.parked), (0, 2));
    assert_eq!(c.parked_bytes, 1300, "what the parked sessions retain");
    assert_eq!(c.parked_unproven, 1, "only client 1 never proved anything");
    // Both come back: nothing is parked any more, and the bytes are delivered.
    n.accept = true;
    n.run_until(n.at(secs(3)));
    assert_eq!(n.c(0).state(), SessionState::Established);
    assert_eq!(n.c(1).state(), SessionState::Established);
    let c = n.set.counts();
    assert_eq!((c.attached, c.parked), (2, 0));
    assert_eq!((c.parked_bytes, c.parked_unproven), (0, 0));
    assert_eq!(read_all(n.c(0)), pattern(1000));
    assert_eq!(read_all(n.c(1)), pattern(300));
}

/// A verified resume proves the client by itself, with no byte sent or
/// acknowledged either way: parked again, the session no longer counts as
/// unproven. (The set records the verified resume itself, so the resume
/// count in `Session::is_proven` is a second guard: its mutant survives.)
#[test]
fn a_verified_resume_alone_proves_a_session() {
    let mut n = up();
    n.accept = false;
    n.kill(0);
    assert_eq!(n.s(0).state(), SessionState::Parked);
    assert_eq!(n.set.counts().parked_unproven, 1, "only a HELLO so far");
    n.accept = true;
    n.run_until(n.at(secs(3)));
    assert_eq!(n.c(0).state(), SessionState::Established);
    assert_eq!((n.c(0).received(), n.s(0).received()), (0, 0));
    n.accept = false;
    n.kill(0);
    assert_eq!(n.s(0).state(), SessionState::Parked);
    assert_eq!(n.set.counts().parked_unproven, 0, "the resume proved it");
}

/// A resume that finds the peer holding everything sent retransmits
/// nothing and says so: no `Retransmit` event, no retransmitted bytes
/// (mutant: `<` -> `<=` in `resume_from`, an empty retransmit).
#[test]
fn a_resume_with_nothing_missing_retransmits_nothing() {
    let mut n = up();
    n.c(0).write(&pattern(100)).unwrap();
    n.s(0).write(&pattern(50)).unwrap();
    n.pump();
    assert_eq!((n.s(0).received(), n.c(0).received()), (100, 50));
    let (cmark, smark) = (n.clog(0).len(), n.slog(0).len());
    n.kill(0);
    n.run_until(n.at(secs(3)));
    assert_eq!(n.c(0).state(), SessionState::Established);
    for log in [&n.clog(0)[cmark..], &n.slog(0)[smark..]] {
        let ev = events(log);
        assert!(ev.iter().any(|e| matches!(e, Event::Resumed { .. })));
        assert!(
            !ev.iter().any(|e| matches!(e, Event::Retransmit { .. })),
            "{ev:?}"
        );
    }
    assert_eq!(n.c(0).stats().retransmitted_bytes, 0);
}

#[test]
fn tombstones_of_sessions_that_proved_nothing_have_their_own_quota() {
    let mut s = Config::default();
    s.max_parked_unproven = 1;
    let mut n = up_with(Config::default(), s);
    n.add_client(Config::default(), TransportInfo::default());
    n.add_client(Config::default(), TransportInfo::default());
    n.pump();
    // Session 0 closes cleanly (a FIN and CLOSE exchange: proven).
    n.c(0).close();
    n.pump();
    let slog = n.slog(0).clone();
    assert_closed_ok(n.s(0), &slog);
    assert_eq!(n.set.counts().closed, 1);
    // Sessions 1 and 2 never proved anything and end with an error: their
    // tombstones share a quota of one, the oldest goes first.
    n.s(1).abort(0);
    n.pump();
    assert_eq!(n.set.counts().closed, 2);
    n.s(2).abort(0);
    n.pump();
    assert!(n.s(2).is_finished());
    assert_eq!(
        n.set.counts().closed,
        2,
        "the proven tombstone and one unproven"
    );
    // The proven one is still answered with how it ended (authenticated).
    let m = n.resume_msg(0, 9, 0, 0);
    let reply = n.raw_connect(&m).unwrap();
    assert!(
        matches!(
            decode_reply(&reply),
            ServerReply::Ended {
                code: Code::SessionClosed,
                ..
            }
        ),
        "{:?}",
        decode_reply(&reply)
    );
    // Session 1's was forgotten: unknown; session 2's remains.
    let m = n.resume_msg(1, 9, 0, 0);
    let reply = n.raw_connect(&m).unwrap();
    assert_eq!(
        decode_reply(&reply),
        decode_reply(&reject_bytes(Code::UnknownSession, 0))
    );
    let m = n.resume_msg(2, 9, 0, 0);
    let reply = n.raw_connect(&m).unwrap();
    assert!(matches!(decode_reply(&reply), ServerReply::Ended { .. }));
}

/// Implicit policy: a resume re-reserves the session's share from the new
/// transport's sizes, and the session's own old share does not count
/// against it (a budget of exactly one share lets it come back).
#[test]
fn implicit_reservation_follows_the_resume_and_a_full_budget_lets_its_owner_back() {
    let implicit = || {
        let mut c = Config::default();
        c.release_policy = ReleasePolicy::Implicit;
        c
    };
    let info = |recv| TransportInfo {
        send_buffer: Some(64 * 1024),
        recv_buffer: Some(recv),
    };
    let server_info = info(64 * 1024);
    let share = {
        let n = Net::with_info(implicit(), info(1 << 20), implicit(), server_info);
        let mut n = n;
        n.pump();
        n.set.counts().implicit_reserved
    };
    assert!(share > 0);
    let mut s = implicit();
    s.implicit_retention_budget = share;
    let mut n = Net::with_info(implicit(), info(1 << 20), s, server_info);
    n.pump();
    assert_eq!(n.s(0).state(), SessionState::Established);
    assert_eq!(n.set.counts().implicit_reserved, share);
    // The next transport announces a smaller receive buffer.
    n.clients[0].info = info(256 * 1024);
    n.kill(0);
    n.run_until(n.at(secs(3)));
    assert_eq!(
        n.c(0).state(),
        SessionState::Established,
        "{:?}",
        n.c(0).error()
    );
    assert_eq!(n.s(0).stats().resumes, 1);
    let cap = Config::default().send_buffer_capacity as u64;
    let now_share = n.s(0).retain_capacity() - cap;
    assert!(now_share < share, "{now_share} vs {share}");
    assert_eq!(n.set.counts().implicit_reserved, now_share);
}
