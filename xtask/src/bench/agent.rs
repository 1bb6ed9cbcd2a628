//! `cargo xtask bench agent`: what the node agent costs when it runs for good.
//!
//! `busyprobe agent` records, serves metrics and streams to two live clients (`busyprobe
//! watch --connect --json` and a raw reader of the socket) while unmount calls arrive at a
//! steady rate (EINVAL on a plain directory, plus one EBUSY a second on a held tmpfs, which is
//! attributed) for several minutes, its metrics scraped every second. Sampled every second:
//! the agent's RSS (`VmRSS`) and CPU time (`/proc/PID/stat`), and how long each scrape took.
//! Then, with everything still on, the `record` benchmark's throughput phase: calls paced at
//! 100,000/s for a few seconds, the events recorded and lost.

use std::{
    ffi::OsStr,
    fs::File,
    io::Read,
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::mount::{umount2, MntFlags};

use super::{
    prometheus::{free_loopback, sample_value, scrape},
    record::{describe_drops, hammer_for, PHASE},
    scratch::{Mount, TempDir},
    table::{machine, print_report, verdict},
    tracer::{Stdout, Tracer},
};

/// Options of `cargo xtask bench agent`.
#[derive(clap::Args)]
pub struct AgentOptions {
    /// How long the steady phase runs, in seconds.
    #[arg(long = "agent-seconds", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub seconds: u64,
    /// Unmount calls per second in the steady phase.
    #[arg(long = "agent-rate", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,
    /// Seconds between the EBUSY failures (each attributed: a scan of every task) in the
    /// steady phase; 0 for none.
    #[arg(long = "agent-busy-every", default_value_t = 1)]
    pub busy_every: u64,
}

/// The goals of the issue: RSS flat (last minute within 5% of the first) and at most this.
const GOAL_RSS_BYTES: u64 = 50 << 20;
const GOAL_RSS_DRIFT: f64 = 0.05;
/// CPU: a share of one core.
const GOAL_CPU_SHARE: f64 = 0.03;
/// A scrape's answer (the 99th percentile).
const GOAL_SCRAPE: Duration = Duration::from_millis(5);
/// The throughput phase's pace, and the `record` benchmark's goal.
const THROUGHPUT_PER_SEC: u64 = 100_000;
/// Samples are grouped by minute for the RSS drift (or by a fifth of a shorter run).
const WINDOW: Duration = Duration::from_secs(60);

/// The clients' lost-lines counter.
const LOST: &str = "busyprobe_client_lines_lost_total";

/// What the two clients got.
struct Clients {
    watch_lines: u64,
    raw_lines: u64,
    /// Lines they lost in the steady phase, and in the burst.
    steady_lost: u64,
    burst_lost: u64,
}

/// One second's sample of the agent.
struct Sample {
    rss: u64,
    cpu_ticks: u64,
    scrape: Duration,
}

/// Runs the benchmark with the busyprobe at `binary`.
pub fn run(opts: &AgentOptions, binary: &Path) -> Result<ExitCode> {
    super::warn_if_busy();
    let dir = TempDir::create()?;
    let plain = dir.path.join("plain");
    let burst = dir.path.join("burst");
    let held = dir.path.join("held");
    for d in [&plain, &burst, &held] {
        std::fs::create_dir(d)?;
    }
    let _tmpfs = Mount::tmpfs(&held, "size=1m")?;
    let _holding = File::create(held.join("open"))?;
    let metrics = free_loopback()?;
    let socket = dir.path.join("agent.sock");
    let recording = dir.path.join("agent.jsonl");
    let agent = start_agent(binary, &dir.path, &recording, metrics, &socket)?;
    // The clients connect before the first line (the socket is bound before the probes load),
    // so that they must get every line of the recording.
    let raw = std::thread::spawn({
        let stream = UnixStream::connect(&socket).context("connecting to the agent's socket")?;
        move || count_lines(stream)
    });
    let watch = Tracer::start(
        binary,
        [
            OsStr::new("watch"),
            "--json".as_ref(),
            "--connect".as_ref(),
            socket.as_os_str(),
        ],
        Stdout::Lines,
    )?;
    agent.wait_for_stderr("probes attached", Duration::from_secs(60))?;
    let steady = Duration::from_secs(opts.seconds);
    println!(
        "xtask: bench agent: {} umount2/s (EINVAL) and 1 EBUSY/s for {steady:?}, metrics scraped \
         every second, two clients attached",
        opts.rate
    );
    let pid = agent.pid().as_raw() as u32;
    let (calls, samples) = std::thread::scope(|scope| {
        let load = scope.spawn(|| hammer_for(&plain, 1, Some(opts.rate), steady));
        let sampled = sample(pid, metrics, (&held, opts.busy_every), steady, &watch);
        (load.join(), sampled)
    });
    let calls = calls.map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    let (samples, mut watch_lines) = samples?;
    let steady_lost = sample_value(&scrape(metrics)?.1, LOST)?;
    println!("xtask: bench agent: {THROUGHPUT_PER_SEC} umount2/s for {PHASE:?}, everything on");
    let threads = 2 * std::thread::available_parallelism().map_or(1, usize::from);
    let burst_calls = hammer_for(&burst, threads, Some(THROUGHPUT_PER_SEC), PHASE);
    let burst_lost = sample_value(&scrape(metrics)?.1, LOST)? - steady_lost;
    agent.stop();
    let (watch_rest, _) = watch.stop();
    watch_lines += watch_rest.len() as u64;
    let raw_lines = raw
        .join()
        .map_err(|_| anyhow::anyhow!("the raw reader panicked"))??;
    let read = ReadBack::of(&recording, &plain, &burst)?;
    let clients = Clients {
        watch_lines,
        raw_lines,
        steady_lost,
        burst_lost,
    };
    report(opts, &samples, calls, burst_calls, &read, &clients);
    Ok(ExitCode::SUCCESS)
}

/// `busyprobe agent` with everything on, scoped to `dir`; returned once its socket is there.
fn start_agent(
    binary: &Path,
    dir: &Path,
    recording: &Path,
    metrics: SocketAddr,
    socket: &Path,
) -> Result<Tracer> {
    let metrics = metrics.to_string();
    let agent = Tracer::start(
        binary,
        [
            OsStr::new("agent"),
            "-o".as_ref(),
            recording.as_os_str(),
            "--metrics".as_ref(),
            metrics.as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--path".as_ref(),
            dir.as_os_str(),
            "--stats-interval".as_ref(),
            "1".as_ref(),
        ],
        Stdout::Null,
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        super::interrupt::check()?;
        if Instant::now() > deadline {
            bail!("the agent made no socket at {}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(agent)
}

/// Lines read from `stream` until it ends.
fn count_lines(mut stream: UnixStream) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(lines),
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the agent's socket"),
        }
    }
}

/// Every second for `steady`: a scrape, the agent's RSS and CPU, and every `busy_every`
/// seconds an EBUSY on `held`; and the lines `watch` printed meanwhile.
fn sample(
    pid: u32,
    metrics: SocketAddr,
    (held, busy_every): (&Path, u64),
    steady: Duration,
    watch: &Tracer,
) -> Result<(Vec<Sample>, u64)> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut watch_lines = 0;
    while started.elapsed() < steady {
        super::interrupt::check()?;
        let tick = Instant::now();
        let busy_now = busy_every > 0 && (samples.len() as u64).is_multiple_of(busy_every);
        if busy_now && umount2(held, MntFlags::empty()) != Err(nix::errno::Errno::EBUSY) {
            bail!("the held tmpfs did not fail with EBUSY");
        }
        let (scrape, _) = scrape(metrics)?;
        samples.push(Sample {
            rss: rss_bytes(pid)?,
            cpu_ticks: cpu_ticks(pid)?,
            scrape,
        });
        watch_lines += watch.stdout().map_or(0, |l| l.drain().len() as u64);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    Ok((samples, watch_lines))
}

/// `VmRSS` of `pid`, in bytes.
fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// `utime + stime` of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3; utime 14.
    let after = stat.rsplit_once(')').context("a stat line")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> { Ok(fields.get(n - 3).context("short stat")?.parse()?) };
    Ok(field(14)? + field(15)?)
}

/// What the recording holds.
struct ReadBack {
    lines: u64,
    steady: u64,
    burst: u64,
    drops: String,
}

impl ReadBack {
    /// One pass over the recording (hundreds of MB after minutes), line by line.
    fn of(recording: &Path, plain: &Path, burst: &Path) -> Result<Self> {
        use std::io::BufRead as _;
        let steady = format!(r#""target":"{}""#, plain.display());
        let bursting = format!(r#""target":"{}""#, burst.display());
        let file =
            File::open(recording).with_context(|| format!("reading {}", recording.display()))?;
        let mut read = Self {
            lines: 0,
            steady: 0,
            burst: 0,
            drops: "no final stats line".into(),
        };
        let mut last_stats = String::new();
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            read.lines += 1;
            read.steady += u64::from(line.contains(&steady));
            read.burst += u64::from(line.contains(&bursting));
            if line.contains(r#""type":"stats""#) {
                last_stats = line;
            }
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&last_stats) {
            read.drops = describe_drops(&v["drops"]);
        }
        Ok(read)
    }
}

/// Mean RSS of the first and the last window of samples.
fn rss_ends(samples: &[Sample]) -> (u64, u64) {
    let per_window = (WINDOW.as_secs() as usize).min(samples.len() / 5).max(1);
    let mean = |s: &[Sample]| s.iter().map(|s| s.rss).sum::<u64>() / s.len().max(1) as u64;
    (
        mean(&samples[..per_window]),
        mean(&samples[samples.len() - per_window..]),
    )
}

/// The `p`th percentile of `values` (sorted here).
fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort_unstable();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or_default()
}

fn report(
    opts: &AgentOptions,
    samples: &[Sample],
    calls: u64,
    burst_calls: u64,
    read: &ReadBack,
    clients: &Clients,
) {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let (first, last) = rss_ends(samples);
    let peak = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let drift = (last as f64 - first as f64) / first.max(1) as f64;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let used =
        samples.last().map_or(0, |s| s.cpu_ticks) - samples.first().map_or(0, |s| s.cpu_ticks);
    let cpu = used as f64 / ticks / samples.len().saturating_sub(1).max(1) as f64;
    let mut scrapes: Vec<Duration> = samples.iter().map(|s| s.scrape).collect();
    let p50 = percentile(&mut scrapes, 0.5);
    let p99 = percentile(&mut scrapes, 0.99);
    let max = scrapes.last().copied().unwrap_or_default();
    let burst_rate = read.burst as f64 / PHASE.as_secs_f64();
    let rows = vec![
        vec!["measure".to_string(), "value".into()],
        vec![
            format!(
                "steady: {} umount2/s + 1 EBUSY/s for {} s",
                opts.rate, opts.seconds
            ),
            format!("{calls} calls made, {} recorded", read.steady),
        ],
        vec![
            "RSS, first minute → last minute (mean)".into(),
            format!("{} → {} ({:+.1}%)", mib(first), mib(last), 100.0 * drift),
        ],
        vec!["RSS, peak".into(), mib(peak)],
        vec!["CPU".into(), format!("{:.2}% of one core", 100.0 * cpu)],
        vec![
            "scrape (GET /metrics) p50 / p99 / max".into(),
            format!("{p50:.2?} / {p99:.2?} / {max:.2?}"),
        ],
        vec![
            "lines: recording / raw client / watch --connect".into(),
            format!(
                "{} / {} / {}",
                read.lines, clients.raw_lines, clients.watch_lines
            ),
        ],
        vec![
            "client lines lost (both): steady / burst".into(),
            format!("{} / {}", clients.steady_lost, clients.burst_lost),
        ],
        vec![
            format!("then {THROUGHPUT_PER_SEC} umount2/s for {PHASE:?}, everything on"),
            format!("{burst_calls} calls, {:.0}/s recorded", burst_rate),
        ],
        vec!["events lost (final stats)".into(), read.drops.clone()],
    ];
    let flat = drift.abs() <= GOAL_RSS_DRIFT && peak <= GOAL_RSS_BYTES;
    let lossless = read.drops == "none" && read.burst == burst_calls && read.steady == calls;
    let goals = vec![
        format!(
            "RSS flat (last minute within 5% of the first) and ≤ 50 MiB: {}",
            verdict(flat)
        ),
        format!("CPU ≤ 3% of one core: {}", verdict(cpu <= GOAL_CPU_SHARE)),
        format!(
            "a scrape answers in ≤ 5 ms (p99): {}",
            verdict(p99 <= GOAL_SCRAPE)
        ),
        format!(
            "≥ {THROUGHPUT_PER_SEC} events/s recorded with none lost, metrics and clients on: {}",
            verdict(lossless && burst_rate >= 0.99 * THROUGHPUT_PER_SEC as f64)
        ),
        format!(
            "the clients lost no line in the steady phase: {} (in the burst they may: the \
             agent never waits for them)",
            verdict(clients.steady_lost == 0)
        ),
    ];
    let notes = vec![
        format!("machine: {}", machine()),
        "RSS: VmRSS of the agent, sampled each second; CPU: its utime + stime over the steady \
         phase, from /proc/PID/stat"
            .into(),
        "scrape: connect, GET, read to the end, on loopback, from the benchmark".into(),
    ];
    print_report("busyprobe agent, always on", &rows, &notes, &goals);
}
