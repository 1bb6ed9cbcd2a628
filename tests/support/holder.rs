//! The holder helper: the test binary re-executed as a small process that holds a mount.
//!
//! A fixture (see [`super::fixture`]) starts it, after its mounts, with a list of [`Action`]s
//! in the [`ENV`] environment variable (built with [`Helper`]). The helper runs them in order
//! (open a file, `chdir`, `chroot`, map a file, mark a mount with fanotify, re-enter a mount
//! namespace), prints one JSON line (its pids as the host and its own PID namespace see them,
//! and the descriptors it keeps), then holds everything until its stdin reaches end of file
//! (the fixture exits or lets it go). It dies with its parent too (`PR_SET_PDEATHSIG`).

use std::{
    ffi::{CString, OsStr},
    io::{BufRead, Write},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use serde_json::{json, Value};

use super::fixture::{hex, unhex};

/// Environment variable that turns the test binary into a holder helper; its value is the
/// encoded list of actions.
pub const ENV: &str = "BUSYPROBE_HOLDER";

/// One thing the helper does, in order. Paths are raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `open(path, O_RDONLY)`, kept open.
    Open(Vec<u8>),
    /// `open(path, O_PATH)`, kept open.
    OpenPath(Vec<u8>),
    /// `chdir(path)`.
    Chdir(Vec<u8>),
    /// `chroot(path)` without `chdir`: only the root holds the mount.
    Chroot(Vec<u8>),
    /// Maps the whole file `path` (`MAP_SHARED`, read-only), then closes its descriptor.
    Mmap(Vec<u8>),
    /// A fanotify group (`FAN_CLASS_NOTIF`) with a mount mark for `FAN_OPEN` on `path`; its
    /// events are never read.
    Fanotify(Vec<u8>),
    /// `setns(fd, CLONE_NEWNS)` on an inherited descriptor of a mount namespace, then closes it.
    EnterMntns(i32),
}

impl Action {
    fn encode(&self) -> String {
        match self {
            Action::Open(p) => format!("open:{}", hex(p)),
            Action::OpenPath(p) => format!("opath:{}", hex(p)),
            Action::Chdir(p) => format!("chdir:{}", hex(p)),
            Action::Chroot(p) => format!("chroot:{}", hex(p)),
            Action::Mmap(p) => format!("mmap:{}", hex(p)),
            Action::Fanotify(p) => format!("fanotify:{}", hex(p)),
            Action::EnterMntns(fd) => format!("setns:{fd}"),
        }
    }

    fn decode(text: &str) -> Self {
        let (op, arg) = text.split_once(':').expect("holder action op:arg");
        match op {
            "open" => Action::Open(unhex(arg)),
            "opath" => Action::OpenPath(unhex(arg)),
            "chdir" => Action::Chdir(unhex(arg)),
            "chroot" => Action::Chroot(unhex(arg)),
            "mmap" => Action::Mmap(unhex(arg)),
            "fanotify" => Action::Fanotify(unhex(arg)),
            "setns" => Action::EnterMntns(arg.parse().expect("setns fd")),
            other => panic!("holder: unknown action {other:?}"),
        }
    }
}

/// Encodes actions for [`ENV`].
pub fn encode(actions: &[Action]) -> String {
    actions
        .iter()
        .map(Action::encode)
        .collect::<Vec<_>>()
        .join(";")
}

/// The inverse of [`encode`].
pub fn decode(text: &str) -> Vec<Action> {
    text.split(';')
        .filter(|s| !s.is_empty())
        .map(Action::decode)
        .collect()
}

/// How a fixture starts one helper: optional wrapper command (`unshare -m ...`), the program
/// (the test binary unless set: a copy of it on the mount makes an `exe` holder), and actions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Helper {
    /// Argv prefix run before the program (it must exec or fork+exec it).
    pub wrapper: Vec<Vec<u8>>,
    /// The program, when not the test binary itself.
    pub program: Option<Vec<u8>>,
    /// Re-enter the fixture's mount namespace first (through an inherited descriptor).
    pub reenter: bool,
    /// What the helper does.
    pub actions: Vec<Action>,
}

fn bytes(path: impl AsRef<Path>) -> Vec<u8> {
    path.as_ref().as_os_str().as_bytes().to_vec()
}

impl Helper {
    /// A helper that does nothing but wait.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts it through `wrapper` (for example `unshare -m --propagation slave`).
    pub fn wrapped<S: AsRef<OsStr>>(mut self, wrapper: &[S]) -> Self {
        self.wrapper = wrapper
            .iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .collect();
        self
    }

    /// Runs `program` (a copy of the test binary) instead of the test binary.
    pub fn program(mut self, program: impl AsRef<Path>) -> Self {
        self.program = Some(bytes(program));
        self
    }

    /// Re-enters the fixture's mount namespace before anything else (after a wrapper that
    /// made a new one, such as `unshare --mount-proc`).
    pub fn reenter_fixture_namespace(mut self) -> Self {
        self.reenter = true;
        self
    }

    /// Adds an action.
    pub fn then(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Opens `path` read-only and keeps it open.
    pub fn open(self, path: impl AsRef<Path>) -> Self {
        self.then(Action::Open(bytes(path)))
    }

    /// Opens `path` with `O_PATH` and keeps it open.
    pub fn open_path(self, path: impl AsRef<Path>) -> Self {
        self.then(Action::OpenPath(bytes(path)))
    }

    /// Changes the working directory.
    pub fn chdir(self, path: impl AsRef<Path>) -> Self {
        self.then(Action::Chdir(bytes(path)))
    }

    /// `chroot(path)`, without `chdir`.
    pub fn chroot(self, path: impl AsRef<Path>) -> Self {
        self.then(Action::Chroot(bytes(path)))
    }

    /// Maps the file `path` and closes its descriptor.
    pub fn mmap(self, path: impl AsRef<Path>) -> Self {
        self.then(Action::Mmap(bytes(path)))
    }

    /// Listens with fanotify (mount mark, `FAN_OPEN`) on the mount of `path`, never reading.
    pub fn fanotify(self, path: impl AsRef<Path>) -> Self {
        self.then(Action::Fanotify(bytes(path)))
    }
}

/// What a helper printed once its actions were done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelperReport {
    /// The pid of the process the fixture started (the wrapper when there is one).
    pub spawned: u32,
    /// The helper's pid in the host's PID namespace.
    pub pid: u32,
    /// Its pids from the host's PID namespace down to its own (`NSpid:` of its status).
    pub nspid: Vec<u32>,
    /// Descriptors it keeps, in the order of the actions that opened them.
    pub fds: Vec<i32>,
}

impl HelperReport {
    /// Parses the helper's line; `spawned` is the pid of the process the fixture started.
    pub fn parse(line: &str, spawned: u32) -> Self {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("helper report is not JSON ({e}): {line:?}"));
        let list = |key: &str| -> Vec<i64> {
            v[key]
                .as_array()
                .unwrap_or_else(|| panic!("helper report {key}: {line}"))
                .iter()
                .map(|n| n.as_i64().expect("number"))
                .collect()
        };
        let nspid: Vec<u32> = list("nspid").into_iter().map(|n| n as u32).collect();
        Self {
            spawned,
            pid: nspid[0],
            nspid,
            fds: list("fds").into_iter().map(|n| n as i32).collect(),
        }
    }

    /// As JSON (for the fixture's report).
    pub fn to_json(&self) -> Value {
        json!({"spawned": self.spawned, "nspid": self.nspid, "fds": self.fds})
    }

    /// The inverse of [`HelperReport::to_json`].
    pub fn from_json(v: &Value) -> Self {
        Self::parse(
            &v.to_string(),
            v["spawned"].as_u64().expect("spawned") as u32,
        )
    }
}

/// Helper mode: runs the actions in `encoded`, prints the report line, holds until stdin
/// closes, exits. Must run first thing in `main`, while the process has one thread.
pub fn run(encoded: &OsStr) -> ! {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let actions = decode(encoded.to_str().expect("holder actions are ASCII"));
    let mut fds = Vec::new();
    // After a chroot onto the mount, /proc is out of reach: read the pids before it.
    let mut nspid = None;
    for action in actions {
        if matches!(action, Action::Chroot(_)) {
            nspid = Some(own_nspid());
        }
        if let Some(fd) = act(&action) {
            fds.push(fd);
        }
    }
    let nspid = nspid.unwrap_or_else(own_nspid);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({"nspid": nspid, "fds": fds})).expect("holder: write report");
    out.flush().expect("holder: flush report");
    drop(out);
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    std::process::exit(0)
}

/// Runs one action; returns the descriptor it keeps open, if any.
fn act(action: &Action) -> Option<i32> {
    let c = |p: &[u8]| CString::new(p).expect("path without NUL");
    let check = |ret: libc::c_int, what: &str, p: &[u8]| -> libc::c_int {
        if ret < 0 {
            panic!(
                "holder: {what} {:?}: {}",
                String::from_utf8_lossy(p),
                std::io::Error::last_os_error()
            );
        }
        ret
    };
    // SAFETY (every block below): plain system calls on NUL-terminated paths and descriptors
    // this function owns; the mapping is deliberately leaked (it is the hold).
    match action {
        Action::Open(p) => Some(check(
            unsafe { libc::open(c(p).as_ptr(), libc::O_RDONLY) },
            "open",
            p,
        )),
        Action::OpenPath(p) => Some(check(
            unsafe { libc::open(c(p).as_ptr(), libc::O_PATH) },
            "open O_PATH",
            p,
        )),
        Action::Chdir(p) => {
            check(unsafe { libc::chdir(c(p).as_ptr()) }, "chdir", p);
            None
        }
        Action::Chroot(p) => {
            check(unsafe { libc::chroot(c(p).as_ptr()) }, "chroot", p);
            None
        }
        Action::Mmap(p) => {
            let fd = check(
                unsafe { libc::open(c(p).as_ptr(), libc::O_RDONLY) },
                "open",
                p,
            );
            let len = std::fs::metadata(OsStr::from_bytes(p))
                .expect("holder: stat mapped file")
                .len() as usize;
            assert!(len > 0, "holder: cannot map an empty file");
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            assert_ne!(addr, libc::MAP_FAILED, "holder: mmap failed");
            check(unsafe { libc::close(fd) }, "close", p);
            None
        }
        Action::Fanotify(p) => {
            let fd = check(
                unsafe {
                    libc::fanotify_init(
                        libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC,
                        libc::O_RDONLY as u32,
                    )
                },
                "fanotify_init for",
                p,
            );
            let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT;
            check(
                unsafe {
                    libc::fanotify_mark(fd, flags, libc::FAN_OPEN, libc::AT_FDCWD, c(p).as_ptr())
                },
                "fanotify_mark",
                p,
            );
            Some(fd)
        }
        Action::EnterMntns(fd) => {
            check(unsafe { libc::setns(*fd, libc::CLONE_NEWNS) }, "setns", b"");
            check(unsafe { libc::close(*fd) }, "close", b"");
            None
        }
    }
}

/// `NSpid:` of this process's status, from the PID namespace of the `/proc` it sees.
fn own_nspid() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").expect("holder: read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("NSpid line")
        .split_whitespace()
        .map(|n| n.parse().expect("pid"))
        .collect()
}
