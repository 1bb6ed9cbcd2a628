//! `busyprobe report`: a self-contained account of a recording to paste into a bug report.
//!
//! Two streaming passes over the files (constant memory whatever their size): the first
//! counts (attempts, failures by errno, the mounts that failed most, the holders seen most),
//! the second groups failures into *incidents*: consecutive failed attempts on one target up
//! to the attempt that worked (or the end of the recording), each with its holders and its
//! retry timeline.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use serde::Serialize;
use serde_json::Value;

use super::{for_each_line, LineProblem};

/// Most distinct keys a summary table counts (then the rest is "other").
const MAX_KEYS: usize = 10_000;
/// Most attempts an incident's timeline lists (the rest are counted).
const MAX_TIMELINE: usize = 100;
/// Most distinct holders an incident lists.
const MAX_HOLDERS: usize = 100;

/// Counts over the whole recording.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The first header line.
    pub header: Option<Value>,
    /// Unmount attempts.
    pub attempts: u64,
    /// Failed attempts by errno name.
    pub failures_by_errno: BTreeMap<String, u64>,
    /// Failed attempts by target.
    pub failures_by_target: HashMap<String, u64>,
    /// Holders (of failed attempts) by comm.
    pub holders_by_comm: HashMap<String, u64>,
    /// Time of the first and last attempt.
    pub first_ts: Option<String>,
    /// Time of the last attempt.
    pub last_ts: Option<String>,
}

fn count(map: &mut HashMap<String, u64>, key: String) {
    if map.len() < MAX_KEYS || map.contains_key(&key) {
        *map.entry(key).or_default() += 1;
    } else {
        *map.entry("(other)".into()).or_default() += 1;
    }
}

impl Summary {
    fn add(&mut self, line: &Value) {
        match line["type"].as_str() {
            Some("header") if self.header.is_none() => self.header = Some(line.clone()),
            Some("umount") => self.add_attempt(line),
            _ => {}
        }
    }

    fn add_attempt(&mut self, a: &Value) {
        self.attempts += 1;
        let ts = a["ts"].as_str().map(str::to_owned);
        self.first_ts = self.first_ts.take().or(ts.clone());
        self.last_ts = ts;
        let Some(errno) = a["errno"].as_str() else {
            return;
        };
        *self.failures_by_errno.entry(errno.to_owned()).or_default() += 1;
        count(&mut self.failures_by_target, text(&a["target"]));
        for h in a["holders"].as_array().into_iter().flatten() {
            count(&mut self.holders_by_comm, text(&h["comm"]));
        }
    }

    /// The `n` biggest entries of a count map, biggest first (ties by name).
    pub fn top(map: &HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = map.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// A JSON value as display text (`-` for null).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Consecutive failed attempts on one target, up to the one that worked.
#[derive(Debug, Serialize)]
pub struct Incident {
    /// The target.
    pub target: String,
    /// The first failed attempt (the whole line).
    pub first: Value,
    /// Every attempt: `(id, ts, errno or "ok")`, at most [`MAX_TIMELINE`].
    pub timeline: Vec<(u64, String, String)>,
    /// Attempts not listed in `timeline`.
    pub more_attempts: u64,
    /// Distinct holders seen over the failed attempts, with how many attempts named each.
    pub holders: Vec<(Value, u64)>,
    /// The attempt that worked, if any.
    pub resolved_by: Option<u64>,
}

impl Incident {
    fn new(first: &Value) -> Self {
        let mut me = Self {
            target: text(&first["target"]),
            first: first.clone(),
            timeline: Vec::new(),
            more_attempts: 0,
            holders: Vec::new(),
            resolved_by: None,
        };
        me.add(first);
        me
    }

    fn add(&mut self, a: &Value) {
        let id = a["id"].as_u64().unwrap_or(0);
        if self.timeline.len() < MAX_TIMELINE {
            let result = a["errno"].as_str().unwrap_or("ok").to_owned();
            self.timeline.push((id, text(&a["ts"]), result));
        } else {
            self.more_attempts += 1;
        }
        for h in a["holders"].as_array().into_iter().flatten() {
            let key = |v: &Value| (v["kind"].clone(), v["pid"].clone(), v["path"].clone());
            let known = self
                .holders
                .iter()
                .position(|(seen, _)| key(seen) == key(h));
            match known {
                Some(i) => self.holders[i].1 += 1,
                None if self.holders.len() < MAX_HOLDERS => self.holders.push((h.clone(), 1)),
                None => {}
            }
        }
        if a["ret"].as_i64() == Some(0) {
            self.resolved_by = Some(id);
        }
    }

    /// Whether attempt `id` is part of this incident.
    pub fn contains(&self, id: u64) -> bool {
        self.timeline.iter().any(|(i, _, _)| *i == id)
    }
}

/// The first pass: the counts, and the lines that had to be skipped.
pub fn summarize(files: &[PathBuf]) -> std::io::Result<(Summary, Vec<LineProblem>)> {
    let mut summary = Summary::default();
    let problems = for_each_line(files, |line| summary.add(line))?;
    Ok((summary, problems))
}

/// The second pass: every incident, in the order it ended (those that never ended last).
pub fn incidents(files: &[PathBuf], mut incident: impl FnMut(Incident)) -> std::io::Result<()> {
    let mut open: HashMap<String, Incident> = HashMap::new();
    for_each_line(files, |line| {
        if line["type"] != "umount" {
            return;
        }
        let target = text(&line["target"]);
        let failed = line["errno"].is_string();
        match open.remove(&target) {
            Some(mut inc) => {
                inc.add(line);
                if failed {
                    open.insert(target, inc);
                } else {
                    incident(inc)
                }
            }
            None if failed => {
                open.insert(target, Incident::new(line));
            }
            None => {}
        }
    })?;
    let mut rest: Vec<Incident> = open.into_values().collect();
    rest.sort_by_key(|i| i.first["id"].as_u64());
    rest.into_iter().for_each(incident);
    Ok(())
}
