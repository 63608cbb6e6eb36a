//! Runs every experiment on every runtime in the tiny mode and checks the
//! report's shape (never its timings): one JSON object whose rows carry the
//! documented keys and types, every experiment present, ratios consistent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ft_session_bench::{run, Mode, Options};

#[test]
fn tiny_run_reports_every_experiment_as_one_json_object() {
    let opts = Options {
        mode: Mode::Tiny,
        ..Options::default()
    };
    let report = run(&opts);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
    let obj = json.as_object().expect("one object");
    assert_eq!(obj.len(), 1, "only the experiments key");
    let rows = obj["experiments"].as_array().expect("an array");
    assert_eq!(rows.len(), report.rows.len());
    for r in rows {
        let r = r.as_object().unwrap();
        for k in [
            "experiment",
            "runtime",
            "variant",
            "metric",
            "unit",
            "better",
        ] {
            assert!(r[k].is_string(), "{k} is a string in {r:?}");
        }
        assert!(matches!(r["better"].as_str(), Some("higher" | "lower")));
        assert!(r["session"].is_number(), "session is a number in {r:?}");
        assert!(r["raw"].is_number() || r["raw"].is_null());
        assert!(r["ratio"].is_number() || r["ratio"].is_null());
        if r["raw"].is_null() {
            assert!(r["ratio"].is_null(), "no ratio without raw: {r:?}");
        }
    }
    let has = |e: &str, rt: &str| {
        report
            .rows
            .iter()
            .any(|r| r.experiment == e && r.runtime == rt)
    };
    for rt in ["std", "tokio", "smol"] {
        for e in ["bulk", "latency", "pipelined", "footprint"] {
            assert!(has(e, rt), "{e} on {rt}: {:?}", report.skipped);
        }
        // Recovery needs only the in-process proxy (ss -K may be missing).
        assert!(
            report.rows.iter().any(|r| r.experiment == "recovery"
                && r.runtime == rt
                && r.variant.starts_with("proxy-rst")),
            "recovery on {rt}: {:?}",
            report.skipped
        );
    }
    assert!(has("core", "core"));
    // Both release policies, raw beside session, on every runtime.
    for rt in ["std", "tokio", "smol"] {
        for v in ["ack/copy", "implicit/copy"] {
            let row = report
                .rows
                .iter()
                .find(|r| r.experiment == "bulk" && r.runtime == rt && r.variant == v)
                .unwrap_or_else(|| panic!("bulk {v} on {rt}"));
            assert!(row.raw.unwrap() > 0.0 && row.session > 0.0);
        }
    }
    let table = report.to_table();
    assert!(table.lines().count() > report.rows.len());
}

#[test]
fn flags_parse_and_bad_ones_are_refused() {
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let (o, json, plots) = ft_session_bench::parse_args(args(
        "--quick --json --pin --only e1,latency --runtimes tokio --plots out",
    ))
    .unwrap();
    assert_eq!(o.mode, Mode::Quick);
    assert!(json && o.pin);
    assert_eq!(o.experiments.len(), 2);
    assert_eq!(o.runtimes.len(), 1);
    assert_eq!(plots.unwrap().to_str(), Some("out"));
    assert!(ft_session_bench::parse_args(args("--only nope")).is_err());
    assert!(ft_session_bench::parse_args(args("--bogus")).is_err());
}
