//! The `smol_echo` example run entirely by async-std: its executor runs the
//! application and the sessions' background tasks, and its `TcpListener` /
//! `TcpStream` are the transports. Any futures-io executor and sockets plug
//! in the same way.
//!
//! ```text
//! cargo run -p ft-session-smol --example async_std_echo
//! ```
// The tests include this file for its functions; `main` is unused there.
#![allow(dead_code)]

#[path = "smol_echo.rs"]
mod smol_echo;

use std::io;
use std::net::SocketAddr;

use async_std::net::{TcpListener, TcpStream};
use ft_session_core::Config;
use ft_session_smol::{FtListener, FtStream, SmolRuntime};

pub use smol_echo::{echo, exchange};

/// Session tasks go to async-std's executor.
pub fn runtime() -> SmolRuntime {
    SmolRuntime::spawn_with(|task| drop(async_std::task::spawn(task)))
}

/// A session listener fed by async-std's `TcpListener`.
pub fn listener(tcp: TcpListener, config: Config) -> io::Result<FtListener> {
    let accepted = smol::stream::unfold(tcp, |tcp| async move {
        let next = tcp.accept().await.and_then(|(s, peer)| {
            s.set_nodelay(true)?;
            Ok((s, Some(peer)))
        });
        Some((next, tcp))
    });
    FtListener::from_incoming_on(runtime(), config, accepted)
}

/// Opens a session to `addr` over async-std's `TcpStream`: the function
/// runs for the first transport and again for every reconnect.
pub async fn connect(addr: SocketAddr, config: Config) -> io::Result<FtStream> {
    FtStream::connect_with_on(runtime(), config, move || async move {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok::<_, io::Error>(s)
    })
    .await
}

/// Serves every session in an async-std task of its own.
pub async fn serve(listener: FtListener) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        async_std::task::spawn(async move {
            match echo(stream).await {
                Ok(n) => println!("{peer:?}: echoed {n} bytes"),
                Err(e) => eprintln!("{peer:?}: {e}"),
            }
        });
    }
}

fn main() -> io::Result<()> {
    async_std::task::block_on(async {
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        async_std::task::spawn(serve(listener(tcp, Config::default())?));

        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i ^ (i >> 11)) as u8).collect();
        let stream = connect(addr, Config::default()).await?;
        let echoed = exchange(stream, &data).await?;
        if echoed != data {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
        }
        println!("{} bytes echoed intact on async-std", echoed.len());
        Ok(())
    })
}
