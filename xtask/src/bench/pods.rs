//! `cargo xtask bench pods`: what pod names cost, with 200 containers on a real containerd
//! (issue 17's goals).
//!
//! The node is the integration test binary in its `BUSYPROBE_PODBENCH` mode ([`node`]): the
//! containerd fixture of the containerd trials, run rather than copied, with one pod whose
//! container holds a file on a volume of the node and `--pods-count` pods of
//! `--pods-containers` created containers. Then:
//!
//! * **latency**: `--pods-rounds` rounds, each one `watch --json --only-failed` with the
//!   node's `--cri-socket` and one with `--cri-socket none`, in alternating order; each watch
//!   sees a first EBUSY right after it attached (cold), `--pods-ebusys` more (warm) and a
//!   *miss* (a failing unmount from inside a container started just before: no listing named
//!   it yet). The lag of a line runs from its call's return (`ts` + `duration_ns`) to when the
//!   benchmark read it; the goal compares the warm medians;
//! * **hot path**: a `watch --json` with the CRI sees `--pods-churn` successful unmounts by a
//!   process in the holder's container (its mount namespace and cgroups) and as many by a
//!   host process; busyprobe logs each CRI listing (at debug level, the `kubernetes` module
//!   only), and the benchmark counts them;
//! * **memory**: each watch's `VmRSS`/`VmHWM` after its miss (its listings done), and the
//!   directory's own count of its heap, logged with each listing.

mod node;
mod watch;

use std::{
    path::Path,
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::Value;

use self::{
    node::Node,
    watch::{Cri, PodWatch},
};
use super::{
    interrupt,
    table::{machine, print_report, verdict},
};

/// Pause between two failing unmounts.
const PAUSE: Duration = Duration::from_millis(100);
/// Wait after a watch's last EBUSY, so that the listings its passes started are done.
const SETTLE: Duration = Duration::from_millis(500);
/// How long the hot path waits for another line before it stops counting.
const IDLE: Duration = Duration::from_secs(10);
/// The goals of issue 17.
const GOAL_ADDED: Duration = Duration::from_millis(5);
const GOAL_LISTINGS: u64 = 1;
const GOAL_MEMORY_KIB: i64 = 2 * 1024;

/// Options of the `pods` benchmark.
#[derive(clap::Args)]
pub struct PodsOptions {
    /// `pods`: pods of created containers, besides the holder's.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub pods_count: u32,
    /// `pods`: created containers in each of those pods.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub pods_containers: u32,
    /// `pods`: rounds, each a watch with the CRI and one without.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub pods_rounds: u32,
    /// `pods`: warm EBUSYs of each watch, after its first.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub pods_ebusys: u32,
    /// `pods`: successful unmounts in a pod, and as many on the host, for the hot path.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub pods_churn: u64,
}

/// Runs the benchmark with `busyprobe` and the integration test binary `tests`.
pub fn run(opts: &PodsOptions, busyprobe: &Path, tests: &Path) -> Result<ExitCode> {
    println!(
        "xtask: bench pods: starting containerd with {} pods × {} containers (and the holder's \
         pod)",
        opts.pods_count, opts.pods_containers
    );
    let figures = {
        let mut node = Node::start(tests, opts.pods_count, opts.pods_containers)?;
        println!(
            "xtask: bench pods: {} containers in {} pods made in {:.0} s",
            node.made.containers,
            node.made.pods,
            node.made.setup.as_secs_f64()
        );
        measure(opts, busyprobe, &mut node)?
        // `node` is dropped here: it removes its pods, containers, processes and mounts.
    };
    println!("xtask: bench pods: every process, container and mount it made is gone");
    report(opts, &figures);
    Ok(ExitCode::SUCCESS)
}

/// What one watch saw.
#[derive(Default)]
struct Block {
    cold: Option<Duration>,
    warm: Vec<Duration>,
    miss: Option<Duration>,
    /// Lines whose holder (and, for the miss, caller) carried the expected pod names.
    named: u64,
    lines: u64,
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    listings: u64,
    heap: Option<u64>,
}

/// The hot path's counts.
#[derive(Default)]
struct Hot {
    pod_made: u64,
    pod_lines: u64,
    pod_named: u64,
    host_made: u64,
    host_lines: u64,
    host_unnamed: u64,
    listings_during: u64,
}

/// Everything measured.
struct Figures {
    containers: u64,
    pods: u64,
    with: Vec<Block>,
    without: Vec<Block>,
    hot: Hot,
}

fn measure(opts: &PodsOptions, busyprobe: &Path, node: &mut Node) -> Result<Figures> {
    let socket = Cri::Socket(node.made.socket.clone());
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..opts.pods_rounds {
        let order = if round % 2 == 0 {
            [&socket, &Cri::Off]
        } else {
            [&Cri::Off, &socket]
        };
        for cri in order {
            interrupt::check()?;
            let block = block(opts, busyprobe, node, cri)?;
            println!(
                "xtask: bench pods: round {} {}: cold {}, warm median {}, miss {}",
                round + 1,
                mode(cri),
                ms_opt(block.cold),
                ms_opt(median(&block.warm)),
                ms_opt(block.miss)
            );
            match cri {
                Cri::Socket(_) => with.push(block),
                Cri::Off => without.push(block),
            }
        }
    }
    println!(
        "xtask: bench pods: hot path: {} unmounts in a pod and {} on the host",
        opts.pods_churn, opts.pods_churn
    );
    let hot = hot_path(opts, busyprobe, node, &socket)?;
    Ok(Figures {
        containers: node.made.containers,
        pods: node.made.pods,
        with,
        without,
        hot,
    })
}

fn mode(cri: &Cri) -> &'static str {
    match cri {
        Cri::Socket(_) => "with the CRI",
        Cri::Off => "--cri-socket none",
    }
}

/// One watch: a cold EBUSY, the warm ones, a miss, then its memory and listings.
fn block(opts: &PodsOptions, busyprobe: &Path, node: &mut Node, cri: &Cri) -> Result<Block> {
    let mut watch = PodWatch::start(busyprobe, cri, true)?;
    let (holder_pid, holder_pod) = (node.made.holder_pid, node.made.holder_pod.clone());
    let named = |line: &Value| -> bool {
        let holders = line["holders"].as_array().cloned().unwrap_or_default();
        holders.iter().any(|h| {
            h["pid"].as_u64() == Some(u64::from(holder_pid))
                && h["k8s"]["pod"] == holder_pod.as_str()
        })
    };
    let mut b = Block::default();
    for n in 0..=opts.pods_ebusys {
        if n > 0 {
            thread::sleep(PAUSE);
        }
        let pid = node.ebusy()?;
        let seen = watch.ebusy_of(pid)?;
        b.lines += 1;
        b.named += u64::from(named(&seen.line));
        if n == 0 {
            b.cold = Some(seen.lag);
        } else {
            b.warm.push(seen.lag);
        }
    }
    thread::sleep(PAUSE);
    let (pid, id) = node.miss()?;
    let seen = watch.ebusy_of(pid)?;
    b.miss = Some(seen.lag);
    b.lines += 1;
    let caller_named = seen.line["container"]["id"] == id.as_str()
        && seen.line["k8s"]["pod"] == holder_pod.as_str();
    b.named += u64::from(named(&seen.line) && caller_named);
    thread::sleep(SETTLE);
    (b.rss_kib, b.hwm_kib) = watch.memory_kib();
    b.heap = watch.heap();
    b.listings = watch.stop();
    Ok(b)
}

/// Successful unmounts in a pod and on the host under a watch with the CRI whose cache is
/// warm: the listings it made meanwhile, and the names on their lines.
fn hot_path(opts: &PodsOptions, busyprobe: &Path, node: &mut Node, cri: &Cri) -> Result<Hot> {
    let mut watch = PodWatch::start(busyprobe, cri, false)?;
    let pid = node.ebusy()?;
    watch.ebusy_of(pid)?;
    thread::sleep(SETTLE);
    let before = watch.listings();
    let started = Instant::now();
    let mut hot = Hot::default();
    let (made, pid) = node.churn("pod", opts.pods_churn)?;
    let lines = watch.umount_lines_of(&[pid], made, IDLE)?;
    hot.pod_made = made;
    hot.pod_lines = lines.iter().filter(|l| l["ret"] == 0).count() as u64;
    hot.pod_named = lines
        .iter()
        .filter(|l| l["ret"] == 0 && l["k8s"]["pod"] == node.made.holder_pod.as_str())
        .count() as u64;
    let (made, pid) = node.churn("host", opts.pods_churn)?;
    let lines = watch.umount_lines_of(&[pid], made, IDLE)?;
    hot.host_made = made;
    hot.host_lines = lines.iter().filter(|l| l["ret"] == 0).count() as u64;
    hot.host_unnamed = lines
        .iter()
        .filter(|l| l["ret"] == 0 && l["k8s"].is_null() && l["container"].is_null())
        .count() as u64;
    hot.listings_during = watch.stop() - before;
    println!(
        "xtask: bench pods: hot path done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(hot)
}

/// The median of the blocks' `pick`.
fn median_of(blocks: &[Block], pick: impl Fn(&Block) -> Vec<Duration>) -> Option<Duration> {
    let all: Vec<Duration> = blocks.iter().flat_map(pick).collect();
    median(&all)
}

/// The median of `values` (the lower one of an even count), `None` when empty.
fn median(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// The median of the blocks' `pick` (KiB or bytes).
fn median_u64(blocks: &[Block], pick: impl Fn(&Block) -> Option<u64>) -> Option<u64> {
    let mut all: Vec<u64> = blocks.iter().filter_map(pick).collect();
    all.sort_unstable();
    all.get(all.len().saturating_sub(1) / 2).copied()
}

fn report(opts: &PodsOptions, f: &Figures) {
    let warm = |b: &[Block]| median_of(b, |b| b.warm.clone());
    let cold = |b: &[Block]| median_of(b, |b| b.cold.into_iter().collect());
    let miss = |b: &[Block]| median_of(b, |b| b.miss.into_iter().collect());
    let diff = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => format!("{:+.1} ms", ms_f(a) - ms_f(b)),
        _ => "-".into(),
    };
    let kib = |b: &[Block], pick: fn(&Block) -> Option<u64>| median_u64(b, pick);
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let kdiff = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:+} KiB", a as i64 - b as i64),
        _ => "-".into(),
    };
    let sum = |b: &[Block], pick: fn(&Block) -> u64| b.iter().map(pick).sum::<u64>();
    let (w, o) = (&f.with[..], &f.without[..]);
    let (rss_w, rss_o) = (kib(w, |b| b.rss_kib), kib(o, |b| b.rss_kib));
    let (hwm_w, hwm_o) = (kib(w, |b| b.hwm_kib), kib(o, |b| b.hwm_kib));
    let heap = median_u64(w, |b| b.heap);
    let rows = vec![
        vec![
            String::new(),
            format!("--cri-socket (containerd, {} containers)", f.containers),
            "--cri-socket none".into(),
            "difference".into(),
        ],
        vec![
            format!(
                "EBUSY → line, warm (median of {})",
                w.iter().map(|b| b.warm.len()).sum::<usize>()
            ),
            ms_opt(warm(w)),
            ms_opt(warm(o)),
            diff(warm(w), warm(o)),
        ],
        vec![
            format!("first EBUSY after start (median of {})", w.len()),
            ms_opt(cold(w)),
            ms_opt(cold(o)),
            diff(cold(w), cold(o)),
        ],
        vec![
            format!(
                "miss: caller in a just-started container (median of {})",
                w.len()
            ),
            ms_opt(miss(w)),
            ms_opt(miss(o)),
            diff(miss(w), miss(o)),
        ],
        vec![
            "lines naming the holder's pod".into(),
            format!("{} of {}", sum(w, |b| b.named), sum(w, |b| b.lines)),
            format!("{} of {}", sum(o, |b| b.named), sum(o, |b| b.lines)),
            String::new(),
        ],
        vec![
            "CRI listings per watch (median)".into(),
            median_u64(w, |b| Some(b.listings)).map_or("-".into(), |n| n.to_string()),
            median_u64(o, |b| Some(b.listings)).map_or("-".into(), |n| n.to_string()),
            String::new(),
        ],
        vec![
            "VmRSS after the listings (median)".into(),
            mib(rss_w),
            mib(rss_o),
            kdiff(rss_w, rss_o),
        ],
        vec![
            "VmHWM (median)".into(),
            mib(hwm_w),
            mib(hwm_o),
            kdiff(hwm_w, hwm_o),
        ],
        vec![
            "the directory's heap count (its log)".into(),
            heap.map_or("-".into(), |b| format!("{:.1} KiB", b as f64 / 1024.0)),
            "-".into(),
            String::new(),
        ],
        vec![
            format!(
                "{} unmounts in a pod: lines / named with the pod",
                f.hot.pod_made
            ),
            format!("{} / {}", f.hot.pod_lines, f.hot.pod_named),
            "-".into(),
            String::new(),
        ],
        vec![
            format!("{} host unmounts: lines / without a pod", f.hot.host_made),
            format!("{} / {}", f.hot.host_lines, f.hot.host_unnamed),
            "-".into(),
            String::new(),
        ],
        vec![
            "CRI listings during those unmounts".into(),
            f.hot.listings_during.to_string(),
            "-".into(),
            String::new(),
        ],
    ];
    let notes = vec![
        format!("machine: {}", machine()),
        format!(
            "containerd 1.6 (the integration tests' fixture) with {} containers in {} pods: \
             {} pods × {} created containers, and a started container holding a file on a \
             volume of the node (HostToContainer); {} rounds of a watch with the CRI and one \
             without, alternating; lag = read time − (the line's ts + duration_ns)",
            f.containers, f.pods, opts.pods_count, opts.pods_containers, opts.pods_rounds
        ),
        "the first EBUSY comes right after `probes attached` (the start-up listing may still \
         run); a miss's caller is in a container started just before, unknown to every \
         listing so far, so the pass waits for one"
            .into(),
    ];
    let added = warm(w).zip(warm(o)).map(|(a, b)| a.saturating_sub(b));
    let mem = rss_w.zip(rss_o).map(|(a, b)| a as i64 - b as i64);
    let hot = &f.hot;
    let goals = vec![
        format!(
            "pod names add ≤ {} to an EBUSY's line (difference of warm medians): {} — {}",
            ms(GOAL_ADDED),
            diff(warm(w), warm(o)),
            verdict(added.is_some_and(|a| a <= GOAL_ADDED))
        ),
        format!(
            "no CRI call on the hot path of successful unmounts (≤ {GOAL_LISTINGS} listing \
             during {} of them, each pod line named from the cache): {} listings, {} of {} \
             named — {}",
            hot.pod_made + hot.host_made,
            hot.listings_during,
            hot.pod_named,
            hot.pod_made,
            verdict(
                hot.listings_during <= GOAL_LISTINGS
                    && hot.pod_named == hot.pod_made
                    && hot.host_unnamed == hot.host_made
            )
        ),
        format!(
            "cache memory for {} containers ≤ 2 MiB: VmRSS {} with the CRI; the directory's \
             own count {} — {}",
            f.containers,
            kdiff(rss_w, rss_o),
            heap.map_or("-".into(), |b| format!("{:.1} KiB", b as f64 / 1024.0)),
            verdict(
                mem.is_some_and(|m| m <= GOAL_MEMORY_KIB)
                    && heap.is_some_and(|h| h <= (GOAL_MEMORY_KIB as u64) << 10)
            )
        ),
    ];
    print_report(
        "busyprobe with pod names, 200 containers under containerd",
        &rows,
        &notes,
        &goals,
    );
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", ms_f(d))
}

fn ms_opt(d: Option<Duration>) -> String {
    d.map_or("-".into(), ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_over_blocks() {
        let block = |warm: &[u64], rss: u64| Block {
            warm: warm.iter().map(|&m| Duration::from_millis(m)).collect(),
            rss_kib: Some(rss),
            ..Block::default()
        };
        let blocks = [block(&[1, 9], 10), block(&[5], 30), block(&[7], 20)];
        assert_eq!(
            median_of(&blocks, |b| b.warm.clone()),
            Some(Duration::from_millis(5))
        );
        assert_eq!(median_u64(&blocks, |b| b.rss_kib), Some(20));
        assert_eq!(median_u64(&[], |b| b.rss_kib), None);
    }
}
