//! The seed incident, for real: a "scanner" opens files on a freshly mounted tmpfs and holds
//! each for a couple of milliseconds, while an unmounter retries `umount2` (as containerd does,
//! 50 ms apart) until it works. Every EBUSY must name the scanner with the exact file: kind
//! `fd` when the scan still saw it held, `transient` when it had let go already.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libtest_mimic::Trial;
use serde_json::{json, Value};

use crate::support::{
    incident::FIXTURE_TIMEOUT,
    lines::Lines,
    process::{self, DieWithTest},
    watcher::{Watcher, LINE_TIMEOUT},
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        scanner_race_every_ebusy_names_the_scanner => || race_test(Scanner::Open, OpenTimes::All),
        fanotify_scanner_race_every_ebusy_names_the_scanner =>
            || race_test(Scanner::Fanotify, OpenTimes::All),
        scanner_race_with_open_times_on_contended_mounts_times_every_retry =>
            || race_test(Scanner::Open, OpenTimes::Contended),
        fanotify_scanner_race_with_open_times_on_contended_mounts_names_the_scanner =>
            || race_test(Scanner::Fanotify, OpenTimes::Contended),
    ]
}

/// Where busyprobe times opens (`--open-times`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenTimes {
    /// On every tracked mount (`watch`'s default).
    All,
    /// On contended mounts only (the agent's default).
    Contended,
}

impl OpenTimes {
    fn arg(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Contended => "contended",
        }
    }
}

/// Which kind of scanner races the unmounter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scanner {
    /// Opens each file itself and holds it.
    Open,
    /// An on-access scanner: a fanotify listener (`FAN_MARK_MOUNT`, `FAN_OPEN`) holding each
    /// event's fd for a while; another process (the opener) makes the events.
    Fanotify,
}

impl Scanner {
    fn as_str(self) -> &'static str {
        match self {
            Scanner::Open => "open",
            Scanner::Fanotify => "fanotify",
        }
    }
}

/// Environment variable: the scanner mode (`open`, `fanotify`, or `opener` for the process
/// whose opens a fanotify scanner sees).
pub const MODE_ENV: &str = "BUSYPROBE_TEST_SCANNER_MODE";

/// Environment variable: run the race in the directory it names (a child mode of the test
/// binary, so that it can unshare its mount namespace while single-threaded).
pub const RACE_ENV: &str = "BUSYPROBE_TEST_RACE";
/// Environment variable: be the scanner over the files under the directory it names.
pub const SCANNER_ENV: &str = "BUSYPROBE_TEST_SCANNER";

/// The files the scanner opens, relative to the mount.
const FILES: [&str; 3] = ["etc/passwd", "etc/group", "etc/hosts"];
/// How long the scanner holds each file.
const HOLD: Duration = Duration::from_millis(2);

/// Scanner mode (see [`MODE_ENV`]): runs until killed by the race.
pub fn scanner(dir: &OsStr) -> ! {
    let dir = Path::new(dir);
    match std::env::var(MODE_ENV).as_deref() {
        Ok("fanotify") => fanotify_scanner(dir),
        Ok("opener") => opener(dir),
        _ => open_scanner(dir),
    }
}

/// Opens, holds, closes each file in turn; says `ready` once it has opened one.
fn open_scanner(dir: &Path) -> ! {
    let mut ready = Ready::default();
    loop {
        for file in FILES {
            if let Ok(f) = std::fs::File::open(dir.join(file)) {
                ready.say();
                std::thread::sleep(HOLD);
                drop(f);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Opens and closes each file at once, for a fanotify scanner to see; says `ready` once it
/// has opened one.
fn opener(dir: &Path) -> ! {
    let mut ready = Ready::default();
    loop {
        for file in FILES {
            if std::fs::File::open(dir.join(file)).is_ok() {
                ready.say();
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// A helper's one `ready` line on stdout (the race waits for it instead of guessing how long
/// a helper takes to start: under emulation it is far longer than on the host).
#[derive(Default)]
struct Ready(bool);

impl Ready {
    fn say(&mut self) {
        if !self.0 {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ready");
            let _ = out.flush();
            self.0 = true;
        }
    }
}

/// `struct fanotify_event_metadata`.
#[repr(C)]
struct EventMetadata {
    event_len: u32,
    vers: u8,
    reserved: u8,
    metadata_len: u16,
    mask: u64,
    fd: i32,
    pid: i32,
}

/// An on-access scanner: reads fanotify events for the mount and holds each event's fd
/// (which the kernel installed; no `open` call names the file) for a while.
fn fanotify_scanner(dir: &Path) -> ! {
    // SAFETY: plain syscalls with valid arguments; the buffer outlives every read.
    unsafe {
        let group = libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC,
            libc::O_RDONLY as u32,
        );
        assert!(
            group >= 0,
            "fanotify_init: {}",
            std::io::Error::last_os_error()
        );
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let marked = libc::fanotify_mark(
            group,
            libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
            libc::FAN_OPEN,
            libc::AT_FDCWD,
            path.as_ptr(),
        );
        assert_eq!(
            marked,
            0,
            "fanotify_mark: {}",
            std::io::Error::last_os_error()
        );
        println!("marked");
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(group, buf.as_mut_ptr().cast(), buf.len());
            let mut at = 0;
            while n > 0 && at + std::mem::size_of::<EventMetadata>() <= n as usize {
                let ev = std::ptr::read_unaligned(buf.as_ptr().add(at).cast::<EventMetadata>());
                if ev.fd >= 0 {
                    std::thread::sleep(HOLD);
                    libc::close(ev.fd);
                }
                at += ev.event_len.max(1) as usize;
            }
        }
    }
}

/// Race mode: a private mount namespace, a tmpfs with the files, the scanner, then
/// `umount2` every 50 ms until it works. Prints `{"unmounter","scanner","failures"}`.
pub fn race(dir: &OsStr) -> ! {
    let mnt = Path::new(dir);
    crate::support::tmpfs_in_private_namespace(mnt);
    std::fs::create_dir(mnt.join("etc")).unwrap();
    for file in FILES {
        std::fs::write(mnt.join(file), b"x").unwrap();
    }
    let mode = std::env::var(MODE_ENV).unwrap_or_default();
    // The race is single-threaded: its helpers die with it (and it dies with the test).
    let start = |mode: &str| {
        Command::new(std::env::current_exe().unwrap())
            .env(SCANNER_ENV, mnt)
            .env(MODE_ENV, mode)
            .env_remove(RACE_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .die_with_test()
            .spawn()
            .expect("race: start a helper")
    };
    let wait_for = |child: &mut std::process::Child, word: &str| {
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), word, "a race helper did not start");
    };
    let mut scanner = start(&mode);
    let mut opener = None;
    if mode == "fanotify" {
        wait_for(&mut scanner, "marked");
        let mut started = start("opener");
        wait_for(&mut started, "ready");
        opener = Some(started);
    } else {
        wait_for(&mut scanner, "ready");
    }
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match nix::mount::umount2(mnt, nix::mount::MntFlags::empty()) {
            Ok(()) => break,
            Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => failures += 1,
            Err(e) => panic!("race: umount2: {e}"),
        }
        if failures == 8 {
            // Enough failures for one round: let the next attempts work. A fanotify scanner
            // stays, as an antivirus agent does: with no more opens its queue drains and the
            // mount frees. Killed now, it could take queued events that pin the mount at this
            // very failure with it, unseen (they are in no fd table, and nothing traces them).
            let stop = opener.as_mut().unwrap_or(&mut scanner);
            let _ = stop.kill();
            let _ = stop.wait();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for child in std::iter::once(&mut scanner).chain(opener.as_mut()) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let opener = opener.map(|o| o.id());
    println!(
        "{}",
        json!({"unmounter": std::process::id(), "scanner": scanner.id(), "opener": opener, "failures": failures})
    );
    // Like a runtime, the unmounter outlives its unmounts: its namespace (where busyprobe
    // resolves the target) stays until the test has read every failure's line (it closes
    // our stdin then).
    let _ = std::io::stdin().read_line(&mut String::new());
    std::process::exit(0)
}

/// What one round of the race produced.
struct Round {
    scanner: u32,
    opener: Option<u32>,
    mnt: PathBuf,
    ebusy: Vec<Value>,
}

/// One round: the race under a new temporary directory; its EBUSY lines.
fn round(watcher: &Watcher, tmp: &Path, kind: Scanner) -> Round {
    let mnt = tmp.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut child = process::spawn(
        Command::new(std::env::current_exe().unwrap())
            .env(RACE_ENV, &mnt)
            .env(MODE_ENV, kind.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdin = child.stdin.take();
    let stderr = Lines::spawn_collected(child.stderr.take().unwrap());
    let stdout = Lines::spawn(child.stdout.take().unwrap());
    let line = stdout.expect_line(FIXTURE_TIMEOUT, "race report", &stderr);
    let report: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("race report {line:?}: {e}"));
    let pid = |f: &str| report[f].as_u64().map(|p| p as u32);
    let unmounter = pid("unmounter").unwrap();
    let failures = report["failures"].as_u64().unwrap() as usize;
    let mut ebusy = Vec::new();
    if failures > 0 {
        watcher.read_until(&format!("{failures} EBUSY lines of {unmounter}"), |v| {
            if v["type"] == "umount" && v["pid"] == unmounter && v["errno"] == "EBUSY" {
                ebusy.push(v.clone());
            }
            ebusy.len() == failures
        });
    }
    // In the order of the calls.
    ebusy.sort_by_key(|v| v["id"].as_u64());
    drop(stdin);
    let status = process::wait(&mut child, LINE_TIMEOUT);
    assert!(status.success(), "the race failed: {status}");
    Round {
        scanner: pid("scanner").unwrap(),
        opener: pid("opener"),
        mnt,
        ebusy,
    }
}

/// The summary's name for a `transient` holder that closed its file just before the call
/// (its closer had not come back from the close, so the file may still have held the mount).
const CLOSED_JUST_BEFORE: &str = "transient, closed just before the call";

/// The summary's name for an open scanner's `transient` holder whose open raced an unmount
/// attempt (its open time is unknown).
const OPEN_TIME_UNKNOWN: &str = "transient, open raced an unmount (time unknown)";

/// Checks one EBUSY line of a round; returns the kinds of the scanner's holders (a transient
/// holder that closed just before the call as [`CLOSED_JUST_BEFORE`]). `hooks`: the watcher
/// runs the security hooks (enhanced mode).
fn check_line(kind: Scanner, hooks: bool, round: &Round, line: &Value) -> Vec<String> {
    let holders = line["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {line}"));
    let of_scanner: Vec<&Value> = holders
        .iter()
        .filter(|h| h["pid"] == round.scanner)
        .collect();
    assert!(!of_scanner.is_empty(), "the scanner is not named: {line}");
    for h in holders {
        let from_opener = round.opener.is_some_and(|o| h["pid"] == o);
        assert!(
            h["pid"] == round.scanner || from_opener,
            "only the scanner (and its opener) hold: {line}"
        );
    }
    if kind == Scanner::Open {
        // It holds one file at a time: one held when the call began; another may be named
        // too if it opened it during the call (a slow call, as under emulation), since the
        // tracepoints cannot tell on which side of the busy check that open fell.
        let held_at_start = of_scanner
            .iter()
            .filter(|h| h["opened_ns_before"].as_u64().is_some_and(|ns| ns > 0))
            .count();
        assert!(
            held_at_start <= 1,
            "one scanner file held when the call began: {line}"
        );
    }
    let mut kinds = Vec::new();
    for h in &of_scanner {
        let exact_file = || {
            let path = h["path"].as_str().unwrap_or_default();
            assert!(
                FILES.iter().any(|f| Path::new(path) == round.mnt.join(f)),
                "an exact scanner file: {line}"
            );
        };
        match h["kind"].as_str() {
            Some("fd") => {
                exact_file();
                assert!(h["fd"].is_i64(), "{line}");
            }
            Some("transient") => {
                exact_file();
                assert_eq!(h["seen"], "traced", "{line}");
                // A fanotify event's fd is installed by the kernel: no open syscall to time,
                // only the file_open hook sees it (and may time one read after the call,
                // whose event held the mount). An open that an unmount attempt entered
                // during is recorded by the syscall probes with its time unknown (it cannot
                // be placed on either side of the call): counted apart.
                let timed = h["opened_ns_before"].is_u64() || h["opened_ns_after"].is_u64();
                if kind == Scanner::Fanotify && !hooks {
                    assert!(!timed, "{line}");
                }
                if h["closed_ns_after"].is_u64() {
                    kinds.push(if timed || kind == Scanner::Fanotify {
                        "transient".to_owned()
                    } else {
                        OPEN_TIME_UNKNOWN.to_owned()
                    });
                    continue;
                }
                // Closed just before the call, by a scanner preempted on its way back.
                let note = h["note"].as_str().unwrap_or_default();
                assert!(
                    note.starts_with("closed it ") && note.contains(" ms before the failing call"),
                    "a transient holder closed after the call, or just before it: {line}"
                );
                kinds.push(CLOSED_JUST_BEFORE.to_owned());
                continue;
            }
            Some("fanotify") if kind == Scanner::Fanotify => assert!(h["fd"].is_i64(), "{line}"),
            other => panic!("kind {other:?} is not a {kind:?} scanner's: {line}"),
        }
        kinds.push(h["kind"].as_str().unwrap_or_default().to_owned());
    }
    kinds
}

/// Whether `line` says its mount was unmounted before busyprobe could resolve it.
fn mount_was_gone(line: &Value) -> bool {
    line["attribution_error"]
        .as_str()
        .is_some_and(|e| e.starts_with("the mount was gone before busyprobe could read"))
}

/// Checks the open times of the `fd` and `transient` holders of one failure. An open scanner
/// opens each file itself: with every tracked mount timed its fds are timed on every failure;
/// with contended mounts timed, from the failure on which the open probes were on (the first
/// made the mount contended, and they are attached within milliseconds on the host — under
/// emulation, attaching fentry mode's trampolines, several retries later), so `not_timed` is
/// accepted only while `untimed_ok`; an open that overlapped an unmount's entry is said to have
/// (`raced_an_unmount`: the open scanner's, or the fanotify opener's own). A fanotify scanner's
/// event fds are installed by the kernel: no open syscall to time, unless the file_open hook
/// runs (`hooks`, enhanced mode), which times every open exactly (never `raced_an_unmount`)
/// and marks the scanner's event fds (`event_fd`, and no other fd): one opened after the call
/// says how long after (`opened_ns_after`: its event, queued before, held the mount). Returns
/// how many of the scanner's (`scanner`) holders and of the others were timed.
fn check_open_times(
    kind: Scanner,
    hooks: bool,
    untimed_ok: bool,
    scanner: u32,
    what: &str,
    line: &Value,
) -> (usize, usize) {
    let fds = line["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["kind"] == "fd" || h["kind"] == "transient");
    let (mut scanners, mut others) = (0, 0);
    for h in fds {
        let event_fd = h["event_fd"] == true;
        let an_event_fd = kind == Scanner::Fanotify && h["pid"] == scanner;
        let unknown = h["open_time_unknown"].as_str();
        let times = (
            h["opened_ns_before"].as_u64(),
            h["opened_ns_after"].as_u64(),
        );
        let timed = match (times, unknown) {
            ((Some(_), None), None) => true,
            ((None, Some(_)), None) if event_fd => true,
            // The open scanner's opens, or the fanotify opener's own.
            ((None, None), Some("raced_an_unmount")) if !hooks => false,
            ((None, None), Some("not_timed")) if (an_event_fd && !hooks) || untimed_ok => false,
            other => panic!("{what}: a holder's open time is {other:?}: {line}"),
        };
        if timed {
            assert_eq!(
                event_fd,
                hooks && an_event_fd,
                "{what}: marked as an event fd only in enhanced mode, only the scanner's: {line}"
            );
        }
        match h["pid"] == scanner {
            true => scanners += usize::from(timed),
            false => others += usize::from(timed),
        }
    }
    (scanners, others)
}

/// Rounds of the race until both `fd` and `transient` were seen (at most 12): every EBUSY
/// must name the scanner with the exact file.
fn race_test(kind: Scanner, open_times: OpenTimes) {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    // No --path: by default every new mount is tracked the moment it appears (a deny list);
    // with --path the allow list learns of a new mount only when the mount tables show it.
    let watcher = Watcher::start(&["--only-failed", "--open-times", open_times.arg()]);
    let mut timed = 0;
    // The scanner's holders with an open time (a fanotify scanner's: its event fds).
    let mut scanner_timed = 0;
    // Of those, event fds the scanner read after the call (whose queued event held the mount).
    let mut read_after_call = 0;
    // Failures, after a round's first, whose holders were timed.
    let mut retries_timed = 0;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for n in 0..12 {
        let round_dir = tmp.join(format!("round{n}"));
        std::fs::create_dir(&round_dir).unwrap();
        let round = round(&watcher, &round_dir, kind);
        let last_id = round.ebusy.iter().filter_map(|l| l["id"].as_u64()).max();
        // With contended mounts timed: not yet on this round's mount.
        let mut probes_on = open_times == OpenTimes::All;
        for (nth, line) in round.ebusy.iter().enumerate() {
            if line["id"].as_u64() == last_id && mount_was_gone(line) {
                // The unmount worked 50 ms after this failure; a slow machine may not have
                // read the namespace's table by then (tracepoint mode knows the call's path,
                // not its mount). Said, not counted.
                eprintln!(
                    "round {n}: the last failure's mount was gone before it was attributed: {line}"
                );
                continue;
            }
            total += 1;
            let what = format!(
                "{kind:?} scanner, open times {open_times:?}, failure {}",
                nth + 1
            );
            let (scanners, others) = check_open_times(
                kind,
                watcher.hooks(),
                !probes_on,
                round.scanner,
                &what,
                line,
            );
            let timed_here = scanners + others;
            scanner_timed += scanners;
            read_after_call += line["holders"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| h["opened_ns_after"].is_u64())
                .count();
            probes_on |= timed_here > 0;
            timed += timed_here;
            retries_timed += usize::from(nth > 0 && timed_here > 0);
            for k in check_line(kind, watcher.hooks(), &round, line) {
                *kinds.entry(k).or_default() += 1;
            }
        }
        if kinds.contains_key("transient") && total >= 10 {
            break;
        }
    }
    eprintln!(
        "{kind:?} scanner race, {} mode, open times {open_times:?}: {total} EBUSY, every one \
         names the scanner: {kinds:?}; {timed} fd and transient holders timed ({scanner_timed} of \
         the scanner's, {read_after_call} event fds read after the call), on {retries_timed} \
         retries",
        watcher.mode()
    );
    if kind == Scanner::Fanotify && watcher.hooks() {
        assert!(
            scanner_timed > 0,
            "enhanced mode: the file_open hook timed none of the scanner's event fds"
        );
    }
    if kind == Scanner::Open && open_times == OpenTimes::Contended {
        assert!(
            retries_timed > 0,
            "no retry got open times: the contended mount's open probes never came on"
        );
    }
    assert!(total >= 10, "too few failures to mean anything: {total}");
    assert!(
        kinds.contains_key("transient"),
        "no transient holder in {total} failures: {kinds:?}"
    );
}
