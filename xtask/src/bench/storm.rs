//! `cargo xtask bench storm`: an EBUSY storm. Held tmpfs mounts fail to unmount many times a
//! second each, next to hundreds of processes holding files elsewhere, while `busyprobe watch
//! --json` runs; every EBUSY line is checked and timed as it is read:
//!
//! * its lag: when the bench read it minus the event's `ts` (both wall clock; `ts` is when
//!   the call entered the kernel), as p50, p99 and max;
//! * whether it names the process the bench set up to hold that mount, and whether any
//!   failing call has no line (missing);
//! * `watch`'s RSS (`VmRSS`) before the storm, halfway, at its end and once every line is
//!   out, its CPU over the storm and the drain, and the drops of its last `stats` line.

mod load;
mod mounts;
mod tally;

use std::{
    ffi::OsStr,
    path::Path,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::mount::{umount2, MntFlags};

use self::{
    load::{Calls, Storm},
    mounts::{Mounts, Shape},
    tally::{quantile, Tally, WallClock},
};
use super::{
    interrupt,
    table::{machine, print_report, verdict},
    tracer::Tracer,
};

/// How long `watch` may take to attach its probes.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the warm-up's lines may take.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// After the storm: the drain ends when no EBUSY line came for this long...
const DRAIN_IDLE: Duration = Duration::from_secs(15);
/// ... or after this long in all.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// How long one wait for a line lasts while the storm runs.
const READ_SLICE: Duration = Duration::from_millis(100);
/// The goal: p99 lag.
const GOAL_P99: Duration = Duration::from_secs(1);
/// The goal: RSS at the storm's end at most this many times its RSS before.
const GOAL_RSS_GROWTH: f64 = 1.10;

/// Options of `cargo xtask bench storm`.
#[derive(clap::Args)]
pub struct StormOptions {
    /// `storm`: held tmpfs mounts, each failing to unmount `--storm-rate` times a second.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub storm_mounts: u32,
    /// `storm`: failing unmounts per second of each mount.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub storm_rate: u32,
    /// `storm`: how long the storm lasts, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub storm_seconds: u32,
}

/// Runs the storm with the busyprobe at `binary` on `processes` processes of `fds` files.
pub fn run(opts: &StormOptions, processes: usize, fds: usize, binary: &Path) -> Result<ExitCode> {
    let shape = Shape {
        mounts: opts.storm_mounts as usize,
        processes: processes.max(opts.storm_mounts as usize),
        fds,
    };
    let figures = {
        let mounts = Mounts::set_up(&shape)?;
        measure(opts, &mounts, binary)?
        // `mounts` is dropped here: processes killed, tmpfs unmounted, temp dir removed.
    };
    println!("xtask: bench storm: every process and mount it made is gone");
    report(opts, &shape, &figures);
    Ok(ExitCode::SUCCESS)
}

/// Everything measured in one storm.
struct Figures {
    calls: Calls,
    tally: Tally,
    /// `VmRSS` in KiB: before, halfway, at the end, once drained.
    rss: [Option<u64>; 4],
    /// Share of one core over the storm and the drain.
    cpu: Option<f64>,
    /// From the storm's end to the last line.
    drained_in: Option<Duration>,
}

/// Starts `watch`, warms it up, runs the storm, drains, stops `watch`.
fn measure(opts: &StormOptions, mounts: &Mounts, binary: &Path) -> Result<Figures> {
    let clock = WallClock::now();
    let args = [
        OsStr::new("watch"),
        OsStr::new("--json"),
        OsStr::new("--stats-interval"),
        OsStr::new("1"),
        OsStr::new("--path"),
        mounts.dir().as_os_str(),
    ];
    let watch = Tracer::start_watch(binary, args, ATTACH_TIMEOUT)?;
    let pid = watch.pid().as_raw() as u32;
    warm_up(&watch, mounts, clock)?;
    println!(
        "xtask: bench storm: {} mounts × {} EBUSY/s for {} s",
        opts.storm_mounts, opts.storm_rate, opts.storm_seconds
    );
    let mut tally = Tally::new(clock, &mounts.points, &mounts.holders);
    let rss_before = rss_kib(pid);
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    let (calls, rss_middle) = storm(opts, mounts, &watch, &mut tally, pid)?;
    let storm_end = Instant::now();
    let rss_end = rss_kib(pid);
    drain(&watch, &mut tally, calls.total())?;
    let elapsed = started.elapsed().as_secs_f64();
    let rss_drained = rss_kib(pid);
    let cpu = cpu_before
        .zip(cpu_ticks(pid))
        .map(|(before, after)| (after - before) as f64 / clock_ticks_per_sec() / elapsed);
    let (rest, _) = watch.stop();
    for line in &rest {
        tally.add(line);
    }
    Ok(Figures {
        drained_in: tally
            .last_line
            .map(|at| at.saturating_duration_since(storm_end)),
        calls,
        tally,
        rss: [rss_before, rss_middle, rss_end, rss_drained],
        cpu,
    })
}

/// Fails each mount once and waits for the lines (not counted): the first scan loads what
/// every later one reuses.
fn warm_up(watch: &Tracer, mounts: &Mounts, clock: WallClock) -> Result<()> {
    let stdout = watch.stdout().context("watch's stdout is not read")?;
    let mut tally = Tally::new(clock, &mounts.points, &mounts.holders);
    for point in &mounts.points {
        match umount2(point, MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) => {}
            other => bail!("warm-up umount2 {}: {other:?}, not EBUSY", point.display()),
        }
    }
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    while tally.total() < mounts.points.len() as u64 {
        match stdout.next_before(deadline)? {
            Some(line) => tally.add(&line),
            None => bail!(
                "warm-up: {} of {} EBUSY lines after {WARM_UP_TIMEOUT:?}",
                tally.total(),
                mounts.points.len()
            ),
        }
    }
    Ok(())
}

/// Runs the storm on other threads while this one reads `watch`'s lines; returns the calls
/// made and the RSS halfway.
fn storm(
    opts: &StormOptions,
    mounts: &Mounts,
    watch: &Tracer,
    tally: &mut Tally,
    pid: u32,
) -> Result<(Calls, Option<u64>)> {
    let stdout = watch.stdout().context("watch's stdout is not read")?;
    let duration = Duration::from_secs(u64::from(opts.storm_seconds));
    let load = Storm {
        points: &mounts.points,
        per_sec: opts.storm_rate,
        duration,
    };
    let stop = AtomicBool::new(false);
    let halfway = Instant::now() + duration / 2;
    thread::scope(|scope| {
        let running = scope.spawn(|| load.run(&stop));
        let mut rss_middle = None;
        let mut read = Ok(());
        while !running.is_finished() {
            match stdout.next_before(Instant::now() + READ_SLICE) {
                Ok(Some(line)) => tally.add(&line),
                Ok(None) => {}
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    read = Err(e);
                    break;
                }
            }
            if rss_middle.is_none() && Instant::now() >= halfway {
                rss_middle = rss_kib(pid);
            }
        }
        let calls = running.join().expect("the storm's threads panicked");
        read.map(|()| (calls, rss_middle))
    })
}

/// Reads lines until one per call has come, no line came for [`DRAIN_IDLE`], or
/// [`DRAIN_LIMIT`] passed.
fn drain(watch: &Tracer, tally: &mut Tally, calls: u64) -> Result<()> {
    let stdout = watch.stdout().context("watch's stdout is not read")?;
    let limit = Instant::now() + DRAIN_LIMIT;
    while tally.total() < calls {
        interrupt::check()?;
        let idle_until = tally.last_line.unwrap_or_else(Instant::now) + DRAIN_IDLE;
        match stdout.next_before(idle_until.min(limit))? {
            Some(line) => tally.add(&line),
            None => return Ok(()),
        }
    }
    Ok(())
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` of `pid`, in clock ticks (fields 14 and 15 of `/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Prints the table, notes and goals.
fn report(opts: &StormOptions, shape: &Shape, f: &Figures) {
    let made = f.calls.total();
    let missing: u64 = f
        .calls
        .ebusy
        .iter()
        .zip(&f.tally.lines)
        .map(|(&calls, &lines)| calls.saturating_sub(lines))
        .sum();
    let lag = |q: f64| quantile(&f.tally.lags, q).map_or("-".into(), ms);
    let rss = |kib: Option<u64>| kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    let rows = vec![
        vec!["".to_string(), "figure".into()],
        vec!["EBUSY calls made".into(), thousands(made)],
        vec![
            "EBUSY lines read".into(),
            format!(
                "{} ({} missing)",
                thousands(f.tally.total()),
                thousands(missing)
            ),
        ],
        vec![
            "lines naming the mount's holder".into(),
            format!(
                "{} ({:.1}%)",
                thousands(f.tally.attributed),
                100.0 * f.tally.attributed as f64 / f.tally.total().max(1) as f64
            ),
        ],
        vec![
            "lag p50 / p99 / max".into(),
            format!("{} / {} / {}", lag(0.5), lag(0.99), lag(1.0)),
        ],
        vec![
            "last line after the storm's end".into(),
            f.drained_in.map_or("-".into(), ms),
        ],
        vec![
            "RSS MiB: before / halfway / end / drained".into(),
            format!(
                "{} / {} / {} / {}",
                rss(f.rss[0]),
                rss(f.rss[1]),
                rss(f.rss[2]),
                rss(f.rss[3])
            ),
        ],
        vec![
            "CPU (storm and drain)".into(),
            f.cpu
                .map_or("-".into(), |c| format!("{:.0}% of one core", 100.0 * c)),
        ],
        vec![
            "drops (last stats line)".into(),
            f.tally
                .drops
                .clone()
                .unwrap_or_else(|| "no stats line".into()),
        ],
    ];
    let mut notes = vec![
        format!("machine: {}", machine()),
        format!(
            "{} held tmpfs mounts × {} failing umount2/s for {} s, among {} processes × {} open \
             files; `busyprobe watch --json --path <the mounts' temp dir>`; lag = read time − \
             the line's ts",
            shape.mounts, opts.storm_rate, opts.storm_seconds, shape.processes, shape.fds
        ),
    ];
    if f.calls.other > 0 {
        notes.push(format!(
            "{} calls did not fail with EBUSY (a fault of the workload)",
            f.calls.other
        ));
    }
    notes.extend(f.tally.problems.iter().cloned());
    let p99 = quantile(&f.tally.lags, 0.99);
    let growth = f.rss[0]
        .zip(f.rss[2])
        .map(|(before, end)| end as f64 / before.max(1) as f64);
    let goals = vec![
        format!(
            "every EBUSY a line naming its holder: {}",
            verdict(missing == 0 && f.tally.attributed == made)
        ),
        format!(
            "p99 lag ≤ {}: {}",
            ms(GOAL_P99),
            verdict(p99.is_some_and(|p| p <= GOAL_P99))
        ),
        format!(
            "RSS flat (end ≤ ×{GOAL_RSS_GROWTH:.2} of before): ×{:.2} — {}",
            growth.unwrap_or(f64::NAN),
            verdict(growth.is_some_and(|g| g <= GOAL_RSS_GROWTH))
        ),
    ];
    print_report("busyprobe watch in an EBUSY storm", &rows, &notes, &goals);
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(20_000), "20,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
