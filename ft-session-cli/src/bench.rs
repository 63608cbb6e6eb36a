//! `ft-session bench`: the paper's experiments for raw TCP and ft-session
//! on std, Tokio and smol in one run (the `ft-session-bench` crate, which
//! parses the flags so its example and the CLI take the same ones).

use std::process::ExitCode;

/// `ft-session bench [--quick|--full] [--pin] [--json] [--plots DIR] ...`
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// The bench's flags (`ft-session bench --help` lists them).
    #[arg(allow_hyphen_values = true, trailing_var_arg = true, num_args = 0..)]
    args: Vec<String>,
}

/// Runs the bench and prints its table, or one JSON object with `--json`.
pub fn run(args: BenchArgs) -> Result<ExitCode, String> {
    if args.args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: ft-session {}", ft_session_bench::USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    let (opts, json, plots) = ft_session_bench::parse_args(args.args)
        .map_err(|e| format!("{e}\nusage: ft-session {}", ft_session_bench::USAGE))?;
    let report = ft_session_bench::run(&opts);
    if let Some(dir) = plots {
        let files = ft_session_bench::write_plots(&report, &dir)
            .map_err(|e| format!("plots in {}: {e}", dir.display()))?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    if json {
        // stdout holds exactly one JSON object; what was not measured goes here.
        for k in &report.skipped {
            eprintln!(
                "not measured: {} on {}: {}",
                k.experiment, k.runtime, k.reason
            );
        }
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
        println!("\n({:.0} s)", report.seconds);
    }
    Ok(ExitCode::SUCCESS)
}
