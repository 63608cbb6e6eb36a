//! The step-wise driving API of `sim::Pair` (used by the fuzz targets):
//! applications act only when told.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use ft_session_core::sim::{fast_config, pattern, AppConfig, Fault, LinkConfig, Pair, Scenario};

fn scenario() -> Scenario {
    Scenario {
        seed: 3,
        client: fast_config(),
        server: fast_config(),
        link: LinkConfig::default(),
        client_app: AppConfig::sending(pattern(1, 5000)),
        server_app: AppConfig::sending(pattern(2, 5000)),
        faults: Vec::new(),
    }
}

#[test]
fn applications_act_only_as_allowed() {
    let start = Instant::now();
    let mut p = Pair::new_step_wise(start, scenario());
    p.client_send(1000);
    p.advance_until(start + Duration::from_secs(1), 100_000);
    assert_eq!(p.client_sent().len(), 1000);
    // Nothing read until allowed, and nothing written by the server.
    assert_eq!(p.server_received(), Some(&[][..]));
    assert_eq!(p.server_sent(), Some(&[][..]));
    p.server_read(600);
    p.apply_fault_now(Fault::Crash {
        client_notice_ms: Some(1),
        server_notice_ms: Some(1),
    });
    p.advance_until(start + Duration::from_secs(2), 100_000);
    assert_eq!(p.server_received().unwrap(), &pattern(1, 600)[..]);
    p.server_send(300);
    p.release_all();
    let o = p.run(1_000_000, Duration::from_secs(60)).unwrap();
    assert_eq!((o.client, o.server), (Ok(()), Some(Ok(()))));
    assert_eq!(o.server_received, pattern(1, 1000));
    assert_eq!(o.client_received, pattern(2, 300));
    assert_eq!(o.client_stats.resumes, 1);
}
