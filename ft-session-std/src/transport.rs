//! What a session runs over. TCP and Unix streams are driven without
//! blocking by the I/O threads (`crate::runtime`); any other transport is
//! a pair of blocking halves, served by a reader and a writer thread of its
//! own (`crate::threaded`).

use std::any::Any;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use ft_session_async::BoxTransport;
use ft_session_core::TransportInfo;
use smol::Async;

/// Shuts a transport down from any thread; used to unblock its reader and
/// writer when the session drops it.
pub type ShutdownFn = Arc<dyn Fn(Shutdown) + Send + Sync>;

/// The socket under a transport, for what applications ask of a TCP
/// stream: addresses and `TCP_NODELAY`.
pub trait SocketControl: Send + Sync + 'static {
    /// The local address of the socket.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Sets `TCP_NODELAY`.
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
    /// The socket of [`TransportHalves`] made by `TcpStream::split` (and
    /// only those) answers with its `TcpStream`: such halves are driven as
    /// that stream, without their threads.
    #[doc(hidden)]
    fn split_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl SocketControl for TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, nodelay)
    }
}

/// The socket `TcpStream::split` puts into its halves: it marks them as a
/// plain TCP stream (halves a user builds, say TLS over a `TcpStream` whose
/// socket is that stream, are never mistaken for one).
struct SplitTcp(TcpStream);

impl SocketControl for SplitTcp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay)
    }

    fn split_tcp(&self) -> Option<&TcpStream> {
        Some(&self.0)
    }
}

/// A shared handle on a transport's socket.
pub type SocketRef = Arc<dyn SocketControl>;

/// A transport as two blocking halves: one thread reads, one writes, and
/// `shutdown` unblocks both; any halves get a reader and a writer thread per
/// transport. Except those made by `TcpStream::split` (recognised by the
/// `socket` it sets): they are driven as the `TcpStream` itself, without
/// threads, so only their `info` (and `socket`) may be changed; to wrap the
/// stream's reads or writes, wrap it before (or build the halves yourself).
pub struct TransportHalves {
    /// Read side, owned by the transport's reader thread.
    pub reader: Box<dyn Read + Send>,
    /// Write side, owned by the transport's writer thread.
    pub writer: Box<dyn Write + Send>,
    /// Shuts the transport down (must make a blocked `read`/`write` return).
    pub shutdown: ShutdownFn,
    /// Kernel buffer sizes, if pinned and known (only
    /// [`ft_session_core::ReleasePolicy::Implicit`] needs them).
    pub info: TransportInfo,
    /// Its socket, if it has one: `FtStream::peer_addr`, `local_addr` and
    /// `set_nodelay` act on it.
    pub socket: Option<SocketRef>,
}

impl std::fmt::Debug for TransportHalves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportHalves")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A byte-stream transport the session can run over: TCP, Unix sockets, or
/// any `Read + Write` wrapped in [`Locked`] (e.g. a TLS stream).
///
/// A `TcpStream`, a `UnixStream`, or [`TransportHalves`] split from a
/// `TcpStream` are made non-blocking and driven by the adapter's I/O threads
/// like every other session: no thread of their own. Any other transport is
/// [`split`](Transport::split) and read and written from two threads of its
/// own (so a long write never stops heartbeats and acknowledgments from
/// being read): two threads per transport, and a thread handoff per read and
/// per write.
pub trait Transport: Send + 'static {
    /// Splits the transport into independent halves.
    fn split(self) -> io::Result<TransportHalves>;
}

impl Transport for TcpStream {
    fn split(self) -> io::Result<TransportHalves> {
        // Session frames are small and latency-sensitive (heartbeats, acks, handshakes).
        self.set_nodelay(true)?;
        let reader = self.try_clone()?;
        let control = Arc::new(SplitTcp(self.try_clone()?));
        let socket: SocketRef = control.clone();
        Ok(TransportHalves {
            reader: Box::new(reader),
            writer: Box::new(self),
            shutdown: Arc::new(move |how| {
                // Already shut down or reset: nothing left to unblock.
                let _ = control.0.shutdown(how);
            }),
            info: TransportInfo::default(),
            socket: Some(socket),
        })
    }
}

#[cfg(unix)]
impl Transport for std::os::unix::net::UnixStream {
    fn split(self) -> io::Result<TransportHalves> {
        let reader = self.try_clone()?;
        let control = self.try_clone()?;
        Ok(TransportHalves {
            reader: Box::new(reader),
            writer: Box::new(self),
            shutdown: Arc::new(move |how| {
                let _ = control.shutdown(how);
            }),
            info: TransportInfo::default(),
            socket: None,
        })
    }
}

impl Transport for TransportHalves {
    fn split(self) -> io::Result<TransportHalves> {
        Ok(self)
    }
}

/// Makes any `Read + Write + Send` usable as a [`Transport`] when it cannot
/// be split (e.g. a TLS stream): reads and writes take turns on one lock.
///
/// The reader holds the lock while it waits for bytes, so the underlying
/// socket **must have a short read timeout** (say 10-50 ms); the adapter
/// treats `WouldBlock`/`TimedOut` as "nothing yet" and lets the writer in.
/// `shutdown` is called when the session drops the transport; it should shut
/// down the underlying socket (e.g. through a `TcpStream::try_clone`).
pub struct Locked<T> {
    inner: Arc<Mutex<T>>,
    shutdown: ShutdownFn,
}

impl<T> std::fmt::Debug for Locked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locked").finish_non_exhaustive()
    }
}

impl<T: Read + Write + Send + 'static> Locked<T> {
    /// Wraps `stream`; `shutdown` shuts its underlying socket down.
    pub fn new(stream: T, shutdown: impl Fn(Shutdown) + Send + Sync + 'static) -> Self {
        Locked {
            inner: Arc::new(Mutex::new(stream)),
            shutdown: Arc::new(shutdown),
        }
    }
}

struct LockedHalf<T>(Arc<Mutex<T>>);

impl<T: Read> Read for LockedHalf<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(buf)
    }
}

impl<T: Write> Write for LockedHalf<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

impl<T: Read + Write + Send + 'static> Transport for Locked<T> {
    fn split(self) -> io::Result<TransportHalves> {
        Ok(TransportHalves {
            reader: Box::new(LockedHalf(self.inner.clone())),
            writer: Box::new(LockedHalf(self.inner)),
            shutdown: self.shutdown,
            info: TransportInfo::default(),
            socket: None,
        })
    }
}

// What to pin for the implicit policy and how to report it is plain data,
// shared by every adapter: it lives in the core.
pub use ft_session_core::{SocketOptions, DEFAULT_IMPLICIT_SOCKET_BUFFER};

/// A transport opened for a session, as the shared driver takes it.
pub(crate) struct Opened {
    pub(crate) transport: BoxTransport,
    pub(crate) info: TransportInfo,
    pub(crate) socket: Option<ft_session_async::SocketRef>,
    pub(crate) peer: Option<SocketAddr>,
}

/// Takes the transport out of `slot` if it is a `T`.
fn take<T: 'static>(slot: &mut dyn Any) -> Option<T> {
    slot.downcast_mut::<Option<T>>().and_then(Option::take)
}

/// Makes a user's transport something the shared driver can drive: sockets
/// it knows go to the reactor, anything else to a reader and a writer
/// thread. Blocking (it may register with the reactor or start threads), so
/// it runs on the caller's or a blocking thread, never on an I/O thread.
pub(crate) fn open<T: Transport>(t: T) -> io::Result<Opened> {
    let mut slot = Some(t);
    if let Some(tcp) = take::<TcpStream>(&mut slot) {
        return native_tcp(tcp, TransportInfo::default());
    }
    #[cfg(unix)]
    if let Some(unix) = take::<std::os::unix::net::UnixStream>(&mut slot) {
        return Ok(Opened {
            transport: Box::new(Native(Arc::new(Async::new(unix)?))),
            info: TransportInfo::default(),
            socket: None,
            peer: None,
        });
    }
    let Some(t) = slot else {
        return Err(io::Error::other("transport already taken"));
    };
    let halves = t.split()?;
    if let Some(tcp) = halves.socket.as_ref().and_then(|s| s.split_tcp()) {
        // `TcpStream::split`'s halves are clones of this socket: drive it,
        // drop them.
        let tcp = tcp.try_clone()?;
        return native_tcp(tcp, halves.info);
    }
    let info = halves.info;
    let socket = halves.socket.clone().map(|s| {
        let s: ft_session_async::SocketRef = Arc::new(UserSocket(s));
        s
    });
    let peer = socket.as_ref().and_then(|s| s.peer_addr().ok());
    Ok(Opened {
        transport: crate::threaded::spawn(halves)?,
        info,
        socket,
        peer,
    })
}

fn native_tcp(tcp: TcpStream, info: TransportInfo) -> io::Result<Opened> {
    // The handshake is small and must not wait for Nagle; the session
    // applies its own setting once it owns the socket.
    tcp.set_nodelay(true)?;
    let peer = tcp.peer_addr().ok();
    let io = Arc::new(Async::new(tcp)?);
    let socket: ft_session_async::SocketRef = Arc::new(NativeSocket(io.clone()));
    Ok(Opened {
        transport: Box::new(ft_session_async::SpareTransport::new(SpareTcp::new(
            Native(io),
        ))),
        info,
        socket: Some(socket),
        peer,
    })
}

/// A socket the shutdown of which ends the connection even while the user
/// holds other handles on it.
trait Shut {
    fn shut(&self);
}

impl Shut for TcpStream {
    fn shut(&self) {
        // Already shut down or reset: nothing to do.
        let _ = self.shutdown(Shutdown::Both);
    }
}

#[cfg(unix)]
impl Shut for std::os::unix::net::UnixStream {
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

/// A non-blocking socket on the reactor, as a futures-io transport. When
/// the driver lets go of it the connection is shut down (a user's clone of
/// the socket must not keep a dropped transport open, as with the blocking
/// halves' `shutdown`).
struct Native<T: Shut>(Arc<Async<T>>);

impl<T: Shut> Drop for Native<T> {
    fn drop(&mut self) {
        self.0.get_ref().shut();
    }
}

impl<T: Shut> futures_io::AsyncRead for Native<T>
where
    for<'a> &'a T: Read,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl<T: Shut> futures_io::AsyncWrite for Native<T>
where
    for<'a> &'a T: Write,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

/// A reactor TCP socket that the driver reads into its reused read buffers
/// ([`ReadSpare`](ft_session_async::ReadSpare), one `recv` per read while
/// data flows: `ft_session_smol::read_spare_flowing`). Through plain `poll_read`
/// the driver zeroes a fresh 64 KiB allocation for every read, and the
/// allocator's churn (freed by the reader's thread, trimmed, faulted in
/// again page by page) cost the bulk path more than the zeroing itself.
pub(crate) struct SpareTcp {
    io: Native<TcpStream>,
    /// The last read filled its buffer: more is probably waiting.
    more: bool,
}

impl SpareTcp {
    fn new(io: Native<TcpStream>) -> SpareTcp {
        SpareTcp { io, more: false }
    }

    /// A registered socket (shut down when dropped, as every native one).
    pub(crate) fn from_async(io: Arc<Async<TcpStream>>) -> SpareTcp {
        SpareTcp::new(Native(io))
    }

    /// One non-blocking read appended to `buf` (`WouldBlock` if nothing).
    fn read_once(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        ft_session_smol::read_spare_flowing(self.io.0.get_ref(), buf, &mut self.more)
    }
}

impl futures_io::AsyncRead for SpareTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl futures_io::AsyncWrite for SpareTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl ft_session_async::ReadSpare for SpareTcp {
    fn poll_read_spare(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.read_once(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return Poll::Ready(r),
            }
            self.more = false;
            match self.io.0.poll_readable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A reactor TCP socket's addresses and `TCP_NODELAY`.
pub(crate) struct NativeSocket(pub(crate) Arc<Async<TcpStream>>);

impl ft_session_async::SocketControl for NativeSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.get_ref().set_nodelay(nodelay)
    }
}

/// A user's [`SocketRef`] as the shared driver's socket handle.
struct UserSocket(SocketRef);

impl ft_session_async::SocketControl for UserSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use ft_session_async::ReadSpare;
    use std::net::TcpListener;

    /// Reads a stream through `poll_read_spare` as the driver does (reused
    /// 64 KiB buffers, each emptied before the next read): every byte
    /// arrives once, in order, through both the `read_to_end` reads and the
    /// one-`recv` reads of a flowing stream, and `Ok(0)` is the end.
    #[test]
    fn spare_reads_every_byte_in_order() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut w = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (r, _) = l.accept().unwrap();
        // More than the socket buffers hold, so reads find full buffers.
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let data = sent.clone();
        let writer = std::thread::spawn(move || {
            for piece in data.chunks(100_000) {
                w.write_all(piece).unwrap();
            }
        });
        let mut t = SpareTcp::new(Native(Arc::new(Async::new(r).unwrap())));
        let mut got = Vec::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        let (mut reads, mut full) = (0, 0);
        loop {
            buf.clear();
            let n = smol::block_on(std::future::poll_fn(|cx| {
                Pin::new(&mut t).poll_read_spare(cx, &mut buf)
            }))
            .unwrap();
            assert_eq!(n, buf.len(), "the count is what was appended");
            if n == 0 {
                break;
            }
            reads += 1;
            if n == buf.capacity() {
                full += 1;
            }
            got.extend_from_slice(&buf);
        }
        writer.join().unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes differ");
        assert!(reads > 0 && full > 0, "{reads} reads, {full} full");
    }
}
