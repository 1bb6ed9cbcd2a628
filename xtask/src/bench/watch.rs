//! (a): from a failing unmount to its JSON line with holders on `busyprobe watch`'s stdout.

use std::{
    path::Path,
    process::{self, Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    errno::Errno,
    mount::{umount2, MntFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::{
    interrupt,
    lines::Lines,
    report::{Measurement, Samples},
    tools::{find_in_path, holder_pids},
    workload::Workload,
};

/// How long `watch` may take to attach its probes.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an EBUSY line may take before the measurement stops.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two unmounts.
const PAUSE: Duration = Duration::from_millis(50);
/// How long `watch` gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

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
    watch.wait_attached()?;
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
struct Watch {
    /// Declared first: the process stops before its pipes' readers go.
    _child: StopOnDrop,
    stdout: Lines,
    stderr: Lines,
}

impl Watch {
    fn start(busyprobe: &Path, mount: &Path) -> Result<Self> {
        let mut child = command_dying_with_us(busyprobe)
            .args(["watch", "--json", "--only-failed", "--stats-interval", "0"])
            .arg("--path")
            .arg(mount)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} watch", busyprobe.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let child = StopOnDrop(child);
        Ok(Self {
            stdout: Lines::spawn("watch-stdout", stdout.context("watch's stdout")?)?,
            stderr: Lines::spawn("watch-stderr", stderr.context("watch's stderr")?)?,
            _child: child,
        })
    }

    /// Waits for `probes attached` on stderr; on failure, says what `watch` printed.
    fn wait_attached(&self) -> Result<()> {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        let mut said = Vec::new();
        loop {
            match self.stderr.next_before(deadline) {
                Ok(Some(line)) if line.text.contains("probes attached") => return Ok(()),
                Ok(Some(line)) => said.push(line.text),
                Ok(None) => bail!(
                    "watch not attached after {ATTACH_TIMEOUT:?}: {}",
                    said.join(" / ")
                ),
                Err(e) => {
                    interrupt::check()?;
                    bail!("watch exited before attaching ({e}): {}", said.join(" / "))
                }
            }
        }
    }

    /// Makes one unmount fail with EBUSY and waits for its line.
    fn time_one_umount(&self, mount: &Path) -> Result<Rep> {
        self.stdout.drain();
        let started = Instant::now();
        match umount2(mount, MntFlags::empty()) {
            Err(Errno::EBUSY) => {}
            Ok(()) => bail!("umount2 succeeded: nothing held {}", mount.display()),
            Err(e) => bail!("umount2 {}: {e}", mount.display()),
        }
        let deadline = started + LINE_TIMEOUT;
        while let Some(line) = self.stdout.next_before(deadline)? {
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

/// A command for `program` that the kernel kills should this process die without cleaning up
/// (`setpriv --pdeathsig KILL` execs it: same pid), when util-linux's `setpriv` is there.
fn command_dying_with_us(program: &Path) -> Command {
    match find_in_path("setpriv") {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// An `umount` line for an EBUSY unmount made by this process.
fn is_our_ebusy(event: &serde_json::Value) -> bool {
    event["type"] == "umount"
        && event["errno"] == "EBUSY"
        && event["pid"].as_u64() == Some(u64::from(process::id()))
}

/// A child process that gets SIGTERM when dropped, then SIGKILL if it has not exited.
struct StopOnDrop(Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
