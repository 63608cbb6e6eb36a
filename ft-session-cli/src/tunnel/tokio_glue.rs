//! The tunnel on Tokio (ft-session-tokio): accept loops and dialing; the
//! data path is [`super::pipe`].

use std::sync::Arc;

use ft_session_tokio::{Compat, FtListener};
use tokio::net::{TcpListener, TcpStream};

use super::pipe::{forward_for, serve, session_for};
use super::{announce, ClientArgs, Dial, ServerArgs, ACCEPT_RETRY_DELAY};
use crate::stats::TunnelStats;
use crate::tls;

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Tokio runtime: {e}"))
}

/// `tunnel server --runtime tokio`
pub fn server(a: ServerArgs, stats: TunnelStats) -> Result<(), String> {
    let config = a.opts.config()?;
    runtime()?.block_on(async move {
        let (listener, addr) = if a.opts.tls.tls {
            let acceptor = tls::server_config(&a.opts.tls, &a.listen)?;
            let tcp = TcpListener::bind(&a.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
            let addr = tcp.local_addr().map_err(|e| e.to_string())?;
            let listener =
                tls::tokio_listener(tcp, acceptor, config.clone()).map_err(|e| e.to_string())?;
            (listener, addr)
        } else {
            let listener = FtListener::bind(&a.listen, config)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            (listener, addr)
        };
        announce(
            "server",
            addr,
            &format!("forwarding to {}, tokio", a.forward),
        );
        let forward: Arc<str> = a.forward.into();
        loop {
            match listener.accept().await {
                Ok((session, peer)) => {
                    tracing::debug!(?peer, "new session");
                    let (forward, stats) = (forward.clone(), stats.clone());
                    tokio::spawn(async move {
                        serve_server(session.into_inner(), &forward, &stats).await;
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            }
        }
    })
}

async fn serve_server(session: ft_session_async::FtStream, forward: &str, stats: &TunnelStats) {
    let Some((mut tcp, reset)) = forward_for(&session, forward, TcpStream::connect(forward)).await
    else {
        return;
    };
    let (r, w) = tcp.split();
    serve(session, Compat(r), Compat(w), reset, stats, "server").await;
}

/// The TLS dial on tokio.
type TokioTls = tls::TlsDial<tokio_rustls::client::TlsStream<TcpStream>>;

impl Dial<TokioTls> {
    async fn connect(&self) -> std::io::Result<ft_session_async::FtStream> {
        match self {
            Dial::Tcp { server, config } => {
                ft_session_tokio::FtStream::connect(server.as_str(), config.clone()).await
            }
            Dial::Tls(c) => c.connect_tokio().await,
        }
        .map(ft_session_tokio::FtStream::into_inner)
    }
}

/// `tunnel client --runtime tokio`
pub fn client(a: ClientArgs, stats: TunnelStats) -> Result<(), String> {
    let config = a.opts.config()?;
    runtime()?.block_on(async move {
        let dial = Dial::new(&a, config, tls::tokio_connector)?;
        let dial = Arc::new(dial);
        let tcp = TcpListener::bind(&a.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
        let addr = tcp.local_addr().map_err(|e| e.to_string())?;
        announce("client", addr, &format!("to server {}, tokio", a.server));
        loop {
            match tcp.accept().await {
                Ok((local, peer)) => {
                    tracing::debug!(%peer, "new local connection");
                    let (dial, stats) = (dial.clone(), stats.clone());
                    tokio::spawn(async move { serve_client(local, &dial, &stats).await });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            }
        }
    })
}

async fn serve_client(mut local: TcpStream, dial: &Dial<TokioTls>, stats: &TunnelStats) {
    let Some((session, reset)) = session_for(&local, dial.connect()).await else {
        return;
    };
    let (r, w) = local.split();
    serve(session, Compat(r), Compat(w), reset, stats, "client").await;
}
