//! `busyprobe who PATH`: who would make unmounting PATH fail right now. No probes are loaded:
//! the attribution engine's `/proc` and mount-table scan, from the host's view.

use std::{
    io::Write,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{
    attribution::{
        self,
        kernel_scan::KernelScanner,
        namespaces::Namespace,
        pods::Unnamed,
        target::{TargetMount, Viewpoint},
        Scanner,
    },
    cli::{ScanChoice, WhoArgs},
    kernel::privileges::Privileges,
    kubernetes::{socket::Sockets, PodDirectory},
    model::{Attribution, Holder},
    paths::escape_for_terminal,
    sink::{json::who_line, text::format_holder},
    state::mountinfo::MountEntry,
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
    let pods = PodDirectory::new(Sockets::from_arg(args.cri_socket.as_deref()));
    let mut kernel = kernel_scanner(args.scan)?;
    let mut scanner = match kernel.as_mut() {
        Some(k) => Scanner::Kernel(k),
        None => Scanner::Proc,
    };
    let mut answers = match (&args.pod, &args.path) {
        (Some(pod), _) => pod_answers(pod, &args.kubelet_root, &pods, &mut scanner)?,
        (None, Some(path)) => {
            let path = path.as_os_str().as_bytes();
            let a = attribution::attribute(Viewpoint::own(), path, &mut scanner)?;
            vec![(path.to_vec(), a)]
        }
        (None, None) => bail!("give a PATH or --pod"),
    };
    name_pods(&mut answers, &pods);
    let mut out = std::io::stdout().lock();
    let written = write_answers(&mut out, &answers, args.json).and_then(|()| out.flush());
    match written {
        // The reader went away (`busyprobe who PATH | head -1`): the answer stands.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(if answers.iter().any(|(_, a)| a.has_blamed()) {
        FOUND
    } else {
        NONE
    })
}

/// Each answer: one `who` JSON line, or the human report (blank lines between).
fn write_answers(
    out: &mut impl Write,
    answers: &[(Vec<u8>, Attribution)],
    json: bool,
) -> std::io::Result<()> {
    for (i, (path, a)) in answers.iter().enumerate() {
        if json {
            writeln!(out, "{}", who_line(path, a))?;
        } else {
            if i > 0 {
                writeln!(out)?;
            }
            write!(out, "{}", render(path, a))?;
        }
    }
    Ok(())
}

/// Names the holders' pods of every answer, with one lookup.
fn name_pods(answers: &mut [(Vec<u8>, Attribution)], pods: &PodDirectory) {
    let mut unnamed = Unnamed::default();
    for (_, a) in answers.iter() {
        unnamed.add_holders(a);
    }
    let names = unnamed.names(pods);
    for (_, a) in answers.iter_mut() {
        names.apply_to_holders(a);
    }
}

/// `who --pod`: every mount under the pod's kubelet directory and who holds it (one scan
/// for all of them), in mount-point order.
fn pod_answers(
    pod: &str,
    kubelet_root: &Path,
    pods: &PodDirectory,
    scanner: &mut Scanner,
) -> Result<Vec<(Vec<u8>, Attribution)>> {
    let dir = pod_directory(pod, kubelet_root, pods)?;
    let namespace = Namespace::of_pid(std::process::id())
        .ok_or_else(|| anyhow!("cannot read this process's mount table"))?;
    let targets = mounts_under(&namespace, dir.as_os_str().as_bytes());
    if targets.is_empty() {
        tracing::info!(
            "nothing is mounted under {}: no volume of the pod holds anything",
            dir.display()
        );
    }
    let found = attribution::attribute_mounts(&targets, scanner);
    Ok(targets
        .into_iter()
        .map(|t| t.entry.mount_point)
        .zip(found)
        .collect())
}

/// The pod's directory under the kubelet's root: from its UID, or its `NAMESPACE/NAME` as
/// the container runtime knows it.
fn pod_directory(pod: &str, kubelet_root: &Path, pods: &PodDirectory) -> Result<PathBuf> {
    let uid = match pod.split_once('/') {
        Some((namespace, name)) => pods.pod_uid(namespace, name).with_context(|| {
            format!(
                "the container runtime does not know a pod {pod} (its sandbox may be gone \
                 already): give its UID instead, for example from \
                 `kubectl get pod -n {namespace} {name} -o jsonpath='{{.metadata.uid}}'` or \
                 the directory names under {}/pods",
                kubelet_root.display()
            )
        })?,
        None => pod.to_owned(),
    };
    let dir = kubelet_root.join("pods").join(&uid);
    let dir = dir.canonicalize().with_context(|| {
        format!(
            "no directory {}: the kubelet has no pod with UID {uid} on this node (or its root \
             is elsewhere: see --kubelet-root)",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// The mounts of `namespace` below `dir`, as targets seen from it.
fn mounts_under(namespace: &Namespace, dir: &[u8]) -> Vec<TargetMount> {
    let mut mounts: Vec<&MountEntry> = namespace
        .mounts
        .iter()
        .filter(|m| {
            m.mount_point
                .strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with(b"/"))
        })
        .collect();
    mounts.sort_by(|a, b| a.mount_point.cmp(&b.mount_point).then(a.id.cmp(&b.id)));
    mounts
        .into_iter()
        .map(|entry| TargetMount {
            entry: entry.clone(),
            namespace: namespace.clone(),
            is_mount_point: true,
        })
        .collect()
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
