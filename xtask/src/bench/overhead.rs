//! `cargo xtask bench overhead`: what a running tracer costs every other process, as ratios
//! to no tracer measured in the same run, with the release binary a user runs.
//!
//! Measures (see [`jobs`]), each a workload in a fresh child process (see [`loops`]) that
//! first goes where it should run (see [`place`]): `openat`+`close` of a file on the root
//! filesystem from busyprobe's own mount namespace (its root: never tracked), from a child
//! mount namespace (a copy of the mount: tracked) and from a container-like root (an overlay,
//! chrooted into: see [`container`]); of a file on a tmpfs mounted for the bench (tracked) and
//! on a contended one (see [`contention`]); `getppid` (every syscall pays the
//! syscall-tracepoint slow path); and many small files written, read back and walked (see
//! [`files`]) on the tmpfs and in the container-like root. Configurations (see [`configs`]):
//! no tracer, `busyprobe agent` with its defaults, `busyprobe watch --json` in its default
//! mode, with `--no-open-times` and with `--no-holders`, and opensnoop; each runs as a
//! [`session`]. In each round the configurations run in a shuffled order, and the workloads in
//! a shuffled order within each, so that noise hits all alike; the figures are medians over the
//! rounds, and each ratio is the median of the ratios to the baseline of the same round (see
//! [`results`]); [`goals`] checks them against the issue's.
//!
//! Everything happens in the private mount namespace `bench` entered, under a temporary
//! directory that is removed on the way out (error and Ctrl-C included; see [`scene`]).

mod configs;
mod container;
mod contention;
mod files;
mod goals;
mod jobs;
mod loops;
mod mounts;
mod place;
mod results;
mod scene;
mod session;

use std::{
    path::Path,
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

pub use loops::{bench_loop, LoopOptions};

use super::{interrupt, table::machine};
use configs::{Config, BASELINE, BUSYPROBE};
use jobs::{Job, GETPPID_FACTOR};
use results::Results;
use scene::Scene;
use session::{Session, Usage};

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
    /// Small files the file-heavy workloads create, read back and walk.
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
    let jobs = jobs::jobs(opts, &scene);
    let results = measure(opts.rounds as usize, busyprobe, &configs, &jobs, &scene)?;
    let mut notes = notes();
    notes.extend(scene.notes()?);
    drop(scene);
    eprintln!(
        "xtask: bench: done in {:.0} s; every process and mount it made is gone",
        started.elapsed().as_secs_f64()
    );
    results.print(&headline(opts), notes, &goals::check(&results));
    let busyprobe_measured = BUSYPROBE.iter().any(|&c| results.measured(c));
    Ok(if results.measured(BASELINE) && busyprobe_measured {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs every workload once untimed, then the rounds.
fn measure(
    rounds: usize,
    busyprobe: &Path,
    configs: &[Config],
    jobs: &[Job],
    scene: &Scene,
) -> Result<Results> {
    let headings = jobs.iter().map(|j| j.heading.clone()).collect();
    let mut results = Results::new(configs, headings, rounds);
    eprintln!("xtask: bench: warm-up: every workload once, no tracer");
    for job in jobs {
        job.run()
            .with_context(|| format!("warm-up: {}", job.heading.label))?;
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
            let session = Session::start(c, busyprobe, &scene.contended)
                .and_then(|session| run_session(session, jobs, round, &mut shuffle));
            match session {
                Ok(figures) => {
                    for (measure, figure) in figures.figures {
                        results.record(config, measure, round, figure);
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
    /// `(measure, figure)`.
    figures: Vec<(usize, f64)>,
    usage: Option<Usage>,
}

/// Runs every job once, in a shuffled order, while `session` runs; then ends it.
fn run_session(
    session: Session,
    jobs: &[Job],
    round: usize,
    shuffle: &mut Shuffle,
) -> Result<SessionFigures> {
    let mut figures = Vec::with_capacity(jobs.len());
    for measure in shuffle.order(jobs.len()) {
        interrupt::check()?;
        let figure = jobs[measure]
            .run()
            .with_context(|| format!("round {}: {}", round + 1, jobs[measure].heading.label))?;
        figures.push((measure, figure));
    }
    let usage = session.finish()?;
    Ok(SessionFigures { figures, usage })
}

/// What was measured, and on what.
fn headline(opts: &OverheadOptions) -> String {
    format!(
        "busyprobe overhead benchmark: what a running tracer costs other processes; medians of \
         {} shuffled rounds of {} openat+close, {} getppid, {} small files; {}",
        opts.rounds,
        thousands(opts.iterations),
        thousands(opts.iterations * GETPPID_FACTOR),
        thousands(opts.files),
        machine()
    )
}

/// The notes under the table: how to read it, and how each measure is made.
fn notes() -> Vec<String> {
    [
        "figures: ns per operation, or seconds for a whole files workload; ×: the median over \
         the rounds of the figure divided by the no-tracer figure of the same round",
        "child mount namespace: the loop process unshare(CLONE_NEWNS)s and makes / rprivate \
         before it starts timing, then opens the same root-fs file through its copy of the \
         root mount (a mount id of its own: busyprobe tracks it)",
        "container-like: as a runtime builds one, the loop process unshare(CLONE_NEWNS)s, makes \
         / rprivate, mounts an overlay (lower: the image, holding the file it opens and the \
         parent of the files workload's directory; index=off as containerd mounts it), chroots \
         into it and chdirs to /; the files workload writes into the upper layer; the overlay \
         goes with the process's namespace",
        "contended tmpfs: at the start of every session, once the tracer is ready, the bench \
         holds a file on it open and umount2 fails with EBUSY; it waits until busyprobe has \
         reported it (watch: its umount line with \"errno\":\"EBUSY\"; agent: \
         busyprobe_unmount_attempts_total{result=\"EBUSY\"} ≥ 1 on its metrics), lets go, \
         and for busyprobe waits out the 2 s busy window the EBUSY opened (releases are \
         reported in it) before the workloads, which measure the steady state",
        "small files + walk: 512-byte files in directories of 200, written, read back, then \
         every directory listed and every entry stat'ed (as find -type f), in one timed run",
        "getppid: every syscall tracer (busyprobe's tracepoints, opensnoop's) puts every task \
         on the syscall slow path whatever the call, so all pay the same there; it is left \
         out of the comparison with opensnoop",
        "busyprobe runs in tracepoint mode: this kernel allows no fentry programs, and the qemu \
         guests where fentry mode works run without KVM (emulated), too slow to time; fentry \
         mode, which spares other syscalls the slow path, is not measured",
        "tracer RSS: VmRSS at the end of a session, the largest over the rounds; drops: summed \
         over the sessions (watch: its final stats line; agent: busyprobe_drops_total on its \
         metrics just before it stops, which follow its stats ticks, every 10 s, so a short \
         session's last losses may be missing; opensnoop: the events it said it lost)",
        "(5) opensnoop is measured as it ships: it formats a line for every open of every \
         process (to /dev/null here), and that work is part of its cost",
    ]
    .map(String::from)
    .to_vec()
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
}
