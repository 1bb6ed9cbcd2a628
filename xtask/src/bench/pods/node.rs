//! The node: the integration test binary run as a real containerd with 200 containers
//! (`BUSYPROBE_PODBENCH`, see `tests/podbench.rs`), driven one line at a time over its stdin
//! and stdout. It removes every pod, container, process and mount it made when it reads
//! `quit` or its stdin closes; dropping [`Node`] asks it to, and waits.

use std::{
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::super::lines::Lines;

/// How long the node may take to start containerd and make its pods and containers.
const SETUP_TIMEOUT: Duration = Duration::from_secs(900);
/// How long one command may take (a `churn` of 10,000 mounts included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the node may take to remove everything once asked.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

/// What the node says it made.
pub struct Made {
    /// containerd's socket (its CRI).
    pub socket: PathBuf,
    /// The pid of the container's process that holds it.
    pub holder_pid: u32,
    /// The holder's pod's name.
    pub holder_pod: String,
    /// Containers made through the CRI (the holder's included) and pods.
    pub containers: u64,
    pub pods: u64,
    /// How long the node took to make them.
    pub setup: Duration,
}

/// A running node; asked to clean up and waited for when dropped.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    /// What it made.
    pub made: Made,
}

impl Node {
    /// Starts the test binary `exe` as a node of `pods` × `containers` created containers
    /// (and the holder's pod), and waits until it is ready. Signals stay blocked in it (they
    /// are in this process): a Ctrl-C reaches the benchmark, which then asks the node to clean
    /// up; should the benchmark die, the node gets SIGKILL, and the fixture's next start
    /// removes what it left.
    pub fn start(exe: &Path, pods: u32, containers: u32) -> Result<Self> {
        let mut command = Command::new(exe);
        command
            .env("BUSYPROBE_PODBENCH", format!("{pods}x{containers}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: only prctl, which is async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} as the node", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = Lines::spawn("node-stdout", child.stdout.take().context("stdout")?)?;
        let mut node = Self {
            child,
            stdin,
            stdout,
            made: Made {
                socket: PathBuf::new(),
                holder_pid: 0,
                holder_pod: String::new(),
                containers: 0,
                pods: 0,
                setup: Duration::ZERO,
            },
        };
        let ready = node.answer(SETUP_TIMEOUT)?;
        let json = ready
            .strip_prefix("ready ")
            .with_context(|| format!("the node said {ready:?}"))?;
        node.made = parse_made(&serde_json::from_str(json)?)?;
        Ok(node)
    }

    /// Makes the node's unmounter's unmount fail (the holder holds the volume): its pid.
    pub fn ebusy(&mut self) -> Result<u32> {
        let answer = self.ask("ebusy")?;
        expect_ebusy(&answer)
    }

    /// Starts a container no listing has seen and makes a failing unmount from inside its
    /// cgroups: the caller's pid and the container's id.
    pub fn miss(&mut self) -> Result<(u32, String)> {
        let answer = self.ask("miss")?;
        let pid = expect_ebusy(&answer)?;
        let id = answer
            .split_once(" container ")
            .map(|(_, id)| id.to_owned())
            .with_context(|| format!("the node said {answer:?}"))?;
        Ok((pid, id))
    }

    /// `count` mounts and successful unmounts by a process in the holder's container
    /// (`pod`) or on the host: how many unmounts worked, and the process's pid.
    pub fn churn(&mut self, place: &str, count: u64) -> Result<(u64, u32)> {
        let answer = self.ask(&format!("churn {place} {count}"))?;
        let words: Vec<&str> = answer.split_whitespace().collect();
        match words.as_slice() {
            ["churned", done, "pid", pid] => Ok((done.parse()?, pid.parse()?)),
            _ => bail!("the node said {answer:?}"),
        }
    }

    fn ask(&mut self, command: &str) -> Result<String> {
        let stdin = self.stdin.as_mut().context("the node's stdin is closed")?;
        writeln!(stdin, "{command}").context("writing to the node")?;
        self.answer(COMMAND_TIMEOUT)
    }

    fn answer(&self, timeout: Duration) -> Result<String> {
        match self.stdout.next_before(Instant::now() + timeout)? {
            Some(line) => Ok(line.text),
            None => bail!("the node did not answer within {timeout:?}"),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        println!("xtask: bench pods: the node removes its pods, containers and mounts");
        let deadline = Instant::now() + CLEANUP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "xtask: bench pods: the node did not finish cleaning up in {CLEANUP_TIMEOUT:?}; \
             killed (the fixture's next start removes what it left)"
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of an `errno 16 pid P ...` answer; an error for any other errno.
fn expect_ebusy(answer: &str) -> Result<u32> {
    let words: Vec<&str> = answer.split_whitespace().collect();
    match words.as_slice() {
        ["errno", "16", "pid", pid, ..] => Ok(pid.parse()?),
        _ => bail!("the unmount did not fail with EBUSY: the node said {answer:?}"),
    }
}

/// The `ready` answer's fields.
fn parse_made(v: &Value) -> Result<Made> {
    let text = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {k} in {v}"))
    };
    let number = |k: &str| v[k].as_u64().with_context(|| format!("no {k} in {v}"));
    Ok(Made {
        socket: text("socket")?.into(),
        holder_pid: u32::try_from(number("holder_pid")?)?,
        holder_pod: text("holder_pod")?,
        containers: number("containers")?,
        pods: number("pods")?,
        setup: Duration::from_secs_f64(v["setup_s"].as_f64().unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read() {
        assert_eq!(expect_ebusy("errno 16 pid 42").unwrap(), 42);
        assert_eq!(expect_ebusy("errno 16 pid 7 container abc").unwrap(), 7);
        assert!(expect_ebusy("errno 0 pid 42").is_err());
        let made = parse_made(&serde_json::json!({
            "socket": "/s", "mount": "/m", "holder_pid": 9, "holder_pod": "p",
            "containers": 201, "pods": 21, "setup_s": 1.5,
        }))
        .unwrap();
        assert_eq!((made.holder_pid, made.containers, made.pods), (9, 201, 21));
        assert_eq!(made.setup, Duration::from_millis(1500));
    }
}
