//! The figures of every round, their medians and ratios to no tracer, the table (plain and
//! Markdown) and the goals.

use std::collections::BTreeMap;

use super::configs::{Config, Usage};
use crate::bench::table::{print_report, verdict};

/// Row of the baseline (no tracer), and of each busyprobe mode and opensnoop.
pub const BASELINE: usize = 0;
/// `watch --json`, default mode.
pub const DEFAULT: usize = 1;
/// `watch --json --no-open-times`.
pub const NO_OPEN_TIMES: usize = 2;
/// `watch --json --no-holders`.
pub const NO_HOLDERS: usize = 3;
/// opensnoop.
pub const OPENSNOOP: usize = 4;
/// Column of `openat`+`close` on the root filesystem (untracked).
pub const ROOT_FS: usize = 0;
/// Column of `openat`+`close` on the bench's tmpfs (tracked).
pub const TMPFS: usize = 1;
/// Column of the many-small-files workload.
pub const FILES: usize = 3;

/// Goals from the issue: the largest acceptable ratios to no tracer.
const NO_OPEN_TIMES_UNTRACKED: f64 = 1.20;
const DEFAULT_UNTRACKED: f64 = 1.40;
const DEFAULT_TRACKED: f64 = 1.55;
const DEFAULT_FILES: f64 = 1.05;

/// A workload as a column of the table.
#[derive(Clone)]
pub struct Column {
    /// Its heading.
    pub label: String,
    /// `true`: figures are ns per operation; `false`: seconds for the whole workload.
    pub per_op: bool,
}

/// One configuration's figures.
struct Row {
    key: &'static str,
    label: String,
    /// `[workload][round]`: ns/op or seconds.
    figures: Vec<Vec<Option<f64>>>,
    usage: Vec<Usage>,
    /// Why it has no (more) figures.
    failed: Option<String>,
}

/// Everything measured.
pub struct Results {
    columns: Vec<Column>,
    rows: Vec<Row>,
}

impl Results {
    /// Empty results for these configurations (in the order of the constants above), workloads
    /// and rounds.
    pub fn new(configs: &[Config], columns: Vec<Column>, rounds: usize) -> Self {
        let rows = configs
            .iter()
            .map(|c| Row {
                key: c.key,
                label: c.label.clone(),
                figures: vec![vec![None; rounds]; columns.len()],
                usage: Vec::new(),
                failed: c.skipped.clone(),
            })
            .collect();
        Self { columns, rows }
    }

    /// Whether configuration `config` is still measured.
    pub fn measured(&self, config: usize) -> bool {
        self.rows[config].failed.is_none()
    }

    /// Records one figure.
    pub fn record(&mut self, config: usize, workload: usize, round: usize, figure: f64) {
        self.rows[config].figures[workload][round] = Some(figure);
    }

    /// Records what the tracer used in one session.
    pub fn record_usage(&mut self, config: usize, usage: Usage) {
        self.rows[config].usage.push(usage);
    }

    /// Marks a configuration failed; it is not measured again.
    pub fn fail(&mut self, config: usize, reason: String) {
        self.rows[config].failed = Some(reason);
    }

    /// The median figure of a configuration for a workload.
    fn median(&self, config: usize, workload: usize) -> Option<f64> {
        median(
            self.rows[config].figures[workload]
                .iter()
                .flatten()
                .copied(),
        )
    }

    /// The median over the rounds of the configuration's figure divided by the baseline's of
    /// the same round.
    fn ratio(&self, config: usize, workload: usize) -> Option<f64> {
        let base = &self.rows[BASELINE].figures[workload];
        let this = &self.rows[config].figures[workload];
        median(
            this.iter()
                .zip(base)
                .filter_map(|(t, b)| Some(t.as_ref()? / b.as_ref()?)),
        )
    }

    /// Prints the table, notes and goals, then the same as Markdown.
    pub fn print(&self, headline: &str, mut notes: Vec<String>) {
        let mut header = vec![String::new(), "configuration".into()];
        header.extend(self.columns.iter().map(|c| c.label.clone()));
        header.extend(["tracer RSS".into(), "drops".into()]);
        let mut rows = vec![header];
        rows.extend((0..self.rows.len()).map(|config| self.row(config)));
        notes.push(self.baseline_spread());
        notes.extend(
            self.rows
                .iter()
                .filter_map(|r| Some(format!("{} {}: {}", r.key, r.label, r.failed.as_ref()?))),
        );
        print_report(headline, &rows, &notes, &self.goals());
    }

    /// The cells of one configuration.
    fn row(&self, config: usize) -> Vec<String> {
        let r = &self.rows[config];
        let mut cells = vec![r.key.to_string(), r.label.clone()];
        for (workload, column) in self.columns.iter().enumerate() {
            let Some(median) = self.median(config, workload) else {
                cells.push("—".into());
                continue;
            };
            let mut cell = figure(median, column.per_op);
            if config != BASELINE {
                if let Some(ratio) = self.ratio(config, workload) {
                    cell += &format!(" ×{ratio:.2}");
                }
            }
            cells.push(cell);
        }
        let rss = r.usage.iter().map(|u| u.rss_kib).max();
        cells.push(rss.map_or("—".into(), |kib| {
            format!("{:.1} MiB", kib as f64 / 1024.0)
        }));
        cells.push(drops_cell(config, &r.usage));
        cells
    }

    /// How much the baseline moved between rounds, per workload: the noise floor.
    fn baseline_spread(&self) -> String {
        let spreads: Vec<String> = self
            .columns
            .iter()
            .zip(&self.rows[BASELINE].figures)
            .filter_map(|(column, figures)| {
                let figures: Vec<f64> = figures.iter().flatten().copied().collect();
                let min = figures.iter().copied().reduce(f64::min)?;
                let max = figures.iter().copied().reduce(f64::max)?;
                Some(format!(
                    "{} {:.0}%",
                    column.label,
                    (max / min - 1.0) * 100.0
                ))
            })
            .collect();
        format!(
            "the baseline's spread between rounds (slowest/fastest − 1): {}",
            spreads.join(", ")
        )
    }

    /// PASS/MISS for each goal of the issue.
    fn goals(&self) -> Vec<String> {
        let at_most = |title: &str, config, workload, goal: f64| match self.ratio(config, workload)
        {
            Some(ratio) => format!(
                "{title} ≤ ×{goal:.2}: {} (×{ratio:.2})",
                verdict(ratio <= goal)
            ),
            None => format!("{title} ≤ ×{goal:.2}: NOT MEASURED"),
        };
        vec![
            at_most(
                "(2) --no-open-times, openat+close on the root filesystem (untracked)",
                NO_OPEN_TIMES,
                ROOT_FS,
                NO_OPEN_TIMES_UNTRACKED,
            ),
            at_most(
                "(1) default mode, openat+close on the root filesystem (untracked)",
                DEFAULT,
                ROOT_FS,
                DEFAULT_UNTRACKED,
            ),
            at_most(
                "(1) default mode, openat+close on the tmpfs (tracked)",
                DEFAULT,
                TMPFS,
                DEFAULT_TRACKED,
            ),
            at_most(
                "(1) default mode, the many-small-files workload",
                DEFAULT,
                FILES,
                DEFAULT_FILES,
            ),
            self.better_than_opensnoop(),
        ]
    }

    /// Whether every ratio of (1)–(3) is below opensnoop's for the same workload.
    fn better_than_opensnoop(&self) -> String {
        let title = "every busyprobe ratio (1)–(3) below opensnoop's for the same workload";
        let mut worse = Vec::new();
        for workload in 0..self.columns.len() {
            let Some(theirs) = self.ratio(OPENSNOOP, workload) else {
                return format!("{title}: NOT MEASURED");
            };
            for config in [DEFAULT, NO_OPEN_TIMES, NO_HOLDERS] {
                match self.ratio(config, workload) {
                    Some(ours) if ours < theirs => {}
                    Some(ours) => worse.push(format!(
                        "{} on {}: ×{ours:.2} vs ×{theirs:.2}",
                        self.rows[config].key, self.columns[workload].label
                    )),
                    None => return format!("{title}: NOT MEASURED"),
                }
            }
        }
        if worse.is_empty() {
            format!("{title}: PASS")
        } else {
            format!("{title}: MISS ({})", worse.join("; "))
        }
    }
}

/// A median figure: ns with no decimals from 100 ns up, else one; seconds with three.
fn figure(value: f64, per_op: bool) -> String {
    match per_op {
        true if value >= 100.0 => format!("{value:.0} ns"),
        true => format!("{value:.1} ns"),
        false => format!("{value:.3} s"),
    }
}

/// The drops of every session of a tracer, summed by cause: `0` when none, else the causes
/// that lost something.
fn drops_cell(config: usize, usage: &[Usage]) -> String {
    if config == BASELINE || usage.is_empty() {
        return "—".into();
    }
    let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unknown = 0;
    for drops in usage.iter().map(|u| u.drops.as_ref()) {
        match drops {
            Some(drops) => drops
                .iter()
                .for_each(|(cause, n)| *sum.entry(cause).or_default() += n),
            None => unknown += 1,
        }
    }
    let mut parts: Vec<String> = sum
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(cause, n)| format!("{cause} {n}"))
        .collect();
    if parts.is_empty() {
        parts.push("0".into());
    }
    if unknown > 0 {
        parts.push(format!("{unknown} sessions without a stats line"));
    }
    parts.join(", ")
}

/// The median of some figures; `None` when there are none.
fn median(figures: impl Iterator<Item = f64>) -> Option<f64> {
    let mut figures: Vec<f64> = figures.collect();
    figures.sort_by(f64::total_cmp);
    let n = figures.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(figures[n / 2]),
        _ => Some((figures[n / 2 - 1] + figures[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::overhead::configs::Kind;

    fn config(key: &'static str) -> Config {
        Config {
            key,
            label: key.into(),
            kind: Kind::Baseline,
            skipped: None,
        }
    }

    fn results(rounds: usize) -> Results {
        let configs: Vec<Config> = ["(0)", "(1)", "(2)", "(3)", "(4)"]
            .into_iter()
            .map(config)
            .collect();
        let columns = (0..4)
            .map(|i| Column {
                label: format!("w{i}"),
                per_op: i != FILES,
            })
            .collect();
        Results::new(&configs, columns, rounds)
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn ratios_are_medians_of_ratios_to_the_same_round() {
        let mut r = results(3);
        // The machine slows down in round 2; the tracer costs 10% in every round.
        for (round, base) in [100.0, 200.0, 100.0].into_iter().enumerate() {
            r.record(BASELINE, ROOT_FS, round, base);
            r.record(DEFAULT, ROOT_FS, round, base * 1.1);
        }
        let ratio = r.ratio(DEFAULT, ROOT_FS).unwrap();
        assert!((ratio - 1.1).abs() < 1e-9, "{ratio}");
        assert_eq!(r.row(DEFAULT)[2], "110 ns ×1.10");
        assert_eq!(r.row(BASELINE)[2], "100 ns");
        assert_eq!(r.row(DEFAULT)[3], "—");
    }

    #[test]
    fn figures_and_drops_read_well() {
        assert_eq!(figure(1234.4, true), "1234 ns");
        assert_eq!(figure(61.25, true), "61.2 ns");
        assert_eq!(figure(0.2134, false), "0.213 s");
        let usage = |drops: Option<&[(&str, u64)]>| Usage {
            rss_kib: 1,
            drops: drops.map(|d| d.iter().map(|(c, n)| (c.to_string(), *n)).collect()),
        };
        let none = [usage(Some(&[("ringbuf_full", 0)]))];
        assert_eq!(drops_cell(DEFAULT, &none), "0");
        let some = [
            usage(Some(&[("lost", 3)])),
            usage(Some(&[("lost", 4)])),
            usage(None),
        ];
        assert_eq!(
            drops_cell(OPENSNOOP, &some),
            "lost 7, 1 sessions without a stats line"
        );
    }

    #[test]
    fn opensnoop_comparison_names_what_is_worse() {
        let mut r = results(1);
        for w in 0..4 {
            r.record(BASELINE, w, 0, 100.0);
            r.record(OPENSNOOP, w, 0, 200.0);
            for c in [DEFAULT, NO_OPEN_TIMES, NO_HOLDERS] {
                r.record(c, w, 0, 150.0);
            }
        }
        assert!(r.better_than_opensnoop().ends_with(": PASS"));
        r.record(NO_HOLDERS, TMPFS, 0, 250.0);
        let goal = r.better_than_opensnoop();
        assert!(goal.contains("MISS ((3) on w1: ×2.50 vs ×2.00)"), "{goal}");
    }
}
