//! `busyprobe demo`: a small incident built for real, in a private mount namespace, and
//! explained live by `busyprobe watch` running alongside.
//!
//! The incident (run by this binary as `__demo-incident` in its own mount namespace):
//! 1. a tmpfs "image layer" is mounted and filled;
//! 2. a process holds `etc/passwd` open, the unmount fails (EBUSY: an `fd` holder);
//! 3. that process goes; a "scanner" opens `etc/hosts` for 5 ms; the unmount fails
//!    again while it holds it (`transient` when it let go before the scan, else `fd`);
//! 4. the unmount is retried every 50 ms, as containerd does, until it works.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
};

use crate::{cli::KEEP_ON_SCREEN, kernel::privileges::Privileges};

/// How long the scanner holds its file: a few milliseconds, gone before anyone looks.
const SCAN_HOLD: Duration = Duration::from_millis(5);
/// Time for `watch` to learn of a new mount before the incident unmounts it (with `--path`,
/// tracking follows the mount tables, which it re-reads within a second).
const SETTLE: Duration = Duration::from_millis(1500);

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
        "A process keeps a file open in it, a scanner reads another file for {} ms, and an",
        SCAN_HOLD.as_millis().max(1)
    );
    println!(
        "unmounter retries every 50 ms as containerd does. `busyprobe watch` explains each failure"
    );
    println!("(every demo process is this binary, so each is named busyprobe):\n");
    // On a terminal the stream is recorded and shown in the `top` view at the end.
    let recording = super::top::on_a_terminal().then(|| dir.path().join("demo.jsonl"));
    let watch = start_watch(&layer, recording.as_deref())?;
    let status = Command::new(this_binary()?)
        .arg("__demo-incident")
        .arg(&layer)
        .status()
        .context("running the demo incident")?;
    sleep(Duration::from_millis(300));
    stop(watch)?;
    if !status.success() {
        bail!("the demo incident failed ({status})");
    }
    if let Some(recording) = recording {
        println!("Opening the result in the `top` view (Enter: details, ?: keys, q: quit)...");
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
    sleep(SETTLE);
    let holder = start_helper("hold", &layer.join("etc/passwd"))?;
    let _ = unmount_once(layer);
    sleep(Duration::from_millis(300));
    drop(holder);
    let scanner = start_helper("scan", &layer.join("etc/hosts"))?;
    retry_unmount(layer)?;
    drop(scanner);
    Ok(ExitCode::SUCCESS)
}

/// Starts a demo helper and waits until it holds its file.
fn start_helper(role: &str, file: &Path) -> Result<Reaped> {
    let mut child = Command::new(this_binary()?)
        .args(["__demo-helper", role])
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting a demo helper")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("helper stdout")?).read_line(&mut line)?;
    Ok(Reaped(child))
}

fn unmount_once(layer: &Path) -> nix::Result<()> {
    umount2(layer, MntFlags::empty())
}

/// Retries every 50 ms for up to 5 s.
fn retry_unmount(layer: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match unmount_once(layer) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e).context("unmounting the demo layer"),
        }
    }
}

/// A demo helper: `hold` keeps the file open until killed; `scan` holds it for a moment.
pub fn helper(role: &str, file: &Path) -> Result<ExitCode> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    println!("holding");
    match role {
        "scan" => sleep(SCAN_HOLD),
        _ => loop {
            sleep(Duration::from_secs(60));
        },
    }
    drop(opened);
    sleep(Duration::from_secs(60));
    Ok(ExitCode::SUCCESS)
}
