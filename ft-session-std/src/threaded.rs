//! Blocking [`TransportHalves`] as a futures-io transport for the shared
//! driver: a reader thread and a writer thread per transport, each handing
//! one buffer at a time to the driver. Only transports the reactor cannot
//! drive (TLS in [`Locked`](crate::Locked), a user's own halves) take this
//! path; TCP and Unix streams do not.
//!
//! A write is reported done only once the writer thread has written (and
//! flushed) it: bytes accepted by this transport are in the kernel, so the
//! implicit policy's bound counts nothing held here, and dropping the
//! transport right after a final frame loses nothing.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ft_session_async::BoxTransport;

use crate::transport::{ShutdownFn, TransportHalves};

/// Bytes the reader thread reads at once, and the most one write hands over.
const CHUNK: usize = 64 * 1024;
const MAX_WRITE: usize = 256 * 1024;
/// Pause before retrying a write that timed out (a transport with a write
/// timeout, such as a [`Locked`](crate::Locked) TLS stream).
const WRITE_RETRY: Duration = Duration::from_millis(1);

enum Writing {
    Idle,
    /// Handed to the writer thread.
    Queued(Vec<u8>),
    /// The writer thread has it.
    Busy,
    /// Written and flushed; reported to the next `poll_write`.
    Done(Vec<u8>),
    Failed(Option<io::Error>),
}

enum ReadEnd {
    Eof,
    Failed(io::Error),
}

struct State {
    chunk: Vec<u8>,
    pos: usize,
    end: Option<ReadEnd>,
    reader: Option<Waker>,
    writing: Writing,
    writer: Option<Waker>,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    /// The reader thread waits here for its chunk to be consumed.
    read_room: Condvar,
    /// The writer thread waits here for bytes.
    write_work: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Starts the reader and writer threads of `halves`.
pub(crate) fn spawn(halves: TransportHalves) -> io::Result<BoxTransport> {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            chunk: Vec::new(),
            pos: 0,
            end: None,
            reader: None,
            writing: Writing::Idle,
            writer: None,
            closed: false,
        }),
        read_room: Condvar::new(),
        write_work: Condvar::new(),
    });
    let TransportHalves {
        reader,
        writer,
        shutdown,
        ..
    } = halves;
    let t = Threaded {
        inner: inner.clone(),
        shutdown: shutdown.clone(),
    };
    let i = inner.clone();
    std::thread::Builder::new()
        .name("ft-session-reader".into())
        .spawn(move || read_loop(&i, reader))?;
    // From here on, dropping `t` stops the reader.
    std::thread::Builder::new()
        .name("ft-session-writer".into())
        .spawn(move || write_loop(&inner, writer))?;
    Ok(Box::new(t))
}

fn read_loop(inner: &Inner, mut reader: Box<dyn Read + Send>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        {
            // Backpressure: one chunk at a time, so a session that stops
            // reading leaves the bytes in the kernel and TCP slows the peer.
            let mut st = inner.lock();
            while !st.closed && st.pos < st.chunk.len() {
                st = inner
                    .read_room
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if st.closed {
                return;
            }
        }
        let end = match reader.read(&mut buf) {
            Ok(0) => ReadEnd::Eof,
            Ok(n) => {
                let mut st = inner.lock();
                st.chunk.clear();
                st.chunk.extend_from_slice(&buf[..n]);
                st.pos = 0;
                wake(&mut st.reader);
                continue;
            }
            // A transport with a read timeout ([`Locked`]): nothing yet.
            Err(e) if retryable(&e) => continue,
            Err(e) => ReadEnd::Failed(e),
        };
        let mut st = inner.lock();
        st.end = Some(end);
        wake(&mut st.reader);
        return;
    }
}

fn write_loop(inner: &Inner, mut writer: Box<dyn Write + Send>) {
    loop {
        let bytes = {
            let mut st = inner.lock();
            loop {
                if st.closed {
                    return;
                }
                if matches!(st.writing, Writing::Queued(_)) {
                    break;
                }
                st = inner
                    .write_work
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            match std::mem::replace(&mut st.writing, Writing::Busy) {
                Writing::Queued(b) => b,
                _ => return,
            }
        };
        let result = write_all(inner, &mut *writer, &bytes).and_then(|()| writer.flush());
        let mut st = inner.lock();
        let failed = result.is_err();
        st.writing = match result {
            Ok(()) => Writing::Done(bytes),
            Err(e) => Writing::Failed(Some(e)),
        };
        wake(&mut st.writer);
        if failed {
            return;
        }
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn write_all(inner: &Inner, w: &mut dyn Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match w.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if retryable(&e) => {
                if inner.lock().closed {
                    return Err(e);
                }
                std::thread::sleep(WRITE_RETRY);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The driver's side of the two threads.
struct Threaded {
    inner: Arc<Inner>,
    shutdown: ShutdownFn,
}

impl Drop for Threaded {
    fn drop(&mut self) {
        {
            let mut st = self.inner.lock();
            st.closed = true;
        }
        self.inner.read_room.notify_one();
        self.inner.write_work.notify_one();
        // Unblocks a read or write in progress; both threads then end.
        (self.shutdown)(Shutdown::Both);
    }
}

/// True if `bufs` start with `prefix`.
fn starts_with(bufs: &[IoSlice<'_>], mut prefix: &[u8]) -> bool {
    for b in bufs {
        if prefix.is_empty() {
            break;
        }
        let n = b.len().min(prefix.len());
        if b[..n] != prefix[..n] {
            return false;
        }
        prefix = &prefix[n..];
    }
    prefix.is_empty()
}

impl futures_io::AsyncRead for Threaded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.inner.lock();
        if st.pos < st.chunk.len() {
            let n = buf.len().min(st.chunk.len() - st.pos);
            buf[..n].copy_from_slice(&st.chunk[st.pos..st.pos + n]);
            st.pos += n;
            if st.pos == st.chunk.len() {
                drop(st);
                self.inner.read_room.notify_one();
            }
            return Poll::Ready(Ok(n));
        }
        match st.end.take() {
            Some(ReadEnd::Failed(e)) => {
                st.end = Some(ReadEnd::Eof);
                Poll::Ready(Err(e))
            }
            Some(ReadEnd::Eof) => {
                st.end = Some(ReadEnd::Eof);
                Poll::Ready(Ok(0))
            }
            None => {
                set_waker(&mut st.reader, cx);
                Poll::Pending
            }
        }
    }
}

impl futures_io::AsyncWrite for Threaded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Hands the bytes to the writer thread and reports them written once it
    /// wrote them: the caller (the driver) polls again with the same bytes
    /// while this is pending, as it keeps its transmit until it is written.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.inner.lock();
        match &mut st.writing {
            Writing::Idle => {
                let total: usize = bufs.iter().map(|b| b.len()).sum();
                if total == 0 {
                    return Poll::Ready(Ok(0));
                }
                let mut out = Vec::with_capacity(total.min(MAX_WRITE));
                for b in bufs {
                    let room = MAX_WRITE - out.len();
                    out.extend_from_slice(&b[..b.len().min(room)]);
                    if out.len() == MAX_WRITE {
                        break;
                    }
                }
                st.writing = Writing::Queued(out);
                set_waker(&mut st.writer, cx);
                drop(st);
                self.inner.write_work.notify_one();
                Poll::Pending
            }
            Writing::Queued(_) | Writing::Busy => {
                set_waker(&mut st.writer, cx);
                Poll::Pending
            }
            Writing::Done(out) => {
                let n = out.len();
                // Bytes other than those written would corrupt the stream:
                // fail the transport instead (the session resumes on a new one).
                let same = starts_with(bufs, out);
                st.writing = Writing::Idle;
                if same {
                    Poll::Ready(Ok(n))
                } else {
                    st.writing = Writing::Failed(None);
                    Poll::Ready(Err(io::Error::other(
                        "a transport write changed while it was pending",
                    )))
                }
            }
            Writing::Failed(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into()))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write is flushed by the writer thread before it is reported.
        let mut st = self.inner.lock();
        match &mut st.writing {
            Writing::Idle | Writing::Done(_) => Poll::Ready(Ok(())),
            Writing::Queued(_) | Writing::Busy => {
                set_waker(&mut st.writer, cx);
                Poll::Pending
            }
            Writing::Failed(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into()))),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                (self.shutdown)(Shutdown::Write);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
