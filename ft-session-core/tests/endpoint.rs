//! The server `Endpoint` against several clients and hostile strangers, in
//! virtual time, sans IO.
//!
//! A small harness connects client `Session`s to one `Endpoint` over
//! in-memory links that can be cut (bytes lost, nobody told), held (bytes
//! kept back, delivered late) or closed, and lets strangers open transports
//! and write anything. The server application writes its own stream to each
//! accepted session and reads everything; every test that moves data checks
//! both directions by length and SHA-256. Each scenario runs twice: with the
//! endpoint holding its sessions (one object, as an event loop embeds it) and
//! with every session taken out and driven by the harness (as the
//! multi-threaded adapters do).
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ft_session_core::{
    Code, Config, Endpoint, EndpointInput, EndpointOutput, Event, Input, Output, Session,
    SessionError, SessionHandle, SessionId, SessionState, TransportId, TransportInfo,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Who owns the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The endpoint holds them (`session_mut`).
    Held,
    /// The harness takes each one after `Accepted` and drives it.
    Taken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    /// Bytes are lost in both directions; nobody is told.
    Cut,
    /// Client-to-server bytes are kept back until released.
    Hold,
}

struct Link {
    client: usize,
    client_t: TransportId,
    server_t: TransportId,
    mode: Mode,
    held: Vec<u8>,
    /// Client-to-server bytes so far, and where the link is to be cut
    /// (with whether each side is told).
    c2s: usize,
    cut_at: Option<(usize, bool, bool)>,
    client_open: bool,
    server_open: bool,
}

struct Client {
    s: Session,
    to_send: Vec<u8>,
    sent: usize,
    got: Vec<u8>,
    /// Close once everything was written.
    close_when_done: bool,
    closing: bool,
    outcome: Option<Result<(), SessionError>>,
    /// Every byte written per transport (for replays).
    wire: HashMap<TransportId, Vec<u8>>,
}

#[derive(Default)]
struct App {
    id: Option<SessionId>,
    to_send: Vec<u8>,
    sent: usize,
    got: Vec<u8>,
    outcome: Option<Result<(), SessionError>>,
}

struct Net {
    now: Instant,
    ep: Endpoint,
    owner: Owner,
    clients: Vec<Client>,
    links: Vec<Link>,
    next_t: TransportId,
    /// What the server wrote on each transport.
    from_server: HashMap<TransportId, Vec<u8>>,
    /// Server transports the endpoint (or a taken session) dropped.
    dropped: BTreeSet<TransportId>,
    apps: HashMap<SessionHandle, App>,
    accepted: Vec<SessionHandle>,
    /// Taken sessions and the server transports they own.
    taken: HashMap<SessionHandle, Session>,
    owned: HashMap<TransportId, SessionHandle>,
    /// Deliveries seen (taken mode).
    deliveries: u64,
    server_bytes: usize,
    /// Whether the server application reads.
    server_reads: bool,
    /// The next link opened by this client holds its bytes back.
    hold_next: Option<usize>,
    /// Crashes planned for the next link of a client (see `crash_after`).
    plans: HashMap<usize, VecDeque<(usize, bool, bool)>>,
    info: TransportInfo,
    /// Deadlines served in a row without the clock moving (see `advance`).
    stalled: u32,
}

/// A deadline served and still due, this many times in a row, is a timer
/// that never rearms: fail instead of spinning until the test times out.
const MAX_STALLED: u32 = 1000;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn digest(b: &[u8]) -> (usize, [u8; 32]) {
    (b.len(), Sha256::digest(b).into())
}

/// The code of a REJECT the endpoint wrote (tag of 6 bytes, then the code).
fn reject_code(reply: &[u8]) -> Option<Code> {
    (reply.len() >= 8 && &reply[..4] == b"FTSS" && reply[5] == 0x22)
        .then(|| Code::from_u16(u16::from_be_bytes([reply[6], reply[7]])))
}

/// Length of a fresh HELLO on the wire: tag and parameters.
const HELLO_LEN: usize = 6 + 17;
/// Length of a RESUME on the wire (PROTOCOL.md 2.2): tag, id, three
/// counts, parameters, proof (last).
const RESUME_LEN: usize = 6 + 16 + 3 * 8 + 17 + 32;

fn config() -> Config {
    let mut c = Config::default();
    c.max_reconnect_time = Duration::from_secs(20);
    c.heartbeat_interval = Duration::from_millis(100);
    c.idle_timeout = Duration::from_millis(1000);
    c.handshake_timeout = Duration::from_millis(500);
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(200);
    c.max_frame_payload = 4096;
    c.send_buffer_capacity = 64 * 1024;
    c.recv_buffer_capacity = 64 * 1024;
    c
}

impl Net {
    fn new(owner: Owner, server: Config, server_bytes: usize) -> Net {
        let now = Instant::now();
        Net {
            now,
            ep: Endpoint::new(server, now, [42; 32]).unwrap(),
            owner,
            clients: Vec::new(),
            links: Vec::new(),
            next_t: 100,
            from_server: HashMap::new(),
            dropped: BTreeSet::new(),
            apps: HashMap::new(),
            accepted: Vec::new(),
            taken: HashMap::new(),
            owned: HashMap::new(),
            deliveries: 0,
            server_bytes,
            server_reads: true,
            hold_next: None,
            plans: HashMap::new(),
            info: TransportInfo::default(),
            stalled: 0,
        }
    }

    fn add_client(&mut self, bytes: usize) -> usize {
        let i = self.clients.len();
        self.clients.push(Client {
            s: Session::client(config(), self.now, i as u64 + 1),
            to_send: pattern(1000 + i as u64, bytes),
            sent: 0,
            got: Vec::new(),
            close_when_done: false,
            closing: false,
            outcome: None,
            wire: HashMap::new(),
        });
        i
    }

    fn link_by_client(&mut self, i: usize, t: TransportId) -> Option<&mut Link> {
        self.links
            .iter_mut()
            .find(|l| l.client == i && l.client_t == t)
    }

    fn link_by_server(&mut self, t: TransportId) -> Option<&mut Link> {
        self.links.iter_mut().find(|l| l.server_t == t)
    }

    /// The current link of client `i`.
    fn current(&mut self, i: usize) -> Option<&mut Link> {
        let t = self.clients[i].s.transport()?;
        self.link_by_client(i, t)
    }

    // ---- the server's inputs, to the endpoint or to a taken session ----

    fn server_received(&mut self, t: TransportId, data: &[u8]) {
        let now = self.now;
        match self.owned.get(&t).and_then(|h| self.taken.get_mut(h)) {
            Some(s) => s.handle_input(now, Input::Received { transport: t, data }),
            None => self
                .ep
                .handle_input(now, EndpointInput::Received { transport: t, data }),
        }
    }

    fn server_lost(&mut self, t: TransportId) {
        let now = self.now;
        match self.owned.get(&t).and_then(|h| self.taken.get_mut(h)) {
            Some(s) => s.handle_input(now, Input::TransportLost { transport: t }),
            None => self
                .ep
                .handle_input(now, EndpointInput::TransportLost { transport: t }),
        }
    }

    /// The server closes transport `t`: its client end sees it.
    fn server_dropped(&mut self, t: TransportId) {
        self.dropped.insert(t);
        self.owned.remove(&t);
        let now = self.now;
        let Some(l) = self.link_by_server(t) else {
            return;
        };
        let notify = l.server_open && l.client_open && l.mode == Mode::Up;
        l.server_open = false;
        let (i, ct) = (l.client, l.client_t);
        if notify {
            self.clients[i]
                .s
                .handle_input(now, Input::TransportLost { transport: ct });
        }
    }

    // ---- driving ----

    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                moved |= self.drive_client(i);
            }
            moved |= self.drive_server();
            if !moved {
                return;
            }
        }
        panic!("no quiescence: livelock");
    }

    fn drive_client(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut moved = false;
        let c = &mut self.clients[i];
        while c.sent < c.to_send.len() {
            match c.s.write(&c.to_send[c.sent..]) {
                Ok(n) if n > 0 => {
                    c.sent += n;
                    moved = true;
                }
                _ => break,
            }
        }
        if c.close_when_done && c.sent == c.to_send.len() && !c.closing {
            c.closing = true;
            c.s.close();
            moved = true;
        }
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = c.s.read(&mut buf) {
            c.got.extend_from_slice(&buf[..n]);
            moved = true;
        }
        while let Some(out) = self.clients[i].s.poll_output() {
            moved = true;
            match out {
                Output::Connect { transport } => {
                    self.next_t += 1;
                    let st = self.next_t;
                    self.links.push(Link {
                        client: i,
                        client_t: transport,
                        server_t: st,
                        mode: if self.hold_next == Some(i) {
                            self.hold_next = None;
                            Mode::Hold
                        } else {
                            Mode::Up
                        },
                        held: Vec::new(),
                        c2s: 0,
                        cut_at: self.plans.get_mut(&i).and_then(VecDeque::pop_front),
                        client_open: true,
                        server_open: true,
                    });
                    let info = self.info;
                    self.ep.handle_input(
                        now,
                        EndpointInput::TransportOpened {
                            transport: st,
                            info,
                        },
                    );
                    self.clients[i]
                        .s
                        .handle_input(now, Input::TransportUp { transport, info });
                }
                Output::Transmit(t) => {
                    let mut bytes = Vec::new();
                    t.write_to(&mut bytes);
                    self.clients[i]
                        .wire
                        .entry(t.transport)
                        .or_default()
                        .extend_from_slice(&bytes);
                    let Some(l) = self.link_by_client(i, t.transport) else {
                        continue;
                    };
                    if !l.client_open || !l.server_open {
                        continue;
                    }
                    match l.mode {
                        Mode::Up => {
                            let st = l.server_t;
                            let (ct, c2s) = (l.client_t, l.c2s);
                            l.c2s += bytes.len();
                            match l.cut_at.filter(|c| c2s + bytes.len() >= c.0) {
                                None => self.server_received(st, &bytes),
                                Some((at, tell_client, tell_server)) => {
                                    // The crash strikes inside this write.
                                    l.mode = Mode::Cut;
                                    self.server_received(st, &bytes[..at - c2s]);
                                    if tell_client {
                                        self.clients[i].s.handle_input(
                                            now,
                                            Input::TransportLost { transport: ct },
                                        );
                                    }
                                    if tell_server {
                                        self.server_lost(st);
                                    }
                                }
                            }
                        }
                        Mode::Hold => l.held.extend_from_slice(&bytes),
                        Mode::Cut => {}
                    }
                }
                Output::DropTransport { transport } => {
                    let Some(l) = self.link_by_client(i, transport) else {
                        continue;
                    };
                    let notify = l.client_open && l.server_open && l.mode == Mode::Up;
                    l.client_open = false;
                    let st = l.server_t;
                    if notify {
                        self.server_lost(st);
                    }
                }
                Output::Event(Event::Finished(r)) => self.clients[i].outcome = Some(r),
                Output::Event(_) => {}
                o => panic!("unknown output {o:?}"),
            }
        }
        moved
    }

    /// Delivers bytes from the server on transport `t`.
    fn server_transmit(&mut self, t: TransportId, bytes: Vec<u8>) {
        let now = self.now;
        self.from_server
            .entry(t)
            .or_default()
            .extend_from_slice(&bytes);
        let Some(l) = self.link_by_server(t) else {
            return; // a stranger's
        };
        if l.mode != Mode::Up || !l.client_open || !l.server_open {
            return;
        }
        let (i, ct) = (l.client, l.client_t);
        self.clients[i].s.handle_input(
            now,
            Input::Received {
                transport: ct,
                data: &bytes,
            },
        );
    }

    /// The server application: writes its stream, reads everything.
    fn app_step(&mut self, h: SessionHandle) -> bool {
        let Some(app) = self.apps.get_mut(&h) else {
            return false;
        };
        let s = match self.owner {
            Owner::Held => self.ep.session_mut(h),
            Owner::Taken => self.taken.get_mut(&h),
        };
        let Some(s) = s else {
            return false;
        };
        let mut moved = false;
        while app.sent < app.to_send.len() {
            match s.write(&app.to_send[app.sent..]) {
                Ok(n) if n > 0 => {
                    app.sent += n;
                    moved = true;
                }
                _ => break,
            }
        }
        let mut buf = [0u8; 8192];
        if self.server_reads {
            while let Ok(n @ 1..) = s.read(&mut buf) {
                app.got.extend_from_slice(&buf[..n]);
                moved = true;
            }
        }
        moved
    }

    fn drive_server(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        let handles: Vec<SessionHandle> = self.apps.keys().copied().collect();
        for h in handles {
            moved |= self.app_step(h);
        }
        // Taken sessions, driven as an adapter's task would.
        let taken: Vec<SessionHandle> = self.taken.keys().copied().collect();
        for h in taken {
            while let Some(out) = self.taken.get_mut(&h).and_then(Session::poll_output) {
                moved = true;
                match out {
                    Output::Transmit(t) => {
                        let mut bytes = Vec::new();
                        t.write_to(&mut bytes);
                        self.server_transmit(t.transport, bytes);
                    }
                    Output::DropTransport { transport } => self.server_dropped(transport),
                    Output::Connect { .. } => panic!("a server session dialed"),
                    Output::Event(e) => {
                        if let Some(s) = self.taken.get(&h) {
                            self.ep.handle_session_event(now, h, s, &e);
                        }
                        if let Event::Finished(r) = e {
                            if let Some(a) = self.apps.get_mut(&h) {
                                a.outcome = Some(r);
                            }
                        }
                    }
                    o => panic!("unknown output {o:?}"),
                }
            }
        }
        while let Some(out) = self.ep.poll_output() {
            moved = true;
            match out {
                EndpointOutput::Transmit(t) => {
                    let mut bytes = Vec::new();
                    t.write_to(&mut bytes);
                    self.server_transmit(t.transport, bytes);
                }
                EndpointOutput::DropTransport { transport } => self.server_dropped(transport),
                EndpointOutput::Accepted { session, transport } => {
                    self.accepted.push(session);
                    let mut app = App {
                        to_send: pattern(5000 + self.accepted.len() as u64, self.server_bytes),
                        ..App::default()
                    };
                    if self.owner == Owner::Taken {
                        let s = self.ep.take_session(session).expect("take after Accepted");
                        app.id = s.session_id();
                        self.taken.insert(session, s);
                        self.owned.insert(transport, session);
                    } else {
                        app.id = self.ep.session(session).and_then(Session::session_id);
                    }
                    self.apps.insert(session, app);
                }
                EndpointOutput::Event { session, event } => {
                    assert_eq!(self.owner, Owner::Held, "an event of a taken session");
                    if let Event::Finished(r) = event {
                        if let Some(a) = self.apps.get_mut(&session) {
                            a.outcome = Some(r);
                        }
                    }
                }
                EndpointOutput::Deliver { session, delivery } => {
                    assert_eq!(self.owner, Owner::Taken, "a delivery for a held session");
                    self.deliveries += 1;
                    match self.taken.get_mut(&session) {
                        Some(s) => {
                            if let Some(t) = delivery.transport() {
                                self.owned.insert(t, session);
                            }
                            delivery.apply(now, s);
                        }
                        None => {
                            if let Some(t) = delivery.transport() {
                                self.server_dropped(t);
                            }
                        }
                    }
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
        moved
    }

    fn next_timeout(&self) -> Option<Instant> {
        let clients = self.clients.iter().filter_map(|c| c.s.poll_timeout());
        let taken = self.taken.values().filter_map(Session::poll_timeout);
        clients.chain(taken).chain(self.ep.poll_timeout()).min()
    }

    /// Jumps to the next deadline and serves it; false if there is none.
    fn advance(&mut self) -> bool {
        let Some(t) = self.next_timeout() else {
            return false;
        };
        if t <= self.now {
            self.stalled += 1;
            assert!(
                self.stalled < MAX_STALLED,
                "a deadline stays due after being served: livelock"
            );
        } else {
            self.stalled = 0;
        }
        self.now = self.now.max(t);
        let now = self.now;
        for c in &mut self.clients {
            if c.s.poll_timeout().is_some_and(|d| d <= now) {
                c.s.handle_input(now, Input::Timeout);
            }
        }
        for s in self.taken.values_mut() {
            if s.poll_timeout().is_some_and(|d| d <= now) {
                s.handle_input(now, Input::Timeout);
            }
        }
        if self.ep.poll_timeout().is_some_and(|d| d <= now) {
            self.ep.handle_input(now, EndpointInput::Timeout);
        }
        self.pump();
        true
    }

    /// Pumps and advances until `done` holds; fails after `limit` of virtual time.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) {
        let end = self.now + limit;
        self.pump();
        while !done(self) {
            assert!(self.now < end, "condition not reached within {limit:?}");
            if !self.advance() {
                panic!("nothing left to happen and the condition does not hold");
            }
        }
    }

    /// Cuts client `i`'s current link; each side is told if asked.
    fn crash(&mut self, i: usize, tell_client: bool, tell_server: bool) {
        let now = self.now;
        let Some(l) = self.current(i) else {
            return;
        };
        l.mode = Mode::Cut;
        let (ct, st) = (l.client_t, l.server_t);
        if tell_client {
            self.clients[i]
                .s
                .handle_input(now, Input::TransportLost { transport: ct });
        }
        if tell_server {
            self.server_lost(st);
        }
        self.pump();
    }

    /// Cuts one of client `i`'s next links (the first not yet planned) once
    /// `bytes` went from the client to the server on it (mid-frame, with
    /// data in flight both ways).
    fn crash_after(&mut self, i: usize, bytes: usize, tell_client: bool, tell_server: bool) {
        let plan = (bytes, tell_client, tell_server);
        self.plans.entry(i).or_default().push_back(plan);
    }

    /// A stranger opens a transport and writes `bytes`.
    fn stranger(&mut self, bytes: &[u8]) -> TransportId {
        self.next_t += 1;
        let t = self.next_t;
        let now = self.now;
        let info = self.info;
        self.ep
            .handle_input(now, EndpointInput::TransportOpened { transport: t, info });
        if !bytes.is_empty() {
            self.server_received(t, bytes);
        }
        self.pump();
        t
    }

    fn app_of(&self, i: usize) -> &App {
        let id = self.clients[i].s.session_id().expect("client established");
        self.apps
            .values()
            .find(|a| a.id == Some(id))
            .expect("a server session for the client")
    }

    fn all_delivered(&self) -> bool {
        (0..self.clients.len()).all(|i| {
            let c = &self.clients[i];
            c.s.session_id().is_some()
                && c.got.len() == self.server_bytes
                && self.app_of(i).got.len() == c.to_send.len()
        })
    }

    /// Every byte arrived exactly, both ways, for every client.
    fn assert_exact(&self) {
        for (i, c) in self.clients.iter().enumerate() {
            let app = self.app_of(i);
            assert_eq!(digest(&app.got), digest(&c.to_send), "client {i} -> server");
            assert_eq!(digest(&c.got), digest(&app.to_send), "server -> client {i}");
        }
    }
}

const OWNERS: [Owner; 2] = [Owner::Held, Owner::Taken];

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Five clients, fresh handshakes, then crashes of every kind while data
/// flows both ways: each resume is routed to its own session and every byte
/// arrives once, in order.
#[test]
fn several_clients_resume_after_loss_with_exact_bytes_both_ways() {
    for owner in OWNERS {
        let mut net = Net::new(owner, config(), 300_000);
        for _ in 0..5 {
            net.add_client(400_000);
        }
        // Loss noticed by both, by the client only (half-open server), by
        // the server only, and by nobody (idle timeouts), mid-frame, with
        // bytes in flight both ways; then again on some resumed transports.
        let plan = [
            (true, true),
            (true, false),
            (false, true),
            (false, false),
            (true, false),
        ];
        for (i, (c, s)) in plan.into_iter().enumerate() {
            net.crash_after(i, 30_000 + 7_777 * i, c, s);
        }
        // Client 0 crashes again mid-stream, client 3 in the middle of its
        // RESUME (the endpoint holds one byte of it until the deadline).
        net.crash_after(0, 50_001, true, true);
        net.crash_after(3, 1, false, false);
        net.pump();
        assert_eq!(net.ep.stats().accepted, 5);
        net.run_until(Duration::from_secs(30), Net::all_delivered);
        net.assert_exact();
        let stats = net.ep.stats();
        assert_eq!(stats.accepted, 5, "resumes never create sessions");
        assert_eq!(stats.set.rejected_resumes, 0, "every resume admitted");
        let states: Vec<_> = net
            .clients
            .iter()
            .map(|c| (c.s.state(), c.s.stats()))
            .collect();
        assert_eq!(stats.sessions, 5, "{stats:?} {states:?}");
        assert_eq!(stats.set.attached, 5, "{stats:?} {states:?}");
        let resumes: u64 = net.clients.iter().map(|c| c.s.stats().resumes).sum();
        assert_eq!(resumes, 6);
        assert_eq!(net.clients[3].s.stats().connect_attempts, 3);
        assert_eq!(stats.expired_handshakes, 1, "the cut RESUME");
        let resent: u64 = net
            .clients
            .iter()
            .map(|c| c.s.stats().retransmitted_bytes)
            .sum();
        assert!(resent > 0, "bytes were in flight at the crashes");
        if owner == Owner::Taken {
            assert_eq!(net.deliveries, resumes, "one delivery per resume");
        }
    }
}

/// Strangers write garbage, a resume for an id this endpoint never issued, a
/// forged proof for a live session, and a replay of an old resume: each gets
/// its documented answer and is dropped; the live session never notices.
#[test]
fn strangers_with_garbage_unknown_ids_and_forged_proofs_disturb_nobody() {
    for owner in OWNERS {
        // A resume from another server's session: an unknown id here.
        let mut other = Net::new(owner, config(), 1000);
        other.add_client(1000);
        other.run_until(Duration::from_secs(5), Net::all_delivered);
        other.crash(0, true, true);
        other.run_until(Duration::from_secs(5), |n| {
            n.clients[0].s.stats().resumes == 1
        });
        let t = other.clients[0].s.transport().unwrap();
        let foreign_resume = other.clients[0].wire[&t][..RESUME_LEN].to_vec();

        let mut net = Net::new(owner, config(), 200_000);
        net.add_client(200_000);
        net.run_until(Duration::from_secs(5), |n| {
            n.clients[0].s.state() == SessionState::Established
        });
        net.crash(0, true, true);
        net.run_until(Duration::from_secs(5), |n| {
            n.clients[0].s.stats().resumes == 1
        });
        let t = net.clients[0].s.transport().unwrap();
        let own_resume = net.clients[0].wire[&t][..RESUME_LEN].to_vec();
        assert_eq!(&own_resume[..4], b"FTSS");
        let before = net.ep.stats();

        let garbage = net.stranger(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(net.dropped.contains(&garbage));
        assert!(
            !net.from_server.contains_key(&garbage),
            "not our protocol: no answer"
        );

        let unknown = net.stranger(&foreign_resume);
        let mut forged = own_resume.clone();
        *forged.last_mut().unwrap() ^= 1;
        let forged = net.stranger(&forged);
        let replayed = net.stranger(&own_resume);
        for t in [unknown, forged, replayed] {
            assert!(net.dropped.contains(&t));
            assert_eq!(
                reject_code(&net.from_server[&t]),
                Some(Code::UnknownSession),
                "one answer for unknown, forged and replayed"
            );
        }
        let after = net.ep.stats();
        assert_eq!(after.set.rejected_resumes, before.set.rejected_resumes + 3);
        assert_eq!(after.rejected_handshakes, before.rejected_handshakes + 4);
        assert_eq!(after.pending_handshakes, 0);
        assert_eq!(after.accepted, 1);
        assert_eq!(net.clients[0].s.state(), SessionState::Established);
        assert_eq!(net.clients[0].s.stats().resumes, 1);
        net.run_until(Duration::from_secs(20), Net::all_delivered);
        net.assert_exact();
        assert_eq!(net.clients[0].s.stats().resumes, 1, "nobody disturbed it");
    }
}

/// A draining endpoint (`set_accepting(false)`) refuses a fresh HELLO with
/// REJECT `BUSY` but still routes a parked session's resume; the stream
/// stays exact.
#[test]
fn a_draining_endpoint_refuses_new_sessions_and_still_routes_resumes() {
    for owner in OWNERS {
        let mut net = Net::new(owner, config(), 200_000);
        net.add_client(200_000);
        net.run_until(Duration::from_secs(5), |n| n.clients[0].got.len() > 20_000);
        let first = *net.clients[0].wire.keys().min().unwrap();
        let hello = net.clients[0].wire[&first][..HELLO_LEN].to_vec();
        assert!(net.ep.is_accepting(), "a new endpoint accepts");
        net.ep.set_accepting(false);
        assert!(!net.ep.is_accepting());
        let before = net.ep.stats();
        let fresh = net.stranger(&hello);
        assert!(net.dropped.contains(&fresh));
        assert_eq!(reject_code(&net.from_server[&fresh]), Some(Code::Busy));
        let after = net.ep.stats();
        assert_eq!(after.accepted, before.accepted, "no new session");
        assert_eq!(after.rejected_handshakes, before.rejected_handshakes + 1);
        net.crash(0, true, true);
        net.run_until(Duration::from_secs(20), Net::all_delivered);
        net.assert_exact();
        assert_eq!(
            net.clients[0].s.stats().resumes,
            1,
            "resumed while draining"
        );
        assert_eq!(net.ep.stats().accepted, 1);
    }
}

/// Bytes of an old transport reach the endpoint on a new one before any
/// hello (a confused proxy), or after the endpoint dropped it: the first
/// is refused and dropped, the second ignored; the session carries on.
#[test]
fn stale_bytes_on_pending_or_dropped_transports_are_refused_or_ignored() {
    for owner in OWNERS {
        let mut net = Net::new(owner, config(), 100_000);
        net.add_client(100_000);
        net.run_until(Duration::from_secs(5), |n| n.clients[0].got.len() > 10_000);
        let old = net.clients[0].s.transport().unwrap();
        let old_server = net.current(0).unwrap().server_t;
        // Bytes from the middle of what the old transport carried.
        let stale = net.clients[0].wire[&old][5000..7000].to_vec();
        let t = net.stranger(&stale);
        assert!(net.dropped.contains(&t), "stale frames are no hello");
        if let Some(reply) = net.from_server.get(&t) {
            assert!(reject_code(reply).is_some(), "only a REJECT, if anything");
        }
        // The session moves to a new transport; the old one's late bytes
        // (and bytes on the refused one) are ignored.
        net.crash(0, true, true);
        net.run_until(Duration::from_secs(5), |n| {
            n.clients[0].s.stats().resumes == 1
        });
        let before = net.ep.stats();
        net.server_received(old_server, &stale);
        net.server_received(t, &stale);
        net.pump();
        assert_eq!(net.ep.stats(), before);
        net.run_until(Duration::from_secs(20), Net::all_delivered);
        net.assert_exact();
    }
}

/// Transports that never complete their first message are dropped at their
/// deadline, and cost nothing after.
#[test]
fn handshakes_expire_at_their_deadline() {
    let mut net = Net::new(Owner::Held, config(), 0);
    let opened = net.now;
    let silent = net.stranger(b"");
    let partial = net.stranger(b"FTS");
    assert_eq!(net.ep.stats().pending_handshakes, 2);
    assert_eq!(
        net.ep.poll_timeout(),
        Some(opened + config().handshake_timeout)
    );
    assert!(net.dropped.is_empty());
    assert!(net.advance());
    assert_eq!(net.now, opened + config().handshake_timeout);
    assert!(net.dropped.contains(&silent) && net.dropped.contains(&partial));
    let stats = net.ep.stats();
    assert_eq!((stats.pending_handshakes, stats.expired_handshakes), (0, 2));
    assert_eq!(net.ep.poll_timeout(), None, "nothing left to time");
    assert!(net.from_server.is_empty(), "silence is not answered");
}

/// Beyond `max_pending_handshakes`, transports are dropped at once and
/// counted; a legitimate client gets in once the strangers' deadlines pass.
#[test]
fn pending_handshakes_are_bounded() {
    for owner in OWNERS {
        let mut cfg = config();
        cfg.max_pending_handshakes = 4;
        let mut net = Net::new(owner, cfg, 10_000);
        let strangers: Vec<TransportId> = (0..6).map(|_| net.stranger(b"FT")).collect();
        let stats = net.ep.stats();
        assert_eq!((stats.pending_handshakes, stats.refused_handshakes), (4, 2));
        assert!(strangers[4..].iter().all(|t| net.dropped.contains(t)));
        assert!(strangers[..4].iter().all(|t| !net.dropped.contains(t)));
        // The client is refused while the strangers wait, then gets in.
        net.add_client(10_000);
        net.pump();
        assert_eq!(net.ep.stats().refused_handshakes, 3);
        net.run_until(Duration::from_secs(5), Net::all_delivered);
        net.assert_exact();
        assert_eq!(net.ep.stats().expired_handshakes, 4);
    }
    let mut cfg = Config::default();
    assert_eq!(cfg.max_pending_handshakes, 1024);
    cfg.max_pending_handshakes = 0;
    assert!(Endpoint::new(cfg, Instant::now(), [0; 32]).is_err());
}

/// A resume held back in the network until the client gave up on it and
/// resumed again elsewhere: the newer one wins, the old one is refused as a
/// replay when it finally arrives, and the stream stays exact.
#[test]
fn an_old_resume_overtaken_by_a_newer_one_is_refused() {
    for owner in OWNERS {
        // The server waits longer for a first message than the client waits
        // for an answer, so the old resume is still pending when it arrives.
        let mut cfg = config();
        cfg.handshake_timeout = Duration::from_secs(2);
        let mut net = Net::new(owner, cfg, 200_000);
        net.add_client(200_000);
        net.run_until(Duration::from_secs(5), |n| n.clients[0].got.len() > 20_000);
        // The server does not see the loss (half-open); the client's next
        // transport holds its bytes back.
        net.hold_next = Some(0);
        net.crash(0, true, false);
        let held = net.links.last().unwrap();
        assert_eq!(held.mode, Mode::Hold);
        assert!(!held.held.is_empty(), "resume held back");
        let held = held.server_t;
        // The client's handshake times out; attempt n+1 goes through.
        net.run_until(Duration::from_secs(5), |n| {
            n.clients[0].s.stats().resumes == 1
        });
        let before = net.ep.stats().set.rejected_resumes;
        let late = std::mem::take(
            &mut net
                .links
                .iter_mut()
                .find(|l| l.server_t == held)
                .unwrap()
                .held,
        );
        assert!(!net.dropped.contains(&held), "still pending");
        net.server_received(held, &late);
        net.pump();
        assert!(net.dropped.contains(&held));
        assert_eq!(
            reject_code(&net.from_server[&held]),
            Some(Code::UnknownSession),
            "a replayed attempt gets the answer of an unknown session"
        );
        assert_eq!(net.ep.stats().set.rejected_resumes, before + 1);
        assert_eq!(net.clients[0].s.state(), SessionState::Established);
        net.run_until(Duration::from_secs(20), Net::all_delivered);
        net.assert_exact();
        assert_eq!(net.clients[0].s.stats().resumes, 1);
    }
}

/// Clients that vanish: their parked sessions expire by the endpoint's
/// timers alone, are freed, and their tombstones go after another
/// `max_reconnect_time`; in the end the endpoint holds nothing and has
/// nothing left to time. Clean closes are freed as well.
#[test]
fn expired_and_closed_sessions_are_freed() {
    for owner in OWNERS {
        let mut net = Net::new(owner, config(), 20_000);
        for _ in 0..4 {
            net.add_client(20_000);
        }
        net.run_until(Duration::from_secs(5), Net::all_delivered);
        net.assert_exact();
        for i in 0..2 {
            net.clients[i].s.close();
        }
        net.run_until(Duration::from_secs(5), |n| {
            n.clients[..2].iter().all(|c| c.outcome.is_some())
        });
        assert!(net.clients[..2].iter().all(|c| c.outcome == Some(Ok(()))));
        // Two clients vanish without a word; the server sees the loss.
        net.crash(2, false, true);
        net.crash(3, false, true);
        net.clients.truncate(2);
        assert_eq!(net.ep.stats().set.parked, 2);
        while net.advance() {}
        let outcomes: Vec<_> = net.apps.values().map(|a| a.outcome.clone()).collect();
        assert_eq!(
            outcomes.iter().filter(|o| **o == Some(Ok(()))).count(),
            2,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Some(Err(SessionError::Expired)))
                .count(),
            2,
            "{outcomes:?}"
        );
        let stats = net.ep.stats();
        assert_eq!(stats.set.expired, 2);
        assert_eq!(
            (stats.sessions, stats.held, stats.pending_handshakes),
            (0, 0, 0)
        );
        assert_eq!(
            (stats.set.attached, stats.set.parked, stats.set.closed),
            (0, 0, 0)
        );
        assert_eq!(net.ep.poll_timeout(), None);
    }
}

/// A held session that finished with bytes the application has not read
/// stays reachable until they are read, then it is freed.
#[test]
fn a_finished_session_stays_readable_until_drained() {
    let mut net = Net::new(Owner::Held, config(), 0);
    net.server_reads = false;
    let i = net.add_client(50_000);
    net.clients[i].close_when_done = true;
    net.run_until(Duration::from_secs(5), |n| n.clients[0].outcome.is_some());
    assert_eq!(net.clients[0].outcome, Some(Ok(())));
    let h = net.accepted[0];
    let mut app = net.apps.remove(&h).unwrap();
    let s = net.ep.session(h).expect("still reachable");
    assert!(s.is_finished() && s.readable() > 0);
    assert_eq!(net.ep.stats().set.attached, 0);
    let mut buf = vec![0u8; 100_000];
    loop {
        match net.ep.session_mut(h).unwrap().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => app.got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(digest(&app.got), digest(&net.clients[0].to_send));
    assert!(net.ep.poll_output().is_none());
    assert!(net.ep.session(h).is_none(), "freed once read");
    assert_eq!(net.ep.stats().sessions, 0);
}

/// The set's limits evict the oldest parked session; a taken session gets
/// the eviction as a delivery, a held one directly; both end `Evicted`.
#[test]
fn evictions_reach_held_and_taken_sessions() {
    for owner in OWNERS {
        let mut cfg = config();
        cfg.max_parked = 1;
        let mut net = Net::new(owner, cfg, 1000);
        net.add_client(1000);
        net.add_client(1000);
        net.run_until(Duration::from_secs(5), Net::all_delivered);
        let first = net.accepted[0];
        net.crash(0, false, true);
        net.crash(1, false, true);
        assert_eq!(
            net.apps[&first].outcome,
            Some(Err(SessionError::Evicted)),
            "the oldest parked session goes"
        );
        let stats = net.ep.stats();
        assert_eq!(
            (stats.set.evicted, stats.set.parked, stats.sessions),
            (1, 1, 1)
        );
        if owner == Owner::Taken {
            assert_eq!(net.deliveries, 1);
        }
    }
}

/// Bytes that follow a RESUME in the same read reach the session, held or
/// taken: here an ABORT, which then ends it as the client asked.
#[cfg(feature = "testing")]
#[test]
fn bytes_after_a_resume_in_the_same_read_reach_the_session() {
    use ft_session_core::frame::Frame;
    for owner in OWNERS {
        let mut net = Net::new(owner, config(), 1000);
        net.add_client(1000);
        net.run_until(Duration::from_secs(5), Net::all_delivered);
        let h = net.accepted[0];
        // The next transport holds the client's RESUME back.
        net.hold_next = Some(0);
        net.crash(0, true, true);
        let held = net.links.last().unwrap();
        assert_eq!(held.mode, Mode::Hold);
        let (st, mut bytes) = (held.server_t, held.held.clone());
        assert!(!bytes.is_empty(), "the RESUME");
        let code = Code::from_u16(0x1234);
        let mut abort = bytes::BytesMut::new();
        Frame::Abort { code }.encode(&mut abort);
        bytes.extend_from_slice(&abort);
        net.server_received(st, &bytes);
        net.pump();
        assert_eq!(
            net.apps[&h].outcome,
            Some(Err(SessionError::Aborted {
                code,
                by_peer: true
            })),
            "{owner:?}"
        );
    }
}

/// Handles print as `#n`; the endpoint's Debug never shows its entropy key.
#[test]
fn handles_display_and_debug_hides_the_seed() {
    let mut net = Net::new(Owner::Held, config(), 10);
    net.add_client(10);
    net.run_until(Duration::from_secs(5), Net::all_delivered);
    let h = net.accepted[0];
    let shown = h.to_string();
    assert!(
        shown.starts_with('#') && shown[1..].parse::<u64>().is_ok(),
        "{shown}"
    );
    let ep = Endpoint::new(config(), Instant::now(), [171; 32]).unwrap();
    let debug = format!("{ep:?}");
    assert!(debug.contains("KeyedEntropy"), "{debug}");
    assert!(!debug.contains("171, 171"), "the seed leaks: {debug}");
}

/// `set_reports_written` applies to every session admitted afterwards.
#[test]
fn sessions_admitted_after_set_reports_written_report_written_bytes() {
    for on in [false, true] {
        let mut net = Net::new(Owner::Held, config(), 10);
        net.ep.set_reports_written(on);
        net.add_client(10);
        net.pump();
        let h = net.accepted[0];
        assert_eq!(net.ep.session(h).unwrap().reports_written(), on);
    }
}

/// `stats().held` counts the sessions the endpoint drives itself, not the
/// ones the caller took.
#[test]
fn stats_count_held_and_taken_sessions() {
    for owner in OWNERS {
        let mut net = Net::new(owner, config(), 10);
        net.add_client(10);
        net.add_client(10);
        net.run_until(Duration::from_secs(5), Net::all_delivered);
        let s = net.ep.stats();
        let held = if owner == Owner::Held { 2 } else { 0 };
        assert_eq!((s.sessions, s.held), (2, held), "{owner:?}");
    }
}

/// `wants_input`: a pending transport always reads (its handshake must be
/// seen), an unknown one never, a session's transport while its receive
/// queue has room. The server reads ahead for no part of the client's send
/// buffer (`max_peer_send_buffer` 0), so 40 KB of the client's first buffer
/// (64 KiB, sent before any acknowledgment) overfill its 16 KiB window while
/// the client may still send more (else only control frames could follow
/// and reading would stay on).
#[test]
fn wants_input_follows_pending_unknown_and_full_sessions() {
    let mut server = config();
    server.recv_buffer_capacity = 16 * 1024;
    server.max_peer_send_buffer = 0;
    let mut net = Net::new(Owner::Held, server.clone(), 0);
    assert!(!net.ep.wants_input(4242), "unknown transport");
    let t = net.stranger(&[]);
    assert!(net.ep.wants_input(t), "pending handshake");
    net.server_reads = false;
    net.add_client(0);
    net.run_until(Duration::from_secs(5), |n| {
        n.accepted.first().and_then(|&h| n.ep.session(h)).is_some()
    });
    let st = net.links[0].server_t;
    assert!(net.ep.wants_input(st), "room in the receive queue");
    net.clients[0].to_send = vec![7; 40_000];
    net.run_until(Duration::from_secs(5), |n| {
        n.ep.session(n.accepted[0]).unwrap().readable() >= server.recv_buffer_capacity
    });
    assert!(!net.ep.wants_input(st), "receive queue full");
}

/// A transport id reopened while it is routed to a session is the caller's
/// bug: the live session keeps the transport and its bytes.
#[test]
fn a_reused_transport_id_does_not_disturb_its_session() {
    let mut net = Net::new(Owner::Held, config(), 1000);
    net.add_client(1000);
    net.run_until(Duration::from_secs(5), Net::all_delivered);
    let st = net.links[0].server_t;
    let now = net.now;
    let info = net.info;
    net.ep.handle_input(
        now,
        EndpointInput::TransportOpened {
            transport: st,
            info,
        },
    );
    assert_eq!(net.ep.stats().pending_handshakes, 0);
    net.clients[0].to_send.extend_from_slice(b" and more");
    net.run_until(Duration::from_secs(5), Net::all_delivered);
    assert!(!net.dropped.contains(&st), "the live transport was dropped");
    net.assert_exact();
}

/// A timer already overdue when the caller gets round to it still fires
/// (a loaded event loop wakes late).
#[test]
fn overdue_session_timers_fire() {
    let mut net = Net::new(Owner::Held, config(), 10);
    net.add_client(10);
    net.run_until(Duration::from_secs(5), Net::all_delivered);
    let due = net.ep.poll_timeout().expect("a held session has timers");
    let late = due + Duration::from_millis(50);
    net.ep.handle_input(late, EndpointInput::Timeout);
    while net.ep.poll_output().is_some() {}
    let next = net.ep.poll_timeout().expect("timers rearmed");
    assert!(
        next > late,
        "the overdue timer did not fire: {:?} <= late",
        late - next
    );
}

/// Bytes that follow a fresh HELLO in the same read reach the new session,
/// held or taken: here an ABORT, which then ends it as the client asked.
#[cfg(feature = "testing")]
#[test]
fn bytes_after_a_hello_in_the_same_read_reach_the_new_session() {
    use ft_session_core::frame::Frame;
    for owner in OWNERS {
        let mut net = Net::new(owner, config(), 10);
        net.hold_next = Some(0);
        net.add_client(0);
        net.pump();
        let held = net.links.last().unwrap();
        assert_eq!(held.mode, Mode::Hold);
        let (st, mut bytes) = (held.server_t, held.held.clone());
        assert!(!bytes.is_empty(), "the HELLO");
        let code = Code::from_u16(0x1234);
        let mut abort = bytes::BytesMut::new();
        Frame::Abort { code }.encode(&mut abort);
        bytes.extend_from_slice(&abort);
        net.server_received(st, &bytes);
        net.pump();
        let h = net.accepted[0];
        assert_eq!(
            net.apps[&h].outcome,
            Some(Err(SessionError::Aborted {
                code,
                by_peer: true
            })),
            "{owner:?}"
        );
    }
}

/// A transport its session dropped is no longer routed: the endpoint stops
/// wanting its bytes.
#[test]
fn a_dropped_transport_is_no_longer_routed() {
    let mut net = Net::new(Owner::Held, config(), 10);
    net.add_client(10);
    net.run_until(Duration::from_secs(5), Net::all_delivered);
    let st = net.links[0].server_t;
    assert!(net.ep.wants_input(st));
    net.crash(0, false, true);
    assert!(!net.ep.wants_input(st), "still routed after its loss");
}

/// `stats().routed_transports` follows the attached held sessions through
/// losses, resumes (one after a half-open loss, so the server still
/// believed in the old transport) and clean closes, and nothing stays
/// routed once every session ended. Taken sessions are never routed.
#[test]
fn routes_follow_attached_transports_and_none_outlive_their_sessions() {
    for owner in OWNERS {
        let held = |n: usize| if owner == Owner::Held { n } else { 0 };
        let mut net = Net::new(owner, config(), 20_000);
        for _ in 0..3 {
            net.add_client(20_000);
        }
        net.run_until(Duration::from_secs(5), Net::all_delivered);
        assert_eq!(net.ep.stats().routed_transports, held(3), "{owner:?}");
        // The server sees client 0's loss: its session parks, unrouted.
        net.crash(0, false, true);
        assert_eq!(net.ep.stats().set.parked, 1);
        assert_eq!(net.ep.stats().routed_transports, held(2), "{owner:?}");
        net.run_until(Duration::from_secs(5), |n| {
            n.clients[0].s.stats().resumes == 1
        });
        assert_eq!(net.ep.stats().routed_transports, held(3), "{owner:?}");
        // Half-open: only client 1 sees the loss; its resume replaces the
        // transport the server still had.
        net.crash(1, true, false);
        net.run_until(Duration::from_secs(5), |n| {
            n.clients[1].s.stats().resumes == 1
        });
        assert_eq!(net.ep.stats().routed_transports, held(3), "{owner:?}");
        for c in &mut net.clients {
            c.to_send.extend_from_slice(b" and the end");
            c.close_when_done = true;
        }
        net.run_until(Duration::from_secs(10), |n| {
            n.clients.iter().all(|c| c.outcome.is_some())
        });
        assert!(net.clients.iter().all(|c| c.outcome == Some(Ok(()))));
        net.pump();
        net.assert_exact();
        let stats = net.ep.stats();
        assert_eq!(
            (stats.routed_transports, stats.sessions),
            (0, 0),
            "{owner:?} {stats:?}"
        );
    }
}

/// A held session taken after a half-open resume (the new transport routed,
/// the old one dropped) leaves no route behind: its bytes are the caller's
/// from now on.
#[test]
fn taking_a_resumed_session_unroutes_its_transport() {
    let mut net = Net::new(Owner::Held, config(), 1000);
    net.add_client(1000);
    net.run_until(Duration::from_secs(5), Net::all_delivered);
    let h = net.accepted[0];
    let old = net.links[0].server_t;
    net.crash(0, true, false);
    net.run_until(Duration::from_secs(5), |n| {
        n.clients[0].s.stats().resumes == 1
    });
    assert!(net.dropped.contains(&old), "the old transport was dropped");
    let new = net.current(0).unwrap().server_t;
    assert!(net.ep.wants_input(new));
    assert_eq!(net.ep.stats().routed_transports, 1);
    let s = net.ep.take_session(h).expect("held");
    assert_eq!(s.transport(), Some(new));
    let stats = net.ep.stats();
    assert_eq!(
        (stats.routed_transports, stats.held, stats.sessions),
        (0, 0, 1)
    );
    assert!(!net.ep.wants_input(new), "a taken session's transport");
}
