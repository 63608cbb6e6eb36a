//! Hostile peers against the smol listener: the shared suite of
//! `ft_session_testkit::hostile` (issue 15), with this adapter's glue.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use ft_session_core::Config;
use ft_session_smol::{FtListener, FtStream, SmolRuntime};
use ft_session_testkit::hostile::{Counts, LegitStream, Service, ServiceLog, Target};
use smol::channel::Sender;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Executor, Task, Timer};

/// Every blocking call of the legitimate client is bounded.
const IO_LIMIT: Duration = Duration::from_secs(30);

/// Runs `f` to completion on this thread, failing with `TimedOut` after
/// [`IO_LIMIT`].
fn block<T>(f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    smol::block_on(smol::future::or(f, async {
        Timer::after(IO_LIMIT).await;
        Err(io::ErrorKind::TimedOut.into())
    }))
}

/// A listener on an executor of its own (two threads), dropped with it: its
/// tasks hold the executor only weakly, so dropping the target ends them.
struct SmolTarget {
    ex: Option<Arc<Executor<'static>>>,
    rt: SmolRuntime,
    listener: Arc<FtListener>,
    addr: SocketAddr,
    log: Arc<ServiceLog>,
    acceptor: Option<Task<()>>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

/// The suite's service over one accepted session.
async fn serve(mut s: FtStream, log: Arc<ServiceLog>) {
    log.started();
    let mut svc = Service::new();
    let mut buf = vec![0u8; 64 * 1024];
    let r: io::Result<()> = async {
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            svc.received(&buf[..n]);
        }
        let mut reply = svc.reply();
        while let Some(chunk) = reply.next_chunk() {
            s.write_all(&chunk).await?;
            log.wrote(chunk.len(), s.stats().core.max_retained);
        }
        s.close().await
    }
    .await;
    log.ended(r.is_ok(), s.stats().core.max_retained);
}

impl Target for SmolTarget {
    const NAME: &'static str = "smol";

    fn start(config: Config) -> io::Result<Self> {
        let ex = Arc::new(Executor::new());
        let weak: Weak<Executor<'static>> = Arc::downgrade(&ex);
        let rt = SmolRuntime::spawn_with(move |task| {
            if let Some(ex) = weak.upgrade() {
                ex.spawn(task).detach();
            }
        });
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let threads = (0..2)
            .map(|_| {
                let (ex, stopped) = (ex.clone(), stopped.clone());
                std::thread::spawn(move || {
                    let _ = smol::block_on(ex.run(stopped.recv()));
                })
            })
            .collect();
        let listener = Arc::new(block(FtListener::bind_on(
            rt.clone(),
            "127.0.0.1:0",
            config,
        ))?);
        let addr = listener.local_addr()?;
        let log = Arc::new(ServiceLog::default());
        let (l, lg, ex2) = (listener.clone(), log.clone(), Arc::downgrade(&ex));
        let acceptor = ex.spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                if let Some(ex) = ex2.upgrade() {
                    ex.spawn(serve(s, lg.clone())).detach();
                }
            }
        });
        Ok(SmolTarget {
            ex: Some(ex),
            rt,
            listener,
            addr,
            log,
            acceptor: Some(acceptor),
            stop: Some(stop),
            threads,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn counts(&self) -> Counts {
        let s = self.listener.stats();
        Counts {
            set: s.endpoint.set,
            sessions: Some(s.endpoint.sessions),
            pending_handshakes: Some(s.endpoint.pending_handshakes),
            refused_handshakes: Some(s.endpoint.refused_handshakes),
        }
    }

    fn log(&self) -> &ServiceLog {
        &self.log
    }

    fn connect(&self, addr: SocketAddr, config: Config) -> io::Result<Box<dyn LegitStream>> {
        let s = block(FtStream::connect_on(self.rt.clone(), addr, config))?;
        Ok(Box::new(Legit(s)))
    }
}

impl Drop for SmolTarget {
    fn drop(&mut self) {
        drop(self.acceptor.take());
        drop(self.stop.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        drop(self.ex.take());
    }
}

struct Legit(FtStream);

impl Read for Legit {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        block(self.0.read(buf))
    }
}

impl Write for Legit {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        block(self.0.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LegitStream for Legit {
    fn shutdown_write(&mut self) -> io::Result<()> {
        block(self.0.shutdown())
    }

    fn close(&mut self) -> io::Result<()> {
        block(self.0.close())
    }

    fn session_id(&self) -> Option<[u8; 16]> {
        self.0.session_id().map(|id| id.0)
    }

    fn reconnects(&self) -> u64 {
        self.0.stats().reconnects
    }
}

ft_session_testkit::hostile_suite!(SmolTarget;
    garbage,
    wrong_magic,
    unsupported_version,
    malformed_hello,
    incomplete_handshake,
    slowloris,
    silent_connections,
    fresh_sessions_dropped,
    fresh_sessions_idle,
    oversized_frame,
    ack_beyond_sent,
    ack_beyond_resent,
    count_beyond_sent,
    resume_unknown_id,
    resume_wrong_proof,
    resume_replayed,
    resume_expired,
    never_reads,
    huge_recv_buffer,
);
