//! The tunnel on smol (ft-session-smol, global executor): accept loops and
//! dialing; the data path is [`super::pipe`].

use std::sync::Arc;

use ft_session_smol::FtListener;
use smol::net::{TcpListener, TcpStream};

use super::pipe::{forward_for, serve, session_for};
use super::{announce, ClientArgs, Dial, ServerArgs, ACCEPT_RETRY_DELAY};
use crate::stats::TunnelStats;
use crate::tls;

/// `tunnel server --runtime smol`
pub fn server(a: ServerArgs, stats: TunnelStats) -> Result<(), String> {
    let config = a.opts.config()?;
    smol::block_on(async move {
        let (listener, addr) = if a.opts.tls.tls {
            let acceptor = tls::server_config(&a.opts.tls, &a.listen)?;
            let tcp = TcpListener::bind(&a.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
            let addr = tcp.local_addr().map_err(|e| e.to_string())?;
            let listener =
                tls::smol_listener(tcp, acceptor, config.clone()).map_err(|e| e.to_string())?;
            (listener, addr)
        } else {
            let listener = FtListener::bind(a.listen.as_str(), config)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            (listener, addr)
        };
        announce(
            "server",
            addr,
            &format!("forwarding to {}, smol", a.forward),
        );
        let forward: Arc<str> = a.forward.into();
        loop {
            match listener.accept().await {
                Ok((session, peer)) => {
                    tracing::debug!(?peer, "new session");
                    let (forward, stats) = (forward.clone(), stats.clone());
                    smol::spawn(async move {
                        serve_server(session.into_inner(), &forward, &stats).await
                    })
                    .detach();
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    smol::Timer::after(ACCEPT_RETRY_DELAY).await;
                }
            }
        }
    })
}

async fn serve_server(session: ft_session_async::FtStream, forward: &str, stats: &TunnelStats) {
    let Some((tcp, reset)) = forward_for(&session, forward, TcpStream::connect(forward)).await
    else {
        return;
    };
    // smol's streams are shared handles: one reads while the other writes,
    // and dropping them closes without a shutdown.
    serve(session, tcp.clone(), tcp, reset, stats, "server").await;
}

/// The TLS dial on smol.
type SmolTls = tls::TlsDial<futures_rustls::client::TlsStream<TcpStream>>;

impl Dial<SmolTls> {
    async fn connect(&self) -> std::io::Result<ft_session_async::FtStream> {
        match self {
            Dial::Tcp { server, config } => {
                ft_session_smol::FtStream::connect(server.as_str(), config.clone()).await
            }
            Dial::Tls(c) => c.connect_smol().await,
        }
        .map(ft_session_smol::FtStream::into_inner)
    }
}

/// `tunnel client --runtime smol`
pub fn client(a: ClientArgs, stats: TunnelStats) -> Result<(), String> {
    let config = a.opts.config()?;
    smol::block_on(async move {
        let dial = Dial::new(&a, config, tls::smol_connector)?;
        let dial = Arc::new(dial);
        let tcp = TcpListener::bind(a.listen.as_str())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
        let addr = tcp.local_addr().map_err(|e| e.to_string())?;
        announce("client", addr, &format!("to server {}, smol", a.server));
        loop {
            match tcp.accept().await {
                Ok((local, peer)) => {
                    tracing::debug!(%peer, "new local connection");
                    let (dial, stats) = (dial.clone(), stats.clone());
                    smol::spawn(async move { serve_client(local, &dial, &stats).await }).detach();
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    smol::Timer::after(ACCEPT_RETRY_DELAY).await;
                }
            }
        }
    })
}

async fn serve_client(local: TcpStream, dial: &Dial<SmolTls>, stats: &TunnelStats) {
    let Some((session, reset)) = session_for(&local, dial.connect()).await else {
        return;
    };
    serve(session, local.clone(), local, reset, stats, "client").await;
}
