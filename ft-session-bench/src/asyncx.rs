//! [`Net`] on an async runtime ([`Exec`]): raw TCP is the runtime's own
//! socket; a session is `ft_session_async`'s, driven by the adapter crate's
//! runtime (exactly what `ft_session_tokio::connect` / `ft_session_smol::connect`
//! build), over sockets the bench set up.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ft_session_async::Runtime as _;
use ft_session_async::{
    Accept, Accepted, BoxTransport, ConnectFuture, Connected, FtStream, SpareTransport,
};
use ft_session_core::SocketOptions;
use smol::channel::Receiver;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use socket2::SockRef;

use crate::exec::{Acceptor, BoxFut, Exec, Io};
use crate::exp::{self, request, service_of, Join, Kind, Net, Reconnects, Server, Service, Units};
use crate::exp::{CHUNK, REQ};
use crate::net::{self, SockOpts};
use crate::{Ctx, Experiment, Sink};

/// Runs experiment `e` on the async runtime `ex`.
pub(crate) fn run<E: Exec>(ex: E, e: Experiment, ctx: &Ctx, sink: &mut Sink) -> io::Result<()> {
    exp::run(&AsyncNet(Arc::new(ex)), e, ctx, sink)
}

/// [`exp::bulk_summary`] on the async runtime `ex`.
pub(crate) fn bulk_summary<E: Exec>(
    ex: E,
    rounds: usize,
    bytes: u64,
    cc: &Option<String>,
) -> io::Result<Vec<(String, ft_session_testkit::RatioSummary)>> {
    exp::bulk_summary(&AsyncNet(Arc::new(ex)), rounds, bytes, cc)
}

/// E5's client process on the async runtime `ex` (see [`crate::child_main`]).
pub(crate) fn clients<E: Exec>(
    ex: E,
    kind: &Kind,
    addr: SocketAddr,
    o: &SockOpts,
) -> io::Result<()> {
    crate::footprint::serve_parent(&AsyncNet(Arc::new(ex)), kind, addr, o)
}

struct AsyncNet<E>(Arc<E>);

/// A client connection: its stream, and the session behind it if any.
pub(crate) struct Conn {
    io: Option<Box<dyn Io>>,
    session: Option<Arc<FtStream>>,
    /// Bulk writes go through `FtStream::send_bytes` (no copy).
    zero_copy: bool,
}

impl Conn {
    fn take(&mut self) -> io::Result<Box<dyn Io>> {
        self.io
            .take()
            .ok_or_else(|| io::Error::other("connection lost by an earlier failure"))
    }
}

/// A shared session as a stream (`&FtStream` reads and writes).
struct Shared(Arc<FtStream>);

impl futures_io::AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_read(cx, buf)
    }
}

impl futures_io::AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_shutdown(cx)
    }
}

/// Accepts sessions' transports from a bench listener.
struct SessionAccept<E> {
    next: Acceptor,
    pending: Option<BoxFut<io::Result<std::net::TcpStream>>>,
    o: SockOpts,
    _e: std::marker::PhantomData<fn() -> E>,
}

impl<E: Exec> Accept for SessionAccept<E> {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>> {
        let next = self.next.clone();
        let fut = self.pending.get_or_insert_with(|| next());
        let r = match fut.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        self.pending = None;
        Poll::Ready(Some(r.and_then(|s| {
            net::prepare(SockRef::from(&s), &self.o)?;
            let info =
                SocketOptions::default().transport_info(net::sizes(SockRef::from(&s), &self.o)?);
            let transport: BoxTransport = Box::new(SpareTransport::new(E::stream(s)?));
            Ok(Accepted {
                info,
                ..Accepted::new(transport)
            })
        })))
    }
}

/// [`Service::Sink`] on a session read by chunks, without a copy.
async fn sink_chunks(s: FtStream, bytes: u64, done: smol::channel::Sender<()>) {
    let mut units = Units::new(bytes);
    while let Ok(chunk) = s.read_chunk().await {
        if chunk.is_empty() {
            return;
        }
        for _ in 0..units.add(chunk.len()) {
            if done.send(()).await.is_err() {
                return;
            }
        }
    }
}

/// One connection's server loop.
async fn handle<E: Exec>(mut io: Box<dyn Io>, svc: Service) {
    // Not for Echo: 10,000 idle E5 connections would each hold 64 KiB.
    let chunk = || vec![0u8; CHUNK];
    match svc {
        Service::Sink { bytes, done } => {
            let (mut units, mut buf) = (Units::new(bytes), chunk());
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                for _ in 0..units.add(n) {
                    if done.send(()).await.is_err() {
                        return;
                    }
                }
            }
        }
        Service::Echo => {
            let mut req = [0u8; REQ];
            while io.read_exact(&mut req).await.is_ok() {
                let svc = service_of(&req);
                if !svc.is_zero() {
                    E::sleep(svc).await;
                }
                if io.write_all(&req).await.is_err() {
                    return;
                }
            }
        }
        Service::Pipelined { n } => {
            let (mut units, mut buf) = (Units::new(n * REQ as u64), chunk());
            while let Ok(k @ 1..) = io.read(&mut buf).await {
                for _ in 0..units.add(k) {
                    if io.write_all(&[1u8; REQ]).await.is_err() {
                        return;
                    }
                }
            }
        }
        Service::Count(progress) => {
            let mut buf = chunk();
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                progress.add(n);
            }
        }
    }
}

impl<E: Exec> AsyncNet<E> {
    /// [`Net::bulk`] through `FtStream::send_bytes`: each 64 KiB write
    /// shares one buffer, nothing is copied before the kernel.
    fn bulk_zero_copy(
        &self,
        c: &mut Conn,
        s: Arc<FtStream>,
        bytes: u64,
        done: &Receiver<()>,
    ) -> io::Result<Duration> {
        let done = done.clone();
        let mut r = self.each(std::slice::from_mut(c), move |io| {
            let (done, s) = (done.clone(), s.clone());
            Box::pin(async move {
                let chunk: bytes::Bytes = (0..CHUNK).map(|i| (i * 7 + 1) as u8).collect();
                let start = Instant::now();
                let r = async {
                    for _ in 0..bytes / CHUNK as u64 {
                        s.send_bytes(chunk.clone()).await?;
                    }
                    std::future::poll_fn(|cx| s.poll_flush(cx)).await?;
                    done.recv()
                        .await
                        .map_err(|_| io::Error::other("server ended"))?;
                    Ok(start.elapsed())
                }
                .await;
                (io, r)
            })
        })?;
        r.pop().ok_or_else(|| io::Error::other("no result"))
    }

    /// Runs `f(io)` for every connection's stream at once; puts them back.
    fn each<T: Send + 'static>(
        &self,
        conns: &mut [Conn],
        f: impl Fn(Box<dyn Io>) -> BoxFut<(Box<dyn Io>, io::Result<T>)> + Send + Sync + 'static,
    ) -> io::Result<Vec<T>> {
        let ios = conns
            .iter_mut()
            .map(Conn::take)
            .collect::<io::Result<Vec<_>>>()?;
        let rt = self.0.client_rt();
        let n = ios.len();
        let f = Arc::new(f);
        let results = self.0.run(async move {
            let (tx, rx) = smol::channel::unbounded();
            for (i, io) in ios.into_iter().enumerate() {
                let (tx, f) = (tx.clone(), f.clone());
                rt.spawn(async move {
                    let r = f(io).await;
                    let _ = tx.send((i, r)).await;
                });
            }
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                match rx.recv().await {
                    Ok(x) => out.push(x),
                    Err(_) => break,
                }
            }
            out
        });
        if results.len() != n {
            return Err(io::Error::other("a client task ended without a result"));
        }
        let mut values = Vec::with_capacity(n);
        let mut first_err = None;
        for (i, (io, r)) in results {
            conns[i].io = Some(io);
            match r {
                Ok(v) => values.push(v),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(values),
        }
    }
}

impl<E: Exec> Net for AsyncNet<E> {
    type Conn = Conn;

    fn name(&self) -> &'static str {
        E::NAME
    }

    fn serve(&self, kind: &Kind, o: &SockOpts, svc: Service) -> io::Result<Server> {
        let l = net::listen(o)?;
        let addr = l.local_addr()?;
        let (kind, o) = (kind.clone(), o.clone());
        let rt = self.0.server_rt();
        self.0.spawn_server(Box::pin(async move {
            let Ok(next) = E::acceptor(l) else { return };
            let chunks = matches!(kind, Kind::SessionZeroCopy(_));
            match kind {
                Kind::Raw => loop {
                    let s = match next().await {
                        Ok(s) => s,
                        // Out of descriptors or similar: the client side reports it.
                        Err(_) => {
                            E::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                    };
                    if net::prepare(SockRef::from(&s), &o).is_err() {
                        continue;
                    }
                    if let Ok(io) = E::stream(s) {
                        rt.spawn(handle::<E>(Box::new(io), svc.clone()));
                    }
                },
                Kind::Session(config) | Kind::SessionZeroCopy(config) => {
                    let source = SessionAccept::<E> {
                        next,
                        pending: None,
                        o,
                        _e: std::marker::PhantomData,
                    };
                    // The bench validated its config; a bad one serves nothing.
                    let Ok(listener) = ft_session_async::Listener::new(rt.clone(), config, source)
                    else {
                        return;
                    };
                    while let Ok((s, _)) = listener.accept().await {
                        match (&svc, chunks) {
                            (Service::Sink { bytes, done }, true) => {
                                rt.spawn(sink_chunks(s, *bytes, done.clone()))
                            }
                            _ => rt.spawn(handle::<E>(Box::new(s), svc.clone())),
                        }
                    }
                }
            }
        }));
        Ok(Server { addr, stop: None })
    }

    fn connect(
        &self,
        kind: &Kind,
        addr: SocketAddr,
        o: &SockOpts,
        n: usize,
    ) -> io::Result<Vec<Conn>> {
        let (kind, o) = (kind.clone(), o.clone());
        let rt = self.0.client_rt();
        self.0.run(async move {
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                conns.push(match &kind {
                    Kind::Raw => Conn {
                        io: Some(Box::new(E::stream(net::dial(addr, &o)?)?)),
                        session: None,
                        zero_copy: false,
                    },
                    Kind::Session(config) | Kind::SessionZeroCopy(config) => {
                        let o = o.clone();
                        let dial = move || -> ConnectFuture {
                            let o = o.clone();
                            Box::pin(async move {
                                let s = net::dial(addr, &o)?;
                                let info = SocketOptions::default()
                                    .transport_info(net::sizes(SockRef::from(&s), &o)?);
                                Ok(Connected {
                                    info,
                                    ..Connected::new(Box::new(SpareTransport::new(E::stream(s)?)))
                                })
                            })
                        };
                        let s = Arc::new(
                            ft_session_async::connect(rt.clone(), config.clone(), dial).await?,
                        );
                        Conn {
                            io: Some(Box::new(Shared(s.clone()))),
                            session: Some(s),
                            zero_copy: matches!(kind, Kind::SessionZeroCopy(_)),
                        }
                    }
                });
            }
            Ok(conns)
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
            return self.bulk_zero_copy(c, s, bytes, done);
        }
        let done = done.clone();
        let mut r = self.each(std::slice::from_mut(c), move |mut io| {
            let done = done.clone();
            Box::pin(async move {
                let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 7 + 1) as u8).collect();
                let start = Instant::now();
                let r = async {
                    for _ in 0..bytes / CHUNK as u64 {
                        io.write_all(&chunk).await?;
                    }
                    io.flush().await?;
                    done.recv()
                        .await
                        .map_err(|_| io::Error::other("server ended"))?;
                    Ok(start.elapsed())
                }
                .await;
                (io, r)
            })
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
        let per = self.each(conns, move |mut io| {
            Box::pin(async move {
                let mut rtts = Vec::with_capacity(k);
                let r = async {
                    let mut reply = [0u8; REQ];
                    for _ in 0..k {
                        let t = Instant::now();
                        io.write_all(&req).await?;
                        io.read_exact(&mut reply).await?;
                        rtts.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    Ok(())
                }
                .await;
                (io, r.map(|()| rtts))
            })
        })?;
        Ok(per.into_iter().flatten().collect())
    }

    fn pipelined(&self, c: &mut Conn, n: usize) -> io::Result<Duration> {
        let mut r = self.each(std::slice::from_mut(c), move |mut io| {
            Box::pin(async move {
                let r = async {
                    let req = request(Duration::ZERO);
                    let mut reply = [0u8; REQ];
                    let start = Instant::now();
                    for _ in 0..n {
                        io.write_all(&req).await?;
                    }
                    io.flush().await?;
                    io.read_exact(&mut reply).await?;
                    Ok(start.elapsed())
                }
                .await;
                (io, r)
            })
        })?;
        r.pop().ok_or_else(|| io::Error::other("no result"))
    }

    fn load(
        &self,
        conns: &mut Vec<Conn>,
        period: Duration,
        window: Duration,
    ) -> io::Result<(f64, f64)> {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let ex = self.0.clone();
        let (stop2, done2) = (stop.clone(), done.clone());
        // The clients run in the background while this thread measures.
        let mut moved: Vec<Conn> = std::mem::take(conns);
        let n = moved.len();
        let worker = std::thread::spawn(move || {
            let net = AsyncNet(ex);
            let r = net.each(&mut moved, move |mut io| {
                let (stop, done) = (stop2.clone(), done2.clone());
                Box::pin(async move {
                    let r = async {
                        let req = request(Duration::ZERO);
                        let mut reply = [0u8; REQ];
                        let mut next = Instant::now();
                        while !stop.load(Ordering::Relaxed) {
                            io.write_all(&req).await?;
                            io.read_exact(&mut reply).await?;
                            done.fetch_add(1, Ordering::Relaxed);
                            next += period;
                            let now = Instant::now();
                            if next > now {
                                E::sleep(next - now).await;
                            }
                        }
                        Ok(())
                    }
                    .await;
                    (io, r)
                })
            });
            (moved, r)
        });
        let measured = exp::measure_load(&done, period * 10, window);
        stop.store(true, Ordering::Relaxed);
        let (back, r) = worker
            .join()
            .map_err(|_| io::Error::other("load thread panicked"))?;
        *conns = back;
        r?;
        debug_assert_eq!(conns.len(), n);
        Ok(measured)
    }

    fn start_writer(
        &self,
        mut c: Conn,
        chunk: usize,
        written: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Join> {
        let ex = self.0.clone();
        let worker = std::thread::spawn(move || {
            let net = AsyncNet(ex);
            let _ = net.each(std::slice::from_mut(&mut c), move |mut io| {
                let (written, stop) = (written.clone(), stop.clone());
                Box::pin(async move {
                    let r = async {
                        let data = vec![7u8; chunk];
                        while !stop.load(Ordering::Relaxed) {
                            io.write_all(&data).await?;
                            written.fetch_add(chunk as u64, Ordering::SeqCst);
                        }
                        Ok(())
                    }
                    .await;
                    (io, r)
                })
            });
            drop(c);
        });
        Ok(Box::new(move || {
            let _ = worker.join();
        }))
    }
}
