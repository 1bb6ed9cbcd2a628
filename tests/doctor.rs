//! `busyprobe doctor` as root (every probe kind really tried) and as an unprivileged user
//! (what could not be checked is said), plus the privilege error of `busyprobe watch`.

use libtest_mimic::Trial;
use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::PathBuf,
    process::{Command, Output},
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        auto_mode_runs_what_doctor_predicts_and_says_why,
        doctor_as_root_tries_every_probe_kind,
        doctor_without_root_says_what_it_could_not_check,
        watch_without_root_explains_and_fails,
    ]
}

/// The unprivileged user the tests switch to.
const NOBODY: u32 = 65534;

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = crate::support::output_of_fresh_copy(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// The table row for `check`: its verdict and detail.
fn row<'a>(stdout: &'a str, check: &str) -> (&'a str, &'a str) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(check) && l[check.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no `{check}` row in:\n{stdout}"));
    let rest = line[check.len()..].trim_start();
    let verdict = ["not checked", "yes", "no", "-"]
        .into_iter()
        .find(|v| rest.starts_with(v))
        .unwrap_or_else(|| panic!("no verdict in {line:?}"));
    (verdict, rest[verdict.len()..].trim())
}

/// A copy of the binary in a directory an unprivileged user can reach (the checkout may not be).
fn binary_for_nobody() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("busyprobe");
    std::fs::copy(env!("CARGO_BIN_EXE_busyprobe"), &bin).expect("copy binary");
    (dir, bin)
}

fn doctor_as_root_tries_every_probe_kind() {
    let (out, stdout, stderr) = run(Command::new(env!("CARGO_BIN_EXE_busyprobe")).arg("doctor"));
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let release = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    assert_eq!(row(&stdout, "kernel"), ("-", release.as_str()));
    assert_eq!(row(&stdout, "BTF").0, "yes");
    let (verdict, offsets) = row(&stdout, "struct offsets");
    assert_eq!(verdict, "yes", "{stdout}");
    for field in [
        "task_struct.nsproxy=",
        "nsproxy.mnt_ns=",
        "mnt_namespace.ns.inum=",
    ] {
        let value = offsets
            .split(field)
            .nth(1)
            .unwrap_or_else(|| panic!("{field} missing: {offsets}"));
        let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
        assert!(!digits.is_empty(), "{field} has no number: {offsets}");
    }
    let (verdict, detail) = row(&stdout, "privileges");
    assert_eq!(verdict, "yes");
    assert!(detail.starts_with("euid 0;"), "{detail}");
    assert_eq!(row(&stdout, "ring buffer").0, "yes", "{stdout}");
    let (verdict, detail) = row(&stdout, "tracepoint");
    assert_eq!(verdict, "yes", "{stdout}");
    assert!(detail.contains("sys_enter_umount loads"), "{detail}");
    for kind in ["raw_tracepoint", "tp_btf", "fentry", "BPF LSM"] {
        let (verdict, detail) = row(&stdout, kind);
        assert!(
            verdict == "yes" || verdict == "no",
            "{kind}: {verdict} {detail}"
        );
        if verdict == "no" {
            assert!(!detail.is_empty(), "{kind} refused without a reason");
        }
    }
    let (verdict, detail) = row(&stdout, "BPF iterator");
    assert_eq!(
        verdict, "yes",
        "the kernel holder scan must load here: {detail}"
    );
    let mode = stdout
        .lines()
        .find_map(|l| l.strip_prefix("mode: "))
        .expect("mode line");
    let want = match expected_mode(&stdout) {
        "enhanced" => "enhanced:",
        "fentry" => "fentry:",
        _ => "tracepoint:",
    };
    assert!(mode.starts_with(want), "{mode}");
    let fentry = row(&stdout, "fentry").0 == "yes";
    assert_eq!(mode.contains("fentry is refused"), !fentry, "{mode}");
    if want == "fentry:" {
        assert!(mode.contains("; no security hooks: "), "{mode}");
    }
    let (_, losses) = row(&stdout, "losses");
    assert!(
        losses.contains(
            "ringbuf_full, inflight_map_full, path_truncated, path_unreadable, release_path_cut"
        ),
        "every loss counter is named: {losses}"
    );
}

fn doctor_without_root_says_what_it_could_not_check() {
    let (_dir, bin) = binary_for_nobody();
    let (out, stdout, stderr) = run(Command::new(bin).arg("doctor").uid(NOBODY).gid(NOBODY));
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let (verdict, detail) = row(&stdout, "privileges");
    assert_eq!(verdict, "no");
    assert!(detail.starts_with(&format!("euid {NOBODY};")), "{detail}");
    assert!(detail.contains("CAP_BPF no"), "{detail}");
    for kind in [
        "ring buffer",
        "tracepoint",
        "raw_tracepoint",
        "tp_btf",
        "fentry",
        "BPF LSM",
        "BPF iterator",
    ] {
        let (verdict, detail) = row(&stdout, kind);
        assert_eq!(verdict, "not checked", "{kind}");
        assert!(detail.contains("needs root"), "{kind}: {detail}");
    }
    assert_eq!(
        row(&stdout, "BTF").0,
        "yes",
        "BTF is world-readable: {stdout}"
    );
    assert!(
        stdout.contains("\nmode: not checked without root"),
        "{stdout}"
    );
}

fn watch_without_root_explains_and_fails() {
    let (_dir, bin) = binary_for_nobody();
    let (out, stdout, stderr) = run(Command::new(bin).arg("watch").uid(NOBODY).gid(NOBODY));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.starts_with("busyprobe: error: `busyprobe watch` loads eBPF programs"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("runs as uid {NOBODY}")),
        "{stderr}"
    );
    assert!(stderr.contains("sudo busyprobe watch"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

/// The mode `--mode auto` runs in by doctor's rows: enhanced where fentry and the BPF LSM
/// programs work and the `bpf` LSM is active, fentry where fentry works, else tracepoint.
fn expected_mode(doctor: &str) -> &'static str {
    let yes = |check: &str| row(doctor, check).0 == "yes";
    match (yes("fentry"), yes("BPF LSM") && yes("active LSMs")) {
        (true, true) => "enhanced",
        (true, false) => "fentry",
        (false, _) => "tracepoint",
    }
}

/// `watch --mode auto` (the default) runs the mode `doctor` predicts, saying why on its
/// `probes attached` line when it is less than enhanced; `--mode fentry` runs fentry mode
/// where the kernel allows it; `--mode fentry` and `--mode enhanced` where the kernel refuses
/// fentry are errors that say so.
fn auto_mode_runs_what_doctor_predicts_and_says_why() {
    let (_, doctor, _) = run(Command::new(env!("CARGO_BIN_EXE_busyprobe")).arg("doctor"));
    let expected = expected_mode(&doctor);
    let attached = attached_line(&["watch", "--mode", "auto"]);
    let want = match expected {
        "enhanced" => "probes attached (enhanced mode)",
        "fentry" => "probes attached (fentry mode: no security hooks: ",
        _ => "probes attached (tracepoint mode: fentry is refused here: ",
    };
    assert!(
        attached.contains(want),
        "doctor predicts {expected}: {attached}\n{doctor}"
    );
    if expected == "tracepoint" {
        for mode in ["fentry", "enhanced"] {
            let (out, _, stderr) = run(Command::new(env!("CARGO_BIN_EXE_busyprobe"))
                .args(["watch", "--mode", mode])
                .env_remove("BUSYPROBE_MODE"));
            assert!(!out.status.success(), "{stderr}");
            let said = format!("--mode {mode}: this kernel refuses fentry programs");
            assert!(stderr.contains(&said), "{stderr}");
        }
    } else {
        let attached = attached_line(&["watch", "--mode", "fentry"]);
        assert!(
            attached.contains("probes attached (fentry mode)"),
            "{attached}"
        );
    }
}

/// Starts busyprobe with `args`, returns its `probes attached` line (waiting at most
/// [`ATTACH_TIMEOUT`]) and stops it.
fn attached_line(args: &[&str]) -> String {
    use crate::support::{
        lines::{Lines, Next},
        process,
        watcher::{ATTACH_TIMEOUT, LINE_TIMEOUT},
    };
    let mut child = process::spawn(
        Command::new(env!("CARGO_BIN_EXE_busyprobe"))
            .args(args)
            .env_remove("BUSYPROBE_MODE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let stderr = Lines::spawn(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + ATTACH_TIMEOUT;
    let mut seen = Vec::new();
    let attached = loop {
        match stderr.next_until(deadline) {
            Next::Line(line) if line.contains("probes attached") => break Some(line),
            Next::Line(line) => seen.push(line),
            _ => break None,
        }
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    process::wait(&mut child, LINE_TIMEOUT);
    attached.unwrap_or_else(|| panic!("no `probes attached` line: {seen:?}"))
}
