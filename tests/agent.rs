//! `busyprobe agent`: a real Prometheus (Debian's `prometheus`) scrapes its metrics while a
//! fixture makes exactly N unmounts fail with EBUSY; `promtool check metrics` passes on its
//! exposition; its recording is what `record` writes; it tells systemd when it is ready
//! (`sd_notify`, as `Type=notify` wants) and when it stops; and what it refuses at start-up
//! (a metrics port in use, a recording it cannot create) leaves nothing behind.

use std::{
    ffi::OsStr,
    net::{SocketAddr, TcpListener},
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libtest_mimic::Trial;
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::support::{
    fixture::Plan,
    incident::Fixture,
    process::{self, Reaped},
    watcher::{start_attached, wait_for_stderr, ATTACH_TIMEOUT, LINE_TIMEOUT},
};

/// Every trial. `cargo xtask vm-test` leaves the first out of its guests (they have no
/// Prometheus): keep its name in step with `xtask/src/vm/mod.rs`.
pub fn trials() -> Vec<Trial> {
    trials![
        agent_metrics_reach_a_real_prometheus,
        agent_tells_systemd_when_it_is_ready_and_stopping,
        agent_refuses_a_metrics_port_in_use_and_creates_nothing,
        agent_refuses_a_recording_it_cannot_create_and_creates_nothing,
    ]
}

/// EBUSY failures the Prometheus trial makes.
const FAILURES: usize = 5;
/// How long Prometheus may take to start, scrape and answer a query with the new value
/// (it scrapes every second; under load its start-up takes a few seconds).
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(90);

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
}

/// An HTTP client with deadlines, that hands back 4xx/5xx answers rather than failing.
fn http() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
}

/// The agent's exposition (`GET /metrics`).
pub fn scrape(agent: SocketAddr) -> String {
    let mut answer = http()
        .get(format!("http://{agent}/metrics"))
        .call()
        .expect("scrape the agent");
    assert_eq!(answer.status(), 200);
    answer.body_mut().read_to_string().expect("read metrics")
}

/// A Prometheus server of this test's own: its storage and config in `dir`, listening on a
/// free loopback port, scraping `agent` every second; killed with the test.
struct Prometheus {
    _server: Reaped,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, agent: SocketAddr) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: busyprobe\n    static_configs:\n      - targets: ['{agent}']\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let log = dir.join("prometheus.log");
        let server = process::spawn(
            Command::new(process::tool("prometheus"))
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        );
        Self {
            _server: server,
            addr,
            log,
        }
    }

    /// The value of the instant query `query` when it has exactly one series, read from the
    /// HTTP API (`/api/v1/query`); `None` before that (not up yet, not scraped yet).
    fn value(&self, query: &str) -> Option<f64> {
        let mut answer = http()
            .get(format!("http://{}/api/v1/query", self.addr))
            .query("query", query)
            .call()
            .ok()?;
        let body: Value = serde_json::from_str(&answer.body_mut().read_to_string().ok()?).ok()?;
        assert_eq!(body["status"], "success", "{query}: {body}");
        match body["data"]["result"].as_array()?.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits until `query` gives `want` (at most [`PROMETHEUS_TIMEOUT`], asking every 200
    /// ms); fails with the last value and Prometheus' log.
    fn wait_for(&self, query: &str, want: f64) {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.value(query);
            if last == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "Prometheus never gave {want} for {query} in {PROMETHEUS_TIMEOUT:?} (last: {last:?}); its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// Creates the go-ahead file when dropped, so that a fixture waiting for it never outlives a
/// failed check by its whole wait.
pub struct GoAhead(pub PathBuf);

impl Drop for GoAhead {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

fn agent_metrics_reach_a_real_prometheus() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().canonicalize().unwrap();
    let recording = tmp.join("rec.jsonl");
    let metrics = free_addr();
    let (mut agent, agent_stderr) = start_attached(&[
        OsStr::new("agent"),
        "-o".as_ref(),
        recording.as_os_str(),
        "--metrics".as_ref(),
        metrics.to_string().as_ref(),
        "--path".as_ref(),
        tmp.as_os_str(),
        "--stats-interval".as_ref(),
        "1".as_ref(),
        "--no-socket".as_ref(),
    ]);
    let prometheus = Prometheus::start(&tmp, metrics);
    let failures = r#"busyprobe_unmount_attempts_total{result="EBUSY"}"#;
    let leaked = "busyprobe_leaked_mounts";
    // Scraped, and nothing leaked yet.
    prometheus.wait_for(leaked, 0.0);

    // FAILURES EBUSYs on a held tmpfs, then (on the go-ahead) let go and unmount it.
    let mnt = tmp.join("m");
    let go = GoAhead(tmp.join("go"));
    let plan = (0..FAILURES)
        .fold(Plan::new().tmpfs(&mnt).hold(mnt.join("f")), |p, _| {
            p.umount2(&mnt, 0)
        })
        .wait_for(&go.0)
        .release()
        .umount2(&mnt, 0);
    std::thread::scope(|threads| {
        let fixture = threads.spawn(|| Fixture::run(&plan));
        prometheus.wait_for(failures, FAILURES as f64);
        prometheus.wait_for(leaked, 1.0);
        let exposition = scrape(metrics);
        promtool_accepts(&tmp, &exposition);
        assert!(
            exposition.contains(r#"busyprobe_busy_unmounts_by_holder_kind_total{kind="fd"} 5"#),
            "{exposition}"
        );
        drop(go);
        let fixture = fixture.join().expect("the fixture ran");
        let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
        let mut expected = vec![libc::EBUSY; FAILURES];
        expected.push(0);
        assert_eq!(
            errnos, expected,
            "{FAILURES} EBUSY, then the unmount that works"
        );
        // The holder's name has a series of its own (the first names seen do).
        let named = format!(
            r#"busyprobe_busy_unmounts_by_holder_name_total{{comm="{}"}} {FAILURES}"#,
            fixture.comm
        );
        assert!(scrape(metrics).lines().any(|l| l == named), "{named}");
        // The agent's default: open times on contended mounts, from the first failure until
        // the mount is gone.
        let said = agent_stderr.lock().unwrap().clone();
        assert!(said.contains("open times on contended mounts"), "{said}");
        assert!(said.contains("open times on: mount "), "{said}");
        // The fixture (and its namespace) still lives: the unmount is what clears it.
        prometheus.wait_for(leaked, 0.0);
        wait_for_stderr(
            &agent_stderr,
            ATTACH_TIMEOUT,
            "that its open probes are off once the contended mount is gone",
            |said| said.contains("open times off: no mount is contended any more"),
        );
        prometheus.wait_for(r#"busyprobe_unmount_attempts_total{result="ok"}"#, 1.0);
        prometheus.wait_for(failures, FAILURES as f64);
        drop(fixture);
    });

    kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM).unwrap();
    let status = process::wait(&mut agent, LINE_TIMEOUT);
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}\n{}",
        agent_stderr.lock().unwrap()
    );
    // The recording is what `record` writes.
    assert_eq!(
        std::fs::metadata(&recording).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let lines: Vec<Value> = std::fs::read_to_string(&recording)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "header", "{}", lines[0]);
    let busy: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "umount" && l["errno"] == "EBUSY")
        .collect();
    assert_eq!(busy.len(), FAILURES);
    // The fixture opened its file before the first failure made the mount contended: no
    // failure can say when, and each says why.
    for line in busy {
        let fd = &line["holders"][0];
        assert_eq!(fd["kind"], "fd", "{line}");
        assert_eq!(fd["open_time_unknown"], "not_timed", "{line}");
    }
    let last = lines.last().unwrap();
    assert!(last["type"] == "stats" && last["final"] == true, "{last}");
    eprintln!(
        "agent_metrics_reach_a_real_prometheus: {:.1?}",
        started.elapsed()
    );
}

/// `promtool check metrics` (Prometheus' own linter) accepts `exposition`.
fn promtool_accepts(dir: &Path, exposition: &str) {
    let file = dir.join("exposition.txt");
    std::fs::write(&file, exposition).unwrap();
    let checked = process::output(Command::new(process::tool("sh")).arg("-c").arg(format!(
        "'{}' check metrics < '{}'",
        process::tool("promtool").display(),
        file.display()
    )));
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

fn agent_tells_systemd_when_it_is_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&socket_path).expect("bind a notify socket");
    systemd.set_read_timeout(Some(LINE_TIMEOUT)).unwrap();
    let metrics = free_addr();
    let started = Instant::now();
    let mut agent = process::spawn(
        Command::new(env!("CARGO_BIN_EXE_busyprobe"))
            .args(["agent", "--path"])
            .arg(dir.path())
            .arg("--metrics")
            .arg(metrics.to_string())
            .arg("--no-socket")
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let next = |what: &str| {
        let mut buf = [0u8; 4096];
        let deadline = started + ATTACH_TIMEOUT;
        loop {
            match systemd.recv(&mut buf) {
                Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e)
                    if Instant::now() < deadline && e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("no {what} on the notify socket: {e}"),
            }
        }
    };
    let ready = next("READY=1");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Ready means serving: the metrics answer at once.
    assert!(scrape(metrics).contains("busyprobe_leaked_mounts 0"));
    kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM).unwrap();
    let stopping = next("STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(process::wait(&mut agent, LINE_TIMEOUT).success());
}

/// Every name in `dir`.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `busyprobe agent ARGS` run to its end: its exit status and stderr.
pub fn agent_fails(args: &[&OsStr]) -> String {
    let out = process::output(
        Command::new(env!("CARGO_BIN_EXE_busyprobe"))
            .arg("agent")
            .args(args),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} must fail: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

fn agent_refuses_a_metrics_port_in_use_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let recording = dir.path().join("rec.jsonl");
    let socket = dir.path().join("agent.sock");
    let stderr = agent_fails(&[
        "-o".as_ref(),
        recording.as_os_str(),
        "--metrics".as_ref(),
        addr.as_ref(),
        "--socket".as_ref(),
        socket.as_os_str(),
    ]);
    assert!(
        stderr.contains(&format!("serving metrics on {addr} (--metrics)"))
            && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(
        names_in(dir.path()).is_empty(),
        "{:?}",
        names_in(dir.path())
    );
}

fn agent_refuses_a_recording_it_cannot_create_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let in_missing_dir = dir.path().join("missing/rec.jsonl");
    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    for (recording, why) in [
        (&in_missing_dir, "No such file or directory"),
        (&directory, "is not a regular file"),
    ] {
        // The metrics port is free, so the recording is what fails.
        let metrics = free_addr().to_string();
        // The socket is bound before the recording is created: it must go again.
        let socket = dir.path().join("agent.sock");
        let stderr = agent_fails(&[
            "-o".as_ref(),
            recording.as_os_str(),
            "--metrics".as_ref(),
            metrics.as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
        ]);
        assert!(
            stderr.contains(&format!("creating the recording {}", recording.display()))
                && stderr.contains(why),
            "{stderr}"
        );
        assert_eq!(names_in(dir.path()), ["a-directory"], "{stderr}");
        assert!(names_in(&directory).is_empty());
    }
    let stderr = agent_fails(&["--no-metrics".as_ref(), "--no-socket".as_ref()]);
    assert!(stderr.contains("nothing to do"), "{stderr}");
}
