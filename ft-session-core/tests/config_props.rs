//! Every configuration, valid or not, runs through a transport loss and a
//! resume without a panic: `Config::validate` refuses what cannot work
//! (durations whose deadlines overflow `Instant`, ...), and the connection
//! set, which does not validate, never computes such a deadline either.
#![allow(clippy::unwrap_used)]
// Tests are the caller: they own the clock the core is handed.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use ft_session_core::sim::{fast_config, pattern, AppConfig, Fault, LinkConfig, Pair, Scenario};
use ft_session_core::{Config, ReleasePolicy, SessionState};
use proptest::prelude::*;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        // Mostly workable values, so most cases run a session.
        100 => (1u64..5_000).prop_map(Duration::from_millis),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
        1 => Just(Duration::from_secs(u64::MAX)),
        1 => (0u64..=u64::MAX).prop_map(Duration::from_secs),
        1 => (0u64..=u64::MAX).prop_map(Duration::from_nanos),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        100 => 1u64..1_000_000,
        1 => Just(0),
        1 => Just(u64::MAX),
        1 => Just(u64::from(u32::MAX)),
        1 => any::<u64>(),
    ]
}

prop_compose! {
    fn config()(
        d in proptest::collection::vec(duration(), 7),
        s in proptest::collection::vec(size(), 7),
        frame in prop_oneof![20 => 1u32..70_000, 1 => Just(0), 1 => Just(u32::MAX), 1 => Just(16 << 20)],
        implicit in any::<bool>(),
        margin in proptest::option::of(size()),
    ) -> Config {
        let mut c = fast_config();
        c.max_reconnect_time = d[0];
        c.connect_timeout = d[1];
        c.heartbeat_interval = d[2];
        // Mostly above the heartbeat (else refused, which is tested too).
        c.idle_timeout = d[3].max(d[2].saturating_add(Duration::from_millis(1)));
        c.handshake_timeout = d[4];
        c.backoff_initial = d[5];
        c.backoff_max = d[6];
        c.max_frame_payload = frame;
        c.send_buffer_capacity = s[0].min(usize::MAX as u64) as usize;
        c.recv_buffer_capacity = s[1].min(usize::MAX as u64) as usize;
        c.implicit_max_buffer = s[2];
        c.implicit_margin = margin;
        c.max_sessions = (s[3] % 4) as usize;
        c.max_parked = (s[4] % 3) as usize;
        c.parked_bytes_budget = s[5];
        c.implicit_retention_budget = s[6];
        if implicit {
            c.release_policy = ReleasePolicy::Implicit;
        }
        c
    }
}

fn cases() -> u32 {
    std::env::var("FT_CONFIG_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// A loss and a resume (or the refusal of the configuration) without a
    /// panic, for the client's and the server's configuration alike.
    #[test]
    fn any_config_survives_a_loss_and_a_resume_without_panic(
        client in config(),
        server in config(),
        seed in any::<u64>(),
    ) {
        let valid = client.validate().is_ok() && server.validate().is_ok();
        let sc = Scenario {
            seed,
            client: client.clone(),
            server,
            link: LinkConfig::default(),
            client_app: AppConfig::sending(pattern(seed, 3000)),
            server_app: AppConfig::sending(pattern(seed ^ 1, 3000)),
            faults: Vec::new(),
        };
        let t0 = Instant::now();
        let mut p = Pair::new_step_wise(t0, sc);
        p.client_send(1000);
        p.server_send(1000);
        p.advance_until(t0 + Duration::from_millis(200), 5_000);
        let established = p.client.state() == SessionState::Established;
        p.apply_fault_now(Fault::Crash { client_notice_ms: Some(0), server_notice_ms: Some(0) });
        p.client_send(1000);
        p.advance_until(t0 + Duration::from_secs(5), 20_000);
        p.release_all();
        p.advance_until(t0 + Duration::from_secs(30), 20_000);
        if client.validate().is_err() {
            // Refused at once, with a typed error.
            prop_assert!(p.client.is_finished());
        } else if !valid {
            // A valid client facing a server that refused its own
            // configuration keeps dialing until its connect timeout, as it
            // would against a closed port: it gives up within the run only
            // if that timeout (plus a backoff and a handshake) fits in it.
            let give_up = client
                .connect_timeout
                .saturating_add(client.backoff_max)
                .saturating_add(client.handshake_timeout);
            if give_up < Duration::from_secs(25) {
                prop_assert!(p.client.is_finished());
            } else {
                prop_assert!(p.client.state() != SessionState::Established);
            }
        } else if established && p.client.stats().resumes > 0 {
            prop_assert!(p.client_received().len() <= 3000);
            if std::env::var("FT_CONFIG_TRACE").is_ok() {
                eprintln!("valid and resumed");
            }
        }
    }
}

#[test]
fn huge_durations_are_refused_by_validate() {
    for d in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(200 * 365 * 86_400),
    ] {
        let mut c = Config::default();
        c.max_reconnect_time = d;
        assert!(c.validate().is_err(), "{d:?}");
    }
    let mut c = Config::default();
    c.implicit_margin = Some(u64::MAX);
    assert!(c.validate().is_err());
}
