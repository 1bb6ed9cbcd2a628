//! Results: medians, holder checks, the table (plain and Markdown) and the goals.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use super::{
    table::{machine, print_report, verdict},
    workload::WorkloadSpec,
};

/// Goal (a): the longest acceptable median from EBUSY to the line with holders.
const WATCH_GOAL: Duration = Duration::from_millis(50);
/// Goal (b): how many times faster than `fuser -m` the kernel scan must be.
const KERNEL_SCAN_GOAL: f64 = 5.0;

/// One row of the table.
pub struct Measurement {
    /// `a` to `e`, as in the task description.
    pub key: &'static str,
    /// What was measured.
    pub label: String,
    /// The samples, or why there are none.
    pub result: Result<Samples, String>,
}

/// The timed runs of one measurement.
#[derive(Default)]
pub struct Samples {
    /// Duration of each timed run.
    pub times: Vec<Duration>,
    /// The holder pids each timed run found.
    pub found: Vec<BTreeSet<u32>>,
    /// Runs that went wrong without stopping the measurement.
    pub problems: Vec<String>,
    /// What the command said it scanned (last run).
    pub scanned: Option<String>,
}

/// The numbers of one measurement.
struct Summary {
    median: Duration,
    min: Duration,
    /// Pids found by every run.
    always: BTreeSet<u32>,
    /// Pids found by at least one run.
    ever: BTreeSet<u32>,
}

impl Samples {
    /// `None` when there is no timed run.
    fn summary(&self) -> Option<Summary> {
        let mut times = self.times.clone();
        times.sort();
        let n = times.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => times[n / 2],
            _ => (times[n / 2 - 1] + times[n / 2]) / 2,
        };
        let mut found = self.found.iter();
        let first = found.next().cloned().unwrap_or_default();
        let (always, ever) = found.fold((first.clone(), first), |(always, ever), pids| {
            (&always & pids, &ever | pids)
        });
        Some(Summary {
            median,
            min: times[0],
            always,
            ever,
        })
    }
}

/// Prints the table, the goals, and both again as Markdown.
pub fn print(spec: &WorkloadSpec, expected: &BTreeMap<u32, String>, measurements: &[Measurement]) {
    let fuser = summary_of(measurements, "d");
    let mut rows = vec![HEADER.map(String::from).to_vec()];
    rows.extend(
        measurements
            .iter()
            .map(|m| row(m, expected, fuser.as_ref())),
    );
    let goals = goals(measurements);

    let notes: Vec<String> = measurements
        .iter()
        .filter_map(|m| match &m.result {
            Ok(Samples {
                scanned: Some(scanned),
                ..
            }) => Some(format!("({}) scanned {scanned}", m.key)),
            _ => None,
        })
        .collect();
    print_report(&headline(spec, expected.len()), &rows, &notes, &goals);
}

/// The columns.
const HEADER: [&str; 7] = [
    "",
    "measurement",
    "median ms",
    "min ms",
    "holders found",
    "vs fuser -m",
    "notes",
];

/// What was measured, and on what.
fn headline(spec: &WorkloadSpec, holders: usize) -> String {
    format!(
        "busyprobe attribution benchmark: {} extra processes × {} open files, {holders} of them \
         holding the tmpfs; {}",
        spec.processes,
        spec.fds,
        machine()
    )
}

/// The summary of the measurement `key`, if it has one.
fn summary_of(measurements: &[Measurement], key: &str) -> Option<Summary> {
    let m = measurements.iter().find(|m| m.key == key)?;
    m.result.as_ref().ok()?.summary()
}

/// One row of cells.
fn row(m: &Measurement, expected: &BTreeMap<u32, String>, fuser: Option<&Summary>) -> Vec<String> {
    let key = format!("({})", m.key);
    let samples = match &m.result {
        Ok(samples) => samples,
        Err(reason) => return unmeasured_row(key, m, reason.clone()),
    };
    let Some(s) = samples.summary() else {
        return unmeasured_row(key, m, samples.problems.join("; "));
    };
    let vs_fuser = match (m.key, fuser) {
        ("d", _) => "baseline".to_string(),
        ("b" | "c" | "e", Some(f)) => speedup(f.median, s.median),
        _ => String::new(),
    };
    let mut notes = holder_notes(&s, expected);
    notes.extend(samples.problems.iter().cloned());
    vec![
        key,
        m.label.clone(),
        ms(s.median),
        ms(s.min),
        holders_cell(&s, expected.len()),
        vs_fuser,
        notes.join("; "),
    ]
}

/// A row without numbers, saying why.
fn unmeasured_row(key: String, m: &Measurement, why: String) -> Vec<String> {
    let none = || "—".to_string();
    vec![key, m.label.clone(), none(), none(), none(), none(), why]
}

/// `found/expected`, flagged when fewer, with the range when runs disagreed.
fn holders_cell(s: &Summary, expected: usize) -> String {
    let mut cell = format!("{}/{expected}", s.always.len());
    if s.ever.len() != s.always.len() {
        cell += &format!(" (up to {})", s.ever.len());
    }
    if s.always.len() < expected {
        cell += " FEWER";
    }
    cell
}

/// Which expected holders a measurement missed and which pids it found besides.
fn holder_notes(s: &Summary, expected: &BTreeMap<u32, String>) -> Vec<String> {
    let missing: Vec<String> = expected
        .iter()
        .filter(|(pid, _)| !s.always.contains(pid))
        .map(|(pid, how)| format!("{pid} ({how})"))
        .collect();
    let extra: Vec<String> = s
        .ever
        .iter()
        .filter(|pid| !expected.contains_key(pid))
        .map(u32::to_string)
        .collect();
    let mut notes = Vec::new();
    if !missing.is_empty() {
        notes.push(format!("missed {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        notes.push(format!("also named {}", extra.join(", ")));
    }
    notes
}

/// PASS/MISS for each goal.
fn goals(measurements: &[Measurement]) -> Vec<String> {
    let watch_goal = match summary_of(measurements, "a") {
        Some(a) => format!(
            "(a) EBUSY → watch line with holders ≤ {} ms: {} (median {} ms)",
            WATCH_GOAL.as_millis(),
            verdict(a.median <= WATCH_GOAL),
            ms(a.median)
        ),
        None => format!(
            "(a) EBUSY → watch line with holders ≤ {} ms: NOT MEASURED",
            WATCH_GOAL.as_millis()
        ),
    };
    let title = format!(
        "(b) who --scan kernel ≥ {KERNEL_SCAN_GOAL}x faster than fuser -m, same or more holders"
    );
    let scan_goal = match (summary_of(measurements, "b"), summary_of(measurements, "d")) {
        (Some(b), Some(d)) => {
            let fast = d.median.as_secs_f64() >= KERNEL_SCAN_GOAL * b.median.as_secs_f64();
            let missed: Vec<String> = d.always.difference(&b.always).map(u32::to_string).collect();
            let holders = if missed.is_empty() {
                format!("holders {} vs {}", b.always.len(), d.always.len())
            } else {
                format!("fuser named {} the kernel scan did not", missed.join(", "))
            };
            format!(
                "{title}: {} ({}; {holders})",
                verdict(fast && missed.is_empty()),
                speedup(d.median, b.median)
            )
        }
        _ => format!("{title}: NOT MEASURED"),
    };
    vec![watch_goal, scan_goal]
}

/// How many times faster `this` is than `baseline`.
fn speedup(baseline: Duration, this: Duration) -> String {
    let ratio = baseline.as_secs_f64() / this.as_secs_f64().max(1e-9);
    if ratio >= 1.0 {
        format!("{ratio:.1}x faster")
    } else {
        format!("{:.1}x slower", 1.0 / ratio)
    }
}

/// Milliseconds with one decimal.
fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64], found: &[&[u32]]) -> Samples {
        Samples {
            times: ms.iter().copied().map(Duration::from_millis).collect(),
            found: found.iter().map(|f| f.iter().copied().collect()).collect(),
            ..Samples::default()
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = samples(&[30, 10, 20], &[]).summary().unwrap();
        assert_eq!(
            (odd.median, odd.min),
            (Duration::from_millis(20), Duration::from_millis(10))
        );
        let even = samples(&[40, 10, 20, 30], &[]).summary().unwrap();
        assert_eq!(even.median, Duration::from_millis(25));
        assert!(samples(&[], &[]).summary().is_none());
    }

    #[test]
    fn holders_found_in_every_run_count_and_fewer_is_flagged() {
        let expected = BTreeMap::from([(1, "cwd".to_string()), (2, "2 fds".to_string())]);
        let s = samples(&[1, 1], &[&[1, 2, 9], &[1]]).summary().unwrap();
        assert_eq!(holders_cell(&s, expected.len()), "1/2 (up to 3) FEWER");
        assert_eq!(
            holder_notes(&s, &expected),
            ["missed 2 (2 fds)", "also named 9"]
        );
    }

    #[test]
    fn speedups_read_both_ways() {
        let ms = Duration::from_millis;
        assert_eq!(speedup(ms(400), ms(100)), "4.0x faster");
        assert_eq!(speedup(ms(100), ms(400)), "4.0x slower");
    }
}
