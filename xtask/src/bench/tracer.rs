//! A tracer running beside a benchmark (`busyprobe watch`, `opensnoop`): a child process that
//! dies with the benchmark, whose output is read by threads, stopped when dropped.

use std::{
    ffi::OsStr,
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::{
    interrupt,
    lines::{Line, Lines},
    tools::find_in_path,
};

/// How long a tracer gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a wait for readiness looks again.
const POLL: Duration = Duration::from_millis(20);

/// Where a tracer's stdout goes.
pub enum Stdout {
    /// Read line by line (see [`Tracer::stdout`]).
    Lines,
    /// `/dev/null`: what the tracer prints costs it only the writes.
    Null,
}

/// A running tracer; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Tracer {
    /// Declared first: the process stops before its pipes' readers go.
    child: StopOnDrop,
    stdout: Option<Lines>,
    stderr: Lines,
    /// What the tracer is called in messages.
    name: String,
}

impl Tracer {
    /// Starts `program ARGS` so that it dies with this process, stdin from `/dev/null`,
    /// stderr read line by line, stdout as `stdout` says.
    pub fn start<I, S>(program: &Path, args: I, stdout: Stdout) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_with_env(program, args, &[], stdout)
    }

    /// [`Self::start`] with the environment variables `env` added.
    pub fn start_with_env<I, S>(
        program: &Path,
        args: I,
        env: &[(&str, &str)],
        stdout: Stdout,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let mut command = command_dying_with_us(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        command.stdout(match stdout {
            Stdout::Lines => Stdio::piped(),
            Stdout::Null => Stdio::null(),
        });
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let child = StopOnDrop(child);
        let stdout = match out {
            Some(out) => Some(Lines::spawn(&format!("{name}-stdout"), out)?),
            None => None,
        };
        let stderr = Lines::spawn(&format!("{name}-stderr"), err.context("stderr")?)?;
        Ok(Self {
            child,
            stdout,
            stderr,
            name,
        })
    }

    /// Starts `busyprobe ARGS` (a `watch` or `agent` command line) with stdout read line by
    /// line, and waits until it says `probes attached`.
    pub fn start_watch<I, S>(busyprobe: &Path, args: I, timeout: Duration) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let tracer = Self::start(busyprobe, args, Stdout::Lines)?;
        tracer.wait_for_stderr("probes attached", timeout)?;
        Ok(tracer)
    }

    /// Its stderr, read line by line.
    pub fn stderr(&self) -> &Lines {
        &self.stderr
    }

    /// The tracer's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.0.id() as i32)
    }

    /// Its stdout, when it is read (started with [`Stdout::Lines`]).
    pub fn stdout(&self) -> Option<&Lines> {
        self.stdout.as_ref()
    }

    /// Waits for a line on stderr that contains `needle`; on failure, says what the tracer
    /// printed.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut said = Vec::new();
        loop {
            match self.stderr.next_before(deadline) {
                Ok(Some(line)) if line.text.contains(needle) => return Ok(()),
                Ok(Some(line)) => said.push(line.text),
                Ok(None) => bail!(
                    "{}: no `{needle}` after {timeout:?}: {}",
                    self.name,
                    said.join(" / ")
                ),
                Err(e) => {
                    interrupt::check()?;
                    bail!(
                        "{} exited before `{needle}` ({e}): {}",
                        self.name,
                        said.join(" / ")
                    )
                }
            }
        }
    }

    /// Waits until the tracer sleeps in its event loop: `/proc/PID/wchan` names an epoll
    /// wait. For tracers that attach their probes before they first wait for events and say
    /// nothing when they are ready (libbpf-tools' `opensnoop` prints its header into a buffer).
    pub fn wait_for_event_loop(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let wchan = format!("/proc/{}/wchan", self.pid());
        loop {
            interrupt::check()?;
            if let Some(status) = self.child.0.try_wait()? {
                let said: Vec<String> = self.stderr.drain().into_iter().map(|l| l.text).collect();
                bail!("{} exited ({status}): {}", self.name, said.join(" / "));
            }
            if fs::read_to_string(&wchan).is_ok_and(|w| w.contains("epoll")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} not in its event loop after {timeout:?}", self.name);
            }
            thread::sleep(POLL);
        }
    }

    /// Stops the tracer and returns the lines it printed since they were last read: stdout
    /// (empty when not read) and stderr.
    pub fn stop(self) -> (Vec<Line>, Vec<Line>) {
        let Self {
            child,
            stdout,
            stderr,
            ..
        } = self;
        drop(child);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let rest = |lines: &Lines| {
            let mut all = Vec::new();
            while let Ok(Some(line)) = lines.next_before(deadline) {
                all.push(line);
            }
            all
        };
        (stdout.as_ref().map(rest).unwrap_or_default(), rest(&stderr))
    }
}

/// A command for `program` that the kernel kills should this process die without cleaning up
/// (`setpriv --pdeathsig KILL` execs it: same pid), when util-linux's `setpriv` is there, and
/// that starts with no signal blocked.
pub fn command_dying_with_us(program: &Path) -> Command {
    let mut command = match find_in_path("setpriv") {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(program);
            command
        }
        None => Command::new(program),
    };
    interrupt::unblock_in_child(&mut command);
    command
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
            thread::sleep(POLL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
