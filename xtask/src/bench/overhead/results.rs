//! The figures of every round, their medians and ratios to no tracer, and the table: a row per
//! measure (a workload where it runs), a column per configuration, plain and as Markdown.

use std::collections::BTreeMap;

use super::{
    configs::{Config, BASELINE},
    session::Usage,
};
use crate::bench::table::print_report;

/// A measure's row heading, and its unit.
#[derive(Clone)]
pub struct Heading {
    /// The heading.
    pub label: String,
    /// `true`: figures are ns per operation; `false`: seconds for the whole workload.
    pub per_op: bool,
}

/// One configuration's figures: a column.
struct Series {
    key: &'static str,
    heading: String,
    label: String,
    /// `[measure][round]`: ns/op or seconds.
    figures: Vec<Vec<Option<f64>>>,
    usage: Vec<Usage>,
    /// Why it has no (more) figures.
    failed: Option<String>,
}

/// Everything measured.
pub struct Results {
    headings: Vec<Heading>,
    series: Vec<Series>,
}

impl Results {
    /// Empty results for these configurations (in the order of their constants), measures and
    /// rounds.
    pub fn new(configs: &[Config], headings: Vec<Heading>, rounds: usize) -> Self {
        let series = configs
            .iter()
            .map(|c| Series {
                key: c.key,
                heading: c.heading.clone(),
                label: c.label.clone(),
                figures: vec![vec![None; rounds]; headings.len()],
                usage: Vec::new(),
                failed: c.skipped.clone(),
            })
            .collect();
        Self { headings, series }
    }

    /// Whether configuration `config` is still measured.
    pub fn measured(&self, config: usize) -> bool {
        self.series[config].failed.is_none()
    }

    /// Records one figure.
    pub fn record(&mut self, config: usize, measure: usize, round: usize, figure: f64) {
        self.series[config].figures[measure][round] = Some(figure);
    }

    /// Records what the tracer used in one session.
    pub fn record_usage(&mut self, config: usize, usage: Usage) {
        self.series[config].usage.push(usage);
    }

    /// Marks a configuration failed; it is not measured again.
    pub fn fail(&mut self, config: usize, reason: String) {
        self.series[config].failed = Some(reason);
    }

    /// `(1) agent`: a configuration as its column heading names it.
    pub fn config_name(&self, config: usize) -> String {
        let s = &self.series[config];
        format!("{} {}", s.key, s.heading)
    }

    /// A measure's row heading.
    pub fn measure_name(&self, measure: usize) -> &str {
        &self.headings[measure].label
    }

    /// How many measures there are.
    pub fn measures(&self) -> usize {
        self.headings.len()
    }

    /// The median figure of a configuration for a measure.
    fn median(&self, config: usize, measure: usize) -> Option<f64> {
        median(
            self.series[config].figures[measure]
                .iter()
                .flatten()
                .copied(),
        )
    }

    /// The median over the rounds of the configuration's figure divided by the baseline's of
    /// the same round.
    pub fn ratio(&self, config: usize, measure: usize) -> Option<f64> {
        let base = &self.series[BASELINE].figures[measure];
        let this = &self.series[config].figures[measure];
        median(
            this.iter()
                .zip(base)
                .filter_map(|(t, b)| Some(t.as_ref()? / b.as_ref()?)),
        )
    }

    /// Prints the table, the legend and `notes`, and the goals, then the same as Markdown.
    pub fn print(&self, headline: &str, notes: Vec<String>, goals: &[String]) {
        let mut all_notes = self.legend();
        all_notes.extend(notes);
        all_notes.push(self.baseline_spread());
        print_report(headline, &self.table(), &all_notes, goals);
    }

    /// The header, a row per measure, then the tracers' memory and drops.
    fn table(&self) -> Vec<Vec<String>> {
        let configs = 0..self.series.len();
        let mut header = vec!["workload".to_string()];
        header.extend(configs.clone().map(|c| self.config_name(c)));
        let mut rows = vec![header];
        for (measure, heading) in self.headings.iter().enumerate() {
            let mut row = vec![heading.label.clone()];
            row.extend(configs.clone().map(|c| self.cell(c, measure)));
            rows.push(row);
        }
        let mut rss = vec!["tracer RSS".to_string()];
        rss.extend(self.series.iter().map(|s| rss_cell(&s.usage)));
        let mut drops = vec!["drops".to_string()];
        drops.extend(configs.map(|c| drops_cell(c, &self.series[c].usage)));
        rows.extend([rss, drops]);
        rows
    }

    /// The median figure of a configuration for a measure, with its ratio to the baseline.
    fn cell(&self, config: usize, measure: usize) -> String {
        let Some(median) = self.median(config, measure) else {
            return "—".into();
        };
        let mut cell = figure(median, self.headings[measure].per_op);
        if config != BASELINE {
            if let Some(ratio) = self.ratio(config, measure) {
                cell += &format!(" ×{ratio:.2}");
            }
        }
        cell
    }

    /// What each column runs, and why it has no figures when it has none.
    fn legend(&self) -> Vec<String> {
        self.series
            .iter()
            .map(|s| match &s.failed {
                Some(why) => format!("{} {}: {} — {why}", s.key, s.heading, s.label),
                None => format!("{} {}: {}", s.key, s.heading, s.label),
            })
            .collect()
    }

    /// How much the baseline moved between rounds, per measure: the noise floor.
    fn baseline_spread(&self) -> String {
        let spreads: Vec<String> = self
            .headings
            .iter()
            .zip(&self.series[BASELINE].figures)
            .filter_map(|(heading, figures)| {
                let figures: Vec<f64> = figures.iter().flatten().copied().collect();
                let min = figures.iter().copied().reduce(f64::min)?;
                let max = figures.iter().copied().reduce(f64::max)?;
                Some(format!(
                    "{} {:.0}%",
                    heading.label,
                    (max / min - 1.0) * 100.0
                ))
            })
            .collect();
        format!(
            "the baseline's spread between rounds (slowest/fastest − 1): {}",
            spreads.join(", ")
        )
    }
}

/// The largest resident memory of a tracer over its sessions.
fn rss_cell(usage: &[Usage]) -> String {
    let rss = usage.iter().map(|u| u.rss_kib).max();
    rss.map_or("—".into(), |kib| {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    })
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
pub(super) mod tests {
    use super::*;
    use crate::bench::overhead::configs::{Kind, OPENSNOOP, WATCH};

    /// Empty results for the seven configurations and eight measures (the last two in
    /// seconds).
    pub fn results(rounds: usize) -> Results {
        let configs: Vec<Config> = ["(0)", "(1)", "(2)", "(3)", "(4)", "(5)", "(6)"]
            .into_iter()
            .map(|key| Config {
                key,
                heading: format!("c{key}"),
                label: format!("command {key}"),
                kind: Kind::Baseline,
                skipped: None,
                contends: true,
            })
            .collect();
        let headings = (0..8)
            .map(|i| Heading {
                label: format!("m{i}"),
                per_op: i < 6,
            })
            .collect();
        Results::new(&configs, headings, rounds)
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
            r.record(BASELINE, 0, round, base);
            r.record(WATCH, 0, round, base * 1.1);
        }
        let ratio = r.ratio(WATCH, 0).unwrap();
        assert!((ratio - 1.1).abs() < 1e-9, "{ratio}");
        assert_eq!(r.cell(WATCH, 0), "110 ns ×1.10");
        assert_eq!(r.cell(BASELINE, 0), "100 ns");
        assert_eq!(r.cell(WATCH, 1), "—");
    }

    #[test]
    fn the_table_has_a_row_per_measure_and_a_column_per_configuration() {
        let mut r = results(1);
        r.record(BASELINE, 6, 0, 0.5);
        r.record(WATCH, 6, 0, 0.55);
        r.fail(OPENSNOOP, "not installed".into());
        let table = r.table();
        assert_eq!(table.len(), 1 + 8 + 2);
        assert!(table.iter().all(|row| row.len() == 1 + 7));
        assert_eq!(table[0][..3], ["workload", "(0) c(0)", "(1) c(1)"]);
        assert_eq!(table[7][0], "m6");
        assert_eq!(table[7][1], "0.500 s");
        assert_eq!(table[7][WATCH + 1], "0.550 s ×1.10");
        assert_eq!(table[9][0], "tracer RSS");
        assert_eq!(table[10][0], "drops");
        let legend = r.legend();
        assert_eq!(legend[WATCH], "(3) c(3): command (3)");
        assert_eq!(legend[OPENSNOOP], "(6) c(6): command (6) — not installed");
    }

    #[test]
    fn figures_and_drops_read_well() {
        assert_eq!(figure(1234.4, true), "1234 ns");
        assert_eq!(figure(61.25, true), "61.2 ns");
        assert_eq!(figure(0.2134, false), "0.213 s");
        let usage = |drops: Option<&[(&str, u64)]>| Usage {
            rss_kib: 2048,
            drops: drops.map(|d| d.iter().map(|(c, n)| (c.to_string(), *n)).collect()),
        };
        let none = [usage(Some(&[("ringbuf_full", 0)]))];
        assert_eq!(drops_cell(WATCH, &none), "0");
        assert_eq!(rss_cell(&none), "2.0 MiB");
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
}
