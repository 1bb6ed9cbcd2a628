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

use serde_json::{json, Value};

use crate::support::watcher::Watcher;

/// Every trial, by name.
pub const TESTS: [(&str, fn()); 1] = [(
    "scanner_race_every_ebusy_names_the_scanner",
    scanner_race_every_ebusy_names_the_scanner,
)];

/// Environment variable: run the race in the directory it names (a child mode of the test
/// binary, so that it can unshare its mount namespace while single-threaded).
pub const RACE_ENV: &str = "BUSYPROBE_TEST_RACE";
/// Environment variable: be the scanner over the files under the directory it names.
pub const SCANNER_ENV: &str = "BUSYPROBE_TEST_SCANNER";

/// The files the scanner opens, relative to the mount.
const FILES: [&str; 3] = ["etc/passwd", "etc/group", "etc/hosts"];
/// How long the scanner holds each file.
const HOLD: Duration = Duration::from_millis(2);

/// Scanner mode: open, hold, close each file in turn, forever (killed by the race).
pub fn scanner(dir: &OsStr) -> ! {
    let dir = Path::new(dir);
    loop {
        for file in FILES {
            if let Ok(f) = std::fs::File::open(dir.join(file)) {
                std::thread::sleep(HOLD);
                drop(f);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Race mode: a private mount namespace, a tmpfs with the files, the scanner, then
/// `umount2` every 50 ms until it works. Prints `{"unmounter","scanner","failures"}`.
pub fn race(dir: &OsStr) -> ! {
    use nix::{
        mount::{mount, MsFlags},
        sched::{unshare, CloneFlags},
    };
    unshare(CloneFlags::CLONE_NEWNS).expect("race: unshare");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("race: private /");
    let mnt = Path::new(dir);
    mount(
        Some("tmpfs"),
        mnt,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("race: mount tmpfs");
    std::fs::create_dir(mnt.join("etc")).unwrap();
    for file in FILES {
        std::fs::write(mnt.join(file), b"x").unwrap();
    }
    let mut scanner = Command::new(std::env::current_exe().unwrap())
        .env(SCANNER_ENV, mnt)
        .env_remove(RACE_ENV)
        .spawn()
        .expect("race: start the scanner");
    std::thread::sleep(Duration::from_millis(20));
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match nix::mount::umount2(mnt, nix::mount::MntFlags::empty()) {
            Ok(()) => break,
            Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => failures += 1,
            Err(e) => panic!("race: umount2: {e}"),
        }
        if failures == 8 {
            // Enough failures for one round: let the next attempt work.
            let _ = scanner.kill();
            let _ = scanner.wait();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = scanner.kill();
    let _ = scanner.wait();
    println!(
        "{}",
        json!({"unmounter": std::process::id(), "scanner": scanner.id(), "failures": failures})
    );
    std::process::exit(0)
}

/// One round: the race under a new temporary directory; its EBUSY lines.
fn round(watcher: &Watcher, tmp: &Path) -> (u32, u32, Vec<Value>, PathBuf) {
    let mnt = tmp.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(RACE_ENV, &mnt)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the race");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("race report");
    let status = child.wait().expect("wait for the race");
    assert!(status.success(), "the race failed: {status}");
    let report: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("race report {line:?}: {e}"));
    let unmounter = report["unmounter"].as_u64().unwrap() as u32;
    let scanner = report["scanner"].as_u64().unwrap() as u32;
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
    (unmounter, scanner, ebusy, mnt)
}

fn scanner_race_every_ebusy_names_the_scanner() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    // No --path: by default every new mount is tracked the moment it appears (a deny list);
    // with --path the allow list learns of a new mount only when the mount tables show it.
    let watcher = Watcher::start(&[OsStr::new("--only-failed")]);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for n in 0..12 {
        let round_dir = tmp.join(format!("round{n}"));
        std::fs::create_dir(&round_dir).unwrap();
        let (_, scanner, ebusy, mnt) = round(&watcher, &round_dir);
        for line in &ebusy {
            total += 1;
            let holders = line["holders"]
                .as_array()
                .unwrap_or_else(|| panic!("no holders: {line}"));
            assert_eq!(
                holders.len(),
                1,
                "exactly the scanner, nothing else: {line}"
            );
            let h = &holders[0];
            assert_eq!(h["pid"], scanner, "{line}");
            let path = h["path"].as_str().unwrap_or_default();
            assert!(
                FILES.iter().any(|f| Path::new(path) == mnt.join(f)),
                "an exact scanner file: {line}"
            );
            match h["kind"].as_str() {
                Some("fd") => assert!(h["fd"].is_i64(), "{line}"),
                Some("transient") => {
                    assert_eq!(h["seen"], "traced", "{line}");
                    assert!(h["closed_ns_after"].is_u64(), "{line}");
                    assert!(
                        h["opened_ns_before"].is_u64(),
                        "the open was traced: {line}"
                    );
                }
                other => panic!("kind {other:?} is neither fd nor transient: {line}"),
            }
            *kinds
                .entry(h["kind"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        if kinds.contains_key("fd") && kinds.contains_key("transient") && total >= 10 {
            break;
        }
    }
    eprintln!("scanner race: {total} EBUSY, all attributed to the scanner: {kinds:?}");
    assert!(total >= 10, "too few failures to mean anything: {total}");
    assert!(
        kinds.contains_key("transient"),
        "no transient holder in {total} failures: {kinds:?}"
    );
}
