//! Echo over fault-tolerant sessions on Tokio: the server writes back every
//! byte it reads; the client sends a buffer, half-closes, and checks that the
//! echo is identical.
//!
//! ```text
//! cargo run -p ft-session-tokio --example echo                  # both, one process
//! cargo run -p ft-session-tokio --example echo -- server 127.0.0.1:7000
//! cargo run -p ft-session-tokio --example echo -- client 127.0.0.1:7000
//! ```
//!
//! Kill the TCP connection while the client runs (as root:
//! `ss -K dst 127.0.0.1 dport = :7000`): the client reconnects, the session
//! resumes, and the echo still arrives whole.
// The tests include this file for its functions; `main` is unused there.
#![allow(dead_code)]

use std::io;

use ft_session_core::Config;
use ft_session_tokio::{FtListener, FtStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves every session in a task of its own, for as long as the listener lives.
pub async fn serve(listener: FtListener) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            match echo(stream).await {
                Ok(n) => println!("{peer:?}: echoed {n} bytes"),
                Err(e) => eprintln!("{peer:?}: {e}"),
            }
        });
    }
}

/// Writes back what it reads until the client half-closes, then closes the
/// session: `close` returns once both sides know every byte arrived.
pub async fn echo(stream: FtStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = (&stream).read(&mut buf).await?;
        if n == 0 {
            break;
        }
        (&stream).write_all(&buf[..n]).await?;
        total += n as u64;
    }
    stream.close().await?;
    Ok(total)
}

/// Sends `data`, half-closes, and returns everything echoed back. Reading
/// and writing run together, through `&FtStream` (like `&TcpStream`): the
/// server cannot take more than the session's buffers hold until its echo
/// is read.
pub async fn exchange(stream: FtStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut echo = Vec::with_capacity(data.len());
    let (mut rd, mut wr) = (&stream, &stream);
    let send = async {
        wr.write_all(data).await?;
        wr.shutdown().await // half-close: the server reads end of stream
    };
    tokio::try_join!(send, rd.read_to_end(&mut echo))?;
    stream.close().await?;
    Ok(echo)
}

/// Connects, echoes 4 MiB and checks it.
async fn client(addr: &str) -> io::Result<()> {
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i ^ (i >> 11)) as u8).collect();
    let stream = FtStream::connect(addr, Config::default()).await?;
    let echo = exchange(stream, &data).await?;
    if echo != data {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
    }
    println!("{} bytes echoed intact", echo.len());
    Ok(())
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", addr] => serve(FtListener::bind(addr, Config::default()).await?).await,
        ["client", addr] => client(addr).await,
        [] => {
            let listener = FtListener::bind("127.0.0.1:0", Config::default()).await?;
            let addr = listener.local_addr()?.to_string();
            tokio::spawn(serve(listener));
            client(&addr).await
        }
        _ => Err(io::Error::other("usage: echo [server ADDR | client ADDR]")),
    }
}
