//! `busyprobe who PATH`: who would make unmounting PATH fail right now. No probes are loaded:
//! the attribution engine's `/proc` and mount-table scan, from the host's view.

use std::{io::Write as _, os::unix::ffi::OsStrExt, process::ExitCode};

use anyhow::Result;

use crate::{
    attribution::{self, kernel_scan::KernelScanner, pods, target::Viewpoint, Scanner},
    cli::{ScanChoice, WhoArgs},
    kernel::privileges::Privileges,
    kubernetes::{socket::Sockets, PodDirectory},
    model::{Attribution, Holder},
    paths::escape_for_terminal,
    sink::{json::who_line, text::format_holder},
};

/// Exit status: holders were found.
const FOUND: u8 = 0;
/// Exit status: nothing holds the mount.
const NONE: u8 = 1;
/// Exit status: the question could not be answered.
const ERROR: u8 = 2;

/// Runs `who`; errors are printed here so that they exit with status 2.
pub fn run(args: &WhoArgs) -> ExitCode {
    match who(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("busyprobe: error: {e:#}");
            ExitCode::from(ERROR)
        }
    }
}

fn who(args: &WhoArgs) -> Result<u8> {
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "not running as root: other users' processes cannot be inspected (they are counted)"
        );
    }
    let path = args.path.as_os_str().as_bytes();
    let mut kernel = kernel_scanner(args.scan)?;
    let mut scanner = match kernel.as_mut() {
        Some(k) => Scanner::Kernel(k),
        None => Scanner::Proc,
    };
    let mut attribution = attribution::attribute(Viewpoint::own(), path, &mut scanner)?;
    let pods = PodDirectory::new(Sockets::from_arg(args.cri_socket.as_deref()));
    pods::name_holders(&mut attribution, &pods);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{}", who_line(path, &attribution))
    } else {
        write!(out, "{}", render(path, &attribution))
    }
    .and_then(|()| out.flush());
    match written {
        // The reader went away (`busyprobe who PATH | head -1`): the answer stands.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(if attribution.has_blamed() {
        FOUND
    } else {
        NONE
    })
}

/// The kernel scanner `choice` asks for: loaded for `kernel` (an error if it cannot be),
/// tried for `auto` (falling back to /proc with a note), none for `proc`.
fn kernel_scanner(choice: ScanChoice) -> Result<Option<KernelScanner>> {
    match choice {
        ScanChoice::Proc => Ok(None),
        ScanChoice::Kernel => {
            Privileges::current().require_probes("who --scan kernel")?;
            KernelScanner::load().map(Some)
        }
        ScanChoice::Auto if !Privileges::current().missing().is_empty() => Ok(None),
        ScanChoice::Auto => match KernelScanner::load() {
            Ok(k) => Ok(Some(k)),
            Err(e) => {
                tracing::info!("kernel scan unavailable ({e:#}); walking /proc");
                Ok(None)
            }
        },
    }
}

/// The human report: the mount, then holders grouped by process, then what was scanned.
pub fn render(path: &[u8], a: &Attribution) -> String {
    let e = &a.mount.entry;
    let mut s = String::new();
    if !a.is_mount_point {
        s.push_str(&format!(
            "{} is not a mount point: it is on the mount at {}\n",
            escape_for_terminal(path),
            escape_for_terminal(&e.mount_point)
        ));
    }
    s.push_str(&format!(
        "mount {} at {}: {} from {} ({}), mount namespace {}\n",
        a.mount.id,
        escape_for_terminal(&e.mount_point),
        e.fstype,
        escape_for_terminal(&e.source),
        e.propagation.describe(),
        a.mount.mntns
    ));
    let mut holders: Vec<&Holder> = a.holders.iter().collect();
    holders.sort_by_key(|h| {
        (
            h.process.as_ref().map_or(u32::MAX, |p| p.pid),
            !h.blamed,
            h.kind,
        )
    });
    let mut last_pid = None;
    for h in &holders {
        let pid = h.process.as_ref().map(|p| p.pid);
        if pid != last_pid || pid.is_none() {
            s.push('\n');
        }
        last_pid = pid;
        s.push_str("  ");
        s.push_str(&format_holder(h));
        s.push('\n');
    }
    if holders.is_empty() {
        s.push_str("\nnothing holds it: an unmount would succeed now\n");
    }
    let c = a.coverage;
    let fds = if c.fds > 0 {
        format!(" ({} fds)", c.fds)
    } else {
        String::new()
    };
    s.push_str(&format!(
        "\n{} holders; {} of {} processes{fds} in {} mount namespaces",
        a.holders.iter().filter(|h| h.blamed).count(),
        c.method.as_str(),
        c.processes,
        c.namespaces
    ));
    if !a.uninspectable.is_empty() {
        let names: Vec<String> = a
            .uninspectable
            .iter()
            .take(5)
            .map(|u| format!("{}[{}]", escape_for_terminal(&u.comm), u.pid))
            .collect();
        s.push_str(&format!(
            "; {} could not be inspected ({}…)",
            a.uninspectable.len(),
            names.join(", ")
        ));
    }
    s.push('\n');
    s
}
