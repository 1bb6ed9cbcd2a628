//! (a): from a failing unmount to its JSON line with holders on `busyprobe watch`'s stdout.

use std::{
    ffi::OsStr,
    path::Path,
    process, thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    errno::Errno,
    mount::{umount2, MntFlags},
};

use super::{
    interrupt,
    report::{Measurement, Samples},
    tools::holder_pids,
    tracer::Tracer,
    workload::Workload,
};

/// How long `watch` may take to attach its probes.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an EBUSY line may take before the measurement stops.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two unmounts.
const PAUSE: Duration = Duration::from_millis(50);

/// Times `umounts` failing unmounts of the workload's mount, after one untimed warm-up.
/// Failures of busyprobe become a failed measurement; an interruption is an error.
pub fn measure(busyprobe: &Path, workload: &Workload, umounts: usize) -> Result<Measurement> {
    let result = match time_umounts(busyprobe, &workload.mount, umounts) {
        Ok(samples) => Ok(samples),
        Err(e) => Err(interrupt::failure_reason(&e)?),
    };
    Ok(Measurement {
        key: "a",
        label: "watch: EBUSY → line with holders".into(),
        result,
    })
}

/// Starts `watch`, waits until it is attached, then times the unmounts.
fn time_umounts(busyprobe: &Path, mount: &Path, umounts: usize) -> Result<Samples> {
    let watch = Watch::start(busyprobe, mount)?;
    let mut samples = Samples::default();
    for rep in 0..=umounts {
        thread::sleep(PAUSE);
        match watch.time_one_umount(mount)? {
            Rep::Held { took, pids } if rep > 0 => {
                samples.times.push(took);
                samples.found.push(pids);
            }
            Rep::Held { .. } => {}
            Rep::NoHolders => samples
                .problems
                .push(format!("unmount {rep}: EBUSY line without holders")),
            Rep::Timeout => {
                samples.problems.push(format!(
                    "unmount {rep}: no EBUSY line within {LINE_TIMEOUT:?}; stopped"
                ));
                break;
            }
        }
    }
    Ok(samples)
}

/// The outcome of one failing unmount.
enum Rep {
    /// Its line arrived after `took`, naming these processes.
    Held {
        took: Duration,
        pids: std::collections::BTreeSet<u32>,
    },
    /// Its line arrived with an empty `holders` array.
    NoHolders,
    /// No line arrived in time.
    Timeout,
}

/// A running `busyprobe watch --json --only-failed --path MOUNT`; stopped when dropped.
struct Watch(Tracer);

impl Watch {
    /// Starts `watch` and waits until its probes are attached.
    fn start(busyprobe: &Path, mount: &Path) -> Result<Self> {
        let args = [
            "watch",
            "--json",
            "--only-failed",
            "--stats-interval",
            "0",
            "--path",
        ]
        .map(OsStr::new)
        .into_iter()
        .chain([mount.as_os_str()]);
        Ok(Self(Tracer::start_watch(busyprobe, args, ATTACH_TIMEOUT)?))
    }

    /// Makes one unmount fail with EBUSY and waits for its line.
    fn time_one_umount(&self, mount: &Path) -> Result<Rep> {
        let stdout = self.0.stdout().context("watch's stdout is not read")?;
        stdout.drain();
        let started = Instant::now();
        match umount2(mount, MntFlags::empty()) {
            Err(Errno::EBUSY) => {}
            Ok(()) => bail!("umount2 succeeded: nothing held {}", mount.display()),
            Err(e) => bail!("umount2 {}: {e}", mount.display()),
        }
        let deadline = started + LINE_TIMEOUT;
        while let Some(line) = stdout.next_before(deadline)? {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line.text) else {
                continue;
            };
            if is_our_ebusy(&event) {
                if event["holders"].as_array().is_none_or(Vec::is_empty) {
                    return Ok(Rep::NoHolders);
                }
                let took = line.at.saturating_duration_since(started);
                let pids = holder_pids(&event);
                return Ok(Rep::Held { took, pids });
            }
        }
        Ok(Rep::Timeout)
    }
}

/// An `umount` line for an EBUSY unmount made by this process.
fn is_our_ebusy(event: &serde_json::Value) -> bool {
    event["type"] == "umount"
        && event["errno"] == "EBUSY"
        && event["pid"].as_u64() == Some(u64::from(process::id()))
}
