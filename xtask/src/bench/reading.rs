//! `cargo xtask bench reading`: `busyprobe report` over big recordings, in constant memory.
//!
//! Writes a synthetic recording (a header, then `umount` lines: most successful, one in ten an
//! EBUSY with two holders, on a few hundred targets, and a `stats` line every 10,000 lines) of
//! 100 MB and of 1 GB, then times `busyprobe report --format json` over each and reads its
//! peak RSS (`wait4`'s `ru_maxrss`). Baseline in the same run: the least any reader of the
//! file must do, one pass parsing every line with serde_json (in this process). The goals:
//! the peak RSS at 1 GB within 1.5 times the one at 100 MB (memory does not grow with the
//! file), and the report (two streaming passes plus its tallies) within 3 times the baseline.

use std::{
    fs::File,
    io::{BufWriter, Write},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use super::{
    scratch::TempDir,
    table::{machine, print_report, verdict},
};

/// The recordings' sizes, in MB.
const SIZES_MB: [u64; 2] = [100, 1000];

/// Runs the benchmark with the busyprobe at `binary`.
pub fn run(binary: &Path) -> Result<ExitCode> {
    let dir = TempDir::create()?;
    let mut rows = vec![vec![
        "recording".to_string(),
        "lines".into(),
        "parse every line once".into(),
        "busyprobe report".into(),
        "× baseline".into(),
        "report peak RSS".into(),
    ]];
    let mut peaks = Vec::new();
    let mut slowest_ratio: f64 = 0.0;
    for mb in SIZES_MB {
        let file = dir.path.join(format!("r{mb}.jsonl"));
        println!("xtask: bench reading: writing a {mb} MB recording");
        let lines = write_recording(&file, mb << 20)?;
        println!("xtask: bench reading: parsing it once (the baseline), then busyprobe report");
        let baseline = parse_every_line(&file)?;
        let (report, peak_kib) = timed(
            Command::new(binary)
                .args(["report", "--format", "json"])
                .arg(&file),
        )?;
        let ratio = report.as_secs_f64() / baseline.as_secs_f64();
        slowest_ratio = slowest_ratio.max(ratio);
        peaks.push(peak_kib);
        rows.push(vec![
            format!("{mb} MB"),
            lines.to_string(),
            format!("{:.2} s", baseline.as_secs_f64()),
            format!("{:.2} s", report.as_secs_f64()),
            format!("×{ratio:.1}"),
            format!("{:.1} MiB", peak_kib as f64 / 1024.0),
        ]);
        std::fs::remove_file(&file)?;
    }
    let growth = peaks[1] as f64 / peaks[0] as f64;
    let memory_ok = growth <= 1.5;
    let speed_ok = slowest_ratio <= 3.0;
    let headline = format!(
        "busyprobe report over synthetic recordings of {} and {} MB; {}",
        SIZES_MB[0],
        SIZES_MB[1],
        machine()
    );
    let notes = vec![
        "× baseline: the report's time over one serde_json pass over the same file, just before (page cache warm for both)".to_string(),
        "peak RSS: the report process's ru_maxrss".to_string(),
    ];
    let goals = vec![
        format!(
            "constant memory: peak RSS at {} MB ≤ 1.5 × at {} MB: {} (×{growth:.2})",
            SIZES_MB[1],
            SIZES_MB[0],
            verdict(memory_ok)
        ),
        format!(
            "report within 3 × one parsing pass: {} (×{slowest_ratio:.1})",
            verdict(speed_ok)
        ),
    ];
    print_report(&headline, &rows, &notes, &goals);
    Ok(if memory_ok && speed_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes a recording of about `bytes` bytes; returns its line count.
fn write_recording(path: &Path, bytes: u64) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(
        out,
        r#"{{"v":1,"type":"header","busyprobe":"bench","host":"bench","kernel":"bench","probe_mode":"tracepoint","started":"2026-11-23T10:00:00.000000000Z"}}"#
    )?;
    let (mut written, mut lines) = (0u64, 1u64);
    while written < bytes {
        let line = synthetic_line(lines);
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        lines += 1;
    }
    out.flush()?;
    Ok(lines)
}

/// Line `n` of the synthetic recording (also the synthetic stream of `bench record`'s view).
pub fn synthetic_line(n: u64) -> String {
    let ts = format!(
        "2026-11-23T10:{:02}:{:02}.{:09}Z",
        (n / 60_000_000) % 60,
        (n / 1_000_000) % 60,
        n % 1_000_000_000
    );
    if n.is_multiple_of(10_000) {
        return format!(
            r#"{{"v":1,"type":"stats","ts":"{ts}","events":{n},"drops":{{"ringbuf_full":0,"inflight_map_full":0,"path_truncated":0,"path_unreadable":0,"release_path_cut":0}},"decode_errors":0,"final":false}}"#
        ) + "\n";
    }
    let target = format!("/var/lib/containerd/tmpmounts/containerd-mount{}", n % 397);
    let common = format!(
        r#""v":1,"type":"umount","id":{n},"ts":"{ts}","pid":{},"tid":{},"comm":"containerd","uid":0,"gid":0,"mntns":4026531840,"cgroup":"/system.slice/containerd.service","cgroup_id":4242,"target":"{target}","target_abs":"{target}","flags":0,"flag_names":[],"duration_ns":5120"#,
        1000 + n % 50,
        1000 + n % 50
    );
    if !n.is_multiple_of(10) {
        return format!(r#"{{{common},"ret":0,"errno":null}}"#) + "\n";
    }
    format!(
        r#"{{{common},"ret":-16,"errno":"EBUSY","mount":{{"id":812,"mntns":4026531840,"mount_point":"{target}","root":"/","fstype":"overlay","source":"overlay","dev":"0:99","propagation":"shared:5"}},"holders":[{{"pid":{},"comm":"scanner","kind":"transient","path":"{target}/etc/passwd","fd":7,"mntns":4026531840,"container":null,"seen":"traced","mount_id":812,"via":null,"blamed":true,"note":"closed it after the failing call","opened_ns_before":1800000,"closed_ns_after":400000}},{{"pid":555,"comm":"edr-agent","kind":"fanotify","path":null,"fd":null,"mntns":4026531840,"container":null,"seen":"kernel-scan","mount_id":812,"via":null,"blamed":true,"note":"its queue holds 2 unread events","opened_ns_before":null,"closed_ns_after":null}}],"accessors":[],"uninspectable":[]}}"#,
        2000 + n % 7
    ) + "\n"
}

/// The baseline: reads `file` line by line, parsing each with serde_json; its wall time.
pub fn parse_every_line(file: &Path) -> Result<Duration> {
    use std::io::BufRead;
    let started = Instant::now();
    let mut objects = 0u64;
    for line in std::io::BufReader::with_capacity(1 << 20, File::open(file)?).lines() {
        let value: serde_json::Value = line?.parse()?;
        objects += u64::from(value.is_object());
    }
    ensure!(objects > 0, "nothing parsed in {}", file.display());
    Ok(started.elapsed())
}

/// Runs `cmd` (stdout discarded) to success; its wall time and peak RSS in KiB.
fn timed(cmd: &mut Command) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: wait4 on our own child with valid out-pointers.
    let waited = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, usage.as_mut_ptr()) };
    let elapsed = started.elapsed();
    ensure!(waited == pid.as_raw(), "wait4 on {cmd:?} failed");
    let status = std::process::ExitStatus::from_raw(status);
    ensure!(status.success(), "{cmd:?} failed: {status}");
    // SAFETY: filled by the successful wait4.
    let usage = unsafe { usage.assume_init() };
    Ok((elapsed, usage.ru_maxrss as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_lines_are_json_of_the_right_types() {
        for (n, kind) in [(1, "umount"), (10, "umount"), (10_000, "stats")] {
            let line = synthetic_line(n);
            assert!(line.ends_with('\n'));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["type"], kind, "{line}");
            assert_eq!(v["v"], 1);
            if kind == "stats" {
                // Without it busyprobe skips the line as malformed.
                assert_eq!(v["final"], false, "{line}");
            }
        }
        let busy: serde_json::Value = serde_json::from_str(&synthetic_line(20)).unwrap();
        assert_eq!(busy["errno"], "EBUSY");
        assert_eq!(busy["holders"].as_array().unwrap().len(), 2);
    }
}
