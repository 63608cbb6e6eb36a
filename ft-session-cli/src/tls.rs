//! TLS transports under the sessions (rustls, ring provider): tokio-rustls
//! for Tokio, futures-rustls for smol, rustls' `StreamOwned` behind the std
//! adapter's `Locked` transport. Each transport (the first connection and
//! every reconnect) makes a full TLS handshake; the session's own resume
//! handshake runs inside it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ft_session_core::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::options::TlsOpts;
use crate::tunnel::host_of;

/// TLS handshakes waiting for the session listener at once, per server.
const HANDSHAKE_BACKLOG: usize = 64;
/// The std adapter's locked TLS transport reads with this timeout so its
/// writer gets the lock in between (see `ft_session_std::Locked`).
const STD_TLS_READ_TIMEOUT: Duration = Duration::from_millis(10);

/// The TLS handshakes in progress on one server, at most
/// [`Config::max_pending_handshakes`] at once: the cap the core puts on
/// transports waiting for their first message, applied before TLS so that a
/// flood of silent connections costs a bounded number of tasks (threads on
/// std) and buffers. A connection beyond it is closed at once, unanswered,
/// as the core closes one; its client backs off and retries.
#[derive(Clone)]
struct HandshakeSlots {
    busy: Arc<AtomicUsize>,
    max: usize,
}

/// One handshake's place among [`HandshakeSlots`], given back on drop: when
/// the handshake failed, or its transport reached the session listener.
struct Slot(Arc<AtomicUsize>);

impl HandshakeSlots {
    fn new(config: &Config) -> Self {
        HandshakeSlots {
            busy: Arc::new(AtomicUsize::new(0)),
            max: config.max_pending_handshakes,
        }
    }

    /// A place, or `None` (the connection is to be closed) at the cap.
    fn take(&self, peer: SocketAddr) -> Option<Slot> {
        let taken = self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            // Debug, not warn: a flood must not become a log flood.
            tracing::debug!(%peer, max = self.max, "TLS handshakes at max_pending_handshakes: connection closed");
        }
        taken.then(|| Slot(self.busy.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration: `--cert`/`--key`, or a generated
/// self-signed pair whose certificate is written for the clients' `--ca`.
pub fn server_config(opts: &TlsOpts, listen: &str) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => (load_certs(cert)?, load_key(key)?),
        _ => self_signed(listen, &opts.self_signed_cert)?,
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate or key refused: {e}"))?;
    Ok(Arc::new(config))
}

/// The client's TLS configuration: trusts `--ca` only.
pub fn client_config(opts: &TlsOpts) -> Result<Arc<ClientConfig>, String> {
    let ca = opts
        .ca
        .as_ref()
        .ok_or("--tls on the client needs --ca FILE (the server's certificate or its CA)")?;
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A self-signed certificate for `localhost`, `127.0.0.1`, `::1` and the
/// `--listen` host; its PEM is written to `out` for the clients.
fn self_signed(
    listen: &str,
    out: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = host_of(listen);
    if !host.is_empty() && host != "0.0.0.0" && host != "::" && !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    let pair = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
    std::fs::write(out, pair.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    tracing::warn!(
        "TLS: generated a self-signed certificate for {names:?}, written to {} (clients: --tls --ca {})",
        out.display(),
        out.display()
    );
    let key = PrivateKeyDer::Pkcs8(pair.key_pair.serialize_der().into());
    Ok((vec![pair.cert.der().clone()], key))
}

fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned()).map_err(|e| format!("bad TLS server name `{name}`: {e}"))
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
}

// ---------------------------------------------------------------- Tokio

/// A session listener over TLS: handshakes run concurrently, at most
/// `max_pending_handshakes` of them, each bounded by the session's handshake
/// timeout, and finished ones are handed over.
pub fn tokio_listener(
    tcp: tokio::net::TcpListener,
    tls: Arc<ServerConfig>,
    config: Config,
) -> io::Result<ft_session_tokio::FtListener> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let limit = config.handshake_timeout;
    let slots = HandshakeSlots::new(&config);
    let (tx, rx) = smol::channel::bounded(HANDSHAKE_BACKLOG);
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match tcp.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(crate::tunnel::ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            };
            let Some(slot) = slots.take(peer) else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(limit, acceptor.accept(socket)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok((s, Some(peer)))).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::warn!(%peer, "{}", timed_out()),
                }
            });
        }
    });
    ft_session_tokio::FtListener::from_incoming(config, rx)
}

/// A session connector whose every transport is TCP + TLS to `server`.
pub fn tokio_connector(
    tls: Arc<ClientConfig>,
    server: String,
    name: &str,
    config: Config,
) -> Result<TlsDial<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, String> {
    let name = server_name(name)?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let limit = config.handshake_timeout;
    let make = move || -> DialFuture<_> {
        let (connector, name, server) = (connector.clone(), name.clone(), server.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(server.as_str()).await?;
            tcp.set_nodelay(true)?;
            tokio::time::timeout(limit, connector.connect(name, tcp))
                .await
                .map_err(|_| timed_out())?
        })
    };
    Ok(TlsDial {
        config,
        make: Arc::new(make),
    })
}

impl TlsDial<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    /// Opens a session on Tokio.
    pub async fn connect_tokio(&self) -> io::Result<ft_session_tokio::FtStream> {
        let make = self.make.clone();
        ft_session_tokio::FtStream::connect_with(self.config.clone(), move || make()).await
    }
}

impl TlsDial<futures_rustls::client::TlsStream<smol::net::TcpStream>> {
    /// Opens a session on smol's global executor.
    pub async fn connect_smol(&self) -> io::Result<ft_session_smol::FtStream> {
        let make = self.make.clone();
        ft_session_smol::FtStream::connect_with(self.config.clone(), move || make()).await
    }
}

/// The future of one TLS transport.
type DialFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<T>> + Send>>;

/// Opens TCP + TLS transports to one server, for every session and every
/// reconnect of each.
pub struct TlsDial<T> {
    config: Config,
    make: Arc<dyn Fn() -> DialFuture<T> + Send + Sync>,
}

// ---------------------------------------------------------------- smol

/// [`tokio_listener`] on smol, with futures-rustls.
pub fn smol_listener(
    tcp: smol::net::TcpListener,
    tls: Arc<ServerConfig>,
    config: Config,
) -> io::Result<ft_session_smol::FtListener> {
    let acceptor = futures_rustls::TlsAcceptor::from(tls);
    let limit = config.handshake_timeout;
    let slots = HandshakeSlots::new(&config);
    let (tx, rx) = smol::channel::bounded(HANDSHAKE_BACKLOG);
    smol::spawn(async move {
        loop {
            let (socket, peer) = match tcp.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    smol::Timer::after(crate::tunnel::ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            };
            let Some(slot) = slots.take(peer) else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            smol::spawn(async move {
                let _slot = slot;
                let handshake = async { acceptor.accept(socket).await.map(Some) };
                let deadline = async {
                    smol::Timer::after(limit).await;
                    Ok(None)
                };
                match futures_lite::future::or(handshake, deadline).await {
                    Ok(Some(s)) => {
                        let _ = tx.send(Ok((s, Some(peer)))).await;
                    }
                    Ok(None) => tracing::warn!(%peer, "{}", timed_out()),
                    Err(e) => tracing::warn!(%peer, "TLS handshake failed: {e}"),
                }
            })
            .detach();
        }
    })
    .detach();
    ft_session_smol::FtListener::from_incoming(config, rx)
}

/// [`tokio_connector`] on smol, with futures-rustls.
pub fn smol_connector(
    tls: Arc<ClientConfig>,
    server: String,
    name: &str,
    config: Config,
) -> Result<TlsDial<futures_rustls::client::TlsStream<smol::net::TcpStream>>, String> {
    let name = server_name(name)?;
    let connector = futures_rustls::TlsConnector::from(tls);
    let limit = config.handshake_timeout;
    let make = move || -> DialFuture<_> {
        let (connector, name, server) = (connector.clone(), name.clone(), server.clone());
        Box::pin(async move {
            let tcp = smol::net::TcpStream::connect(server.as_str()).await?;
            tcp.set_nodelay(true)?;
            let handshake = async { connector.connect(name, tcp).await };
            let deadline = async {
                smol::Timer::after(limit).await;
                Err(timed_out())
            };
            futures_lite::future::or(handshake, deadline).await
        })
    };
    Ok(TlsDial {
        config,
        make: Arc::new(make),
    })
}

// ---------------------------------------------------------------- std

/// A TLS stream as a std adapter transport: reads and writes take turns on
/// one lock, the socket's short read timeout lets the writer in, and the
/// socket clone shuts it down.
fn std_transport<C>(
    tls: rustls::StreamOwned<C, TcpStream>,
) -> io::Result<ft_session_std::Locked<rustls::StreamOwned<C, TcpStream>>>
where
    C: Send + 'static,
    rustls::StreamOwned<C, TcpStream>: io::Read + io::Write + Send + 'static,
{
    tls.sock.set_read_timeout(Some(STD_TLS_READ_TIMEOUT))?;
    tls.sock.set_write_timeout(None)?;
    let control = tls.sock.try_clone()?;
    Ok(ft_session_std::Locked::new(tls, move |how| {
        // Already shut down or reset: nothing left to unblock.
        let _ = control.shutdown(how);
    }))
}

/// Completes a TLS handshake on a blocking socket within `limit`.
fn std_handshake<C, D>(conn: &mut C, sock: &mut TcpStream, limit: Duration) -> io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    sock.set_read_timeout(Some(limit))?;
    sock.set_write_timeout(Some(limit))?;
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    Ok(())
}

/// The std adapter's client dial over TLS.
pub struct StdDial {
    tls: Arc<ClientConfig>,
    server: String,
    name: ServerName<'static>,
    config: Config,
}

impl StdDial {
    /// Dials `server`, checking its certificate against `name`.
    pub fn new(
        tls: Arc<ClientConfig>,
        server: String,
        name: &str,
        config: Config,
    ) -> Result<StdDial, String> {
        Ok(StdDial {
            tls,
            server,
            name: server_name(name)?,
            config,
        })
    }

    /// Opens a session; every (re)connection makes a new TLS transport.
    pub fn connect(&self) -> io::Result<ft_session_std::FtStream> {
        let (tls, server, name) = (self.tls.clone(), self.server.clone(), self.name.clone());
        let limit = self.config.handshake_timeout;
        ft_session_std::FtStream::connect_with(self.config.clone(), move || {
            let mut sock = TcpStream::connect(server.as_str())?;
            sock.set_nodelay(true)?;
            let mut conn = rustls::ClientConnection::new(tls.clone(), name.clone())
                .map_err(io::Error::other)?;
            std_handshake(&mut conn, &mut sock, limit)?;
            std_transport(rustls::StreamOwned::new(conn, sock))
        })
    }
}

/// A std session listener over TLS: one thread accepts, each handshake runs
/// on its own thread within the handshake timeout, at most
/// `max_pending_handshakes` threads at once.
pub fn std_listener(
    tcp: std::net::TcpListener,
    tls: Arc<ServerConfig>,
    config: Config,
) -> Result<ft_session_std::FtListener, String> {
    let limit = config.handshake_timeout;
    let slots = HandshakeSlots::new(&config);
    let (tx, rx) = std::sync::mpsc::sync_channel(HANDSHAKE_BACKLOG);
    std::thread::Builder::new()
        .name("ft-session-tls-accept".into())
        .spawn(move || loop {
            let (mut sock, peer): (TcpStream, SocketAddr) = match tcp.accept() {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(crate::tunnel::ACCEPT_RETRY_DELAY);
                    continue;
                }
            };
            let Some(slot) = slots.take(peer) else {
                continue;
            };
            let (tls, tx) = (tls.clone(), tx.clone());
            let spawned = std::thread::Builder::new()
                .name("ft-session-tls-handshake".into())
                .spawn(move || {
                    let _slot = slot;
                    let _ = sock.set_nodelay(true);
                    let made = rustls::ServerConnection::new(tls)
                        .map_err(io::Error::other)
                        .and_then(|mut conn| {
                            std_handshake(&mut conn, &mut sock, limit)?;
                            std_transport(rustls::StreamOwned::new(conn, sock))
                        });
                    match made {
                        Ok(t) => {
                            let _ = tx.send(Ok(t));
                        }
                        Err(e) => tracing::warn!(%peer, "TLS handshake failed: {e}"),
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a TLS handshake thread: {e}");
            }
        })
        .map_err(|e| format!("cannot start the TLS accept thread: {e}"))?;
    ft_session_std::FtListener::from_incoming(config, rx)
        .map_err(|e| format!("cannot start the session listener: {e}"))
}
