//! Bad command lines end with a message and a failure status, never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ft-session"))
        .args(args)
        .output()
        .expect("run ft-session");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn refused_option_combinations() {
    let (ok, err) = run(&[
        "tunnel",
        "server",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "127.0.0.1:9",
        "--tls",
        "--release",
        "implicit",
    ]);
    assert!(!ok && err.contains("--release implicit"), "{err}");
    let (ok, err) = run(&[
        "tunnel",
        "client",
        "--server",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--heartbeat",
        "2",
        "--idle-timeout",
        "1",
    ]);
    assert!(!ok && err.contains("idle_timeout"), "{err}");
    let (ok, err) = run(&[
        "tunnel",
        "client",
        "--server",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--tls",
    ]);
    assert!(!ok && err.contains("--ca"), "{err}");
    let (ok, err) = run(&["demo", "--size", "12X"]);
    assert!(!ok && err.contains("unit"), "{err}");
    assert!(!err.contains("panicked"));
}
