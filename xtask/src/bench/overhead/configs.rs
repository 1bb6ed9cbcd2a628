//! The configurations measured: no tracer, `busyprobe watch --json` in three modes, and
//! `opensnoop`; a session runs one of them while the workloads run, then says what it used
//! (resident memory) and lost (drops).

use std::{collections::BTreeMap, fs, path::Path, path::PathBuf, thread, time::Duration};

use anyhow::{bail, Result};

use crate::bench::{
    lines::Line,
    tools,
    tracer::{Stdout, Tracer},
};

/// How long `watch` may take to attach its probes.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long opensnoop may take to reach its event loop.
const OPENSNOOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a tracer is ready (and with no tracer), so that its start-up work is over
/// before the first workload.
const SETTLE: Duration = Duration::from_millis(300);

/// What runs beside the workloads.
pub enum Kind {
    /// Nothing: the baseline.
    Baseline,
    /// `busyprobe watch --json --stats-interval 0` with these extra arguments.
    Watch(&'static [&'static str]),
    /// opensnoop, stdout to /dev/null.
    Opensnoop(PathBuf),
}

/// One configuration.
pub struct Config {
    /// `(0)` to `(4)`.
    pub key: &'static str,
    /// What runs, as a command line.
    pub label: String,
    pub kind: Kind,
    /// Why it is not measured, when it is not.
    pub skipped: Option<String>,
}

/// The five configurations; opensnoop's is skipped with `opensnoop`'s error when it is missing.
pub fn configs(opensnoop: Result<(PathBuf, String), String>) -> Vec<Config> {
    let watch = |key, extra: &'static [&'static str]| Config {
        key,
        label: ["busyprobe watch --json"]
            .iter()
            .chain(extra)
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
        kind: Kind::Watch(extra),
        skipped: None,
    };
    let opensnoop = match opensnoop {
        Ok((path, package)) => Config {
            key: "(4)",
            label: format!("opensnoop ({package}, as it ships)"),
            kind: Kind::Opensnoop(path),
            skipped: None,
        },
        Err(reason) => Config {
            key: "(4)",
            label: "opensnoop".into(),
            kind: Kind::Baseline,
            skipped: Some(reason),
        },
    };
    vec![
        Config {
            key: "(0)",
            label: "no tracer (baseline)".into(),
            kind: Kind::Baseline,
            skipped: None,
        },
        watch("(1)", &[]),
        watch("(2)", &["--no-open-times"]),
        watch("(3)", &["--no-holders"]),
        opensnoop,
    ]
}

/// Finds opensnoop: libbpf-tools' `opensnoop`, else bcc's `opensnoop-bpfcc`, installing
/// `libbpf-tools` (then `bpfcc-tools`) with apt-get when neither is there. Returns its path and
/// package, or why it is missing.
pub fn find_opensnoop() -> Result<(PathBuf, String), String> {
    let candidates = [
        ("opensnoop", "libbpf-tools"),
        ("opensnoop-bpfcc", "bpfcc-tools"),
    ];
    if let Some(found) = candidates
        .iter()
        .find_map(|(tool, package)| Some((tools::find_in_path(tool)?, package.to_string())))
    {
        return Ok(found);
    }
    let mut reasons = Vec::new();
    for (tool, package) in candidates {
        let [found] = tools::find_or_install(&[(tool, package)]);
        match found {
            Ok(path) => return Ok((path, package.to_string())),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(reasons.join("; "))
}

/// What a tracer used and lost in one session.
pub struct Usage {
    /// Its VmRSS at the end of the session.
    pub rss_kib: u64,
    /// Drops by cause (`watch`: its last `stats` line; opensnoop: `lost` events it reported),
    /// `None` when the tracer did not say.
    pub drops: Option<BTreeMap<String, u64>>,
}

/// One configuration running.
pub struct Session {
    tracer: Option<Tracer>,
    watch: bool,
}

impl Session {
    /// Starts the configuration's tracer, waits until it is attached, then lets it settle.
    pub fn start(config: &Config, busyprobe: &Path) -> Result<Self> {
        let tracer = match &config.kind {
            Kind::Baseline => None,
            Kind::Watch(extra) => {
                let args = ["watch", "--json", "--stats-interval", "0"];
                let args = args.iter().chain(extra.iter());
                Some(Tracer::start_watch(busyprobe, args, ATTACH_TIMEOUT)?)
            }
            Kind::Opensnoop(path) => {
                let mut tracer = Tracer::start(path, [] as [&str; 0], Stdout::Null)?;
                tracer.wait_for_event_loop(OPENSNOOP_TIMEOUT)?;
                Some(tracer)
            }
        };
        thread::sleep(SETTLE);
        Ok(Self {
            tracer,
            watch: matches!(config.kind, Kind::Watch(_)),
        })
    }

    /// Reads the tracer's resident memory, stops it, and collects its drops; `None` for the
    /// baseline. An error when the tracer is no longer running.
    pub fn finish(self) -> Result<Option<Usage>> {
        let Some(tracer) = self.tracer else {
            return Ok(None);
        };
        let rss = vm_rss_kib(tracer.pid().as_raw());
        let (stdout, stderr) = tracer.stop();
        let Some(rss_kib) = rss else {
            let said: Vec<String> = stderr.into_iter().map(|l| l.text).collect();
            bail!("the tracer exited during the session: {}", said.join(" / "));
        };
        let drops = if self.watch {
            watch_drops(&stdout)
        } else {
            Some(opensnoop_lost(&stderr))
        };
        Ok(Some(Usage { rss_kib, drops }))
    }
}

/// `VmRSS` of a live process in KiB (a zombie has none).
fn vm_rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `drops` object of the last `stats` line `watch --json` printed.
fn watch_drops(stdout: &[Line]) -> Option<BTreeMap<String, u64>> {
    let stats = stdout.iter().rev().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(&line.text).ok()?;
        (value["type"] == "stats").then_some(value)
    })?;
    let drops = stats["drops"].as_object()?;
    Some(
        drops
            .iter()
            .map(|(cause, n)| (cause.clone(), n.as_u64().unwrap_or(0)))
            .collect(),
    )
}

/// The events opensnoop said it lost (`Lost N events on CPU #C!` on stderr), in all.
fn opensnoop_lost(stderr: &[Line]) -> BTreeMap<String, u64> {
    let lost: u64 = stderr
        .iter()
        .filter_map(|line| {
            let mut words = line.text.split_whitespace();
            (words.next()? == "Lost").then_some(())?;
            words.next()?.parse::<u64>().ok()
        })
        .sum();
    BTreeMap::from([("lost".to_string(), lost)])
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn lines(texts: &[&str]) -> Vec<Line> {
        texts
            .iter()
            .map(|t| Line {
                at: Instant::now(),
                text: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn drops_come_from_the_last_stats_line() {
        let stdout = lines(&[
            r#"{"v":1,"type":"stats","drops":{"ringbuf_full":1}}"#,
            r#"{"v":1,"type":"umount","id":1}"#,
            r#"{"v":1,"type":"stats","drops":{"ringbuf_full":2,"path_truncated":0},"final":true}"#,
        ]);
        let drops = watch_drops(&stdout).unwrap();
        assert_eq!(drops["ringbuf_full"], 2);
        assert_eq!(drops["path_truncated"], 0);
        assert!(watch_drops(&lines(&["not json"])).is_none());
    }

    #[test]
    fn opensnoop_losses_are_summed() {
        let stderr = lines(&[
            "Lost 10 events on CPU #0!",
            "warning",
            "Lost 5 events on CPU #1!",
        ]);
        assert_eq!(opensnoop_lost(&stderr)["lost"], 15);
    }
}
