//! The process under test: `busyprobe watch --json ...`, started and cleaned up by a guard.
//!
//! Its stderr is read on a background thread for the whole run (so it can never block) and
//! kept for failure messages; its stdout is read as JSON Lines with deadlines. Dropping a
//! [`Watcher`] sends SIGTERM, waits briefly, then SIGKILLs it; it dies with the test process
//! too (`PR_SET_PDEATHSIG`: a watcher lives within the trial thread that starts it).

use std::{
    ffi::OsStr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use super::{
    lines::{Lines, Next},
    process::{self, DieWithTest, Reaped},
};

/// How long the watcher may take to attach its probes: well under a second on the host, but
/// an emulated guest attaching fentry mode's 23 trampolines while other tests load theirs
/// took over 20 s.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// An attach slower than this is printed in the test's output.
const SLOW_ATTACH: Duration = Duration::from_secs(5);
/// How long to wait for an expected line, or for the watcher to exit.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do with the watcher's stdout once its probes are attached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Read it line by line.
    Read,
    /// Close the read end of the pipe (as `busyprobe watch | head -1` does eventually).
    Close,
}

/// A running `busyprobe watch --json` with its probes attached.
pub struct Watcher {
    child: Child,
    stdout: Option<Lines>,
    /// The stderr reader; the test only waits on it for `probes attached` and end of file.
    stderr_lines: Lines,
    stderr: Arc<Mutex<String>>,
    /// The probes' mode, from the `probes attached (MODE mode...)` line.
    mode: String,
}

/// How a watcher ended after [`Watcher::stop`].
pub struct Ended {
    /// Its exit status.
    pub status: ExitStatus,
    /// Every stdout line it printed after the last one the test read.
    pub rest: Vec<Value>,
}

impl Watcher {
    /// Starts `busyprobe watch --json EXTRA...` and waits until it reports `probes attached`.
    pub fn start<S: AsRef<OsStr>>(extra: &[S]) -> Self {
        Self::start_with(extra, Stdout::Read)
    }

    /// Like [`Watcher::start`], choosing what happens to stdout once the probes are attached.
    pub fn start_with<S: AsRef<OsStr>>(extra: &[S], stdout: Stdout) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_busyprobe"))
            .args(["watch", "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .die_with_test()
            .spawn()
            .expect("spawn busyprobe watch");
        let (stderr_lines, stderr) = Lines::spawn_collected(child.stderr.take().unwrap());
        let pipe = child.stdout.take().unwrap();
        let mut watcher = Self {
            child,
            stdout: None,
            stderr_lines,
            stderr,
            mode: String::new(),
        };
        watcher.wait_attached();
        match stdout {
            Stdout::Read => watcher.stdout = Some(Lines::spawn(pipe)),
            Stdout::Close => drop(pipe),
        }
        watcher
    }

    fn wait_attached(&mut self) {
        let started = Instant::now();
        let deadline = started + ATTACH_TIMEOUT;
        loop {
            match self.stderr_lines.next_until(deadline) {
                Next::Line(line) if line.contains("probes attached") => {
                    self.mode = mode_of_attach_line(&line)
                        .unwrap_or_else(|| self.fail(&format!("no mode in {line:?}")))
                        .to_owned();
                    if started.elapsed() > SLOW_ATTACH {
                        eprintln!("the watcher attached in {:.1?}", started.elapsed());
                    }
                    return;
                }
                Next::Line(_) => {}
                other => {
                    let status = self.child.try_wait();
                    self.fail(&format!(
                        "no `probes attached` on the watcher's stderr (waited up to \
                         {ATTACH_TIMEOUT:?}; {other:?}, exit status {status:?})"
                    ))
                }
            }
        }
    }

    /// The probes' mode: `tracepoint`, `fentry` or `enhanced`.
    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// Whether the security hooks run (enhanced mode): each attempt carries its exact mount,
    /// and every open is timed, fanotify's event fds included.
    pub fn hooks(&self) -> bool {
        self.mode == "enhanced"
    }

    /// Panics with `msg` and everything the watcher wrote to stderr so far.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n--- watcher stderr ---\n{}\n--- watcher threads ---\n{}",
            self.stderr(),
            self.threads()
        )
    }

    /// Each thread of the watcher with its kernel wait channel and stack: where it is stuck.
    fn threads(&self) -> String {
        let dir = format!("/proc/{}/task", self.child.id());
        let Ok(tasks) = std::fs::read_dir(&dir) else {
            return String::new();
        };
        let mut out = String::new();
        for task in tasks.flatten() {
            let path = task.path();
            let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
            out.push_str(&format!(
                "{} {} wchan={}\n{}",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan"),
                read("stack")
            ));
        }
        out
    }

    /// Everything the watcher wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stdout(&self) -> &Lines {
        self.stdout
            .as_ref()
            .expect("watcher stdout was closed by the test")
    }

    fn parse(&self, line: &str) -> Value {
        serde_json::from_str(line)
            .unwrap_or_else(|e| self.fail(&format!("stdout line is not JSON ({e}): {line}")))
    }

    /// Reads stdout lines until `done` accepts one (at most [`LINE_TIMEOUT`]); returns every
    /// line read, the accepted one last. `what` names the awaited line in failure messages.
    pub fn read_until(&self, what: &str, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + LINE_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            match self.stdout().next_until(deadline) {
                Next::Line(line) => {
                    let value = self.parse(&line);
                    let stop = done(&value);
                    seen.push(value);
                    if stop {
                        return seen;
                    }
                }
                other => self.fail(&format!(
                    "waiting for {what}: {other:?} after {} lines: {}",
                    seen.len(),
                    lines_text(&seen)
                )),
            }
        }
    }

    /// The next `count` umount lines of process `pid` (others' lines are skipped).
    pub fn umount_lines_of(&self, pid: u32, count: usize) -> Vec<Value> {
        let mut found = 0;
        let seen = self.read_until(&format!("{count} umount lines of pid {pid}"), |v| {
            found += usize::from(is_umount_of(v, pid));
            found == count
        });
        seen.into_iter().filter(|v| is_umount_of(v, pid)).collect()
    }

    /// Waits at most [`LINE_TIMEOUT`] for the watcher to exit on its own, then for its stderr
    /// to be read to the end, so that [`Watcher::stderr`] holds all of it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LINE_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait watcher") {
                if !self.stderr_lines.wait_eof(deadline) {
                    self.fail("watcher exited but its stderr is still open");
                }
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.fail(&format!("watcher still running after {LINE_TIMEOUT:?}"))
    }

    /// Sends `signal` (SIGTERM, SIGINT), reads stdout to its end and waits for the exit (each
    /// at most [`LINE_TIMEOUT`]).
    pub fn stop(&mut self, signal: Signal) -> Ended {
        self.signal(signal);
        let deadline = Instant::now() + LINE_TIMEOUT;
        let mut rest = Vec::new();
        loop {
            match self.stdout().next_until(deadline) {
                Next::Line(line) => rest.push(self.parse(&line)),
                Next::Closed => break,
                Next::TimedOut => self.fail(&format!(
                    "stdout still open {LINE_TIMEOUT:?} after {signal}; read: {}",
                    lines_text(&rest)
                )),
            }
        }
        Ended {
            status: self.wait_exit(),
            rest,
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, signal).unwrap_or_else(|e| self.fail(&format!("kill {signal}: {e}")));
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `v` is an umount line of process `pid`.
pub fn is_umount_of(v: &Value, pid: u32) -> bool {
    v["type"] == "umount" && v["pid"] == pid
}

/// Lines as text, one per line, for failure messages.
pub fn lines_text(lines: &[Value]) -> String {
    lines.iter().map(|v| format!("\n  {v}")).collect()
}

/// `busyprobe ARGS` (a headless command: `record`, `agent`), returned once its probes are
/// attached (at most [`ATTACH_TIMEOUT`]) with what it writes to stderr, read to its end on a
/// thread of its own so that it never blocks on it; killed when dropped, and with the test.
pub fn start_attached<S: AsRef<OsStr>>(args: &[S]) -> (Reaped, Arc<Mutex<String>>) {
    spawn_attached(Command::new(env!("CARGO_BIN_EXE_busyprobe")).args(args))
}

/// [`start_attached`] for a `busyprobe` command set up by the caller (stdin and stdout are
/// set to /dev/null, stderr is read).
pub fn spawn_attached(command: &mut Command) -> (Reaped, Arc<Mutex<String>>) {
    let mut child = process::spawn(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let (lines, stderr) = Lines::spawn_collected(child.stderr.take().unwrap());
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        match lines.next_until(deadline) {
            Next::Line(line) if line.contains("probes attached") => return (child, stderr),
            Next::Line(_) => {}
            other => panic!(
                "{command:?} did not attach ({other:?}): {}",
                stderr.lock().unwrap()
            ),
        }
    }
}

/// Waits (at most `timeout`, looking every 100 ms) until `done` accepts what a process said
/// on `stderr` (collected by [`spawn_attached`]); `what` names it in the failure.
pub fn wait_for_stderr(
    stderr: &Mutex<String>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(&stderr.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "never said {what}:\n{}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The mode named by a `probes attached (MODE mode[: why]); ...` line.
fn mode_of_attach_line(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("probes attached (")?;
    let (mode, _) = rest.split_once(" mode")?;
    Some(mode)
}
