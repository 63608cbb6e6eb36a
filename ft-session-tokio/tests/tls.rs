//! TLS (tokio-rustls, self-signed certificate) as the transport, with kills:
//! every reconnect runs a fresh TLS handshake under the same session.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use ft_session_testkit::{FaultPlan, FaultProxy};
use ft_session_tokio::{FtListener, FtStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_transport_survives_kills_with_fresh_handshakes() {
    tokio::time::timeout(TEST_LIMIT, async {
        const LEN: u64 = 1 << 20;
        let (server_tls, client_tls) = tls_configs();

        // TLS handshakes run concurrently, off the accept path; finished
        // ones are handed to the session listener as transports.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let server_handshakes = Arc::new(AtomicU64::new(0));
        let sh = server_handshakes.clone();
        tokio::spawn(async move {
            let acceptor = TlsAcceptor::from(server_tls);
            while let Ok((s, peer)) = tcp.accept().await {
                let (acceptor, tx, sh) = (acceptor.clone(), tx.clone(), sh.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        sh.fetch_add(1, Ordering::SeqCst);
                        let _ = tx.send(Ok((tls, Some::<SocketAddr>(peer)))).await;
                    }
                });
            }
        });
        let incoming = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let listener = FtListener::from_incoming(fast_config(), incoming).unwrap();

        let plan = FaultPlan::random_kills(3, 16 * 1024, 128 * 1024).max_kills(8);
        let proxy = FaultProxy::start(addr, plan).unwrap();
        let proxy_addr = proxy.local_addr();
        let client_handshakes = Arc::new(AtomicU64::new(0));
        let ch = client_handshakes.clone();
        let client = FtStream::connect_with(fast_config(), move || {
            let (cfg, ch) = (client_tls.clone(), ch.clone());
            async move {
                let s = tokio::net::TcpStream::connect(proxy_addr).await?;
                s.set_nodelay(true)?;
                let name = ServerName::try_from("localhost").unwrap();
                let tls = TlsConnector::from(cfg).connect(name, s).await?;
                ch.fetch_add(1, Ordering::SeqCst);
                Ok(tls)
            }
        })
        .await
        .unwrap();
        let (server, _) = listener.accept().await.unwrap();

        let t = Transfer::start(client, server, LEN);
        t.release();
        let (c, _s) = t.finish().await;
        assert_eq!(proxy.kills(), 8);
        assert_eq!(c.stats().reconnects, 8, "{:?}", c.stats());
        // One TLS handshake per transport: the first and one per reconnect.
        assert_eq!(client_handshakes.load(Ordering::SeqCst), 9);
        assert_eq!(server_handshakes.load(Ordering::SeqCst), 9);
        tokio::task::spawn_blocking(move || drop(proxy))
            .await
            .unwrap();
    })
    .await
    .expect("test exceeded its time limit");
}
