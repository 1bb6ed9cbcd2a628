//! The workloads whose slowdown is measured: each runs in a fresh child process, this xtask
//! binary re-run as the hidden `__bench-loop` task, which moves to its [`Place`] first, then
//! times itself and prints `ELAPSED_NS OPS` on stdout.

use std::{
    env,
    ffi::CString,
    hint::black_box,
    io::{self, Write},
    os::unix::{ffi::OsStrExt, process as unix_process},
    path::{Path, PathBuf},
    process::{self, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::{
    libc,
    sys::{prctl, signal::Signal},
};

use super::{
    files::small_files,
    place::{Place, PlaceOptions},
};
use crate::bench::interrupt;

/// How the loop opens its file.
const OPEN_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_CLOEXEC;
/// Untimed iterations of a loop before the timed ones (caches, page faults).
const WARM_UP: u64 = 1000;

/// One workload.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `openat` + `close` of one file, in a loop.
    OpenClose,
    /// `getppid`, in a loop.
    Getppid,
    /// Creates `count` small files in a new directory, reads each back, walks the tree with
    /// a `stat` of every file; timed as a whole.
    Files,
}

impl Workload {
    /// Its name on the command line.
    fn arg(self) -> &'static str {
        match self {
            Self::OpenClose => "open-close",
            Self::Getppid => "getppid",
            Self::Files => "files",
        }
    }
}

/// Options of the hidden `cargo xtask __bench-loop` task (run by `bench overhead` only).
#[derive(clap::Args)]
pub struct LoopOptions {
    /// The benchmark's pid: the loop does not outlive it.
    #[arg(long)]
    parent: i32,
    /// What to run.
    #[arg(long, value_enum)]
    workload: Workload,
    #[command(flatten)]
    place: PlaceOptions,
    /// The file to open, or the directory to create for the small files (in the place's
    /// root).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Iterations, or files.
    #[arg(long)]
    count: u64,
}

/// The hidden loop task: goes to its place, runs the workload once and prints
/// `ELAPSED_NS OPS`.
pub fn bench_loop(opts: &LoopOptions) -> Result<ExitCode> {
    prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    if unix_process::parent_id() as i32 != opts.parent {
        return Ok(ExitCode::FAILURE); // The benchmark is already gone.
    }
    Place::from_options(&opts.place)?.enter()?;
    let path = || opts.path.as_deref().context("--path is needed");
    let elapsed = match opts.workload {
        Workload::OpenClose => open_close(path()?, opts.count)?,
        Workload::Getppid => getppid(opts.count),
        Workload::Files => small_files(path()?, opts.count)?,
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{} {}", elapsed.as_nanos(), opts.count)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `count` times `openat(AT_FDCWD, path, O_RDONLY|O_CLOEXEC)` then `close`, straight into libc:
/// the loop adds nothing of its own (xtask is optimised even in dev builds), only the system calls count.
fn open_close(path: &Path, count: u64) -> Result<Duration> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    let once = || {
        // SAFETY: `path` is a valid NUL-terminated string; the fd is closed at once.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), OPEN_FLAGS) };
        ensure!(fd >= 0, "opening {path:?}: {}", io::Error::last_os_error());
        // SAFETY: `fd` was just opened and nothing else uses it.
        unsafe { libc::close(fd) };
        Ok(())
    };
    for _ in 0..WARM_UP {
        once()?;
    }
    let started = Instant::now();
    for _ in 0..count {
        once()?;
    }
    Ok(started.elapsed())
}

/// `count` times `getppid` (a real system call every time: glibc does not cache it).
fn getppid(count: u64) -> Duration {
    // SAFETY: getppid has no preconditions.
    let once = || black_box(unsafe { libc::getppid() });
    for _ in 0..WARM_UP {
        once();
    }
    let started = Instant::now();
    for _ in 0..count {
        once();
    }
    started.elapsed()
}

/// Runs `workload` once in a child process at `place`; returns its elapsed time and operation
/// count.
pub fn run_child(
    workload: Workload,
    place: &Place,
    path: Option<&Path>,
    count: u64,
) -> Result<(Duration, u64)> {
    let exe = env::current_exe().context("finding the xtask binary")?;
    let mut command = Command::new(&exe);
    interrupt::unblock_in_child(&mut command)
        .args(["__bench-loop", "--parent", &process::id().to_string()])
        .args(["--count", &count.to_string(), "--workload", workload.arg()])
        .args(place.args());
    if let Some(path) = path {
        command.arg("--path").arg(path);
    }
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} __bench-loop", exe.display()))?;
    if !output.status.success() {
        bail!(
            "__bench-loop {workload:?} at {place:?} failed ({})",
            output.status
        );
    }
    parse_output(&String::from_utf8_lossy(&output.stdout))
}

/// `ELAPSED_NS OPS` → the elapsed time and the count.
fn parse_output(stdout: &str) -> Result<(Duration, u64)> {
    let mut words = stdout.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next()) {
        (Some(Ok(ns)), Some(Ok(ops))) if ops > 0 => Ok((Duration::from_nanos(ns), ops)),
        _ => bail!("unexpected __bench-loop output {stdout:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_are_what_clap_accepts() {
        use clap::ValueEnum;
        for w in Workload::value_variants() {
            assert_eq!(w.to_possible_value().unwrap().get_name(), w.arg());
        }
    }

    #[test]
    fn loop_output_parses_and_garbage_does_not() {
        assert_eq!(
            parse_output("1500 3\n").unwrap(),
            (Duration::from_nanos(1500), 3)
        );
        assert!(parse_output("1500\n").is_err());
        assert!(parse_output("x 3\n").is_err());
        assert!(parse_output("1500 0\n").is_err());
    }
}
