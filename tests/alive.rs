//! Alive after unmount: an unmount that succeeds while the filesystem stays in use gets a
//! `warning` line naming what keeps it alive (a copy in another namespace; a process holding
//! the lazily detached mount).

use libtest_mimic::Trial;
use std::path::Path;

use serde_json::{json, Value};

use crate::support::{
    contract::assert_umount_line,
    fixture::{Call, Plan},
    holder::Helper,
    incident::Fixture,
    watcher::Watcher,
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        private_copy_keeps_the_filesystem_alive_after_unmount,
        lazy_unmount_with_an_open_file_warns,
        a_holder_of_a_mount_detached_before_the_scan_is_named_by_its_old_path,
        a_mount_detached_before_any_table_showed_it_is_exact_with_the_hook,
    ]
}

/// A watcher of unmounts under `dir` only: the other tests' unmounts, running in parallel,
/// cause no scans in it.
fn only_under(dir: &Path) -> Watcher {
    Watcher::start(&[std::ffi::OsStr::new("--path"), dir.as_os_str()])
}

/// Runs a fixture that sets up with `setup`, then holds `mnt/held` and fails to unmount `mnt`
/// (EBUSY), then, once told, lets go of it if `let_go` and unmounts `mnt` with each of
/// `flags` in turn; returns the fixture and those calls with their lines. busyprobe knows
/// what a successful unmount removed from the mount tables it keeps, and it finds a new
/// namespace's table within a second, or at once when an EBUSY comes from it: the test lets
/// the fixture go on once that EBUSY's line is written (it is written after the table was
/// read), as a runtime retries after a failure.
fn unmount_after_an_ebusy(
    watcher: &Watcher,
    setup: Plan,
    mnt: &Path,
    let_go: bool,
    flags: &[i32],
) -> (Fixture, Vec<(Call, Value)>) {
    let go = mnt.with_file_name("go");
    let mut plan = setup.hold(mnt.join("held")).umount2(mnt, 0).wait_for(&go);
    if let_go {
        plan = plan.release();
    }
    let plan = flags.iter().fold(plan, |plan, &f| plan.umount2(mnt, f));
    let fixture = std::thread::spawn(move || Fixture::run(&plan));
    let target = mnt.to_str().unwrap();
    watcher.read_until("the EBUSY before the unmount", |v| {
        v["type"] == "umount" && v["target"] == target && v["errno"] == "EBUSY"
    });
    std::fs::write(&go, b"").unwrap();
    let fixture = fixture.join().expect("the fixture ran");
    let calls = &fixture.report.calls;
    assert_eq!(calls.len(), 1 + flags.len(), "the plan's umount2 calls");
    assert_eq!(calls[0].errno, libc::EBUSY, "the held file makes it busy");
    // An EBUSY's line is written once its scan is done, maybe after later calls': by `id`.
    let mut lines = watcher.umount_lines_of(fixture.pid(), flags.len());
    lines.sort_by_key(|l| l["id"].as_u64());
    let after: Vec<(Call, Value)> = calls[1..].iter().cloned().zip(lines).collect();
    for (call, line) in &after {
        assert_umount_line(line, &fixture, call);
    }
    (fixture, after)
}

/// The warning line that follows the successful unmount line `line`.
fn warning_after(watcher: &Watcher, line: &Value) -> Value {
    let id = line["id"].clone();
    let seen = watcher.read_until("the alive-after-unmount warning", |v| {
        v["type"] == "warning" && v["umount_id"] == id
    });
    let warning = seen.last().expect("read_until returns the match").clone();
    assert_eq!(warning["v"], 1, "{warning}");
    assert_eq!(warning["warning"], "alive-after-unmount", "{warning}");
    assert_eq!(warning["target"], line["target"], "{warning}");
    warning
}

/// The warning's holders.
fn holders(warning: &Value) -> &Vec<Value> {
    warning["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {warning}"))
}

fn private_copy_keeps_the_filesystem_alive_after_unmount() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let inside = mnt.join("dir");
    let watcher = only_under(&tmp);
    let helper = Helper::new()
        .wrapped(&["unshare", "-m", "--propagation", "private"])
        .chdir(&inside);
    let setup = Plan::new().tmpfs(&mnt).mkdir(&inside).spawn(helper);
    let (fixture, mut after) = unmount_after_an_ebusy(&watcher, setup, &mnt, true, &[0]);
    let (call, line) = after.remove(0);
    assert_eq!(call.errno, 0, "a private copy cannot make the unmount fail");
    let warning = warning_after(&watcher, &line);
    assert_eq!(
        warning["mount"]["mount_point"],
        mnt.to_str().unwrap(),
        "{warning}"
    );
    assert_eq!(warning["mount"]["fstype"], "tmpfs", "{warning}");
    let helper_pid = fixture.report.helpers[0].pid;
    let copy = holders(&warning)
        .iter()
        .find(|h| h["kind"] == "mount-copy")
        .unwrap_or_else(|| panic!("no mount-copy holder: {warning}"));
    assert_eq!(
        copy["pid"], helper_pid,
        "the copy's namespace is the helper's: {warning}"
    );
    assert_eq!(copy["path"], mnt.to_str().unwrap(), "{warning}");
    assert_ne!(copy["mntns"], line["mntns"], "{warning}");
}

fn lazy_unmount_with_an_open_file_warns() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let watcher = only_under(&tmp);
    let setup = Plan::new().tmpfs(&mnt);
    // The file that made the plain unmount fail still holds the lazily detached mount.
    let (fixture, mut after) =
        unmount_after_an_ebusy(&watcher, setup, &mnt, false, &[libc::MNT_DETACH]);
    let (call, line) = after.remove(0);
    assert_eq!(call.errno, 0, "a lazy unmount succeeds");
    let warning = warning_after(&watcher, &line);
    let fd = holders(&warning)
        .iter()
        .find(|h| h["kind"] == "fd")
        .unwrap_or_else(|| panic!("no fd holder: {warning}"));
    assert_eq!(fd["pid"], fixture.pid(), "{warning}");
    assert_eq!(fd["mount_id"], warning["mount"]["id"], "{warning}");
    // The kernel names it `/held` (from the detached mount's root): named as it was.
    assert_eq!(
        (&fd["path"], &fd["mount_detached"]),
        (&json!(mnt.join("held").to_str().unwrap()), &json!(true)),
        "the detached file, by the path it had: {warning}"
    );
}

/// The one holder of the EBUSY `line`: the fixture (the caller) holding `mnt/held`, on the
/// line's mount.
fn the_fixtures_held_file<'a>(line: &'a Value, fixture: &Fixture, mnt: &Path) -> &'a Value {
    let holders = line["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {line}"));
    let [fd] = holders.as_slice() else {
        panic!("one holder: {line}");
    };
    let held = mnt.join("held");
    assert_eq!(
        (&fd["kind"], &fd["pid"], &fd["path"], &fd["mount_id"]),
        (
            &json!("fd"),
            &json!(fixture.pid()),
            &json!(held.to_str().unwrap()),
            &line["mount"]["id"]
        ),
        "{line}"
    );
    assert_eq!(
        fd["by_caller"], true,
        "the fixture holds what it unmounts: {line}"
    );
    fd
}

/// Whether the fixture's held file `fd` (of the EBUSY `line`) is named as on a detached
/// mount; false, to run the trial again, when the scan ran before the detach on a trial
/// before the 5th.
fn detached_when_scanned(fd: &Value, trial: u32, line: &Value) -> bool {
    if fd["mount_detached"] != true && trial < 5 {
        eprintln!("trial {trial}: the scan ran before the detach; again");
        return false;
    }
    assert_eq!(
        fd["mount_detached"], true,
        "detached before the scan: {line}"
    );
    true
}

/// A file held on a mount makes its unmount fail, and the mount is lazily unmounted right
/// after (`umount -l` retried by a runtime), before busyprobe scans for holders: the kernel
/// then names the held file from the detached mount's root (`/held`). The holder is named by
/// the path it had under the old mount point, marked `mount_detached`.
/// A scan that ran before the detach (it runs on its own thread, the detach follows the
/// failure by one call) sees the mount still there: then the trial runs again, at most 5
/// times.
fn a_holder_of_a_mount_detached_before_the_scan_is_named_by_its_old_path() {
    for trial in 1..=5 {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().canonicalize().unwrap();
        let mnt = tmp.join("mnt");
        let watcher = only_under(&tmp);
        let setup = Plan::new().tmpfs(&mnt);
        let (fixture, after) =
            unmount_after_an_ebusy(&watcher, setup, &mnt, false, &[0, libc::MNT_DETACH]);
        let errnos: Vec<i32> = after.iter().map(|(call, _)| call.errno).collect();
        assert_eq!(errnos, [libc::EBUSY, 0], "busy again, then detached");
        let line = &after[0].1;
        let fd = the_fixtures_held_file(line, &fixture, &mnt);
        if !detached_when_scanned(fd, trial, line) {
            continue;
        }
        return;
    }
}

/// A mount made in a brand-new namespace, failed (a file held on it) and lazily unmounted by
/// the very next call, before busyprobe read a table showing it. In enhanced mode the
/// `sb_umount` hook's mount (its id, device and root) is enough: the holder is named, by the
/// path it had, on that very mount. Outside it the path alone cannot say what was there: the
/// line says the mount was gone (unless busyprobe read the new namespace's table before the
/// detach: then the holder is named the same way). A scan that ran before the detach sees
/// the mount still there: then the trial runs again, at most 5 times.
fn a_mount_detached_before_any_table_showed_it_is_exact_with_the_hook() {
    for trial in 1..=5 {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().canonicalize().unwrap();
        let mnt = tmp.join("mnt");
        let watcher = only_under(&tmp);
        let plan = Plan::new()
            .tmpfs(&mnt)
            .hold(mnt.join("held"))
            .umount2(&mnt, 0)
            .umount2(&mnt, libc::MNT_DETACH);
        let fixture = Fixture::run(&plan);
        let calls = &fixture.report.calls;
        let errnos: Vec<i32> = calls.iter().map(|c| c.errno).collect();
        assert_eq!(errnos, [libc::EBUSY, 0], "busy, then detached");
        let mut lines = watcher.umount_lines_of(fixture.pid(), 2);
        lines.sort_by_key(|l| l["id"].as_u64());
        let line = &lines[0];
        assert_umount_line(line, &fixture, &calls[0]);
        let gone = line["attribution_error"].as_str().is_some_and(|e| {
            e.starts_with("the mount was gone before busyprobe could read the mount table")
        });
        if gone {
            assert!(
                !watcher.hooks(),
                "enhanced mode: the hook's mount is enough to find its holders: {line}"
            );
            eprintln!(
                "{} mode: the mount was gone, as expected: {line}",
                watcher.mode()
            );
            return;
        }
        let fd = the_fixtures_held_file(line, &fixture, &mnt);
        assert_eq!(
            line["mount"]["mount_point"],
            mnt.to_str().unwrap(),
            "{line}"
        );
        assert_eq!(line["mount"]["root"], "/", "{line}");
        if watcher.hooks() {
            assert_eq!(line["mount"]["id"], line["hooked_mount"]["id"], "{line}");
        }
        if !detached_when_scanned(fd, trial, line) {
            continue;
        }
        // Seen in no table (the hook's mount): its type is unknown.
        let how = match line["mount"]["fstype"].as_str() {
            Some("") => "as the hook saw it",
            _ => "from a table read before the detach",
        };
        eprintln!("{} mode: the mount {how}: {line}", watcher.mode());
        return;
    }
}
