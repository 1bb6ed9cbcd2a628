//! One `busyprobe watch --json` of the pods benchmark, with the node's CRI socket or with
//! `--cri-socket none`: its lines for given callers, their lag, its CRI listings (its debug
//! lines `pod names: listing took …`, turned on for the `kubernetes` module only) and its
//! memory.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use serde_json::Value;

use super::super::tracer::{Stdout, Tracer};

/// How long `watch` may take to attach its probes.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an EBUSY's line may take.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// What busyprobe's directory logs at each listing (debug level).
const LISTING: &str = "pod names: listing took";
/// The log filter: busyprobe's usual level, the pod directory's listings at debug.
const LOG: &str = "info,busyprobe::kubernetes=debug";

/// Where `watch` gets pod names.
#[derive(Clone, Debug)]
pub enum Cri {
    /// `--cri-socket SOCKET`.
    Socket(PathBuf),
    /// `--cri-socket none`.
    Off,
}

/// A running `watch`; stopped when dropped.
pub struct PodWatch {
    tracer: Tracer,
    /// CRI listings it logged so far.
    listings: u64,
    /// The directory's heap count at its last listing.
    heap: Option<u64>,
}

/// An `umount` line and how long after its call returned the benchmark read it.
pub struct Seen {
    pub line: Value,
    /// From the call's return (the line's `ts` + `duration_ns`) to the read.
    pub lag: Duration,
}

impl PodWatch {
    /// Starts `watch --json` (`--only-failed` when `only_failed`) and waits until attached.
    pub fn start(busyprobe: &Path, cri: &Cri, only_failed: bool) -> Result<Self> {
        let socket = match cri {
            Cri::Socket(path) => path.clone(),
            Cri::Off => PathBuf::from("none"),
        };
        let mut args: Vec<std::ffi::OsString> = ["watch", "--json", "--stats-interval", "0"]
            .map(Into::into)
            .into();
        if only_failed {
            args.push("--only-failed".into());
        }
        args.extend(["--cri-socket".into(), socket.into_os_string()]);
        let tracer = Tracer::start_with_env(busyprobe, &args, &[("RUST_LOG", LOG)], Stdout::Lines)?;
        tracer.wait_for_stderr("probes attached", ATTACH_TIMEOUT)?;
        Ok(Self {
            tracer,
            listings: 0,
            heap: None,
        })
    }

    /// The pid of the `watch` process.
    pub fn pid(&self) -> u32 {
        self.tracer.pid().as_raw() as u32
    }

    /// The next EBUSY line of caller `pid`, skipping other lines.
    pub fn ebusy_of(&self, pid: u32) -> Result<Seen> {
        let stdout = self.tracer.stdout().context("watch's stdout is not read")?;
        let deadline = Instant::now() + LINE_TIMEOUT;
        while let Some(line) = stdout.next_before(deadline)? {
            let Ok(event) = serde_json::from_str::<Value>(&line.text) else {
                continue;
            };
            if event["type"] == "umount"
                && event["errno"] == "EBUSY"
                && event["pid"].as_u64() == Some(u64::from(pid))
            {
                let read = SystemTime::now() - line.at.elapsed();
                let lag = lag(&event, read).with_context(|| format!("no ts in {event}"))?;
                return Ok(Seen { line: event, lag });
            }
        }
        anyhow::bail!("no EBUSY line of pid {pid} within {LINE_TIMEOUT:?}")
    }

    /// The `umount` lines of the callers `pids` read until `want` of them arrived or none came
    /// for `idle`.
    pub fn umount_lines_of(&self, pids: &[u32], want: u64, idle: Duration) -> Result<Vec<Value>> {
        let stdout = self.tracer.stdout().context("watch's stdout is not read")?;
        let mut found = Vec::new();
        while (found.len() as u64) < want {
            let Some(line) = stdout.next_before(Instant::now() + idle)? else {
                break;
            };
            let Ok(event) = serde_json::from_str::<Value>(&line.text) else {
                continue;
            };
            let ours = event["pid"]
                .as_u64()
                .is_some_and(|p| pids.iter().any(|&q| u64::from(q) == p));
            if event["type"] == "umount" && ours {
                found.push(event);
            }
        }
        Ok(found)
    }

    /// The CRI listings it logged so far (reads its stderr).
    pub fn listings(&mut self) -> u64 {
        let lines = self.tracer.stderr().drain();
        for line in lines {
            self.note(&line.text);
        }
        self.listings
    }

    /// The directory's heap count at its last listing, in bytes.
    pub fn heap(&mut self) -> Option<u64> {
        self.listings();
        self.heap
    }

    fn note(&mut self, text: &str) {
        if text.contains(LISTING) {
            self.listings += 1;
            self.heap = heap_bytes(text).or(self.heap);
        }
    }

    /// `VmRSS` and `VmHWM` of the `watch` process, in KiB.
    pub fn memory_kib(&self) -> (Option<u64>, Option<u64>) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Stops it; the listings it logged in all.
    pub fn stop(mut self) -> u64 {
        self.listings();
        let Self {
            tracer,
            mut listings,
            ..
        } = self;
        let (_, stderr) = tracer.stop();
        listings += stderr.iter().filter(|l| l.text.contains(LISTING)).count() as u64;
        listings
    }
}

/// From the return of the call of `event` (`ts` + `duration_ns`) to `read`.
fn lag(event: &Value, read: SystemTime) -> Option<Duration> {
    let ts = humantime::parse_rfc3339(event["ts"].as_str()?).ok()?;
    let returned = ts + Duration::from_nanos(event["duration_ns"].as_u64().unwrap_or(0));
    Some(read.duration_since(returned).unwrap_or_default())
}

/// The `cache heap N bytes` of a listing's log line.
fn heap_bytes(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("cache heap ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_runs_from_the_calls_return() {
        let event = serde_json::json!({
            "ts": "2026-12-07T10:00:00.000000000Z", "duration_ns": 2_000_000u64,
        });
        let read = humantime::parse_rfc3339("2026-12-07T10:00:00.010Z").unwrap();
        assert_eq!(lag(&event, read), Some(Duration::from_millis(8)));
    }

    #[test]
    fn the_heap_count_is_read_from_the_listing_line() {
        let line = "2026-12-07T10:00:00Z DEBUG busyprobe::kubernetes::directory: pod names: \
                    listing took 812 µs (1 runtime(s) answered); 222 containers and sandboxes \
                    known, cache heap 81234 bytes";
        assert_eq!(heap_bytes(line), Some(81234));
        assert_eq!(heap_bytes("pod names: asking"), None);
    }
}
