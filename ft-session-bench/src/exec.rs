//! The two async runtimes behind one small interface, so the async
//! experiments are written once: a client side and a server side (one shared
//! runtime, or with `--pin` one single-worker runtime per side, each pinned
//! to its own core), the runtime's sockets, timer and the session
//! [`ft_session_async::Runtime`] of its adapter crate.

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ft_session_smol::SmolRuntime;
use ft_session_tokio::{Compat, TokioRuntime};

use crate::net::pin_to;

/// A boxed, sendable future.
pub(crate) type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A byte stream the async experiments read and write.
pub(crate) trait Io:
    futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static
{
}

impl<T: futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Accepts the next connection of a listener, as a std socket (so the
/// bench can set it up before the runtime wraps it again).
pub(crate) type Acceptor = Arc<dyn Fn() -> BoxFut<io::Result<TcpStream>> + Send + Sync>;

/// An async runtime as the experiments use it.
pub(crate) trait Exec: Send + Sync + 'static {
    /// The adapter's session runtime.
    type Rt: ft_session_async::Runtime;
    /// The runtime's TCP stream as futures-io, able to read into
    /// uninitialized memory (sessions wrap it in a `SpareTransport`).
    type Stream: Io + ft_session_async::ReadSpare;
    /// `tokio` or `smol`.
    const NAME: &'static str;
    /// Runs `f` as a task on the client side and waits for its result.
    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T;
    /// The session runtime of the server side (spawns there).
    fn server_rt(&self) -> Self::Rt;
    /// The session runtime of the client side.
    fn client_rt(&self) -> Self::Rt;
    /// The runtime's sleep (inside a task).
    fn sleep(d: Duration) -> BoxFut<()>;
    /// Wraps a connected std socket (inside a task of the side that uses it).
    fn stream(s: TcpStream) -> io::Result<Self::Stream>;
    /// Wraps a std listener (inside a task of the server side).
    fn acceptor(l: TcpListener) -> io::Result<Acceptor>;
    /// Spawns `f` on the server side.
    fn spawn_server(&self, f: BoxFut<()>);
}

/// Tokio: one multi-thread runtime, or one single-worker runtime per side.
pub(crate) struct Tokio {
    server: tokio::runtime::Runtime,
    client: Option<tokio::runtime::Runtime>,
}

fn tokio_rt(pin_core: Option<usize>, workers: usize) -> io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(workers).enable_all();
    if let Some(core) = pin_core {
        b.on_thread_start(move || pin_to(core));
    }
    b.build()
}

impl Tokio {
    pub(crate) fn new(pin: bool) -> io::Result<Tokio> {
        Ok(if pin {
            Tokio {
                server: tokio_rt(Some(1), 1)?,
                client: Some(tokio_rt(Some(0), 1)?),
            }
        } else {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Tokio {
                server: tokio_rt(None, cores)?,
                client: None,
            }
        })
    }

    fn client(&self) -> &tokio::runtime::Runtime {
        self.client.as_ref().unwrap_or(&self.server)
    }
}

impl Exec for Tokio {
    type Rt = TokioRuntime;
    type Stream = Compat<tokio::net::TcpStream>;
    const NAME: &'static str = "tokio";

    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        // The calling thread only waits: the work runs on the client side's workers.
        match smol::block_on(self.client().spawn(f)) {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn server_rt(&self) -> TokioRuntime {
        TokioRuntime
    }

    fn client_rt(&self) -> TokioRuntime {
        TokioRuntime
    }

    fn sleep(d: Duration) -> BoxFut<()> {
        Box::pin(tokio::time::sleep(d))
    }

    fn stream(s: TcpStream) -> io::Result<Self::Stream> {
        s.set_nonblocking(true)?;
        Ok(Compat(tokio::net::TcpStream::from_std(s)?))
    }

    fn acceptor(l: TcpListener) -> io::Result<Acceptor> {
        l.set_nonblocking(true)?;
        let l = Arc::new(tokio::net::TcpListener::from_std(l)?);
        Ok(Arc::new(move || {
            let l = l.clone();
            Box::pin(async move { l.accept().await?.0.into_std() })
        }))
    }

    fn spawn_server(&self, f: BoxFut<()>) {
        self.server.spawn(f);
    }
}

/// smol: one executor on as many threads as cores, or one single-thread
/// executor per side.
pub(crate) struct Smol {
    server: Arc<smol::Executor<'static>>,
    client: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Smol {
    pub(crate) fn new(pin: bool) -> io::Result<Smol> {
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let server = Arc::new(smol::Executor::new());
        let (client, sides) = if pin {
            let client = Arc::new(smol::Executor::new());
            (
                client.clone(),
                vec![(server.clone(), Some(1)), (client, Some(0))],
            )
        } else {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            (server.clone(), vec![(server.clone(), None); cores])
        };
        let mut threads = Vec::new();
        for (ex, core) in sides {
            let stopped = stopped.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bench-smol-{}", threads.len()))
                    .spawn(move || {
                        if let Some(c) = core {
                            pin_to(c);
                        }
                        // Runs tasks until the channel closes (on drop).
                        let _ = smol::block_on(ex.run(stopped.recv()));
                    })?,
            );
        }
        Ok(Smol {
            server,
            client,
            stop: Some(stop),
            threads,
        })
    }
}

impl Drop for Smol {
    fn drop(&mut self) {
        drop(self.stop.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Exec for Smol {
    type Rt = SmolRuntime;
    type Stream = ft_session_smol::TcpTransport;
    const NAME: &'static str = "smol";

    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        smol::block_on(self.client.spawn(f))
    }

    fn server_rt(&self) -> SmolRuntime {
        SmolRuntime::executor(self.server.clone())
    }

    fn client_rt(&self) -> SmolRuntime {
        SmolRuntime::executor(self.client.clone())
    }

    fn sleep(d: Duration) -> BoxFut<()> {
        Box::pin(async move {
            smol::Timer::after(d).await;
        })
    }

    fn stream(s: TcpStream) -> io::Result<Self::Stream> {
        // The adapter's own TCP transport (as `connect` and `bind` build).
        smol::Async::new(s).map(ft_session_smol::TcpTransport::new)
    }

    fn acceptor(l: TcpListener) -> io::Result<Acceptor> {
        let l = Arc::new(smol::Async::new(l)?);
        Ok(Arc::new(move || {
            let l = l.clone();
            Box::pin(async move { l.accept().await?.0.into_inner() })
        }))
    }

    fn spawn_server(&self, f: BoxFut<()>) {
        self.server.spawn(f).detach();
    }
}
