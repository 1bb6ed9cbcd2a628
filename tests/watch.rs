//! `busyprobe watch --json`: the real binary with the real probes, watching real `umount2`
//! calls made by a fixture process in a private mount namespace.

use libtest_mimic::Trial;
use std::{
    ffi::OsStr,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{
    contract::{self, assert_stats_line, assert_umount_line, is_stats, TARGET_KEPT},
    fixture::{Call, Plan},
    incident::{observe, observe_one, Fixture},
    watcher::{is_umount_of, lines_text, Stdout, Watcher},
};

/// No extra arguments for `busyprobe watch --json`.
const NO_ARGS: [&str; 0] = [];

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        every_probe_loads_and_attaches_without_a_warning,
        ebusy_nothing_visible_explains_is_unknown_with_what_was_checked,
        eperm_for_an_unprivileged_caller,
        ebusy_on_tmpfs_held_by_open_fd,
        successful_unmount,
        einval_on_plain_directory,
        enoent_on_missing_path,
        relative_target,
        non_utf8_target,
        lazy_unmount_of_busy_mount,
        forced_unmount_of_busy_mount,
        overlong_target_is_flagged_truncated,
        only_failed_and_path_filters,
        ring_buffer_full_drops_are_counted,
        sigterm_exits_zero_with_final_stats,
        sigint_exits_zero_with_final_stats,
        closed_stdout_exits_quietly,
        ebusys_on_several_mounts_back_to_back_each_name_their_own_holder,
    ]
}

/// A new temporary directory (removed on drop) and its canonical path (`/tmp` may be a
/// symlink; the kernel and the fixture see the canonical one).
fn temp_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let path = dir.path().canonicalize().expect("canonicalize temp dir");
    (dir, path)
}

/// A tmpfs mounted on `mnt`, kept busy by an open file in it.
fn busy_tmpfs(mnt: &Path) -> Plan {
    Plan::new().tmpfs(mnt).hold(mnt.join("held"))
}

/// The fixture's call failed with `errno` (so the scenario did what it meant to), and the
/// watcher's line says so: `ret` = -`errno`, `errno` = `name`.
fn assert_failed_with(call: &Call, line: &Value, errno: i32, name: &str) {
    assert_eq!(
        contract::errno_name(call.errno),
        name,
        "the fixture's umount2 result"
    );
    assert_eq!(call.errno, errno, "the fixture's umount2 errno");
    assert_eq!(line["ret"], -errno, "ret: {line}");
    assert_eq!(line["errno"], name, "errno: {line}");
}

/// The fixture's call succeeded, and the watcher's line says so.
fn assert_succeeded(call: &Call, line: &Value) {
    assert_eq!(call.errno, 0, "the fixture's umount2 succeeded");
    assert_eq!(line["ret"], 0, "ret: {line}");
    assert_eq!(line["errno"], Value::Null, "errno: {line}");
}

fn ebusy_on_tmpfs_held_by_open_fd() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let (fixture, call, line) = observe_one(&watcher, &busy_tmpfs(&mnt).umount2(&mnt, 0));
    assert_failed_with(&call, &line, libc::EBUSY, "EBUSY");
    assert_eq!(line["ret"], -16);
    assert_eq!(line["pid"], fixture.pid());
    assert_eq!(line["tid"], fixture.pid());
    assert_eq!(line["target"], mnt.to_str().unwrap());
    assert_eq!(line["target_abs"], mnt.to_str().unwrap());
    assert_eq!(line["flags"], 0);
    assert_eq!(line["flag_names"], json!([]));
    assert_eq!(line["uid"], 0);
    assert_eq!(line["mntns"], fixture.mntns);
    assert_eq!(line["comm"], fixture.comm.as_str());
    assert!(line["duration_ns"].as_u64().is_some_and(|d| d > 0));
    // The sb_umount hook names the very mount: the one the target resolved to.
    if watcher.hooks() {
        assert!(line["mount"]["id"].is_u64(), "{line}");
        assert_eq!(
            line["hooked_mount"],
            json!({"id": line["mount"]["id"], "mntns": fixture.mntns}),
            "{line}"
        );
    } else {
        assert!(
            line.get("hooked_mount").is_none(),
            "{} mode: {line}",
            watcher.mode()
        );
    }
}

fn eperm_for_an_unprivileged_caller() {
    const NOBODY: u32 = 65534;
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new().tmpfs(&mnt).become_user(NOBODY).umount2(&mnt, 0);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_failed_with(&call, &line, libc::EPERM, "EPERM");
    assert_eq!(line["pid"], fixture.pid());
    assert_eq!(line["uid"], NOBODY);
    assert_eq!(line["gid"], NOBODY);
    assert_eq!(line["target"], mnt.to_str().unwrap());
}

/// The only reference to a file on the mount is an unread `SCM_RIGHTS` message: no process has
/// it in its fd table, yet the kernel says busy. Nothing a scan can see explains it: the EBUSY
/// line must say `unknown`, with what was checked, rather than blame anyone or stay silent.
fn ebusy_nothing_visible_explains_is_unknown_with_what_was_checked() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new()
        .tmpfs(&mnt)
        .hold_in_flight(mnt.join("sent"))
        .umount2(&mnt, 0);
    let (_fixture, call, line) = observe_one(&watcher, &plan);
    assert_failed_with(&call, &line, libc::EBUSY, "EBUSY");
    assert_eq!(
        line["mount"]["mount_point"],
        mnt.to_str().unwrap(),
        "{line}"
    );
    let holders = line["holders"]
        .as_array()
        .expect("holders on an EBUSY line");
    assert_eq!(holders.len(), 1, "exactly one holder: {line}");
    let h = &holders[0];
    assert_eq!(h["kind"], "unknown", "{line}");
    assert_eq!(h["pid"], Value::Null, "{line}");
    assert_eq!(h["blamed"], true, "{line}");
    let note = h["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("nothing found: checked "), "{note}");
    assert!(
        note.contains("mount namespaces, submounts, loop devices, swap files and fanotify"),
        "{note}"
    );
    assert!(note.contains("let go before the scan"), "{note}");
    assert!(note.contains("fds passed over Unix sockets"), "{note}");
}

fn successful_unmount() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = busy_tmpfs(&mnt).release().umount2(&mnt, 0);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_succeeded(&call, &line);
    assert_eq!(line["target"], mnt.to_str().unwrap());
    // The hook runs for every attempt that gets to the busy check, successes too.
    let hooked = &line["hooked_mount"];
    match watcher.hooks() {
        true => assert!(
            hooked["id"].is_u64() && hooked["mntns"] == fixture.mntns,
            "{line}"
        ),
        false => assert!(hooked.is_null(), "{} mode: {line}", watcher.mode()),
    }
}

fn einval_on_plain_directory() {
    let (_dir, tmp) = temp_dir();
    let plain = tmp.join("plain");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new().mkdir(&plain).umount2(&plain, 0);
    let (_fixture, call, line) = observe_one(&watcher, &plan);
    assert_failed_with(&call, &line, libc::EINVAL, "EINVAL");
    assert_eq!(line["target"], plain.to_str().unwrap());
    // Not a mount point: the kernel refuses before the sb_umount hook, in every mode.
    assert!(line.get("hooked_mount").is_none(), "{line}");
}

fn enoent_on_missing_path() {
    let (_dir, tmp) = temp_dir();
    let missing = tmp.join("missing");
    let watcher = Watcher::start(&NO_ARGS);
    let (_fixture, call, line) = observe_one(&watcher, &Plan::new().umount2(&missing, 0));
    assert_failed_with(&call, &line, libc::ENOENT, "ENOENT");
    assert_eq!(line["target"], missing.to_str().unwrap());
}

fn relative_target() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new().tmpfs(&mnt).chdir(&tmp).umount2("mnt", 0);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_succeeded(&call, &line);
    assert_eq!(
        fixture.report.cwd,
        tmp.as_os_str().as_bytes(),
        "fixture cwd"
    );
    assert_eq!(line["target"], "mnt");
    assert_eq!(line["target_abs"], mnt.to_str().unwrap());
}

fn non_utf8_target() {
    let (_dir, tmp) = temp_dir();
    let name = OsStr::from_bytes(b"mnt-\xff\xfe");
    let mnt = tmp.join(name);
    let watcher = Watcher::start(&NO_ARGS);
    let (_fixture, call, line) = observe_one(&watcher, &Plan::new().tmpfs(&mnt).umount2(&mnt, 0));
    assert_succeeded(&call, &line);
    let exact = mnt.as_os_str().as_bytes();
    for field in ["target", "target_abs"] {
        let b64 = line[format!("{field}_b64")].as_str();
        let b64 = b64.unwrap_or_else(|| panic!("{field}_b64 is a string: {line}"));
        assert_eq!(
            crate::support::decode_b64(b64).as_deref(),
            Some(exact),
            "{field}_b64"
        );
        assert_eq!(
            line[field],
            String::from_utf8_lossy(exact).as_ref(),
            "{field}"
        );
    }
}

fn lazy_unmount_of_busy_mount() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = busy_tmpfs(&mnt).umount2(&mnt, libc::MNT_DETACH);
    let (_fixture, call, line) = observe_one(&watcher, &plan);
    assert_succeeded(&call, &line);
    assert_eq!(line["flags"], 2);
    assert_eq!(line["flag_names"], json!(["MNT_DETACH"]));
}

fn forced_unmount_of_busy_mount() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = busy_tmpfs(&mnt).umount2(&mnt, libc::MNT_FORCE);
    let (_fixture, call, line) = observe_one(&watcher, &plan);
    eprintln!(
        "forced_unmount_of_busy_mount: umount2(MNT_FORCE) of a busy tmpfs gave errno {} ({})",
        call.errno,
        contract::errno_name(call.errno)
    );
    // `observe_one` checked `ret` and `errno` against what the fixture saw.
    assert_eq!(line["ret"], -i64::from(call.errno));
    assert_eq!(line["flags"], 1);
    assert_eq!(line["flag_names"], json!(["MNT_FORCE"]));
}

fn overlong_target_is_flagged_truncated() {
    let (_dir, tmp) = temp_dir();
    let mut long = tmp.into_os_string().into_vec();
    while long.len() < 5000 {
        long.extend_from_slice(b"/");
        long.extend_from_slice(&[b'a'; 200]);
    }
    long.truncate(5000);
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new().umount2(OsStr::from_bytes(&long), 0);
    let (_fixture, call, line) = observe_one(&watcher, &plan);
    assert_failed_with(&call, &line, libc::ENAMETOOLONG, "ENAMETOOLONG");
    assert_eq!(line["target_truncated"], true);
    let target = line["target"].as_str().expect("target is a string");
    assert_eq!(target.len(), TARGET_KEPT);
    assert_eq!(target.as_bytes(), &long[..TARGET_KEPT]);
}

fn only_failed_and_path_filters() {
    let (_dir, tmp) = temp_dir();
    let (_other_dir, other) = temp_dir();
    let mnt = tmp.join("mnt");
    let sentinel = tmp.join("sentinel");
    // Shares `tmp` as a string prefix but not as a path: outside `--path`.
    let sibling = PathBuf::from(format!("{}c", tmp.display()));
    let watcher = Watcher::start(&[
        OsStr::new("--only-failed"),
        OsStr::new("--path"),
        tmp.as_os_str(),
    ]);
    let plan = busy_tmpfs(&mnt)
        .mkdir(&sentinel)
        .umount2(&mnt, 0) // EBUSY under --path: shown
        .release()
        .umount2(&mnt, 0) // succeeds: hidden by --only-failed
        .umount2(&other, 0) // EINVAL outside --path: hidden
        .umount2(&sibling, 0) // ENOENT at `<tmp>c`: hidden
        .umount2(&sentinel, 0); // EINVAL under --path: shown, the last line
    let fixture = Fixture::run(&plan);
    let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
    let expected = [libc::EBUSY, 0, libc::EINVAL, libc::ENOENT, libc::EINVAL];
    assert_eq!(errnos, expected, "the fixture's umount2 results");

    let pid = fixture.pid();
    // An EBUSY line waits for its holder scan, so it may come after the sentinel's: read
    // until both are in, then put them in kernel order (`id`).
    let (mut saw_sentinel, mut saw_ebusy) = (false, false);
    let seen = watcher.read_until("the sentinel's and the EBUSY's lines", |v| {
        if is_umount_of(v, pid) {
            saw_sentinel |= v["target"] == sentinel.to_str().unwrap();
            saw_ebusy |= v["errno"] == "EBUSY";
        }
        saw_sentinel && saw_ebusy
    });
    let mut shown: Vec<Value> = seen.into_iter().filter(|v| is_umount_of(v, pid)).collect();
    shown.sort_by_key(|v| v["id"].as_u64());
    assert_eq!(
        shown.len(),
        2,
        "only the EBUSY and the sentinel are shown:{}",
        lines_text(&shown)
    );
    let calls = &fixture.report.calls;
    assert_umount_line(&shown[0], &fixture, &calls[0]);
    assert_umount_line(&shown[1], &fixture, &calls[4]);
    assert_eq!(shown[0]["errno"], "EBUSY");
    assert_eq!(shown[0]["target"], mnt.to_str().unwrap());
}

/// With a ring buffer of one page, an unmount whose target is 4,000 bytes long cannot be
/// sent (its record, cut after the target, is 4,096 bytes plus the ring's own header): each
/// is lost and counted. Shorter targets fit, so the calls are made on such a path (it does
/// not exist: ENOENT).
fn ring_buffer_full_drops_are_counted() {
    let (_dir, tmp) = temp_dir();
    let target = path_of_len(&tmp, 4000);
    let args = ["--ring-buffer-size", "4096", "--stats-interval", "1"];
    let mut watcher = Watcher::start(&args);
    let before = watcher.read_until("a periodic stats line", is_stats);
    let baseline = assert_stats_line(before.last().unwrap());
    let plan = (0..3).fold(Plan::new(), |plan, _| plan.umount2(&target, 0));
    let fixture = Fixture::run(&plan);
    for call in &fixture.report.calls {
        assert_eq!(call.errno, libc::ENOENT, "the fixture's umount2 result");
    }
    let ended = watcher.stop(Signal::SIGTERM);
    let stderr = watcher.stderr();
    assert_eq!(
        ended.status.code(),
        Some(0),
        "exit status; stderr:\n{stderr}"
    );
    let printed: Vec<Value> = ended
        .rest
        .iter()
        .filter(|v| is_umount_of(v, fixture.pid()))
        .cloned()
        .collect();
    assert!(
        printed.is_empty(),
        "no record of a 4,000-byte target fits in one page: {}",
        lines_text(&printed)
    );
    let last = ended.rest.last().expect("a final stats line");
    assert!(is_stats(last), "the last line is a stats line: {last}");
    let dropped = assert_stats_line(last);
    assert!(
        dropped >= baseline + 3,
        "drops.ringbuf_full {dropped} >= {baseline} (before) + 3: {last}"
    );
}

/// A path under `dir` exactly `len` bytes long, of short components (`dir/a/a/.../a`), that
/// does not exist.
fn path_of_len(dir: &Path, len: usize) -> PathBuf {
    let mut path = dir.as_os_str().as_bytes().to_vec();
    while path.len() + 2 <= len {
        path.extend_from_slice(b"/a");
    }
    if path.len() < len {
        path.push(b'b');
    }
    assert_eq!(path.len(), len);
    PathBuf::from(std::ffi::OsString::from_vec(path))
}

fn sigterm_exits_zero_with_final_stats() {
    exits_zero_with_final_stats(Signal::SIGTERM);
}

fn sigint_exits_zero_with_final_stats() {
    exits_zero_with_final_stats(Signal::SIGINT);
}

/// After `signal` the watcher exits 0 and its last stdout line is a stats line.
fn exits_zero_with_final_stats(signal: Signal) {
    let (_dir, tmp) = temp_dir();
    let mut watcher = Watcher::start(&NO_ARGS);
    // One event first, so that the watcher has done some work before it is stopped.
    let (fixture, call, _line) = observe_one(&watcher, &Plan::new().umount2(&tmp, 0));
    assert_eq!(call.errno, libc::EINVAL);
    drop(fixture);
    let ended = watcher.stop(signal);
    assert_eq!(
        ended.status.code(),
        Some(0),
        "exit status after {signal}; stderr:\n{}",
        watcher.stderr()
    );
    let last = ended.rest.last().expect("a final stats line");
    assert!(is_stats(last), "the last line is a stats line: {last}");
    assert_stats_line(last);
}

fn closed_stdout_exits_quietly() {
    let (_dir, tmp) = temp_dir();
    let mut watcher = Watcher::start_with(&NO_ARGS, Stdout::Close);
    let fixture = Fixture::run(&Plan::new().umount2(&tmp, 0).umount2(&tmp, 0));
    for call in &fixture.report.calls {
        assert_eq!(call.errno, libc::EINVAL, "the fixture's umount2 result");
    }
    let status = watcher.wait_exit();
    let stderr = watcher.stderr();
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{stderr}");
    // The collected stderr is complete: it starts with the attach message.
    assert!(stderr.contains("probes attached"), "stderr:\n{stderr}");
    for noise in ["Broken pipe", "broken pipe", "EPIPE", "panicked"] {
        assert!(
            !stderr.contains(noise),
            "stderr mentions {noise:?}:\n{stderr}"
        );
    }
}

/// On this kernel (and each kernel of `cargo xtask vm-test`) every program of the default mode
/// loads and attaches: a verifier refusal or a missing tracepoint would only be a warning on
/// stderr (that part of tracking off), so a warning here is a failure.
fn every_probe_loads_and_attaches_without_a_warning() {
    let mut watcher = Watcher::start(&[] as &[&str]);
    let ended = watcher.stop(nix::sys::signal::Signal::SIGINT);
    assert!(ended.status.success(), "{:?}", ended.status);
    let stderr = watcher.stderr();
    assert!(
        !stderr.contains("WARN"),
        "a program did not load or attach:\n{stderr}"
    );
}

/// EBUSYs on three mounts, four rounds back to back: decoded together, they share attribution
/// passes (one scan for all the mounts a pass answers); each line must still name exactly its
/// own mount's holder, never another mount's.
fn ebusys_on_several_mounts_back_to_back_each_name_their_own_holder() {
    let (_dir, tmp) = temp_dir();
    let mounts: Vec<PathBuf> = (0..3).map(|k| tmp.join(format!("m{k}"))).collect();
    let mut plan = Plan::new();
    for mnt in &mounts {
        plan = plan.tmpfs(mnt).hold(mnt.join("held"));
    }
    for _ in 0..4 {
        for mnt in &mounts {
            plan = plan.umount2(mnt, 0);
        }
    }
    let watcher = Watcher::start(&NO_ARGS);
    let (fixture, lines) = observe(&watcher, &plan);
    assert_eq!(lines.len(), 12);
    for (line, call) in lines.iter().zip(&fixture.report.calls) {
        assert_failed_with(call, line, libc::EBUSY, "EBUSY");
        let held = format!("{}/held", line["target"].as_str().expect("target"));
        let holders: Vec<_> = line["holders"]
            .as_array()
            .expect("holders on an EBUSY line")
            .iter()
            .map(|h| (h["kind"].clone(), h["pid"].clone(), h["path"].clone()))
            .collect();
        assert_eq!(
            holders,
            [(json!("fd"), json!(fixture.pid()), json!(held))],
            "{line}"
        );
    }
}
