//! The agent's live clients (`agent --socket`): a raw reader and `watch --connect --json` get
//! exactly the lines of the agent's recording; a client that never reads delays neither the
//! recording nor the others, and is told how many lines it lost; a client killed midway
//! disturbs nothing; `watch --connect` prints what `watch` prints; and the socket is refused,
//! replaced or opened to a group as its `--help` says.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        net::{UnixListener, UnixStream},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
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
    agent::{agent_fails, free_addr, names_in, scrape, GoAhead},
    support::{
        fixture::Plan,
        incident::Fixture,
        lines::Lines,
        process::{self, Reaped},
        watcher::{start_attached, LINE_TIMEOUT},
    },
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        agent_clients_get_the_recordings_lines_and_a_stalled_one_delays_nobody,
        agent_refuses_a_socket_it_cannot_serve_and_creates_nothing,
        agent_replaces_a_stale_socket_and_opens_it_to_a_group,
        watch_connect_without_an_agent_says_what_to_do,
    ]
}

/// Failing unmounts the stream test makes, in batches (each waited for in the recording):
/// more than a stalled client's queue and socket buffer hold.
const BATCHES: usize = 6;
const BATCH: usize = 500;
/// How long a batch may take to reach the recording and the clients.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The group the socket is opened to (Debian has it; nobody is in it).
const GROUP: &str = "daemon";

fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let path = dir.path().canonicalize().expect("canonicalize temp dir");
    (dir, path)
}

/// A `busyprobe` client command, its stdout and stderr read on threads of their own.
struct Client {
    child: Reaped,
    stdout: (Lines, Arc<Mutex<String>>),
    stderr: (Lines, Arc<Mutex<String>>),
}

impl Client {
    fn start(args: &[&OsStr]) -> Self {
        let mut child = process::spawn(
            Command::new(env!("CARGO_BIN_EXE_busyprobe"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let stdout = Lines::spawn_collected(child.stdout.take().unwrap());
        let stderr = Lines::spawn_collected(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Its next stdout line.
    fn line(&self, what: &str) -> String {
        self.stdout.0.expect_line(LINE_TIMEOUT, what, &self.stderr)
    }

    /// Its stdout lines until one contains `needle`.
    fn until(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self.line(needle);
            let done = line.contains(needle);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    fn stdout_text(&self) -> String {
        self.stdout.1.lock().unwrap().clone()
    }
}

/// A raw reader of the socket: its first line (the header) read, the rest read to the end on
/// a thread once [`RawReader::read_on`] is called.
struct RawReader {
    stream: Option<BufReader<UnixStream>>,
    header: String,
    rest: Option<(Lines, Arc<Mutex<String>>)>,
}

impl RawReader {
    fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).expect("connect to the agent's socket");
        stream.set_read_timeout(Some(LINE_TIMEOUT)).unwrap();
        let mut stream = BufReader::new(stream);
        let mut header = String::new();
        stream.read_line(&mut header).expect("the header line");
        assert!(header.contains(r#""type":"header""#), "{header}");
        Self {
            stream: Some(stream),
            header,
            rest: None,
        }
    }

    /// Reads the rest on a thread from now on.
    fn read_on(&mut self) {
        let stream = self.stream.take().expect("read once");
        stream.get_ref().set_read_timeout(None).unwrap();
        self.rest = Some(Lines::spawn_collected(stream));
    }

    /// Everything read, the header included, once the agent has closed the stream.
    fn everything(&self) -> String {
        let (lines, text) = self.rest.as_ref().expect("reading");
        assert!(
            lines.wait_eof(Instant::now() + LINE_TIMEOUT),
            "the agent never ended the stream"
        );
        format!("{}{}", self.header, text.lock().unwrap())
    }

    /// How many lines so far contain `needle`.
    fn count(&self, needle: &str) -> usize {
        let (_, text) = self.rest.as_ref().expect("reading");
        text.lock().unwrap().matches(needle).count()
    }
}

/// Lines of `text` that contain `needle`.
fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Waits (at most [`BATCH_TIMEOUT`]) until `done`, failing with `what`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = process::poll(BATCH_TIMEOUT, || done().then_some(()));
    assert!(waited.is_some(), "{what} within {BATCH_TIMEOUT:?}");
}

fn agent_clients_get_the_recordings_lines_and_a_stalled_one_delays_nobody() {
    let (_dir, tmp) = temp_dir();
    let recording = tmp.join("rec.jsonl");
    let socket = tmp.join("agent.sock");
    let metrics = free_addr();
    // No stats lines but the last: every line after the header is one the clients are there
    // for, so they must get the recording byte for byte.
    let (mut agent, agent_stderr) = start_attached(&[
        OsStr::new("agent"),
        "-o".as_ref(),
        recording.as_os_str(),
        "--metrics".as_ref(),
        metrics.to_string().as_ref(),
        "--socket".as_ref(),
        socket.as_os_str(),
        "--path".as_ref(),
        tmp.as_os_str(),
        "--stats-interval".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let connect: [&OsStr; 3] = ["watch".as_ref(), "--connect".as_ref(), socket.as_os_str()];
    // Each client is known to be connected once it has the header.
    let mut raw = RawReader::connect(&socket);
    // What a client sends is read, ignored and said once.
    (&mut raw.stream.as_ref().unwrap().get_ref())
        .write_all(b"hello agent\n")
        .unwrap();
    raw.read_on();
    let json = Client::start(&[connect[0], connect[1], connect[2], "--json".as_ref()]);
    assert_eq!(json.line("the header"), raw.header.trim_end());
    let stalled = RawReader::connect(&socket);
    let text = Client::start(&connect);
    // `watch --connect` says the header on stderr: `busyprobe 0.1.0 on HOST (kernel K, M mode)`.
    while !text
        .stderr
        .0
        .expect_line(LINE_TIMEOUT, "the header, said on stderr", &text.stderr)
        .ends_with(" mode)")
    {}

    // An EBUSY with its holder; once it is shown, the unmount that works.
    let mnt = tmp.join("m");
    let held = mnt.join("f");
    let go = GoAhead(tmp.join("go"));
    let plan = Plan::new()
        .tmpfs(&mnt)
        .hold(&held)
        .umount2(&mnt, 0)
        .wait_for(&go.0)
        .release()
        .umount2(&mnt, 0);
    let (fixture, shown) = std::thread::scope(|threads| {
        let fixture = threads.spawn(|| Fixture::run(&plan));
        // `watch --connect` prints what `watch` prints: the attempt, then its holder.
        let shown = text.until(" EBUSY  ");
        let holder = text.line("the holder");
        drop(go);
        (fixture.join().expect("the fixture ran"), (shown, holder))
    });
    let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
    assert_eq!(errnos, [libc::EBUSY, 0]);
    let (comm, pid) = (&fixture.comm, fixture.pid());
    let (shown, holder) = shown;
    let attempt = shown.last().unwrap();
    assert!(
        attempt.contains(&format!(" EBUSY  {comm}[{pid}] uid=0 "))
            // Its duration (µs here, ms under emulation).
            && attempt.ends_with('s')
            && attempt.contains(&format!("  {}  ", mnt.display())),
        "{attempt}"
    );
    assert!(
        holder.starts_with("    fd ")
            // The fixture holds what it unmounts.
            && holder.contains(&format!(" {comm}[{pid}] (the caller) fd "))
            && holder.contains(&format!("  {}", held.display())),
        "{holder}"
    );
    // Killing a client disturbs nothing.
    let mut text = text;
    text.child.0.kill().unwrap();
    text.child.0.wait().unwrap();

    // Thousands of failing unmounts; the recording and the reading clients get every one
    // while the stalled client reads nothing.
    let plain = tmp.join("plain");
    std::fs::create_dir(&plain).unwrap();
    let target = std::ffi::CString::new(plain.to_str().unwrap()).unwrap();
    let me = format!(r#""pid":{},"#, std::process::id());
    let einval = |text: &str| {
        text.lines()
            .filter(|l| l.contains(&me) && l.contains(r#""errno":"EINVAL""#))
            .count()
    };
    for batch in 1..=BATCHES {
        for _ in 0..BATCH {
            // SAFETY: a valid C string; a plain directory is not a mount: EINVAL.
            let ret = unsafe { libc::umount2(target.as_ptr(), 0) };
            assert_eq!(ret, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINVAL)
            );
        }
        let want = batch * BATCH;
        wait_until(&format!("{want} EINVAL lines in the recording"), || {
            einval(&std::fs::read_to_string(&recording).unwrap()) == want
        });
        wait_until(&format!("{want} EINVAL lines at the raw reader"), || {
            raw.count(r#""errno":"EINVAL""#) == want
        });
        wait_until(
            &format!("{want} EINVAL lines from watch --connect --json"),
            || einval(&json.stdout_text()) == want,
        );
    }
    let exposition = scrape(metrics);
    assert!(
        exposition.contains("\nbusyprobe_clients 3\n"),
        "{exposition}"
    );
    let lost: u64 = exposition
        .lines()
        .find_map(|l| l.strip_prefix("busyprobe_client_lines_lost_total "))
        .expect("the lost-lines counter")
        .parse()
        .unwrap();
    assert!(lost > 0, "the stalled client lost lines: {exposition}");

    // The stalled client reads now; the agent stops.
    let mut stalled = stalled;
    stalled.read_on();
    kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM).unwrap();
    let status = process::wait(&mut agent, LINE_TIMEOUT);
    assert!(
        status.success(),
        "{status}: {}",
        agent_stderr.lock().unwrap()
    );
    let recorded = std::fs::read_to_string(&recording).unwrap();
    assert_eq!(einval(&recorded), BATCHES * BATCH);
    assert!(
        recorded.ends_with("\"final\":true}\n"),
        "ends with the last counters"
    );
    assert_eq!(
        raw.everything(),
        recorded,
        "the raw reader got the recording"
    );
    let mut json = json;
    assert!(process::wait(&mut json.child, LINE_TIMEOUT).success());
    assert!(json.stdout.0.wait_eof(Instant::now() + LINE_TIMEOUT));
    assert_eq!(
        json.stdout_text(),
        recorded,
        "watch --connect --json printed the recording"
    );
    assert!(json.stderr.1.lock().unwrap().contains("the agent stopped"));
    stalled_client_was_told(&stalled.everything(), &recorded, lost);
}

/// The stalled client got the recording's lines in order, but for runs of them each replaced
/// by one `lost` line that counts them; at least `lost` in all (the counter, read before the
/// end).
fn stalled_client_was_told(got: &str, recorded: &str, lost: u64) {
    let mut recorded = recorded.lines();
    let mut told = 0;
    for line in got.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["type"] == "lost" {
            assert_eq!(v["cause"], "slow_client", "{v}");
            let n = v["lines"].as_u64().unwrap();
            told += n;
            for _ in 0..n {
                recorded.next().expect("no more lost than recorded");
            }
        } else {
            assert_eq!(Some(line), recorded.next(), "the next recorded line");
        }
    }
    assert_eq!(recorded.next(), None, "every recorded line got or counted");
    assert!(told >= lost, "told {told}, counted {lost}");
    assert!(count(got, r#""type":"lost""#) >= 1);
}

fn agent_refuses_a_socket_it_cannot_serve_and_creates_nothing() {
    let (_dir, tmp) = temp_dir();
    let recording = tmp.join("rec.jsonl");
    let refused = |socket: &Path, why: &str| {
        let stderr = agent_fails(&[
            "-o".as_ref(),
            recording.as_os_str(),
            "--no-metrics".as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
        ]);
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert!(!recording.exists(), "{stderr}");
    };
    refused(
        &tmp.join("missing/agent.sock"),
        &format!(
            "the socket's directory {} does not exist (--socket {})",
            tmp.join("missing").display(),
            tmp.join("missing/agent.sock").display()
        ),
    );
    let file = tmp.join("a-file");
    std::fs::write(&file, "keep me").unwrap();
    refused(
        &file,
        &format!("{} exists and is not a socket", file.display()),
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let served = tmp.join("served.sock");
    let _listener = UnixListener::bind(&served).unwrap();
    refused(
        &served,
        &format!("{} is served by a running agent", served.display()),
    );
    assert!(UnixStream::connect(&served).is_ok(), "still served");
    let stderr = agent_fails(&[
        "--no-metrics".as_ref(),
        "--socket".as_ref(),
        tmp.join("s").as_os_str(),
        "--socket-group".as_ref(),
        "no-such-group-here".as_ref(),
    ]);
    assert!(
        stderr.contains(r#"no group named "no-such-group-here" (--socket-group)"#),
        "{stderr}"
    );
    assert_eq!(names_in(&tmp), ["a-file", "served.sock"]);
}

fn agent_replaces_a_stale_socket_and_opens_it_to_a_group() {
    let (_dir, tmp) = temp_dir();
    // Others may look in (the socket's mode is what keeps them out).
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = tmp.join("agent.sock");
    // A socket nobody accepts on: what an agent killed with SIGKILL leaves.
    drop(UnixListener::bind(&socket).unwrap());
    let gid = nix::unistd::Group::from_name(GROUP)
        .unwrap()
        .expect("Debian's daemon group")
        .gid
        .as_raw();
    let (mut agent, agent_stderr) = start_attached(&[
        OsStr::new("agent"),
        "--no-metrics".as_ref(),
        "--socket".as_ref(),
        socket.as_os_str(),
        "--socket-group".as_ref(),
        GROUP.as_ref(),
        "--path".as_ref(),
        tmp.as_os_str(),
    ]);
    assert!(
        agent_stderr.lock().unwrap().contains(&format!(
            "replacing {}, left by an agent that is gone",
            socket.display()
        )),
        "{}",
        agent_stderr.lock().unwrap()
    );
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (meta.permissions().mode() & 0o777, meta.gid()),
        (0o660, gid)
    );
    // A member of the group reads the stream; somebody else is told why not.
    let as_user = |group: u32| {
        let mut child = process::spawn(
            Command::new(env!("CARGO_BIN_EXE_busyprobe"))
                .args(["watch", "--json", "--connect"])
                .arg(&socket)
                .uid(65534)
                .gid(group)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let mut out = String::new();
        let stdout = child.stdout.take().unwrap();
        let first = BufReader::new(stdout).read_line(&mut out).map(|_| out);
        (child, first)
    };
    let (_member, header) = as_user(gid);
    assert!(header.unwrap().contains(r#""type":"header""#));
    let (mut other, _) = as_user(65534);
    let status = process::wait(&mut other, LINE_TIMEOUT);
    let mut stderr = String::new();
    other
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "connecting to the agent at {}: the socket is root's unless the agent was given --socket-group",
            socket.display()
        )),
        "{stderr}"
    );
    kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM).unwrap();
    assert!(process::wait(&mut agent, LINE_TIMEOUT).success());
    assert!(!socket.exists(), "the agent removes its socket");
}

fn watch_connect_without_an_agent_says_what_to_do() {
    let (_dir, tmp) = temp_dir();
    let socket = tmp.join("none.sock");
    let out = process::output(
        Command::new(env!("CARGO_BIN_EXE_busyprobe"))
            .args(["watch", "--connect"])
            .arg(&socket),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "connecting to the agent at {}: no such socket; is `busyprobe agent` running, and serving this --socket?",
            socket.display()
        )),
        "{stderr}"
    );
    let out = process::output(Command::new(env!("CARGO_BIN_EXE_busyprobe")).args([
        "watch",
        "--connect",
        "/x",
        "--no-holders",
    ]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses probe options with --connect"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
