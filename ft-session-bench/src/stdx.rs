//! [`Net`] on blocking std threads: raw `TcpStream` against
//! `ft_session_std::FtStream` (made through `FtStream::connect_with` and
//! `FtListener::from_incoming` over the bench's sockets, set up as
//! `FtStream::connect` / `FtListener::bind` set up theirs). A thread per
//! connection on the server, per client on the client side. With `--pin`
//! the server's threads run on core 1 and the client's on core 0; the
//! sessions themselves run on the adapter's process-wide I/O threads, which
//! inherit the pinning of the thread that first used the adapter. A
//! zero-copy session ([`Kind::SessionZeroCopy`]) writes its bulk data with
//! `FtStream::send_bytes` and its sink reads with `FtStream::read_chunk`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ft_session_core::SocketOptions;
use ft_session_std::{Bytes, FtListener, FtStream, Transport, TransportHalves};
use smol::channel::Receiver;
use socket2::SockRef;

use crate::exp::{self, request, service_of, Join, Kind, Net, Reconnects, Server, Service, Units};
use crate::exp::{CHUNK, REQ};
use crate::net::{self, on_core, SockOpts};
use crate::{Ctx, Experiment, Sink};

/// Runs experiment `e` on std threads.
pub(crate) fn run(e: Experiment, ctx: &Ctx, sink: &mut Sink) -> io::Result<()> {
    exp::run(&StdNet { pin: ctx.pin }, e, ctx, sink)
}

/// [`exp::bulk_summary`] on std threads.
pub(crate) fn bulk_summary(
    pin: bool,
    rounds: usize,
    bytes: u64,
    cc: &Option<String>,
) -> io::Result<Vec<(String, ft_session_testkit::RatioSummary)>> {
    exp::bulk_summary(&StdNet { pin }, rounds, bytes, cc)
}

/// E5's client process on std threads (see [`crate::child_main`]).
pub(crate) fn clients(kind: &Kind, addr: SocketAddr, o: &SockOpts) -> io::Result<()> {
    crate::footprint::serve_parent(&StdNet { pin: false }, kind, addr, o)
}

struct StdNet {
    pin: bool,
}

trait Rw: Read + Write + Send {}

impl<T: Read + Write + Send> Rw for T {}

/// A client connection: its stream, and the session behind it if any.
pub(crate) struct Conn {
    io: Box<dyn Rw>,
    session: Option<Arc<FtStream>>,
    /// Bulk writes go through `FtStream::send_bytes` (no copy).
    zero_copy: bool,
}

/// A shared session as a stream (`&FtStream` reads and writes).
struct Shared(Arc<FtStream>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// A transport for a session over one of the bench's sockets.
fn halves(s: TcpStream, o: &SockOpts) -> io::Result<TransportHalves> {
    let info = SocketOptions::default().transport_info(net::sizes(SockRef::from(&s), o)?);
    let mut h = s.split()?;
    h.info = info;
    Ok(h)
}

/// One connection's server loop (the blocking twin of the async one).
fn handle(mut io: Box<dyn Rw>, svc: Service) {
    // Not for Echo: 10,000 idle E5 connections would each hold 64 KiB.
    let chunk = || vec![0u8; CHUNK];
    match svc {
        Service::Sink { bytes, done } => {
            let (mut units, mut buf) = (Units::new(bytes), chunk());
            while let Ok(n @ 1..) = io.read(&mut buf) {
                for _ in 0..units.add(n) {
                    if done.send_blocking(()).is_err() {
                        return;
                    }
                }
            }
        }
        Service::Echo => {
            let mut req = [0u8; REQ];
            while io.read_exact(&mut req).is_ok() {
                let svc = service_of(&req);
                if !svc.is_zero() {
                    thread::sleep(svc);
                }
                if io.write_all(&req).is_err() {
                    return;
                }
            }
        }
        Service::Pipelined { n } => {
            let (mut units, mut buf) = (Units::new(n * REQ as u64), chunk());
            while let Ok(k @ 1..) = io.read(&mut buf) {
                for _ in 0..units.add(k) {
                    if io.write_all(&[1u8; REQ]).is_err() {
                        return;
                    }
                }
            }
        }
        Service::Count(progress) => {
            let mut buf = chunk();
            while let Ok(n @ 1..) = io.read(&mut buf) {
                progress.add(n);
            }
        }
    }
}

/// [`Service::Sink`] on a session read by chunks, without a copy.
fn sink_chunks(s: FtStream, bytes: u64, done: smol::channel::Sender<()>) {
    let mut units = Units::new(bytes);
    while let Ok(chunk) = s.read_chunk() {
        if chunk.is_empty() {
            return;
        }
        for _ in 0..units.add(chunk.len()) {
            if done.send_blocking(()).is_err() {
                return;
            }
        }
    }
}

/// Serves one session: by chunks for a zero-copy sink, else as a stream.
fn spawn_session_handler(s: FtStream, svc: Service, chunks: bool) {
    match (svc, chunks) {
        (Service::Sink { bytes, done }, true) => {
            // As in `spawn_handler`: the client side reports a missing thread.
            let _ = thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || sink_chunks(s, bytes, done));
        }
        (svc, _) => spawn_handler(Box::new(s), svc),
    }
}

fn spawn_handler(io: Box<dyn Rw>, svc: Service) {
    // Out of threads: the client side sees the connection go quiet and reports it.
    let _ = thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || handle(io, svc));
}

impl StdNet {
    /// Runs `f` on every connection at once, a thread each (on the client core).
    fn each<T: Send>(
        &self,
        conns: &mut [Conn],
        f: impl Fn(&mut dyn Rw) -> io::Result<T> + Sync,
    ) -> io::Result<Vec<T>> {
        on_core(self.pin, 0, || {
            thread::scope(|s| {
                let hs: Vec<_> = conns
                    .iter_mut()
                    .map(|c| {
                        let f = &f;
                        thread::Builder::new()
                            .stack_size(256 * 1024)
                            .spawn_scoped(s, move || f(&mut *c.io))
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                hs.into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(io::Error::other("client thread panicked")))
                    })
                    .collect()
            })
        })
    }
}

impl Net for StdNet {
    type Conn = Conn;

    fn name(&self) -> &'static str {
        "std"
    }

    fn max_conns(&self) -> (usize, &'static str) {
        // The bench runs a blocking thread per connection and per client
        // (the sessions have none of their own): 10,000 sessions would need
        // some 20,000 threads with their stacks.
        (
            1000,
            "the std bench runs a thread per connection end; more than 1,000 sessions exceed this machine's thread and mapping limits",
        )
    }

    fn serve(&self, kind: &Kind, o: &SockOpts, svc: Service) -> io::Result<Server> {
        let l = net::listen(o)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let o = o.clone();
        let stopping = stop.clone();
        match kind.clone() {
            Kind::Raw => on_core(self.pin, 1, || {
                thread::Builder::new().spawn(move || {
                    for s in l.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(s) = s else { continue };
                        if net::prepare(SockRef::from(&s), &o).is_ok() {
                            spawn_handler(Box::new(s), svc.clone());
                        }
                    }
                })
            })
            .map(drop)?,
            Kind::Session(config) | Kind::SessionZeroCopy(config) => {
                let chunks = matches!(kind, Kind::SessionZeroCopy(_));
                let o2 = o.clone();
                let incoming = std::iter::from_fn(move || {
                    Some(l.accept().and_then(|(s, _)| {
                        net::prepare(SockRef::from(&s), &o2)?;
                        halves(s, &o2)
                    }))
                });
                let listener =
                    on_core(self.pin, 1, || FtListener::from_incoming(config, incoming))?;
                on_core(self.pin, 1, || {
                    thread::Builder::new().spawn(move || {
                        while !stopping.load(Ordering::SeqCst) {
                            match listener.accept_timeout(Duration::from_millis(100)) {
                                Ok((s, _)) => spawn_session_handler(s, svc.clone(), chunks),
                                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                Err(_) => return,
                            }
                        }
                    })
                })
                .map(drop)?;
            }
        }
        Ok(Server {
            addr,
            stop: Some(Box::new(move || {
                stop.store(true, Ordering::SeqCst);
                // Wakes a raw accept loop blocked in accept (a session
                // listener's loop wakes by itself).
                let _ = TcpStream::connect(addr);
            })),
        })
    }

    fn connect(
        &self,
        kind: &Kind,
        addr: SocketAddr,
        o: &SockOpts,
        n: usize,
    ) -> io::Result<Vec<Conn>> {
        on_core(self.pin, 0, || {
            (0..n)
                .map(|_| match kind {
                    Kind::Raw => Ok(Conn {
                        io: Box::new(net::dial(addr, o)?),
                        session: None,
                        zero_copy: false,
                    }),
                    Kind::Session(config) | Kind::SessionZeroCopy(config) => {
                        let o = o.clone();
                        let s = Arc::new(FtStream::connect_with(config.clone(), move || {
                            halves(net::dial(addr, &o)?, &o)
                        })?);
                        Ok(Conn {
                            io: Box::new(Shared(s.clone())),
                            session: Some(s),
                            zero_copy: matches!(kind, Kind::SessionZeroCopy(_)),
                        })
                    }
                })
                .collect()
        })
    }

    fn reconnects(&self, c: &Conn) -> Option<Reconnects> {
        let s = c.session.clone()?;
        Some(Arc::new(move || {
            let st = s.stats();
            (st.reconnects, st.retransmitted_bytes)
        }))
    }

    fn zero_copy(&self) -> bool {
        true
    }

    fn bulk(&self, c: &mut Conn, bytes: u64, done: &Receiver<()>) -> io::Result<Duration> {
        if let (true, Some(s)) = (c.zero_copy, c.session.clone()) {
            // Each 64 KiB write shares one buffer: nothing is copied before
            // the kernel.
            let chunk: Bytes = (0..CHUNK).map(|i| (i * 7 + 1) as u8).collect();
            let mut r = self.each(std::slice::from_mut(c), |_| {
                let start = Instant::now();
                for _ in 0..bytes / CHUNK as u64 {
                    s.send_bytes(chunk.clone())?;
                }
                (&*s).flush()?;
                done.recv_blocking()
                    .map_err(|_| io::Error::other("server ended"))?;
                Ok(start.elapsed())
            })?;
            return r.pop().ok_or_else(|| io::Error::other("no result"));
        }
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 7 + 1) as u8).collect();
        let mut r = self.each(std::slice::from_mut(c), |io| {
            let start = Instant::now();
            for _ in 0..bytes / CHUNK as u64 {
                io.write_all(&chunk)?;
            }
            io.flush()?;
            done.recv_blocking()
                .map_err(|_| io::Error::other("server ended"))?;
            Ok(start.elapsed())
        })?;
        r.pop().ok_or_else(|| io::Error::other("no result"))
    }

    fn rtt_round(
        &self,
        conns: &mut Vec<Conn>,
        service: Duration,
        k: usize,
    ) -> io::Result<Vec<f64>> {
        let req = request(service);
        let per = self.each(conns, |io| {
            let mut reply = [0u8; REQ];
            let mut rtts = Vec::with_capacity(k);
            for _ in 0..k {
                let t = Instant::now();
                io.write_all(&req)?;
                io.read_exact(&mut reply)?;
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(rtts)
        })?;
        Ok(per.into_iter().flatten().collect())
    }

    fn pipelined(&self, c: &mut Conn, n: usize) -> io::Result<Duration> {
        let req = request(Duration::ZERO);
        let mut r = self.each(std::slice::from_mut(c), |io| {
            let mut reply = [0u8; REQ];
            let start = Instant::now();
            for _ in 0..n {
                io.write_all(&req)?;
            }
            io.flush()?;
            io.read_exact(&mut reply)?;
            Ok(start.elapsed())
        })?;
        r.pop().ok_or_else(|| io::Error::other("no result"))
    }

    fn load(
        &self,
        conns: &mut Vec<Conn>,
        period: Duration,
        window: Duration,
    ) -> io::Result<(f64, f64)> {
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let req = request(Duration::ZERO);
        thread::scope(|s| {
            let clients = s.spawn(|| {
                self.each(conns, |io| {
                    let mut reply = [0u8; REQ];
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        io.write_all(&req)?;
                        io.read_exact(&mut reply)?;
                        done.fetch_add(1, Ordering::Relaxed);
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        }
                    }
                    Ok(())
                })
            });
            let measured = exp::measure_load(&done, period * 10, window);
            stop.store(true, Ordering::Relaxed);
            clients
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("load thread panicked")))?;
            Ok(measured)
        })
    }

    fn start_writer(
        &self,
        mut c: Conn,
        chunk: usize,
        written: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Join> {
        let h = on_core(self.pin, 0, || {
            thread::Builder::new().spawn(move || {
                let data = vec![7u8; chunk];
                while !stop.load(Ordering::Relaxed) {
                    if c.io.write_all(&data).is_err() {
                        return;
                    }
                    written.fetch_add(chunk as u64, Ordering::SeqCst);
                }
            })
        })?;
        Ok(Box::new(move || {
            let _ = h.join();
        }))
    }
}
