//! `cargo xtask bench record`: how many unmount events per second `busyprobe record` writes
//! to a recording, and whether it loses any.
//!
//! Two threads per CPU fail `umount2` on a plain directory (EINVAL, the cheapest attempt the
//! probes see) as fast as they can for a few seconds: first with no tracer (the baseline
//! rate), then with `busyprobe record` running. The recording is then read back: the events
//! it holds for that directory, per second, and the drop counters of its final `stats` line.

use std::{
    ffi::OsStr,
    path::Path,
    process::ExitCode,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::mount::{umount2, MntFlags};
use serde_json::Value;

use super::{
    scratch::TempDir,
    table::{machine, print_report, verdict},
    tracer::{Stdout, Tracer},
    tui_cpu,
};

/// How long each phase hammers `umount2`.
pub const PHASE: Duration = Duration::from_secs(3);
/// The goal: events recorded per second, with none lost.
const GOAL_EVENTS_PER_SEC: f64 = 100_000.0;

/// Runs the benchmark with the busyprobe at `binary`.
pub fn run(binary: &Path) -> Result<ExitCode> {
    let dir = TempDir::create()?;
    let plain = dir.path.join("plain");
    std::fs::create_dir(&plain)?;
    let threads = 2 * std::thread::available_parallelism().map_or(1, usize::from);

    println!("xtask: bench record: {threads} threads failing umount2 for {PHASE:?}, no tracer");
    let baseline = hammer(&plain, threads, None);
    let goal = GOAL_EVENTS_PER_SEC as u64;
    let paced = recorded_run(binary, &dir.path, &plain, threads, Some(goal))?;
    let flood = recorded_run(binary, &dir.path, &plain, threads, None)?;

    let rate = |n: u64| n as f64 / PHASE.as_secs_f64();
    let row = |name: &str, run: &Run| {
        let calls = match run.paced {
            true => format!("{:.0} (paced)", rate(run.calls)),
            false => format!(
                "{:.0} (×{:.2} of baseline)",
                rate(run.calls),
                rate(run.calls) / rate(baseline)
            ),
        };
        vec![
            name.to_string(),
            calls,
            format!(
                "{:.0} ({:.1}% of calls)",
                rate(run.recorded),
                100.0 * run.recorded as f64 / run.calls.max(1) as f64
            ),
            run.drops.clone(),
        ]
    };
    let rows = vec![
        vec![
            "".into(),
            "umount2 calls/s".into(),
            "events recorded/s".into(),
            "events lost".into(),
        ],
        vec![
            "no tracer, as fast as possible (baseline)".into(),
            format!("{:.0}", rate(baseline)),
            "-".into(),
            "-".into(),
        ],
        row("`record`, calls paced at 100,000/s", &paced),
        row("`record`, as fast as possible", &flood),
    ];
    let lossless = paced.drops == "none" && paced.recorded == paced.calls;
    let goals = vec![format!(
        "≥ {goal} events/s recorded with none lost: {:.0}/s recorded of {:.0}/s made, {} — {}",
        rate(paced.recorded),
        rate(paced.calls),
        if lossless { "none lost" } else { "some lost" },
        verdict(lossless && rate(paced.recorded) >= 0.99 * GOAL_EVENTS_PER_SEC)
    )];
    let notes = vec![
        format!("machine: {}", machine()),
        "calls are EINVAL umount2 on a plain directory; the recording is read back and only \
         its lines for that directory are counted; losses from its final stats line"
            .into(),
    ];
    print_report("busyprobe record throughput", &rows, &notes, &goals);
    report_tui_cpu(binary, &dir.path, |rate| hammer(&plain, threads, rate));
    Ok(ExitCode::SUCCESS)
}

/// The second half: the `top` view's CPU at 10,000 events/s, against `record`'s.
fn report_tui_cpu(binary: &Path, dir: &Path, hammer: impl Fn(Option<u64>) -> u64) {
    let shares = match tui_cpu::measure(binary, dir, hammer) {
        Ok(shares) => shares,
        Err(e) => {
            println!("xtask: bench record: the top view's CPU was not measured: {e:#}");
            return;
        }
    };
    let percent = |share: f64| format!("{:.1}% of one core", 100.0 * share);
    let rows = vec![
        vec!["at 10,000 unmount events/s".to_string(), "CPU".into()],
        vec![
            "the view alone: `busyprobe replay -`, synthetic stream".into(),
            percent(shares.view),
        ],
        vec![
            "`busyprobe record` (the live stream, no view)".into(),
            percent(shares.record),
        ],
        vec![
            "`busyprobe top` (the live stream and the view)".into(),
            percent(shares.top),
        ],
    ];
    let goals = vec![format!(
        "the view ≤ {:.0}% of one core at {} events/s (synthetic source): {} ({}); live top \
         is {} (×{:.2} of record's)",
        100.0 * tui_cpu::GOAL_SHARE,
        tui_cpu::EVENTS_PER_SEC,
        verdict(shares.view <= tui_cpu::GOAL_SHARE),
        percent(shares.view),
        percent(shares.top),
        shares.top / shares.record.max(f64::MIN_POSITIVE)
    )];
    let notes = vec![
        "CPU: utime + stime of the process over the phase, from /proc/PID/stat".to_string(),
        "top's figure includes its whole stream (probes' ring buffer, decoding, attribution), \
         like record's, plus the view"
            .into(),
    ];
    print_report("busyprobe top CPU", &rows, &notes, &goals);
}

/// One phase with `busyprobe record` running.
struct Run {
    paced: bool,
    calls: u64,
    recorded: u64,
    drops: String,
}

/// Starts `busyprobe record`, hammers, stops it, reads the recording back.
fn recorded_run(
    binary: &Path,
    dir: &Path,
    plain: &Path,
    threads: usize,
    per_sec: Option<u64>,
) -> Result<Run> {
    let file = dir.join(format!("bench-{}.jsonl", per_sec.unwrap_or(0)));
    let record = Tracer::start(
        binary,
        [
            OsStr::new("record"),
            OsStr::new("-o"),
            file.as_os_str(),
            OsStr::new("--stats-interval"),
            OsStr::new("1"),
        ],
        Stdout::Null,
    )?;
    record.wait_for_stderr("probes attached", Duration::from_secs(30))?;
    let pace = per_sec.map_or("as fast as possible".into(), |n| format!("paced at {n}/s"));
    println!(
        "xtask: bench record: umount2 {pace} with `busyprobe record -o {}`",
        file.display()
    );
    let calls = hammer(plain, threads, per_sec);
    record.stop();
    let (recorded, drops) = read_back(&file, plain)?;
    Ok(Run {
        paced: per_sec.is_some(),
        calls,
        recorded,
        drops,
    })
}

/// Fails `umount2(plain)` from `threads` threads for [`PHASE`], as fast as possible or
/// `per_sec` in all (each thread its share); returns the calls made.
fn hammer(plain: &Path, threads: usize, per_sec: Option<u64>) -> u64 {
    hammer_for(plain, threads, per_sec, PHASE)
}

/// [`hammer`] for `phase`.
pub fn hammer_for(plain: &Path, threads: usize, per_sec: Option<u64>, phase: Duration) -> u64 {
    let calls = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let per_thread = per_sec.map(|n| (n / threads as u64).max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut n = 0u64;
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let _ = umount2(plain, MntFlags::empty());
                    n += 1;
                    if let Some(per_thread) = per_thread {
                        // Ahead of the pace: wait for the moment this call was due.
                        let due = Duration::from_nanos(n * 1_000_000_000 / per_thread);
                        if let Some(early) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(early);
                        }
                    }
                }
                calls.fetch_add(n, Ordering::Relaxed);
            });
        }
        let started = Instant::now();
        std::thread::sleep(phase.saturating_sub(started.elapsed()));
        stop.store(true, Ordering::Relaxed);
    });
    calls.into_inner()
}

/// The recording's events for `plain`, and its final drop counters (`none`, or `cause n, ...`).
fn read_back(file: &Path, plain: &Path) -> Result<(u64, String)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let target = plain.to_str().context("a UTF-8 temp path")?;
    let mut recorded = 0;
    let mut drops = "no final stats line".to_string();
    for line in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        match line["type"].as_str() {
            Some("umount") if line["target"] == target => recorded += 1,
            Some("stats") => drops = describe_drops(&line["drops"]),
            _ => {}
        }
    }
    Ok((recorded, drops))
}

/// Drop counters as `none` or `cause n, ...`.
pub fn describe_drops(drops: &Value) -> String {
    let lost: Vec<String> = drops
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
        .map(|(cause, n)| format!("{cause} {n}"))
        .collect();
    if lost.is_empty() {
        "none".into()
    } else {
        lost.join(", ")
    }
}
