//! Glue for runtimes whose transports already are futures-io streams (smol,
//! async-std): a user function becomes a [`Connect`]or and a stream of
//! transports an [`Accept`] source, with no wrapper type in between.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{Accept, Accepted, Connect, ConnectFuture, Connected, Transport};

/// A [`Connect`]or made of a function that opens any futures-io [`Transport`]
/// (called for the first connection and for every reconnect).
#[derive(Debug, Clone)]
pub struct ConnectFn<F>(pub F);

impl<F, Fut, T> Connect for ConnectFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<T>> + Send + 'static,
    T: Transport,
{
    fn connect(&self) -> ConnectFuture {
        let opening = (self.0)();
        Box::pin(async move {
            let transport: crate::BoxTransport = Box::new(opening.await?);
            Ok(Connected::new(transport))
        })
    }
}

/// An [`Accept`] source made of a stream of futures-io [`Transport`]s, each
/// with its peer's address if known (TLS acceptors, Unix listeners, another
/// runtime's TCP listener...).
pub struct AcceptStream<S>(Pin<Box<S>>);

impl<S> AcceptStream<S> {
    /// Accepts the transports `stream` yields, until it ends.
    pub fn new(stream: S) -> Self {
        AcceptStream(Box::pin(stream))
    }
}

impl<S> std::fmt::Debug for AcceptStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptStream").finish_non_exhaustive()
    }
}

impl<S, T> Accept for AcceptStream<S>
where
    S: futures_core::Stream<Item = io::Result<(T, Option<SocketAddr>)>> + Send + 'static,
    T: Transport,
{
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>> {
        let next = match self.0.as_mut().poll_next(cx) {
            Poll::Ready(next) => next,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(next.map(|item| {
            let (transport, peer) = item?;
            Ok(Accepted {
                peer,
                ..Accepted::new(Box::new(transport))
            })
        }))
    }
}
