//! The tunnel's data path for the async runtimes: one local connection and
//! one session, both directions, written once over futures-io.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;

use ft_session_async::FtStream;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use socket2::Socket;

use super::{arm_reset, PipeEnd, ABORT_LOCAL_RESET, COPY_BUFFER};
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
    let reset = Arc::new(reset);
    let mut reg = stats.register(session.clone(), reset.clone());
    let id = session
        .session_id()
        .map(|id| id.to_string())
        .unwrap_or_default();
    tracing::info!(session = %id, "{label}: session started");
    let end = pipe(&session, local_rd, local_wr).await;
    let end = match end {
        PipeEnd::Done => match session.close().await {
            Ok(()) => PipeEnd::Done,
            Err(e) => PipeEnd::SessionLost(e),
        },
        other => other,
    };
    let s = session.stats();
    match end {
        PipeEnd::Done => tracing::info!(
            session = %id,
            reconnects = s.reconnects,
            retransmitted = s.retransmitted_bytes,
            "{label}: session ended cleanly"
        ),
        PipeEnd::SessionLost(e) => {
            tracing::warn!(session = %id, "{label}: session lost ({e}); resetting the local connection");
            reg.mark_lost();
            arm_reset(&reset);
        }
        PipeEnd::LocalFailed(e) => {
            tracing::warn!(session = %id, "{label}: local connection failed ({e}); aborting the session");
            session.abort(ABORT_LOCAL_RESET);
            arm_reset(&reset);
        }
    }
    // `reset` and the caller's halves are dropped without a shutdown: a
    // clean end already sent its FIN, a reset sends an RST.
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
pub fn reset_handle<S: std::os::fd::AsFd>(s: &S) -> io::Result<Socket> {
    socket2::SockRef::from(s).try_clone()
}
