//! Processes a test starts: they die with it, and waiting for them has a deadline.
//!
//! - [`DieWithTest::die_with_test`]: the child gets `PR_SET_PDEATHSIG` (SIGKILL), so it dies
//!   if the test process dies (a panic that aborts, a killed `cargo test`). The signal follows
//!   the *thread* that forked: use it only for children the spawning thread outlives (trials
//!   run on threads of their own; a child spawned on a helper thread that ends first would be
//!   killed with it).
//! - [`Reaped`]: kills and reaps its child when dropped, so a panicking trial leaves nothing
//!   running (no probes attached, no mount pinned by a holder's namespace).
//! - [`output`]: `Command::output` with a deadline.
//! - [`tool`]: an external program the tests run, found or failed for clearly.

use std::{
    io::Read,
    ops::{Deref, DerefMut},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// How long a command run with [`output`] may take: `busyprobe demo` and `who` finish in
/// seconds on the host; under emulation (vm-test) everything is ten times slower.
pub const OUTPUT_TIMEOUT: Duration = Duration::from_secs(120);

/// A command whose child dies with the thread that spawns it.
pub trait DieWithTest {
    /// Sets `PR_SET_PDEATHSIG` to SIGKILL in the child (checked against a parent that died
    /// before the call).
    fn die_with_test(&mut self) -> &mut Self;
}

impl DieWithTest for Command {
    fn die_with_test(&mut self) -> &mut Self {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            self.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the prctl: the signal will never come.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            })
        }
    }
}

/// A child killed (SIGKILL) and reaped when dropped, unless it was waited for already.
pub struct Reaped(pub Child);

impl Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` dying with the test, in a [`Reaped`] guard.
pub fn spawn(cmd: &mut Command) -> Reaped {
    let child = cmd
        .die_with_test()
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
    Reaped(child)
}

/// Polls `done` every 10 ms until it gives a value or `timeout` passes (then `None`).
pub fn poll<T>(timeout: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = done() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits at most `timeout` for `child` to exit; a child still running fails the test (and is
/// killed by its guard).
pub fn wait(child: &mut Child, timeout: Duration) -> ExitStatus {
    poll(timeout, || child.try_wait().expect("try_wait"))
        .unwrap_or_else(|| panic!("process {} still ran after {timeout:?}", child.id()))
}

/// Like `cmd.output()` (stdin closed, stdout and stderr captured), but the child dies with the
/// test and is killed after [`OUTPUT_TIMEOUT`], failing the test with what it printed.
pub fn output(cmd: &mut Command) -> Output {
    try_output(cmd).unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()))
}

/// [`output`], with the error of starting the program returned.
pub fn try_output(cmd: &mut Command) -> std::io::Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .die_with_test()
        .spawn()?;
    let mut child = Reaped(child);
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let Some(status) = poll(OUTPUT_TIMEOUT, || child.try_wait().expect("try_wait")) else {
        drop(child);
        panic!(
            "{cmd:?} still ran after {OUTPUT_TIMEOUT:?}; killed. stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
            String::from_utf8_lossy(&stderr.join().unwrap_or_default())
        );
    };
    // A grandchild may keep a pipe open (a shell's background job): wait for it, boundedly.
    let joined = |reader: thread::JoinHandle<Vec<u8>>, name: &str| {
        poll(OUTPUT_TIMEOUT, || reader.is_finished().then_some(()))
            .unwrap_or_else(|| panic!("{cmd:?} exited but its {name} stayed open"));
        reader.join().expect("pipe reader")
    };
    Ok(Output {
        status,
        stdout: joined(stdout, "stdout"),
        stderr: joined(stderr, "stderr"),
    })
}

/// Every external program the tests run, with the Debian package that has it. `.ci/run`
/// installs the same list: keep the two in step.
pub const TOOLS: [(&str, &str); 21] = [
    ("fuser", "psmisc"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkswap", "util-linux"),
    ("swapon", "mount"),
    ("swapoff", "mount"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("tmux", "tmux"),
    ("modprobe", "kmod"),
    ("sh", "dash"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("umoci", "umoci"),
    ("busybox", "busybox-static"),
    ("tar", "tar"),
];

/// The full path of the external program `name` (one of [`TOOLS`]), from `PATH` or the sbin
/// directories; a missing program fails the test, naming the package to install.
pub fn tool(name: &str) -> PathBuf {
    let package = TOOLS
        .iter()
        .find(|(tool, _)| *tool == name)
        .map(|(_, package)| *package)
        .unwrap_or_else(|| {
            panic!("{name} is not in support::process::TOOLS: add it there and to .ci/run")
        });
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: apt-get install {package} (.ci/run installs it)")
        })
}
