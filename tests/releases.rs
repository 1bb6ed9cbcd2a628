//! Every way of letting go is traced: a holder that, right after the unmount it made fail,
//! replaces one fd with `dup2`, closes another with `close_range`, changes its working
//! directory off the mount, unmaps a file it had mapped, and has a child whose close-on-exec
//! fds go at `execve` (its own file, and the two it inherited through `fork`), is named as
//! seven `transient` holders, each with the exact process, file or directory and how it let
//! go.

use libtest_mimic::Trial;
use std::{
    ffi::OsStr,
    fs::File,
    io::{Read, Write as _},
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nix::{
    errno::Errno,
    mount::{umount2, MntFlags},
    unistd::{dup2, fork, pipe, ForkResult},
};
use serde_json::{json, Value};

use crate::{
    holders,
    support::{
        fixture::Plan,
        holder::Helper,
        incident::{Fixture, FIXTURE_TIMEOUT},
        lines::Lines,
        process,
        watcher::{is_umount_of, Watcher, LINE_TIMEOUT},
    },
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        a_listener_gone_with_unread_events_is_named,
        a_mount_gone_before_the_scan_never_blames_the_mount_below,
        a_release_too_deep_to_walk_is_cut_marked_and_counted,
        every_way_of_letting_go_is_a_transient_holder,
        a_recent_accessor_is_context_not_a_holder,
        the_callers_own_opens_are_the_callers_not_context,
        a_holder_gone_with_its_namespaces_copy_is_named,
    ]
}

/// Environment variable: run [`let_go`] on the mount point it names (a child mode of the
/// test binary, so that it can unshare its mount namespace while single-threaded).
pub const LET_GO_ENV: &str = "BUSYPROBE_TEST_LET_GO";

/// The files, relative to the mount: replaced by `dup2`, closed by `close_range`, closed at
/// `execve` (held by the child).
const DUPPED: &str = "dupped";
const RANGED: &str = "ranged";
const EXECED: &str = "execed";
/// The working directory the holder leaves with `chdir`.
const CWD: &str = "cwd";
/// The file the holder maps (its fd closed at once) and unmaps with `munmap`.
const MAPPED: &str = "mapped";

/// Maps the first page of a new file at `path` shared, closes its fd: only the mapping holds it.
fn map_file(path: &Path) -> *mut libc::c_void {
    let file = File::create_new(path).expect("let-go: create the mapped file");
    file.set_len(4096).unwrap();
    // SAFETY: a fresh shared mapping of a file of one page; the fd may close after mmap.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "let-go: mmap");
    addr
}

/// Let-go mode: mounts a tmpfs at `dir` in a private namespace, holds three files on it (the
/// third in a child, close-on-exec), fails to unmount it, lets go of each a different way,
/// prints `{"pid", "first"}`, waits for a line on stdin (the test has read the failure's
/// line), unmounts it, and prints `{"pid", "child", "first", "second", "busy_retries"}`
/// (errnos, 0 for success; how many times the second unmount was busy before it worked); it
/// exits when its stdin closes.
pub fn let_go(dir: &OsStr) -> ! {
    let mnt = Path::new(dir);
    crate::support::tmpfs_in_private_namespace(mnt);
    let create = |name: &str| File::create(mnt.join(name)).expect("let-go: create a file");
    let dupped = create(DUPPED);
    let ranged = create(RANGED);
    drop(create(EXECED));
    // The child opens its file close-on-exec, says so, and execs when told (its end of the
    // `exec'd` pipe is close-on-exec too: EOF tells the parent the exec happened).
    let (go_read, go_write) = pipe().unwrap();
    let (execd_read, execd_write) = pipe().unwrap();
    // SAFETY: single-threaded here; the child only calls async-signal-safe functions and exec.
    let child = match unsafe { fork() }.expect("let-go: fork") {
        ForkResult::Child => {
            // Dies with this single-threaded process, whatever happens to it.
            // SAFETY: plain prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            drop(go_write);
            drop(execd_read);
            let _held = File::open(mnt.join(EXECED)).expect("child: open"); // O_CLOEXEC
            nix::fcntl::fcntl(
                &execd_write,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .unwrap();
            nix::unistd::write(&execd_write, b"r").unwrap();
            let mut byte = [0u8];
            let _ = nix::unistd::read(&go_read, &mut byte);
            let err = Command::new("sleep").arg("30").exec_replace();
            panic!("child: exec sleep: {err}");
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_read);
    drop(execd_write);
    let mut execd = File::from(execd_read);
    let mut ready = [0u8];
    execd
        .read_exact(&mut ready)
        .expect("let-go: the child holds its file");
    // After the fork, so that the child's working directory and mappings stay off the mount.
    std::fs::create_dir(mnt.join(CWD)).unwrap();
    std::env::set_current_dir(mnt.join(CWD)).expect("let-go: chdir into the mount");
    let mapping = map_file(&mnt.join(MAPPED));
    let first = errno_of(umount2(mnt, MntFlags::empty()));
    // Let go, each a different way, at once (before busyprobe's scan can look).
    let null = File::open("/dev/null").unwrap();
    let mut target = OwnedFd::from(dupped);
    dup2(&null, &mut target).expect("let-go: dup2 over the file");
    let ranged = ranged.as_raw_fd() as libc::c_uint;
    // SAFETY: closes only `ranged`, which is not used again (forgotten below).
    assert_eq!(unsafe { libc::close_range(ranged, ranged, 0) }, 0);
    std::env::set_current_dir("/").expect("let-go: chdir off the mount");
    // SAFETY: the mapping made above, not used again.
    assert_eq!(unsafe { libc::munmap(mapping, 4096) }, 0, "let-go: munmap");
    nix::unistd::write(&go_write, b"g").unwrap();
    // EOF: the child exec'd.
    let _ = execd.read(&mut ready);
    // Unmount again (as runtimes retry) only once the failure's line is out: the mount must
    // still be there when busyprobe reads the table to resolve the failed call's target, or
    // its holders are unknown (tracepoint mode knows the call's path, not its mount).
    let say = |v: Value| {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}").expect("let-go: write");
        out.flush().expect("let-go: flush");
    };
    say(json!({"pid": std::process::id(), "first": first}));
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("let-go: wait for the test");
    // The exec'ing child drops its files after its end of the pipe (deferred fputs in
    // fd order): retry briefly, as a runtime would.
    let mut second = errno_of(umount2(mnt, MntFlags::empty()));
    let mut busy_retries = 0;
    for _ in 0..100 {
        if second != libc::EBUSY {
            break;
        }
        busy_retries += 1;
        std::thread::sleep(std::time::Duration::from_millis(10));
        second = errno_of(umount2(mnt, MntFlags::empty()));
    }
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(child, None);
    say(json!({
        "pid": std::process::id(),
        "child": child.as_raw(),
        "first": first,
        "second": second,
        "busy_retries": busy_retries
    }));
    // Outlive the unmounts, as a runtime does: busyprobe may still be resolving the retries'
    // targets in this namespace until the test has read their lines (it closes our stdin).
    let _ = std::io::stdin().read_line(&mut line);
    std::mem::forget(target);
    std::process::exit(0)
}

fn errno_of(r: nix::Result<()>) -> i32 {
    r.err().map_or(0, |e: Errno| e as i32)
}

/// `Command::exec` under a name that says it does not return on success.
trait ExecReplace {
    fn exec_replace(&mut self) -> std::io::Error;
}

impl ExecReplace for Command {
    fn exec_replace(&mut self) -> std::io::Error {
        std::os::unix::process::CommandExt::exec(self)
    }
}

/// Runs [`let_go`] once under `tmp`; its report, the watcher's line for its first EBUSY, and
/// the lines of the EBUSYs of its retries (made after the first line was out).
fn run_once(watcher: &Watcher, tmp: &Path) -> (Value, Value, Vec<Value>) {
    let mnt = tmp.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut child = process::spawn(
        Command::new(std::env::current_exe().unwrap())
            .env(LET_GO_ENV, &mnt)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = child.stdin.take().unwrap();
    let stderr = Lines::spawn_collected(child.stderr.take().unwrap());
    let stdout = Lines::spawn(child.stdout.take().unwrap());
    let next = |what: &str| -> Value {
        let line = stdout.expect_line(FIXTURE_TIMEOUT, what, &stderr);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what} ({e}): {line}"))
    };
    let early = next("let-go first unmount");
    assert_eq!(early["first"], libc::EBUSY, "held: {early}");
    let pid = early["pid"].as_u64().unwrap() as u32;
    let first = watcher.umount_lines_of(pid, 1).remove(0);
    writeln!(stdin, "go").expect("tell let-go to unmount again");
    let report = next("let-go report");
    assert_eq!(report["first"], libc::EBUSY, "held: {report}");
    assert_eq!(report["second"], 0, "everything let go: {report}");
    let retries = report["busy_retries"].as_u64().unwrap() as usize;
    let lines = if retries > 0 {
        watcher.umount_lines_of(pid, retries)
    } else {
        Vec::new()
    };
    drop(stdin);
    let status = process::wait(&mut child, LINE_TIMEOUT);
    assert!(
        status.success(),
        "let-go child failed: {}",
        stderr.1.lock().unwrap()
    );
    (report, first, lines)
}

/// `(kind, pid, path, note)` of each holder of `line`, sorted.
fn holders(line: &Value) -> Vec<(String, u64, String, String)> {
    let mut got: Vec<_> = line["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {line}"))
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap_or_default().to_owned(),
                h["pid"].as_u64().unwrap_or_default(),
                h["path"].as_str().unwrap_or_default().to_owned(),
                h["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    got.sort();
    got
}

fn every_way_of_letting_go_is_a_transient_holder() {
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    // The releases come microseconds after the failure and the scan milliseconds after it;
    // should the scan still see a file (a loaded machine), it is an `fd` holder: run again.
    for attempt in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().canonicalize().unwrap();
        let (report, line, retries) = run_once(&watcher, &tmp);
        if attempt < 3 && line["attribution_error"].is_string() {
            eprintln!(
                "attempt {attempt}: unmounted before busyprobe read the table (a loaded machine); again: {}",
                line["attribution_error"]
            );
            continue;
        }
        let got = holders(&line);
        if attempt < 3 && got.iter().any(|(kind, ..)| kind == "fd") {
            eprintln!("attempt {attempt}: the scan saw a file before it was let go; again");
            continue;
        }
        let pid = report["pid"].as_u64().unwrap();
        let child = report["child"].as_u64().unwrap();
        let path = |name: &str| tmp.join("mnt").join(name).to_str().unwrap().to_owned();
        let transient = |pid: u64, name: &str, how: &str| {
            (
                "transient".to_owned(),
                pid,
                path(name),
                format!("{how} after the failing call"),
            )
        };
        let mut want = vec![
            transient(pid, DUPPED, "replaced it with dup2/dup3"),
            transient(pid, RANGED, "closed it with close_range"),
            transient(pid, CWD, "changed its working directory off the mount"),
            transient(pid, MAPPED, "unmapped it (munmap)"),
            transient(child, EXECED, "exec'd (close-on-exec)"),
            // Inherited through fork, close-on-exec like every fd Rust opens: the child
            // held them too, and let go of them at exec.
            transient(child, DUPPED, "exec'd (close-on-exec)"),
            transient(child, RANGED, "exec'd (close-on-exec)"),
        ];
        want.sort();
        assert_eq!(got, want, "{line}");
        // A retry failed while the exec'ing child's files were still being dropped: the child,
        // whose exec entered just before the call, is named (or nothing, once more than
        // 100 ms had passed).
        for retry in &retries {
            let named = holders(retry);
            let [(kind, holder, _, note)] = named.as_slice() else {
                panic!("one holder for a retry: {retry}");
            };
            assert!(
                (kind == "transient"
                    && *holder == child
                    && note.starts_with("exec'd (close-on-exec) ")
                    && note.contains(" ms before the failing call"))
                    || kind == "unknown",
                "a retry names the exec'ing child: {retry}"
            );
        }
        eprintln!("{} retries were busy", retries.len());
        return;
    }
}

/// `cat` reads a file on the mount and exits; then the fixture holds another file and fails
/// to unmount: the holder is the fixture's fd, and `cat` is listed under `accessors` (it opened
/// a file there shortly before the call), not among the holders.
fn a_recent_accessor_is_context_not_a_holder() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let (touched, held) = (mnt.join("touched"), mnt.join("held"));
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    let cat = format!("echo $$; exec cat {} >/dev/null", touched.display());
    let plan = Plan::new()
        .tmpfs(&mnt)
        .write(&touched, 10)
        .run(&["sh", "-c", &cat])
        .hold(&held)
        .umount2(&mnt, 0);
    let fixture = Fixture::run(&plan);
    assert_eq!(fixture.report.calls[0].errno, libc::EBUSY);
    let run = &fixture.report.runs[0];
    assert_eq!(run.status, 0, "cat: {run:?}");
    let cat_pid: u64 = String::from_utf8_lossy(&run.stdout).trim().parse().unwrap();
    let line = watcher.umount_lines_of(fixture.pid(), 1).remove(0);
    let holders = line["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{line}");
    assert_eq!(holders[0]["kind"], "fd", "{line}");
    assert_eq!(holders[0]["pid"], fixture.pid(), "{line}");
    assert_eq!(holders[0]["path"], held.to_str().unwrap(), "{line}");
    let accessors = line["accessors"]
        .as_array()
        .unwrap_or_else(|| panic!("no accessors: {line}"));
    let cat = accessors
        .iter()
        .find(|a| a["pid"] == cat_pid)
        .unwrap_or_else(|| panic!("cat[{cat_pid}] is not an accessor: {line}"));
    assert_eq!(cat["comm"], "cat", "{line}");
    assert_eq!(cat["fd"], 3, "{line}");
    let before = cat["opened_ns_before"].as_u64().unwrap();
    assert!(before > 0 && before < 2_000_000_000, "{line}");
    assert!(
        !accessors
            .iter()
            .any(|a| a["pid"] == holders[0]["pid"] && a["fd"] == holders[0]["fd"]),
        "the holder is not also an accessor: {line}"
    );
}

/// util-linux's `umount(8)`: the first `umount` on PATH.
fn util_linux_umount() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("umount"))
        .find(|p| p.is_file())
        .expect("umount(8) on PATH")
}

/// A shell runs `cat` on a file of the mount, reads another file into a builtin itself, and
/// execs the real `umount(8)` on the mount, which a file the fixture holds keeps busy:
/// `umount(8)` opens its target (`O_PATH`) before it calls `umount2`, and the shell's own
/// read was made under the same pid. Both are the caller's own opens, under
/// `caller_accesses` (newest first, each under the comm it had), none of them under
/// `accessors`, which still lists `cat`; the holder is the fixture's file.
fn the_callers_own_opens_are_the_callers_not_context() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let (touched, read, held) = (mnt.join("touched"), mnt.join("read"), mnt.join("held"));
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    // By its path: busybox's sh (the VM guests' /bin/sh) runs its own umount applet for a bare
    // `umount`, whatever PATH says.
    let umount = util_linux_umount();
    let script = r#"echo $$; cat "$1" >/dev/null & echo $!; wait; read x < "$2"; exec "$4" "$3""#;
    let plan = Plan::new()
        .tmpfs(&mnt)
        .write(&touched, 10)
        .write(&read, 10)
        .hold(&held)
        .run(&[
            OsStr::new("sh"),
            OsStr::new("-c"),
            OsStr::new(script),
            OsStr::new("sh"),
            touched.as_os_str(),
            read.as_os_str(),
            mnt.as_os_str(),
            umount.as_os_str(),
        ]);
    let fixture = Fixture::run(&plan);
    let run = &fixture.report.runs[0];
    assert_eq!(run.status, 32, "umount(8) fails (target is busy): {run:?}");
    let pids: Vec<u32> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let [shell, cat] = pids[..] else {
        panic!("the shell's and cat's pids: {run:?}");
    };
    let line = watcher.umount_lines_of(shell, 1).remove(0);
    assert_eq!(line["comm"], "umount", "{line}");
    assert_eq!(line["errno"], "EBUSY", "{line}");
    let holders = line["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{line}");
    assert_eq!(
        (&holders[0]["kind"], &holders[0]["pid"], &holders[0]["path"]),
        (
            &json!("fd"),
            &json!(fixture.pid()),
            &json!(held.to_str().unwrap())
        ),
        "{line}"
    );
    let opens = |field: &str| -> Vec<(u64, String, u64, u64)> {
        let list = line[field].as_array();
        let list = list.unwrap_or_else(|| panic!("no {field}: {line}"));
        list.iter()
            .map(|a| {
                let before = a["opened_ns_before"].as_u64().unwrap();
                assert!(before < 2_000_000_000, "{field}: {line}");
                let comm = a["comm"].as_str().unwrap().to_owned();
                let id = a["mount_id"].as_u64().unwrap();
                (
                    a["pid"].as_u64().unwrap(),
                    comm,
                    a["fd"].as_u64().unwrap(),
                    id,
                )
            })
            .collect()
    };
    let mount_id = line["mount"]["id"].as_u64().unwrap();
    let (shell, cat) = (u64::from(shell), u64::from(cat));
    assert_eq!(
        opens("caller_accesses"),
        [
            (shell, "umount".to_owned(), 3, mount_id),
            (shell, "sh".to_owned(), 3, mount_id)
        ],
        "umount(8)'s look at its target, then the shell's read: {line}"
    );
    // The fixture wrote the files it made just before: it is an accessor too.
    let others: Vec<_> = opens("accessors")
        .into_iter()
        .filter(|a| a.0 != u64::from(fixture.pid()))
        .collect();
    assert_eq!(others, [(cat, "cat".to_owned(), 3, mount_id)], "{line}");
}

/// A file 14 directories deep (the probe walks 12 names) is held at the failing call and let
/// go at once: its transient holder's path is marked as cut (`<mnt>/…/<last 11 dirs>/file`),
/// the note says so, and the final `stats` line counts it under `release_path_cut`.
fn a_release_too_deep_to_walk_is_cut_marked_and_counted() {
    let mut watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    for attempt in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().canonicalize().unwrap();
        let mnt = tmp.join("mnt");
        let mut plan = Plan::new().tmpfs(&mnt);
        let mut deep = mnt.clone();
        for level in 1..=14 {
            deep = deep.join(format!("d{level}"));
            plan = plan.mkdir(&deep);
        }
        let file = deep.join("file");
        // Let go at once; unmount again a little later, as a runtime retries.
        let plan = plan
            .hold(&file)
            .umount2(&mnt, 0)
            .release()
            .sleep(300)
            .umount2(&mnt, 0);
        let fixture = Fixture::run(&plan);
        let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
        assert_eq!(errnos, [libc::EBUSY, 0], "held, then let go");
        let line = watcher.umount_lines_of(fixture.pid(), 1).remove(0);
        let h = &line["holders"][0];
        if attempt < 3 && h["kind"] == "fd" {
            eprintln!("attempt {attempt}: the scan saw the file before it was let go; again");
            continue;
        }
        let tail: String = (4..=14).map(|l| format!("/d{l}")).collect();
        let cut = format!("{}/…{tail}/file", mnt.display());
        assert_eq!(line["holders"].as_array().unwrap().len(), 1, "{line}");
        assert_eq!(h["kind"], "transient", "{line}");
        assert_eq!(h["pid"], fixture.pid(), "{line}");
        assert_eq!(h["path"], cut.as_str(), "{line}");
        assert!(h["note"].as_str().unwrap().contains("path cut"), "{line}");
        let ended = watcher.stop(nix::sys::signal::Signal::SIGINT);
        assert!(ended.status.success(), "{:?}", ended.status);
        let last = ended.rest.last().expect("a final stats line");
        assert!(!is_umount_of(last, fixture.pid()), "{last}");
        let cut_count = last["drops"]["release_path_cut"].as_u64().unwrap_or(0);
        assert!(cut_count >= 1, "counted: {last}");
        return;
    }
}

/// Held, unmount fails, let go, unmount works: all within microseconds, usually before busyprobe
/// reads the failure. Whatever wins that race, the EBUSY never blames the mount that is at
/// the path now (the one below): either the transient holder of the file, or a clear error.
fn a_mount_gone_before_the_scan_never_blames_the_mount_below() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let mnt = tmp.join("mnt");
    let file = mnt.join("held");
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    let plan = Plan::new()
        .tmpfs(&mnt)
        .hold(&file)
        .umount2(&mnt, 0)
        .release()
        .umount2(&mnt, 0);
    let fixture = Fixture::run(&plan);
    let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
    assert_eq!(errnos, [libc::EBUSY, 0], "held, then let go");
    let line = watcher.umount_lines_of(fixture.pid(), 1).remove(0);
    match line["holders"].as_array() {
        Some(holders) => {
            // Released right after the failure: traced as it let go, or (a fast scan) seen
            // still holding it. Either way the fixture's file on the tmpfs, never the mount
            // below.
            assert_eq!(holders.len(), 1, "{line}");
            let h = &holders[0];
            assert!(h["kind"] == "transient" || h["kind"] == "fd", "{line}");
            assert_eq!(h["pid"], fixture.pid(), "{line}");
            assert_eq!(h["path"], file.to_str().unwrap(), "{line}");
            assert_eq!(
                line["mount"]["mount_point"],
                mnt.to_str().unwrap(),
                "{line}"
            );
            assert_eq!(h["mount_id"], line["mount"]["id"], "{line}");
        }
        None => assert_eq!(
            line["attribution_error"],
            "the mount was gone before busyprobe could read the mount table (unmounted right \
             after the failure); its holders are unknown",
            "{line}"
        ),
    }
}

/// An antivirus agent's fanotify listener never reads the events of the fixture's opens of six
/// files on the mount: the unread events pin the mount and the unmount fails; the listener is
/// killed right after (an agent restarted). Its queue went with it, so no scan can see it:
/// release tracking follows the group into its queue as the listener exits and names it, with
/// its group fd, the count of the events and the files of the first four (`path` the first's).
/// A scan that ran before the kill sees the queue instead (a `fanotify` holder seen by the
/// kernel scan): then the trial runs again, at most 5 times.
fn a_listener_gone_with_unread_events_is_named() {
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    for trial in 1..=5 {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().canonicalize().unwrap();
        let mnt = tmp.join("mnt");
        let files = holders::fanotify_files(&mnt);
        let plan = files
            .iter()
            .fold(
                Plan::new().tmpfs(&mnt).spawn(Helper::new().fanotify(&mnt)),
                Plan::hold,
            )
            .release()
            .umount2(&mnt, 0)
            .kill_helpers();
        let fixture = Fixture::run(&plan);
        let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
        assert_eq!(errnos, [libc::EBUSY], "the unread events pin the mount");
        let listener = &fixture.report.helpers[0];
        let line = watcher.umount_lines_of(fixture.pid(), 1).remove(0);
        let holders = line["holders"]
            .as_array()
            .unwrap_or_else(|| panic!("no holders: {line}"));
        assert_eq!(holders.len(), 1, "the listener alone: {line}");
        let h = &holders[0];
        assert_eq!(h["kind"], "fanotify", "{line}");
        assert_eq!(h["pid"], listener.pid, "{line}");
        assert_eq!(h["fd"], listener.fds[0], "the group fd: {line}");
        assert_eq!(
            holders::queue_differences(h, &files),
            Vec::<String>::new(),
            "{line}"
        );
        if h["seen"] == "kernel-scan" && trial < 5 {
            eprintln!("trial {trial}: the scan saw the listener before it was killed; again");
            continue;
        }
        assert_eq!(h["seen"], "traced", "{line}");
        assert_eq!(
            h["path"],
            files[0].to_str().unwrap(),
            "the first event's file: {line}"
        );
        let note = h["note"].as_str().unwrap_or_default();
        assert!(
            note.starts_with(
                "exited after the failing call, letting go of its fanotify group with 6 unread events on this mount"
            ),
            "{line}"
        );
        eprintln!("trial {trial}: traced");
        return;
    }
}

/// Creates its file when dropped: the go-ahead a fixture waits for ([`Plan::wait_for`]), given
/// also when the test fails before it means to, so that the fixture ends (and with it its
/// mounts and helpers) without waiting for its limit.
struct GoAhead(PathBuf);

impl Drop for GoAhead {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"");
    }
}

/// A helper in a mount namespace of its own (`unshare -m --propagation slave`, as a
/// container with a `HostToContainer` volume) holds a file through its copy of the mount,
/// which receives the unmount (its parent is a slave of the target's shared parent); it is
/// killed right after the fixture's unmount fails, and its namespace dies with it, so no scan
/// can see that copy. The watcher, started while the helper held the file, remembers the
/// namespace's table: the helper's exit is matched on the copy, and it is named as the
/// holder of that copy (`mount-copy` via `transient`, seen `traced`) with its exact pid, fd
/// and file. A scan that ran before the kill sees it holding the copy instead: then the
/// trial runs again, at most 5 times.
fn a_holder_gone_with_its_namespaces_copy_is_named() {
    for trial in 1..=5 {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().canonicalize().unwrap();
        let (base, ready) = (tmp.join("base"), tmp.join("ready"));
        let mnt = base.join("mnt");
        let held = mnt.join("held");
        let go = GoAhead(tmp.join("go"));
        let plan = Plan::new()
            .tmpfs(&base)
            .make_shared(&base)
            .tmpfs(&mnt)
            .write(&held, 1)
            .spawn(
                Helper::new()
                    .wrapped(&["unshare", "-m", "--propagation", "slave"])
                    .open(&held),
            )
            .write(&ready, 0)
            .wait_for(&go.0)
            .umount2(&mnt, 0)
            .kill_helpers();
        let fixture = std::thread::spawn(move || Fixture::run(&plan));
        assert!(
            process::poll(FIXTURE_TIMEOUT, || ready.exists().then_some(())).is_some(),
            "the fixture's helper never held its file"
        );
        // Started now, the watcher reads the helper's namespace with every other.
        let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
        drop(go);
        let fixture = fixture.join().expect("the fixture thread");
        let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
        assert_eq!(errnos, [libc::EBUSY], "the helper's copy is busy");
        let helper = &fixture.report.helpers[0];
        assert_eq!(helper.pid, helper.spawned, "unshare -m execs the helper");
        let line = watcher.umount_lines_of(fixture.pid(), 1).remove(0);
        let holders = line["holders"]
            .as_array()
            .unwrap_or_else(|| panic!("no holders: {line}"));
        assert_eq!(holders.len(), 1, "the helper alone: {line}");
        let h = &holders[0];
        assert_eq!(h["kind"], "mount-copy", "{line}");
        assert_eq!(h["pid"], helper.pid, "{line}");
        assert_eq!(h["path"], held.to_str().unwrap(), "{line}");
        assert_eq!(h["fd"], helper.fds[0], "{line}");
        assert_eq!(h["blamed"], true, "{line}");
        assert_ne!(
            h["mount_id"], line["mount"]["id"],
            "held on the copy: {line}"
        );
        if h["seen"] == "kernel-scan" && trial < 5 {
            eprintln!("trial {trial}: the scan saw the helper before it was killed; again");
            continue;
        }
        assert_eq!(h["seen"], "traced", "{line}");
        assert_eq!(h["via"], "transient", "{line}");
        let note = h["note"].as_str().unwrap_or_default();
        assert!(
            note.starts_with("copy (mount ")
                && note.contains("receives the unmount")
                && note.ends_with("; exited after the failing call"),
            "{line}"
        );
        // Its namespace is the copy's (the helper is gone: taken from the copy), and it has no
        // container: that namespace is no container's.
        let in_copys = format!("in mount namespace {} (", h["mntns"]);
        assert!(note.contains(&in_copys), "{line}");
        assert_eq!(h["container"], Value::Null, "{line}");
        eprintln!("trial {trial}: traced");
        return;
    }
}
