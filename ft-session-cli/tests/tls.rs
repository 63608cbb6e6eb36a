//! The tunnel over TLS (a generated self-signed pair) on each runtime,
//! through the fault proxy: every reconnect makes a new TLS handshake and
//! the echo comes back whole.

mod common;

use common::*;
use ft_session_testkit::{FaultPlan, FaultProxy};

const SIZE: u64 = 4 << 20;
const KILLS: u64 = 4;

fn tls_through_kills(rt: &str, seed: u64) {
    let dir = std::env::temp_dir().join(format!("ft-session-cli-tls-{}-{rt}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = dir.join("cert.pem");
    let cert_s = cert.to_str().expect("utf-8 path").to_owned();
    let echo = echo_service();
    let mut server_args = FAST.to_vec();
    server_args.extend(["--tls", "--self-signed-cert", &cert_s]);
    let server = tunnel_server(rt, echo, &server_args);
    let plan = FaultPlan::random_kills(seed, 256 << 10, 768 << 10).max_kills(KILLS);
    let proxy = FaultProxy::start(server.addr, plan).expect("proxy");
    let mut client_args = FAST.to_vec();
    client_args.extend(["--tls", "--ca", &cert_s, "--server-name", "localhost"]);
    let client = tunnel_client(rt, proxy.local_addr(), &client_args);

    let e = echo_transfer(client.addr, SIZE, seed, 0, |_| {}).expect("echo transfer");
    assert_intact(&e, SIZE);
    assert_eq!(proxy.kills(), KILLS);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that expects another name fails its handshakes: the local
/// connection is reset rather than carried in the clear.
fn tls_wrong_name_refused(rt: &str) {
    let dir = std::env::temp_dir().join(format!(
        "ft-session-cli-tls-bad-{}-{rt}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = dir.join("cert.pem");
    let cert_s = cert.to_str().expect("utf-8 path").to_owned();
    let echo = echo_service();
    let server = tunnel_server(rt, echo, &["--tls", "--self-signed-cert", &cert_s]);
    let client = tunnel_client(
        rt,
        server.addr,
        &[
            "--tls",
            "--ca",
            &cert_s,
            "--server-name",
            "not-the-server.example",
            "--connect-timeout",
            "1",
        ],
    );
    let r = echo_transfer(client.addr, 1024, 1, 0, |_| {});
    assert!(
        r.is_err(),
        "a transfer to a server with the wrong name succeeded: {r:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Silent connections fill at most `--max-pending-handshakes` TLS
/// handshakes: one more is closed at once, unanswered, while the silent ones
/// still wait for their handshake timeout (so the cap, not that timeout,
/// closed it); once they go, a real client gets through with exact bytes.
fn tls_handshakes_capped(rt: &str) {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::Duration;

    let dir = std::env::temp_dir().join(format!(
        "ft-session-cli-tls-cap-{}-{rt}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = dir.join("cert.pem");
    let cert_s = cert.to_str().expect("utf-8 path").to_owned();
    let echo = echo_service();
    let server = tunnel_server(
        rt,
        echo,
        &[
            "--tls",
            "--self-signed-cert",
            &cert_s,
            "--max-pending-handshakes",
            "2",
        ],
    );
    // Accepted in order: these two take both places.
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    let mut third = TcpStream::connect(server.addr).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match third.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection beyond the cap was not closed unanswered: {other:?}"),
    }
    for s in &silent {
        s.set_nonblocking(true).expect("nonblocking");
        let r = (&*s).read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a silent connection within the cap was closed or answered: {r:?}"
        );
    }
    drop(silent);
    let client = tunnel_client(
        rt,
        server.addr,
        &["--tls", "--ca", &cert_s, "--server-name", "localhost"],
    );
    let e = echo_transfer(client.addr, 1 << 20, 7, 0, |_| {}).expect("echo transfer");
    assert_intact(&e, 1 << 20);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--cert`/`--key` files (a CA-less pair made here, for `localhost`).
#[test]
fn tls_with_cert_and_key_files() {
    let dir = std::env::temp_dir().join(format!("ft-session-cli-tls-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, pair.cert.pem()).expect("write cert");
    std::fs::write(&key, pair.key_pair.serialize_pem()).expect("write key");
    let (cert_s, key_s) = (
        cert.to_str().expect("utf-8 path").to_owned(),
        key.to_str().expect("utf-8 path").to_owned(),
    );
    let echo = echo_service();
    let server = tunnel_server(
        "tokio",
        echo,
        &["--tls", "--cert", &cert_s, "--key", &key_s],
    );
    let client = tunnel_client(
        "tokio",
        server.addr,
        &["--tls", "--ca", &cert_s, "--connect-timeout", "1"],
    );
    // The client checks the name `127.0.0.1` (its --server host) by default;
    // this certificate only carries `localhost`, so name it.
    let named = tunnel_client(
        "tokio",
        server.addr,
        &["--tls", "--ca", &cert_s, "--server-name", "localhost"],
    );
    let e = echo_transfer(named.addr, 1 << 20, 5, 0, |_| {}).expect("echo transfer");
    assert_intact(&e, 1 << 20);
    let wrong = echo_transfer(client.addr, 1024, 6, 0, |_| {});
    assert!(
        wrong.is_err(),
        "a certificate without the name 127.0.0.1 was accepted: {wrong:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

macro_rules! per_runtime {
    ($($module:ident = $rt:literal, $seed:expr;)*) => {$(
        mod $module {
            #[test]
            fn tls_through_kills() {
                super::tls_through_kills($rt, $seed);
            }
            #[test]
            fn tls_wrong_name_refused() {
                super::tls_wrong_name_refused($rt);
            }
            #[test]
            fn tls_handshakes_capped() {
                super::tls_handshakes_capped($rt);
            }
        }
    )*};
}

per_runtime! {
    on_tokio = "tokio", 21;
    on_smol = "smol", 22;
    on_std = "std", 23;
}
