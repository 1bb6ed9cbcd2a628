//! A holder whose file was opened before busyprobe started is still attributed: the scan sees
//! the fd, and with no open time recorded it is kept as a holder (its open time unknown).

use std::{ffi::OsStr, time::Duration};

use crate::support::{fixture::Plan, incident::Fixture, watcher::Watcher};

/// Every trial, by name.
pub const TESTS: [(&str, fn()); 1] = [(
    "fd_opened_before_busyprobe_started_is_attributed",
    fd_opened_before_busyprobe_started_is_attributed,
)];

fn fd_opened_before_busyprobe_started_is_attributed() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let held = mnt.join("held");
    // The fixture opens the file, then waits long enough for the watcher to start.
    let plan = Plan::new()
        .tmpfs(&mnt)
        .hold(&held)
        .sleep(3_000)
        .umount2(&mnt, 0);
    let fixture = std::thread::spawn(move || Fixture::run(&plan));
    std::thread::sleep(Duration::from_millis(300));
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    let fixture = fixture.join().expect("the fixture thread");
    assert_eq!(
        fixture.report.calls[0].errno,
        libc::EBUSY,
        "the held file makes it busy"
    );
    let pid = fixture.pid();
    let lines = watcher.umount_lines_of(pid, 1);
    let line = &lines[0];
    let holders = line["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {line}"));
    assert_eq!(holders.len(), 1, "{line}");
    let h = &holders[0];
    assert_eq!(h["kind"], "fd", "{line}");
    assert_eq!(h["pid"], pid, "{line}");
    assert_eq!(h["path"], held.to_str().unwrap(), "{line}");
    assert_eq!(
        h["opened_ns_before"],
        serde_json::Value::Null,
        "the open was before busyprobe: {line}"
    );
}
