//! `ft-session demo` with a small size: every byte matched (exit status 0),
//! the proxy killed the transport many times, and plain TCP through the
//! same faults failed.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The small demo takes a few seconds; this bounds a hang.
const DEMO_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn demo_small_size_succeeds_and_tcp_fails() {
    let child = Command::new(env!("CARGO_BIN_EXE_ft-session"))
        .args(["demo", "--size", "8M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the demo");
    // A watchdog: a demo that hangs is killed, and the test then fails.
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if rx.recv_timeout(DEMO_LIMIT).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let out = child.wait_with_output().expect("wait for the demo");
    let _ = tx.send(());
    watchdog.join().expect("watchdog");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("client -> server yes, server -> client yes"),
        "{stdout}"
    );
    assert!(stdout.contains("8388608 of 8388608"), "{stdout}");
    let kills: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("transport kills (RST)"))
        .and_then(|r| r.trim().split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no kill count in:\n{stdout}"));
    assert!(kills >= 8, "only {kills} kills:\n{stdout}");
    assert!(
        stdout.contains("plain TCP, same faults  FAILED"),
        "{stdout}"
    );
}
