//! The goals of issue 16, checked on the results: the largest acceptable ratios to no tracer,
//! and busyprobe below opensnoop.

use super::{
    configs::{AGENT, BUSYPROBE, OPENSNOOP, WATCH},
    jobs::Measure,
    results::Results,
};
use crate::bench::table::verdict;

/// A configuration's largest acceptable ratio to no tracer on a measure.
struct Limit {
    config: usize,
    measure: Measure,
    at_most: f64,
}

/// The limits: the agent's defaults where containers open files, and `watch`'s default on a
/// contended mount (where every open's time is kept).
const LIMITS: [Limit; 5] = [
    Limit {
        config: AGENT,
        measure: Measure::ContainerFiles,
        at_most: 1.05,
    },
    Limit {
        config: AGENT,
        measure: Measure::Container,
        at_most: 1.15,
    },
    Limit {
        config: AGENT,
        measure: Measure::ChildNamespace,
        at_most: 1.15,
    },
    Limit {
        config: AGENT,
        measure: Measure::RootFs,
        at_most: 1.10,
    },
    Limit {
        config: WATCH,
        measure: Measure::Contended,
        at_most: 1.55,
    },
];

/// Measures left out of the comparison with opensnoop: every syscall tracer puts every task
/// on the same slow path there.
const NOT_COMPARED: [Measure; 1] = [Measure::Getppid];

/// PASS, MISS or NOT MEASURED for each goal, one line each.
pub fn check(results: &Results) -> Vec<String> {
    let mut goals: Vec<String> = LIMITS.iter().map(|l| limit(results, l)).collect();
    goals.push(below_opensnoop(results));
    goals
}

/// `(1) agent, <measure> ≤ ×1.05: PASS (×1.02)`.
fn limit(results: &Results, limit: &Limit) -> String {
    let title = format!(
        "{}, {} ≤ ×{:.2}",
        results.config_name(limit.config),
        results.measure_name(limit.measure.row()),
        limit.at_most
    );
    match results.ratio(limit.config, limit.measure.row()) {
        Some(ratio) => format!("{title}: {} (×{ratio:.2})", verdict(ratio <= limit.at_most)),
        None => format!("{title}: NOT MEASURED"),
    }
}

/// Whether every busyprobe ratio is below opensnoop's for the same measure (but the ones in
/// [`NOT_COMPARED`]); names those that are not.
fn below_opensnoop(results: &Results) -> String {
    let title = "every busyprobe ratio, (1)–(5), below opensnoop's for the same workload, \
                 getppid aside";
    let mut worse = Vec::new();
    let compared = (0..results.measures()).filter(|&m| NOT_COMPARED.iter().all(|n| n.row() != m));
    for measure in compared {
        let Some(theirs) = results.ratio(OPENSNOOP, measure) else {
            return format!("{title}: NOT MEASURED");
        };
        for config in BUSYPROBE {
            match results.ratio(config, measure) {
                Some(ours) if ours < theirs => {}
                Some(ours) => worse.push(format!(
                    "{} on {}: ×{ours:.2} vs ×{theirs:.2}",
                    results.config_name(config),
                    results.measure_name(measure)
                )),
                None => return format!("{title}: NOT MEASURED"),
            }
        }
    }
    match worse.is_empty() {
        true => format!("{title}: PASS"),
        false => format!("{title}: MISS ({})", worse.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::overhead::{
        configs::{BASELINE, NO_HOLDERS},
        results::tests::results,
    };

    /// Every configuration at `ratio` of the baseline on every measure, in one round.
    fn all_at(ratio: f64) -> Results {
        let mut r = results(1);
        for measure in 0..r.measures() {
            r.record(BASELINE, measure, 0, 100.0);
            for config in BUSYPROBE.into_iter().chain([OPENSNOOP]) {
                r.record(config, measure, 0, 100.0 * ratio);
            }
        }
        r
    }

    #[test]
    fn limits_pass_at_the_limit_and_miss_above_it() {
        let mut r = all_at(1.05);
        let goals = check(&r);
        assert!(
            goals[0].starts_with("(1) c(1), m7 ≤ ×1.05: PASS (×1.05)"),
            "{goals:?}"
        );
        assert!(
            goals[4].starts_with("(3) c(3), m4 ≤ ×1.55: PASS"),
            "{goals:?}"
        );
        r.record(AGENT, Measure::RootFs.row(), 0, 111.0);
        assert_eq!(check(&r)[3], "(1) c(1), m0 ≤ ×1.10: MISS (×1.11)");
        let unmeasured = results(1);
        assert!(check(&unmeasured)
            .iter()
            .all(|g| g.ends_with("NOT MEASURED")));
    }

    #[test]
    fn opensnoop_comparison_names_what_is_worse_but_getppid() {
        let mut r = all_at(1.5);
        for measure in 0..r.measures() {
            r.record(OPENSNOOP, measure, 0, 200.0);
        }
        assert!(below_opensnoop(&r).ends_with(": PASS"));
        r.record(NO_HOLDERS, Measure::Getppid.row(), 0, 250.0);
        assert!(
            below_opensnoop(&r).ends_with(": PASS"),
            "getppid is not compared"
        );
        r.record(NO_HOLDERS, Measure::Tmpfs.row(), 0, 250.0);
        let goal = below_opensnoop(&r);
        assert!(
            goal.contains("MISS ((5) c(5) on m3: ×2.50 vs ×2.00)"),
            "{goal}"
        );
    }
}
