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
