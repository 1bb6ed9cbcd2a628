//! The `top` view's CPU use while 10,000 unmount events per second arrive (part of `bench
//! record`), each process's CPU time (`utime + stime` from `/proc/PID/stat`) over the phase as
//! a share of one core, in a detached tmux session (a real terminal):
//! - the view alone: `busyprobe replay -` fed 10,000 synthetic lines per second through a FIFO
//!   (the goal's measure);
//! - `busyprobe top` live while umount2 is paced at that rate (view and whole stream), and
//!   `busyprobe record` at the same rate (the stream without the view) as its baseline.

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

/// CPU shares of one core at [`EVENTS_PER_SEC`].
pub struct Shares {
    /// `busyprobe replay -` on a synthetic stream: the view alone.
    pub view: f64,
    /// `busyprobe top`, in a terminal.
    pub top: f64,
    /// `busyprobe record` to a file (the same pipeline without the view).
    pub record: f64,
}

/// Measures both, `hammer` making the unmount calls for one phase at the given rate.
pub fn measure(binary: &Path, dir: &Path, hammer: impl Fn(Option<u64>) -> u64) -> Result<Shares> {
    let view = view_share(binary, dir)?;
    let top = {
        let session = InTmux::start(binary, "top", " live, ")?;
        // The title is up before the probes are attached: a phase of calls first, until the
        // screen shows them, so that loading and attaching are not counted.
        hammer(Some(EVENTS_PER_SEC));
        session.wait_for("EINVAL")?;
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
        view,
        top,
        record: baseline,
    })
}

/// `busyprobe replay -` reading a FIFO that gets [`EVENTS_PER_SEC`] synthetic lines a second.
fn view_share(binary: &Path, dir: &Path) -> Result<f64> {
    use std::io::Write as _;
    let fifo = dir.join("view.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).context("mkfifo")?;
    let command = format!("replay - < {}", fifo.display());
    let (opened, session) = std::thread::scope(|scope| {
        // Opening the FIFO for writing waits for the reader: the shell in tmux.
        let writer = scope.spawn(|| std::fs::OpenOptions::new().write(true).open(&fifo));
        let session = InTmux::start(binary, &command, "");
        (writer.join(), session)
    });
    let session = session?;
    let mut out = opened
        .map_err(|_| anyhow::anyhow!("the FIFO writer panicked"))?
        .context("opening the FIFO")?;
    println!("xtask: bench record: `busyprobe replay -` fed {EVENTS_PER_SEC} synthetic lines/s");
    let write = || {
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < super::record::PHASE {
            let due = Duration::from_nanos(n * 1_000_000_000 / EVENTS_PER_SEC);
            if let Some(early) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(early);
            }
            n += 1;
            if out
                .write_all(super::reading::synthetic_line(n).as_bytes())
                .is_err()
            {
                break;
            }
        }
        n
    };
    let share = cpu_share(session.pid, write);
    drop(session);
    share
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

/// `busyprobe ARGS` in a detached tmux session of its own (private socket); killed on drop.
pub struct InTmux {
    socket: String,
    /// busyprobe's pid (the pane's: the shell execs it).
    pub pid: u32,
}

impl InTmux {
    /// Starts `busyprobe ARGS` (`args` as the shell reads them) and waits until the screen
    /// shows `ready` (nothing to wait for when empty).
    pub fn start(binary: &Path, args: &str, ready: &str) -> Result<Self> {
        let mut session = Self {
            socket: format!("busyprobe-bench-{}-{}", std::process::id(), args.len()),
            pid: 0,
        };
        let command = format!("exec {} {args}", binary.display());
        let started = session
            .tmux(&["new-session", "-d", "-x", "120", "-y", "40", &command])
            .context("running tmux (apt-get install tmux)")?;
        ensure!(
            started.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        session
            .wait_for(ready)
            .with_context(|| format!("busyprobe {args} did not start in tmux"))?;
        let pid = session.tmux(&["list-panes", "-F", "#{pane_pid}"])?;
        session.pid = String::from_utf8_lossy(&pid.stdout).trim().parse()?;
        Ok(session)
    }

    /// Waits (30 s at most) until the screen shows `text`.
    pub fn wait_for(&self, text: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"])?.stdout).contains(text) {
            if Instant::now() > deadline {
                bail!("the screen did not show {text:?} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn tmux(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
    }
}

impl Drop for InTmux {
    /// Ends busyprobe (SIGTERM; the tmux server then has no pane left and exits), and kills
    /// the server too: `kill-server` alone was seen to leave both running.
    fn drop(&mut self) {
        if self.pid != 0 {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(300));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
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
