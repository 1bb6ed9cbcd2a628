//! `cargo xtask bench replay`: `busyprobe replay` grouping 1,000,000 recorded attempts into
//! incidents, in time and memory.
//!
//! Writes a synthetic recording ([`Attempts`]: a header, then umount attempts on 2,000
//! targets, 64 at a time: most targets unmount at once, the others fail with EBUSY and are
//! retried, 1 to 20 times or, for a few, 200 times, before they unmount; a `stats` line every
//! 10,000 lines), then starts `busyprobe replay FILE` in a detached tmux session (a real
//! terminal) and times it until its first screen is drawn: `replay` reads and groups the
//! whole recording before it draws. Its peak memory is the process's `VmHWM` then. Baselines
//! in the same run: one serde_json pass over the same file (the least any reader must do),
//! and `replay` of a recording of the first 1,000 attempts (starting busyprobe and tmux, and
//! drawing). The goals are the issue's: ≤ 2 s and ≤ 200 MiB.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    reading::parse_every_line,
    scratch::TempDir,
    table::{machine, print_report, verdict},
    tui_cpu::InTmux,
};

/// Attempts in the big recording.
const ATTEMPTS: u64 = 1_000_000;
/// Attempts in the small one (the fixed costs).
const SMALL: u64 = 1_000;
/// The goals: seconds to group [`ATTEMPTS`], and peak memory in MiB.
const GOAL_SECS: f64 = 2.0;
const GOAL_MIB: f64 = 200.0;
/// What the screen shows once drawn.
const DRAWN: &str = "incidents (";

/// Runs the benchmark with the busyprobe at `binary`.
pub fn run(binary: &Path) -> Result<ExitCode> {
    let dir = TempDir::create()?;
    let big = dir.path.join("r1m.jsonl");
    let small = dir.path.join("r1k.jsonl");
    println!("xtask: bench replay: writing recordings of {ATTEMPTS} and {SMALL} attempts");
    let written = write_recording(&big, ATTEMPTS)?;
    write_recording(&small, SMALL)?;
    println!("xtask: bench replay: parsing the big one once (the baseline), then replay of each");
    let parse = parse_every_line(&big)?;
    let fixed = replay(binary, &small)?;
    let grouped = replay(binary, &big)?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rows = vec![
        vec!["".to_string(), "time".into(), "peak memory".into()],
        vec![
            format!("one serde_json pass over the {ATTEMPTS} attempts (baseline)"),
            format!("{:.2} s", parse.as_secs_f64()),
            "-".into(),
        ],
        vec![
            format!("`busyprobe replay`, {SMALL} attempts, to its first screen (baseline)"),
            format!("{:.2} s", fixed.elapsed.as_secs_f64()),
            format!("{:.1} MiB", mib(fixed.peak_kib)),
        ],
        vec![
            format!("`busyprobe replay`, {ATTEMPTS} attempts, to its first screen"),
            format!(
                "{:.2} s (×{:.2} of the pass)",
                grouped.elapsed.as_secs_f64(),
                grouped.elapsed.as_secs_f64() / parse.as_secs_f64()
            ),
            format!("{:.1} MiB", mib(grouped.peak_kib)),
        ],
    ];
    let secs_ok = grouped.elapsed.as_secs_f64() <= GOAL_SECS;
    let mib_ok = mib(grouped.peak_kib) <= GOAL_MIB;
    let goals = vec![
        format!(
            "grouping {ATTEMPTS} attempts ≤ {GOAL_SECS} s: {} ({:.2} s, of which {:.2} s the \
             small recording's fixed costs)",
            verdict(secs_ok),
            grouped.elapsed.as_secs_f64(),
            fixed.elapsed.as_secs_f64()
        ),
        format!(
            "≤ {GOAL_MIB} MiB: {} ({:.1} MiB)",
            verdict(mib_ok),
            mib(grouped.peak_kib)
        ),
    ];
    let notes = vec![
        format!("machine: {}", machine()),
        format!(
            "the recording: {} lines, {:.0} MB; {} failures, {} incidents on {TARGETS} \
             targets; replay's default --keep",
            written.lines,
            written.bytes as f64 / 1e6,
            written.failures,
            written.incidents
        ),
        "time: from starting the tmux session to the first screen (polled every 20 ms); \
         peak memory: VmHWM of the replay process then"
            .into(),
    ];
    print_report("busyprobe replay grouping", &rows, &notes, &goals);
    Ok(if secs_ok && mib_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How `replay` of one recording went.
struct Replayed {
    elapsed: Duration,
    peak_kib: u64,
}

/// Starts `busyprobe replay FILE` in tmux; the time to its first screen and its peak memory.
fn replay(binary: &Path, file: &Path) -> Result<Replayed> {
    let started = Instant::now();
    let session = InTmux::start(binary, &format!("replay {}", file.display()), DRAWN)?;
    let elapsed = started.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{}/status", session.pid))
        .context("reading the replay's /proc/PID/status")?;
    let peak_kib = peak_kib(&status).context("no VmHWM in /proc/PID/status")?;
    Ok(Replayed { elapsed, peak_kib })
}

/// `VmHWM` (the peak resident set) of a `/proc/PID/status`, in KiB.
fn peak_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What a recording holds.
#[derive(Debug, Default, PartialEq)]
struct Written {
    lines: u64,
    bytes: u64,
    failures: u64,
    incidents: u64,
}

/// Writes a header, then `attempts` attempts from [`Attempts`].
fn write_recording(path: &Path, attempts: u64) -> Result<Written> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut written = Written::default();
    let mut put = |line: &str, written: &mut Written| -> Result<()> {
        out.write_all(line.as_bytes())?;
        written.lines += 1;
        written.bytes += line.len() as u64;
        Ok(())
    };
    put(HEADER, &mut written)?;
    let mut gen = Attempts::default();
    for n in 1..=attempts {
        let (line, failed, opened) = gen.next_attempt(n);
        written.failures += u64::from(failed);
        written.incidents += u64::from(opened);
        put(&line, &mut written)?;
        if n.is_multiple_of(10_000) {
            put(&stats_line(n), &mut written)?;
        }
    }
    out.flush()?;
    Ok(written)
}

const HEADER: &str = "{\"v\":1,\"type\":\"header\",\"busyprobe\":\"bench\",\"host\":\"bench\",\
    \"kernel\":\"bench\",\"probe_mode\":\"tracepoint\",\"started\":\"2026-11-23T10:00:00.000000000Z\"}\n";

/// Targets the attempts are spread over.
const TARGETS: u64 = 2_000;
/// Targets being unmounted at once (their attempts interleave).
const AT_ONCE: usize = 64;

/// One target's unmount: the failures still to come before it works.
#[derive(Clone, Copy, Default)]
struct Unmount {
    target: u64,
    failures_left: u64,
    /// Whether its first failure has been written (an incident is open).
    failed: bool,
}

/// The synthetic attempts: [`AT_ONCE`] unmounts at a time, round robin; each new one takes
/// the next target (of [`TARGETS`], over again: mounted anew) and fails `0` times (55%),
/// 1 to 20 times (43%) or 200 times (2%) before it works.
#[derive(Default)]
struct Attempts {
    running: Vec<Unmount>,
    next_target: u64,
}

impl Attempts {
    /// Attempt `n` (from 1): its line, whether it failed, whether it opened an incident.
    fn next_attempt(&mut self, n: u64) -> (String, bool, bool) {
        if self.running.is_empty() {
            self.running = (0..AT_ONCE).map(|_| self.start()).collect();
        }
        let slot = (n as usize) % AT_ONCE;
        let u = self.running[slot];
        let line = attempt_line(n, u.target, u.failures_left > 0);
        let opened = u.failures_left > 0 && !u.failed;
        self.running[slot] = if u.failures_left > 0 {
            Unmount {
                failures_left: u.failures_left - 1,
                failed: true,
                ..u
            }
        } else {
            self.start()
        };
        (line, u.failures_left > 0, opened)
    }

    /// The next unmount.
    fn start(&mut self) -> Unmount {
        let target = self.next_target % TARGETS;
        self.next_target += 1;
        // A fixed spread of the unmounts' kinds (a multiplicative hash of their number).
        let h = self.next_target.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let failures_left = match h % 100 {
            0..55 => 0,
            55..98 => 1 + h / 100 % 20,
            _ => 200,
        };
        Unmount {
            target,
            failures_left,
            failed: false,
        }
    }
}

/// The `ts` of attempt `n`: one a millisecond from 10:00.
fn ts(n: u64) -> String {
    let ms = n % 3_600_000;
    format!(
        "2026-11-23T10:{:02}:{:02}.{:03}000000Z",
        ms / 60_000,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Attempt `n` on target number `target`: EBUSY with one holder (two for one target in
/// seven), or a success.
fn attempt_line(n: u64, target: u64, failed: bool) -> String {
    let path = format!(
        "/var/lib/kubelet/pods/pod-{target:05}/volumes/kubernetes.io~csi/pvc-{target:05}/mount"
    );
    let common = format!(
        r#""v":1,"type":"umount","id":{n},"ts":"{}","pid":{pid},"tid":{pid},"comm":"kubelet","uid":0,"gid":0,"mntns":4026531840,"cgroup":"/system.slice/kubelet.service","cgroup_id":4242,"target":"{path}","target_abs":"{path}","flags":0,"flag_names":[],"duration_ns":5120"#,
        ts(n),
        pid = 900 + n % 8,
    );
    if !failed {
        return format!("{{{common},\"ret\":0,\"errno\":null}}\n");
    }
    let holder = |pid: u64, comm: &str, file: &str| {
        format!(
            r#"{{"pid":{pid},"comm":"{comm}","kind":"fd","path":"{path}/{file}","fd":7,"mntns":4026532100,"container":null,"seen":"kernel-scan","mount_id":{},"via":null,"blamed":true,"note":null,"opened_ns_before":1800000,"closed_ns_after":null}}"#,
            3000 + target
        )
    };
    let mut holders = holder(20_000 + target, "postgres", "data/base/16384/2619");
    if target.is_multiple_of(7) {
        holders.push(',');
        holders.push_str(&holder(
            30_000 + target,
            "backup-agent",
            "data/pg_wal/000001",
        ));
    }
    format!(
        r#"{{{common},"ret":-16,"errno":"EBUSY","mount":{{"id":{},"mntns":4026531840,"mount_point":"{path}","root":"/","fstype":"ext4","source":"/dev/rbd{target}","dev":"252:{target}","propagation":"private"}},"holders":[{holders}],"accessors":[],"uninspectable":[]}}"#,
        3000 + target
    ) + "\n"
}

/// A `stats` line after attempt `n`.
fn stats_line(n: u64) -> String {
    format!(
        r#"{{"v":1,"type":"stats","ts":"{}","events":{n},"drops":{{"ringbuf_full":0,"inflight_map_full":0,"path_truncated":0,"path_unreadable":0,"release_path_cut":0}},"decode_errors":0,"final":false}}"#,
        ts(n)
    ) + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recording is JSON Lines of the right types, with retried failures on targets
    /// used over again, and its counts add up.
    #[test]
    fn the_recording_parses_and_its_counts_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let written = write_recording(&path, 20_000).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(written.lines, lines.len() as u64);
        assert_eq!(written.bytes, text.len() as u64);
        assert_eq!(lines[0]["type"], "header");
        let kind = |k: &str| lines.iter().filter(|l| l["type"] == k).count() as u64;
        assert_eq!((kind("umount"), kind("stats")), (20_000, 2));
        let failures = lines.iter().filter(|l| l["errno"] == "EBUSY").count() as u64;
        assert_eq!(failures, written.failures);
        assert!(
            written.failures > 5_000 && written.incidents > 200,
            "{written:?}"
        );
        assert!(written.incidents < written.failures, "failures are retried");
        let targets: std::collections::HashSet<&str> =
            lines.iter().filter_map(|l| l["target"].as_str()).collect();
        assert_eq!(targets.len() as u64, TARGETS, "every target, over again");
        assert!(lines[1]["holders"].is_array() || lines[1]["errno"].is_null());
    }

    #[test]
    fn the_peak_is_read_from_proc_status() {
        let status =
            "Name:\tbusyprobe\nVmPeak:\t  9000 kB\nVmHWM:\t    4242 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(peak_kib(status), Some(4242));
        assert_eq!(peak_kib("Name:\tx\n"), None);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        for n in [1, 59_999, 3_599_999, 3_600_000] {
            assert!(humantime::parse_rfc3339(&ts(n)).is_ok(), "{}", ts(n));
        }
    }
}
