//! Loopback sockets as every experiment makes them: `TCP_NODELAY`, the
//! chosen congestion control set and read back, buffers pinned before
//! connect/listen when the implicit policy needs their sizes.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// How the bench's sockets are set up.
#[derive(Debug, Clone, Default)]
pub(crate) struct SockOpts {
    /// Congestion control (`None`: the system's).
    pub cc: Option<String>,
    /// Buffer size pinned before connect/listen (implicit policy).
    pub pin: Option<usize>,
}

/// Sets the congestion control on `s` and checks it took: a silent fallback
/// to the system's BBR would make loopback figures bimodal.
pub(crate) fn set_cc(s: SockRef<'_>, cc: Option<&str>) -> io::Result<()> {
    let Some(cc) = cc else { return Ok(()) };
    s.set_tcp_congestion(cc.as_bytes()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("TCP_CONGESTION {cc}: {e} (try --cc system)"),
        )
    })?;
    // The kernel answers with the name padded by NULs.
    let got = s.tcp_congestion()?;
    if got.split(|&b| b == 0).next() != Some(cc.as_bytes()) {
        return Err(io::Error::other(format!(
            "TCP_CONGESTION {cc} did not take ({:?})",
            String::from_utf8_lossy(&got)
        )));
    }
    Ok(())
}

fn socket(o: &SockOpts) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    set_cc(SockRef::from(&s), o.cc.as_deref())?;
    if let Some(size) = o.pin {
        // Before connect/listen, as the adapters pin them.
        s.set_send_buffer_size(size)?;
        s.set_recv_buffer_size(size)?;
    }
    Ok(s)
}

/// A listener on 127.0.0.1 with a free port.
pub(crate) fn listen(o: &SockOpts) -> io::Result<TcpListener> {
    let s = socket(o)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A blocking connect (on loopback it completes at once while the listener's
/// backlog has room).
pub(crate) fn dial(addr: SocketAddr, o: &SockOpts) -> io::Result<TcpStream> {
    let s = socket(o)?;
    s.connect(&addr.into())?;
    let s: TcpStream = s.into();
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sets an accepted socket up (it inherits the listener's options; set
/// again so it is certain).
pub(crate) fn prepare(s: SockRef<'_>, o: &SockOpts) -> io::Result<()> {
    s.set_tcp_nodelay(true)?;
    set_cc(s, o.cc.as_deref())
}

/// The effective `(SO_SNDBUF, SO_RCVBUF)` of a pinned socket.
pub(crate) fn sizes(s: SockRef<'_>, o: &SockOpts) -> io::Result<Option<(usize, usize)>> {
    match o.pin {
        None => Ok(None),
        Some(_) => Ok(Some((s.send_buffer_size()?, s.recv_buffer_size()?))),
    }
}

/// Sockets the bench wants to hold: 10,000 sessions are 20,000 sockets in
/// one process, beside listeners, proxies and the runtimes' descriptors.
const WANTED_FDS: u64 = 65_536;

/// Open files this process may hold (the soft limit), raised first: to
/// [`WANTED_FDS`] where allowed (as root), else to the hard limit.
pub(crate) fn raise_fd_limit() -> u64 {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    if soft >= WANTED_FDS {
        return soft;
    }
    if rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED_FDS, WANTED_FDS.max(hard)).is_ok() {
        return WANTED_FDS;
    }
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(soft)
}

/// How many connection pairs fit in the open-file limit, leaving room for
/// listeners, proxies and the runtime's own descriptors.
pub(crate) fn max_pairs() -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    (limit.saturating_sub(256) / 2) as usize
}

/// How many connection ends fit in the open-file limit of one process that
/// holds one end of each (E5's server with its clients in another process).
pub(crate) fn max_ends() -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    limit.saturating_sub(256) as usize
}

/// Pins the calling thread (and the threads it starts later, which inherit
/// its mask) to `core` modulo the cores present.
pub(crate) fn pin_to(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids() {
        if !ids.is_empty() {
            core_affinity::set_for_current(ids[core % ids.len()]);
        }
    }
}

/// Runs `f` on a new thread, pinned to `core` if `pin` (threads `f`
/// starts inherit the pinning); without `pin`, on the calling thread, and returns its result.
pub(crate) fn on_core<T: Send>(pin: bool, core: usize, f: impl FnOnce() -> T + Send) -> T {
    if !pin {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(core);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
