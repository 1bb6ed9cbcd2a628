//! `busyprobe record`: rotation keeps exactly N old files, every file is mode 0600 and starts
//! with a `header` line, SIGTERM exits 0 with the last line whole, and `kill -9` loses at
//! most the line being written.

use libtest_mimic::Trial;
use std::{ffi::OsStr, os::unix::fs::PermissionsExt, path::Path, process::Command};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::support::{
    fixture::Plan,
    incident::Fixture,
    process::{self, Reaped},
    watcher::{start_attached, LINE_TIMEOUT},
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        record_rotates_and_keeps_n_files_of_mode_0600,
        record_killed_keeps_every_whole_line,
    ]
}

/// `busyprobe record -o FILE ARGS`, returned once its probes are attached.
fn start_record(file: &Path, args: &[&str]) -> Reaped {
    let mut all: Vec<&OsStr> = vec!["record".as_ref(), "-o".as_ref(), file.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let (record, _stderr) = start_attached(&all);
    record
}

/// Stops `record` with `signal` and waits (at most [`LINE_TIMEOUT`]) for its exit.
fn stop(mut record: Reaped, signal: Signal) -> std::process::ExitStatus {
    kill(Pid::from_raw(record.id() as i32), signal).unwrap();
    process::wait(&mut record, LINE_TIMEOUT)
}

/// Makes `n` failing unmounts (EINVAL on a plain directory) under `tmp`.
fn unmount_attempts(tmp: &Path, n: usize) -> u32 {
    let plain = tmp.join("plain");
    let plan = (0..n).fold(Plan::new().mkdir(&plain), |p, _| p.umount2(&plain, 0));
    let fixture = Fixture::run(&plan);
    assert!(fixture.report.calls.iter().all(|c| c.errno == libc::EINVAL));
    fixture.pid()
}

/// Every line of `path` parsed; the last one may be torn when `torn_ok`.
fn lines_of(path: &Path, torn_ok: bool) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<&str> = text.split('\n').collect();
    let tail = lines.pop().unwrap_or_default();
    assert!(
        torn_ok || tail.is_empty(),
        "{} ends with a whole line: {tail:?}",
        path.display()
    );
    lines
        .iter()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l:?}: {e}", path.display()))
        })
        .collect()
}

fn record_rotates_and_keeps_n_files_of_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let file = tmp.join("rec.jsonl");
    let record = start_record(
        &file,
        &[
            "--rotate",
            "4K",
            "--keep",
            "2",
            "--only-failed",
            "--path",
            tmp.to_str().unwrap(),
        ],
    );
    // The fixture's calls have returned: their records are in the ring buffer, which record
    // drains before it exits on SIGTERM.
    unmount_attempts(&tmp, 60);
    let status = stop(record, Signal::SIGTERM);
    assert!(status.success(), "SIGTERM exits 0: {status}");
    let mut names: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("rec.jsonl"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["rec.jsonl", "rec.jsonl.1", "rec.jsonl.2"],
        "the file and exactly 2 old ones"
    );
    for name in &names {
        let path = tmp.join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
        let lines = lines_of(&path, false);
        assert_eq!(lines[0]["type"], "header", "{name} starts with its header");
        assert_eq!(lines[0]["v"], 1);
        assert!(lines.len() > 1, "{name} has events");
    }
    let last = lines_of(&file, false).pop().unwrap();
    assert_eq!(
        last["type"], "stats",
        "the last line is the final stats: {last}"
    );
    assert_eq!(last["final"], true, "{last}");
}

fn record_killed_keeps_every_whole_line() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let file = tmp.join("rec.jsonl");
    let record = start_record(&file, &["--path", tmp.to_str().unwrap()]);
    let pid = unmount_attempts(&tmp, 20);
    // Kill it once the 20 lines are written (each line is flushed as it is written).
    let attempts_in_file = || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["type"] == "umount" && l["pid"] == pid)
            .count()
    };
    let written = process::poll(LINE_TIMEOUT, || (attempts_in_file() >= 20).then_some(()));
    stop(record, Signal::SIGKILL);
    assert!(
        written.is_some(),
        "record wrote {} of the 20 attempts in {LINE_TIMEOUT:?}",
        attempts_in_file()
    );
    let lines = lines_of(&file, true);
    assert_eq!(lines[0]["type"], "header");
    let attempts = lines
        .iter()
        .filter(|l| l["type"] == "umount" && l["pid"] == pid)
        .count();
    assert_eq!(attempts, 20, "every attempt before the kill is in the file");
    // The report reads what the kill left, whole lines only.
    let report = process::output(
        Command::new(env!("CARGO_BIN_EXE_busyprobe"))
            .arg("report")
            .arg(&file),
    );
    let markdown = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{markdown}\n{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(markdown.starts_with("# busyprobe report\n"), "{markdown}");
    assert!(
        markdown.contains("- 20 unmount attempts in 1 file(s)"),
        "{markdown}"
    );
    assert!(markdown.contains("- 20 failed: EINVAL 20"), "{markdown}");
}
