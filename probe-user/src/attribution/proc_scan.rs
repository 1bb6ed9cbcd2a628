//! The `/proc` walk: every process's cwd, root, executable, open files and file mappings,
//! matched by mount id (`statx` through the magic links) against the mounts of interest.
//! Works from the host's view for every PID and mount namespace; a process that exits
//! mid-scan is skipped, one that cannot be inspected is counted and named.

use std::{collections::HashSet, fs, io, os::unix::ffi::OsStrExt, path::Path};

use crate::{
    model::{HolderKind, HolderProcess, Seen, Uninspectable},
    state::{
        process::{self, proc_path},
        statx,
    },
};

/// One hold a process has on a mount of interest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hold {
    /// `fd`, `cwd`, `root`, `exe` or `mmap`.
    pub kind: HolderKind,
    /// The mount held.
    pub mount_id: u64,
    /// The file or directory, as `readlink` on the magic link names it.
    pub path: Vec<u8>,
    /// The descriptor, for `fd`.
    pub fd: Option<i32>,
}

/// A fanotify group fd found on the way (the listener side of `fanotify` holders).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanotifyFd {
    /// The listener.
    pub process: HolderProcess,
    /// Its fanotify fd.
    pub fd: i32,
    /// Unread events in its queue that reference the mounts of interest, when the kernel
    /// scan could count them (`None` from a `/proc` scan, which cannot see the queue).
    pub queued: Option<u32>,
    /// The files of the first of those events, in queue order (the kernel scan's; empty from
    /// a `/proc` scan).
    pub files: Vec<QueuedOnMount>,
}

/// The file of a queued fanotify event, as the kernel scan names it: within its mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedOnMount {
    /// The file's mount (one of the mounts looked for).
    pub mount_id: u64,
    /// Its path within that mount (`/dir/file`).
    pub within: Vec<u8>,
    /// The probe could not walk the whole path (too deep or a name too long).
    pub cut: bool,
}

/// What the walk found.
#[derive(Clone, Debug)]
pub struct ScanOutcome {
    /// Each process holding one of the mounts, with its holds.
    pub holders: Vec<(HolderProcess, Vec<Hold>)>,
    /// Processes that could not be inspected.
    pub uninspectable: Vec<Uninspectable>,
    /// Every fanotify listener fd on the host.
    pub fanotify: Vec<FanotifyFd>,
    /// Processes walked.
    pub processes: usize,
    /// Descriptors examined.
    pub fds: usize,
    /// Which scan produced this.
    pub method: Seen,
}

impl Default for ScanOutcome {
    fn default() -> Self {
        Self {
            holders: Vec::new(),
            uninspectable: Vec::new(),
            fanotify: Vec::new(),
            processes: 0,
            fds: 0,
            method: Seen::ProcScan,
        }
    }
}

/// Walks every process for holds on `ids`.
pub fn scan(ids: &HashSet<u64>) -> ScanOutcome {
    let anon_mount = anon_inode_mount_id();
    let mut out = ScanOutcome::default();
    for pid in process::pids() {
        if pid == std::process::id() {
            continue;
        }
        out.processes += 1;
        scan_process(pid, ids, anon_mount, &mut out);
    }
    out
}

fn scan_process(pid: u32, ids: &HashSet<u64>, anon_mount: Option<u64>, out: &mut ScanOutcome) {
    let mut holds = Vec::new();
    for (link, kind) in [
        ("cwd", HolderKind::Cwd),
        ("root", HolderKind::Root),
        ("exe", HolderKind::Exe),
    ] {
        if let Some(hold) = link_hold(&proc_path(pid, link), kind, ids, None) {
            holds.push(hold);
        }
    }
    let mut fanotify_fds = Vec::new();
    match fd_holds(pid, ids, anon_mount, &mut holds, &mut fanotify_fds) {
        Ok(n) => out.fds += n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return, // exited
        Err(e) => out.uninspectable.push(Uninspectable {
            pid,
            comm: comm_of(pid),
            error: format!("reading /proc/{pid}/fd: {e}"),
        }),
    }
    holds.extend(mmap_holds(pid, ids));
    if holds.is_empty() && fanotify_fds.is_empty() {
        return;
    }
    let process = process_facts(pid);
    out.fanotify
        .extend(fanotify_fds.into_iter().map(|fd| FanotifyFd {
            process: process.clone(),
            fd,
            queued: None,
            files: Vec::new(),
        }));
    if !holds.is_empty() {
        out.holders.push((process, holds));
    }
}

/// The hold behind one magic link, if it is on one of `ids`.
fn link_hold(link: &Path, kind: HolderKind, ids: &HashSet<u64>, fd: Option<i32>) -> Option<Hold> {
    let of = statx::mount_of(link).ok()?;
    if !ids.contains(&of.mount_id) {
        return None;
    }
    let path = fs::read_link(link).ok()?.as_os_str().as_bytes().to_vec();
    Some(Hold {
        kind,
        mount_id: of.mount_id,
        path,
        fd,
    })
}

/// Adds the fds on `ids` to `holds` and the fanotify fds to `fanotify`; returns how many
/// fds were examined.
fn fd_holds(
    pid: u32,
    ids: &HashSet<u64>,
    anon_mount: Option<u64>,
    holds: &mut Vec<Hold>,
    fanotify: &mut Vec<i32>,
) -> io::Result<usize> {
    let dir = proc_path(pid, "fd");
    let mut count = 0;
    for entry in fs::read_dir(&dir)? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        count += 1;
        let link = entry.path();
        let Ok(of) = statx::mount_of(&link) else {
            continue;
        };
        if ids.contains(&of.mount_id) {
            if let Ok(target) = fs::read_link(&link) {
                holds.push(Hold {
                    kind: HolderKind::Fd,
                    mount_id: of.mount_id,
                    path: target.as_os_str().as_bytes().to_vec(),
                    fd: Some(fd),
                });
            }
        } else if Some(of.mount_id) == anon_mount && is_fanotify(&link) {
            fanotify.push(fd);
        }
    }
    Ok(count)
}

fn is_fanotify(link: &Path) -> bool {
    fs::read_link(link).is_ok_and(|t| t.as_os_str().as_bytes() == b"anon_inode:[fanotify]")
}

/// File mappings on `ids`, one per mapped file.
fn mmap_holds(pid: u32, ids: &HashSet<u64>) -> Vec<Hold> {
    let Ok(dir) = fs::read_dir(proc_path(pid, "map_files")) else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut holds = Vec::new();
    for entry in dir.flatten() {
        let link = entry.path();
        let Ok(of) = statx::mount_of(&link) else {
            continue;
        };
        if !ids.contains(&of.mount_id) || !seen.insert((of.mount_id, of.ino)) {
            continue;
        }
        if let Ok(target) = fs::read_link(&link) {
            holds.push(Hold {
                kind: HolderKind::Mmap,
                mount_id: of.mount_id,
                path: target.as_os_str().as_bytes().to_vec(),
                fd: None,
            });
        }
    }
    holds
}

/// The mount id of anonymous inodes (eventfd, fanotify, ...), learnt from an eventfd of our own.
pub fn anon_inode_mount_id() -> Option<u64> {
    // SAFETY: plain syscall; the fd is closed right after.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let id = statx::mount_of(Path::new(&format!("/proc/self/fd/{fd}")))
        .ok()
        .map(|m| m.mount_id);
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    id
}

/// comm, mount namespace, container of a process.
pub fn process_facts(pid: u32) -> HolderProcess {
    HolderProcess {
        pid,
        comm: comm_of(pid),
        mntns: process::mntns_of(pid),
        container: process::ProcFs::default().container(pid),
    }
}

fn comm_of(pid: u32) -> Vec<u8> {
    let mut comm = fs::read(proc_path(pid, "comm")).unwrap_or_default();
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    comm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test process holds its own cwd's mount: the scan of that mount finds... not us
    /// (the scanner skips itself), but a child we start there.
    #[test]
    fn finds_a_child_holding_a_cwd_and_an_fd() {
        let dir = std::env::temp_dir();
        let id = statx::mount_of(&dir).unwrap().mount_id;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&dir)
            .spawn()
            .unwrap();
        let out = scan(&HashSet::from([id]));
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        let (process, holds) = out
            .holders
            .iter()
            .find(|(p, _)| p.pid == pid)
            .expect("child found");
        assert_eq!(process.comm, b"sleep");
        assert!(
            holds
                .iter()
                .any(|h| h.kind == HolderKind::Cwd && h.mount_id == id),
            "{holds:?}"
        );
        assert!(out.processes > 1 && out.fds > 0);
        assert!(anon_inode_mount_id().is_some());
    }
}
