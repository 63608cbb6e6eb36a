//! The client: a session whose driver dials through the application's
//! [`Connect`]or for the first connection and every reconnect.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use ft_session_core::{Config, Session};

use crate::driver::Driver;
use crate::entropy::OsEntropy;
use crate::stream::{FtStream, Handle};
use crate::{Connect, Runtime};

/// Starts a client session over transports from `connector` and completes
/// once the first handshake is done. The session's driver runs on `rt`.
/// An invalid `config` fails at once with `InvalidInput`
/// ([`SessionError::Config`](ft_session_core::SessionError::Config)).
pub async fn connect<R: Runtime, C: Connect>(
    rt: R,
    config: Config,
    connector: C,
) -> io::Result<FtStream> {
    config.validate()?;
    let seed = OsEntropy.next_u64();
    let session = Session::client(config, rt.now(), seed);
    let handle = Handle::new(session);
    let driver = Driver::client(rt.clone(), handle.clone(), Arc::new(connector));
    let stream = FtStream::new(handle);
    // The first transport connect and handshake run on the caller's task:
    // no hand-off to another thread before the HELLO goes out, and none
    // back when the ACCEPT arrives. The driver moves to a task of its own
    // once the session is established or failed (or if this future is
    // dropped), where it goes on exactly as if spawned at the start.
    let mut inline = Inline {
        rt,
        driver: Some(driver),
    };
    poll_fn(|cx| {
        if let Some(d) = inline.driver.as_mut() {
            if Pin::new(d).poll(cx).is_ready() {
                inline.driver = None;
            }
        }
        stream.poll_established(cx)
    })
    .await?;
    drop(inline);
    Ok(stream)
}

/// A client driver run by `connect`'s own task until the session is
/// established; spawned when dropped, unless it already finished.
struct Inline<R: Runtime> {
    rt: R,
    driver: Option<Driver<R>>,
}

impl<R: Runtime> Drop for Inline<R> {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            // Its wakers still point at `connect`'s task; the new task's
            // first poll registers its own with every source it waits on.
            self.rt.spawn(d);
        }
    }
}
