//! Hostile peers against the std listener: the shared suite of
//! `ft_session_testkit::hostile` (issue 15), with this adapter's glue.
#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ft_session_std::{Config, FtListener, FtStream};
use ft_session_testkit::hostile::{Counts, LegitStream, Service, ServiceLog, Target};

struct StdTarget {
    listener: Arc<FtListener>,
    addr: SocketAddr,
    log: Arc<ServiceLog>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// The suite's service over one accepted session.
fn serve(mut s: FtStream, log: &ServiceLog) {
    log.started();
    let mut svc = Service::new();
    let mut buf = vec![0u8; 64 * 1024];
    let r = (|| -> io::Result<()> {
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            svc.received(&buf[..n]);
        }
        let mut reply = svc.reply();
        while let Some(chunk) = reply.next_chunk() {
            s.write_all(&chunk)?;
            log.wrote(chunk.len(), s.stats().core.max_retained);
        }
        s.close()
    })();
    log.ended(r.is_ok(), s.stats().core.max_retained);
}

impl Target for StdTarget {
    const NAME: &'static str = "std";

    fn start(config: Config) -> io::Result<Self> {
        let listener = Arc::new(FtListener::bind("127.0.0.1:0", config)?);
        let addr = listener.local_addr()?;
        let log = Arc::new(ServiceLog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (l, lg, st) = (listener.clone(), log.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept_timeout(Duration::from_millis(50)) {
                    Ok((s, _)) => {
                        let lg = lg.clone();
                        let _ = std::thread::Builder::new()
                            .stack_size(256 * 1024)
                            .spawn(move || serve(s, &lg));
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        });
        Ok(StdTarget {
            listener,
            addr,
            log,
            stop,
            acceptor: Some(acceptor),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn counts(&self) -> Counts {
        let s = self.listener.stats();
        Counts {
            set: s.set,
            sessions: Some(s.sessions),
            pending_handshakes: Some(s.pending_handshakes),
            refused_handshakes: Some(s.refused_handshakes),
        }
    }

    fn log(&self) -> &ServiceLog {
        &self.log
    }

    fn connect(&self, addr: SocketAddr, config: Config) -> io::Result<Box<dyn LegitStream>> {
        let s = FtStream::connect(addr, config)?;
        // Every read of the suite is bounded.
        s.set_read_timeout(Some(Duration::from_secs(30)));
        Ok(Box::new(Legit(s)))
    }
}

impl Drop for StdTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

struct Legit(FtStream);

impl Read for Legit {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Legit {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl LegitStream for Legit {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }

    fn close(&mut self) -> io::Result<()> {
        self.0.close()
    }

    fn session_id(&self) -> Option<[u8; 16]> {
        self.0.session_id().map(|id| id.0)
    }

    fn reconnects(&self) -> u64 {
        self.0.stats().reconnects
    }
}

ft_session_testkit::hostile_suite!(StdTarget;
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
