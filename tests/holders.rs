//! One real incident per holder kind: a fixture (private mount namespace) builds the mount,
//! starts real helper processes that hold it, runs `busyprobe who --json` inside its namespace,
//! then calls `umount2`. Each holder must be reported with its exact kind, pid and path, both
//! by `who` and on the EBUSY line of `busyprobe watch --json`; nothing else may be reported.

use std::{
    fmt::Write as _,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

use libtest_mimic::Trial;
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{
    contract::path_bytes,
    fixture::{Plan, Report, RunOutput},
    holder::{Helper, HelperReport},
    incident::observe_one,
    process::{self, tool},
    watcher::Watcher,
};

/// A check of a holder's note that depends on the rest of the holder.
type NoteCheck = fn(&Value) -> Result<(), String>;

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        holder_fd => || check(fd_scene(false)),
        holder_fd_o_path => || check(fd_scene(true)),
        holder_cwd => || check(cwd_scene()),
        holder_root_chroot_without_chdir => || check(root_scene()),
        holder_exe => || check(exe_scene()),
        holder_mmap_without_fd => || check(mmap_scene()),
        holder_submount => || check(submount_scene()),
        holder_mount_copy_shared_peer => || check(copy_scene(Propagation::Unchanged)),
        holder_mount_copy_slave => || check(copy_scene(Propagation::Slave)),
        private_mount_copy_is_not_blamed => || check(copy_scene(Propagation::Private)),
        holder_in_child_pid_namespace => || check(pidns_scene()),
        holder_loop_device => || check(loop_scene()),
        holder_swap_file => || check(swap_scene()),
        holder_fanotify_listener => || check(fanotify_scene()),
    ]
}

/// What expectations are computed from: the fixture's report, while it is still alive.
type Expect = Box<dyn Fn(&Report) -> Vec<Expected>>;

/// One incident: its plan (without the final `who` and `umount2`), the mount to unmount, and
/// the holders busyprobe must report.
pub struct Scene {
    /// Loop devices left behind are detached when the scene is dropped (after its fixture).
    sweep: Option<LoopSweep>,
    /// The temporary directory everything lives under (removed on drop).
    _dir: TempDir,
    /// A short description, for the comparison table.
    pub title: &'static str,
    /// The mount to unmount.
    pub target: PathBuf,
    /// The set-up steps.
    pub plan: Plan,
    /// Every holder `who` and the EBUSY line must report (and nothing else).
    pub expect: Expect,
    /// Whether the kernel must refuse the unmount (EBUSY); false: it must succeed.
    pub busy: bool,
}

impl Scene {
    /// A scene under a new temporary directory: `build(tmp)` gives the target, the plan and
    /// the expectations.
    fn new(title: &'static str, build: impl FnOnce(&Path) -> (PathBuf, Plan, Expect)) -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let tmp = dir.path().canonicalize().expect("canonicalize temp dir");
        let (target, plan, expect) = build(&tmp);
        Self {
            sweep: None,
            _dir: dir,
            title,
            target,
            plan,
            expect,
            busy: true,
        }
    }

    /// The full plan: set-up, then `extra` commands and `who`, then `umount2` of the target.
    pub fn full_plan(&self, extra: &[Vec<String>]) -> Plan {
        let mut plan = self.plan.clone();
        for argv in extra {
            plan = plan.run(argv);
        }
        plan.run(&who_argv(&self.target)).umount2(&self.target, 0)
    }
}

/// `busyprobe who TARGET --json`.
fn who_argv(target: &Path) -> [String; 4] {
    [
        env!("CARGO_BIN_EXE_busyprobe").to_owned(),
        "who".to_owned(),
        target.to_str().expect("UTF-8 temp path").to_owned(),
        "--json".to_owned(),
    ]
}

/// The first command the fixture ran with `word` as one of its arguments (`who`, `fuser`).
pub fn run_of<'a>(report: &'a Report, word: &str) -> &'a RunOutput {
    report
        .runs
        .iter()
        .find(|r| r.argv.iter().any(|a| a == word.as_bytes()))
        .unwrap_or_else(|| panic!("the fixture ran no {word}: {:?}", report.runs))
}

/// `who`'s exit status and JSON object.
pub fn who_of(report: &Report) -> (i32, Value) {
    let run = run_of(report, "who");
    let text = String::from_utf8_lossy(&run.stdout);
    let json = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "who --json gave no JSON object ({e}), status {}: stdout {text:?}, stderr {:?}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        )
    });
    (run.status, json)
}

/// Runs a scene with a watcher and checks `who` and the watcher's umount line.
fn check(scene: Scene) {
    let watcher = Watcher::start(&[] as &[&str]);
    let (fixture, call, line) = observe_one(&watcher, &scene.full_plan(&[]));
    let expected = (scene.expect)(&fixture.report);
    let (status, who) = check_who(&scene, &fixture.report, &expected);
    if scene.busy {
        assert_eq!(
            call.errno,
            libc::EBUSY,
            "the kernel must refuse the unmount with EBUSY; watch line: {line}"
        );
        assert_eq!(line["errno"], "EBUSY", "watch line: {line}");
        assert_eq!(
            line["mount"]["id"], who["mount"]["id"],
            "the EBUSY line names the mount who named: {line}"
        );
        assert_holders("the EBUSY line of watch --json", &line, &expected);
    } else {
        assert_eq!(call.errno, 0, "the kernel must let the unmount succeed");
        assert_eq!(line["ret"], 0, "watch line: {line}");
        assert!(
            line.get("holders").is_none(),
            "no holders on a success: {line}"
        );
    }
    assert_eq!(status, if scene.busy { 0 } else { 1 }, "who's exit status");
}

/// Checks `who`'s answer against `expected` and returns its exit status and JSON.
pub fn check_who(scene: &Scene, report: &Report, expected: &[Expected]) -> (i32, Value) {
    let (status, who) = who_of(report);
    assert_eq!(who["type"], "who", "{who}");
    assert_eq!(
        who["mount"]["mount_point"],
        scene.target.to_str().unwrap(),
        "who resolved the target's mount: {who}"
    );
    assert_eq!(who["is_mount_point"], true, "{who}");
    assert_holders("who --json", &who, expected);
    (status, who)
}

/// One holder busyprobe must report. Identity: kind, pid, path, blamed; then every other
/// field: `fd`, `via` (null unless set), `mntns` (a process's namespace), the note.
#[derive(Clone, Debug)]
pub struct Expected {
    /// `kind`.
    pub kind: &'static str,
    /// `pid` (null for holders that are not processes).
    pub pid: Option<u32>,
    /// `path` (null when unset).
    pub path: Option<PathBuf>,
    /// `blamed`.
    pub blamed: bool,
    /// `fd`.
    pub fd: Option<i32>,
    /// `via`.
    pub via: Option<&'static str>,
    /// `mntns`: the inode of the process's mount namespace, read while it is alive.
    pub mntns: Option<u64>,
    /// Text the note must contain.
    pub note_has: Option<String>,
    /// A check of the note that depends on the rest of the holder (how it was seen).
    pub note_check: Option<NoteCheck>,
    /// For a fanotify listener: the files of its queued events on the mount, in order (see
    /// [`queue_differences`]).
    pub queue: Option<Vec<PathBuf>>,
}

/// Inode of `pid`'s mount namespace.
fn mntns_of(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/mnt: {e}"))
        .ino()
}

impl Expected {
    /// A blamed holder of `kind` held by process `pid` (its namespace read now).
    pub fn process(kind: &'static str, pid: u32, path: Option<&Path>) -> Self {
        Self {
            kind,
            pid: Some(pid),
            path: path.map(Path::to_path_buf),
            blamed: true,
            fd: None,
            via: None,
            mntns: Some(mntns_of(pid)),
            note_has: None,
            note_check: None,
            queue: None,
        }
    }

    /// A blamed holder of `kind` that is not a process.
    pub fn thing(kind: &'static str, path: &Path) -> Self {
        Self {
            pid: None,
            mntns: None,
            ..Self::process(kind, std::process::id(), Some(path))
        }
    }

    fn fd(self, fd: i32) -> Self {
        Self {
            fd: Some(fd),
            ..self
        }
    }

    fn note_has(self, text: &str) -> Self {
        Self {
            note_has: Some(text.to_owned()),
            ..self
        }
    }

    fn note_check(self, check: NoteCheck) -> Self {
        Self {
            note_check: Some(check),
            ..self
        }
    }

    fn queue(self, files: Vec<PathBuf>) -> Self {
        Self {
            queue: Some(files),
            ..self
        }
    }

    fn same_holder(&self, h: &Value) -> bool {
        let path = path_bytes(h, "path");
        h["kind"] == self.kind
            && h["pid"].as_u64() == self.pid.map(u64::from)
            && path.as_deref() == self.path.as_ref().map(|p| p.as_os_str().as_encoded_bytes())
            && h["blamed"] == self.blamed
    }

    /// What differs in the fields beyond the identity.
    fn differences(&self, h: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, want: Value| {
            if h[name] != want {
                out.push(format!("{name}: expected {want}, got {}", h[name]));
            }
        };
        field("fd", self.fd.into());
        field("via", self.via.into());
        // The helpers hold, never the fixture that calls umount2 (nor `who`, which has no
        // caller).
        field("by_caller", Value::Null);
        if let Some(ns) = self.mntns {
            field("mntns", ns.into());
        }
        let note = h["note"].as_str().unwrap_or_default();
        if let Some(text) = &self.note_has {
            if !note.contains(text.as_str()) {
                out.push(format!(
                    "note: expected to contain {text:?}, got {}",
                    h["note"]
                ));
            }
        }
        if let Some(check) = self.note_check {
            if let Err(why) = check(h) {
                out.push(format!("note: {why}"));
            }
        }
        if let Some(files) = &self.queue {
            out.extend(queue_differences(h, files));
        }
        out
    }
}

/// `doc["holders"]` holds exactly `expected`, field for field.
pub fn assert_holders(what: &str, doc: &Value, expected: &[Expected]) {
    let holders = doc["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no holders array: {doc}"));
    let mut missing: Vec<&Expected> = expected.iter().collect();
    let mut problems = String::new();
    for h in holders {
        match missing.iter().position(|e| e.same_holder(h)) {
            Some(i) => {
                for d in missing.remove(i).differences(h) {
                    let _ = writeln!(problems, "  wrong {d} in {h}");
                }
            }
            None => {
                let _ = writeln!(problems, "  unexpected holder {h}");
            }
        }
    }
    for e in missing {
        let _ = writeln!(problems, "  missing holder {e:?}");
    }
    assert!(
        problems.is_empty(),
        "{what}: holders differ from the expected ones:\n{problems}full output: {doc}"
    );
}

/// The only helper a scene started.
fn helper(report: &Report) -> &HelperReport {
    assert_eq!(report.helpers.len(), 1, "one helper: {:?}", report.helpers);
    &report.helpers[0]
}

pub fn fd_scene(o_path: bool) -> Scene {
    Scene::new("fd: a process holds a file open", |tmp| {
        let mnt = tmp.join("mnt");
        let held = mnt.join("held");
        let hold = Helper::new();
        let hold = if o_path {
            hold.open_path(&held)
        } else {
            hold.open(&held)
        };
        let plan = Plan::new().tmpfs(&mnt).write(&held, 1).spawn(hold);
        let expect: Expect = Box::new(move |r| {
            let h = helper(r);
            vec![Expected::process("fd", h.pid, Some(&held)).fd(h.fds[0])]
        });
        (mnt, plan, expect)
    })
}

pub fn cwd_scene() -> Scene {
    Scene::new("cwd: a process's working directory", |tmp| {
        let mnt = tmp.join("mnt");
        let dir = mnt.join("dir");
        let plan = Plan::new()
            .tmpfs(&mnt)
            .mkdir(&dir)
            .spawn(Helper::new().chdir(&dir));
        let expect: Expect =
            Box::new(move |r| vec![Expected::process("cwd", helper(r).pid, Some(&dir))]);
        (mnt, plan, expect)
    })
}

pub fn root_scene() -> Scene {
    Scene::new("root: a process chrooted into the mount", |tmp| {
        let mnt = tmp.join("mnt");
        let plan = Plan::new().tmpfs(&mnt).spawn(Helper::new().chroot(&mnt));
        let root = mnt.clone();
        // Exactly one holder: no cwd holder, the helper's cwd stayed outside the mount.
        let expect: Expect =
            Box::new(move |r| vec![Expected::process("root", helper(r).pid, Some(&root))]);
        (mnt, plan, expect)
    })
}

pub fn exe_scene() -> Scene {
    Scene::new("exe: a process runs a program from the mount", |tmp| {
        let mnt = tmp.join("mnt");
        let exe = mnt.join("holder-exe");
        let test_binary = std::env::current_exe().expect("current_exe");
        let plan = Plan::new()
            .tmpfs(&mnt)
            .copy(test_binary, &exe)
            .spawn(Helper::new().program(&exe));
        let expect: Expect = Box::new(move |r| {
            let pid = helper(r).pid;
            // The running program is also mapped: both are reported, for the same file.
            vec![
                Expected::process("exe", pid, Some(&exe)),
                Expected::process("mmap", pid, Some(&exe)),
            ]
        });
        (mnt, plan, expect)
    })
}

pub fn mmap_scene() -> Scene {
    Scene::new("mmap: a process maps a file, its fd closed", |tmp| {
        let mnt = tmp.join("mnt");
        let mapped = mnt.join("mapped");
        let plan = Plan::new()
            .tmpfs(&mnt)
            .write(&mapped, 8192)
            .spawn(Helper::new().mmap(&mapped));
        let expect: Expect = Box::new(move |r| {
            let pid = helper(r).pid;
            assert_no_fd_on(pid, &mapped);
            vec![Expected::process("mmap", pid, Some(&mapped))]
        });
        (mnt, plan, expect)
    })
}

/// No descriptor of `pid` names `file` (the mapping is the only hold).
fn assert_no_fd_on(pid: u32, file: &Path) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd");
    for fd in fds {
        let link = std::fs::read_link(fd.expect("fd entry").path()).unwrap_or_default();
        assert_ne!(
            link, file,
            "process {pid} still has a descriptor on {file:?}"
        );
    }
}

pub fn submount_scene() -> Scene {
    Scene::new("submount: another mount inside it", |tmp| {
        let mnt = tmp.join("mnt");
        let sub = mnt.join("sub");
        let plan = Plan::new().tmpfs(&mnt).tmpfs(&sub);
        let expect: Expect = Box::new(move |_| vec![Expected::thing("submount", &sub)]);
        (mnt, plan, expect)
    })
}

/// How a helper's copy of the fixture's mount namespace propagates (`unshare --propagation`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Unchanged: the copies of shared mounts are peers.
    Unchanged,
    /// Slave of the original mounts.
    Slave,
    /// Private: the unmount does not reach the copy.
    Private,
}

/// A helper in its own mount namespace (`unshare -m --propagation P`) with its cwd in the
/// copy of the target. The target's parent is shared, so the unmount propagates to peer and
/// slave copies (and their busyness makes it fail), never to a private one.
pub fn copy_scene(propagation: Propagation) -> Scene {
    let (title, word) = match propagation {
        Propagation::Unchanged => (
            "mount-copy: a busy peer copy in another namespace",
            "unchanged",
        ),
        Propagation::Slave => (
            "mount-copy: a busy slave copy in another namespace",
            "slave",
        ),
        Propagation::Private => (
            "mount-copy: a busy private copy (must not block)",
            "private",
        ),
    };
    let mut scene = Scene::new(title, |tmp| {
        let base = tmp.join("base");
        let mnt = base.join("mnt");
        let dir = mnt.join("dir");
        let plan = Plan::new()
            .tmpfs(&base)
            .make_shared(&base)
            .tmpfs(&mnt)
            .mkdir(&dir)
            .spawn(
                Helper::new()
                    .wrapped(&["unshare", "-m", "--propagation", word])
                    .chdir(&dir),
            );
        let expect: Expect = Box::new(move |r| {
            let h = helper(r);
            assert_eq!(h.pid, h.spawned, "unshare -m execs the helper");
            assert_ne!(
                mntns_of(h.pid),
                mntns_of(r.pid),
                "the helper has its own namespace"
            );
            vec![Expected {
                kind: "mount-copy",
                via: Some("cwd"),
                blamed: propagation != Propagation::Private,
                ..Expected::process("mount-copy", h.pid, Some(&dir))
            }]
        });
        (mnt, plan, expect)
    });
    scene.busy = propagation != Propagation::Private;
    scene
}

/// A helper started by `unshare -p -f --mount-proc` (a child PID namespace, and a private
/// mount namespace it leaves again to hold the fixture's mount). Its host pid is reported; the
/// `unshare` process stays in the private copy, reported for information only.
pub fn pidns_scene() -> Scene {
    Scene::new("fd: a process in a child PID namespace", |tmp| {
        let mnt = tmp.join("mnt");
        let held = mnt.join("held");
        let plan = Plan::new().tmpfs(&mnt).write(&held, 1).spawn(
            Helper::new()
                .wrapped(&["unshare", "-p", "-f", "--mount-proc"])
                .reenter_fixture_namespace()
                .open(&held),
        );
        let copy = mnt.clone();
        let expect: Expect = Box::new(move |r| {
            let h = helper(r);
            assert!(
                h.nspid.len() >= 2 && h.nspid.last() == Some(&1) && h.pid != 1,
                "the helper is pid 1 of a child PID namespace: NSpid {:?}",
                h.nspid
            );
            assert_ne!(h.pid, h.spawned, "unshare -f forks the helper");
            vec![
                Expected::process("fd", h.pid, Some(&held)).fd(h.fds[0]),
                Expected {
                    blamed: false,
                    ..Expected::process("mount-copy", h.spawned, Some(&copy))
                },
            ]
        });
        (mnt, plan, expect)
    })
}

/// Makes loop devices usable (`modprobe loop` when `/dev/loop-control` is missing), or fails
/// saying what is missing: a loop trial never skips itself.
fn require_loop_devices() {
    if !Path::new("/dev/loop-control").exists() {
        let modprobe = process::output(Command::new(tool("modprobe")).arg("loop"));
        assert!(
            Path::new("/dev/loop-control").exists(),
            "no /dev/loop-control, and `modprobe loop` did not make one ({}): this kernel \
             has no loop devices, and the loop and swap trials need them: {}",
            modprobe.status,
            String::from_utf8_lossy(&modprobe.stderr).trim()
        );
    }
    let free = process::output(Command::new(tool("losetup")).arg("-f"));
    assert!(
        free.status.success(),
        "losetup -f found no free loop device: {}",
        String::from_utf8_lossy(&free.stderr).trim()
    );
}

/// Detaches, on drop, every loop device whose backing file name contains `tag` (a fallback:
/// the fixture detaches its own when it ends).
struct LoopSweep {
    tag: String,
}

impl LoopSweep {
    /// A sweep for image files named after `tmp`'s unique name, and that name.
    fn new(tmp: &Path) -> (Self, String) {
        let tag = format!(
            "busyprobe-{}",
            tmp.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_start_matches('.')
        );
        (Self { tag: tag.clone() }, tag)
    }
}

impl Drop for LoopSweep {
    fn drop(&mut self) {
        let Ok(devices) = std::fs::read_dir("/sys/block") else {
            return;
        };
        for dev in devices.flatten() {
            let backing = dev.path().join("loop/backing_file");
            let Ok(file) = std::fs::read_to_string(backing) else {
                continue;
            };
            if file.contains(&self.tag) {
                let name = format!("/dev/{}", dev.file_name().to_string_lossy());
                eprintln!("detaching leftover loop device {name} ({})", file.trim());
                let _ = Command::new("losetup").args(["-d", &name]).status();
            }
        }
    }
}

fn loop_scene() -> Scene {
    require_loop_devices();
    let mut sweep = None;
    let mut scene = Scene::new("loop: a loop device backed by a file on it", |tmp| {
        let (guard, tag) = LoopSweep::new(tmp);
        sweep = Some(guard);
        let mnt = tmp.join("mnt");
        let image = mnt.join(format!("{tag}.img"));
        let plan = Plan::new()
            .tmpfs(&mnt)
            .write(&image, 1 << 20)
            .losetup(&image);
        let expect: Expect = Box::new(move |r| {
            assert_eq!(r.loops.len(), 1, "one loop device: {:?}", r.loops);
            vec![Expected::thing("loop", &image).note_has(&r.loops[0])]
        });
        (mnt, plan, expect)
    });
    scene.sweep = sweep;
    scene
}

/// A swap file on an ext4 image (tmpfs cannot hold swap files) mounted from a loop device;
/// the target is the ext4 mount.
///
/// The image lives in the scene's temporary directory, never on a tmpfs: tmpfs pages can be
/// swapped out, and a tmpfs image's pages swapped onto the swap file inside that very image
/// deadlock the loop device (its writer waits for a page under writeback to that swap, and
/// swapoff waits for the same page), leaving unkillable D-state tasks until a reboot. Page
/// cache of a file on disk is written back, never swapped, so the loop device cannot wait on
/// itself.
fn swap_scene() -> Scene {
    require_loop_devices();
    let mut sweep = None;
    let mut scene = Scene::new("swap: an active swap file on it", |tmp| {
        let (guard, tag) = LoopSweep::new(tmp);
        sweep = Some(guard);
        let image = tmp.join(format!("{tag}.img"));
        let ext = tmp.join("ext");
        let swapfile = ext.join("swapfile");
        let none: [&str; 0] = [];
        let plan = Plan::new()
            .write(&image, 32 << 20)
            .must_run(
                &[tool("mkfs.ext4").as_path(), Path::new("-qF"), &image],
                &none,
            )
            .mkdir(&ext)
            .must_run(
                &[tool("mount").as_path(), Path::new("-oloop"), &image, &ext],
                &none,
            )
            .write(&swapfile, 8 << 20)
            .must_run(&[Path::new("chmod"), Path::new("600"), &swapfile], &none)
            .must_run(&[tool("mkswap").as_path(), &swapfile], &none)
            .must_run(
                &[tool("swapon").as_path(), &swapfile],
                &[tool("swapoff").as_path(), &swapfile],
            );
        let expect: Expect = Box::new(move |_| vec![Expected::thing("swap", &swapfile)]);
        (ext, plan, expect)
    });
    scene.sweep = sweep;
    scene
}

/// Files a fixture opens (and closes) on a fanotify listener's mount, in this order: more than
/// busyprobe names of a queue (4), so that two are only counted.
pub fn fanotify_files(mnt: &Path) -> Vec<PathBuf> {
    ["a", "b", "c", "d", "e", "f"].map(|n| mnt.join(n)).to_vec()
}

/// A fanotify listener with a mount mark that never reads its events, then another process
/// (the fixture) opens and closes six files on the mount: the queued events pin the mount. The
/// kernel scan counts them and names the files of the first four.
pub fn fanotify_scene() -> Scene {
    Scene::new("fanotify: a listener with unread queued events", |tmp| {
        let mnt = tmp.join("mnt");
        let files = fanotify_files(&mnt);
        let plan = files
            .iter()
            .fold(
                Plan::new().tmpfs(&mnt).spawn(Helper::new().fanotify(&mnt)),
                Plan::hold,
            )
            .release();
        let expect: Expect = Box::new(move |r| {
            let h = helper(r);
            vec![Expected::process("fanotify", h.pid, None)
                .fd(h.fds[0])
                .note_check(fanotify_note)
                .queue(files.clone())]
        });
        (mnt, plan, expect)
    })
}

/// What differs between a fanotify holder's queue and `files` (the fixture's opens on the
/// mount, in order): `queued_events` their number and `queued_files` the first 4 of them, where
/// its queue was seen (kernel scan, traced); neither field from a `/proc` scan.
pub fn queue_differences(h: &Value, files: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    if h["seen"] == "proc-scan" {
        for field in ["queued_events", "queued_files"] {
            if h.get(field).is_some() {
                out.push(format!(
                    "{field}: expected none from a /proc scan, got {}",
                    h[field]
                ));
            }
        }
        return out;
    }
    if h["queued_events"] != files.len() {
        out.push(format!(
            "queued_events: expected {}, got {}",
            files.len(),
            h["queued_events"]
        ));
    }
    let named: Option<Vec<Option<Vec<u8>>>> = h["queued_files"]
        .as_array()
        .map(|a| a.iter().map(|f| path_bytes(f, "path")).collect());
    let want: Vec<Option<Vec<u8>>> = files
        .iter()
        .take(4)
        .map(|p| Some(p.as_os_str().as_encoded_bytes().to_vec()))
        .collect();
    if named.as_ref() != Some(&want) {
        out.push(format!(
            "queued_files: expected {:?}, got {}",
            &files[..4],
            h["queued_files"]
        ));
    }
    out
}

/// A fanotify holder's note: a `/proc` scan only suspects the listener ("suspected: ..."); the
/// kernel scan counts its unread events on the mount, exactly six here (the fixture's opens).
fn fanotify_note(h: &Value) -> Result<(), String> {
    let note = h["note"].as_str().unwrap_or_default();
    let (seen, want) = (h["seen"].as_str(), "its queue holds 6 unread events on");
    let ok = match seen {
        Some("proc-scan") => note.starts_with("suspected:"),
        Some("kernel-scan") => note.starts_with(want),
        _ => false,
    };
    ok.then_some(()).ok_or_else(|| {
        format!(
            "seen {seen:?} with note {note:?}: expected \"suspected: ...\" from a proc-scan, \
             {want:?}... from a kernel-scan"
        )
    })
}
