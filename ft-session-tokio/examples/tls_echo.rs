//! The echo example over TLS (tokio-rustls, a self-signed certificate made
//! by rcgen): only the transports change. The session runs on top of TLS,
//! so every reconnect after a crash is a fresh TLS handshake under the same
//! session, and the session's own resume proof travels encrypted.
//!
//! ```text
//! cargo run -p ft-session-tokio --example tls_echo
//! ```
// The tests include this file for its functions; `main` is unused there.
#![allow(dead_code)]

#[path = "echo.rs"]
mod echo;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use ft_session_core::Config;
use ft_session_tokio::{FtListener, FtStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use echo::{echo, exchange, serve};

/// A server and a client TLS configuration for "localhost" that trust one
/// fresh self-signed certificate.
pub fn tls_configs() -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), Box<dyn std::error::Error>> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    let mut roots = RootCertStore::empty();
    roots.add(cert)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

/// A session listener over TLS: each accepted TCP connection runs its TLS
/// handshake in a task of its own (a slow peer holds up no one), and the
/// finished ones are handed to the listener as transports.
pub fn tls_listener(
    tcp: TcpListener,
    tls: Arc<ServerConfig>,
    config: Config,
) -> io::Result<FtListener> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let acceptor = TlsAcceptor::from(tls);
        while let Ok((tcp, peer)) = tcp.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok((tls, Some(peer)))).await;
                }
            });
        }
    });
    let transports = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    FtListener::from_incoming(config, transports)
}

/// Opens a session to `addr` over TLS: the function runs for the first
/// transport and again for every reconnect.
pub async fn tls_connect(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    config: Config,
) -> io::Result<FtStream> {
    FtStream::connect_with(config, move || {
        let tls = TlsConnector::from(tls.clone());
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
            tls.connect(name, tcp).await
        }
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server_tls, client_tls) = tls_configs()?;
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    tokio::spawn(serve(tls_listener(tcp, server_tls, Config::default())?));

    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i ^ (i >> 11)) as u8).collect();
    let stream = tls_connect(addr, client_tls, Config::default()).await?;
    let echoed = exchange(stream, &data).await?;
    if echoed != data {
        return Err("echo differs".into());
    }
    println!("{} bytes echoed intact over TLS", echoed.len());
    Ok(())
}
