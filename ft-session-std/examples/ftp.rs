//! After the paper's FTP experiment: a file server sends the file a client
//! asks for over a fault-tolerant session; the client checks its sha256.
//!
//! ```text
//! cargo run -p ft-session-std --example ftp -- serve 127.0.0.1:7000 /path/to/dir
//! cargo run -p ft-session-std --example ftp -- get 127.0.0.1:7000 name.bin out.bin
//! ```
//!
//! Protocol over the session: the client sends the file name and half-closes;
//! the server answers with the file's length (8 bytes, big endian), its
//! sha256 (32 bytes), then the bytes. Kill the TCP connection at will (e.g.
//! `ss -K dport = :7000`): the transfer goes on.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};

use ft_session_std::{Config, FtListener, FtStream};
use sha2::{Digest, Sha256};

/// Serves one request on an accepted session: reads a file name below `root`
/// and sends length, sha256 and contents.
pub fn serve_one(stream: FtStream, root: &Path) -> io::Result<u64> {
    let mut name = String::new();
    (&stream).take(4096).read_to_string(&mut name)?;
    // Only plain names: no way out of the served directory.
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        stream.abort(0x1000);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad file name"));
    }
    let path = root.join(&name);
    let mut hasher = Sha256::new();
    let len = io::copy(&mut File::open(&path)?, &mut hasher)?;
    let mut out = &stream;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&hasher.finalize())?;
    io::copy(&mut File::open(&path)?, &mut out)?;
    stream.close()?;
    Ok(len)
}

/// Serves requests forever, one thread per session.
pub fn serve(listener: FtListener, root: PathBuf) -> io::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        let root = root.clone();
        std::thread::spawn(move || match serve_one(stream, &root) {
            Ok(n) => eprintln!("served {n} bytes"),
            Err(e) => eprintln!("request failed: {e}"),
        });
    }
    Ok(())
}

/// Fetches `name` into `out` and verifies the server's sha256; returns the
/// length and the session's reconnect count.
pub fn fetch(
    addr: impl ft_session_std::ToServerAddr,
    config: Config,
    name: &str,
    out: &mut impl Write,
) -> io::Result<(u64, u64)> {
    let stream = FtStream::connect(addr, config)?;
    (&stream).write_all(name.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut head = [0u8; 40];
    (&stream).read_exact(&mut head)?;
    let (len, want) = head.split_at(8);
    let len = u64::from_be_bytes(len.try_into().unwrap_or_default());
    let mut hasher = Sha256::new();
    let mut body = (&stream).take(len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        got += n as u64;
    }
    if got != len || hasher.finalize().as_slice() != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file arrived damaged: sha256 mismatch",
        ));
    }
    let reconnects = stream.stats().reconnects;
    stream.close()?;
    Ok((len, reconnects))
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr, dir] => serve(FtListener::bind(addr, Config::default())?, dir.into()),
        ["get", addr, name, out] => {
            let (len, reconnects) = fetch(addr, Config::default(), name, &mut File::create(out)?)?;
            println!("{len} bytes verified, {reconnects} reconnects");
            Ok(())
        }
        _ => {
            eprintln!("usage: ftp serve ADDR DIR | ftp get ADDR NAME OUT");
            std::process::exit(2)
        }
    }
}
