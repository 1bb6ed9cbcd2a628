//! One configuration running beside the workloads: its tracer started and ready, one real
//! failed unmount on the contended tmpfs that the tracer has reported (but for the agent with
//! no mount contended), a quiet moment; at the end, what the tracer used (resident memory)
//! and lost (drops).

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    configs::{Config, Kind},
    contention::Contended,
};
use crate::bench::{
    interrupt,
    lines::{Line, Lines},
    prometheus::{free_loopback, sample_value, scrape, values_by_label},
    tracer::{Stdout, Tracer},
};

/// How long busyprobe may take to attach its probes.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long opensnoop may take to reach its event loop.
const OPENSNOOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long busyprobe may take to report the failed unmount (its holders are looked for first).
const SEEN_TIMEOUT: Duration = Duration::from_secs(30);
/// busyprobe's busy window: for this long after an EBUSY its release probes report every
/// release on a tracked mount (`BUSY_WINDOW_NS` in `probe-ebpf/src/maps.rs`, left at 2 s).
/// The workloads start after it, so that they measure the steady state, not the aftermath.
const BUSY_WINDOW: Duration = Duration::from_secs(2);
/// Pause once the tracer is ready (and with no tracer), so that its start-up work is over
/// before the first workload.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the agent's metrics are read while waiting.
const POLL: Duration = Duration::from_millis(20);
/// The agent's count of failed unmounts that said EBUSY.
const EBUSY_SERIES: &str = r#"busyprobe_unmount_attempts_total{result="EBUSY"}"#;
/// The agent's counts of lost events, by `cause`.
const DROPS_SERIES: &str = "busyprobe_drops_total";

/// What a tracer used and lost in one session.
pub struct Usage {
    /// Its VmRSS at the end of the session.
    pub rss_kib: u64,
    /// Drops by cause (`watch`: its last `stats` line; the agent: its metrics just before it
    /// stops; opensnoop: `lost` events it reported), `None` when the tracer did not say.
    pub drops: Option<BTreeMap<String, u64>>,
}

/// Where a session's tracer says what it saw.
#[derive(Clone, Copy)]
enum Reports {
    /// No tracer.
    Nothing,
    /// `watch --json`: lines on stdout.
    JsonLines,
    /// The agent: its metrics at this address.
    Metrics(SocketAddr),
    /// opensnoop: the events it lost, on stderr.
    LostOnStderr,
}

/// One configuration running.
pub struct Session {
    tracer: Option<Tracer>,
    reports: Reports,
}

impl Session {
    /// Starts the configuration's tracer and waits until it is attached; makes one unmount of
    /// `contended` fail and waits until the tracer has reported it; then, for busyprobe, waits
    /// for the busy window that opened to close; then lets everything settle.
    pub fn start(config: &Config, busyprobe: &Path, contended: &Contended) -> Result<Self> {
        let (tracer, reports) = start_tracer(&config.kind, busyprobe)?;
        let session = Self { tracer, reports };
        let quiet_from = match config.contends {
            true => session.contend(contended, config.kind.is_busyprobe())?,
            false => Instant::now(),
        };
        sleep_until(quiet_from.max(Instant::now()) + SETTLE)?;
        Ok(session)
    }

    /// Makes one unmount of `contended` fail and waits until the tracer has reported it;
    /// returns when the quiet after it starts: for busyprobe, once the busy window that opened
    /// has closed.
    fn contend(&self, contended: &Contended, busyprobe: bool) -> Result<Instant> {
        let failed_at = contended.fail_unmount_once(|target| self.wait_until_seen(target))?;
        if !busyprobe {
            return Ok(failed_at);
        }
        let took = failed_at.elapsed();
        eprintln!("xtask: bench:   the contended tmpfs's EBUSY reported in {took:.0?}");
        Ok(failed_at + BUSY_WINDOW)
    }

    /// Waits until the tracer has reported the EBUSY of an unmount of `target` (for tracers
    /// that report unmounts).
    fn wait_until_seen(&self, target: &Path) -> Result<()> {
        let deadline = Instant::now() + SEEN_TIMEOUT;
        match (self.reports, &self.tracer) {
            (Reports::JsonLines, Some(tracer)) => {
                let stdout = tracer.stdout().context("watch's stdout is not read")?;
                wait_for_ebusy_line(stdout, target, deadline)
            }
            (Reports::Metrics(metrics), _) => wait_for_ebusy_count(metrics, deadline),
            _ => Ok(()),
        }
    }

    /// Reads the tracer's resident memory, stops it, and collects its drops; `None` for the
    /// baseline. An error when the tracer is no longer running.
    pub fn finish(self) -> Result<Option<Usage>> {
        let Some(tracer) = self.tracer else {
            return Ok(None);
        };
        let rss = vm_rss_kib(tracer.pid().as_raw());
        let metrics = match self.reports {
            Reports::Metrics(metrics) => scrape(metrics).ok().map(|(_, answer)| answer),
            _ => None,
        };
        let (stdout, stderr) = tracer.stop();
        let Some(rss_kib) = rss else {
            let said: Vec<String> = stderr.into_iter().map(|l| l.text).collect();
            bail!("the tracer exited during the session: {}", said.join(" / "));
        };
        let drops = match self.reports {
            Reports::Nothing => None,
            Reports::JsonLines => watch_drops(&stdout),
            Reports::Metrics(_) => metrics.map(|m| values_by_label(&m, DROPS_SERIES, "cause")),
            Reports::LostOnStderr => Some(opensnoop_lost(&stderr)),
        };
        Ok(Some(Usage { rss_kib, drops }))
    }
}

/// Starts the tracer of `kind` and waits until it is ready.
fn start_tracer(kind: &Kind, busyprobe: &Path) -> Result<(Option<Tracer>, Reports)> {
    Ok(match kind {
        Kind::Baseline => (None, Reports::Nothing),
        Kind::Agent => {
            let metrics = free_loopback()?;
            let args = ["agent", "--no-socket", "--metrics", &metrics.to_string()];
            let tracer = Tracer::start_watch(busyprobe, args, ATTACH_TIMEOUT)?;
            (Some(tracer), Reports::Metrics(metrics))
        }
        Kind::Watch(extra) => {
            let args = ["watch", "--json", "--stats-interval", "0"];
            let args = args.iter().chain(extra.iter());
            let tracer = Tracer::start_watch(busyprobe, args, ATTACH_TIMEOUT)?;
            (Some(tracer), Reports::JsonLines)
        }
        Kind::Opensnoop(path) => {
            let mut tracer = Tracer::start(path, [] as [&str; 0], Stdout::Null)?;
            tracer.wait_for_event_loop(OPENSNOOP_TIMEOUT)?;
            (Some(tracer), Reports::LostOnStderr)
        }
    })
}

/// Reads `watch --json`'s lines until the one of an EBUSY on `target`.
fn wait_for_ebusy_line(stdout: &Lines, target: &Path, deadline: Instant) -> Result<()> {
    let target = target
        .to_str()
        .context("the contended mount's path is not UTF-8")?;
    while let Some(line) = stdout.next_before(deadline)? {
        if is_ebusy_line(&line.text, target) {
            return Ok(());
        }
    }
    bail!("watch printed no EBUSY line for {target} in {SEEN_TIMEOUT:?}")
}

/// Whether `line` is `watch --json`'s line of a failed unmount of `target` that said EBUSY.
fn is_ebusy_line(line: &str, target: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .is_ok_and(|v| v["type"] == "umount" && v["errno"] == "EBUSY" && v["target"] == target)
}

/// Reads the agent's metrics until they count an EBUSY (each session starts a new agent).
fn wait_for_ebusy_count(metrics: SocketAddr, deadline: Instant) -> Result<()> {
    loop {
        interrupt::check()?;
        let (_, answer) = scrape(metrics)?;
        if sample_value(&answer, EBUSY_SERIES).is_ok_and(|n| n >= 1) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the agent's metrics counted no EBUSY in {SEEN_TIMEOUT:?}");
        }
        thread::sleep(POLL);
    }
}

/// Sleeps until `deadline`, looking for an interruption every [`POLL`].
fn sleep_until(deadline: Instant) -> Result<()> {
    loop {
        interrupt::check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(POLL));
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

    #[test]
    fn only_the_ebusy_of_the_contended_mount_counts() {
        let target = "/tmp/busyprobe-bench.1/contended";
        let line = |errno: &str, target: &str| {
            format!(r#"{{"v":1,"type":"umount","target":"{target}","ret":-16,"errno":{errno}}}"#)
        };
        assert!(is_ebusy_line(&line(r#""EBUSY""#, target), target));
        assert!(!is_ebusy_line(&line(r#""EINVAL""#, target), target));
        assert!(!is_ebusy_line(&line("null", target), target));
        assert!(!is_ebusy_line(&line(r#""EBUSY""#, "/elsewhere"), target));
        assert!(!is_ebusy_line(r#"{"v":1,"type":"stats"}"#, target));
    }
}
