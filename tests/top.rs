//! `busyprobe top`, driven for real inside tmux: the first screen lists incidents with their
//! main holder (the demo's holder is named without a key pressed); the raw list (`a`) lists a
//! failed unmount with the caller's pid and opens the holder's pid and path in the detail
//! pane; `q` quits with status 0; `replay` shows a recording and reports its malformed lines once the terminal
//! is back; `top --connect` shows a running agent's stream; without a terminal it refuses
//! clearly.

use libtest_mimic::Trial;
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::{
    agent::GoAhead,
    support::{
        fixture::Plan,
        incident::Fixture,
        process::{self, tool, Reaped},
        watcher::{start_attached, ATTACH_TIMEOUT, LINE_TIMEOUT},
    },
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        top_ends_when_its_terminal_hangs_up,
        demo_on_a_terminal_opens_the_top_view,
        replay_of_stdin_shows_a_stream_and_stays_until_quit,
        top_live_names_the_holder_of_a_failed_unmount,
        top_connect_shows_a_running_agents_stream,
        top_replays_a_recording,
        top_without_a_terminal_says_so,
    ]
}

/// A tmux server of its own (its own socket) running one command in a 120x40 window. The
/// server runs in the foreground (`tmux -D`) as a child of the test that dies with it; it is
/// killed when dropped, whatever the test did, and its terminal's hang-up ends the command.
struct Screen {
    socket: String,
    _server: Reaped,
}

impl Screen {
    /// Runs `busyprobe ARGS`, then prints its exit status and stays (to be read).
    fn start(args: &[&str]) -> Self {
        Self::run(&format!(
            "{} {} 2>&1; echo EXIT=$?; sleep 600",
            env!("CARGO_BIN_EXE_busyprobe"),
            args.join(" ")
        ))
    }

    /// Runs the shell command `command` in a new server's only window.
    fn run(command: &str) -> Self {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let socket = format!("busyprobe-test-{}-{n}", std::process::id());
        let server = process::spawn(
            Command::new(tool("tmux"))
                .args(["-L", &socket, "-D"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let screen = Self {
            socket,
            _server: server,
        };
        // The server answers once it listens (with -D it stays without sessions).
        let up = process::poll(Duration::from_secs(60), || {
            screen.try_tmux(&["list-sessions"]).ok()
        });
        assert!(up.is_some(), "the tmux server never answered");
        screen.tmux(&["new-session", "-d", "-x", "120", "-y", "40", command]);
        screen
    }

    fn tmux(&self, args: &[&str]) -> String {
        self.try_tmux(args)
            .unwrap_or_else(|e| panic!("tmux {args:?}: {e}"))
    }

    /// A tmux command's stdout, or its stderr when it fails.
    fn try_tmux(&self, args: &[&str]) -> Result<String, String> {
        let out = process::output(
            Command::new(tool("tmux"))
                .args(["-L", &self.socket])
                .args(args),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn text(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// The screen once it contains `needle`; panics with the screen after 60 s.
    fn wait_for(&self, needle: &str) -> String {
        self.wait_until(&format!("{needle:?}"), |text| text.contains(needle))
    }

    /// The screen once it contains every one of `needles` (a frame can be caught half
    /// written: what is asserted together is waited for together).
    fn wait_for_all(&self, needles: &[&str]) -> String {
        self.wait_until(&format!("{needles:?}"), |text| {
            needles.iter().all(|n| text.contains(n))
        })
    }

    /// The screen once `done` accepts it (polled every 100 ms); panics with the screen after
    /// 60 s, saying it never showed `what`.
    fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        // Generous: under emulation (cargo xtask vm-test) everything is ten times slower.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.text();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{text}"
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // Then the server's guard kills it, should it still run.
        let _ = self.try_tmux(&["kill-server"]);
    }
}

/// Switches `screen` from the incidents (the first screen, once it is up) to the raw list of
/// attempts.
fn show_attempts(screen: &Screen) {
    screen.wait_for("┌ incidents (");
    screen.keys(&["a"]);
    screen.wait_for("┌ unmounts (");
}

/// The detail pane's first line (`attempt N at TIME`): which attempt it shows.
fn detail_attempt(text: &str) -> Option<&str> {
    text.lines()
        .find(|l| l.trim_start_matches('│').starts_with("attempt "))
}

fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let path = dir.path().canonicalize().expect("canonicalize temp dir");
    (dir, path)
}

/// Fails unmounts of a plain directory until the screen shows one: the probes are attached
/// (within a watcher's attach deadline: fentry mode's trampolines took up to 28 s to attach
/// in an emulated guest, and a 30 s deadline failed there once).
fn wait_until_attached(screen: &Screen, tmp: &Path) {
    let plain = tmp.join("plain");
    std::fs::create_dir(&plain).expect("create a plain directory");
    let deadline = Instant::now() + ATTACH_TIMEOUT;
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
    show_attempts(&screen);
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
    let holder = format!("fd         {comm}[{pid}] (the caller) {}", held.display());
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
        ["tracepoint", "enhanced", "fentry"].iter().any(|mode| text
            .lines()
            .any(|l| l == format!(" live, {mode} mode, holders on"))),
        "the header: {text}"
    );
    // Back to the incidents (still filtered to this mount): its row names the holder, and
    // Enter opens it.
    screen.keys(&["a"]);
    let text = screen.wait_for(&format!("held by fd {comm}[{pid}] (the caller) …/held"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("│") && l.contains(&format!(" {} ", mnt.display()))),
        "{text}"
    );
    screen.keys(&["Enter"]);
    let text = screen.wait_for("holders (attempts that named each):");
    assert!(
        text.contains(&format!(
            "    1  fd          {comm}[{pid}] (the caller)  {}",
            held.display()
        )),
        "{text}"
    );
    screen.keys(&["q"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=0"), "q ends top with status 0:\n{text}");
    assert!(
        !text.contains(" detail "),
        "the terminal is restored:\n{text}"
    );
}

fn top_connect_shows_a_running_agents_stream() {
    let (_dir, tmp) = temp_dir();
    let socket = tmp.join("agent.sock");
    let socket_arg = socket.to_str().unwrap();
    let (mut agent, agent_stderr) = start_attached(&[
        "agent",
        "--no-metrics",
        "--socket",
        socket_arg,
        "--path",
        tmp.to_str().unwrap(),
    ]);
    let screen = Screen::start(&["top", "--connect", socket_arg]);
    // The header arrives first: the status bar names the agent's host, kernel and mode.
    let host = nix::unistd::gethostname().unwrap();
    screen.wait_for(&format!(
        " live from the agent at {socket_arg} (host {}, kernel ",
        host.to_string_lossy()
    ));
    show_attempts(&screen);
    let mnt = tmp.join("mnt");
    let go = GoAhead(tmp.join("go"));
    let plan = Plan::new()
        .tmpfs(&mnt)
        .hold(mnt.join("held"))
        .umount2(&mnt, 0)
        .wait_for(&go.0)
        .release()
        .umount2(&mnt, 0);
    std::thread::scope(|threads| {
        let fixture = threads.spawn(|| Fixture::run(&plan));
        let pid = fixture_pid(&screen);
        let text = screen.wait_for(&format!("{pid}] {}  1 holder(s)", mnt.display()));
        assert!(text.contains(" EBUSY  "), "{text}");
        drop(go);
        let fixture = fixture.join().expect("the fixture ran");
        assert_eq!(fixture.pid(), pid);
        screen.wait_for(&format!("ok     {}[{pid}] {}", fixture.comm, mnt.display()));
    });
    screen.keys(&["q"]);
    let text = screen.wait_for("EXIT=");
    assert!(text.contains("EXIT=0"), "{text}");
    // The agent did not notice the client leave.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = process::wait(&mut agent, LINE_TIMEOUT);
    assert!(status.success(), "{}", agent_stderr.lock().unwrap());
}

/// The pid of the first EBUSY row on `screen` (the fixture's: the agent sees only its
/// temporary directory).
fn fixture_pid(screen: &Screen) -> u32 {
    let text = screen.wait_for(" EBUSY  ");
    let row = text.lines().find(|l| l.contains(" EBUSY  ")).unwrap();
    let pid = row.split('[').nth(1).and_then(|r| r.split(']').next());
    pid.and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {row:?}"))
}

fn top_replays_a_recording() {
    let recording =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/recording/testdata/incident.jsonl");
    let screen = Screen::start(&["replay", recording.to_str().unwrap()]);
    // The first screen: the incidents, each with its main holder (waited for whole: tmux may
    // show a frame half written).
    let first = [
            " replay of incident.jsonl (host node-7, kernel 6.18.44, tracepoint mode)",
            " 2 incidents: 1 failing, 0 gave up (still mounted) | lost 0",
            " failures/s    0 (peak 4) █",
            &format!("┌ incidents (2, by last failure) {}┐", "─".repeat(86)),
            &format!("│unmounted     3 10:01:02-10:01:02 /var/lib/containerd/tmpmounts/containerd-mount123{}│", " ".repeat(35)),
            &format!("│  held by transient scanner[999] pod security/scanner-x7 …/etc/passwd +1 more{}│", " ".repeat(41)),
            &format!("│failing       1 10:01:02-10:01:02 /mnt/not_a_mount{}│", " ".repeat(68)),
            &format!("│  EINVAL{}│", " ".repeat(110)),
    ];
    screen.wait_until("the first screen", |text| {
        text.lines().take(8).eq(first.iter().copied())
    });
    // The incident: its holders with how many attempts named each, which attempt worked.
    screen.keys(&["Enter"]);
    screen.wait_for_all(&[
        "attempt 5 worked, 150.0ms after the first failure",
        "│    2  transient   scanner[999]  /var/lib/containerd/tmpmounts/containerd-mount123/etc/passwd",
        "retry timeline: #1 EBUSY +0ns, #3 EBUSY +50.0ms, #4 EBUSY +100.0ms, #5 ok +150.0ms",
    ]);
    // The raw list of attempts.
    screen.keys(&["Escape", "a"]);
    screen.wait_for_all(&[
        "┌ unmounts (5) ",
        " attempts: 5 events, 4 failed | ? help  q quit",
        "10:01:02.200 EBUSY  containerd[1234] /var/lib/containerd/tmpmounts/containerd-mount123  1 holder(s)",
        "10:01:02.120 EINVAL umount[77] /mnt/not_a_mount",
    ]);
    // Failures only, then the oldest failure's details.
    screen.keys(&["f", "j", "j", "j", "Enter"]);
    screen.wait_for_all(&[
        "transient  scanner[999] /var/lib/containerd/tmpmounts/containerd-mount123/etc/passwd",
        "failures only",
    ]);
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
    screen.wait_for_all(&[
        " replay of stdin (host node-7, kernel 6.18.44, tracepoint mode)\n",
        " 2 incidents: 1 failing, 0 gave up (still mounted) | lost 0",
        "  held by transient scanner[999] pod security/scanner-x7 …/etc/passwd +1 more",
    ]);
    show_attempts(&screen);
    let text = screen.wait_for(" attempts: 5 events, 4 failed |");
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
    let layer = "/tmpmounts/containerd-mount1";
    // The first screen, no key pressed: the incident on the layer, and who held it.
    let text = screen.wait_until("the layer's incident and its holder", |text| {
        let lines: Vec<&str> = text.lines().collect();
        lines.windows(2).any(|rows| {
            rows[0].contains("│unmounted     2 ")
                && rows[0].contains(layer)
                && rows[1].contains("  held by ")
                && rows[1].contains(" busyprobe[")
                && ["…/etc/passwd +1 more", "…/etc/hosts +1 more"]
                    .iter()
                    .any(|file| rows[1].contains(file))
        })
    });
    assert!(
        text.lines()
            .any(|l| l.starts_with(" demo (every process is busyprobe)")),
        "{text}"
    );
    show_attempts(&screen);
    // The rows may come after the status bar: wait for the unmount that worked.
    let text = screen.wait_for(" ok     busyprobe[");
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
    let first_attempt = detail_attempt(&first).expect("the detail pane names its attempt");
    screen.keys(&["j"]);
    let second = screen.wait_until("the next failure's detail", |text| {
        text.contains("  result EBUSY (-16)")
            && detail_attempt(text).is_some_and(|a| a != first_attempt)
    });
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
    let screen = Screen::run(&format!("exec {} top", env!("CARGO_BIN_EXE_busyprobe")));
    screen.wait_for(" live, ");
    let pid: i32 = screen
        .tmux(&["list-panes", "-F", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    screen.tmux(&["kill-server"]);
    let gone = || !Path::new(&format!("/proc/{pid}")).exists();
    if process::poll(Duration::from_secs(60), || gone().then_some(())).is_none() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("busyprobe top [{pid}] still ran a minute after its terminal hung up");
    }
}

fn top_without_a_terminal_says_so() {
    let out = process::output(Command::new(env!("CARGO_BIN_EXE_busyprobe")).arg("top"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`busyprobe top` is a full-screen view and needs a terminal"),
        "{stderr}"
    );
    assert!(stderr.contains("busyprobe watch"), "{stderr}");
}
