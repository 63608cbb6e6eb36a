//! The examples' own functions, run through a proxy that kills the
//! transport mid-stream: the echo must come back whole (length and sha256),
//! and the server must have echoed exactly what was sent. One test on smol,
//! one on async-std's executor and sockets.
#![allow(clippy::unwrap_used)]

mod common;

#[path = "../examples/async_std_echo.rs"]
mod async_std_echo;

use common::*;
use ft_session_smol::{FtListener, FtStream};
use ft_session_testkit::{pattern, sha256_hex, FaultPlan, FaultProxy};

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

#[test]
fn smol_echo_example_survives_kills() {
    run_bounded(async {
        let listener = FtListener::bind("127.0.0.1:0", fast_config())
            .await
            .unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap(), plan(3)).unwrap();
        // The listener outlives the session: a client whose last CLOSE was
        // cut resumes to learn the outcome.
        let server = smol::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            (async_std_echo::echo(stream).await.unwrap(), listener)
        });
        let data = pattern(3, LEN);
        let client = FtStream::connect(proxy.local_addr(), fast_config())
            .await
            .unwrap();
        let echoed = async_std_echo::exchange(client, &data).await.unwrap();
        let (server_echoed, _listener) = server.await;
        assert_echo(&data, &echoed, server_echoed);
        assert_eq!(proxy.kills(), KILLS);
    })
}

#[test]
fn async_std_echo_example_survives_kills() {
    async_std::task::block_on(async {
        let limited = async_std::future::timeout(TEST_LIMIT, async {
            let tcp = async_std::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap();
            let proxy = FaultProxy::start(tcp.local_addr().unwrap(), plan(4)).unwrap();
            let listener = async_std_echo::listener(tcp, fast_config()).unwrap();
            let server = async_std::task::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                (async_std_echo::echo(stream).await.unwrap(), listener)
            });
            let client = async_std_echo::connect(proxy.local_addr(), fast_config())
                .await
                .unwrap();
            let data = pattern(4, LEN);
            let echoed = async_std_echo::exchange(client, &data).await.unwrap();
            let (server_echoed, _listener) = server.await;
            assert_echo(&data, &echoed, server_echoed);
            assert_eq!(proxy.kills(), KILLS);
        });
        limited.await.expect("test exceeded its time limit");
    })
}

/// An echo larger than the server's receive and send buffers together (8 MiB
/// through 256 KiB buffers) completes under both release policies, with
/// exact bytes both ways. Under the acknowledgment policy it used to stall
/// for good: the server stopped reading its transport with a full receive
/// queue while the client's acknowledgments of the echo waited there behind
/// the client's data (PROTOCOL.md R10 and section 4 now make
/// acknowledgments a window, so they are always read).
fn echo_larger_than_both_buffers(policy: ft_session_core::ReleasePolicy) {
    run_bounded(async {
        let mut config = fast_config();
        (config.send_buffer_capacity, config.recv_buffer_capacity) = (256 << 10, 256 << 10);
        config.release_policy = policy;
        let listener = FtListener::bind("127.0.0.1:0", config.clone())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = smol::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            (async_std_echo::echo(stream).await.unwrap(), listener)
        });
        let data = pattern(11, 8 << 20);
        let client = FtStream::connect(addr, config).await.unwrap();
        let echoed = async_std_echo::exchange(client, &data).await.unwrap();
        let (server_echoed, _listener) = server.await;
        assert_echo(&data, &echoed, server_echoed);
    })
}

#[test]
fn echo_larger_than_both_buffers_completes() {
    echo_larger_than_both_buffers(ft_session_core::ReleasePolicy::Ack);
}

#[test]
fn echo_larger_than_both_buffers_completes_implicit() {
    echo_larger_than_both_buffers(ft_session_core::ReleasePolicy::Implicit);
}
