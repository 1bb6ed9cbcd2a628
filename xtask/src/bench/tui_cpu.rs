//! The `top` view's CPU use while 10,000 unmount events per second arrive (part of `bench
//! record`): `busyprobe top` runs live in a detached tmux session (a real terminal), then
//! `busyprobe record` (the same stream, no screen) as the baseline of the same run; each one's
//! CPU time (`utime + stime` from `/proc/PID/stat`) over the phase, as a share of one core.

use std::{
    ffi::OsStr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use super::tracer::{Stdout, Tracer};

/// The event rate of the goal.
pub const EVENTS_PER_SEC: u64 = 10_000;
/// The goal: the view's share of one core at that rate.
pub const GOAL_SHARE: f64 = 0.10;

/// CPU shares of one core at [`EVENTS_PER_SEC`]: `top`'s and `record`'s.
pub struct Shares {
    /// `busyprobe top`, in a terminal.
    pub top: f64,
    /// `busyprobe record` to a file (the same pipeline without the view).
    pub record: f64,
}

/// Measures both, `hammer` making the unmount calls for one phase at the given rate.
pub fn measure(binary: &Path, dir: &Path, hammer: impl Fn(Option<u64>) -> u64) -> Result<Shares> {
    let top = {
        let session = TopInTmux::start(binary)?;
        println!(
            "xtask: bench record: `busyprobe top` in tmux, umount2 paced at {EVENTS_PER_SEC}/s"
        );
        cpu_share(session.pid, || hammer(Some(EVENTS_PER_SEC)))?
    };
    let file = dir.join("tui-baseline.jsonl");
    let record = Tracer::start(
        binary,
        [OsStr::new("record"), OsStr::new("-o"), file.as_os_str()],
        Stdout::Null,
    )?;
    record.wait_for_stderr("probes attached", Duration::from_secs(30))?;
    println!("xtask: bench record: `busyprobe record`, umount2 paced at {EVENTS_PER_SEC}/s");
    let baseline = cpu_share(record.pid().as_raw() as u32, || {
        hammer(Some(EVENTS_PER_SEC))
    })?;
    record.stop();
    Ok(Shares {
        top,
        record: baseline,
    })
}

/// The share of one core `pid` used while `work` ran.
fn cpu_share(pid: u32, work: impl FnOnce() -> u64) -> Result<f64> {
    let before = cpu_ticks(pid)?;
    let started = Instant::now();
    work();
    let elapsed = started.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid)? - before;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / per_sec / elapsed)
}

/// `utime + stime` of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line; the comm may hold spaces
/// and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `busyprobe top` in a detached tmux session of its own (private socket); killed on drop.
struct TopInTmux {
    socket: String,
    pid: u32,
}

impl TopInTmux {
    fn start(binary: &Path) -> Result<Self> {
        let mut session = Self {
            socket: format!("busyprobe-bench-{}", std::process::id()),
            pid: 0,
        };
        let command = format!("exec {} top", binary.display());
        let started = session
            .tmux(&["new-session", "-d", "-x", "120", "-y", "40", &command])
            .context("running tmux (apt-get install tmux)")?;
        ensure!(
            started.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&session.tmux(&["capture-pane", "-p"])?.stdout)
            .contains(" live, ")
        {
            if Instant::now() > deadline {
                bail!("busyprobe top did not start in tmux");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let pid = session.tmux(&["list-panes", "-F", "#{pane_pid}"])?;
        session.pid = String::from_utf8_lossy(&pid.stdout).trim().parse()?;
        Ok(session)
    }

    fn tmux(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
    }
}

impl Drop for TopInTmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_tricky_comm() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 99 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}
