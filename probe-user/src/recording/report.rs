//! `busyprobe report`: a self-contained account of a recording to paste into a bug report.
//!
//! Two streaming passes over the files (constant memory whatever their size): the first
//! counts (attempts, failures by errno, the mounts that failed most, the holders seen most),
//! the second groups failures into *incidents* (`sink/incidents/` has the rule: failed
//! attempts on one target up to the attempt that worked, or the end of the recording), each
//! with its holders and its retry timeline.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use serde::{Serialize, Serializer};

use super::{for_each_line_with_text, LineProblem};
pub use crate::sink::incidents::Incident;
use crate::sink::{
    incidents::{AttemptSketch, Grouping},
    json::wire::{HeaderLine, Line, UmountLine, WarningLine},
};

/// Most distinct keys a summary table counts (then the rest is "other").
const MAX_KEYS: usize = 10_000;

/// Counts over the whole recording. Targets and comms are counted by their exact bytes; in
/// JSON they are keys, lossy when not UTF-8 (keys that come out the same are added up).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The first header line.
    pub header: Option<HeaderLine>,
    /// Unmount attempts.
    pub attempts: u64,
    /// Failed attempts by errno name.
    pub failures_by_errno: BTreeMap<String, u64>,
    /// Failed attempts by target.
    #[serde(serialize_with = "lossy_keys")]
    pub failures_by_target: HashMap<Vec<u8>, u64>,
    /// Holders (of failed attempts) by comm (`-` for holders that are not processes).
    #[serde(serialize_with = "lossy_keys")]
    pub holders_by_comm: HashMap<Vec<u8>, u64>,
    /// Failed attempts by the pod (`namespace/pod`) of a holder: each attempt once per pod
    /// that held its mount (holders the runtime named; a schema v1 addition).
    #[serde(serialize_with = "lossy_keys")]
    pub failures_by_holder_pod: HashMap<Vec<u8>, u64>,
    /// Failed attempts by the pod of the process that called unmount (a schema v1 addition).
    #[serde(serialize_with = "lossy_keys")]
    pub failures_by_caller_pod: HashMap<Vec<u8>, u64>,
    /// Time of the first and last attempt.
    pub first_ts: Option<String>,
    /// Time of the last attempt.
    pub last_ts: Option<String>,
    /// Lines the recording could not write (its `recording-lines-lost` warnings: a full disk,
    /// an I/O error): the counts above are short by as many.
    pub lines_not_recorded: u64,
    /// Events the probes lost (ring buffer or in-flight map full), as the last `stats` line
    /// of each run of the recorder says (its counters start again with each run).
    pub events_lost: u64,
    /// The events lost in the run being read, not yet added to `events_lost`.
    #[serde(skip)]
    run_events_lost: u64,
}

fn count(map: &mut HashMap<Vec<u8>, u64>, key: Cow<'_, [u8]>) {
    if map.len() < MAX_KEYS || map.contains_key(key.as_ref()) {
        *map.entry(key.into_owned()).or_default() += 1;
    } else {
        *map.entry(b"(other)".to_vec()).or_default() += 1;
    }
}

/// A count map keyed by bytes as a JSON object keyed by (lossy) text.
fn lossy_keys<S: Serializer>(map: &HashMap<Vec<u8>, u64>, s: S) -> Result<S::Ok, S::Error> {
    let mut text: BTreeMap<Cow<'_, str>, u64> = BTreeMap::new();
    for (key, n) in map {
        *text.entry(String::from_utf8_lossy(key)).or_default() += n;
    }
    text.serialize(s)
}

impl Summary {
    fn add(&mut self, line: &Line) {
        match line {
            Line::Header(h) if self.header.is_none() => self.header = Some(h.clone()),
            Line::Umount(a) => self.add_attempt(a),
            Line::Warning(w) => {
                if let WarningLine::RecordingLinesLost(gap) = w.as_ref() {
                    self.lines_not_recorded += gap.lines;
                }
            }
            Line::Stats(stats) => self.add_counters(&stats.stats()),
            _ => {}
        }
    }

    /// A `stats` line: its totals are the run's so far; a total below the last one means a
    /// new run of the recorder began (its counters start at 0).
    fn add_counters(&mut self, stats: &crate::stats::Stats) {
        let lost = stats.events_lost();
        if lost < self.run_events_lost {
            self.events_lost += self.run_events_lost;
        }
        self.run_events_lost = lost;
    }

    fn add_attempt(&mut self, a: &UmountLine) {
        self.attempts += 1;
        self.first_ts.get_or_insert_with(|| a.ts.clone());
        self.last_ts = Some(a.ts.clone());
        let Some(errno) = &a.errno else {
            return;
        };
        *self.failures_by_errno.entry(errno.clone()).or_default() += 1;
        count(&mut self.failures_by_target, a.target_bytes());
        for h in a.holders() {
            count(
                &mut self.holders_by_comm,
                h.comm_bytes().unwrap_or(Cow::Borrowed(b"-")),
            );
        }
        let mut pods: Vec<String> = a
            .holders()
            .iter()
            .filter_map(|h| Some(h.k8s.as_ref()?.pod_ref()))
            .collect();
        pods.sort_unstable();
        pods.dedup();
        for pod in pods {
            count(
                &mut self.failures_by_holder_pod,
                Cow::Owned(pod.into_bytes()),
            );
        }
        if let Some(k) = &a.k8s {
            count(
                &mut self.failures_by_caller_pod,
                Cow::Owned(k.pod_ref().into_bytes()),
            );
        }
    }

    /// The `n` biggest entries of a count map, biggest first (ties by name).
    pub fn top(map: &HashMap<Vec<u8>, u64>, n: usize) -> Vec<(&[u8], u64)> {
        let mut v: Vec<(&[u8], u64)> = map.iter().map(|(k, c)| (k.as_slice(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

/// The incidents each pod took part in, by their numbers in the report: as a holder's pod, or
/// as the pod of the process whose unmount failed (pods by `namespace/pod`, in order).
#[derive(Debug, Default)]
pub struct IncidentsByPod {
    /// `namespace/pod` → (incidents its processes held the mount in, incidents it unmounted in).
    pub pods: BTreeMap<String, (Vec<usize>, Vec<usize>)>,
}

impl IncidentsByPod {
    /// Notes incident `number`'s pods.
    pub fn add(&mut self, number: usize, inc: &Incident) {
        for pod in inc.holders.iter().filter_map(|(h, _)| h.k8s.as_ref()) {
            let held = &mut self.pods.entry(pod.pod_ref()).or_default().0;
            if held.last() != Some(&number) {
                held.push(number);
            }
        }
        if let Some(pod) = &inc.first.k8s {
            self.pods.entry(pod.pod_ref()).or_default().1.push(number);
        }
    }
}

/// The first pass: the counts, and the lines that had to be skipped; `read` is told the size
/// of every line read well (for progress).
pub fn summarize(
    files: &[PathBuf],
    mut read: impl FnMut(usize),
) -> std::io::Result<(Summary, Vec<LineProblem>)> {
    let mut summary = Summary::default();
    let problems = for_each_line_with_text(files, |text, line| {
        read(text.len());
        summary.add(&line);
    })?;
    summary.events_lost += std::mem::take(&mut summary.run_events_lost);
    Ok((summary, problems))
}

/// The second pass: every incident, in the order it ended (those that never ended last);
/// `read` is told the size of every line read well.
pub fn incidents(
    files: &[PathBuf],
    mut read: impl FnMut(usize),
    mut incident: impl FnMut(Incident),
) -> std::io::Result<()> {
    let mut grouping = Grouping::default();
    for_each_line_with_text(files, |text, line| {
        read(text.len());
        if let Line::Umount(attempt) = line {
            grouping.add(&AttemptSketch::of(&attempt), &mut incident);
        }
    })?;
    grouping.finish(incident);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{recording::markdown, sink::json::wire::UmountLine};

    /// A pod that held the mount in two incidents and whose own unmount failed in a third;
    /// another that only held one: each listed with its incidents' numbers.
    #[test]
    fn incidents_are_grouped_by_pod() {
        use crate::container::{Container, PodNames, Runtime};
        let in_pod = |pod: &str| Container {
            runtime: Runtime::Containerd,
            id: Some("c".into()),
            pod_uid: None,
            k8s: Some(PodNames {
                pod: pod.into(),
                namespace: "ns".into(),
                uid: "u".into(),
                container: Some("x".into()),
                image: None,
            }),
        };
        let incident = |holder_pods: &[&str], caller_pod: Option<&str>| {
            let holders = holder_pods
                .iter()
                .zip(10..)
                .map(|(pod, pid)| {
                    let mut h = crate::model::sample_process_holder(
                        crate::model::HolderKind::Fd,
                        1,
                        pid,
                        b"scan",
                        None,
                    );
                    h.process.as_mut().unwrap().container = Some(in_pod(pod));
                    h
                })
                .collect();
            let mut a = crate::event::sample_attempt(b"/m", Some(b"/m"), -16, 0);
            a.attribution = Some(Ok(crate::model::sample_attribution("/m", holders)));
            a.container = caller_pod.map(in_pod);
            Incident::new(&UmountLine::new(&a))
        };
        let mut by_pod = IncidentsByPod::default();
        by_pod.add(1, &incident(&["scanner"], None));
        by_pod.add(2, &incident(&["scanner", "other"], None));
        by_pod.add(3, &incident(&[], Some("scanner")));
        let rows: Vec<(&str, &[usize], &[usize])> = by_pod
            .pods
            .iter()
            .map(|(pod, (held, called))| (pod.as_str(), held.as_slice(), called.as_slice()))
            .collect();
        assert_eq!(
            rows,
            [
                ("ns/other", &[2][..], &[][..]),
                ("ns/scanner", &[1, 2][..], &[3][..])
            ]
        );
        let text = markdown::by_pod(&by_pod);
        assert!(text.contains("| ns/scanner | 1, 2 | 3 |"), "{text}");
        assert!(text.contains("| ns/other | 2 | - |"), "{text}");
        assert_eq!(markdown::by_pod(&IncidentsByPod::default()), "");
    }

    /// Two targets whose bytes differ only where they are not UTF-8 (their JSON strings are
    /// the same) are two incidents, each shown with its own bytes.
    #[test]
    fn targets_are_told_apart_by_their_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.jsonl");
        let mut text = String::new();
        for (id, target) in [(1, &b"/m\xff"[..]), (2, b"/m\xfe"), (3, b"/m\xff")] {
            let mut a = crate::event::sample_attempt(target, Some(target), -16, 0);
            a.id = id;
            text.push_str(&serde_json::to_string(&UmountLine::new(&a)).unwrap());
            text.push('\n');
        }
        std::fs::write(&file, text).unwrap();
        let files = [file];
        let (summary, problems) = summarize(&files, |_| {}).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            Summary::top(&summary.failures_by_target, 10),
            [(&b"/m\xff"[..], 2), (&b"/m\xfe"[..], 1)]
        );
        let mut seen = Vec::new();
        incidents(
            &files,
            |_| {},
            |inc| seen.push((inc.timeline.len(), markdown::incident(1, &inc))),
        )
        .unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, 2);
        assert!(
            seen[0].1.starts_with("\n## 1. /m\\\\xff: 2 failed"),
            "{}",
            seen[0].1
        );
        assert!(
            seen[1].1.starts_with("\n## 1. /m\\\\xfe: 1 failed"),
            "{}",
            seen[1].1
        );
    }

    /// A recording's gaps and the probes' losses are added up (the counters of each run of
    /// the recorder start again) and said at the top of the report.
    #[test]
    fn losses_of_the_recording_and_of_the_probes_are_added_up_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.jsonl");
        let stats = |ringbuf_full: u64| {
            format!(
                r#"{{"v":1,"type":"stats","ts":"2026-12-06T23:00:00.000000000Z","events":9,"drops":{{"ringbuf_full":{ringbuf_full},"inflight_map_full":1}},"decode_errors":0,"final":false}}"#
            )
        };
        let gap = |lines: u64| {
            format!(
                r#"{{"v":1,"type":"warning","ts":"2026-12-06T23:00:05.000000000Z","warning":"recording-lines-lost","lines":{lines},"cause":"ENOSPC","since":"2026-12-06T23:00:01.000000000Z","message":"m"}}"#
            )
        };
        // A run that lost 3 + 1 events, a gap of 5 lines, a new run that lost 1 + 1, a gap
        // of 2.
        let text = [stats(1), stats(3), gap(5), stats(0), stats(1), gap(2)].join("\n");
        std::fs::write(&file, text + "\n").unwrap();
        let (summary, problems) = summarize(&[file], |_| {}).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((summary.lines_not_recorded, summary.events_lost), (7, 6));
        let top = markdown::summary(&summary, 1);
        assert!(
            top.contains("- **7 lines could not be written to the recording**")
                && top.contains("- **the probes lost 6 events**"),
            "{top}"
        );
    }
}
