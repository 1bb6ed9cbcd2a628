//! Alive after unmount: an unmount that succeeds while the filesystem stays in use gets a
//! `warning` line naming what keeps it alive (a copy in another namespace; a process holding
//! the lazily detached mount).

use libtest_mimic::Trial;
use std::path::Path;

use serde_json::Value;

use crate::support::{fixture::Plan, holder::Helper, incident::observe_one, watcher::Watcher};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        private_copy_keeps_the_filesystem_alive_after_unmount,
        lazy_unmount_with_an_open_file_warns,
    ]
}

/// Long enough for busyprobe to have noticed the fixture's new mount namespace and its mount
/// (it looks for new namespaces every second) before the unmount.
const SETTLE_MS: u64 = 1_500;

/// A watcher of unmounts under `dir` only: the other tests' unmounts, running in parallel,
/// cause no scans in it.
fn only_under(dir: &Path) -> Watcher {
    Watcher::start(&[std::ffi::OsStr::new("--path"), dir.as_os_str()])
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
    let plan = Plan::new()
        .tmpfs(&mnt)
        .mkdir(&inside)
        .spawn(helper)
        .sleep(SETTLE_MS)
        .umount2(&mnt, 0);
    let (fixture, call, line) = observe_one(&watcher, &plan);
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
    let plan = Plan::new()
        .tmpfs(&mnt)
        .hold(mnt.join("held"))
        .sleep(SETTLE_MS)
        .umount2(&mnt, libc::MNT_DETACH);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_eq!(call.errno, 0, "a lazy unmount succeeds");
    let warning = warning_after(&watcher, &line);
    let fd = holders(&warning)
        .iter()
        .find(|h| h["kind"] == "fd")
        .unwrap_or_else(|| panic!("no fd holder: {warning}"));
    assert_eq!(fd["pid"], fixture.pid(), "{warning}");
    assert_eq!(fd["mount_id"], warning["mount"]["id"], "{warning}");
    let path = fd["path"].as_str().unwrap_or_default();
    assert!(
        Path::new(path).ends_with("held"),
        "the detached file: {warning}"
    );
}
