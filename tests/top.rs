//! `busyprobe top`, driven for real inside tmux: the live screen lists a failed unmount with
//! the caller's pid and opens the holder's pid and path in the detail pane; `q` quits with
//! status 0; `replay` shows a recording and reports its malformed lines once the terminal
//! is back; without a terminal it refuses clearly.

use libtest_mimic::Trial;
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use crate::support::{fixture::Plan, incident::Fixture};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        top_ends_when_its_terminal_hangs_up,
        demo_on_a_terminal_opens_the_top_view,
        replay_of_stdin_shows_a_stream_and_stays_until_quit,
        top_live_names_the_holder_of_a_failed_unmount,
        top_replays_a_recording,
        top_without_a_terminal_says_so,
    ]
}

/// A tmux server of its own (its own socket), running one command in a 120x40 window; the
/// server is killed when dropped, whatever the test did.
struct Screen {
    socket: String,
}

impl Screen {
    fn start(args: &[&str]) -> Self {
        let socket = format!("busyprobe-test-{}-{}", std::process::id(), args.len());
        let screen = Self { socket };
        let command = format!(
            "{} {} 2>&1; echo EXIT=$?; sleep 600",
            env!("CARGO_BIN_EXE_busyprobe"),
            args.join(" ")
        );
        screen.tmux(&["new-session", "-d", "-x", "120", "-y", "40", &command]);
        screen
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn text(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// The screen once it contains `needle`; panics with the screen after 15 s.
    fn wait_for(&self, needle: &str) -> String {
        // Generous: under emulation (cargo xtask vm-test) everything is ten times slower.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {needle:?}:\n{text}"
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let path = dir.path().canonicalize().expect("canonicalize temp dir");
    (dir, path)
}

/// Fails unmounts of a plain directory until the screen shows one: the probes are attached.
fn wait_until_attached(screen: &Screen, tmp: &Path) {
    let plain = tmp.join("plain");
    std::fs::create_dir(&plain).expect("create a plain directory");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fixture = Fixture::run(&Plan::new().umount2(&plain, 0));
        // Any of these attempts on screen will do: the row may lag behind the fixture.
        let row = format!("EINVAL {}[", fixture.comm);
        if screen
            .text()
            .lines()
            .any(|l| l.contains(&row) && l.contains(plain.to_str().unwrap()))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "top never showed an attempt:\n{}",
            screen.text()
        );
        sleep(Duration::from_millis(300));
    }
}

fn top_live_names_the_holder_of_a_failed_unmount() {
    let (_dir, tmp) = temp_dir();
    // Plain `busyprobe` on a terminal is `top`.
    let screen = Screen::start(&[]);
    wait_until_attached(&screen, &tmp);
    let mnt = tmp.join("mnt");
    let held = mnt.join("held");
    let fixture = Fixture::run(&Plan::new().tmpfs(&mnt).hold(&held).umount2(&mnt, 0));
    assert_eq!(
        fixture.report.calls[0].errno,
        libc::EBUSY,
        "the fixture's unmount failed"
    );
    let (comm, pid) = (&fixture.comm, fixture.pid());
    screen.wait_for(&format!(
        "EBUSY  {comm}[{pid}] {}  1 holder(s)",
        mnt.display()
    ));
    // Other tests unmount too: filter down to this mount, then open its details.
    screen.keys(&["/"]);
    screen.keys(&["-l", mnt.to_str().unwrap()]);
    screen.keys(&["Enter", "Enter"]);
    // The pane's title is drawn before its lines: wait for the last line wanted.
    let holder = format!("fd         {comm}[{pid}] {}", held.display());
    let text = screen.wait_for(&holder);
    assert!(
        text.contains(&format!("caller {comm}[{pid}] uid 0")),
        "{text}"
    );
    assert!(
        text.contains(&format!("target {}  result EBUSY (-16)", mnt.display())),
        "{text}"
    );

    // Which mode runs is checked by `auto_mode_runs_what_doctor_predicts_and_says_why`.
    assert!(
        ["tracepoint", "fentry"]
            .iter()
            .any(|mode| text.contains(&format!(" live, {mode} mode, holders on | "))),
        "the status bar: {text}"
    );
    screen.keys(&["q"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=0"), "q ends top with status 0:\n{text}");
    assert!(
        !text.contains(" detail "),
        "the terminal is restored:\n{text}"
    );
}

fn top_replays_a_recording() {
    let recording =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/recording/testdata/incident.jsonl");
    let screen = Screen::start(&["replay", recording.to_str().unwrap()]);
    let text = screen.wait_for(" replay of ");
    assert!(
        text.contains(" replay of incident.jsonl (host node-7, kernel 6.18.44, tracepoint mode) | 5 events, 4 failed | lost 0 |"),
        "the status bar: {text}"
    );
    assert!(text.contains("┌ unmounts (5) "), "{text}");
    assert!(text.contains("10:01:02.200 EBUSY  containerd[1234] /var/lib/containerd/tmpmounts/containerd-mount123  1 holder(s)"), "{text}");
    assert!(
        text.contains("10:01:02.120 EINVAL umount[77] /mnt/not_a_mount"),
        "{text}"
    );
    // Failures only, then the oldest failure's details.
    screen.keys(&["f", "j", "j", "j", "Enter"]);
    let text = screen.wait_for(
        "transient  scanner[999] /var/lib/containerd/tmpmounts/containerd-mount123/etc/passwd",
    );
    assert!(text.contains("failures only"), "{text}");
    screen.keys(&["q"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=0"), "{text}");
    assert!(
        text.contains("incident.jsonl:"),
        "malformed lines are reported after the screen closes:\n{text}"
    );
}

fn replay_of_stdin_shows_a_stream_and_stays_until_quit() {
    let recording =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/recording/testdata/incident.jsonl");
    let redirect = format!("< {}", recording.display());
    let screen = Screen::start(&["replay", "-", &redirect]);
    // The stream has ended (end of file): the screen stays up with every event.
    let text = screen.wait_for(
        " replay of stdin (host node-7, kernel 6.18.44, tracepoint mode) | 5 events, 4 failed |",
    );
    assert!(
        text.contains("10:01:02.120 EINVAL umount[77] /mnt/not_a_mount"),
        "{text}"
    );
    screen.keys(&["q"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=0"), "{text}");
    assert!(
        text.contains("busyprobe: stdin:7: schema version 2"),
        "malformed lines are reported after the screen closes:\n{text}"
    );
}

fn demo_on_a_terminal_opens_the_top_view() {
    let screen = Screen::start(&["demo"]);
    screen.wait_for(" demo (every process is busyprobe) | ");
    // The rows may come after the status bar: wait for the unmount that worked.
    let text = screen.wait_for(" ok     busyprobe[");
    let layer = "/tmpmounts/containerd-mount1";
    // Rows are listed as they arrive: a failure's row comes once its holders are known, which
    // on a slow machine can be after the unmount that worked.
    let rows: Vec<&str> = text.lines().filter(|l| l.contains(layer)).collect();
    let (ok, failed): (Vec<&str>, Vec<&str>) =
        rows.iter().partition(|r| r.contains(" ok     busyprobe["));
    assert_eq!(ok.len(), 1, "the last unmount worked:\n{text}");
    assert!(
        failed.len() >= 2
            && failed
                .iter()
                .all(|r| r.contains(" EBUSY  busyprobe[") && r.contains("1 holder(s)")),
        "the failures, one holder each:\n{text}"
    );
    // Failures only; the two newest are the held file's and the scanner's, in some order.
    screen.keys(&["f", "Enter"]);
    let first = screen.wait_for("  result EBUSY (-16)");
    screen.keys(&["j"]);
    sleep(Duration::from_millis(500));
    let second = screen.wait_for("  result EBUSY (-16)");
    let named = |file: &str| {
        [&first, &second]
            .iter()
            .any(|t| t.contains(&format!("{layer}/etc/{file}")))
    };
    assert!(
        named("hosts") && named("passwd"),
        "the scanner's file and the held one:\n{first}\n{second}"
    );
    assert!(first.contains("result EBUSY (-16)"), "{first}");
    screen.keys(&["q"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=0"), "{text}");
    assert!(text.contains("Every EBUSY names the process"), "{text}");
}

/// A closed terminal (an ssh session gone, a tmux window killed) ends `top`: its probes do not
/// stay attached forever (crossterm's own wait spins on a hung-up terminal).
fn top_ends_when_its_terminal_hangs_up() {
    let socket = format!("busyprobe-test-hup-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("run tmux")
    };
    let command = format!("exec {} top", env!("CARGO_BIN_EXE_busyprobe"));
    assert!(
        tmux(&["new-session", "-d", "-x", "120", "-y", "40", &command])
            .status
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).contains(" live, ") {
        assert!(Instant::now() < deadline, "top did not start");
        sleep(Duration::from_millis(100));
    }
    let pane = tmux(&["list-panes", "-F", "#{pane_pid}"]);
    let pid: i32 = String::from_utf8_lossy(&pane.stdout)
        .trim()
        .parse()
        .unwrap();
    tmux(&["kill-server"]);
    let gone = || !Path::new(&format!("/proc/{pid}")).exists();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gone() && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    if !gone() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("busyprobe top [{pid}] still ran a minute after its terminal hung up");
    }
}

fn top_without_a_terminal_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_busyprobe"))
        .arg("top")
        .output()
        .expect("run busyprobe top");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`busyprobe top` is a full-screen view and needs a terminal"),
        "{stderr}"
    );
    assert!(stderr.contains("busyprobe watch"), "{stderr}");
}
