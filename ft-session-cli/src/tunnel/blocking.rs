//! The tunnel on the blocking std adapter (ft-session-std): the same steps
//! as [`super::pipe`], on two threads per connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ft_session_std::{FtListener, FtStream};
use socket2::SockRef;

use super::{
    announce, arm_reset, ClientArgs, Dial, PipeEnd, Piped, ServerArgs, ABORT_FORWARD_UNREACHABLE,
    ABORT_LOCAL_RESET, ACCEPT_RETRY_DELAY, COPY_BUFFER,
};
use crate::stats::TunnelStats;
use crate::tls;

/// How often a write to a local peer that does not read looks whether the
/// session was lost meanwhile.
const LOCAL_WRITE_POLL: Duration = Duration::from_millis(250);

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = thread::Builder::new().name(name.into()).spawn(f) {
        tracing::error!("cannot start a thread: {e}");
    }
}

/// `tunnel server --runtime std`
pub fn server(a: ServerArgs, stats: TunnelStats) -> Result<(), String> {
    let config = a.opts.config()?;
    let (listener, addr) = if a.opts.tls.tls {
        let tls_config = tls::server_config(&a.opts.tls, &a.listen)?;
        let tcp = TcpListener::bind(&a.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
        let addr = tcp.local_addr().map_err(|e| e.to_string())?;
        (tls::std_listener(tcp, tls_config, config)?, addr)
    } else {
        let listener = FtListener::bind(&a.listen, config)
            .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        (listener, addr)
    };
    announce("server", addr, &format!("forwarding to {}, std", a.forward));
    let forward: Arc<str> = a.forward.into();
    loop {
        match listener.accept() {
            Ok((session, _peer)) => {
                let (forward, stats) = (forward.clone(), stats.clone());
                spawn("ft-session-conn", move || {
                    serve_server(session, &forward, &stats)
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                thread::sleep(ACCEPT_RETRY_DELAY);
            }
        }
    }
}

fn serve_server(session: FtStream, forward: &str, stats: &TunnelStats) {
    let tcp = match TcpStream::connect(forward) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("cannot connect to {forward}: {e}; aborting the session");
            session.abort(ABORT_FORWARD_UNREACHABLE);
            return;
        }
    };
    serve(session, tcp, stats, "server");
}

impl Dial<tls::StdDial> {
    fn connect(&self) -> io::Result<FtStream> {
        match self {
            Dial::Tcp { server, config } => FtStream::connect(server.as_str(), config.clone()),
            Dial::Tls(d) => d.connect(),
        }
    }
}

/// `tunnel client --runtime std`
pub fn client(a: ClientArgs, stats: TunnelStats) -> Result<(), String> {
    let config = a.opts.config()?;
    let dial = Dial::new(&a, config, tls::StdDial::new)?;
    let dial = Arc::new(dial);
    let tcp =
        TcpListener::bind(&a.listen).map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let addr = tcp.local_addr().map_err(|e| e.to_string())?;
    announce("client", addr, &format!("to server {}, std", a.server));
    loop {
        match tcp.accept() {
            Ok((local, peer)) => {
                tracing::debug!(%peer, "new local connection");
                let (dial, stats) = (dial.clone(), stats.clone());
                spawn("ft-session-conn", move || match dial.connect() {
                    Ok(session) => serve(session, local, &stats, "client"),
                    Err(e) => {
                        tracing::warn!(
                            "cannot open a session: {e}; resetting the local connection"
                        );
                        arm_reset(&SockRef::from(&local));
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                thread::sleep(ACCEPT_RETRY_DELAY);
            }
        }
    }
}

/// Pipes `local` and `session` on two threads until both directions end,
/// then closes the session gracefully; a lost session resets `local`, a
/// failed `local` aborts the session.
fn serve(session: FtStream, local: TcpStream, stats: &TunnelStats, label: &str) {
    let _ = local.set_nodelay(true);
    let session = Arc::new(session);
    let dup = match SockRef::from(&local).try_clone() {
        Ok(d) => Arc::new(d),
        Err(e) => {
            tracing::warn!("cannot duplicate the local connection's descriptor: {e}");
            session.abort(ABORT_LOCAL_RESET);
            arm_reset(&SockRef::from(&local));
            return;
        }
    };
    let piped = Piped::start(
        stats,
        session.clone(),
        session.session_id(),
        dup.clone(),
        label,
    );
    // Set once the local connection is being reset (the upward thread's read
    // then returns 0, which must not pass for the local peer's FIN), or when
    // the upward thread saw the session lost.
    let failed = Arc::new(AtomicBool::new(false));
    let up = {
        let (session, failed) = (session.clone(), failed.clone());
        let local = local.try_clone();
        thread::Builder::new()
            .name("ft-session-up".into())
            .spawn(move || match local {
                Ok(local) => upward(&session, local, &failed),
                Err(e) => Err(PipeEnd::LocalFailed(e)),
            })
    };
    let up = match up {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("cannot start a thread: {e}");
            session.abort(ABORT_LOCAL_RESET);
            arm_reset(&dup);
            return;
        }
    };
    let down = downward(&session, &local, &failed);
    let end = match down {
        Ok(()) => match up.join() {
            Ok(Ok(())) => match session.close() {
                Ok(()) => PipeEnd::Done,
                Err(e) => PipeEnd::SessionLost(e),
            },
            Ok(Err(end)) => end,
            Err(_) => PipeEnd::LocalFailed(io::Error::other("upward thread panicked")),
        },
        Err(end) => {
            // Stop the upward thread: SHUT_RD sends nothing to the peer; the
            // flag makes its read of 0 an abort, not an end of stream.
            failed.store(true, Ordering::SeqCst);
            if matches!(end, PipeEnd::LocalFailed(_)) {
                session.abort(ABORT_LOCAL_RESET);
            }
            arm_reset(&dup);
            let _ = local.shutdown(Shutdown::Read);
            let _ = up.join();
            end
        }
    };
    piped.finish(end);
}

/// Local peer → session; its FIN becomes the session's half-close.
fn upward(session: &FtStream, mut local: TcpStream, failed: &AtomicBool) -> Result<(), PipeEnd> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match local.read(&mut buf) {
            Ok(0) if failed.load(Ordering::SeqCst) => {
                return Err(PipeEnd::LocalFailed(io::Error::other("reset")))
            }
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Abort now: the downward thread is waiting on the session.
                session.abort(ABORT_LOCAL_RESET);
                return Err(PipeEnd::LocalFailed(e));
            }
        };
        let mut w = session;
        if let Err(e) = w.write_all(&buf[..n]) {
            // Tell a downward thread stuck on a local peer that does not read.
            failed.store(true, Ordering::SeqCst);
            return Err(PipeEnd::SessionLost(e));
        }
    }
    session
        .shutdown(Shutdown::Write)
        .map_err(PipeEnd::SessionLost)
}

/// Session → local peer; the session's end of stream becomes a FIN.
fn downward(session: &FtStream, local: &TcpStream, failed: &AtomicBool) -> Result<(), PipeEnd> {
    let mut buf = vec![0u8; COPY_BUFFER];
    // A local peer that stops reading must not hide a lost session forever.
    local
        .set_write_timeout(Some(LOCAL_WRITE_POLL))
        .map_err(PipeEnd::LocalFailed)?;
    let mut r = session;
    loop {
        let n = r.read(&mut buf).map_err(PipeEnd::SessionLost)?;
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        let mut w = local;
        while !data.is_empty() {
            match w.write(data) {
                Ok(0) => return Err(PipeEnd::LocalFailed(io::ErrorKind::WriteZero.into())),
                Ok(k) => data = &data[k..],
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if failed.load(Ordering::SeqCst) {
                        return Err(PipeEnd::SessionLost(io::Error::other(
                            "session ended while the local peer was not reading",
                        )));
                    }
                }
                Err(e) => return Err(PipeEnd::LocalFailed(e)),
            }
        }
    }
    local
        .shutdown(Shutdown::Write)
        .map_err(PipeEnd::LocalFailed)
}
