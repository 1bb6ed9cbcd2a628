//! `cargo xtask vm-powercut`: does `busyprobe agent`'s recording survive a power cut?
//!
//! Two boots of one Debian kernel under qemu, sharing a raw disk image (ext4, made on the
//! host with `mkfs.ext4`) attached as a virtio disk:
//!
//! 1. **record**: the guest mounts the disk and runs `busyprobe agent -o /disk/rec.jsonl
//!    --fsync INTERVAL --no-metrics`, then loops: a fresh tmpfs `/mnt/pc/N`, an unmount that
//!    fails with EBUSY (the shell holds a file on it), one that works; once both lines of
//!    attempt N are in the recording (the file, not the disk), it announces `written N` on
//!    the console. The host notes when it sees each announcement; after `--attempts` (60) of
//!    them and a jitter of up to 1.5 s it kills qemu with SIGKILL: the guest's page cache,
//!    and whatever it had not handed to its disk, is gone.
//!
//!    With `--quiet` the guest stops after those attempts and the cut comes once the
//!    interval, the margin and 0.5 s have passed: the last lines are followed by no other,
//!    so only the agent's fsync timer (not its write path) can have synced them.
//! 2. **check**: a second guest mounts the same disk (ext4 replays its journal), prints the
//!    recording (base64) and runs `busyprobe report --format json` on it.
//!
//! The host then checks: every attempt announced more than INTERVAL + `--margin` before the
//! cut is in the recording (its EBUSY line and its successful line), every line is whole
//! JSON except at most a torn last one, and `report` reads the file (exit 0), naming a torn
//! last line as skipped. The margin covers the fsync itself and the timer under emulation;
//! the console's latency only makes an announcement look later than the write it follows,
//! which makes the check stricter, not looser.
//!
//! qemu writes the guest's disk into the host's page cache, which survives qemu's death:
//! this is a power cut of the guest with a disk that keeps what it acknowledged, not of a
//! disk with a volatile write cache.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::BufWriter,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, ensure, Context, Result};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::Value;

use super::{
    guest::{self, shell_quote, CODE_SETUP},
    kernels::{self, Kernel},
    modules,
    qemu::{self, Accel, Boot},
    report::MARKER,
};
use crate::{build_ebpf::workspace_root, run::build_busyprobe};

/// Options of `cargo xtask vm-powercut`.
#[derive(clap::Args)]
pub struct Options {
    /// Kernels: debian-6.1, debian-6.12 (repeatable), or all (both).
    #[arg(long = "kernel", default_value = "debian-6.12")]
    pub kernels: Vec<String>,
    /// The agent's `--fsync` in the guest (`1s`, `500ms`, `0`, `off`: `off` shows what a
    /// power cut takes without it, and is expected to fail the check).
    #[arg(long, default_value = "1s")]
    pub fsync: String,
    /// Attempts announced as written before the host cuts the power.
    #[arg(long, default_value_t = 60)]
    pub attempts: usize,
    /// Added to the fsync interval: an attempt announced longer than both before the cut
    /// must be in the recording.
    #[arg(long, default_value_t = 1000)]
    pub margin_ms: u64,
    /// CPU accelerator: tcg works everywhere; kvm needs a working /dev/kvm.
    #[arg(long, value_enum, default_value = "tcg")]
    pub accel: Accel,
    /// Kill a guest after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// The probes' mode in the guest (`BUSYPROBE_MODE`): auto (default), tracepoint, fentry,
    /// enhanced.
    #[arg(long, value_parser = ["auto", "tracepoint", "fentry", "enhanced"])]
    pub mode: Option<String>,
    /// Print the guests' consoles as they arrive (they always go to the logs).
    #[arg(long)]
    pub echo: bool,
    /// Stop after `--attempts` and cut the power only when the interval, the margin and
    /// 0.5 s have passed: no line follows the last ones, so only the agent's fsync timer can
    /// have synced them, and every attempt must be there.
    #[arg(long)]
    pub quiet: bool,
}

/// Prefix of the lines only this command's guests print.
const PC: &str = "@@powercut@@";
/// Where attempts are made in the guest.
const ATTEMPTS_DIR: &str = "/mnt/pc";
/// The largest jitter added after the last announcement the host waits for.
const JITTER_MS: u128 = 1500;
/// The disk image's size.
const DISK_MIB: u64 = 64;

/// Runs the power cut on each kernel; fails if any check failed.
pub fn vm_powercut(opts: &Options) -> Result<ExitCode> {
    let kernels = kernels_of(&opts.kernels)?;
    let interval = parse_interval(&opts.fsync).map_err(anyhow::Error::msg)?;
    let busybox = qemu::ensure_host_tools()?;
    let busyprobe = build_busyprobe(false)?;
    let out = workspace_root().join("target/vm-powercut");
    fs::create_dir_all(&out)?;
    let mut passed = true;
    for kernel in kernels {
        println!("\nxtask: vm-powercut: ── {kernel} ──");
        let outcome = run_kernel(kernel, opts, interval, &busyprobe, &busybox, &out);
        match outcome {
            Ok(cut) => {
                let verdict = cut.check(interval, Duration::from_millis(opts.margin_ms));
                print_result(kernel, &opts.fsync, &cut, &verdict);
                passed &= verdict.failures.is_empty();
            }
            Err(e) => {
                println!("xtask: vm-powercut: {kernel}: NOT RUN: {e:#}");
                passed = false;
            }
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--kernel` values: the Debian kernels only (a power cut of the host is not on offer).
fn kernels_of(values: &[String]) -> Result<Vec<Kernel>> {
    let mut kernels = Vec::new();
    for value in values {
        let more = match value.as_str() {
            "all" => vec![Kernel::Debian61, Kernel::Debian612],
            name => vec![name.parse::<Kernel>().map_err(anyhow::Error::msg)?],
        };
        for k in more {
            ensure!(
                k != Kernel::Host,
                "vm-powercut cuts a guest's power, not the host's"
            );
            if !kernels.contains(&k) {
                kernels.push(k);
            }
        }
    }
    Ok(kernels)
}

/// `--fsync` as the agent reads it: `Ns`, `Nms`, `0` → the interval; `off` → none.
pub fn parse_interval(value: &str) -> Result<Option<Duration>, String> {
    let v = value.trim();
    if v == "off" {
        return Ok(None);
    }
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("--fsync {value:?}: want 1s, 500ms, 0 or off"))?;
    match unit {
        "" if n == 0 => Ok(Some(Duration::ZERO)),
        "s" => Ok(Some(Duration::from_secs(n))),
        "ms" => Ok(Some(Duration::from_millis(n))),
        _ => Err(format!("--fsync {value:?}: want 1s, 500ms, 0 or off")),
    }
}

/// What one power cut gave.
#[derive(Debug, Default)]
pub struct Cut {
    /// The guest's kernel release.
    pub kernel: String,
    /// Each announced attempt with how long before the cut the host saw it.
    pub announced: Vec<(u32, Duration)>,
    /// From the last announcement the host waited for to the kill.
    pub wait: Duration,
    /// The recording's bytes after the cut.
    pub recording: Vec<u8>,
    /// `busyprobe report`'s exit status in the second guest.
    pub report_exit: Option<i32>,
    /// What it said on stderr.
    pub report_stderr: Vec<String>,
    /// Its JSON.
    pub report: Option<Value>,
}

/// The checks' findings.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Whole lines read.
    pub lines: usize,
    /// Attempts found whole (EBUSY and success lines).
    pub found: BTreeSet<u32>,
    /// The torn last line, if any (its first bytes).
    pub torn: Option<String>,
    /// Attempts announced before the threshold: (how many, missing ones).
    pub old: (usize, Vec<u32>),
    /// Attempts announced within the threshold: (how many, how many found).
    pub recent: (usize, usize),
    /// What failed.
    pub failures: Vec<String>,
}

impl Cut {
    /// Checks the recording against the announcements: attempts announced more than
    /// `interval + margin` before the cut must be in it (any, with `--fsync off`: that run
    /// shows the loss).
    pub fn check(&self, interval: Option<Duration>, margin: Duration) -> Verdict {
        let threshold = interval.unwrap_or_default() + margin;
        let (lines, torn, damaged) = read_lines(&self.recording);
        let mut v = Verdict {
            lines: lines.len(),
            found: whole_attempts(&lines),
            torn,
            ..Verdict::default()
        };
        for line in damaged {
            v.failures
                .push(format!("line {line} is not whole JSON and not the last"));
        }
        if self.announced.is_empty() {
            v.failures.push("no attempt was announced".into());
        }
        let (old, recent): (Vec<_>, Vec<_>) =
            self.announced.iter().partition(|(_, age)| *age > threshold);
        let missing: Vec<u32> = old
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !v.found.contains(n))
            .collect();
        if !missing.is_empty() {
            v.failures.push(format!(
                "{} of {} attempts announced more than {:.1} s before the cut are not in the \
                 recording: {missing:?}",
                missing.len(),
                old.len(),
                threshold.as_secs_f64()
            ));
        }
        v.old = (old.len(), missing);
        v.recent = (
            recent.len(),
            recent.iter().filter(|(n, _)| v.found.contains(n)).count(),
        );
        self.check_report(&lines, v.torn.is_some(), &mut v.failures);
        v
    }

    /// `busyprobe report` read the file: exit 0, as many attempts as the whole lines hold,
    /// and a torn last line said as skipped.
    fn check_report(&self, lines: &[Value], torn: bool, failures: &mut Vec<String>) {
        if self.report_exit != Some(0) {
            failures.push(format!(
                "busyprobe report exited {:?}: {}",
                self.report_exit,
                self.report_stderr.join(" / ")
            ));
            return;
        }
        let umounts = lines.iter().filter(|l| l["type"] == "umount").count();
        let counted = self
            .report
            .as_ref()
            .and_then(|r| r["summary"]["attempts"].as_u64());
        if counted != Some(umounts as u64) {
            failures.push(format!(
                "busyprobe report counted {counted:?} attempts, the whole lines hold {umounts}"
            ));
        }
        if torn
            && !self
                .report_stderr
                .iter()
                .any(|l| l.contains("torn last line"))
        {
            failures.push(format!(
                "busyprobe report did not say it skipped the torn last line: {}",
                self.report_stderr.join(" / ")
            ));
        }
    }
}

/// The whole JSON lines of a recording, its torn last line (the first bytes of it), and the
/// numbers of damaged lines that are not the last.
pub fn read_lines(bytes: &[u8]) -> (Vec<Value>, Option<String>, Vec<usize>) {
    let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // A file ending with a newline splits into a last empty piece.
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    let mut lines = Vec::new();
    let mut torn = None;
    let mut damaged = Vec::new();
    let count = pieces.len();
    for (i, piece) in pieces.into_iter().enumerate() {
        match serde_json::from_slice::<Value>(piece) {
            Ok(v) if v.is_object() => lines.push(v),
            _ if i + 1 == count => {
                let shown = &piece[..piece.len().min(60)];
                torn = Some(format!(
                    "{} bytes: {}",
                    piece.len(),
                    String::from_utf8_lossy(shown).escape_debug()
                ));
            }
            _ => damaged.push(i + 1),
        }
    }
    (lines, torn, damaged)
}

/// The attempts whose EBUSY line and successful line are both in `lines`.
pub fn whole_attempts(lines: &[Value]) -> BTreeSet<u32> {
    let of = |errno: Value| -> BTreeSet<u32> {
        lines
            .iter()
            .filter(|l| l["type"] == "umount" && l["errno"] == errno)
            .filter_map(|l| {
                l["target"]
                    .as_str()?
                    .strip_prefix(ATTEMPTS_DIR)?
                    .strip_prefix('/')?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let busy = of(Value::from("EBUSY"));
    of(Value::Null).intersection(&busy).copied().collect()
}

/// Boots the recording guest until the cut, then the checking guest.
fn run_kernel(
    kernel: Kernel,
    opts: &Options,
    interval: Option<Duration>,
    busyprobe: &Path,
    busybox: &Path,
    out: &Path,
) -> Result<Cut> {
    let unpacked = kernels::ensure_kernel(kernel)?;
    let mut wanted = modules::WANTED.to_vec();
    wanted.extend(["virtio_pci", "virtio_blk"]);
    let modules = modules::resolve(&unpacked.modules_dir(), &wanted)?;
    let plan = guest::Plan {
        busyprobe: busyprobe.to_path_buf(),
        tests: None,
        test_cwd: PathBuf::from("/root"),
        test_data: Vec::new(),
        writable_dirs: Vec::new(),
        mode: opts.mode.clone(),
    };
    let disk = out.join(format!("{kernel}.img"));
    make_disk(&disk)?;
    let boot = |phase: &str, init: String| -> Result<Boot> {
        let (mut tree, _) = guest::build_tree(&plan, busybox, &modules)?;
        tree.bytes("/init", 0o755, init);
        let initrd = out.join(format!("{kernel}-{phase}.cpio"));
        tree.write_newc(BufWriter::new(File::create(&initrd)?))?;
        Ok(Boot {
            kernel: unpacked.vmlinuz(),
            initrd,
            log: out.join(format!("{kernel}-{phase}.log")),
            accel: opts.accel,
            smp: 2,
            memory_mib: 1024,
            timeout: Duration::from_secs(opts.timeout),
            disk: Some(disk.clone()),
        })
    };

    let stop_after = opts.quiet.then_some(opts.attempts);
    let record = boot(
        "record",
        record_script(&plan, &modules, &opts.fsync, stop_after),
    )?;
    println!(
        "xtask: vm-powercut: {} ({}): recording with --fsync {} until {} attempts are announced; console in {}",
        unpacked.package,
        unpacked.release,
        opts.fsync,
        opts.attempts,
        record.log.display()
    );
    let mut seen: Vec<(u32, Instant)> = Vec::new();
    let mut kill_at: Option<Instant> = None;
    let mut setup_failed = None;
    let wait = match opts.quiet {
        true => interval.unwrap_or_default() + Duration::from_millis(opts.margin_ms + 500),
        false => Duration::from_millis(jitter_ms() as u64),
    };
    let recorded = record.run_watched(opts.echo, |line| {
        if let Some(rest) = line
            .and_then(|l| l.trim_end().split_once(MARKER))
            .map(|(_, r)| r)
        {
            let rest = rest.trim();
            if let Some(n) = rest.strip_prefix("written ").and_then(|n| n.parse().ok()) {
                seen.push((n, Instant::now()));
                if seen.len() == opts.attempts {
                    kill_at = Some(Instant::now() + wait);
                }
            } else if let Some(why) = rest.strip_prefix("setup-failed") {
                setup_failed = Some(why.trim().to_owned());
            }
        }
        kill_at.is_some_and(|at| Instant::now() >= at)
    })?;
    let Some(killed_at) = recorded.killed_at else {
        bail!(
            "the recording guest ended before the cut ({:?}{}); its console: {}\n{}",
            recorded.exit,
            setup_failed
                .map(|w| format!(", setup failed: {w}"))
                .unwrap_or_default(),
            record.log.display(),
            qemu::tail(&record.log, 30)
        );
    };

    let check = boot("check", check_script(&plan, &modules))?;
    println!(
        "xtask: vm-powercut: power cut; booting again from the same disk to read the recording; console in {}",
        check.log.display()
    );
    let mut console = Vec::new();
    let checked = check.run_watched(opts.echo, |line| {
        if let Some(line) = line {
            console.push(line.trim_end_matches(['\r', '\n']).to_owned());
        }
        false
    })?;
    ensure!(
        checked.report.exit == Some(0),
        "the checking guest failed ({:?}, setup: {:?}); its console: {}\n{}",
        checked.exit,
        checked.report.setup_failed,
        check.log.display(),
        qemu::tail(&check.log, 30)
    );
    let mut cut = read_check_console(&console)?;
    cut.kernel = checked.report.kernel.unwrap_or_default();
    cut.announced = seen
        .iter()
        .map(|(n, at)| (*n, killed_at.saturating_duration_since(*at)))
        .collect();
    cut.wait = wait;
    Ok(cut)
}

/// A pseudo-random jitter below [`JITTER_MS`], so that the cut lands anywhere in the loop.
fn jitter_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() % JITTER_MS)
        .unwrap_or(0)
}

/// A fresh raw image with an ext4 filesystem.
fn make_disk(path: &Path) -> Result<()> {
    let _ = fs::remove_file(path);
    File::create(path)?.set_len(DISK_MIB << 20)?;
    let mkfs = guest::find_on_path("mkfs.ext4").context("mkfs.ext4 not found (e2fsprogs)")?;
    let status = Command::new(mkfs)
        .args(["-q", "-F", "-L", "powercut"])
        .arg(path)
        .status()
        .context("running mkfs.ext4")?;
    ensure!(status.success(), "mkfs.ext4 {} failed", path.display());
    Ok(())
}

/// The recording guest's `/init`: the agent on the disk, then the attempts loop, forever or
/// `stop_after` attempts (then it idles).
fn record_script(
    plan: &guest::Plan,
    modules: &[modules::Module],
    fsync: &str,
    stop_after: Option<usize>,
) -> String {
    let busyprobe = shell_quote(&plan.busyprobe.to_string_lossy());
    let fsync = shell_quote(fsync);
    let mut s = guest::setup_script(plan, modules);
    s.push_str(&format!(
        r#"report "kernel $(uname -r)"
mkdir -p /disk {ATTEMPTS_DIR}
must mount -t ext4 /dev/vda /disk
{busyprobe} agent -o /disk/rec.jsonl --fsync {fsync} --no-metrics --stats-interval 0 --path {ATTEMPTS_DIR} 2>/tmp/agent.err &
agent=$!
tries=0
until grep -q 'probes attached' /tmp/agent.err; do
    tries=$((tries + 1))
    if [ "$tries" -gt 3000 ] || ! kill -0 "$agent" 2>/dev/null; then
        cat /tmp/agent.err
        report "setup-failed the agent did not attach"
        finish {CODE_SETUP}
    fi
    sleep 0.1
done
report "agent-attached"
n=0
while {more}; do
    n=$((n + 1))
    m={ATTEMPTS_DIR}/$n
    mkdir -p "$m"
    must mount -t tmpfs pc "$m"
    : > "$m/f"
    exec 3< "$m/f"
    umount "$m" 2>/dev/null && report "unexpected-success $n"
    exec 3<&-
    # Retried as container runtimes retry: busyprobe's own look at the mount after the
    # EBUSY (a statx through it, the iterator visiting the file as the shell closes it) can
    # hold it for a moment, which emulation makes long.
    tries=0
    until umount "$m" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 20 ] || {{ report "setup-failed umount $m"; finish {CODE_SETUP}; }}
        sleep 0.05
    done
    # Announce once both lines are in the file (the page cache, not yet the disk).
    until grep -F "\"target\":\"$m\"" /disk/rec.jsonl > /tmp/seen \
        && grep -q '"errno":"EBUSY"' /tmp/seen && grep -q '"errno":null' /tmp/seen; do
        sleep 0.05
    done
    echo "{MARKER} written $n"
done
echo "{MARKER} quiet"
sleep 100000
"#,
        more = match stop_after {
            Some(last) => format!("[ \"$n\" -lt {last} ]"),
            None => ":".into(),
        }
    ));
    s
}

/// The checking guest's `/init`: the recording and `busyprobe report`'s answer, printed.
fn check_script(plan: &guest::Plan, modules: &[modules::Module]) -> String {
    let busyprobe = shell_quote(&plan.busyprobe.to_string_lossy());
    let mut s = guest::setup_script(plan, modules);
    s.push_str(&format!(
        r#"report "kernel $(uname -r)"
mkdir -p /disk
must mount -t ext4 /dev/vda /disk
echo "{PC} recording-begin"
base64 /disk/rec.jsonl
echo "{PC} recording-end"
{busyprobe} report --format json /disk/rec.jsonl > /tmp/report.json 2> /tmp/report.err
echo "{PC} report-exit $?"
sed 's/^/{PC} report-stderr /' /tmp/report.err
echo "{PC} report-begin"
base64 /tmp/report.json
echo "{PC} report-end"
umount /disk
finish 0
"#
    ));
    s
}

/// Reads the checking guest's console: the recording, `report`'s exit status, stderr and
/// JSON.
pub fn read_check_console(console: &[String]) -> Result<Cut> {
    let block = |name: &str| -> Result<Vec<u8>> {
        let begin = format!("{PC} {name}-begin");
        let end = format!("{PC} {name}-end");
        let start = console
            .iter()
            .position(|l| l.trim() == begin)
            .with_context(|| format!("no {begin:?} on the console"))?;
        let text: String = console[start + 1..]
            .iter()
            .take_while(|l| l.trim() != end)
            .map(|l| l.trim())
            // Anything else the kernel printed meanwhile is not base64.
            .filter(|l| {
                l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            })
            .collect();
        STANDARD
            .decode(text)
            .with_context(|| format!("decoding the {name} printed on the console"))
    };
    let after = |prefix: &str| {
        let prefix = format!("{PC} {prefix}");
        console
            .iter()
            .filter_map(move |l| l.strip_prefix(&prefix).map(|r| r.trim().to_owned()))
    };
    let report = block("report")?;
    Ok(Cut {
        recording: block("recording")?,
        report_exit: after("report-exit").next().and_then(|c| c.parse().ok()),
        report_stderr: after("report-stderr").collect(),
        report: serde_json::from_slice(&report).ok(),
        ..Cut::default()
    })
}

/// The result, as it is quoted in the README.
fn print_result(kernel: Kernel, fsync: &str, cut: &Cut, v: &Verdict) {
    let status = if v.failures.is_empty() {
        "PASSED"
    } else {
        "FAILED"
    };
    let last = cut.announced.last().map(|(n, age)| (*n, *age));
    println!(
        "xtask: vm-powercut: {kernel} (kernel {}), agent --fsync {fsync}: {status}",
        cut.kernel
    );
    if let (Some((n, age)), Some((_, first))) = (last, cut.announced.first()) {
        println!(
            "  cut: qemu SIGKILLed {:.2} s after the host saw `written {n}` (it waited {:.2} s after the last it waited for); {} attempts announced over the last {:.1} s",
            age.as_secs_f64(),
            cut.wait.as_secs_f64(),
            cut.announced.len(),
            first.as_secs_f64()
        );
    }
    println!(
        "  after the cut: recording {} bytes, {} whole lines, {} attempts whole in it; torn last line: {}",
        cut.recording.len(),
        v.lines,
        v.found.len(),
        v.torn.as_deref().unwrap_or("none")
    );
    println!(
        "  announced before the threshold: {}, missing {:?}; announced within it: {}, of which {} in the recording",
        v.old.0, v.old.1, v.recent.0, v.recent.1
    );
    println!(
        "  busyprobe report: exit {:?}, {} attempts; said: {}",
        cut.report_exit,
        cut.report
            .as_ref()
            .and_then(|r| r["summary"]["attempts"].as_u64())
            .map_or("?".into(), |n| n.to_string()),
        if cut.report_stderr.is_empty() {
            "nothing".to_string()
        } else {
            cut.report_stderr.join(" / ")
        }
    );
    for failure in &v.failures {
        println!("  FAILED: {failure}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umount(n: u32, errno: Value) -> String {
        serde_json::json!({"v":1,"type":"umount","target":format!("/mnt/pc/{n}"),"errno":errno})
            .to_string()
    }

    fn recording(attempts: &[u32], tail: &str) -> Vec<u8> {
        let mut text = String::from("{\"v\":1,\"type\":\"header\"}\n");
        for n in attempts {
            text += &umount(*n, Value::Null);
            text += "\n";
            text += &umount(*n, "EBUSY".into());
            text += "\n";
        }
        text += tail;
        text.into_bytes()
    }

    fn cut(attempts: &[u32], tail: &str, announced: &[(u32, u64)]) -> Cut {
        let lines = 2 * attempts.len() as u64;
        Cut {
            recording: recording(attempts, tail),
            announced: announced
                .iter()
                .map(|(n, ms)| (*n, Duration::from_millis(*ms)))
                .collect(),
            report_exit: Some(0),
            report: Some(serde_json::json!({"summary":{"attempts": lines}})),
            ..Cut::default()
        }
    }

    const SECOND: Option<Duration> = Some(Duration::from_secs(1));
    const MARGIN: Duration = Duration::from_secs(1);

    #[test]
    fn fsync_values_parse_as_the_agent_reads_them() {
        assert_eq!(parse_interval("1s"), Ok(SECOND));
        assert_eq!(
            parse_interval("500ms"),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_interval("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(parse_interval("off"), Ok(None));
        assert!(parse_interval("1h").is_err());
    }

    #[test]
    fn old_attempts_must_be_there_recent_ones_may_be_lost() {
        // 1 and 2 were announced 5 and 2.5 s before the cut; 3 0.5 s before, and lost.
        let c = cut(&[1, 2], "", &[(1, 5000), (2, 2500), (3, 500)]);
        let v = c.check(SECOND, MARGIN);
        assert!(v.failures.is_empty(), "{:?}", v.failures);
        assert_eq!((v.old, v.recent), ((2, vec![]), (1, 0)));

        let lost = cut(&[1], "", &[(1, 5000), (2, 2500)]);
        let v = lost.check(SECOND, MARGIN);
        assert_eq!(v.old, (2, vec![2]));
        assert!(
            v.failures[0].contains("not in the recording: [2]"),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn one_torn_last_line_is_allowed_when_report_says_it_skipped_it() {
        let mut c = cut(&[1], r#"{"v":1,"type":"umo"#, &[(1, 5000)]);
        let v = c.check(SECOND, MARGIN);
        assert!(v.torn.is_some());
        assert!(v.failures[0].contains("torn last line"), "{:?}", v.failures);
        c.report_stderr = vec!["rec.jsonl:4: torn last line (...): skipped".into()];
        assert!(c.check(SECOND, MARGIN).failures.is_empty());
        // A damaged line inside the file is a failure whatever report says.
        let mut bytes = recording(&[1], "");
        bytes.splice(0..0, b"{\"v\":1,\"ty\n".iter().copied());
        c.recording = bytes;
        let v = c.check(SECOND, MARGIN);
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("line 1 is not whole JSON")),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn an_attempt_needs_both_of_its_lines() {
        let text = [
            umount(1, "EBUSY".into()),
            umount(2, "EBUSY".into()),
            umount(2, Value::Null),
        ]
        .map(|l| serde_json::from_str::<Value>(&l).unwrap());
        assert_eq!(whole_attempts(&text), BTreeSet::from([2]));
    }

    #[test]
    fn the_check_console_gives_the_recording_and_the_report() {
        let console: Vec<String> = [
            format!("{PC} recording-begin"),
            STANDARD.encode(b"{\"v\":1}\n{\"v\""),
            "[   12.3] some kernel line".into(),
            format!("{PC} recording-end"),
            format!("{PC} report-exit 0"),
            format!("{PC} report-stderr r.jsonl:2: torn last line: skipped"),
            format!("{PC} report-begin"),
            STANDARD.encode(br#"{"summary":{"attempts":0}}"#),
            format!("{PC} report-end"),
        ]
        .into();
        let c = read_check_console(&console).unwrap();
        assert_eq!(c.recording, b"{\"v\":1}\n{\"v\"");
        assert_eq!(c.report_exit, Some(0));
        assert_eq!(c.report_stderr, ["r.jsonl:2: torn last line: skipped"]);
        assert_eq!(c.report.unwrap()["summary"]["attempts"], 0);
    }

    #[test]
    fn the_recording_guest_loops_forever_or_stops_and_idles() {
        let plan = guest::Plan {
            busyprobe: "/w/busyprobe".into(),
            tests: None,
            test_cwd: "/root".into(),
            test_data: vec![],
            writable_dirs: vec![],
            mode: None,
        };
        let forever = record_script(&plan, &[], "1s", None);
        assert!(
            forever.contains("'/w/busyprobe' agent -o /disk/rec.jsonl --fsync '1s' --no-metrics")
        );
        assert!(forever.contains("\nwhile :; do\n"), "{forever}");
        let quiet = record_script(&plan, &[], "1s", Some(60));
        assert!(quiet.contains("\nwhile [ \"$n\" -lt 60 ]; do\n"), "{quiet}");
        assert!(quiet.contains("quiet\"\nsleep 100000\n"), "{quiet}");
    }

    #[test]
    fn only_debian_kernels() {
        assert_eq!(
            kernels_of(&["all".into()]).unwrap(),
            [Kernel::Debian61, Kernel::Debian612]
        );
        assert!(kernels_of(&["host".into()]).is_err());
    }
}
