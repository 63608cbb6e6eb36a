//! `ft-session`: a TCP tunnel whose connections survive transport crashes,
//! and a demo of the same on real loopback sockets.
//!
//! - `ft-session tunnel server --listen ADDR --forward ADDR`
//! - `ft-session tunnel client --server ADDR --listen ADDR`
//! - `ft-session demo [--size BYTES]`
//! - `ft-session bench [--quick|--full] [--json] [--pin] [--plots DIR]`
//!
//! Each subcommand lives in its own module; adding one is a variant of
//! [`Command`] and one arm in [`main`].
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod options;
mod stats;
mod tls;
mod tunnel;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of the `ft-session` binary.
#[derive(Debug, Parser)]
#[command(
    name = "ft-session",
    version,
    about = "TCP connections that survive transport crashes: a tunnel for any application, and a fault demo",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Carry TCP connections over fault-tolerant sessions (run a server and a client).
    Tunnel(tunnel::TunnelArgs),
    /// Move data through a fault proxy on loopback and check every byte; plain TCP for contrast.
    Demo(demo::DemoArgs),
    /// The paper's experiments for raw TCP and ft-session on std, Tokio and smol, side by side.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    // `bench` (E5) starts this binary again as its client process.
    ft_session_bench::child_main();
    let cli = Cli::parse();
    // The demo draws a progress bar: only warnings unless RUST_LOG asks for more.
    init_tracing(match cli.command {
        Command::Tunnel(_) => "warn,ft_session=info",
        Command::Demo(_) | Command::Bench(_) => "warn",
    });
    let result = match cli.command {
        Command::Tunnel(args) => tunnel::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ft-session: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG`, else by `default` (for the
/// tunnel: warnings, and sessions starting, resuming and ending at info).
fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
