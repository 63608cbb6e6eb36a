//! The examples' own functions, run through a proxy that kills the
//! transport mid-stream: the echo must come back whole (length and sha256),
//! and the server must have echoed exactly what was sent.
#![allow(clippy::unwrap_used)]

mod common;

#[path = "../examples/tls_echo.rs"]
mod tls_echo;

use common::*;
use ft_session_core::ReleasePolicy;
use ft_session_testkit::{pattern, sha256_hex, FaultPlan, FaultProxy};
use ft_session_tokio::{FtListener, FtStream};

/// Bytes the client sends; the echo doubles what crosses the proxy.
const LEN: usize = 3 << 20;
const KILLS: u64 = 6;

fn plan(seed: u64) -> FaultPlan {
    FaultPlan::random_kills(seed, 64 * 1024, 256 * 1024).max_kills(KILLS)
}

fn assert_echo(sent: &[u8], echoed: &[u8], server_echoed: u64) {
    assert_eq!(echoed.len(), sent.len());
    assert_eq!(sha256_hex(echoed), sha256_hex(sent));
    assert_eq!(server_echoed, sent.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_example_survives_kills() {
    bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan(1)).unwrap();
        // The listener outlives the session: a client whose last CLOSE was
        // cut resumes to learn the outcome.
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            (tls_echo::echo(stream).await.unwrap(), listener)
        });
        let data = pattern(1, LEN);
        let client = FtStream::connect(proxy.local_addr(), fast_config())
            .await
            .unwrap();
        let echoed = tls_echo::exchange(client, &data).await.unwrap();
        let (server_echoed, _listener) = server.await.unwrap();
        assert_echo(&data, &echoed, server_echoed);
        assert_eq!(proxy.kills(), KILLS);
        drop_proxy(proxy).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_echo_example_survives_kills() {
    bounded(async {
        let (server_tls, client_tls) = tls_echo::tls_configs().unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy::start(tcp.local_addr().unwrap(), plan(2)).unwrap();
        let listener = tls_echo::tls_listener(tcp, server_tls, fast_config()).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            (tls_echo::echo(stream).await.unwrap(), listener)
        });
        let client = tls_echo::tls_connect(proxy.local_addr(), client_tls, fast_config())
            .await
            .unwrap();
        let data = pattern(2, LEN);
        let echoed = tls_echo::exchange(client, &data).await.unwrap();
        let (server_echoed, _listener) = server.await.unwrap();
        assert_echo(&data, &echoed, server_echoed);
        assert_eq!(proxy.kills(), KILLS);
        drop_proxy(proxy).await;
    })
    .await
}

/// An echo larger than the server's receive and send buffers together
/// (8 MiB through 256 KiB buffers) completes, under both release policies.
/// It used to stall for good under the acknowledgment policy: the server
/// stopped reading its transport once its receive queue was full, and the
/// client's acknowledgments of the echo waited in that transport behind the
/// client's data, so the server's send buffer never drained and its
/// application, blocked writing the echo, never read. Acknowledgments are now
/// a window (PROTOCOL.md R10 and section 4): the client cannot send more than
/// the server reads ahead for, so the acknowledgments behind its data are
/// always read.
async fn echo_larger_than_both_buffers(policy: ReleasePolicy) {
    echo_larger_than_both_buffers_with(policy, policy).await
}

async fn echo_larger_than_both_buffers_with(client: ReleasePolicy, server: ReleasePolicy) {
    let mut config = fast_config();
    (config.send_buffer_capacity, config.recv_buffer_capacity) = (256 << 10, 256 << 10);
    config.release_policy = server;
    let listener = FtListener::bind("127.0.0.1:0", config.clone())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        (tls_echo::echo(stream).await.unwrap(), listener)
    });
    let data = pattern(9, 8 << 20);
    config.release_policy = client;
    let client = FtStream::connect(addr, config).await.unwrap();
    let echoed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tls_echo::exchange(client, &data),
    )
    .await
    .expect("the echo stalled")
    .unwrap();
    let (server_echoed, _listener) = server.await.unwrap();
    assert_echo(&data, &echoed, server_echoed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_larger_than_both_buffers_completes() {
    bounded(echo_larger_than_both_buffers(ReleasePolicy::Ack)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_larger_than_both_buffers_completes_implicit() {
    bounded(echo_larger_than_both_buffers(ReleasePolicy::Implicit)).await
}

/// Mixed policies release on acknowledgments (PROTOCOL.md section 4), on
/// real sockets, both ways round. Before, an implicit side facing an Ack
/// server failed at once with a `Config` error (the Ack side's unpinned
/// socket announces no receive buffer); with the sizes known, the core's
/// simulation showed the echo stalling instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_larger_than_both_buffers_completes_mixed() {
    use ReleasePolicy::{Ack, Implicit};
    bounded(echo_larger_than_both_buffers_with(Implicit, Ack)).await;
    bounded(echo_larger_than_both_buffers_with(Ack, Implicit)).await;
}
