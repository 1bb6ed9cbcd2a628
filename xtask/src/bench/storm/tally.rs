//! What `watch --json` printed during the storm: for each EBUSY line of ours, its lag (when
//! the bench read it, minus the event's `ts`, both wall clock), whether it names the process
//! the bench set up to hold that mount, and the losses of the last `stats` line.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

use super::super::{lines::Line, record::describe_drops, tools::holder_pids};

/// Problems kept to show (the first ones).
const PROBLEMS_SHOWN: usize = 5;

/// Turns the instants lines were read at into wall-clock times.
#[derive(Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    wall: SystemTime,
}

impl WallClock {
    /// The clock as of now.
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at` (an instant after this clock was read).
    fn wall(&self, at: Instant) -> SystemTime {
        self.wall + at.saturating_duration_since(self.instant)
    }
}

/// The EBUSY lines of the storm, counted.
pub struct Tally {
    clock: WallClock,
    our_pid: u64,
    /// Mount point → its index.
    index: HashMap<String, usize>,
    /// The holder pid of each mount.
    holders: Vec<u32>,
    /// Each line's lag, in the order read.
    pub lags: Vec<Duration>,
    /// Lines per mount.
    pub lines: Vec<u64>,
    /// Lines whose holders include the mount's holder.
    pub attributed: u64,
    /// The first lines that did not.
    pub problems: Vec<String>,
    /// The drops of the last `stats` line (`None` before one came).
    pub drops: Option<String>,
    /// When the last EBUSY line was read.
    pub last_line: Option<Instant>,
}

impl Tally {
    /// A tally of EBUSY lines made by this process on `points`, each held by `holders`.
    pub fn new(clock: WallClock, points: &[PathBuf], holders: &[u32]) -> Self {
        let index = points
            .iter()
            .enumerate()
            .map(|(k, p)| (p.to_string_lossy().into_owned(), k))
            .collect();
        Self {
            clock,
            our_pid: u64::from(std::process::id()),
            index,
            holders: holders.to_vec(),
            lags: Vec::new(),
            lines: vec![0; points.len()],
            attributed: 0,
            problems: Vec::new(),
            drops: None,
            last_line: None,
        }
    }

    /// EBUSY lines counted.
    pub fn total(&self) -> u64 {
        self.lines.iter().sum()
    }

    /// Counts one line of `watch --json`.
    pub fn add(&mut self, line: &Line) {
        let Ok(event) = serde_json::from_str::<Value>(&line.text) else {
            return;
        };
        match event["type"].as_str() {
            Some("stats") => self.drops = Some(describe_drops(&event["drops"])),
            Some("umount") => self.add_umount(&event, line.at),
            _ => {}
        }
    }

    fn add_umount(&mut self, event: &Value, at: Instant) {
        let ours = event["errno"] == "EBUSY" && event["pid"].as_u64() == Some(self.our_pid);
        let Some(&k) = event["target"].as_str().and_then(|t| self.index.get(t)) else {
            return;
        };
        if !ours {
            return;
        }
        self.lines[k] += 1;
        self.last_line = Some(at);
        let ts = event["ts"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        match ts {
            Some(ts) => self
                .lags
                .push(self.clock.wall(at).duration_since(ts).unwrap_or_default()),
            None => self.problem(format!("a line without a readable ts: {event}")),
        }
        if holder_pids(event).contains(&self.holders[k]) {
            self.attributed += 1;
        } else {
            let holders = &event["holders"];
            self.problem(format!(
                "line {} on mount {k} does not name its holder {}: holders {holders}, unknown {}",
                event["id"], self.holders[k], event["unknown"]
            ));
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < PROBLEMS_SHOWN {
            self.problems.push(text);
        }
    }
}

/// The `q` quantile of `lags` (nearest rank), `None` when empty.
pub fn quantile(lags: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = lags.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn quantiles_are_nearest_ranks() {
        let lags: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(quantile(&lags, 0.5), Some(ms(50)));
        assert_eq!(quantile(&lags, 0.99), Some(ms(99)));
        assert_eq!(quantile(&lags, 1.0), Some(ms(100)));
        assert_eq!(quantile(&[ms(7)], 0.99), Some(ms(7)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_line_counts_for_its_mount_with_its_lag_and_whether_it_names_the_holder() {
        let clock = WallClock::now();
        let points = [PathBuf::from("/t/m0"), PathBuf::from("/t/m1")];
        let mut tally = Tally::new(clock, &points, &[700, 701]);
        let ts = humantime::format_rfc3339_nanos(clock.wall - ms(20));
        let pid = std::process::id();
        let line = |target: &str, holder: u32| Line {
            at: clock.instant + ms(5),
            text: format!(
                r#"{{"type":"umount","id":1,"ts":"{ts}","pid":{pid},"target":"{target}","errno":"EBUSY","holders":[{{"kind":"fd","pid":{holder}}}]}}"#
            ),
        };
        tally.add(&line("/t/m1", 701));
        tally.add(&line("/t/m0", 701));
        tally.add(&line("/elsewhere", 701));
        tally.add(&Line {
            at: clock.instant,
            text: r#"{"type":"stats","drops":{"ringbuf_full":3,"path_truncated":0}}"#.into(),
        });
        assert_eq!(tally.lines, [1, 1]);
        assert_eq!(tally.lags, [ms(25), ms(25)]);
        assert_eq!(tally.attributed, 1);
        assert_eq!(tally.problems.len(), 1, "{:?}", tally.problems);
        assert!(
            tally.problems[0].contains("mount 0"),
            "{:?}",
            tally.problems
        );
        assert_eq!(tally.drops.as_deref(), Some("ringbuf_full 3"));
    }
}
