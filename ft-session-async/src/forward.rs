//! The methods every async adapter's `FtStream` and `FtListener` forward to
//! this crate's [`FtStream`](crate::FtStream) and
//! [`Listener`](crate::Listener), written once with their docs so that the
//! adapters keep one vocabulary (same names, signatures and documentation).

/// Expands, inside `impl FtStream { .. }` of an adapter whose `FtStream` is
/// `pub struct FtStream(ft_session_async::FtStream)`, to the methods that
/// only forward to the runtime-neutral stream: `close`, `close_timeout`,
/// `shutdown`, `abort`, `stats`, `session_id`, `outcome`, `peer_addr`,
/// `local_addr`, `set_nodelay`, `nodelay`, `send_bytes`, `poll_send`,
/// `read_chunk`, `poll_read_chunk`. The doc comments before `shutdown` in
/// the call are `shutdown`'s docs (they name the runtime's own half-close).
/// The adapter crate must depend on `ft_session_core`.
#[doc(hidden)]
#[macro_export]
macro_rules! forward_stream_methods {
    ($(#[$shutdown_doc:meta])* shutdown) => {
        /// Closes the session gracefully and waits until both sides know every
        /// byte arrived; bounded by the close timeout (the session's
        /// `max_reconnect_time`), after which the session is aborted and this
        /// fails with `TimedOut`. Unread input is discarded.
        pub async fn close(&self) -> ::std::io::Result<()> {
            self.0.close().await
        }

        /// [`FtStream::close`](Self::close) with an explicit bound.
        pub async fn close_timeout(&self, timeout: ::std::time::Duration) -> ::std::io::Result<()> {
            self.0.close_timeout(timeout).await
        }

        $(#[$shutdown_doc])*
        pub async fn shutdown(&self) -> ::std::io::Result<()> {
            self.0.shutdown().await
        }

        /// Aborts the session at once, telling the peer `code` (0x1000..=0xFFFF).
        pub fn abort(&self, code: u16) {
            self.0.abort(code)
        }

        /// Reconnects, retransmitted bytes, state and the core's counters.
        pub fn stats(&self) -> $crate::StreamStats {
            self.0.stats()
        }

        /// The session id.
        pub fn session_id(&self) -> Option<::ft_session_core::SessionId> {
            self.0.session_id()
        }

        /// How the session ended, once it has.
        pub fn outcome(&self) -> Option<Result<(), ::ft_session_core::SessionError>> {
            self.0.outcome()
        }

        /// The peer's address on the current transport; `NotConnected` while
        /// reconnecting.
        pub fn peer_addr(&self) -> ::std::io::Result<::std::net::SocketAddr> {
            self.0.peer_addr()
        }

        /// The local address of the current transport; `NotConnected` while
        /// reconnecting.
        pub fn local_addr(&self) -> ::std::io::Result<::std::net::SocketAddr> {
            self.0.local_addr()
        }

        /// Sets `TCP_NODELAY` on the current transport and every later one
        /// (default `true`).
        pub fn set_nodelay(&self, nodelay: bool) -> ::std::io::Result<()> {
            self.0.set_nodelay(nodelay)
        }

        /// The `TCP_NODELAY` setting of the session's transports.
        pub fn nodelay(&self) -> bool {
            self.0.nodelay()
        }

        /// Writes all of `data` without copying it (the zero-copy `write_all`):
        /// the session keeps a reference to the buffer until the peer has the
        /// bytes, across reconnects. Not cancel-safe (a prefix may be taken).
        pub async fn send_bytes(&self, data: $crate::Bytes) -> ::std::io::Result<()> {
            self.0.send_bytes(data).await
        }

        /// Queues the front of `data` without copying it; returns how many
        /// bytes were taken (split off `data`). Cancel-safe.
        pub fn poll_send(&self, cx: &mut ::std::task::Context<'_>, data: &mut $crate::Bytes) -> ::std::task::Poll<::std::io::Result<usize>> {
            self.0.poll_send(cx, data)
        }

        /// Reads the next piece of received bytes without copying it; an empty
        /// chunk is end of stream. Cancel-safe.
        pub async fn read_chunk(&self) -> ::std::io::Result<$crate::Bytes> {
            self.0.read_chunk().await
        }

        /// [`FtStream::read_chunk`](Self::read_chunk) as a poll function.
        pub fn poll_read_chunk(&self, cx: &mut ::std::task::Context<'_>) -> ::std::task::Poll<::std::io::Result<$crate::Bytes>> {
            self.0.poll_read_chunk(cx)
        }
    };
}

/// Expands, inside `impl FtListener { .. }` of an adapter whose
/// `FtListener` has the fields `inner: ft_session_async::Listener<R>` and
/// `local_addr: Option<SocketAddr>` and whose `FtStream` is
/// `FtStream(ft_session_async::FtStream)`, to the methods that only forward
/// to the runtime-neutral listener: `accept`, `poll_accept`, `local_addr`,
/// `stats`, `config`, `stop_accepting`, `drain`, `drain_timeout`.
#[doc(hidden)]
#[macro_export]
macro_rules! forward_listener_methods {
    () => {
        /// The next new session and its peer's address (if the transport has one).
        pub async fn accept(
            &self,
        ) -> ::std::io::Result<(FtStream, Option<::std::net::SocketAddr>)> {
            self.inner.accept().await.map(|(s, p)| (FtStream(s), p))
        }

        /// Polls for the next new session.
        pub fn poll_accept(
            &self,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<(FtStream, Option<::std::net::SocketAddr>)>> {
            self.inner
                .poll_accept(cx)
                .map(|r| r.map(|(s, p)| (FtStream(s), p)))
        }

        /// The bound TCP address; `Unsupported` for a listener made by
        /// [`FtListener::from_incoming`](Self::from_incoming), whose transports have no address of its own.
        pub fn local_addr(&self) -> ::std::io::Result<::std::net::SocketAddr> {
            self.local_addr.ok_or_else(|| {
                ::std::io::Error::new(
                    ::std::io::ErrorKind::Unsupported,
                    "listener has no socket address",
                )
            })
        }

        /// The endpoint's counts (attached, parked, expired, pending and refused
        /// handshakes...) and the sessions whose driver still runs.
        pub fn stats(&self) -> $crate::ListenerStats {
            self.inner.stats()
        }

        /// The configuration given to new sessions.
        pub fn config(&self) -> &::ft_session_core::Config {
            self.inner.config()
        }

        /// Stops admitting new sessions: a fresh client is refused with REJECT
        /// `BUSY` (it retries with backoff within its `connect_timeout`, perhaps
        /// on another node), resumes are still served, so attached and parked
        /// sessions go on until they end. [`FtListener::accept`](Self::accept) then fails with
        /// `NotConnected`; sessions established but not yet accepted are closed
        /// gracefully.
        pub fn stop_accepting(&self) {
            self.inner.stop_accepting()
        }

        /// [`FtListener::stop_accepting`](Self::stop_accepting), then waits until every session of
        /// this listener has ended and its task finished, serving their resumes
        /// meanwhile: call it before dropping the listener to let parked
        /// sessions come back and finish. Not bounded (see
        /// [`FtListener::drain_timeout`](Self::drain_timeout)); cancel-safe.
        pub async fn drain(&self) {
            self.inner.drain().await
        }

        /// [`FtListener::drain`](Self::drain) bounded by `timeout`: `TimedOut` if sessions
        /// still run then (they go on; [`FtListener::stats`](Self::stats) counts them).
        pub async fn drain_timeout(&self, timeout: ::std::time::Duration) -> ::std::io::Result<()> {
            self.inner.drain_timeout(timeout).await
        }
    };
}
