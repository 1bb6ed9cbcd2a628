//! `cargo xtask bench [BENCHMARK]`: benchmarks that compare busyprobe with baselines measured
//! in the same run (ratios, never absolute thresholds).
//!
//! `attribution` builds the release binary, then, inside a private mount namespace, sets up a
//! tmpfs held by a few processes among a thousand that hold a hundred unrelated files each,
//! and measures how fast each tool names the holders:
//!
//! * (a) a failing `umount2` → its JSON line with holders on `busyprobe watch --json`;
//! * (b) `busyprobe who --scan kernel --json` (BPF iterators);
//! * (c) `busyprobe who --scan proc --json` (a /proc walk);
//! * (d) `fuser -m` and (e) `lsof`, the baselines.
//!
//! `overhead` measures what a running `busyprobe watch` (in each of its modes) and `opensnoop`
//! cost every other process: syscall loops and a many-small-files workload, timed against no
//! tracer in shuffled rounds (see [`overhead`]).
//!
//! `agent` runs `busyprobe agent` with everything on for minutes and samples its RSS, CPU and
//! scrape time (see [`agent`]).
//!
//! `replay` times `busyprobe replay` grouping a million recorded attempts into incidents,
//! and its peak memory (see [`replay`]).
//!
//! `storm` makes held mounts fail to unmount 1000 times a second in all while `watch --json`
//! runs, and measures how far its lines fall behind, whether each names its holder, and its
//! memory (see [`storm`]).
//!
//! `pods` runs a real containerd with 200 containers (the integration tests' fixture) and
//! measures what pod names add to an EBUSY's line, that successful unmounts never ask the
//! runtime, and the memory of the names' cache (see [`pods`]).
//!
//! Every process and mount they make is removed on the way out, on error and on Ctrl-C too.

mod agent;
mod interrupt;
mod lines;
mod overhead;
mod pods;
mod prometheus;
mod reading;
mod record;
mod replay;
mod report;
mod scratch;
mod storm;
mod table;
mod tools;
mod tracer;
mod tui_cpu;
mod watch;
mod workload;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::{ensure, Context, Result};
use nix::{
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
};

pub use overhead::{bench_loop, LoopOptions};
pub use workload::{holder, HolderOptions};

use report::Measurement;
use workload::{Workload, WorkloadSpec};

/// A one-minute load average above this gets a warning before the benchmark starts.
const BUSY_LOAD: f64 = 0.5;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Options {
    /// The benchmark to run; without one, the list of benchmarks is printed.
    pub benchmark: Option<Benchmark>,
    /// Timed runs of each command, after one untimed warm-up run (median and min reported).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Timed failing unmounts for the `watch` latency, after one untimed warm-up.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub umounts: u32,
    /// Extra processes in the workload (the holders are among them) [default: 1000; 300 for
    /// `storm`].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub processes: Option<u32>,
    /// Open files each extra process holds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub fds: u32,
    /// How many of the extra processes hold the target mount (open files or working directory).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub holders: u32,
    /// Measure this busyprobe binary instead of building the release profile.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Options of the `overhead` benchmark.
    #[command(flatten)]
    pub overhead: overhead::OverheadOptions,
    /// Options of the `agent` benchmark.
    #[command(flatten)]
    pub agent: agent::AgentOptions,
    /// Options of the `storm` benchmark.
    #[command(flatten)]
    pub storm: storm::StormOptions,
    /// Options of the `pods` benchmark.
    #[command(flatten)]
    pub pods: pods::PodsOptions,
}

/// The benchmarks there are.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Benchmark {
    /// How fast busyprobe names the holders of a busy mount (watch latency, `who --scan
    /// kernel|proc`) against `fuser -m` and `lsof`, under 1000 processes × 100 open files.
    Attribution,
    /// What running busyprobe costs everyone else (openat+close, getppid, 20,000 small
    /// files), in each of its modes and for opensnoop, as ratios to no tracer.
    Overhead,
    /// Unmount events per second `busyprobe record` writes to a file, and whether it loses
    /// any, against the rate of unmount calls with no tracer.
    Record,
    /// The node agent for good: RSS, CPU and scrape time over minutes of steady unmount
    /// calls with metrics scraped and two live clients, then `record`'s throughput with all of
    /// it on.
    Agent,
    /// `busyprobe replay` grouping 1,000,000 recorded attempts (2,000 targets, retried
    /// EBUSYs) into incidents: seconds to its first screen and peak memory, against one
    /// serde_json pass over the same file. Needs tmux, not root; about 1 GB of temporary disk.
    Replay,
    /// `busyprobe report` over 100 MB and 1 GB recordings: time against `wc -l`, and peak
    /// memory (constant whatever the size). Needs no root; about 1.2 GB of temporary disk.
    Reading,
    /// An EBUSY storm (50 held mounts failing 20 times a second each, among 300 processes ×
    /// 100 files): how far `watch --json`'s lines fall behind, whether each names its holder,
    /// its memory and CPU.
    Storm,
    /// Pod names with 200 containers under a real containerd: what they add to an EBUSY's
    /// line (with and without the CRI, interleaved), no CRI call for 20,000 successful
    /// unmounts, and the memory of their cache.
    Pods,
}

/// Runs one benchmark, or lists them when none is named.
pub fn bench(opts: &Options) -> Result<ExitCode> {
    match opts.benchmark {
        None => {
            list_benchmarks();
            Ok(ExitCode::SUCCESS)
        }
        Some(Benchmark::Attribution) => attribution(opts),
        Some(Benchmark::Overhead) => match prepare("overhead", opts.binary.as_ref())? {
            Some(binary) => overhead::run(&opts.overhead, &binary),
            None => Ok(ExitCode::FAILURE),
        },
        Some(Benchmark::Record) => match prepare("record", opts.binary.as_ref())? {
            Some(binary) => record::run(&binary),
            None => Ok(ExitCode::FAILURE),
        },
        Some(Benchmark::Agent) => match prepare("agent", opts.binary.as_ref())? {
            Some(binary) => agent::run(&opts.agent, &binary),
            None => Ok(ExitCode::FAILURE),
        },
        Some(Benchmark::Storm) => match prepare("storm", opts.binary.as_ref())? {
            Some(binary) => {
                warn_if_busy();
                let processes = opts.processes.unwrap_or(300) as usize;
                storm::run(&opts.storm, processes, opts.fds as usize, &binary)
            }
            None => Ok(ExitCode::FAILURE),
        },
        Some(Benchmark::Pods) => match prepare("pods", opts.binary.as_ref())? {
            Some(binary) => {
                let tests = crate::vm::build_test_binary()?;
                warn_if_busy();
                pods::run(&opts.pods, &binary, &tests)
            }
            None => Ok(ExitCode::FAILURE),
        },
        Some(Benchmark::Replay) => match &opts.binary {
            Some(binary) => replay::run(binary),
            None => replay::run(&crate::run::build_busyprobe(true)?),
        },
        Some(Benchmark::Reading) => match &opts.binary {
            Some(binary) => reading::run(binary),
            None => reading::run(&crate::run::build_busyprobe(true)?),
        },
    }
}

/// Prints the benchmarks `cargo xtask bench` knows.
fn list_benchmarks() {
    use clap::ValueEnum;
    println!("usage: cargo xtask bench BENCHMARK [OPTIONS]   (as root; --help for the options)\n");
    println!("benchmarks:");
    for b in Benchmark::value_variants() {
        if let Some(value) = b.to_possible_value() {
            let help = value
                .get_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            println!("  {:<13} {help}", value.get_name());
        }
    }
}

/// `cargo xtask bench attribution`.
fn attribution(opts: &Options) -> Result<ExitCode> {
    let started = Instant::now();
    let Some(binary) = prepare("attribution", opts.binary.as_ref())? else {
        return Ok(ExitCode::FAILURE);
    };
    let baselines = tools::ensure_baselines_installed();
    warn_if_busy();

    let spec = WorkloadSpec {
        processes: opts.processes.unwrap_or(1000) as usize,
        fds: opts.fds as usize,
        holders: opts.holders as usize,
    };
    let (measurements, expected) = {
        let workload = Workload::set_up(&spec)?;
        let measurements = measure_all(opts, &binary, &workload, &baselines)?;
        (measurements, workload.expected.clone())
        // `workload` is dropped here: holders killed, tmpfs unmounted, temp dir removed.
    };
    println!(
        "\nxtask: bench: done in {:.0} s; every process and mount it made is gone",
        started.elapsed().as_secs_f64()
    );
    report::print(&spec, &expected, &measurements);
    Ok(ExitCode::SUCCESS)
}

/// What every benchmark does first: checks that it runs as root, enters a private mount
/// namespace (before any thread exists: `unshare(CLONE_NEWNS)` refuses multi-threaded
/// callers), takes Ctrl-C over, and builds the release binary unless `binary` names one.
/// `None` when not root (said on stderr).
fn prepare(name: &str, binary: Option<&PathBuf>) -> Result<Option<PathBuf>> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("xtask: bench {name} mounts a tmpfs and loads eBPF programs: run it as root");
        return Ok(None);
    }
    enter_private_mount_namespace()?;
    interrupt::install()?;
    let binary = match binary {
        Some(path) => path.clone(),
        None => crate::run::build_busyprobe(true)?,
    };
    ensure!(
        binary.is_file(),
        "no busyprobe binary at {}",
        binary.display()
    );
    Ok(Some(binary))
}

/// Warns when the machine is already busy: other work makes every number noisier.
fn warn_if_busy() {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let Some(load) = loadavg.split_whitespace().next() else {
        return;
    };
    if load.parse::<f64>().is_ok_and(|load| load > BUSY_LOAD) {
        println!(
            "xtask: bench: warning: load average {load} before the benchmark: other work on \
             this machine will make the numbers noisy"
        );
    }
}

/// Moves this process into a new mount namespace whose mounts all are private, so that the
/// benchmark's tmpfs is invisible outside and vanishes with the namespace.
fn enter_private_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making every mount private in the new mount namespace")
}

/// Runs (b)–(e) first, without `watch` running (its tracepoints slow every syscall down), then
/// (a); returns them in the order (a)–(e).
fn measure_all(
    opts: &Options,
    binary: &std::path::Path,
    workload: &Workload,
    baselines: &tools::Baselines,
) -> Result<Vec<Measurement>> {
    let commands = tools::commands(binary, &workload.mount, baselines);
    println!(
        "xtask: bench: timing {} commands, {} runs each after a warm-up, interleaved",
        commands.len(),
        opts.runs
    );
    let timed = tools::time_commands(&commands, opts.runs as usize)?;
    println!(
        "xtask: bench: timing {} failing unmounts seen by busyprobe watch, after a warm-up",
        opts.umounts
    );
    let latency = watch::measure(binary, workload, opts.umounts as usize)?;
    Ok(std::iter::once(latency).chain(timed).collect())
}
