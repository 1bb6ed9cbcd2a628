//! A recording on a disk that fills: `busyprobe agent -o` records onto a 64 KiB tmpfs mounted
//! in a mount namespace of the agent's own (only it sees the tmpfs; the test reaches it
//! through `/proc/PID/root`), while a fixture makes real unmounts fail with EBUSY. The disk
//! fills; the agent keeps running and serving its metrics, counts the lost lines, says so
//! once, and leaves only whole lines; once space is freed, the next lines follow a
//! `recording-lines-lost` warning with the count the metrics showed. `busyprobe record` does
//! the same.

use std::{
    ffi::CString,
    io::Write as _,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use libtest_mimic::Trial;
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::{
    agent::{free_addr, scrape, GoAhead},
    support::{
        fixture::Plan,
        incident::Fixture,
        process::{self, Reaped},
        watcher::{spawn_attached, wait_for_stderr, LINE_TIMEOUT},
    },
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        agent_outlives_a_full_disk_and_marks_the_gap_in_its_recording,
        record_outlives_a_full_disk_too,
    ]
}

/// EBUSY failures made while the disk is full, and after space is freed.
const WHILE_FULL: usize = 10;
const AFTER: usize = 3;
/// How long the agent may take to hand an EBUSY to its outputs (the holder scan included;
/// under emulation, seconds).
const METRICS_TIMEOUT: Duration = Duration::from_secs(60);
/// What the agent says on stderr when the recording starts losing lines.
const SAID_FAILING: &str = "cannot write to the recording";
/// ... and when it writes again.
const SAID_AGAIN: &str = "is written again";

/// `busyprobe ARGS` (`agent`, `record`) with its recording on a `size` tmpfs at `disk`,
/// mounted in a private mount namespace it enters before it starts (set up between fork and
/// exec); returned once its probes are attached, with its stderr (read to its end on a
/// thread).
fn on_tiny_disk(disk: &Path, size: &str, args: &[String]) -> (Reaped, Arc<Mutex<String>>) {
    let target = CString::new(disk.as_os_str().as_encoded_bytes()).unwrap();
    let options = CString::new(format!("size={size}")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_busyprobe"));
    command.args(args);
    // SAFETY: only system calls (unshare, mount) on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            if libc::mount(
                c"tiny".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            ) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
    spawn_attached(&mut command)
}

/// The value of the sample `name` (with its labels) in an exposition; 0 when absent.
fn sample(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

const EBUSY: &str = r#"busyprobe_unmount_attempts_total{result="EBUSY"}"#;
const LOST: &str = r#"busyprobe_recording_lines_lost_total{cause="ENOSPC"}"#;

/// Waits (at most [`METRICS_TIMEOUT`], asking every 100 ms) until the agent has counted
/// `count` EBUSYs and its recording holds each of them or has counted it lost (the recording
/// writes a turn's lines at the end of the turn, just after the metrics counted them).
/// Returns that exposition and the recording's lines.
fn wait_for_ebusys(
    agent: SocketAddr,
    count: u64,
    recording: &Path,
    stderr: &Mutex<String>,
) -> (String, Vec<Value>) {
    let deadline = Instant::now() + METRICS_TIMEOUT;
    loop {
        let exposition = scrape(agent);
        // A read during the agent's write may end mid-line: read again then.
        let lines = lines_between_writes(recording);
        if let Some(lines) = lines
            .as_ref()
            .filter(|_| sample(&exposition, EBUSY) == count)
        {
            if (ebusy_lines(lines) as u64) + sample(&exposition, LOST) == count {
                return (exposition, lines.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never counted {count} EBUSYs, each written or counted lost, in \
             {METRICS_TIMEOUT:?}:\n{exposition}\n{lines:#?}\n{}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The recording's lines, each parsed: the file ends with a newline and every line is a
/// whole JSON object (a torn line would fail here).
fn whole_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read the recording");
    assert!(
        text.ends_with('\n'),
        "the recording ends with a whole line:\n{text}"
    );
    parse_lines(&text)
}

/// [`whole_lines`] while the recorder may be writing: `None` when the read ended mid-write.
fn lines_between_writes(path: &Path) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path).expect("read the recording");
    text.ends_with('\n').then(|| parse_lines(&text))
}

/// Every line of `text` parsed (a torn line fails).
fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn line ({e}): {l}\n{text}"))
        })
        .collect()
}

fn ebusy_lines(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter(|l| l["type"] == "umount" && l["errno"] == "EBUSY")
        .count()
}

/// Fills the filesystem of `dir` with `dir/filler` until it is full (ENOSPC).
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("create the filler");
    let block = [b'x'; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    filler
}

fn agent_outlives_a_full_disk_and_marks_the_gap_in_its_recording() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let disk = tmp.join("disk");
    std::fs::create_dir(&disk).unwrap();
    let metrics = free_addr();
    let args: Vec<String> = [
        "agent",
        "-o",
        &disk.join("rec.jsonl").to_string_lossy(),
        "--metrics",
        &metrics.to_string(),
        "--path",
        &tmp.join("m").to_string_lossy(),
        // No stats lines: every line after the header is one of the fixture's EBUSYs.
        "--stats-interval",
        "0",
    ]
    .map(String::from)
    .into();
    let (mut agent, stderr) = on_tiny_disk(&disk, "64k", &args);
    // The agent's view of its tmpfs (the test's own namespace has none).
    let seen =
        PathBuf::from(format!("/proc/{}/root", agent.id())).join(disk.strip_prefix("/").unwrap());
    let recording = seen.join("rec.jsonl");
    let filler = fill(&seen);
    assert_eq!(whole_lines(&recording).len(), 1, "the header only");

    let mnt = tmp.join("m");
    let freed = GoAhead(tmp.join("freed"));
    let done = GoAhead(tmp.join("done"));
    let plan = Plan::new().tmpfs(&mnt).hold(mnt.join("f"));
    let plan = (0..WHILE_FULL).fold(plan, |p, _| p.umount2(&mnt, 0));
    let plan = (0..AFTER).fold(plan.wait_for(&freed.0), |p, _| p.umount2(&mnt, 0));
    let plan = plan.wait_for(&done.0).release().umount2(&mnt, 0);
    std::thread::scope(|threads| {
        let fixture = threads.spawn(|| Fixture::run(&plan));

        // The disk fills while the fixture fails: lines are lost, the agent lives on.
        let (exposition, lines) = wait_for_ebusys(metrics, WHILE_FULL as u64, &recording, &stderr);
        let lost = sample(&exposition, LOST);
        assert!(lost > 0, "no line lost on a full disk:\n{exposition}");
        eprintln!("{WHILE_FULL} EBUSYs on a full disk: {lost} lines lost");
        assert!(matches!(agent.try_wait(), Ok(None)), "the agent still runs");
        assert_eq!(lines.len(), 1 + WHILE_FULL - lost as usize, "{lines:#?}");
        let said = stderr.lock().unwrap().clone();
        assert_eq!(said.matches(SAID_FAILING).count(), 1, "said once:\n{said}");
        assert!(!said.contains(SAID_AGAIN), "{said}");

        // Space again: the next line is the gap's warning, then the new failures.
        std::fs::remove_file(&filler).unwrap();
        drop(freed);
        let (exposition, lines) =
            wait_for_ebusys(metrics, (WHILE_FULL + AFTER) as u64, &recording, &stderr);
        assert_eq!(sample(&exposition, LOST), lost, "no line lost since");
        let gap = lines
            .iter()
            .position(|l| l["type"] == "warning")
            .unwrap_or_else(|| panic!("no warning line:\n{lines:#?}"));
        assert_eq!(
            gap,
            1 + WHILE_FULL - lost as usize,
            "right after the last line written"
        );
        let warning = &lines[gap];
        assert_eq!(warning["warning"], "recording-lines-lost", "{warning}");
        assert_eq!(
            warning["lines"], lost,
            "the count the metrics showed: {warning}"
        );
        assert_eq!(warning["cause"], "ENOSPC", "{warning}");
        assert_eq!(ebusy_lines(&lines[gap + 1..]), AFTER, "{lines:#?}");
        assert_eq!(lines.len(), gap + 1 + AFTER, "{lines:#?}");
        // Said on stderr as the line is written: its reader may lag the file.
        wait_for_stderr(&stderr, METRICS_TIMEOUT, "that it writes again", |said| {
            said.contains(SAID_AGAIN)
        });
        let said = stderr.lock().unwrap().clone();
        assert_eq!(said.matches(SAID_FAILING).count(), 1, "{said}");
        assert_eq!(said.matches(SAID_AGAIN).count(), 1, "{said}");

        drop(done);
        let fixture = fixture.join().expect("the fixture ran");
        let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
        let mut expected = vec![libc::EBUSY; WHILE_FULL + AFTER];
        expected.push(0);
        assert_eq!(errnos, expected);
    });

    kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM).unwrap();
    let status = process::wait(&mut agent, LINE_TIMEOUT);
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}\n{}",
        stderr.lock().unwrap()
    );
}

/// `busyprobe record` on the same full disk: it has no metrics to wait on, so the test waits
/// for it to say it loses lines, frees space, and waits until every EBUSY is either in the
/// file or counted in its one `recording-lines-lost` warning.
fn record_outlives_a_full_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let disk = tmp.join("disk");
    std::fs::create_dir(&disk).unwrap();
    let args: Vec<String> = [
        "record",
        "-o",
        &disk.join("rec.jsonl").to_string_lossy(),
        "--path",
        &tmp.join("m").to_string_lossy(),
        "--stats-interval",
        "0",
    ]
    .map(String::from)
    .into();
    let (mut record, stderr) = on_tiny_disk(&disk, "64k", &args);
    let seen =
        PathBuf::from(format!("/proc/{}/root", record.id())).join(disk.strip_prefix("/").unwrap());
    let recording = seen.join("rec.jsonl");
    let filler = fill(&seen);

    let mnt = tmp.join("m");
    let freed = GoAhead(tmp.join("freed"));
    let done = GoAhead(tmp.join("done"));
    let plan = Plan::new().tmpfs(&mnt).hold(mnt.join("f"));
    let plan = (0..WHILE_FULL).fold(plan, |p, _| p.umount2(&mnt, 0));
    let plan = (0..AFTER).fold(plan.wait_for(&freed.0), |p, _| p.umount2(&mnt, 0));
    let plan = plan.wait_for(&done.0).release().umount2(&mnt, 0);
    std::thread::scope(|threads| {
        let fixture = threads.spawn(|| Fixture::run(&plan));
        wait_for_stderr(&stderr, METRICS_TIMEOUT, "that it loses lines", |said| {
            said.contains(SAID_FAILING)
        });
        assert!(
            matches!(record.try_wait(), Ok(None)),
            "the recorder still runs"
        );
        whole_lines(&recording);

        std::fs::remove_file(&filler).unwrap();
        drop(freed);
        let deadline = Instant::now() + METRICS_TIMEOUT;
        let (lines, gap) = loop {
            let lines = lines_between_writes(&recording).unwrap_or_default();
            let gaps: Vec<usize> = (0..lines.len())
                .filter(|i| lines[*i]["type"] == "warning")
                .collect();
            let lost = gaps
                .iter()
                .map(|i| lines[*i]["lines"].as_u64().unwrap())
                .sum::<u64>();
            if !gaps.is_empty() && ebusy_lines(&lines) + lost as usize == WHILE_FULL + AFTER {
                assert_eq!(gaps.len(), 1, "one gap: {lines:#?}");
                break (lines, gaps[0]);
            }
            assert!(
                Instant::now() < deadline,
                "the EBUSYs never all came: {lines:#?}\n{}",
                stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let warning = &lines[gap];
        assert_eq!(warning["warning"], "recording-lines-lost", "{warning}");
        assert_eq!(warning["cause"], "ENOSPC", "{warning}");
        assert!(warning["lines"].as_u64().unwrap() > 0, "{warning}");
        assert_eq!(
            lines[gap + 1]["errno"],
            "EBUSY",
            "the event written with it"
        );
        // Said on stderr as the line is written: its reader may lag the file.
        wait_for_stderr(&stderr, METRICS_TIMEOUT, "that it writes again", |said| {
            said.contains(SAID_AGAIN)
        });
        let said = stderr.lock().unwrap().clone();
        assert_eq!(said.matches(SAID_FAILING).count(), 1, "{said}");
        assert_eq!(said.matches(SAID_AGAIN).count(), 1, "{said}");

        drop(done);
        let fixture = fixture.join().expect("the fixture ran");
        assert_eq!(fixture.report.calls.len(), WHILE_FULL + AFTER + 1);
    });

    kill(Pid::from_raw(record.id() as i32), Signal::SIGTERM).unwrap();
    let status = process::wait(&mut record, LINE_TIMEOUT);
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}\n{}",
        stderr.lock().unwrap()
    );
}
