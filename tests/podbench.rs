//! The node of `cargo xtask bench pods`: the test binary, with [`ENV`] set to
//! `PODSxCONTAINERS` (such as `20x10`), runs the real containerd of `support/containerd.rs`
//! with a pod whose container holds a file on a volume of the node (the setup of
//! `containerd.rs`' trials) and PODS more pods of CONTAINERS created containers each, then
//! makes the unmounts the benchmark measures, on commands read from stdin. The benchmark
//! runs the test binary in this mode (as the trials re-execute it as fixtures) rather than
//! carry a copy of the fixture.
//!
//! One line each way:
//! - at start it prints `ready {json}`: the CRI socket, the held mount, the holder's pid, pod
//!   and container id, and how many containers and pods the runtime has;
//! - `ebusy`: an unmounter in the node's mount namespace (one process, kept) unmounts the held
//!   volume → `errno E pid P`;
//! - `miss`: a container is created and started in the holding pod, and a new unmounter that
//!   joined its cgroups unmounts the volume: the caller is in a container no listing named yet
//!   → `errno E pid P container ID`;
//! - `churn pod N` / `churn host N`: a process in the holder's container (its mount namespace
//!   and cgroups), or on the host, mounts a tmpfs and unmounts it N times → `churned OK pid P`
//!   (OK: the unmounts that succeeded); the process lives until the next `churn` or the end;
//! - `quit`, or the end of stdin: every process, pod, container and mount goes (the fixture's
//!   guard), and it exits 0. A failure panics: the guard cleans up the same way.

use std::{
    ffi::{CString, OsStr},
    io::{BufRead, Write},
    os::unix::ffi::OsStrExt,
    path::Path,
    process::{ChildStdin, Command, Stdio},
    time::Instant,
};

use crate::{
    containerd::{holding_pod, Holding},
    support::{
        containerd::{join_cgroups, Containerd, Unmounter},
        lines::{Lines, Next},
        process::{self, Reaped, OUTPUT_TIMEOUT},
    },
};

/// Turns the test binary into the benchmark's node; its value is `PODSxCONTAINERS`.
pub const ENV: &str = "BUSYPROBE_PODBENCH";
/// Turns the test binary into a churner (see [`churn`]); its value is the mount point.
pub const CHURN_ENV: &str = "BUSYPROBE_PODBENCH_CHURN";
/// The churner's mount namespace (`/proc/PID/ns/mnt`); none: it stays where it starts.
const CHURN_NS_ENV: &str = "BUSYPROBE_PODBENCH_CHURN_NS";
/// How many times the churner mounts and unmounts.
const CHURN_COUNT_ENV: &str = "BUSYPROBE_PODBENCH_CHURN_COUNT";

/// The node's side (single-threaded when called, first thing in `main`): see the module.
pub fn node(spec: &OsStr) -> ! {
    let spec = spec.to_string_lossy().into_owned();
    // Its children (unmounters, churners) are the test binary too: not nodes.
    std::env::remove_var(ENV);
    let (pods, containers) = spec
        .split_once('x')
        .and_then(|(p, c)| Some((p.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
        .unwrap_or_else(|| panic!("{ENV}={spec}: want PODSxCONTAINERS"));
    let started = Instant::now();
    let node = Containerd::start();
    let held = holding_pod(&node, "holder-0", "bench", &uid(0));
    for p in 1..=pods {
        let pod = node.run_pod(&format!("idle-{p:02}"), "bench", &uid(p));
        for c in 0..containers {
            node.create_container(&pod, &format!("worker-{c}"), &["/bin/true"], &[]);
        }
    }
    let ready = serde_json::json!({
        "socket": node.socket(),
        "mount": held.mount,
        "holder_pid": held.pid,
        "holder_pod": "holder-0",
        "holder_container": held.container,
        "containers": 1 + pods * containers,
        "pods": 1 + pods,
        "setup_s": started.elapsed().as_secs_f64(),
    });
    say(&format!("ready {ready}"));
    serve(&node, &held);
    drop(node);
    std::process::exit(0)
}

/// Answers the commands on stdin until `quit` or its end.
fn serve(node: &Containerd, held: &Holding) {
    let mut unmounter = node.unmounter(&held.mount);
    // Kept alive until the end: busyprobe reads their /proc entries after their unmounts.
    let mut callers: Vec<Unmounter> = Vec::new();
    let mut churner: Option<Churner> = None;
    let host_dir = tempfile::tempdir().expect("temp dir for the host's churn");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("read a command");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ebusy"] => {
                let errno = unmounter.umount();
                say(&format!("errno {errno} pid {}", unmounter.pid()));
            }
            ["miss"] => {
                let name = format!("late-{}", callers.len());
                let id =
                    node.create_container(&held.pod, &name, &["/bin/sleep", "2147483647"], &[]);
                node.start_container(&id);
                let pid = node.container_pid(&id);
                let mut caller = node.unmounter(&held.mount);
                caller.join_cgroups_of(pid);
                let errno = caller.umount();
                say(&format!(
                    "errno {errno} pid {} container {id}",
                    caller.pid()
                ));
                callers.push(caller);
            }
            ["churn", place, count] => {
                let count: u64 = count.parse().expect("a count");
                drop(churner.take());
                let c = match *place {
                    "pod" => {
                        let dir = node.volume_dir().join("churn");
                        std::fs::create_dir_all(&dir).unwrap();
                        let ns = format!("/proc/{}/ns/mnt", held.pid);
                        Churner::start(Path::new("/vol/churn"), Some(&ns), Some(held.pid), count)
                    }
                    "host" => Churner::start(host_dir.path(), None, None, count),
                    other => panic!("churn where? {other}"),
                };
                say(&format!("churned {} pid {}", c.done, c.child.id()));
                churner = Some(c);
            }
            ["quit"] => break,
            other => panic!("unknown command {other:?}"),
        }
    }
}

/// A pod uid, distinct per pod.
fn uid(n: usize) -> String {
    format!("0b5e7c1a-9d3f-4e2a-8c6b-{n:012x}")
}

/// Writes `line` to stdout at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A churner that has made its unmounts and lives until dropped (then killed).
struct Churner {
    child: Reaped,
    /// Kept open: the churner exits when it closes.
    _stdin: ChildStdin,
    /// How many unmounts succeeded.
    done: u64,
}

impl Churner {
    /// Starts the test binary as a churner of `target` (a path in namespace `ns`), moves it
    /// into the cgroups of `cgroups_of`, lets it run its `count` cycles and waits for them.
    fn start(target: &Path, ns: Option<&str>, cgroups_of: Option<u32>, count: u64) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let mut command = Command::new(exe);
        command
            .env(CHURN_ENV, target)
            .env(CHURN_COUNT_ENV, count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(ns) = ns {
            command.env(CHURN_NS_ENV, ns);
        }
        let mut child = process::spawn(&mut command);
        let mut stdin = child.stdin.take().unwrap();
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let answer = || match stdout.next_until(Instant::now() + OUTPUT_TIMEOUT) {
            Next::Line(line) => line,
            other => panic!("no answer from the churner: {other:?}"),
        };
        assert_eq!(answer(), "ready", "the churner's first word");
        if let Some(pid) = cgroups_of {
            join_cgroups(child.id(), pid);
        }
        writeln!(stdin, "go").expect("start the churner");
        let done = answer()
            .strip_prefix("done ")
            .and_then(|n| n.parse().ok())
            .expect("the churner's count");
        Self {
            child,
            _stdin: stdin,
            done,
        }
    }
}

/// The churner's side (single-threaded: called first thing in `main`): enters the mount
/// namespace of [`CHURN_NS_ENV`] if set, says `ready`, waits for a line, then mounts a tmpfs on
/// `target` and unmounts it [`CHURN_COUNT_ENV`] times, says `done OK` (the unmounts that
/// worked) and exits at the end of stdin.
pub fn churn(target: &OsStr) -> ! {
    if let Some(ns) = std::env::var_os(CHURN_NS_ENV) {
        let ns = std::fs::File::open(ns).expect("open the mount namespace");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS).expect("setns(CLONE_NEWNS)");
    }
    let count: u64 = std::env::var(CHURN_COUNT_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .expect("the churn count");
    let target = CString::new(target.as_bytes()).expect("target without NUL");
    say("ready");
    let mut lines = std::io::stdin().lock().lines();
    let _ = lines.next();
    let mut done = 0;
    for _ in 0..count {
        // SAFETY: NUL-terminated strings; no data.
        let mounted = unsafe {
            libc::mount(
                c"busyprobe-churn".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            mounted,
            0,
            "mount a tmpfs: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a NUL-terminated path, flags 0.
        if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
            done += 1;
        }
    }
    say(&format!("done {done}"));
    for _ in lines {}
    std::process::exit(0)
}
