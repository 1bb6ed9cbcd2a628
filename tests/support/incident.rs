//! Parent side of an incident: start the fixture (see [`super::fixture`]), read its report,
//! and pick the watcher's lines for its pid.

use std::{
    os::unix::fs::MetadataExt,
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

use super::{
    fixture::{self, Call, Plan, Report},
    lines::Lines,
    watcher::Watcher,
};

/// How long a fixture may take to run its plan and report: its steps may run commands
/// (`who` loads BPF iterators twice in the scan comparison, `mkfs.ext4`), far slower under
/// emulation than on the host.
pub const FIXTURE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running fixture process that has run its plan and is waiting to be let go.
/// Dropping it closes its stdin, then kills it if it has not exited within a second. It gets
/// no `PR_SET_PDEATHSIG`: a test may start it on a thread that ends before it should (see
/// `before_start.rs`); the end of the test process closes its stdin, which ends it.
pub struct Fixture {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What it did.
    pub report: Report,
    /// Its comm (`/proc/PID/comm`), read while it is alive.
    pub comm: String,
    /// Inode of its mount namespace (`/proc/PID/ns/mnt`), read while it is alive.
    pub mntns: u64,
    /// Its real uid and gid after the plan ran (`/proc/PID/status`).
    pub uid_gid: (u32, u32),
    /// Wall-clock time just before it was started.
    pub started: SystemTime,
    /// Wall-clock time just after its report arrived.
    pub finished: SystemTime,
}

impl Fixture {
    /// Starts the fixture with `plan` and waits (at most [`FIXTURE_TIMEOUT`]) for its report.
    pub fn run(plan: &Plan) -> Self {
        let started = SystemTime::now();
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .env(fixture::ENV, plan.encode())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fixture");
        let stderr = Lines::spawn_collected(child.stderr.take().unwrap());
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        let mut guard = Self {
            child,
            stdin,
            report: Report::default(),
            comm: String::new(),
            uid_gid: (0, 0),
            mntns: 0,
            started,
            finished: started,
        };
        let line = stdout.expect_line(FIXTURE_TIMEOUT, "fixture report", &stderr);
        guard.finished = SystemTime::now();
        guard.report = Report::parse(&line);
        assert_eq!(guard.report.pid, guard.child.id(), "fixture reported pid");
        let proc = format!("/proc/{}", guard.report.pid);
        guard.comm = std::fs::read_to_string(format!("{proc}/comm"))
            .expect("read fixture comm")
            .trim_end_matches('\n')
            .to_owned();
        guard.mntns = std::fs::metadata(format!("{proc}/ns/mnt"))
            .expect("stat fixture mount namespace")
            .ino();
        guard.uid_gid = real_ids(
            &std::fs::read_to_string(format!("{proc}/status")).expect("read fixture status"),
        );
        guard
    }

    /// The fixture's pid.
    pub fn pid(&self) -> u32 {
        self.report.pid
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `plan` in a fixture while `watcher` watches, and returns the fixture (still alive)
/// with the watcher's umount line for each of its `umount2` calls, in order. Every line is
/// checked against its call with [`super::contract::assert_umount_line`].
pub fn observe(watcher: &Watcher, plan: &Plan) -> (Fixture, Vec<Value>) {
    let fixture = Fixture::run(plan);
    let count = fixture.report.calls.len();
    let lines = watcher.umount_lines_of(fixture.pid(), count);
    for (line, call) in lines.iter().zip(&fixture.report.calls) {
        super::contract::assert_umount_line(line, &fixture, call);
    }
    (fixture, lines)
}

/// Like [`observe`] for a plan with exactly one `umount2` call: that call and its line.
pub fn observe_one(watcher: &Watcher, plan: &Plan) -> (Fixture, Call, Value) {
    let (fixture, mut lines) = observe(watcher, plan);
    assert_eq!(fixture.report.calls.len(), 1, "plan makes one umount2 call");
    let call = fixture.report.calls[0].clone();
    (fixture, call, lines.remove(0))
}

/// The real uid and gid from a `/proc/PID/status` text (first number of `Uid:` and `Gid:`).
fn real_ids(status: &str) -> (u32, u32) {
    let first = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} line in /proc/PID/status"))
    };
    (first("Uid:"), first("Gid:"))
}
