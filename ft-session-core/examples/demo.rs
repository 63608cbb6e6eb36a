//! Two sessions move 8 MiB each way through a simulated link that crashes,
//! blackholes, pauses and refuses connects 24 times; both sides then check
//! the exact bytes they received (length and SHA-256).
//!
//! `cargo run --release -p ft-session-core --features sim --example demo [SEED]`
#![allow(clippy::disallowed_methods)] // the example is the caller: it owns the clock

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ft_session_core::sim::{
    fast_config, pattern, AppConfig, Fault, LinkConfig, Pair, Rng, Scenario, ScheduledFault,
};
use sha2::{Digest, Sha256};

fn hex(d: &[u8]) -> String {
    Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn main() -> ExitCode {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(42u64);
    let size = 8 << 20;
    let mut r = Rng::new(seed);
    let kinds = |i: u64, r: &mut Rng| match i % 6 {
        0 | 1 => Fault::Crash {
            client_notice_ms: Some(r.range(0, 200) as u16),
            server_notice_ms: if r.chance(50) {
                None
            } else {
                Some(r.range(0, 200) as u16)
            },
        },
        2 => Fault::Blackhole,
        3 => Fault::Pause {
            ms: r.range(100, 3000) as u16,
        },
        4 => Fault::ConnectFailures {
            n: r.range(1, 5) as u8,
        },
        _ => Fault::StaleBytes,
    };
    let faults: Vec<ScheduledFault> = (0..24u64)
        .map(|i| ScheduledFault {
            at_byte: (2 * size as u64) * (i + 1) / 26 + r.range(0, 1000),
            fault: kinds(i, &mut r),
        })
        .collect();
    let sc = Scenario {
        seed,
        client: fast_config(),
        server: fast_config(),
        link: LinkConfig {
            max_chunk: 64 * 1024,
            ..LinkConfig::default()
        },
        client_app: AppConfig::sending(pattern(seed, size)),
        server_app: AppConfig::sending(pattern(seed + 1, size)),
        faults,
    };
    println!(
        "ft-session demo: {} MiB each way, 24 scheduled faults, seed {seed}",
        size >> 20
    );
    let o = match Pair::new(Instant::now(), sc).run(50_000_000, Duration::from_secs(3600)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("simulation failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "faults applied: {}   resumes: {}   bytes retransmitted: {}   virtual time: {:.1?}",
        o.faults_applied, o.client_stats.resumes, o.client_stats.retransmitted_bytes, o.elapsed
    );
    let ok_up = o.server_received == o.client_data;
    let ok_down = o.client_received == o.server_data;
    println!(
        "client -> server: sent {} B sha256 {}\n                  got  {} B sha256 {}  {}",
        o.client_data.len(),
        hex(&o.client_data),
        o.server_received.len(),
        hex(&o.server_received),
        if ok_up { "EXACT" } else { "MISMATCH" }
    );
    println!(
        "server -> client: sent {} B sha256 {}\n                  got  {} B sha256 {}  {}",
        o.server_data.len(),
        hex(&o.server_data),
        o.client_received.len(),
        hex(&o.client_received),
        if ok_down { "EXACT" } else { "MISMATCH" }
    );
    println!("outcome: client {:?}, server {:?}", o.client, o.server);
    if ok_up && ok_down && o.client.is_ok() && o.server == Some(Ok(())) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
