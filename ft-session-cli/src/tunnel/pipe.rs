//! The tunnel's data path for the async runtimes: one local connection and
//! one session, both directions, written once over futures-io.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use ft_session_async::FtStream;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use socket2::Socket;

use super::{arm_reset, PipeEnd, Piped, ABORT_FORWARD_UNREACHABLE, COPY_BUFFER};
use crate::stats::TunnelStats;

/// Pipes `local` (read and write halves, and `reset`, a duplicate of its
/// descriptor) and `session` until both directions end, then closes the
/// session gracefully. A lost session resets the local connection; a failed
/// local connection aborts the session.
pub async fn serve<R, W>(
    session: FtStream,
    local_rd: R,
    local_wr: W,
    reset: Socket,
    stats: &TunnelStats,
    label: &str,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let session = Arc::new(session);
    let piped = Piped::start(
        stats,
        session.clone(),
        session.session_id(),
        Arc::new(reset),
        label,
    );
    let end = match pipe(&session, local_rd, local_wr).await {
        PipeEnd::Done => match session.close().await {
            Ok(()) => PipeEnd::Done,
            Err(e) => PipeEnd::SessionLost(e),
        },
        other => other,
    };
    piped.finish(end);
}

/// Both directions until both end, or the first failure.
async fn pipe<R, W>(session: &FtStream, mut local_rd: R, mut local_wr: W) -> PipeEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let up = async {
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n = match local_rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(PipeEnd::LocalFailed(e)),
            };
            let mut off = 0;
            while off < n {
                off += poll_fn(|cx| session.poll_write(cx, &buf[off..n]))
                    .await
                    .map_err(PipeEnd::SessionLost)?;
            }
        }
        // The local peer's FIN: the far side reads end of stream after every byte.
        poll_fn(|cx| session.poll_shutdown(cx))
            .await
            .map_err(PipeEnd::SessionLost)
    };
    let down = async {
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n = poll_fn(|cx| session.poll_read(cx, &mut buf))
                .await
                .map_err(PipeEnd::SessionLost)?;
            if n == 0 {
                break;
            }
            local_wr
                .write_all(&buf[..n])
                .await
                .map_err(PipeEnd::LocalFailed)?;
        }
        // The far side's FIN, passed on: shutdown(Write) of the local connection.
        local_wr.close().await.map_err(PipeEnd::LocalFailed)
    };
    match futures_lite::future::try_zip(up, down).await {
        Ok(((), ())) => PipeEnd::Done,
        Err(end) => end,
    }
}

/// A duplicate descriptor of a local connection, kept to reset it.
pub fn reset_handle<S: AsFd>(s: &S) -> io::Result<Socket> {
    socket2::SockRef::from(s).try_clone()
}

/// The server's connection to its forward address for `session` (what
/// `connecting` opens), with nodelay set and a reset handle; if either
/// cannot be had, the session is aborted and `None` returned.
pub async fn forward_for<S: AsFd>(
    session: &FtStream,
    forward: &str,
    connecting: impl Future<Output = io::Result<S>>,
) -> Option<(S, Socket)> {
    let tcp = match connecting.await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("cannot connect to {forward}: {e}; aborting the session");
            session.abort(ABORT_FORWARD_UNREACHABLE);
            return None;
        }
    };
    // Interactive protocols (SSH) must not wait for Nagle.
    let _ = socket2::SockRef::from(&tcp).set_tcp_nodelay(true);
    match reset_handle(&tcp) {
        Ok(reset) => Some((tcp, reset)),
        Err(e) => {
            tracing::warn!("cannot duplicate the forward connection's descriptor: {e}");
            session.abort(ABORT_FORWARD_UNREACHABLE);
            None
        }
    }
}

/// The client's session for the local connection `local` (what
/// `connecting` opens), with nodelay set on `local` and its reset handle;
/// if either cannot be had, `local` is reset (or just dropped) and `None`
/// returned.
pub async fn session_for<S: AsFd>(
    local: &S,
    connecting: impl Future<Output = io::Result<FtStream>>,
) -> Option<(FtStream, Socket)> {
    let _ = socket2::SockRef::from(local).set_tcp_nodelay(true);
    let reset = match reset_handle(local) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot duplicate the local connection's descriptor: {e}");
            return None;
        }
    };
    match connecting.await {
        Ok(s) => Some((s, reset)),
        Err(e) => {
            tracing::warn!("cannot open a session: {e}; resetting the local connection");
            arm_reset(&reset);
            None
        }
    }
}
