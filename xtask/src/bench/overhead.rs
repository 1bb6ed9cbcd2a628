//! `cargo xtask bench overhead`: what a running tracer costs every other process, as ratios
//! to no tracer measured in the same run, with the release binary a user runs.
//!
//! Workloads, each in a fresh child process (see [`loops`]): `openat`+`close` of a file on the
//! root filesystem (never tracked by busyprobe: its namespace's root) and of a file on a tmpfs
//! mounted for the bench (tracked), `getppid` (every syscall pays the syscall-tracepoint slow
//! path), and creating, reading back and walking many small files on the tmpfs (see
//! [`files`]). Configurations (see [`configs`]): no tracer, `busyprobe watch --json` in its
//! default mode, with `--no-open-times`, with `--no-holders`, and opensnoop. In each round the
//! configurations run in a shuffled order, and the workloads in a shuffled order within each,
//! so that noise hits all alike; the figures are medians over the rounds, and each ratio is the
//! median of the ratios to the baseline of the same round.
//!
//! Everything happens in the private mount namespace `bench` entered, under a temporary
//! directory that is removed on the way out (error and Ctrl-C included).

mod configs;
mod files;
mod loops;
mod results;

use std::{
    fs::{self, File},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

pub use loops::{bench_loop, LoopOptions};

use super::{
    interrupt,
    scratch::{Mount, TempDir},
    table::machine,
};
use configs::{Config, Session};
use loops::Workload;
use results::{Column, Results, BASELINE, DEFAULT, NO_HOLDERS, NO_OPEN_TIMES};

/// `getppid` runs this many times as many iterations as the `openat`+`close` loops: it is
/// an order of magnitude cheaper.
const GETPPID_FACTOR: u64 = 10;
/// tmpfs space per small file (each takes at least a page), plus a margin.
const KIB_PER_FILE: u64 = 8;
const TMPFS_MARGIN_KIB: u64 = 16 << 10;

/// Options of `cargo xtask bench overhead`.
#[derive(clap::Args)]
#[command(next_help_heading = "Options of `overhead`")]
pub struct OverheadOptions {
    /// Shuffled rounds; in each, every configuration runs every workload once.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Iterations of each `openat`+`close` loop (`getppid` runs ten times as many).
    #[arg(long, default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    pub iterations: u64,
    /// Small files the file-heavy workload creates and reads back.
    #[arg(long, default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(100..=100_000))]
    pub files: u64,
}

/// `cargo xtask bench overhead`, once [`super::prepare`] has run.
pub fn run(opts: &OverheadOptions, busyprobe: &Path) -> Result<ExitCode> {
    let started = Instant::now();
    let configs = configs::configs(configs::find_opensnoop());
    super::warn_if_busy();
    let scene = Scene::set_up(opts.files)?;
    let jobs = jobs(opts, &scene);
    let results = measure(opts.rounds as usize, busyprobe, &configs, &jobs)?;
    let notes = notes(&scene)?;
    drop(scene);
    eprintln!(
        "xtask: bench: done in {:.0} s; every process and mount it made is gone",
        started.elapsed().as_secs_f64()
    );
    results.print(&headline(opts), notes);
    let busyprobe_measured = [DEFAULT, NO_OPEN_TIMES, NO_HOLDERS]
        .iter()
        .any(|&c| results.measured(c));
    Ok(if results.measured(BASELINE) && busyprobe_measured {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The scratch space: a file on the root filesystem, and a tmpfs with a file and room for
/// the small files. Dropping it unmounts the tmpfs, then removes the directory.
struct Scene {
    /// Declared before the directory: unmounted first.
    _tmpfs: Mount,
    _dir: TempDir,
    root_file: PathBuf,
    tmpfs_file: PathBuf,
    files_dir: PathBuf,
}

impl Scene {
    fn set_up(files: u64) -> Result<Self> {
        let dir = TempDir::create()?;
        let root_file = dir.path.join("file");
        fs::write(&root_file, b"busyprobe bench\n")?;
        let mount = dir.path.join("mnt");
        fs::create_dir(&mount)?;
        let size = files * KIB_PER_FILE + TMPFS_MARGIN_KIB;
        let tmpfs = Mount::tmpfs(&mount, &format!("size={size}k"))?;
        let tmpfs_file = mount.join("file");
        fs::write(&tmpfs_file, b"busyprobe bench\n")?;
        eprintln!(
            "xtask: bench: files at {} (root filesystem) and {} (tmpfs)",
            root_file.display(),
            tmpfs_file.display()
        );
        Ok(Self {
            _tmpfs: tmpfs,
            _dir: dir,
            root_file,
            tmpfs_file,
            files_dir: mount.join("files"),
        })
    }
}

/// A workload with its arguments, and its column in the table.
struct Job {
    column: Column,
    workload: Workload,
    path: Option<PathBuf>,
    count: u64,
}

impl Job {
    /// Runs it once: ns per operation, or seconds for the whole workload.
    fn run(&self) -> Result<f64> {
        let (elapsed, ops) = loops::run_child(self.workload, self.path.as_deref(), self.count)?;
        Ok(if self.column.per_op {
            elapsed.as_nanos() as f64 / ops as f64
        } else {
            elapsed.as_secs_f64()
        })
    }
}

/// The four workloads, in the order of the columns of [`results`].
fn jobs(opts: &OverheadOptions, scene: &Scene) -> Vec<Job> {
    let job = |label: String, workload, path: Option<&PathBuf>, count| Job {
        column: Column {
            label,
            per_op: workload != Workload::Files,
        },
        workload,
        path: path.cloned(),
        count,
    };
    vec![
        job(
            "openat+close, root fs (untracked)".into(),
            Workload::OpenClose,
            Some(&scene.root_file),
            opts.iterations,
        ),
        job(
            "openat+close, tmpfs (tracked)".into(),
            Workload::OpenClose,
            Some(&scene.tmpfs_file),
            opts.iterations,
        ),
        job(
            "getppid".into(),
            Workload::Getppid,
            None,
            opts.iterations * GETPPID_FACTOR,
        ),
        job(
            format!("{} small files + walk, tmpfs", thousands(opts.files)),
            Workload::Files,
            Some(&scene.files_dir),
            opts.files,
        ),
    ]
}

/// Runs every workload once untimed, then the rounds.
fn measure(rounds: usize, busyprobe: &Path, configs: &[Config], jobs: &[Job]) -> Result<Results> {
    let columns = jobs.iter().map(|j| j.column.clone()).collect();
    let mut results = Results::new(configs, columns, rounds);
    eprintln!("xtask: bench: warm-up: every workload once, no tracer");
    for job in jobs {
        job.run()?;
    }
    let mut shuffle = Shuffle::seeded();
    for round in 0..rounds {
        for config in shuffle.order(configs.len()) {
            if !results.measured(config) {
                continue;
            }
            let c = &configs[config];
            eprintln!(
                "xtask: bench: round {}/{rounds}: {} {}",
                round + 1,
                c.key,
                c.label
            );
            let session = Session::start(c, busyprobe)
                .and_then(|session| run_session(session, jobs, round, &mut shuffle));
            match session {
                Ok(figures) => {
                    for (workload, figure) in figures.figures {
                        results.record(config, workload, round, figure);
                    }
                    if let Some(usage) = figures.usage {
                        results.record_usage(config, usage);
                    }
                }
                Err(e) => results.fail(config, interrupt::failure_reason(&e)?),
            }
        }
    }
    Ok(results)
}

/// What one session measured.
struct SessionFigures {
    /// `(workload, figure)`.
    figures: Vec<(usize, f64)>,
    usage: Option<configs::Usage>,
}

/// Runs every workload once, in a shuffled order, while `session` runs; then ends it.
fn run_session(
    session: Session,
    jobs: &[Job],
    round: usize,
    shuffle: &mut Shuffle,
) -> Result<SessionFigures> {
    let mut figures = Vec::with_capacity(jobs.len());
    for workload in shuffle.order(jobs.len()) {
        interrupt::check()?;
        let figure = jobs[workload]
            .run()
            .with_context(|| format!("round {}: {}", round + 1, jobs[workload].column.label))?;
        figures.push((workload, figure));
    }
    let usage = session.finish()?;
    Ok(SessionFigures { figures, usage })
}

/// What was measured, and on what.
fn headline(opts: &OverheadOptions) -> String {
    format!(
        "busyprobe overhead benchmark: what a running tracer costs other processes; medians of \
         {} shuffled rounds of {} openat+close, {} getppid; {}",
        opts.rounds,
        thousands(opts.iterations),
        thousands(opts.iterations * GETPPID_FACTOR),
        machine()
    )
}

/// The notes under the table: how to read it, and whether the files are where they should be.
fn notes(scene: &Scene) -> Result<Vec<String>> {
    let root = mount_id(Path::new("/"))?;
    let root_file = mount_id(&scene.root_file)?;
    let tmpfs = mount_id(&scene.tmpfs_file)?;
    let mut notes = vec![
        "figures: ns per operation, or seconds for the files workload; ×: the median over the \
         rounds of the figure divided by the no-tracer figure of the same round"
            .to_string(),
        "tracer RSS: VmRSS at the end of a session, the largest over the rounds; drops: summed \
         over the sessions (watch: its final stats line; opensnoop: the events it said it lost)"
            .to_string(),
        "(4) opensnoop is measured as it ships: it formats a line for every open of every \
         process (to /dev/null here), and that work is part of its cost"
            .to_string(),
    ];
    if root_file != root {
        notes.push(format!(
            "WARNING: {} is on mount {root_file}, not on this namespace's root mount {root}: \
             busyprobe may track it",
            scene.root_file.display()
        ));
    }
    if tmpfs == root {
        notes.push(
            "WARNING: the tmpfs file is on the root mount: busyprobe does not track it".into(),
        );
    }
    Ok(notes)
}

/// The id of the mount `path` is on (`mnt_id` in `/proc/self/fdinfo` of an fd on it).
fn mount_id(path: &Path) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd()))?;
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("mnt_id:")?.trim().parse().ok())
        .with_context(|| format!("no mnt_id in the fdinfo of {}", path.display()))
}

/// `20000` → `20,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Shuffled orders from a xorshift generator seeded by the clock (no statistical quality
/// needed: only no fixed order).
struct Shuffle(u64);

impl Shuffle {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `0..n` in a random order (Fisher–Yates).
    fn order(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_options_are_consistent() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: crate::bench::Options,
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(20_000), "20,000");
        assert_eq!(thousands(3_000_000), "3,000,000");
    }

    #[test]
    fn shuffled_orders_are_permutations() {
        let mut shuffle = Shuffle::seeded();
        for _ in 0..20 {
            let mut order = shuffle.order(5);
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn the_root_and_proc_are_different_mounts() {
        let root = mount_id(Path::new("/")).unwrap();
        assert_ne!(root, mount_id(Path::new("/proc/self")).unwrap());
    }
}
