//! The benchmark's workload: a tmpfs under a temporary directory, and many processes holding
//! open files, a few of them on that tmpfs. Guards remove all of it when dropped.
//!
//! The processes are this xtask binary itself, re-run as the hidden `__bench-holder` task: it
//! opens its files, says `ready` on stdout, then sleeps until killed (or until the benchmark
//! dies: it asks the kernel for SIGKILL when its parent goes).

use std::{
    collections::BTreeMap,
    env,
    ffi::OsString,
    fs::{self, File},
    io::{self, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{self, Child, Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::{
    sys::{
        prctl,
        resource::{getrlimit, setrlimit, Resource},
        signal::{killpg, Signal},
    },
    unistd::{getppid, Pid},
};

use super::{
    lines::Lines,
    scratch::{Mount, TempDir},
};

/// Files under the temporary directory (on the root filesystem) that fill the fd tables.
const FILLER_FILES: usize = 20;
/// How long the holders may take to get ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The shape of the workload.
pub struct WorkloadSpec {
    /// Extra processes, holders included.
    pub processes: usize,
    /// Open files per extra process (besides stdin, stdout and stderr).
    pub fds: usize,
    /// How many of the extra processes hold the target mount.
    pub holders: usize,
}

/// A running workload. Dropping it kills the processes, unmounts the tmpfs and removes the
/// temporary directory, in that order (the order of the fields).
pub struct Workload {
    /// The processes; declared first so that they die first.
    _processes: ProcessGroup,
    _tmpfs: Mount,
    _dir: TempDir,
    /// The target mount point.
    pub mount: PathBuf,
    /// The pids of the processes that hold the target, with how each holds it.
    pub expected: BTreeMap<u32, String>,
}

impl Workload {
    /// Makes the directory, the tmpfs and the processes, and waits until they all hold their
    /// files.
    pub fn set_up(spec: &WorkloadSpec) -> Result<Self> {
        let dir = TempDir::create()?;
        let fillers = dir.path.join("files");
        write_fillers(&fillers)?;
        let mount = dir.path.join("mnt");
        fs::create_dir(&mount)?;
        let tmpfs = Mount::tmpfs(&mount, "size=4m")?;
        for k in 0..spec.holders {
            fs::write(mount.join(format!("held-{k}")), b"held\n")?;
        }
        println!(
            "xtask: bench: tmpfs at {}; starting {} processes with {} open files each, {} of them holding the tmpfs",
            mount.display(),
            spec.processes,
            spec.fds,
            spec.holders
        );
        let started = Instant::now();
        let plans = plan(spec, &fillers, &mount);
        let commands: Vec<_> = plans.iter().map(|p| p.args.clone()).collect();
        let (processes, pids) = ProcessGroup::spawn(&commands)?;
        let expected = plans
            .iter()
            .zip(pids)
            .filter_map(|(plan, pid)| Some((pid, plan.hold.describe()?.to_string())))
            .collect();
        println!(
            "xtask: bench: {} processes ready in {:.1} s",
            plans.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(Self {
            _processes: processes,
            _tmpfs: tmpfs,
            _dir: dir,
            mount,
            expected,
        })
    }
}

/// How one extra process holds the target mount.
#[derive(Clone, Copy)]
enum Hold {
    /// Holds nothing on it.
    Nothing,
    /// An open file and an open fd on the mount's root directory.
    Fds,
    /// Both fds and its working directory.
    FdsAndCwd,
    /// Its working directory only.
    Cwd,
}

impl Hold {
    /// The hold of holder number `k`: mostly fds, some working directories.
    fn of_holder(k: usize) -> Self {
        match k % 5 {
            3 => Self::FdsAndCwd,
            4 => Self::Cwd,
            _ => Self::Fds,
        }
    }

    /// Says how the mount is held.
    fn describe(self) -> Option<&'static str> {
        match self {
            Self::Nothing => None,
            Self::Fds => Some("2 fds"),
            Self::FdsAndCwd => Some("2 fds + cwd"),
            Self::Cwd => Some("cwd"),
        }
    }
}

/// The command line of one extra process.
struct Plan {
    hold: Hold,
    args: Vec<OsString>,
}

/// Plans every extra process; the holders are spread evenly among them.
fn plan(spec: &WorkloadSpec, fillers: &Path, mount: &Path) -> Vec<Plan> {
    let stride = spec.processes.max(1).div_ceil(spec.holders.max(1));
    (0..spec.processes)
        .map(|i| {
            let holder = (i % stride == stride / 2).then_some(i / stride);
            let hold = holder.map_or(Hold::Nothing, Hold::of_holder);
            let on_target = match (holder, hold) {
                (Some(k), Hold::Fds | Hold::FdsAndCwd) => {
                    vec![mount.join(format!("held-{k}")), mount.to_path_buf()]
                }
                _ => Vec::new(),
            };
            let cwd = matches!(hold, Hold::Cwd | Hold::FdsAndCwd).then_some(mount);
            let args = holder_args(spec.fds, fillers, &on_target, cwd);
            Plan { hold, args }
        })
        .collect()
}

/// The command line of one `__bench-holder`: `fds` open files (those in `on_target` first,
/// then filler files in `fillers`) and, if given, `cwd` as its working directory.
pub fn holder_args(
    fds: usize,
    fillers: &Path,
    on_target: &[PathBuf],
    cwd: Option<&Path>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "__bench-holder".into(),
        "--parent".into(),
        process::id().to_string().into(),
        "--fds".into(),
        fds.to_string().into(),
        "--filler-dir".into(),
        fillers.into(),
        "--fillers".into(),
        FILLER_FILES.to_string().into(),
    ];
    for file in on_target {
        args.extend(["--on-target".into(), file.into()]);
    }
    if let Some(dir) = cwd {
        args.extend(["--cwd".into(), dir.into()]);
    }
    args
}

/// Writes the filler files `f0`, `f1`, ... into `dir` (created).
pub fn write_fillers(dir: &Path) -> Result<()> {
    fs::create_dir(dir)?;
    for i in 0..FILLER_FILES {
        fs::write(dir.join(format!("f{i}")), b"filler\n")?;
    }
    Ok(())
}

/// The extra processes, in one process group of their own.
pub struct ProcessGroup {
    pgid: Option<Pid>,
    children: Vec<Child>,
}

impl ProcessGroup {
    /// Starts `__bench-holder` with each of `commands` (see [`holder_args`]) and waits until
    /// each says it is ready; returns the group and their pids, in order.
    pub fn spawn(commands: &[Vec<OsString>]) -> Result<(Self, Vec<u32>)> {
        let exe = env::current_exe().context("finding the xtask binary")?;
        let (ready_reader, ready_writer) = io::pipe().context("making the readiness pipe")?;
        let ready = Lines::spawn("holders-ready", ready_reader)?;
        let mut group = Self {
            pgid: None,
            children: Vec::with_capacity(commands.len()),
        };
        let mut pids = Vec::with_capacity(commands.len());
        for args in commands {
            super::interrupt::check()?;
            let child = Command::new(&exe)
                .args(args)
                .stdin(Stdio::null())
                .stdout(ready_writer.try_clone()?)
                .process_group(group.pgid.map_or(0, Pid::as_raw))
                .spawn()
                .with_context(|| format!("starting {} __bench-holder", exe.display()))?;
            let pid = child.id();
            group.pgid.get_or_insert(Pid::from_raw(pid as i32));
            group.children.push(child);
            pids.push(pid);
        }
        drop(ready_writer);
        group.wait_ready(&ready)?;
        Ok((group, pids))
    }

    /// Waits for one `ready` line per process; fails early when one of them exits.
    fn wait_ready(&mut self, ready: &Lines) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut count = 0;
        while count < self.children.len() {
            ensure!(
                Instant::now() < deadline,
                "holders not ready after {READY_TIMEOUT:?}"
            );
            match ready.next_before(Instant::now() + Duration::from_millis(500))? {
                Some(line) if line.text == "ready" => count += 1,
                Some(line) => bail!("unexpected line from a holder: {}", line.text),
                None => self.check_alive()?,
            }
        }
        Ok(())
    }

    /// An error naming the first process that has exited.
    fn check_alive(&mut self) -> Result<()> {
        for child in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("holder process {} exited early ({status})", child.id());
            }
        }
        Ok(())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Options of the hidden `cargo xtask __bench-holder` task (run by the benchmark only).
#[derive(clap::Args)]
pub struct HolderOptions {
    /// The benchmark's pid: the holder does not outlive it.
    #[arg(long)]
    parent: i32,
    /// Open files to hold in all.
    #[arg(long)]
    fds: usize,
    /// Directory of the filler files `f0`, `f1`, ...
    #[arg(long)]
    filler_dir: PathBuf,
    /// How many filler files there are.
    #[arg(long)]
    fillers: usize,
    /// A file or directory on the target mount to hold open (counted in `--fds`).
    #[arg(long)]
    on_target: Vec<PathBuf>,
    /// Working directory to hold.
    #[arg(long)]
    cwd: Option<PathBuf>,
}

/// The hidden holder task: opens its files, says `ready`, sleeps until killed.
pub fn holder(opts: &HolderOptions) -> Result<ExitCode> {
    prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    if getppid().as_raw() != opts.parent {
        return Ok(ExitCode::FAILURE); // The benchmark is already gone.
    }
    raise_nofile_limit(opts.fds as u64 + 16)?;
    let _files = open_files(opts)?;
    if let Some(dir) = &opts.cwd {
        env::set_current_dir(dir).with_context(|| format!("chdir {}", dir.display()))?;
    }
    let mut out = io::stdout().lock();
    out.write_all(b"ready\n")?;
    out.flush()?;
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Opens the target files first, then `/dev/null` and the filler files in turn up to `fds`.
fn open_files(opts: &HolderOptions) -> Result<Vec<File>> {
    let fillers = (0..opts.fillers.max(1)).map(|i| opts.filler_dir.join(format!("f{i}")));
    let off_target = [PathBuf::from("/dev/null")]
        .into_iter()
        .chain(fillers)
        .cycle();
    let paths = opts.on_target.iter().cloned().chain(off_target);
    paths
        .take(opts.fds)
        .map(|path| File::open(&path).with_context(|| format!("opening {}", path.display())))
        .collect()
}

/// Raises the soft RLIMIT_NOFILE to at least `needed` (up to the hard limit).
fn raise_nofile_limit(needed: u64) -> Result<()> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= needed {
        return Ok(());
    }
    ensure!(
        hard >= needed,
        "RLIMIT_NOFILE hard limit {hard} is below the {needed} files a holder needs"
    );
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard).context("raising RLIMIT_NOFILE")
}
