//! Runs the benchmark without the CLI, for development:
//! `cargo run --release -p ft-session-bench --example bench -- --quick --progress`
//! (the flags of `ft-session bench`).

fn main() {
    // E5 starts this binary again as its client process.
    ft_session_bench::child_main();
    let (opts, json, plots) = match ft_session_bench::parse_args(std::env::args().skip(1)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}\nusage: {}", ft_session_bench::USAGE);
            std::process::exit(2);
        }
    };
    let report = ft_session_bench::run(&opts);
    if let Some(dir) = plots {
        if let Err(e) = ft_session_bench::write_plots(&report, &dir) {
            eprintln!("plots: {e}");
        }
    }
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_table());
        println!("({:.0} s)", report.seconds);
    }
}
