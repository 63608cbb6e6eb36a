//! Hostile peers against the Tokio listener: the shared suite of
//! `ft_session_testkit::hostile` (issue 15), with this adapter's glue.
#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ft_session_core::Config;
use ft_session_testkit::hostile::{Counts, LegitStream, Service, ServiceLog, Target};
use ft_session_tokio::{FtListener, FtStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// Every blocking call of the legitimate client is bounded.
const IO_LIMIT: Duration = Duration::from_secs(30);

struct TokioTarget {
    rt: Option<Runtime>,
    listener: Arc<FtListener>,
    addr: SocketAddr,
    log: Arc<ServiceLog>,
    acceptor: JoinHandle<()>,
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

impl Target for TokioTarget {
    const NAME: &'static str = "tokio";

    fn start(config: Config) -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = Arc::new(rt.block_on(FtListener::bind("127.0.0.1:0", config))?);
        let addr = listener.local_addr()?;
        let log = Arc::new(ServiceLog::default());
        let (l, lg) = (listener.clone(), log.clone());
        let acceptor = rt.spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, lg.clone()));
            }
        });
        Ok(TokioTarget {
            rt: Some(rt),
            listener,
            addr,
            log,
            acceptor,
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
        let rt = self.rt.as_ref().unwrap().handle().clone();
        let s = rt.block_on(async {
            tokio::time::timeout(IO_LIMIT, FtStream::connect(addr, config)).await
        })??;
        Ok(Box::new(Legit { rt, s }))
    }
}

impl Drop for TokioTarget {
    fn drop(&mut self) {
        self.acceptor.abort();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

struct Legit {
    rt: Handle,
    s: FtStream,
}

impl Read for Legit {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rt = self.rt.clone();
        rt.block_on(async { tokio::time::timeout(IO_LIMIT, self.s.read(buf)).await })?
    }
}

impl Write for Legit {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let rt = self.rt.clone();
        rt.block_on(async { tokio::time::timeout(IO_LIMIT, self.s.write(buf)).await })?
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LegitStream for Legit {
    fn shutdown_write(&mut self) -> io::Result<()> {
        let rt = self.rt.clone();
        rt.block_on(async { tokio::time::timeout(IO_LIMIT, self.s.shutdown()).await })?
    }

    fn close(&mut self) -> io::Result<()> {
        let rt = self.rt.clone();
        rt.block_on(async { tokio::time::timeout(IO_LIMIT, self.s.close()).await })?
    }

    fn session_id(&self) -> Option<[u8; 16]> {
        self.s.session_id().map(|id| id.0)
    }

    fn reconnects(&self) -> u64 {
        self.s.stats().reconnects
    }
}

ft_session_testkit::hostile_suite!(TokioTarget;
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
