//! Side-by-side timing for benchmarks: two transfers measured in alternating
//! rounds (order swapped every round), reported as a ratio. Shared by every
//! adapter's benchmark so they compute the figure the same way.

use std::time::Duration;

/// What [`compare_alternating`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RatioSummary {
    /// Rounds measured (after one untimed warm-up transfer each).
    pub rounds: usize,
    /// Median throughput of the baseline, in GiB/s.
    pub base_gib_s: f64,
    /// Median throughput of the measured side, in GiB/s.
    pub ft_gib_s: f64,
    /// Median baseline time / median measured time (= throughput ratio).
    pub ratio: f64,
    /// Median of the per-round ratios.
    pub round_median: f64,
    /// Smallest per-round ratio.
    pub round_min: f64,
    /// Largest per-round ratio.
    pub round_max: f64,
}

/// The median of `v` (sorted in place); NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `base` and `ft` once each untimed (start-up, allocations), then
/// `rounds` times each, alternating which goes first (A B, B A, A B, ...), and
/// returns each round's `(base, ft)` results. Every side-by-side comparison
/// of the project (the adapter benches, `ft-session-bench`) runs its rounds
/// through this, so they are ordered the same way.
pub fn alternate<T>(
    rounds: usize,
    mut base: impl FnMut() -> T,
    mut ft: impl FnMut() -> T,
) -> Vec<(T, T)> {
    base();
    ft();
    (0..rounds)
        .map(|i| {
            if i % 2 == 0 {
                let b = base();
                (b, ft())
            } else {
                let f = ft();
                (base(), f)
            }
        })
        .collect()
}

/// Runs `rounds` transfers of `bytes` each through `base` and `ft`,
/// alternating which goes first, after one untimed transfer each (start-up,
/// allocations). Each closure performs one transfer and returns its duration.
pub fn compare_alternating(
    rounds: usize,
    bytes: u64,
    base: impl FnMut() -> Duration,
    ft: impl FnMut() -> Duration,
) -> RatioSummary {
    let (mut b, mut f, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for (tb, tf) in alternate(rounds, base, ft) {
        b.push(tb.as_secs_f64());
        f.push(tf.as_secs_f64());
        r.push(tb.as_secs_f64() / tf.as_secs_f64());
    }
    let gib_s = |secs: f64| bytes as f64 / secs / (1u64 << 30) as f64;
    let (mb, mf) = (median(&mut b), median(&mut f));
    RatioSummary {
        rounds,
        base_gib_s: gib_s(mb),
        ft_gib_s: gib_s(mf),
        ratio: mb / mf,
        round_median: median(&mut r),
        round_min: r.iter().copied().fold(f64::INFINITY, f64::min),
        round_max: r.iter().copied().fold(0.0, f64::max),
    }
}

impl std::fmt::Display for RatioSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rounds, medians: base {:.2} GiB/s, ft {:.2} GiB/s; ratio = {:.3} \
             (median of per-round ratios {:.3}, range {:.3}-{:.3})",
            self.rounds,
            self.base_gib_s,
            self.ft_gib_s,
            self.ratio,
            self.round_median,
            self.round_min,
            self.round_max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_base_time_over_ft_time_and_rounds_alternate() {
        let mut order = Vec::new();
        let order_cell = std::cell::RefCell::new(&mut order);
        let s = compare_alternating(
            4,
            1 << 30,
            || {
                order_cell.borrow_mut().push('b');
                Duration::from_secs(1)
            },
            || {
                order_cell.borrow_mut().push('f');
                Duration::from_secs(2)
            },
        );
        assert_eq!(s.ratio, 0.5);
        assert_eq!((s.base_gib_s, s.ft_gib_s), (1.0, 0.5));
        assert_eq!((s.round_min, s.round_max, s.round_median), (0.5, 0.5, 0.5));
        // Warm-up b f, then b f / f b / b f / f b.
        assert_eq!(order.iter().collect::<String>(), "bfbffbbffb");
    }
}
