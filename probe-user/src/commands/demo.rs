//! `busyprobe demo`: a small incident built for real, in a private mount namespace, and
//! explained live by `busyprobe watch` running alongside.
//!
//! The incident (run by this binary as `__demo-incident` in its own mount namespace):
//! 1. a tmpfs "image layer" is mounted and filled; `watch --path LAYER` starts only then, so
//!    that it tracks the layer from its first event (it reads every mount table before it says
//!    `probes attached`), and the incident goes on when told;
//! 2. a process holds `etc/passwd` open, the unmount fails (EBUSY: an `fd` holder);
//! 3. that process goes; a "scanner" opens `etc/hosts`; the unmount fails again while it holds
//!    it, and it lets go right after the failure (`transient` when it let go before the scan,
//!    else `fd`);
//! 4. the unmount is retried every 50 ms, as containerd does, until it works.
//!
//! Every step waits on the one before (a helper says when it holds or let go of its file), so
//! the demo shows exactly two failures however slow the machine.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
};

use crate::{cli::KEEP_ON_SCREEN, kernel::privileges::Privileges};

/// How long the first holder keeps its file after the failure (the demo's pace: long enough
/// to be seen holding it by the scan, which names it `fd`; on a slow machine it may be named
/// `transient`, having exited first).
const HOLD_AFTER_FAILURE: Duration = Duration::from_millis(300);
/// What a demo process writes on its stdout once it has done what it was asked.
const DONE: &str = "done";

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn this_binary() -> Result<PathBuf> {
    std::env::current_exe().context("finding this binary")
}

/// Runs the demo: `watch` for the demo's directory, the incident, then a summary.
pub fn run() -> Result<ExitCode> {
    Privileges::current().require_probes("demo")?;
    let dir = tempfile::Builder::new()
        .prefix("busyprobe-demo.")
        .tempdir()
        .context("creating a temporary directory")?;
    let layer = dir
        .path()
        .canonicalize()?
        .join("tmpmounts/containerd-mount1");
    std::fs::create_dir_all(&layer)?;
    println!(
        "busyprobe demo: an image layer is mounted at {}, in a private mount namespace.",
        layer.display()
    );
    println!(
        "A process keeps a file open in it, a scanner reads another file and lets go a moment"
    );
    println!(
        "after the failure, and an unmounter retries every 50 ms as containerd does. `busyprobe"
    );
    println!("watch` explains each failure");
    println!("(every demo process is this binary, so each is named busyprobe):\n");
    // On a terminal the stream is recorded and shown in the `top` view at the end.
    let recording = super::top::on_a_terminal().then(|| dir.path().join("demo.jsonl"));
    let mut incident = Helper::start(
        Command::new(this_binary()?)
            .arg("__demo-incident")
            .arg(&layer),
    )
    .context("starting the demo incident")?;
    let watch = start_watch(&layer, recording.as_deref())?;
    // The calls have returned, so their events are in the ring buffer: `watch` writes them all
    // (holders included) before it exits on SIGINT.
    let status = incident.tell().and_then(|()| incident.finish());
    stop(watch)?;
    status.context("the demo incident failed")?;
    if let Some(recording) = recording {
        println!("Opening the result in the `top` view (Enter: the incident, a: every attempt, ?: keys, q: quit)...");
        sleep(Duration::from_secs(1));
        super::top::show_recording(
            &[recording],
            KEEP_ON_SCREEN,
            "demo (every process is busyprobe)".into(),
        )?;
    }
    println!("\nEvery EBUSY names the process and the file that held the mount. Run");
    println!("`busyprobe watch` (or `busyprobe watch --json`) to see this for every unmount on this host.");
    Ok(ExitCode::SUCCESS)
}

/// `busyprobe watch --path LAYER`, stdout shared with ours (or, given a recording, JSON Lines
/// into it); returns once the probes are attached.
fn start_watch(layer: &Path, recording: Option<&Path>) -> Result<Child> {
    let mut watch = Command::new(this_binary()?);
    watch
        .args(["watch", "--stats-interval", "0", "--path"])
        .arg(layer);
    if let Some(recording) = recording {
        let file = std::fs::File::create(recording).context("creating the demo's recording")?;
        watch.arg("--json").stdout(file);
    }
    let mut child = watch
        .stderr(Stdio::piped())
        .spawn()
        .context("starting busyprobe watch")?;
    let stderr = child.stderr.take().context("watch's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("probes attached") => break,
            Some(Ok(line)) => eprintln!("{line}"),
            _ => bail!("busyprobe watch exited before attaching its probes"),
        }
    }
    // Keep draining its stderr (its final summary) so it never blocks.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(child)
}

fn stop(mut watch: Child) -> Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    watch.wait()?;
    Ok(())
}

/// The incident, in a mount namespace of its own (so every mount vanishes with it).
pub fn incident(layer: &Path) -> Result<ExitCode> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some("layer"),
        layer,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .context("mounting the tmpfs")?;
    std::fs::create_dir(layer.join("etc"))?;
    for (name, text) in [
        ("passwd", "root:x:0:0::/root:/bin/sh\n"),
        ("hosts", "127.0.0.1 localhost\n"),
    ] {
        std::fs::write(layer.join("etc").join(name), text)?;
    }
    // The layer is mounted: wait for `watch` to be attached (the demo says when).
    say_done()?;
    wait_to_be_told()?;
    let holder = start_helper("hold", &layer.join("etc/passwd"))?;
    let _ = unmount_once(layer);
    sleep(HOLD_AFTER_FAILURE);
    drop(holder);
    let mut scanner = start_helper("scan", &layer.join("etc/hosts"))?;
    let failed = unmount_once(layer);
    scanner.tell()?; // let go, now that the unmount failed
    if failed.is_err() {
        sleep(RETRY_EVERY); // a runtime's back-off before its next try
        retry_unmount(layer)?;
    }
    scanner.finish()?;
    say_done()?;
    Ok(ExitCode::SUCCESS)
}

/// A demo process driven step by step: told to go on through its stdin, it answers [`DONE`]
/// on its stdout once it has; killed and reaped on drop.
struct Helper {
    child: Reaped,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    /// Starts `command` and waits for its first [`DONE`].
    fn start(command: &mut Command) -> Result<Self> {
        let mut child = Reaped(
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?,
        );
        let stdin = child.0.stdin.take();
        let stdout = BufReader::new(child.0.stdout.take().context("no stdout")?);
        let mut helper = Self {
            child,
            stdin,
            stdout,
        };
        helper.wait_done()?;
        Ok(helper)
    }

    /// Tells it to go on, and waits until it says it has.
    fn tell(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        self.wait_done()
    }

    fn wait_done(&mut self) -> Result<()> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim_end() != DONE {
            bail!("it ended before it was done (said {line:?})");
        }
        Ok(())
    }

    /// Waits for it to exit; an error if it failed.
    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.0.wait()?;
        if !status.success() {
            bail!("{status}");
        }
        Ok(())
    }
}

/// Starts a demo helper and waits until it holds its file.
fn start_helper(role: &str, file: &Path) -> Result<Helper> {
    Helper::start(
        Command::new(this_binary()?)
            .args(["__demo-helper", role])
            .arg(file),
    )
    .with_context(|| format!("starting the demo's {role} helper"))
}

/// Says [`DONE`] to the process driving this one.
fn say_done() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{DONE}")?;
    out.flush()?;
    Ok(())
}

/// Waits for the process driving this one to say go on (or to go away).
fn wait_to_be_told() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

fn unmount_once(layer: &Path) -> nix::Result<()> {
    umount2(layer, MntFlags::empty())
}

/// How long a runtime waits between two unmount attempts (containerd's back-off).
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// Retries every [`RETRY_EVERY`] for up to 5 s.
fn retry_unmount(layer: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match unmount_once(layer) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => sleep(RETRY_EVERY),
            Err(e) => return Err(e).context("unmounting the demo layer"),
        }
    }
}

/// A demo helper: `hold` keeps the file open until killed; `scan` holds it until told, then
/// lets go (says so once the file is closed) and stays until its driver goes away.
pub fn helper(role: &str, file: &Path) -> Result<ExitCode> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    say_done()?;
    match role {
        "scan" => wait_to_be_told()?,
        _ => loop {
            sleep(Duration::from_secs(60));
        },
    }
    drop(opened);
    say_done()?;
    wait_to_be_told()?;
    Ok(ExitCode::SUCCESS)
}
