//! The client: a session whose driver dials through the application's
//! [`Connect`]or for the first connection and every reconnect.

use std::future::poll_fn;
use std::io;
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
    rt.spawn(driver);
    let stream = FtStream::new(handle);
    poll_fn(|cx| stream.poll_established(cx)).await?;
    Ok(stream)
}
