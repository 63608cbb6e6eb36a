//! `ft-session bench`: in the tiny mode, `--json` prints exactly one JSON
//! object with the chosen experiments' rows on stdout; bad flags are refused.
//! (ft-session-bench's own test checks every experiment's rows.)

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ft-session"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run ft-session bench")
}

#[test]
fn bench_json_is_one_object_and_bad_flags_fail() {
    let out = bench(&[
        "--tiny",
        "--json",
        "--only",
        "pipelined,core",
        "--runtimes",
        "tokio",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = stdout.trim();
    assert_eq!(json.lines().count(), 1, "one line: {stdout}");
    assert!(json.starts_with(r#"{"experiments":[{"#), "{json}");
    assert!(json.ends_with("}]}"), "{json}");
    assert!(json.contains(r#""experiment":"pipelined""#), "{json}");
    assert!(json.contains(r#""runtime":"tokio""#), "{json}");
    assert!(json.contains(r#""experiment":"core""#), "{json}");
    assert!(!json.contains(r#""runtime":"std""#), "{json}");

    let bad = bench(&["--bogus"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown bench option --bogus"));
    let help = bench(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--quick"));
}

/// E5 from the binary puts its clients in a second process (the binary
/// started again): the server's and the clients' memory come as separate
/// rows, each beside raw TCP, for sessions on Tokio.
#[test]
fn footprint_measures_server_and_client_processes_apart() {
    let out = bench(&[
        "--tiny",
        "--json",
        "--only",
        "footprint",
        "--runtimes",
        "tokio",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json = String::from_utf8_lossy(&out.stdout);
    let metric = |m: &str| json.matches(&format!(r#""metric":"{m}""#)).count();
    // The tiny mode's two counts (1 and 10 connections).
    for m in [
        "rss_per_session_server",
        "rss_per_session_client",
        "connects_per_s",
    ] {
        assert_eq!(metric(m), 2, "{m} in {json}\n{stderr}");
    }
    // Not the one-process row.
    assert_eq!(metric("rss_per_end"), 0, "{json}");
    assert!(!stderr.contains("not measured"), "{stderr}");
}
