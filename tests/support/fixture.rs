//! The incident fixture: the test binary re-executed in a private mount namespace.
//!
//! The parent test describes what to do as a [`Plan`] (mkdir, mount a tmpfs, open a file and
//! keep it open, chdir, `umount2`), passes it in the [`ENV`] environment variable and reads back
//! one JSON line (the [`Report`]) on the child's stdout. The child then waits for a line on
//! stdin (or end of file) before exiting, so that the watcher can still inspect it.
//!
//! Every mount the child makes lives in its own mount namespace, whose `/` is recursively
//! private: the mounts vanish with the process, whatever happens to the test.

use std::{
    ffi::{CString, OsStr},
    fs::File,
    io::{BufRead, Write},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use nix::{
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
};
use serde_json::{json, Value};

/// Environment variable that turns the test binary into a fixture; its value is an encoded
/// [`Plan`].
pub const ENV: &str = "BUSYPROBE_FIXTURE";

/// One thing the fixture does, in order. Paths are raw bytes (they need not be UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// `mkdir(path)`.
    Mkdir(Vec<u8>),
    /// Mount a fresh tmpfs on `path`.
    MountTmpfs(Vec<u8>),
    /// Create `path` and keep it open (it holds its mount busy).
    Open(Vec<u8>),
    /// Close every file kept open by [`Step::Open`].
    CloseAll,
    /// `chdir(path)`.
    Chdir(Vec<u8>),
    /// `umount2(target, flags)`, called directly (no canonicalization).
    Umount2 { target: Vec<u8>, flags: i32 },
    /// Drop root: `setresgid` + `setresuid` to this id (all capabilities go with it).
    BecomeUser(u32),
}

/// What the fixture does: a list of steps, built with the methods below.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    steps: Vec<Step>,
}

fn bytes(path: impl AsRef<Path>) -> Vec<u8> {
    path.as_ref().as_os_str().as_bytes().to_vec()
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates the directory `path`.
    pub fn mkdir(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::Mkdir(bytes(path)));
        self
    }

    /// Creates the directory `path` and mounts a tmpfs on it.
    pub fn tmpfs(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::Mkdir(bytes(&path)));
        self.steps.push(Step::MountTmpfs(bytes(path)));
        self
    }

    /// Creates the file `path` and keeps it open.
    pub fn hold(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::Open(bytes(path)));
        self
    }

    /// Closes every file kept open so far.
    pub fn release(mut self) -> Self {
        self.steps.push(Step::CloseAll);
        self
    }

    /// Changes the working directory.
    pub fn chdir(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::Chdir(bytes(path)));
        self
    }

    /// Calls `umount2(target, flags)` with exactly these bytes.
    pub fn umount2(mut self, target: impl AsRef<OsStr>, flags: i32) -> Self {
        let target = target.as_ref().as_bytes().to_vec();
        self.steps.push(Step::Umount2 { target, flags });
        self
    }

    /// Drops root for the steps that follow: becomes uid and gid `id`.
    pub fn become_user(mut self, id: u32) -> Self {
        self.steps.push(Step::BecomeUser(id));
        self
    }

    /// The plan as one environment-variable-safe string: `op[:hex[:flags]]` joined by `;`.
    pub fn encode(&self) -> String {
        let step = |s: &Step| match s {
            Step::Mkdir(p) => format!("mkdir:{}", hex(p)),
            Step::MountTmpfs(p) => format!("tmpfs:{}", hex(p)),
            Step::Open(p) => format!("open:{}", hex(p)),
            Step::CloseAll => "close".to_owned(),
            Step::Chdir(p) => format!("chdir:{}", hex(p)),
            Step::Umount2 { target, flags } => format!("umount2:{}:{flags}", hex(target)),
            Step::BecomeUser(id) => format!("user:{id}"),
        };
        self.steps.iter().map(step).collect::<Vec<_>>().join(";")
    }

    /// The inverse of [`Plan::encode`].
    fn decode(text: &str) -> Self {
        let step = |s: &str| {
            let fields: Vec<&str> = s.split(':').collect();
            let path = || unhex(fields[1]);
            match fields[0] {
                "mkdir" => Step::Mkdir(path()),
                "tmpfs" => Step::MountTmpfs(path()),
                "open" => Step::Open(path()),
                "close" => Step::CloseAll,
                "chdir" => Step::Chdir(path()),
                "umount2" => Step::Umount2 {
                    target: path(),
                    flags: fields[2].parse().expect("umount2 flags"),
                },
                "user" => Step::BecomeUser(fields[1].parse().expect("user id")),
                other => panic!("fixture: unknown plan step {other:?}"),
            }
        };
        Self {
            steps: text
                .split(';')
                .filter(|s| !s.is_empty())
                .map(step)
                .collect(),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`hex`]; panics on malformed input (it only reads what [`hex`] wrote).
pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length: {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// One `umount2` call as the fixture made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The exact target bytes passed.
    pub target: Vec<u8>,
    /// The flags passed.
    pub flags: i32,
    /// The errno it failed with, 0 when it succeeded.
    pub errno: i32,
}

/// What the fixture reports after running its plan.
#[derive(Clone, Debug)]
pub struct Report {
    /// The fixture's pid (it is single-threaded, so also its tid).
    pub pid: u32,
    /// Its working directory after the plan ran, as bytes.
    pub cwd: Vec<u8>,
    /// Its `umount2` calls, in order.
    pub calls: Vec<Call>,
}

impl Report {
    /// Parses the JSON line the fixture printed.
    pub fn parse(line: &str) -> Self {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("fixture report is not JSON ({e}): {line}"));
        let text = |v: &Value, key: &str| unhex(v[key].as_str().expect(key));
        let call = |c: &Value| Call {
            target: text(c, "target"),
            flags: c["flags"].as_i64().expect("flags") as i32,
            errno: c["errno"].as_i64().expect("errno") as i32,
        };
        Self {
            pid: v["pid"].as_u64().expect("pid") as u32,
            cwd: text(&v, "cwd"),
            calls: v["calls"]
                .as_array()
                .expect("calls")
                .iter()
                .map(call)
                .collect(),
        }
    }

    fn to_json(&self) -> Value {
        let calls: Vec<Value> = self
            .calls
            .iter()
            .map(|c| json!({"target": hex(&c.target), "flags": c.flags, "errno": c.errno}))
            .collect();
        json!({"pid": self.pid, "cwd": hex(&self.cwd), "calls": calls})
    }
}

/// Fixture mode: isolates the mount namespace, runs the plan in `encoded`, prints the report,
/// waits for stdin, exits. Must run first thing in `main`, while the process has one thread.
pub fn run(encoded: &OsStr) -> ! {
    unshare(CloneFlags::CLONE_NEWNS).expect("fixture: unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("fixture: make / recursively private");

    let plan = Plan::decode(encoded.to_str().expect("plan is ASCII"));
    let mut held = Vec::new();
    let mut calls = Vec::new();
    for step in plan.steps {
        run_step(step, &mut held, &mut calls);
    }
    let cwd = std::env::current_dir().expect("fixture: getcwd");
    let report = Report {
        pid: std::process::id(),
        cwd: bytes(cwd),
        calls,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", report.to_json()).expect("fixture: write report");
    out.flush().expect("fixture: flush report");
    drop(out);

    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(held);
    std::process::exit(0)
}

fn run_step(step: Step, held: &mut Vec<File>, calls: &mut Vec<Call>) {
    let path = |p: &[u8]| Path::new(OsStr::from_bytes(p)).to_owned();
    match step {
        Step::Mkdir(p) => std::fs::create_dir(path(&p))
            .unwrap_or_else(|e| panic!("fixture: mkdir {:?}: {e}", path(&p))),
        Step::MountTmpfs(p) => mount(
            Some("tmpfs"),
            &path(&p),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("fixture: mount tmpfs on {:?}: {e}", path(&p))),
        Step::Open(p) => held.push(
            File::create(path(&p)).unwrap_or_else(|e| panic!("fixture: open {:?}: {e}", path(&p))),
        ),
        Step::CloseAll => held.clear(),
        Step::Chdir(p) => std::env::set_current_dir(path(&p))
            .unwrap_or_else(|e| panic!("fixture: chdir {:?}: {e}", path(&p))),
        Step::BecomeUser(id) => {
            let (uid, gid) = (
                nix::unistd::Uid::from_raw(id),
                nix::unistd::Gid::from_raw(id),
            );
            nix::unistd::setresgid(gid, gid, gid).expect("fixture: setresgid");
            nix::unistd::setresuid(uid, uid, uid).expect("fixture: setresuid");
        }
        Step::Umount2 { target, flags } => {
            let errno = raw_umount2(&target, flags);
            calls.push(Call {
                target,
                flags,
                errno,
            });
        }
    }
}

/// `umount2(2)` straight through libc; returns 0 on success, else the errno.
fn raw_umount2(target: &[u8], flags: i32) -> i32 {
    let c_target = CString::new(target).expect("target without NUL");
    // SAFETY: `c_target` is a valid NUL-terminated string for the duration of the call.
    let ret = unsafe { libc::umount2(c_target.as_ptr(), flags) };
    if ret == 0 {
        0
    } else {
        std::io::Error::last_os_error()
            .raw_os_error()
            .expect("umount2 failure has an errno")
    }
}
