//! The incident fixture: the test binary re-executed in a private mount namespace.
//!
//! The parent test describes what to do as a [`Plan`] (mkdir, mount a tmpfs, open a file and
//! keep it open, chdir, `umount2`), passes it in the [`ENV`] environment variable and reads back
//! one JSON line (the [`Report`]) on the child's stdout. The child then waits for a line on
//! stdin (or end of file) before exiting, so that the watcher can still inspect it.
//!
//! Every mount the child makes lives in its own mount namespace, whose `/` is recursively
//! private: the mounts vanish with the process, whatever happens to the test.
//!
//! Holder tests add: files with content, shared propagation, copies, helper processes that
//! hold the mount (see [`super::holder`]), commands run inside the namespace (`busyprobe who`,
//! `fuser`, `mkfs`, `swapon`: their output is reported) and loop devices. What outlives the
//! namespace (loop devices, swap) is undone when the fixture ends, even by a panic.

use std::{
    ffi::{CString, OsStr},
    fs::File,
    io::{BufRead, BufReader, Write},
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use nix::mount::{mount, MsFlags};
use serde_json::{json, Value};

use super::{
    holder::{self, Helper, HelperReport},
    process::DieWithTest,
};

/// The fd number [`Plan::hold_dup`] keeps its file under.
pub const DUP_FD: i32 = 100;

/// How long [`Plan::wait_for`] waits for its file before the fixture fails.
const WAIT_FOR_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

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
    /// Create `path`, send its fd over a Unix socket pair that nobody reads, close it here:
    /// the open file (and its mount) is held only by the message in flight.
    InFlight(Vec<u8>),
    /// Create `path`, send its fd over a Unix socket pair, close it, receive it back (under a
    /// new number) and keep that: an fd no open call made.
    Received(Vec<u8>),
    /// Create `path`, `dup2` its fd to [`DUP_FD`], close the original: the file is held only
    /// under a number no open call returned.
    Dup(Vec<u8>),
    /// Close every file kept open by [`Step::Open`].
    CloseAll,
    /// `chdir(path)`.
    Chdir(Vec<u8>),
    /// `umount2(target, flags)`, called directly (no canonicalization).
    Umount2 { target: Vec<u8>, flags: i32 },
    /// Drop root: `setresgid` + `setresuid` to this id (all capabilities go with it).
    BecomeUser(u32),
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNS)`: a user namespace of its own (every capability
    /// in it, none outside) owning a new mount namespace, whose copied mounts are locked.
    NewUserns,
    /// Create `path` with `len` bytes written (no holes: swap files need that).
    Write { path: Vec<u8>, len: u64 },
    /// `mount --make-shared path`.
    MakeShared(Vec<u8>),
    /// Sleep this many milliseconds.
    Sleep(u64),
    /// Wait until a file exists at this path (the test's go-ahead), at most [`WAIT_FOR_LIMIT`].
    WaitFor(Vec<u8>),
    /// SIGKILL every helper started so far and reap it.
    KillHelpers,
    /// Copy a file, permissions included.
    Copy { from: Vec<u8>, to: Vec<u8> },
    /// Start a helper process and wait for its report line.
    Spawn(Helper),
    /// Run a command to its end; `must`: panic unless it succeeds; `undo`: a command to run
    /// when the fixture ends, if this one succeeded.
    Run {
        argv: Vec<Vec<u8>>,
        must: bool,
        undo: Vec<Vec<u8>>,
    },
    /// `losetup -f --show path`; detached with `losetup -d` when the fixture ends.
    Losetup(Vec<u8>),
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

    /// Creates the file `path` and keeps it only as fd [`DUP_FD`] (a `dup2` of the original).
    pub fn hold_dup(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::Dup(bytes(path)));
        self
    }

    /// Creates the file `path`, passes it over a Unix socket and keeps the received fd.
    pub fn hold_received(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::Received(bytes(path)));
        self
    }

    /// Creates the file `path` and leaves it open only inside an unread `SCM_RIGHTS` message.
    pub fn hold_in_flight(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::InFlight(bytes(path)));
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

    /// Moves into a new user namespace owning a new mount namespace (the mounts made so far
    /// are copied into it locked: the kernel refuses to unmount them there alone).
    pub fn new_user_namespace(mut self) -> Self {
        self.steps.push(Step::NewUserns);
        self
    }

    /// Creates the file `path` with `len` bytes in it.
    pub fn write(mut self, path: impl AsRef<Path>, len: u64) -> Self {
        self.steps.push(Step::Write {
            path: bytes(path),
            len,
        });
        self
    }

    /// Makes the mount at `path` shared (`mount --make-shared`).
    pub fn make_shared(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::MakeShared(bytes(path)));
        self
    }

    /// Sleeps `ms` milliseconds (for example to let busyprobe notice a new mount namespace).
    pub fn sleep(mut self, ms: u64) -> Self {
        self.steps.push(Step::Sleep(ms));
        self
    }

    /// Waits until a file exists at `path`: the test creates it when it is ready (a watcher
    /// attached), however long that takes on a slow machine.
    pub fn wait_for(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::WaitFor(bytes(path)));
        self
    }

    /// Kills every helper started so far (SIGKILL) and waits for each to be gone: a holder
    /// that dies right after the failure.
    pub fn kill_helpers(mut self) -> Self {
        self.steps.push(Step::KillHelpers);
        self
    }

    /// Copies the file `from` to `to`.
    pub fn copy(mut self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Self {
        self.steps.push(Step::Copy {
            from: bytes(from),
            to: bytes(to),
        });
        self
    }

    /// Starts `helper` and waits until it holds what it was told to.
    pub fn spawn(mut self, helper: Helper) -> Self {
        self.steps.push(Step::Spawn(helper));
        self
    }

    /// Runs `argv` inside the fixture's namespace and reports its output (see
    /// [`Report::runs`]), whatever its exit status.
    pub fn run<S: AsRef<OsStr>>(mut self, argv: &[S]) -> Self {
        self.steps.push(Step::Run {
            argv: argvec(argv),
            must: false,
            undo: Vec::new(),
        });
        self
    }

    /// Runs `argv`, which must succeed; if `undo` is not empty, it runs when the fixture ends.
    pub fn must_run<S: AsRef<OsStr>, U: AsRef<OsStr>>(mut self, argv: &[S], undo: &[U]) -> Self {
        self.steps.push(Step::Run {
            argv: argvec(argv),
            must: true,
            undo: argvec(undo),
        });
        self
    }

    /// Attaches `path` to a free loop device (reported in [`Report::loops`]), detached when
    /// the fixture ends.
    pub fn losetup(mut self, path: impl AsRef<Path>) -> Self {
        self.steps.push(Step::Losetup(bytes(path)));
        self
    }

    /// The plan as one environment-variable-safe string: `op[:hex[:flags]]` joined by `;`.
    pub fn encode(&self) -> String {
        let step = |s: &Step| match s {
            Step::Mkdir(p) => format!("mkdir:{}", hex(p)),
            Step::MountTmpfs(p) => format!("tmpfs:{}", hex(p)),
            Step::Open(p) => format!("open:{}", hex(p)),
            Step::InFlight(p) => format!("inflight:{}", hex(p)),
            Step::Received(p) => format!("received:{}", hex(p)),
            Step::Dup(p) => format!("dup:{}", hex(p)),
            Step::CloseAll => "close".to_owned(),
            Step::Chdir(p) => format!("chdir:{}", hex(p)),
            Step::Umount2 { target, flags } => format!("umount2:{}:{flags}", hex(target)),
            Step::BecomeUser(id) => format!("user:{id}"),
            Step::NewUserns => "userns".to_owned(),
            Step::Write { path, len } => format!("write:{}:{len}", hex(path)),
            Step::MakeShared(p) => format!("shared:{}", hex(p)),
            Step::Sleep(ms) => format!("sleep:{ms}"),
            Step::WaitFor(p) => format!("waitfor:{}", hex(p)),
            Step::KillHelpers => "killhelpers".to_owned(),
            Step::Copy { from, to } => format!("copy:{}:{}", hex(from), hex(to)),
            Step::Spawn(h) => format!(
                "spawn:{}:{}:{}:{}",
                hex(&h.wrapper.join(&0)),
                hex(h.program.as_deref().unwrap_or_default()),
                u8::from(h.reenter),
                hex(holder::encode(&h.actions).as_bytes())
            ),
            Step::Run { argv, must, undo } => format!(
                "run:{}:{}:{}",
                hex(&argv.join(&0)),
                u8::from(*must),
                hex(&undo.join(&0))
            ),
            Step::Losetup(p) => format!("losetup:{}", hex(p)),
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
                "inflight" => Step::InFlight(path()),
                "received" => Step::Received(path()),
                "dup" => Step::Dup(path()),
                "close" => Step::CloseAll,
                "chdir" => Step::Chdir(path()),
                "umount2" => Step::Umount2 {
                    target: path(),
                    flags: fields[2].parse().expect("umount2 flags"),
                },
                "user" => Step::BecomeUser(fields[1].parse().expect("user id")),
                "userns" => Step::NewUserns,
                "write" => Step::Write {
                    path: path(),
                    len: fields[2].parse().expect("write length"),
                },
                "shared" => Step::MakeShared(path()),
                "sleep" => Step::Sleep(fields[1].parse().expect("sleep ms")),
                "waitfor" => Step::WaitFor(path()),
                "killhelpers" => Step::KillHelpers,
                "copy" => Step::Copy {
                    from: path(),
                    to: unhex(fields[2]),
                },
                "spawn" => Step::Spawn(Helper {
                    wrapper: split_nul(&path()),
                    program: Some(unhex(fields[2])).filter(|p| !p.is_empty()),
                    reenter: fields[3] == "1",
                    actions: Vec::new(),
                })
                .with_actions(&unhex(fields[4])),
                "run" => Step::Run {
                    argv: split_nul(&path()),
                    must: fields[2] == "1",
                    undo: split_nul(&unhex(fields[3])),
                },
                "losetup" => Step::Losetup(path()),
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

fn argvec<S: AsRef<OsStr>>(argv: &[S]) -> Vec<Vec<u8>> {
    argv.iter()
        .map(|s| s.as_ref().as_bytes().to_vec())
        .collect()
}

/// The NUL-separated fields of `joined` (none when it is empty).
fn split_nul(joined: &[u8]) -> Vec<Vec<u8>> {
    if joined.is_empty() {
        return Vec::new();
    }
    joined.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

impl Step {
    /// A decoded `spawn` step gets its actions from their own encoding.
    fn with_actions(self, encoded: &[u8]) -> Self {
        let Step::Spawn(mut helper) = self else {
            return self;
        };
        let text = std::str::from_utf8(encoded).expect("actions are ASCII");
        helper.actions = holder::decode(text);
        Step::Spawn(helper)
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

/// A command run by [`Plan::run`] (or its relatives) and what it gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOutput {
    /// The command line.
    pub argv: Vec<Vec<u8>>,
    /// Its exit status, or 128 + the signal that killed it.
    pub status: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl RunOutput {
    fn to_json(&self) -> Value {
        json!({"argv": hex(&self.argv.join(&0)), "status": self.status,
               "stdout": hex(&self.stdout), "stderr": hex(&self.stderr)})
    }

    fn from_json(v: &Value) -> Self {
        let text = |key: &str| unhex(v[key].as_str().expect(key));
        Self {
            argv: split_nul(&text("argv")),
            status: v["status"].as_i64().expect("status") as i32,
            stdout: text("stdout"),
            stderr: text("stderr"),
        }
    }
}

/// What the fixture reports after running its plan.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The fixture's pid (it is single-threaded, so also its tid).
    pub pid: u32,
    /// Its working directory after the plan ran, as bytes.
    pub cwd: Vec<u8>,
    /// Its `umount2` calls, in order.
    pub calls: Vec<Call>,
    /// The helpers it started ([`Plan::spawn`]), in order.
    pub helpers: Vec<HelperReport>,
    /// The commands it ran with [`Plan::run`] and its relatives, in order.
    pub runs: Vec<RunOutput>,
    /// The loop devices it attached ([`Plan::losetup`]), such as `/dev/loop3`.
    pub loops: Vec<String>,
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
        let list = |key: &str| v[key].as_array().cloned().unwrap_or_default();
        Self {
            pid: v["pid"].as_u64().expect("pid") as u32,
            cwd: text(&v, "cwd"),
            calls: list("calls").iter().map(call).collect(),
            helpers: list("helpers")
                .iter()
                .map(HelperReport::from_json)
                .collect(),
            runs: list("runs").iter().map(RunOutput::from_json).collect(),
            loops: list("loops")
                .iter()
                .map(|l| l.as_str().expect("loop device").to_owned())
                .collect(),
        }
    }

    fn to_json(&self) -> Value {
        let calls: Vec<Value> = self
            .calls
            .iter()
            .map(|c| json!({"target": hex(&c.target), "flags": c.flags, "errno": c.errno}))
            .collect();
        let helpers: Vec<Value> = self.helpers.iter().map(HelperReport::to_json).collect();
        let runs: Vec<Value> = self.runs.iter().map(RunOutput::to_json).collect();
        json!({"pid": self.pid, "cwd": hex(&self.cwd), "calls": calls,
               "helpers": helpers, "runs": runs, "loops": self.loops})
    }
}

/// Fixture mode: isolates the mount namespace, runs the plan in `encoded`, prints the report,
/// waits for stdin, exits. Must run first thing in `main`, while the process has one thread.
pub fn run(encoded: &OsStr) -> ! {
    super::enter_private_mount_namespace();

    let plan = Plan::decode(encoded.to_str().expect("plan is ASCII"));
    // Dropped last, also when a step panics: helpers stop, loop devices and swap are undone.
    let mut held = Held::default();
    let mut report = Report {
        pid: std::process::id(),
        ..Report::default()
    };
    for step in plan.steps {
        run_step(step, &mut held, &mut report);
    }
    report.cwd = bytes(std::env::current_dir().expect("fixture: getcwd"));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", report.to_json()).expect("fixture: write report");
    out.flush().expect("fixture: flush report");
    drop(out);

    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(held);
    std::process::exit(0)
}

/// What the fixture holds until it ends: open files, helpers, and commands that undo what
/// outlives the namespace. Dropping it stops the helpers first, then undoes in reverse order.
#[derive(Default)]
struct Held {
    files: Vec<File>,
    helpers: Vec<Running>,
    undo: Vec<Vec<Vec<u8>>>,
}

/// A helper started by [`Step::Spawn`]: it exits when its stdin closes.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for helper in &mut self.helpers {
            drop(helper.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        for helper in &mut self.helpers {
            while Instant::now() < deadline && matches!(helper.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = helper.child.kill();
            let _ = helper.child.wait();
        }
        self.files.clear();
        for argv in self.undo.drain(..).rev() {
            let out = run_command(&argv);
            if out.status != 0 {
                eprintln!(
                    "fixture: cleanup {:?} failed ({}): {}",
                    String::from_utf8_lossy(&argv.join(&b' ')),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// Runs `argv` to its end, stdin closed, output captured.
fn run_command(argv: &[Vec<u8>]) -> RunOutput {
    use std::os::unix::process::ExitStatusExt;
    let os = |b: &Vec<u8>| OsStr::from_bytes(b).to_owned();
    // The fixture is single-threaded: the command dies with it (PR_SET_PDEATHSIG).
    let out = Command::new(os(&argv[0]))
        .args(argv[1..].iter().map(os))
        .stdin(Stdio::null())
        .die_with_test()
        .output()
        .unwrap_or_else(|e| panic!("fixture: run {:?}: {e}", os(&argv[0])));
    RunOutput {
        argv: argv.to_vec(),
        status: out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Starts `helper` and reads its report line.
fn spawn_helper(helper: Helper) -> (Running, HelperReport) {
    let test_binary = std::env::current_exe().expect("fixture: current_exe");
    let program = helper
        .program
        .map_or(test_binary, |p| OsStr::from_bytes(&p).into());
    let mut actions = helper.actions;
    // The namespace descriptor must survive exec (no O_CLOEXEC) until the helper is started.
    let mntns = helper.reenter.then(|| {
        let file = File::open("/proc/self/ns/mnt").expect("fixture: open own mount namespace");
        let fd = file.as_raw_fd();
        // SAFETY: clearing FD_CLOEXEC on a descriptor this function owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        actions.insert(0, holder::Action::EnterMntns(fd));
        file
    });
    let mut argv: Vec<&OsStr> = helper
        .wrapper
        .iter()
        .map(|w| OsStr::from_bytes(w))
        .collect();
    argv.push(program.as_os_str());
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .env_remove(ENV)
        .env(holder::ENV, holder::encode(&actions))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("fixture: start helper {argv:?}: {e}"));
    drop(mntns);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("fixture: read helper");
    if line.is_empty() {
        panic!(
            "fixture: helper {argv:?} exited before its report: {:?}",
            child.wait()
        );
    }
    let report = HelperReport::parse(&line, child.id());
    let stdin = child.stdin.take();
    let running = Running {
        child,
        stdin,
        _stdout: stdout,
    };
    (running, report)
}

fn run_step(step: Step, held: &mut Held, report: &mut Report) {
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
        Step::Open(p) => held.files.push(
            File::create(path(&p)).unwrap_or_else(|e| panic!("fixture: open {:?}: {e}", path(&p))),
        ),
        Step::InFlight(p) => held.files.extend(send_in_flight(&path(&p))),
        Step::Received(p) => held.files.push(receive_back(&path(&p))),
        Step::Dup(p) => held.files.push(dup_away(&path(&p))),
        Step::CloseAll => held.files.clear(),
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
        Step::NewUserns => {
            use nix::sched::{unshare, CloneFlags};
            unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                .expect("fixture: unshare(CLONE_NEWUSER | CLONE_NEWNS)");
        }
        Step::Umount2 { target, flags } => {
            let errno = raw_umount2(&target, flags);
            report.calls.push(Call {
                target,
                flags,
                errno,
            });
        }
        Step::Write { path: p, len } => {
            let mut file = File::create(path(&p))
                .unwrap_or_else(|e| panic!("fixture: create {:?}: {e}", path(&p)));
            let chunk = vec![0x5a_u8; 1 << 16];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                file.write_all(&chunk[..n]).expect("fixture: write");
                left -= n as u64;
            }
            file.sync_all().expect("fixture: sync");
        }
        Step::Sleep(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        Step::WaitFor(p) => {
            let deadline = std::time::Instant::now() + WAIT_FOR_LIMIT;
            while !path(&p).exists() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "fixture: {:?} did not appear within {WAIT_FOR_LIMIT:?}",
                    path(&p)
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        Step::KillHelpers => {
            for helper in &mut held.helpers {
                let _ = helper.child.kill();
                let _ = helper.child.wait();
            }
        }
        Step::MakeShared(p) => mount(
            None::<&str>,
            &path(&p),
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("fixture: make {:?} shared: {e}", path(&p))),
        Step::Copy { from, to } => {
            std::fs::copy(path(&from), path(&to))
                .unwrap_or_else(|e| panic!("fixture: copy {:?}: {e}", path(&from)));
        }
        Step::Spawn(helper) => {
            let (running, helper) = spawn_helper(helper);
            held.helpers.push(running);
            report.helpers.push(helper);
        }
        Step::Run { argv, must, undo } => {
            let out = run_command(&argv);
            if out.status == 0 && !undo.is_empty() {
                held.undo.push(undo);
            }
            assert!(
                !must || out.status == 0,
                "fixture: {:?} failed ({}): {}",
                String::from_utf8_lossy(&argv.join(&b' ')),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            report.runs.push(out);
        }
        Step::Losetup(p) => {
            let argv: Vec<Vec<u8>> = vec![b"losetup".into(), b"-f".into(), b"--show".into(), p];
            let out = run_command(&argv);
            assert_eq!(
                out.status,
                0,
                "fixture: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let device = String::from_utf8(out.stdout)
                .expect("losetup output")
                .trim()
                .to_owned();
            held.undo
                .push(vec![b"losetup".into(), b"-d".into(), device.clone().into()]);
            report.loops.push(device);
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

/// Creates `file`, sends its fd over a new Unix socket pair, closes it, and returns the two
/// sockets (the message stays queued, unread, while they are open).
fn send_in_flight(file: &Path) -> [File; 2] {
    use nix::sys::socket::{
        sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
    };
    use std::os::fd::AsRawFd;
    let opened = File::create(file).unwrap_or_else(|e| panic!("fixture: create {file:?}: {e}"));
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("fixture: socketpair");
    let fds = [opened.as_raw_fd()];
    let payload = [std::io::IoSlice::new(b"x")];
    sendmsg::<()>(
        a.as_raw_fd(),
        &payload,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .expect("fixture: sendmsg SCM_RIGHTS");
    drop(opened);
    [File::from(a), File::from(b)]
}

/// Sends a new file's fd over a socket pair, closes it, and returns the fd received back.
fn receive_back(file: &Path) -> File {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let [a, b] = send_in_flight(file);
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        b.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("fixture: recvmsg SCM_RIGHTS");
    let fd = msg
        .cmsgs()
        .expect("fixture: control messages")
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("fixture: an fd in the message");
    drop((a, b));
    // SAFETY: the fd was just received and is owned by nothing else.
    unsafe { File::from_raw_fd(fd) }
}

/// Creates `file`, `dup2`s its fd to [`DUP_FD`] and closes the original.
fn dup_away(file: &Path) -> File {
    use std::os::fd::{AsRawFd, FromRawFd};
    let opened = File::create(file).unwrap_or_else(|e| panic!("fixture: create {file:?}: {e}"));
    // SAFETY: DUP_FD is not in use in the fixture (it keeps few files); the new fd is owned here.
    unsafe {
        assert_eq!(
            libc::dup2(opened.as_raw_fd(), DUP_FD),
            DUP_FD,
            "fixture: dup2"
        );
        drop(opened);
        File::from_raw_fd(DUP_FD)
    }
}
