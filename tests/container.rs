//! Container context, end to end: a holder process placed in a cgroup named the way Docker's
//! systemd driver names containers is reported with that container's id.

use libtest_mimic::Trial;
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::{
    incident::FIXTURE_TIMEOUT,
    lines::{Lines, Next},
    process::{self, tool},
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![holder_in_a_docker_cgroup_names_the_container,]
}

/// A container id in Docker's format (64 lowercase hex characters).
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` or, on hybrid hosts,
/// `/sys/fs/cgroup/unified`).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount")
}

/// A cgroup directory removed (after its processes are gone) on drop.
struct Cgroup(Vec<PathBuf>);

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn holder_in_a_docker_cgroup_names_the_container() {
    let parent = cgroup2_root().join(format!("busyprobe-test-{}", std::process::id()));
    let scope = parent.join(format!("docker-{ID}.scope"));
    std::fs::create_dir_all(&scope).expect("create the test cgroup");
    let _cgroup = Cgroup(vec![parent, scope.clone()]);
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = dir.path().canonicalize().unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();

    // The holder: joins the cgroup, mounts a tmpfs in a private namespace, sits in it.
    let script = format!(
        "echo $$ > {procs} && mount -t tmpfs ctr {mnt} && cd {mnt} && echo ready && exec sleep 60",
        procs = scope.join("cgroup.procs").display(),
        mnt = mnt.display()
    );
    let mut holder = process::spawn(
        Command::new(tool("unshare"))
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    );
    let ready = Lines::spawn(holder.stdout.take().unwrap());
    match ready.next_until(Instant::now() + FIXTURE_TIMEOUT) {
        Next::Line(line) => assert_eq!(line, "ready", "the holder did not set up"),
        other => panic!("the holder did not set up: {other:?}"),
    }
    let pid = holder.id();

    let out = process::output(
        Command::new(tool("nsenter"))
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .args([env!("CARGO_BIN_EXE_busyprobe"), "who", "--json"])
            .arg(&mnt),
    );
    let who: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let holders = who["holders"].as_array().expect("holders");
    let cwd = holders
        .iter()
        .find(|h| h["kind"] == "cwd" && h["pid"] == pid)
        .unwrap_or_else(|| panic!("no cwd holder for {pid}: {who}"));
    assert_eq!(cwd["path"], mnt.to_str().unwrap(), "{who}");
    assert_eq!(cwd["container"]["runtime"], "docker", "{who}");
    assert_eq!(cwd["container"]["id"], ID, "{who}");
    assert_eq!(cwd["container"]["pod_uid"], Value::Null, "{who}");
    assert!(Path::new(&scope).exists());
}
