//! `ft-session demo` with a small size: every byte matched (exit status 0),
//! the proxy killed the transport many times, and plain TCP through the
//! same faults failed.

use std::process::Command;

#[test]
fn demo_small_size_succeeds_and_tcp_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_ft-session"))
        .args(["demo", "--size", "8M"])
        .output()
        .expect("run the demo");
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
