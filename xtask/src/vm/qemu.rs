//! Booting a kernel and an initramfs under qemu: the host tools it needs (installed with
//! apt-get when root), the command line, and one run under a timeout with the serial console
//! streamed to a log file and read into a [`GuestReport`].

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use super::report::{interpret_exit, GuestReport, QemuExit};

/// The qemu binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// How the guest CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: works everywhere, slow.
    Tcg,
    /// Hardware virtualization: needs a working /dev/kvm (not on the build machines).
    Kvm,
}

/// Host programs vm-test needs, with the Debian package of each.
const HOST_PROGRAMS: &[(&str, &str)] = &[(QEMU, "qemu-system-x86"), ("busybox", "busybox-static")];

/// Finds qemu and busybox; installs the missing ones with apt-get when root (saying so), else
/// fails with the command to run.
pub fn ensure_host_tools() -> Result<PathBuf> {
    let missing: Vec<&str> = HOST_PROGRAMS
        .iter()
        .filter(|(program, _)| which(program).is_none())
        .map(|&(_, package)| package)
        .collect();
    if !missing.is_empty() {
        let install = format!(
            "apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "vm-test needs {}; install them as root: {install}",
                missing.join(", ")
            );
        }
        println!("xtask: vm: installing {} ({install})", missing.join(" "));
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive {install}"
            ))
            .status()
            .context("running apt-get")?;
        ensure!(status.success(), "`{install}` failed ({status})");
    }
    which("busybox").context("busybox is still missing after installing busybox-static")
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// One boot.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The kernel image (`vmlinuz`).
    pub kernel: PathBuf,
    /// The newc initramfs.
    pub initrd: PathBuf,
    /// Where the serial console goes (every line, as it arrives).
    pub log: PathBuf,
    /// CPU accelerator.
    pub accel: Accel,
    /// Virtual CPUs.
    pub smp: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// qemu is killed after this long.
    pub timeout: Duration,
    /// A raw disk image attached as a virtio disk (`/dev/vda` in the guest).
    pub disk: Option<PathBuf>,
}

/// What one boot gave.
#[derive(Debug, Clone)]
pub struct BootResult {
    /// What the guest printed on its result lines.
    pub report: GuestReport,
    /// How qemu ended.
    pub exit: QemuExit,
    /// From starting qemu to its exit.
    pub elapsed: Duration,
    /// When the watcher of [`Boot::run_watched`] had qemu killed (SIGKILL).
    pub killed_at: Option<Instant>,
}

impl Boot {
    /// The qemu arguments: no display, the serial console on stdout, isa-debug-exit at 0xf4,
    /// no reboot (a panic ends qemu with status 0).
    pub fn args(&self) -> Vec<String> {
        let (accel, cpu) = match self.accel {
            // One host thread for all vCPUs: with multi-threaded TCG, a guest kernel patching
            // its own code on one vCPU (static keys flip when tracepoints attach) was seen to
            // leave another vCPU executing the patch's int3 (a guest oops).
            Accel::Tcg => ("tcg,thread=single", "max"),
            Accel::Kvm => ("kvm", "host"),
        };
        let mut args: Vec<String> = [
            "-accel",
            accel,
            "-cpu",
            cpu,
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        .map(String::from)
        .into();
        args.extend([
            "-smp".into(),
            self.smp.to_string(),
            "-m".into(),
            self.memory_mib.to_string(),
            "-kernel".into(),
            self.kernel.to_string_lossy().into_owned(),
            "-initrd".into(),
            self.initrd.to_string_lossy().into_owned(),
            "-append".into(),
            "console=ttyS0 panic=-1 oops=panic loglevel=4 rdinit=/init".into(),
        ]);
        if let Some(disk) = &self.disk {
            args.extend([
                "-drive".into(),
                format!("file={},format=raw,if=virtio", disk.display()),
            ]);
        }
        args
    }

    /// Boots, streams the console into the log (and the report), waits at most the timeout.
    /// `echo` also prints every console line.
    pub fn run(&self, echo: bool) -> Result<BootResult> {
        self.run_watched(echo, |_| false)
    }

    /// [`Boot::run`], showing `watch` each console line as it arrives (`Some`) and calling
    /// it every 20 ms meanwhile (`None`): when it answers true, qemu is killed at once with
    /// SIGKILL (a power cut: what the guest had not written to its disk is gone).
    pub fn run_watched(
        &self,
        echo: bool,
        mut watch: impl FnMut(Option<&str>) -> bool,
    ) -> Result<BootResult> {
        let mut log =
            File::create(&self.log).with_context(|| format!("creating {}", self.log.display()))?;
        let started = Instant::now();
        let mut child = Command::new(QEMU)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {QEMU}"))?;
        let (tx, rx) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                    if tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut report = GuestReport::default();
        let deadline = started + self.timeout;
        let mut timed_out = false;
        let mut killed_at = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            let kill = match rx.recv_timeout((deadline - now).min(Duration::from_millis(20))) {
                Ok(line) => {
                    writeln!(log, "{}", line.trim_end_matches('\r'))?;
                    if echo {
                        println!("  | {}", line.trim_end_matches('\r'));
                    }
                    report.feed(&line);
                    watch(Some(&line))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => watch(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if kill {
                let _ = child.kill();
                killed_at = Some(Instant::now());
                break;
            }
        }
        let status = child.wait().context("waiting for qemu")?;
        // Lines still queued after the pipes closed.
        for line in rx.try_iter() {
            writeln!(log, "{}", line.trim_end_matches('\r'))?;
            report.feed(&line);
        }
        log.flush()?;
        Ok(BootResult {
            report,
            exit: interpret_exit(status.code(), timed_out),
            elapsed: started.elapsed(),
            killed_at,
        })
    }
}

/// The last `n` lines of a log file.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_exit_device_timeout_safety_and_accel() {
        let boot = Boot {
            kernel: "/k/vmlinuz".into(),
            initrd: "/t/initrd".into(),
            log: "/t/log".into(),
            accel: Accel::Tcg,
            smp: 2,
            memory_mib: 1024,
            timeout: Duration::from_secs(60),
            disk: None,
        };
        let args = boot.args().join(" ");
        assert!(!args.contains("-drive"));
        let with_disk = Boot {
            disk: Some("/t/disk.img".into()),
            ..boot.clone()
        };
        assert!(with_disk
            .args()
            .join(" ")
            .ends_with("-drive file=/t/disk.img,format=raw,if=virtio"));
        assert!(args.contains("-accel tcg,thread=single -cpu max"), "{args}");
        assert!(args.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(args.contains("-no-reboot"));
        assert!(args.contains("-smp 2 -m 1024 -kernel /k/vmlinuz -initrd /t/initrd"));
        assert!(args.contains("console=ttyS0 panic=-1"));
        let kvm = Boot {
            accel: Accel::Kvm,
            ..boot
        };
        assert!(kvm.args().join(" ").contains("-accel kvm -cpu host"));
    }
}
