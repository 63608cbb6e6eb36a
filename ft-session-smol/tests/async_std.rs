//! The smol adapter driven entirely by async-std: its executor runs the
//! application and the session drivers (through `SmolRuntime::spawn_with`),
//! and its `TcpListener`/`TcpStream` are the transports, with kills.
#![allow(clippy::unwrap_used)]

mod common;

use std::io;

use async_std::net::{TcpListener, TcpStream};
use common::*;
use ft_session_smol::{FtListener, FtStream, SmolRuntime};
use ft_session_testkit::{FaultPlan, FaultProxy};

fn async_std_runtime() -> SmolRuntime {
    SmolRuntime::spawn_with(|task| drop(async_std::task::spawn(task)))
}

fn on_async_std(side: SideTask) -> SideTask {
    Box::pin(async_std::task::spawn(side))
}

#[test]
fn async_std_transports_and_executor_under_kills() {
    async_std::task::block_on(async {
        let limited = async_std::future::timeout(TEST_LIMIT, async {
            const LEN: u64 = 2 << 20;
            let rt = async_std_runtime();
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let upstream = tcp.local_addr().unwrap();
            let accepted = smol::stream::unfold(tcp, |tcp| async move {
                let next = tcp.accept().await.and_then(|(s, peer)| {
                    s.set_nodelay(true)?;
                    Ok((s, Some(peer)))
                });
                Some((next, tcp))
            });
            let listener =
                FtListener::from_incoming_on(rt.clone(), fast_config(), accepted).unwrap();

            let plan = FaultPlan::random_kills(3, 64 * 1024, 256 * 1024).max_kills(8);
            assert_plan_reaches(&plan, 8, LEN);
            let proxy = FaultProxy::start(upstream, plan).unwrap();
            let target = proxy.local_addr();
            let client = FtStream::connect_with_on(rt, fast_config(), move || async move {
                let s = TcpStream::connect(target).await?;
                s.set_nodelay(true)?;
                Ok::<_, io::Error>(s)
            })
            .await
            .unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            assert!(peer.is_some_and(|p| p.ip().is_loopback()));

            let t = Transfer::start(client, server, LEN, on_async_std);
            t.release();
            let (c, s) = t.finish().await;
            assert_eq!(proxy.kills(), 8);
            assert_eq!(c.stats().reconnects, 8, "{:?}", c.stats());
            assert_eq!(s.stats().reconnects, 8, "{:?}", s.stats());
        })
        .await;
        limited.expect("test exceeded its time limit");
    })
}
