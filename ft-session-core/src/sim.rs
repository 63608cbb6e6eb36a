//! Deterministic network simulation: a client [`Session`], a server
//! [`ConnectionSet`] with its sessions, and links between them on a virtual
//! clock. Links deliver in partial chunks with delays, hold at most their
//! buffer sizes in flight, and suffer scheduled faults at exact byte offsets:
//! crashes that each side learns of at a different time (or never),
//! blackholes, pauses, stale bytes from superseded transports, failed
//! connects, outages and replayed resumes; faults on the server's transport
//! alone, loss in one direction only, crashes during backoff, stale bytes at
//! a handshake reader, an old resume overtaking a newer one, silent connects
//! that expire the reader, buffer sizes changing between transports, and
//! lying peers. Stepping is bounded, so a livelock is an error instead of a
//! hang. A side's application sends its data while reading eagerly, or
//! echoes (reads only once it wrote back what it read, like a blocking echo
//! server: [`AppConfig::echoing`]).
//!
//! Each side's adapter follows one of the two drive contracts (chosen from
//! the seed, or with [`Pair::set_batched`]): it writes each Transmit whole
//! before polling the next, or it polls a batch ahead into a
//! [`TransmitQueue`], the link accepts a random part of what fits (a partial
//! write), and the adapter reports each accepted amount with
//! [`Input::Written`].
//!
//! Used by this crate's property tests, the fuzz targets and the adapters'
//! tests; enable with the `sim` feature. Nothing here reads a clock: the
//! caller gives the start [`Instant`].

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{Config, TransportInfo};
use crate::connection_set::{Admission, ConnectionSet, SetEvent};
use crate::error::{ReadError, SessionError, WriteError};
use crate::frame::SessionId;
use crate::handshake::{HandshakeReader, HandshakeStep, SeededEntropy};
use crate::session::{Event, Input, Output, Session, SessionState, Transmit, TransportId};
use crate::transmit_queue::TransmitQueue;

/// How far ahead a batched adapter polls, drawn per side: one frame at a
/// time, a few frames, hundreds of KiB, or everything.
const BATCH_LIMITS: [usize; 4] = [1, 40 * 1024, 256 * 1024, usize::MAX];

/// What a write to one end of a transport finds.
enum Room {
    /// Closed or unknown: the write fails, the bytes are dropped.
    Gone,
    /// The direction silently loses everything: written (while its
    /// buffer, never drained, has room), then lost.
    Lost(usize),
    /// Bytes the direction still holds.
    Free(usize),
}

/// A small deterministic generator (splitmix64) for schedules and chunking.
#[derive(Debug, Clone)]
pub struct Rng(SeededEntropy);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(SeededEntropy::new(seed))
    }

    /// Next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi` (returns `lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p_percent`/100.
    pub fn chance(&mut self, p_percent: u64) -> bool {
        self.next_u64() % 100 < p_percent
    }
}

/// Deterministic payload bytes for tests.
pub fn pattern(seed: u64, len: usize) -> Bytes {
    let mut r = SeededEntropy::new(seed);
    let mut v = vec![0u8; len];
    crate::handshake::Entropy::fill(&mut r, &mut v);
    Bytes::from(v)
}

/// A fault, applied to the client's current transport when the link has
/// delivered a given number of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Fault {
    /// The transport dies: bytes in flight vanish; each side learns after its
    /// delay, or never (`None`: found by idle timeout, or half-open).
    Crash {
        /// When the client learns, in ms.
        client_notice_ms: Option<u16>,
        /// When the server learns, in ms.
        server_notice_ms: Option<u16>,
    },
    /// The transport silently stops delivering, both ways, for good.
    Blackhole,
    /// The transport stops delivering for a while (bytes held).
    Pause {
        /// How long, in ms.
        ms: u16,
    },
    /// Bytes once sent on a superseded transport reach both sides again.
    StaleBytes,
    /// The last resume message seen is replayed on a new transport.
    DuplicateResume,
    /// The next `n` connect attempts fail.
    ConnectFailures {
        /// How many.
        n: u8,
    },
    /// Every connect attempt fails for this long.
    Outage {
        /// How long, in ms.
        ms: u32,
    },
    /// The transport the server's session uses dies on the server's side
    /// alone: the server learns after the delay (or never); the client,
    /// whose end stays open, finds out by idle timeout (half-open from the
    /// other side).
    ServerCrash {
        /// When the server learns, in ms.
        server_notice_ms: Option<u16>,
    },
    /// From now on the current transport silently loses every byte in one
    /// direction (the other still delivers).
    OneWay {
        /// The client-to-server direction (else server-to-client).
        to_server: bool,
    },
    /// The transport dies, the client's next connect fails, and while the
    /// client backs off the server learns of the loss.
    CrashInBackoff,
    /// The next transport's server end first receives stale bytes from an
    /// older transport (the first bytes the server received on it, whose
    /// first message it already processed: a RESUME, or a HELLO while the
    /// client resumes), before the client's own: a replayed RESUME must not
    /// be admitted, a session made for a replayed HELLO must not be taken
    /// for the client's.
    StaleHandshake,
    /// The resume before the last one is replayed on a new transport, after
    /// the newer one was seen: an old resume overtaking a newer one.
    ResumeOvertaken,
    /// The next transport connects but delivers nothing from the client: the
    /// server's handshake reader expires, the client's handshake times out.
    SilentConnect,
    /// Transports from now on have other (truthfully declared) buffer sizes.
    ResizeBuffers {
        /// Index into a small table of sizes.
        size: u8,
    },
    /// Like [`Fault::StaleHandshake`], but the stale bytes are the ones the
    /// client wrote on the older transport, delivered or not: a resume whose
    /// transport died with it in flight reaches the server for the first
    /// time, ahead of the client's own newer one on the same transport. The
    /// server cannot tell it from a genuine resume (valid proof, fresh
    /// attempt) and admits it; the client's newer RESUME then arrives inside
    /// the resumed stream, so both sides end with a protocol violation
    /// (typed, never silent loss). Not a fault sessions survive.
    StaleUnseenResume,
    /// An authenticated peer lies: an ACK for bytes never sent reaches one
    /// side on its live transport (both sides must end with a violation).
    LyingAck {
        /// Delivered to the server (else to the client).
        to_server: bool,
    },
}

/// Buffer sizes [`Fault::ResizeBuffers`] picks from (each side's send and
/// receive buffer; the link holds their sum in flight per direction).
const RESIZE_SIZES: [u64; 4] = [16 * 1024, 48 * 1024, 128 * 1024, 256 * 1024];

/// A fault and when it strikes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ScheduledFault {
    /// Total bytes delivered by the link (both directions, all transports) at
    /// which the fault strikes.
    pub at_byte: u64,
    /// The fault.
    pub fault: Fault,
}

/// Link behaviour.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Smallest one-way delay.
    pub latency_min: Duration,
    /// Largest one-way delay.
    pub latency_max: Duration,
    /// Largest chunk delivered at once (chunks are drawn in 1..=this).
    pub max_chunk: usize,
    /// Time for a connect to succeed or fail.
    pub connect_delay: Duration,
    /// Real bytes one direction holds in flight (sender's send buffer plus
    /// receiver's receive buffer); a transmit that does not fit waits.
    pub capacity: usize,
    /// What the adapters tell the sessions of each transport (for the
    /// implicit bound). May understate `capacity` to provoke `DataLost`.
    pub declared: TransportInfo,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(20),
            max_chunk: 4096,
            connect_delay: Duration::from_millis(5),
            capacity: 256 * 1024,
            declared: TransportInfo {
                send_buffer: Some(128 * 1024),
                recv_buffer: Some(128 * 1024),
            },
        }
    }
}

/// What one side's application does.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Bytes to send.
    pub data: Bytes,
    /// Largest piece per `send`/`write` call.
    pub write_chunk: usize,
    /// Use zero-copy `send` (else `write`).
    pub zero_copy: bool,
    /// Largest read per pump (small values exercise backpressure).
    pub read_chunk: usize,
    /// Call `close` instead of `shutdown` once everything was sent and the
    /// peer's end of stream was read.
    pub close_after_eof: bool,
    /// Echo instead of sending `data`: read at most `read_chunk` bytes (8 KiB
    /// at most) only once everything read before was written back, the way
    /// a blocking echo server does, so this side reads nothing while its
    /// writes are blocked. Finishes its direction after the peer's end of
    /// stream. Ignores `data` and step-wise controls.
    pub echo: bool,
}

impl AppConfig {
    /// Sends `data` in 16 KiB pieces, reads eagerly, shuts down when done.
    pub fn sending(data: Bytes) -> Self {
        AppConfig {
            data,
            write_chunk: 16 * 1024,
            zero_copy: true,
            read_chunk: usize::MAX,
            close_after_eof: false,
            echo: false,
        }
    }

    /// Echoes what it reads (see [`AppConfig::echo`]).
    pub fn echoing() -> Self {
        AppConfig {
            echo: true,
            ..AppConfig::sending(Bytes::new())
        }
    }
}

/// Step-wise control of one side's application (see [`Pair::new_step_wise`]):
/// totals the caller has allowed so far, so operation sequences decide when
/// bytes are written, read and when the direction ends.
#[derive(Debug, Clone, Copy, Default)]
struct Controls {
    /// Bytes of the data the application may have written in total.
    send: usize,
    /// Bytes the application may have read in total.
    read: usize,
    /// The application finishes its direction once `send` bytes are written.
    finish: bool,
}

/// One side's application state.
#[derive(Debug)]
struct App {
    cfg: AppConfig,
    sent: usize,
    /// Bytes the session accepted (unlike `sent`, never bumped past the data).
    accepted: usize,
    received: Vec<u8>,
    eof: bool,
    outcome: Option<Result<(), SessionError>>,
    read_error: Option<SessionError>,
    /// Echo: bytes read and not yet written back (from `echo_off`).
    echo_pending: Vec<u8>,
    echo_off: usize,
    /// Echo: bytes written back (accepted by the session).
    echoed: Vec<u8>,
    /// Echo: the direction was finished.
    echo_done: bool,
}

impl App {
    fn new(cfg: AppConfig) -> Self {
        App {
            cfg,
            sent: 0,
            accepted: 0,
            received: Vec::new(),
            eof: false,
            outcome: None,
            read_error: None,
            echo_pending: Vec::new(),
            echo_off: 0,
            echoed: Vec::new(),
            echo_done: false,
        }
    }

    /// Bytes this application has written (accepted by its session).
    fn written(&self) -> &[u8] {
        if self.cfg.echo {
            &self.echoed
        } else {
            &self.cfg.data[..self.accepted]
        }
    }

    /// One round of an echoing application (see [`AppConfig::echo`]).
    fn echo(&mut self, s: &mut Session) -> bool {
        let mut progress = false;
        let mut buf = [0u8; 8192];
        let want = self.cfg.read_chunk.clamp(1, buf.len());
        loop {
            while self.echo_off < self.echo_pending.len() {
                match s.write(&self.echo_pending[self.echo_off..]) {
                    Ok(n) if n > 0 => {
                        let from = self.echo_off;
                        self.echoed
                            .extend_from_slice(&self.echo_pending[from..from + n]);
                        self.echo_off += n;
                        progress = true;
                    }
                    Ok(_) | Err(WriteError::Blocked) => return progress,
                    Err(_) => {
                        // Finished or failed: nothing more is written back.
                        self.echo_off = self.echo_pending.len();
                        self.eof = true;
                        break;
                    }
                }
            }
            self.echo_pending.clear();
            self.echo_off = 0;
            if self.eof || self.read_error.is_some() {
                break;
            }
            match s.read(&mut buf[..want]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    self.echo_pending.extend_from_slice(&buf[..n]);
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Session(e)) => self.read_error = Some(e),
            }
            progress = true;
        }
        if self.eof && !self.echo_done {
            self.echo_done = true;
            if self.cfg.close_after_eof {
                s.close();
            } else {
                s.shutdown();
            }
            progress = true;
        }
        progress
    }

    /// One round of application work; returns whether anything happened.
    /// With `ctl`, only what the caller allowed so far happens.
    fn act(&mut self, s: &mut Session, ctl: Option<Controls>) -> bool {
        if self.cfg.echo {
            return self.echo(s);
        }
        let mut progress = false;
        if let Some(c) = ctl {
            if c.finish && c.send < self.cfg.data.len() {
                // The direction ends here: what was allowed is all there is.
                self.cfg.data.truncate(c.send);
            }
        }
        let limit = ctl.map_or(self.cfg.data.len(), |c| c.send.min(self.cfg.data.len()));
        while self.sent < limit {
            let end = (self.sent + self.cfg.write_chunk).min(limit);
            let r = if self.cfg.zero_copy {
                let mut piece = self.cfg.data.slice(self.sent..end);
                s.send(&mut piece)
            } else {
                s.write(&self.cfg.data[self.sent..end])
            };
            match r {
                Ok(n) if n > 0 => {
                    self.sent += n;
                    self.accepted += n;
                    progress = true;
                }
                Ok(_) | Err(WriteError::Blocked) => break,
                Err(_) => {
                    // Finished or failed: nothing more will be accepted.
                    self.sent = self.cfg.data.len() + 1;
                    break;
                }
            }
        }
        if self.sent == self.cfg.data.len() && ctl.map_or(true, |c| c.finish) {
            // Everything accepted: finish our direction.
            if self.cfg.close_after_eof {
                if self.eof {
                    s.close();
                    self.sent += 1;
                    progress = true;
                }
            } else {
                s.shutdown();
                self.sent += 1;
                progress = true;
            }
        }
        let mut budget = match ctl {
            Some(c) => c.read.saturating_sub(self.received.len()),
            None => self.cfg.read_chunk,
        };
        let mut buf = [0u8; 8192];
        while budget > 0 && !self.eof && self.read_error.is_none() {
            let want = budget.min(buf.len());
            match s.read(&mut buf[..want]) {
                Ok(0) => {
                    self.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    budget -= n;
                    progress = true;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Session(e)) => {
                    self.read_error = Some(e);
                    progress = true;
                }
            }
        }
        progress
    }
}

/// Why a simulation could not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// More steps than the budget: a livelock.
    #[error("no end after {steps} steps (livelock?)")]
    StepBudget {
        /// Steps taken.
        steps: u64,
    },
    /// The virtual clock passed its limit.
    #[error("virtual time limit passed")]
    TimeBudget,
    /// Nothing left to do although sessions are still running.
    #[error("stalled: no event pending but sessions still running")]
    Stalled,
    /// A resume was admitted whose attempt is not above one the server had
    /// already been handed for the session (a replay, or an old resume
    /// overtaking a newer one).
    #[error("a replayed resume was admitted")]
    ReplayAdmitted,
}

/// The end of a simulation.
#[derive(Debug)]
pub struct SimOutcome {
    /// How the client session ended.
    pub client: Result<(), SessionError>,
    /// How the client's server session ended (`None` if none was ever created).
    pub server: Option<Result<(), SessionError>>,
    /// Bytes the client application read.
    pub client_received: Vec<u8>,
    /// Bytes the server application read.
    pub server_received: Vec<u8>,
    /// What the client sent.
    pub client_data: Bytes,
    /// What the server sent (for an echoing server, what it wrote back).
    pub server_data: Bytes,
    /// Steps taken.
    pub steps: u64,
    /// Virtual time elapsed.
    pub elapsed: Duration,
    /// Faults that struck.
    pub faults_applied: usize,
    /// Client counters.
    pub client_stats: crate::session::Stats,
    /// Most bytes any session retained at once.
    pub max_retained: u64,
    /// Largest retention capacity any session reported.
    pub max_capacity: u64,
    /// Times a session was seen retaining more than its capacity (must be 0).
    pub capacity_violations: u64,
    /// Lying ACKs delivered ([`Fault::LyingAck`]).
    pub lies: u64,
    /// Resumes the server's set refused (unknown, forged, replayed, expired).
    pub rejected_resumes: u64,
    /// Batched drive ([`Pair::set_batched`]): writes the link accepted
    /// only in part.
    pub partial_writes: u64,
}

#[derive(Debug)]
struct Dir {
    queue: VecDeque<(Instant, Bytes)>,
    in_flight: usize,
    last_at: Option<Instant>,
    /// The sending end closed: the receiver learns after the queue drains.
    eof: bool,
    /// Recent bytes written, replayed by [`Fault::StaleBytes`].
    history: Vec<u8>,
    /// The first bytes delivered (the handshake and what followed it),
    /// replayed by [`Fault::StaleHandshake`].
    delivered: Vec<u8>,
}

/// Appends `bytes` to `v`, keeping only the last 8 KiB.
fn keep_recent(v: &mut Vec<u8>, bytes: &[u8]) {
    v.extend_from_slice(bytes);
    if v.len() > 8192 {
        let cut = v.len() - 8192;
        v.drain(..cut);
    }
}

impl Dir {
    fn new() -> Self {
        Dir {
            queue: VecDeque::new(),
            in_flight: 0,
            last_at: None,
            eof: false,
            history: Vec::new(),
            delivered: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Conn {
    client_tid: TransportId,
    server_tid: TransportId,
    c2s: Dir,
    s2c: Dir,
    client_open: bool,
    server_open: bool,
    blackholed: bool,
    /// Bytes in flight per direction, fixed when it connected (a kernel's
    /// pinned buffers do not grow).
    capacity: usize,
    /// One direction silently loses everything ([`Fault::OneWay`]).
    lost_c2s: bool,
    lost_s2c: bool,
    paused_until: Option<Instant>,
    reader: Option<HandshakeReader>,
    owner: Option<SessionId>,
    /// A pure replay transport with no client end.
    replay: bool,
    /// The server's reader read the client's own first message from the
    /// start of this transport and handed it to the set (`Some(true)`: a
    /// RESUME, `Some(false)`: a HELLO).
    hello_read: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    ConnectDone { conn: usize },
    ConnectFailed { tid: TransportId },
    ClientLost { tid: TransportId },
    ServerLost { conn: usize },
}

struct ServerSide {
    session: Session,
    app: App,
    held: Option<Transmit>,
    /// Batched drive: Transmits polled and not yet accepted by the link.
    queue: TransmitQueue,
}

/// Two ends and a link on a virtual clock. See the module docs.
pub struct Pair {
    /// The virtual clock.
    pub now: Instant,
    start: Instant,
    /// The client session.
    pub client: Session,
    client_app: App,
    client_held: Option<Transmit>,
    /// Batched drive (see the module docs): the client's queue.
    client_queue: TransmitQueue,
    /// Batched drive: how far ahead each side polls (`None`: the default
    /// contract, one whole Transmit at a time).
    batch: Option<(usize, usize)>,
    /// Draws partial write sizes (apart from `rng`, so the default contract
    /// sees the same link schedule as before batching existed).
    write_rng: Rng,
    /// The server's connection set.
    pub set: ConnectionSet,
    servers: HashMap<SessionId, ServerSide>,
    server_app_cfg: AppConfig,
    /// Step-wise control of the applications (`None`: they run by themselves).
    client_ctl: Option<Controls>,
    server_ctl: Option<Controls>,
    conns: Vec<Conn>,
    pending: Vec<(Instant, Pending)>,
    link: LinkConfig,
    rng: Rng,
    entropy: SeededEntropy,
    next_server_tid: TransportId,
    faults: VecDeque<ScheduledFault>,
    faults_applied: usize,
    link_bytes: u64,
    connect_failures: u32,
    outage_until: Option<Instant>,
    last_resume: Option<Vec<u8>>,
    /// The resume seen before `last_resume`.
    older_resume: Option<Vec<u8>>,
    /// The next transport gets stale bytes first (`Some(true)`: bytes
    /// written, delivered or not) / carries nothing from the client.
    stale_next: Option<bool>,
    silent_next: bool,
    /// Violations provoked by [`Fault::LyingAck`].
    lies: u64,
    /// Per session, the highest resume attempt handed to the set so far:
    /// admitting one not above it would admit a replay (R1).
    resumes_seen: HashMap<SessionId, u64>,
    replay_admitted: bool,
    steps: u64,
    max_retained: u64,
    max_capacity: u64,
    capacity_violations: u64,
    partial_writes: u64,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("elapsed", &(self.now - self.start))
            .field("client", &self.client.state())
            .field("servers", &self.servers.len())
            .field("conns", &self.conns.len())
            .finish()
    }
}

/// Everything a simulated run needs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Seed for chunking, delays and entropy.
    pub seed: u64,
    /// Client session settings.
    pub client: Config,
    /// Server session and connection-set settings.
    pub server: Config,
    /// Link behaviour.
    pub link: LinkConfig,
    /// The client application.
    pub client_app: AppConfig,
    /// The server application (for every server session).
    pub server_app: AppConfig,
    /// Faults, in order of `at_byte`.
    pub faults: Vec<ScheduledFault>,
}

/// A configuration with short timers, suited to simulations.
pub fn fast_config() -> Config {
    Config {
        max_reconnect_time: Duration::from_secs(20),
        heartbeat_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(1000),
        handshake_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(500),
        max_frame_payload: 16 * 1024,
        send_buffer_capacity: 256 * 1024,
        recv_buffer_capacity: 256 * 1024,
        ..Config::default()
    }
}

impl Pair {
    /// A pair at virtual time `start`; the client asks for its first transport at once.
    pub fn new(start: Instant, sc: Scenario) -> Pair {
        let mut faults: Vec<ScheduledFault> = sc.faults;
        faults.sort_by_key(|f| f.at_byte);
        let mut rng = Rng::new(sc.seed);
        let client = Session::client(sc.client, start, rng.next_u64());
        let mut write_rng = Rng::new(sc.seed ^ 0x0ba7_c4ed_5717_e5a1);
        let batch = write_rng.chance(50).then(|| {
            let mut pick = || BATCH_LIMITS[write_rng.range(0, 3) as usize];
            (pick(), pick())
        });
        let mut p = Pair {
            now: start,
            start,
            client,
            client_app: App::new(sc.client_app),
            client_held: None,
            client_queue: TransmitQueue::new(),
            batch: None,
            write_rng,
            set: ConnectionSet::new(sc.server),
            servers: HashMap::new(),
            server_app_cfg: sc.server_app,
            client_ctl: None,
            server_ctl: None,
            conns: Vec::new(),
            pending: Vec::new(),
            link: sc.link,
            entropy: SeededEntropy::new(rng.next_u64()),
            rng,
            next_server_tid: 1000,
            faults: faults.into(),
            faults_applied: 0,
            link_bytes: 0,
            connect_failures: 0,
            outage_until: None,
            last_resume: None,
            older_resume: None,
            stale_next: None,
            silent_next: false,
            lies: 0,
            resumes_seen: HashMap::new(),
            replay_admitted: false,
            steps: 0,
            max_retained: 0,
            max_capacity: 0,
            capacity_violations: 0,
            partial_writes: 0,
        };
        p.set_batched(batch);
        p
    }

    /// Chooses the adapters' drive contract before the pair runs: `None`,
    /// each Transmit written whole before the next is polled; `Some((client,
    /// server))`, Transmits polled up to that many bytes ahead, written
    /// partially and reported with [`Input::Written`].
    pub fn set_batched(&mut self, batch: Option<(usize, usize)>) {
        self.batch = batch;
        self.client.set_reports_written(batch.is_some());
        for s in self.servers.values_mut() {
            s.session.set_reports_written(batch.is_some());
        }
    }

    /// The drive contract in use (see [`Pair::set_batched`]).
    pub fn batched(&self) -> Option<(usize, usize)> {
        self.batch
    }

    /// The server session paired with the client, once the client knows its id.
    pub fn server(&self) -> Option<&Session> {
        self.client
            .session_id()
            .and_then(|id| self.servers.get(&id))
            .map(|s| &s.session)
    }

    /// Bytes delivered by the link so far.
    pub fn link_bytes(&self) -> u64 {
        self.link_bytes
    }

    /// Number of server sessions ever created (orphans included).
    pub fn server_sessions(&self) -> usize {
        self.servers.len()
    }

    /// True once the client and its server session have both ended.
    pub fn is_done(&self) -> bool {
        let server_done = match self.server() {
            Some(s) => s.is_finished(),
            // The client failed before any server session matched it.
            None => true,
        };
        self.client.is_finished()
            && server_done
            && self.client_held.is_none()
            && self.client_queue.is_empty()
    }

    // ---- step-wise driving (operation sequences, fuzzing) ----

    /// A pair whose applications act only when told: each side's data (from
    /// the scenario's apps) is written as far as [`Self::client_send`] /
    /// [`Self::server_send`] allowed, read as far as [`Self::client_read`] /
    /// [`Self::server_read`] allowed, and ended by [`Self::client_shutdown`] /
    /// [`Self::server_shutdown`]. Drive it with [`Self::pump`],
    /// [`Self::advance`] or [`Self::advance_until`], and finish with
    /// [`Self::release_all`] and [`Self::run`].
    pub fn new_step_wise(start: Instant, sc: Scenario) -> Pair {
        let mut p = Pair::new(start, sc);
        p.client_ctl = Some(Controls::default());
        p.server_ctl = Some(Controls::default());
        p
    }

    /// Step-wise: the client application may write `n` more bytes (ignored
    /// once it shut down).
    pub fn client_send(&mut self, n: usize) {
        if let Some(c) = self.client_ctl.as_mut().filter(|c| !c.finish) {
            c.send = c.send.saturating_add(n);
        }
    }

    /// Step-wise: every server application may write `n` more bytes (ignored
    /// once it shut down).
    pub fn server_send(&mut self, n: usize) {
        if let Some(c) = self.server_ctl.as_mut().filter(|c| !c.finish) {
            c.send = c.send.saturating_add(n);
        }
    }

    /// Step-wise: the client application may read `n` more bytes.
    pub fn client_read(&mut self, n: usize) {
        if let Some(c) = self.client_ctl.as_mut() {
            c.read = c.read.max(self.client_app.received.len()).saturating_add(n);
        }
    }

    /// Step-wise: the server application may read `n` more bytes.
    pub fn server_read(&mut self, n: usize) {
        let have = self.server_received().map_or(0, <[u8]>::len);
        if let Some(c) = self.server_ctl.as_mut() {
            c.read = c.read.max(have).saturating_add(n);
        }
    }

    /// Step-wise: the client application ends its direction after what it
    /// was allowed to write.
    pub fn client_shutdown(&mut self) {
        if let Some(c) = self.client_ctl.as_mut() {
            c.finish = true;
        }
    }

    /// Step-wise: the server applications end their direction after what they
    /// were allowed to write.
    pub fn server_shutdown(&mut self) {
        if let Some(c) = self.server_ctl.as_mut() {
            c.finish = true;
            let allowed = c.send.min(self.server_app_cfg.data.len());
            self.server_app_cfg.data.truncate(allowed);
        }
    }

    /// Step-wise: lets both applications write everything allowed so far,
    /// read without limit and shut down, so [`Self::run`] can finish.
    pub fn release_all(&mut self) {
        self.client_shutdown();
        self.server_shutdown();
        for c in [self.client_ctl.as_mut(), self.server_ctl.as_mut()]
            .into_iter()
            .flatten()
        {
            c.read = usize::MAX;
        }
    }

    /// Applies a fault to the current transport now, whatever the byte count.
    pub fn apply_fault_now(&mut self, fault: Fault) {
        self.apply_fault(fault);
    }

    /// Adds a fault to the schedule (`at_byte` counts from the start of the
    /// run; see [`Self::link_bytes`]).
    pub fn schedule_fault(&mut self, fault: ScheduledFault) {
        let at = self.faults.partition_point(|f| f.at_byte <= fault.at_byte);
        self.faults.insert(at, fault);
    }

    /// Processes every event due until `deadline`, then sets the clock to
    /// it; stops early after `max_steps` advances. Returns the advances made.
    pub fn advance_until(&mut self, deadline: Instant, max_steps: u64) -> u64 {
        let mut steps = 0;
        self.pump();
        while steps < max_steps && self.next_time().is_some_and(|t| t <= deadline) {
            self.advance();
            self.pump();
            steps += 1;
        }
        if steps < max_steps {
            self.now = self.now.max(deadline);
        }
        steps
    }

    /// Bytes the client application has written (accepted by its session).
    pub fn client_sent(&self) -> &[u8] {
        &self.client_app.cfg.data[..self.client_app.accepted]
    }

    /// Bytes the client application has read.
    pub fn client_received(&self) -> &[u8] {
        &self.client_app.received
    }

    /// How the client session ended, once it has.
    pub fn client_outcome(&self) -> Option<&Result<(), SessionError>> {
        self.client_app.outcome.as_ref()
    }

    fn paired_app(&self) -> Option<&App> {
        let id = self.client.session_id()?;
        self.servers.get(&id).map(|s| &s.app)
    }

    /// Bytes the server application paired with the client has written.
    pub fn server_sent(&self) -> Option<&[u8]> {
        self.paired_app().map(App::written)
    }

    /// Bytes the server application paired with the client has read.
    pub fn server_received(&self) -> Option<&[u8]> {
        self.paired_app().map(|a| &a.received[..])
    }

    /// How the server session paired with the client ended, once it has.
    pub fn server_outcome(&self) -> Option<&Result<(), SessionError>> {
        self.paired_app().and_then(|a| a.outcome.as_ref())
    }

    /// True if a replayed resume was admitted (never should be).
    pub fn replay_admitted(&self) -> bool {
        self.replay_admitted
    }

    /// Runs until both ends finished, within `max_steps` and `max_time`.
    pub fn run(mut self, max_steps: u64, max_time: Duration) -> Result<SimOutcome, SimError> {
        loop {
            self.pump();
            if self.replay_admitted {
                return Err(SimError::ReplayAdmitted);
            }
            if self.is_done() {
                // Let the last frames land, so both applications read everything.
                for _ in 0..10_000 {
                    if !self.advance() {
                        break;
                    }
                    self.pump();
                }
                return Ok(self.outcome());
            }
            self.steps += 1;
            if self.steps > max_steps {
                return Err(SimError::StepBudget { steps: self.steps });
            }
            if self.now - self.start > max_time {
                return Err(SimError::TimeBudget);
            }
            if !self.advance() {
                return Err(SimError::Stalled);
            }
        }
    }

    fn outcome(mut self) -> SimOutcome {
        let client = self.client_app.outcome.clone().unwrap_or(Ok(()));
        let id = self.client.session_id();
        let server_side = id.and_then(|id| self.servers.remove(&id));
        let (server, server_received, echoed) = match server_side {
            Some(s) => (
                s.app.outcome.clone().or(Some(Ok(()))),
                s.app.received,
                s.app.echoed,
            ),
            None => (None, Vec::new(), Vec::new()),
        };
        let server_data = if self.server_app_cfg.echo {
            Bytes::from(echoed)
        } else {
            self.server_app_cfg.data.clone()
        };
        SimOutcome {
            client,
            server,
            client_received: std::mem::take(&mut self.client_app.received),
            server_received,
            client_data: self.client_app.cfg.data.clone(),
            server_data,
            steps: self.steps,
            elapsed: self.now - self.start,
            faults_applied: self.faults_applied,
            client_stats: self.client.stats(),
            max_retained: self.max_retained,
            max_capacity: self.max_capacity,
            capacity_violations: self.capacity_violations,
            partial_writes: self.partial_writes,
            lies: self.lies,
            rejected_resumes: self.set.counts().rejected_resumes,
        }
    }

    // ---- pumping outputs ----

    /// Runs applications and drains every session's outputs at the current time.
    pub fn pump(&mut self) {
        for _ in 0..1_000_000 {
            let mut progress = self.client_app.act(&mut self.client, self.client_ctl);
            progress |= self.drain_client();
            let ids: Vec<SessionId> = self.servers.keys().copied().collect();
            for id in ids {
                progress |= self.drain_server(id);
            }
            while let Some(ev) = self.set.poll_event() {
                progress = true;
                let (SetEvent::Evicted(id) | SetEvent::Expired(id)) = ev;
                let input = match ev {
                    SetEvent::Evicted(_) => Input::Evicted,
                    SetEvent::Expired(_) => Input::Timeout,
                };
                if let Some(s) = self.servers.get_mut(&id) {
                    s.session.handle_input(self.now, input);
                }
            }
            self.observe();
            if !progress {
                return;
            }
        }
    }

    fn observe(&mut self) {
        let mut check = |s: &Session| {
            self.max_retained = self.max_retained.max(s.retained());
            self.max_capacity = self.max_capacity.max(s.retain_capacity());
            if s.retained() > s.retain_capacity() {
                self.capacity_violations += 1;
            }
        };
        check(&self.client);
        for s in self.servers.values() {
            check(&s.session);
        }
    }

    fn drain_client(&mut self) -> bool {
        if let Some((limit, _)) = self.batch {
            return self.drain_client_batched(limit);
        }
        let mut progress = false;
        // Like a real adapter, abandon a blocked write once the session has
        // moved off its transport (a blackholed socket never drains).
        if self
            .client_held
            .as_ref()
            .is_some_and(|t| self.client.transport() != Some(t.transport))
        {
            self.client_held = None;
            progress = true;
        }
        if let Some(t) = self.client_held.take() {
            match self.try_write(true, t) {
                Ok(()) => progress = true,
                Err(t) => {
                    self.client_held = Some(t);
                    return false;
                }
            }
        }
        while let Some(out) = self.client.poll_output() {
            progress = true;
            match out {
                Output::Transmit(t) => {
                    if let Err(t) = self.try_write(true, t) {
                        self.client_held = Some(t);
                        break;
                    }
                }
                out => self.client_output(out),
            }
        }
        progress
    }

    /// The client's outputs other than Transmits.
    fn client_output(&mut self, out: Output) {
        match out {
            Output::Transmit(_) => {}
            Output::Connect { transport } => self.connect(transport),
            Output::DropTransport { transport } => {
                if let Some(ci) = self
                    .conns
                    .iter()
                    .position(|c| c.client_tid == transport && !c.replay)
                {
                    let c = &mut self.conns[ci];
                    if c.client_open {
                        c.client_open = false;
                        c.c2s.eof = true;
                        // Bytes toward the closed end vanish; the peer's
                        // buffers stay full until it learns (see Crash).
                        c.s2c.queue.clear();
                    }
                }
            }
            Output::Event(Event::Finished(r)) => self.client_app.outcome = Some(r),
            Output::Event(_) => {}
        }
    }

    /// The batched drive of the client: write what the link takes, poll
    /// ahead up to `limit` bytes, write again, until nothing moves.
    fn drain_client_batched(&mut self, limit: usize) -> bool {
        let mut queue = std::mem::take(&mut self.client_queue);
        let mut progress = false;
        loop {
            let mut moved = self.write_client(&mut queue);
            while queue.len() < limit {
                let Some(out) = self.client.poll_output() else {
                    break;
                };
                moved = true;
                match out {
                    Output::Transmit(t) => queue.push(t),
                    Output::DropTransport { transport } => {
                        // Its last frames (an ABORT) as far as the link
                        // takes them now; the rest is dropped with it.
                        self.write_client(&mut queue);
                        queue.discard(transport);
                        self.client_output(Output::DropTransport { transport });
                    }
                    out => self.client_output(out),
                }
            }
            moved |= self.write_client(&mut queue);
            progress |= moved;
            if !moved {
                break;
            }
        }
        self.client_queue = queue;
        progress
    }

    /// Writes the client's queue and reports what the link accepted.
    fn write_client(&mut self, queue: &mut TransmitQueue) -> bool {
        let current = self.client.transport();
        let (moved, reports) = self.write_queue(true, queue, current);
        for (transport, bytes) in reports {
            self.client
                .handle_input(self.now, Input::Written { transport, bytes });
        }
        moved
    }

    /// Writes what the link accepts of `queue` (a random part of what fits:
    /// a partial write); returns whether anything moved and the accepted
    /// amounts to report. Transmits for a closed transport are dropped, as a
    /// failing write would drop them; a blocked write to a transport the
    /// session has left (`current`) is abandoned, as a real adapter does.
    fn write_queue(
        &mut self,
        from_client: bool,
        queue: &mut TransmitQueue,
        current: Option<TransportId>,
    ) -> (bool, Vec<(TransportId, usize)>) {
        let mut moved = false;
        let mut reports = Vec::new();
        while let Some(tid) = queue.transport() {
            let room = match self.link_room(from_client, tid) {
                Room::Gone => {
                    queue.discard(tid);
                    moved = true;
                    continue;
                }
                Room::Free(0) | Room::Lost(0) if Some(tid) != current => {
                    queue.discard(tid);
                    moved = true;
                    continue;
                }
                Room::Free(0) | Room::Lost(0) => break,
                Room::Free(n) => n,
                Room::Lost(n) => {
                    let n = n.min(queue.front_len());
                    queue.advance(n);
                    self.link_lose(from_client, tid, n);
                    reports.push((tid, n));
                    moved = true;
                    continue;
                }
            };
            // One vectored write of up to 16 slices, of which the link takes
            // a random part of what fits.
            let mut slices = [IoSlice::new(&[]); 16];
            let k = queue.io_slices(&mut slices);
            let offered: usize = slices[..k].iter().map(|s| s.len()).sum();
            let want = offered.min(room);
            let n = if self.write_rng.chance(50) {
                want
            } else {
                self.write_rng.range(1, want as u64) as usize
            };
            if n < offered {
                self.partial_writes += 1;
            }
            let mut bytes = Vec::with_capacity(n);
            for sl in &slices[..k] {
                let c = (n - bytes.len()).min(sl.len());
                bytes.extend_from_slice(&sl[..c]);
                if bytes.len() == n {
                    break;
                }
            }
            queue.advance(n);
            self.link_push(from_client, tid, bytes);
            reports.push((tid, n));
            moved = true;
        }
        (moved, reports)
    }

    fn drain_server(&mut self, id: SessionId) -> bool {
        let mut progress = false;
        let Some(mut side) = self.servers.remove(&id) else {
            return false;
        };
        progress |= side.app.act(&mut side.session, self.server_ctl);
        if let Some((_, limit)) = self.batch {
            progress |= self.drain_server_batched(id, &mut side, limit);
            self.servers.insert(id, side);
            return progress;
        }
        let mut blocked = false;
        if side
            .held
            .as_ref()
            .is_some_and(|t| side.session.transport() != Some(t.transport))
        {
            side.held = None;
            progress = true;
        }
        if let Some(t) = side.held.take() {
            match self.try_write(false, t) {
                Ok(()) => progress = true,
                Err(t) => {
                    side.held = Some(t);
                    blocked = true;
                }
            }
        }
        while !blocked {
            let Some(out) = side.session.poll_output() else {
                break;
            };
            progress = true;
            match out {
                Output::Transmit(t) => {
                    if let Err(t) = self.try_write(false, t) {
                        side.held = Some(t);
                        blocked = true;
                    }
                }
                out => self.server_output(id, &mut side, out),
            }
        }
        self.servers.insert(id, side);
        progress
    }

    /// A server session's outputs other than Transmits.
    fn server_output(&mut self, id: SessionId, side: &mut ServerSide, out: Output) {
        match out {
            Output::Transmit(_) | Output::Connect { .. } => {}
            Output::DropTransport { transport } => {
                if let Some(c) = self.conns.iter_mut().find(|c| c.server_tid == transport) {
                    if c.server_open {
                        c.server_open = false;
                        c.s2c.eof = true;
                        c.c2s.queue.clear();
                    }
                }
            }
            Output::Event(Event::Parked) => {
                self.set.parked(self.now, &side.session);
            }
            Output::Event(Event::Finished(r)) => {
                self.set.finished(self.now, id, &r);
                side.app.outcome = Some(r);
            }
            Output::Event(_) => {}
        }
    }

    /// The batched drive of a server session (see `drain_client_batched`).
    fn drain_server_batched(&mut self, id: SessionId, side: &mut ServerSide, limit: usize) -> bool {
        let mut queue = std::mem::take(&mut side.queue);
        let mut progress = false;
        loop {
            let mut moved = self.write_server(side, &mut queue);
            while queue.len() < limit {
                let Some(out) = side.session.poll_output() else {
                    break;
                };
                moved = true;
                match out {
                    Output::Transmit(t) => queue.push(t),
                    Output::DropTransport { transport } => {
                        self.write_server(side, &mut queue);
                        queue.discard(transport);
                        self.server_output(id, side, Output::DropTransport { transport });
                    }
                    out => self.server_output(id, side, out),
                }
            }
            moved |= self.write_server(side, &mut queue);
            progress |= moved;
            if !moved {
                break;
            }
        }
        side.queue = queue;
        progress
    }

    /// Writes a server session's queue and reports what the link accepted.
    fn write_server(&mut self, side: &mut ServerSide, queue: &mut TransmitQueue) -> bool {
        let current = side.session.transport();
        let (moved, reports) = self.write_queue(false, queue, current);
        for (transport, bytes) in reports {
            side.session
                .handle_input(self.now, Input::Written { transport, bytes });
        }
        moved
    }

    /// Writes a transmit into its transport if the link has room. A transmit
    /// for a closed or unknown transport is dropped, as a failing write would be.
    fn try_write(&mut self, from_client: bool, t: Transmit) -> Result<(), Transmit> {
        let len = t.len();
        let lost = match self.link_room(from_client, t.transport) {
            Room::Gone => return Ok(()),
            // One transmit always fits into an empty pipe, as a kernel
            // accepts a partial write; otherwise wait for room.
            Room::Free(room) | Room::Lost(room)
                if room < len && !self.link_empty(from_client, t.transport) =>
            {
                return Err(t)
            }
            Room::Free(_) => false,
            Room::Lost(_) => true,
        };
        if lost {
            self.link_lose(from_client, t.transport, len);
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(len);
        t.write_to(&mut bytes);
        self.link_push(from_client, t.transport, bytes);
        Ok(())
    }

    /// The link's direction from one end of transport `tid`.
    fn link_dir(
        &mut self,
        from_client: bool,
        tid: TransportId,
    ) -> Option<(usize, bool, bool, &mut Dir)> {
        let ci = self.conns.iter().position(|c| {
            if from_client {
                c.client_tid == tid && !c.replay
            } else {
                c.server_tid == tid
            }
        })?;
        let c = &mut self.conns[ci];
        let capacity = c.capacity;
        Some(if from_client {
            (capacity, c.client_open, c.lost_c2s, &mut c.c2s)
        } else {
            (capacity, c.server_open, c.lost_s2c, &mut c.s2c)
        })
    }

    /// What a write to `tid` would find.
    fn link_room(&mut self, from_client: bool, tid: TransportId) -> Room {
        match self.link_dir(from_client, tid) {
            None => Room::Gone,
            Some((_, open, _, dir)) if !open || dir.eof => Room::Gone,
            // Written, then lost on the way, while the buffer has room.
            Some((capacity, _, true, dir)) => Room::Lost(capacity.saturating_sub(dir.in_flight)),
            Some((capacity, _, _, dir)) => Room::Free(capacity.saturating_sub(dir.in_flight)),
        }
    }

    /// Written bytes the direction loses: they fill its buffer for good.
    fn link_lose(&mut self, from_client: bool, tid: TransportId, len: usize) {
        if let Some((_, _, _, dir)) = self.link_dir(from_client, tid) {
            dir.in_flight += len;
        }
    }

    fn link_empty(&mut self, from_client: bool, tid: TransportId) -> bool {
        self.link_dir(from_client, tid)
            .is_some_and(|(_, _, _, dir)| dir.in_flight == 0)
    }

    /// Puts written bytes on the link, in chunks with delays.
    fn link_push(&mut self, from_client: bool, tid: TransportId, bytes: Vec<u8>) {
        let max_chunk = self.link.max_chunk as u64;
        let (lat_min, lat_max) = (
            self.link.latency_min.as_micros() as u64,
            self.link.latency_max.as_micros() as u64,
        );
        let now = self.now;
        let mut draws = Vec::new();
        let mut off = 0;
        while off < bytes.len() {
            let n = (self.rng.range(1, max_chunk) as usize).min(bytes.len() - off);
            let lat = self.rng.range(lat_min, lat_max);
            draws.push((n, lat));
            off += n;
        }
        let Some((_, _, _, dir)) = self.link_dir(from_client, tid) else {
            return;
        };
        keep_recent(&mut dir.history, &bytes);
        let len = bytes.len();
        let bytes = Bytes::from(bytes);
        let mut off = 0;
        for (n, lat) in draws {
            let mut at = now + Duration::from_micros(lat);
            if let Some(last) = dir.last_at {
                at = at.max(last);
            }
            dir.last_at = Some(at);
            dir.queue.push_back((at, bytes.slice(off..off + n)));
            off += n;
        }
        dir.in_flight += len;
    }

    fn connect(&mut self, tid: TransportId) {
        let at = self.now + self.link.connect_delay;
        let failing = self.connect_failures > 0 || self.outage_until.is_some_and(|u| self.now < u);
        if failing {
            self.connect_failures = self.connect_failures.saturating_sub(1);
            self.pending.push((at, Pending::ConnectFailed { tid }));
            return;
        }
        self.next_server_tid += 1;
        let silent = std::mem::take(&mut self.silent_next);
        self.conns.push(Conn {
            client_tid: tid,
            server_tid: self.next_server_tid,
            c2s: Dir::new(),
            s2c: Dir::new(),
            client_open: true,
            server_open: true,
            blackholed: false,
            capacity: self.link.capacity,
            lost_c2s: silent,
            lost_s2c: false,
            paused_until: None,
            reader: None,
            owner: None,
            replay: false,
            hello_read: None,
        });
        let conn = self.conns.len() - 1;
        self.pending.push((at, Pending::ConnectDone { conn }));
    }

    // ---- advancing time ----

    fn deliverable(&self, c: &Conn, to_server: bool) -> Option<Instant> {
        if c.blackholed {
            return None;
        }
        let (dir, open) = if to_server {
            (&c.c2s, c.server_open)
        } else {
            (&c.s2c, c.client_open)
        };
        if !open {
            return None;
        }
        let receiver_ready = if to_server {
            match c.owner.and_then(|id| self.servers.get(&id)) {
                Some(s) => s.session.wants_input(),
                None => true,
            }
        } else {
            self.client.wants_input()
        };
        if !receiver_ready {
            return None;
        }
        let at = match dir.queue.front() {
            Some((at, _)) => *at,
            None if dir.eof => dir.last_at.unwrap_or(self.now),
            None => return None,
        };
        Some(match c.paused_until {
            Some(p) => at.max(p),
            None => at,
        })
    }

    fn next_time(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for c in &self.conns {
            consider(self.deliverable(c, true));
            consider(self.deliverable(c, false));
            if c.server_open {
                consider(c.reader.as_ref().map(HandshakeReader::deadline));
            }
        }
        for (t, _) in &self.pending {
            consider(Some(*t));
        }
        consider(self.client.poll_timeout());
        for s in self.servers.values() {
            consider(s.session.poll_timeout());
        }
        consider(self.set.poll_timeout());
        next
    }

    /// Moves the clock to the next event and processes everything due then.
    /// Returns false if nothing is pending at all.
    pub fn advance(&mut self) -> bool {
        let Some(t) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(t);
        let now = self.now;
        // Pending notices and connects.
        let due: Vec<Pending> = {
            let mut due = Vec::new();
            self.pending.retain(|(at, p)| {
                if *at <= now {
                    due.push(*p);
                    false
                } else {
                    true
                }
            });
            due
        };
        for p in due {
            self.apply_pending(p);
        }
        // Deliveries: one chunk per due direction per advance keeps interleavings varied.
        for ci in 0..self.conns.len() {
            for to_server in [true, false] {
                if self
                    .deliverable(&self.conns[ci], to_server)
                    .is_some_and(|at| at <= now)
                {
                    self.deliver(ci, to_server);
                }
            }
        }
        // Handshake readers past their deadline: the server drops the transport.
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            if c.server_open && c.reader.as_ref().is_some_and(|r| r.is_expired(now)) {
                self.conns[ci].reader = None;
                self.server_close(ci, None);
            }
        }
        // Timers.
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_input(now, Input::Timeout);
        }
        for s in self.servers.values_mut() {
            if s.session.poll_timeout().is_some_and(|t| t <= now) {
                s.session.handle_input(now, Input::Timeout);
            }
        }
        if self.set.poll_timeout().is_some_and(|t| t <= now) {
            self.set.handle_timeout(now);
        }
        true
    }

    fn apply_pending(&mut self, p: Pending) {
        let now = self.now;
        match p {
            Pending::ConnectDone { conn } => {
                let c = &mut self.conns[conn];
                if !c.client_open {
                    // The client gave up on this attempt meanwhile.
                    c.server_open = false;
                    return;
                }
                c.reader = Some(HandshakeReader::new(now, self.set.config()));
                if let Some(written) = self.stale_next.take() {
                    // Stale bytes of an older transport reach the new reader
                    // first; what the server already received there must not
                    // be admitted again.
                    // Without `written`: the first bytes of the last
                    // transport whose first message the set was handed, so
                    // the stale hello is one the server already processed: a
                    // RESUME (refused as a replay), or a HELLO while the
                    // client resumes (the new session it makes answers with
                    // a SERVER_HELLO, which a resuming client refuses). A
                    // HELLO ahead of a client's own first HELLO cannot be
                    // told from a new client's: the client would take the
                    // session it makes for its own, then see its HELLO land
                    // in that session's stream (a violation, not a fault
                    // sessions survive).
                    let resuming = self.client.session_id().is_some();
                    let stale = self.conns[..conn]
                        .iter()
                        .rev()
                        .filter(|o| {
                            !o.replay && (written || o.hello_read.is_some_and(|r| r || resuming))
                        })
                        .map(|o| {
                            if written {
                                &o.c2s.history
                            } else {
                                &o.c2s.delivered
                            }
                        })
                        .find(|h| !h.is_empty())
                        .cloned();
                    if let Some(stale) = stale {
                        self.conns[conn].replay = true;
                        self.hand_over(conn, true, &stale);
                        self.conns[conn].replay = false;
                    }
                }
                let c = &mut self.conns[conn];
                let info = self.link.declared;
                let tid = c.client_tid;
                self.client.handle_input(
                    now,
                    Input::TransportUp {
                        transport: tid,
                        info,
                    },
                );
            }
            Pending::ConnectFailed { tid } | Pending::ClientLost { tid } => {
                self.client
                    .handle_input(now, Input::TransportLost { transport: tid });
            }
            Pending::ServerLost { conn } => {
                let c = &self.conns[conn];
                let tid = c.server_tid;
                if let Some(s) = c.owner.and_then(|id| self.servers.get_mut(&id)) {
                    s.session
                        .handle_input(now, Input::TransportLost { transport: tid });
                }
            }
        }
    }

    fn deliver(&mut self, ci: usize, to_server: bool) {
        let c = &mut self.conns[ci];
        let dir = if to_server { &mut c.c2s } else { &mut c.s2c };
        let Some((_, mut chunk)) = dir.queue.pop_front() else {
            // Queue drained after the sender closed: the receiver sees EOF.
            dir.eof = false;
            if to_server {
                c.server_open = false;
                let tid = c.server_tid;
                if let Some(s) = c.owner.and_then(|id| self.servers.get_mut(&id)) {
                    s.session
                        .handle_input(self.now, Input::TransportLost { transport: tid });
                }
            } else {
                c.client_open = false;
                let tid = c.client_tid;
                self.client
                    .handle_input(self.now, Input::TransportLost { transport: tid });
            }
            return;
        };
        // A fault due inside this chunk strikes at its exact byte.
        if let Some(f) = self.faults.front() {
            let due_in = f.at_byte.saturating_sub(self.link_bytes);
            if (due_in as usize) < chunk.len() {
                let rest = chunk.split_off(due_in as usize);
                if !rest.is_empty() {
                    dir.queue.push_front((self.now, rest));
                }
            }
        }
        dir.in_flight = dir.in_flight.saturating_sub(chunk.len());
        let room = 8192usize.saturating_sub(dir.delivered.len());
        dir.delivered
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.link_bytes += chunk.len() as u64;
        if !chunk.is_empty() {
            self.hand_over(ci, to_server, &chunk);
        }
        while self
            .faults
            .front()
            .is_some_and(|f| f.at_byte <= self.link_bytes)
        {
            if let Some(f) = self.faults.pop_front() {
                self.apply_fault(f.fault);
            }
        }
    }

    fn hand_over(&mut self, ci: usize, to_server: bool, data: &[u8]) {
        let now = self.now;
        // Both input paths, borrowed and owned, get exercised.
        let owned = self.rng.chance(50);
        let input = |transport| {
            if owned {
                Input::ReceivedBytes {
                    transport,
                    data: Bytes::copy_from_slice(data),
                }
            } else {
                Input::Received { transport, data }
            }
        };
        if !to_server {
            let tid = self.conns[ci].client_tid;
            self.client.handle_input(now, input(tid));
            return;
        }
        let tid = self.conns[ci].server_tid;
        let Some(reader) = self.conns[ci].reader.as_mut() else {
            if let Some(s) = self.conns[ci]
                .owner
                .and_then(|id| self.servers.get_mut(&id))
            {
                s.session.handle_input(now, input(tid));
            }
            return;
        };
        match reader.feed(data) {
            HandshakeStep::NeedMore => {}
            HandshakeStep::Reject { reply, .. } => {
                self.conns[ci].reader = None;
                self.server_close(ci, reply);
            }
            HandshakeStep::Hello { hello, consumed } => {
                self.conns[ci].reader = None;
                let replay = self.conns[ci].replay;
                // The highest attempt of this session the server was handed
                // before this one. Stale bytes may carry a resume the server
                // never saw (its transport died with it in flight): that one
                // is fresh, and admitting it is right; admitting one at or
                // below an attempt already seen is a replay.
                let mut seen_before = None;
                if !replay {
                    let resume = matches!(hello, crate::frame::ClientHello::Resume(_));
                    self.conns[ci].hello_read = Some(resume);
                }
                if let crate::frame::ClientHello::Resume(r) = &hello {
                    if !replay {
                        let mut b = bytes::BytesMut::new();
                        hello.encode(&mut b);
                        self.older_resume = self.last_resume.replace(b.to_vec());
                    }
                    let seen = self.resumes_seen.entry(r.session_id).or_insert(0);
                    seen_before = Some(*seen);
                    *seen = (*seen).max(r.attempt);
                }
                let info = self.link.declared;
                match self.set.admit(now, tid, info, hello, &mut self.entropy) {
                    Admission::Fresh(mut session) => {
                        session.set_reports_written(self.batch.is_some());
                        let id = session.session_id().unwrap_or(SessionId([0; 16]));
                        self.conns[ci].owner = Some(id);
                        self.servers.insert(
                            id,
                            ServerSide {
                                session: *session,
                                app: App::new(self.server_app_cfg.clone()),
                                held: None,
                                queue: TransmitQueue::new(),
                            },
                        );
                    }
                    Admission::Resume { session_id, resume } => {
                        if seen_before.is_some_and(|s| resume.attempt() <= s) {
                            self.replay_admitted = true;
                        }
                        self.conns[ci].owner = Some(session_id);
                        if let Some(s) = self.servers.get_mut(&session_id) {
                            s.session.handle_input(
                                now,
                                Input::Resume {
                                    transport: tid,
                                    resume,
                                    info,
                                },
                            );
                        }
                    }
                    Admission::Reject { reply, .. } => {
                        self.server_close(ci, Some(reply));
                        return;
                    }
                }
                let rest = &data[consumed..];
                if !rest.is_empty() {
                    if let Some(s) = self.conns[ci]
                        .owner
                        .and_then(|id| self.servers.get_mut(&id))
                    {
                        s.session.handle_input(
                            now,
                            Input::Received {
                                transport: tid,
                                data: rest,
                            },
                        );
                    }
                }
            }
        }
    }

    /// The server writes `reply` (if any) on a transport and closes it.
    fn server_close(&mut self, ci: usize, reply: Option<Bytes>) {
        let tid = self.conns[ci].server_tid;
        if let Some(reply) = reply {
            let t = Transmit {
                transport: tid,
                head: crate::frame::FrameHead::EMPTY,
                payload: reply,
            };
            let _ = self.try_write(false, t);
        }
        let c = &mut self.conns[ci];
        c.server_open = false;
        c.s2c.eof = true;
    }

    fn current_conn(&self) -> Option<usize> {
        let tid = self.client.transport()?;
        self.conns
            .iter()
            .rposition(|c| c.client_tid == tid && !c.replay)
    }

    fn apply_fault(&mut self, f: Fault) {
        self.faults_applied += 1;
        let now = self.now;
        match f {
            Fault::Crash {
                client_notice_ms,
                server_notice_ms,
            } => {
                let Some(ci) = self.current_conn() else {
                    return;
                };
                let c = &mut self.conns[ci];
                c.blackholed = true;
                // The bytes in flight vanish, but the dead connection's
                // buffers stay full, as a kernel's do: until a side learns,
                // its writes block instead of being taken and lost too (a
                // crash loses at most what the implicit bound covers).
                for d in [&mut c.c2s, &mut c.s2c] {
                    d.queue.clear();
                    d.eof = false;
                }
                let tid = c.client_tid;
                if let Some(ms) = client_notice_ms {
                    let at = now + Duration::from_millis(u64::from(ms));
                    self.pending.push((at, Pending::ClientLost { tid }));
                }
                if let Some(ms) = server_notice_ms {
                    let at = now + Duration::from_millis(u64::from(ms));
                    self.pending.push((at, Pending::ServerLost { conn: ci }));
                }
            }
            Fault::Blackhole => {
                if let Some(ci) = self.current_conn() {
                    self.conns[ci].blackholed = true;
                }
            }
            Fault::Pause { ms } => {
                if let Some(ci) = self.current_conn() {
                    self.conns[ci].paused_until = Some(now + Duration::from_millis(u64::from(ms)));
                }
            }
            Fault::StaleBytes => {
                let current = self.current_conn();
                for ci in 0..self.conns.len() {
                    if Some(ci) == current || self.conns[ci].replay {
                        continue;
                    }
                    let c = &self.conns[ci];
                    let (ctid, stid) = (c.client_tid, c.server_tid);
                    let (to_client, to_server) = (c.s2c.history.clone(), c.c2s.history.clone());
                    let owner = c.owner;
                    if self.client.transport() != Some(ctid) && !to_client.is_empty() {
                        self.client.handle_input(
                            now,
                            Input::Received {
                                transport: ctid,
                                data: &to_client,
                            },
                        );
                    }
                    if let Some(s) = owner.and_then(|id| self.servers.get_mut(&id)) {
                        if s.session.transport() != Some(stid) && !to_server.is_empty() {
                            s.session.handle_input(
                                now,
                                Input::Received {
                                    transport: stid,
                                    data: &to_server,
                                },
                            );
                        }
                    }
                }
            }
            Fault::DuplicateResume => {
                let Some(bytes) = self.last_resume.clone() else {
                    return;
                };
                self.next_server_tid += 1;
                self.conns.push(Conn {
                    client_tid: u64::MAX,
                    server_tid: self.next_server_tid,
                    c2s: Dir::new(),
                    s2c: Dir::new(),
                    client_open: false,
                    server_open: true,
                    blackholed: false,
                    capacity: self.link.capacity,
                    lost_c2s: false,
                    lost_s2c: false,
                    paused_until: None,
                    reader: Some(HandshakeReader::new(now, self.set.config())),
                    owner: None,
                    replay: true,
                    hello_read: None,
                });
                let ci = self.conns.len() - 1;
                self.hand_over(ci, true, &bytes);
            }
            Fault::ServerCrash { server_notice_ms } => {
                // The transport of the server's session, whichever it is.
                let tid = self.server().and_then(Session::transport);
                let Some(ci) = self.conns.iter().position(|c| Some(c.server_tid) == tid) else {
                    return;
                };
                let c = &mut self.conns[ci];
                c.blackholed = true;
                // The bytes in flight vanish, but the dead connection's
                // buffers stay full, as a kernel's do: until a side learns,
                // its writes block instead of being taken and lost too (a
                // crash loses at most what the implicit bound covers).
                for d in [&mut c.c2s, &mut c.s2c] {
                    d.queue.clear();
                    d.eof = false;
                }
                if let Some(ms) = server_notice_ms {
                    let at = now + Duration::from_millis(u64::from(ms));
                    self.pending.push((at, Pending::ServerLost { conn: ci }));
                }
            }
            Fault::OneWay { to_server } => {
                if let Some(ci) = self.current_conn() {
                    let c = &mut self.conns[ci];
                    let d = if to_server {
                        c.lost_c2s = true;
                        &mut c.c2s
                    } else {
                        c.lost_s2c = true;
                        &mut c.s2c
                    };
                    // Lost from now on, but the sender's buffer still fills
                    // (nothing acknowledges it): writes then block.
                    d.queue.clear();
                }
            }
            Fault::CrashInBackoff => {
                let ci = self.current_conn();
                self.apply_fault(Fault::Crash {
                    client_notice_ms: Some(0),
                    server_notice_ms: None,
                });
                self.faults_applied -= 1;
                self.connect_failures += 1;
                if let Some(ci) = ci {
                    // The client's first retry fails at connect_delay; the
                    // server learns while the client waits to try again.
                    let at = now + self.link.connect_delay + Duration::from_millis(1);
                    self.pending.push((at, Pending::ServerLost { conn: ci }));
                }
            }
            Fault::StaleHandshake => self.stale_next = Some(false),
            Fault::StaleUnseenResume => self.stale_next = Some(true),
            Fault::ResumeOvertaken => {
                if let Some(old) = self.older_resume.clone() {
                    let newer = self.last_resume.clone();
                    self.last_resume = Some(old);
                    self.apply_fault(Fault::DuplicateResume);
                    self.faults_applied -= 1;
                    self.last_resume = newer;
                }
            }
            Fault::SilentConnect => self.silent_next = true,
            Fault::ResizeBuffers { size } => {
                let b = RESIZE_SIZES[usize::from(size) % RESIZE_SIZES.len()];
                self.link.declared = TransportInfo {
                    send_buffer: Some(b),
                    recv_buffer: Some(b),
                };
                // In flight per direction: one side's send buffer and the
                // other's receive buffer, as declared.
                self.link.capacity = (2 * b) as usize;
            }
            Fault::LyingAck { to_server } => {
                // Written by the (authenticated) peer between two of its
                // frames, on its live transport.
                let head = crate::frame::FrameHead::control(&crate::frame::Frame::Ack {
                    received: u64::MAX / 2,
                });
                let from = if to_server {
                    (self.client.state() == SessionState::Established)
                        .then(|| self.client.transport())
                        .flatten()
                } else {
                    self.server()
                        .filter(|s| s.state() == SessionState::Established)
                        .and_then(Session::transport)
                };
                let Some(transport) = from else {
                    return;
                };
                let t = Transmit {
                    transport,
                    head,
                    payload: Bytes::new(),
                };
                if self.try_write(to_server, t).is_ok() {
                    self.lies += 1;
                }
            }
            Fault::ConnectFailures { n } => self.connect_failures += u32::from(n),
            Fault::Outage { ms } => {
                self.outage_until = Some(now + Duration::from_millis(u64::from(ms)));
            }
        }
    }
}

/// A client and a server session, handshaken over an in-memory transport and
/// ready for data: for benchmarks and tests that need no faults. Returns
/// `(client, server, client transport, server transport)`.
pub fn established_pair(
    now: Instant,
    client: Config,
    server: Config,
) -> (Session, Session, TransportId, TransportId) {
    let mut set = ConnectionSet::new(server);
    let mut c = Session::client(client, now, 1);
    let info = LinkConfig::default().declared;
    let mut entropy = SeededEntropy::new(7);
    const SERVER_TID: TransportId = 1;
    let mut reader = HandshakeReader::new(now, set.config());
    let mut server: Option<Session> = None;
    let mut ctid = 0;
    for _ in 0..100 {
        let mut moved = false;
        while let Some(out) = c.poll_output() {
            moved = true;
            match out {
                Output::Connect { transport } => {
                    ctid = transport;
                    c.handle_input(now, Input::TransportUp { transport, info });
                }
                Output::Transmit(t) => {
                    let mut b = Vec::new();
                    t.write_to(&mut b);
                    match server.as_mut() {
                        Some(s) => s.handle_input(
                            now,
                            Input::Received {
                                transport: SERVER_TID,
                                data: &b,
                            },
                        ),
                        None => {
                            if let HandshakeStep::Hello { hello, .. } = reader.feed(&b) {
                                if let Admission::Fresh(s) =
                                    set.admit(now, SERVER_TID, info, hello, &mut entropy)
                                {
                                    server = Some(*s);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(s) = server.as_mut() {
            while let Some(out) = s.poll_output() {
                moved = true;
                if let Output::Transmit(t) = out {
                    let mut b = Vec::new();
                    t.write_to(&mut b);
                    c.handle_input(
                        now,
                        Input::Received {
                            transport: ctid,
                            data: &b,
                        },
                    );
                }
            }
        }
        if !moved {
            break;
        }
    }
    match server {
        Some(s) if c.state() == crate::SessionState::Established => (c, s, ctid, SERVER_TID),
        // Only a broken configuration gets here; callers are tests and benchmarks.
        _ => panic!("handshake did not complete: client {:?}", c.state()),
    }
}

/// Moves `chunks` copies of `chunk` from `client` to `server` over an
/// in-memory transport with zero-copy `send`, reading on the server into
/// `read_buf`; acknowledgments flow back. Returns the bytes the server read.
/// The steady state is what the benchmark measures and the allocation test counts.
#[allow(clippy::too_many_arguments)]
pub fn bulk_transfer(
    now: Instant,
    client: &mut Session,
    server: &mut Session,
    client_tid: TransportId,
    server_tid: TransportId,
    chunk: &Bytes,
    chunks: usize,
    read_buf: &mut [u8],
) -> u64 {
    let mut read = 0u64;
    for _ in 0..chunks {
        let mut piece = chunk.clone();
        while !piece.is_empty() {
            // Blocked only means "drain first"; any other error ends the transfer.
            if let Err(e) = client.send(&mut piece) {
                if e != WriteError::Blocked {
                    return read;
                }
            }
            while let Some(out) = client.poll_output() {
                if let Output::Transmit(t) = out {
                    server.handle_input(
                        now,
                        Input::Received {
                            transport: server_tid,
                            data: t.head.as_slice(),
                        },
                    );
                    if !t.payload.is_empty() {
                        // An in-memory transport hands over its buffers: no copy.
                        server.handle_input(
                            now,
                            Input::ReceivedBytes {
                                transport: server_tid,
                                data: t.payload,
                            },
                        );
                    }
                }
            }
            while let Ok(n) = server.read(read_buf) {
                if n == 0 {
                    break;
                }
                read += n as u64;
            }
            while let Some(out) = server.poll_output() {
                if let Output::Transmit(t) = out {
                    client.handle_input(
                        now,
                        Input::Received {
                            transport: client_tid,
                            data: t.head.as_slice(),
                        },
                    );
                }
            }
        }
    }
    read
}

/// The baseline of [`bulk_transfer`]: copies `chunk` into `dst` `chunks`
/// times, as a transport that copies each send once would. Benchmarks time
/// the two side by side (`benches/pair.rs`, `ft-session-bench`).
pub fn memcpy_transfer(chunk: &[u8], chunks: usize, dst: &mut [u8]) -> u64 {
    let mut copied = 0u64;
    for _ in 0..chunks {
        dst.copy_from_slice(std::hint::black_box(chunk));
        std::hint::black_box(&mut *dst);
        copied += chunk.len() as u64;
    }
    copied
}
