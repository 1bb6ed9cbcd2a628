//! fds no traced open made are still attributed, to the process that holds them: one opened
//! before busyprobe started (its open time unknown), one received over a Unix socket, one
//! made by `dup2`.

use libtest_mimic::Trial;
use std::{
    ffi::OsStr,
    path::Path,
    time::{Duration, Instant},
};

use crate::support::{
    fixture::{Plan, DUP_FD},
    incident::Fixture,
    watcher::Watcher,
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        fd_made_by_dup_is_attributed_under_its_number,
        fd_opened_before_busyprobe_started_is_attributed,
        fd_received_over_a_unix_socket_is_attributed_to_the_receiver,
    ]
}

/// The one holder of the EBUSY line of `fixture`'s only call: an fd of the fixture on `path`.
fn assert_fd_holder(watcher: &Watcher, fixture: &Fixture, path: &Path) -> serde_json::Value {
    assert_eq!(
        fixture.report.calls[0].errno,
        libc::EBUSY,
        "the held file makes it busy"
    );
    let lines = watcher.umount_lines_of(fixture.pid(), 1);
    let line = &lines[0];
    let holders = line["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {line}"));
    assert_eq!(holders.len(), 1, "{line}");
    let h = &holders[0];
    assert_eq!(h["kind"], "fd", "{line}");
    assert_eq!(h["pid"], fixture.pid(), "{line}");
    assert_eq!(h["path"], path.to_str().unwrap(), "{line}");
    h.clone()
}

fn fd_opened_before_busyprobe_started_is_attributed() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let held = mnt.join("held");
    let (opened, go) = (tmp.join("opened"), tmp.join("go"));
    // The fixture opens the file and says so; the watcher starts; then the fixture unmounts
    // (told to by `go`, however long the watcher took to attach).
    let plan = Plan::new()
        .tmpfs(&mnt)
        .hold(&held)
        .write(&opened, 0)
        .wait_for(&go)
        .umount2(&mnt, 0);
    let fixture = std::thread::spawn(move || Fixture::run(&plan));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !opened.exists() {
        assert!(
            Instant::now() < deadline,
            "the fixture never opened its file"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    std::fs::write(&go, b"").unwrap();
    let fixture = fixture.join().expect("the fixture thread");
    let h = assert_fd_holder(&watcher, &fixture, &held);
    assert_eq!(
        h["opened_ns_before"],
        serde_json::Value::Null,
        "opened before busyprobe: {h}"
    );
}

fn fd_received_over_a_unix_socket_is_attributed_to_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let passed = mnt.join("passed");
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    let plan = Plan::new()
        .tmpfs(&mnt)
        .hold_received(&passed)
        .umount2(&mnt, 0);
    let fixture = Fixture::run(&plan);
    // The file description is the one the fixture opened (traced), whatever fd number it
    // came back under, so its open time may be known.
    assert_fd_holder(&watcher, &fixture, &passed);
}

fn fd_made_by_dup_is_attributed_under_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let file = mnt.join("duplicated");
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    let fixture = Fixture::run(&Plan::new().tmpfs(&mnt).hold_dup(&file).umount2(&mnt, 0));
    let h = assert_fd_holder(&watcher, &fixture, &file);
    assert_eq!(h["fd"], DUP_FD, "{h}");
    assert_eq!(
        h["opened_ns_before"],
        serde_json::Value::Null,
        "no open returned fd {DUP_FD}: {h}"
    );
}
