//! Resolving an unmount target the way the caller saw it: its path in the caller's mount
//! namespace and working directory, to exactly one mount (by mount id, never by device).

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context, Result};

use super::namespaces::Namespace;
use crate::state::{mountinfo::MountEntry, process, statx};

/// The mount a target names.
#[derive(Clone, Debug)]
pub struct TargetMount {
    /// Its mountinfo entry in the caller's namespace.
    pub entry: MountEntry,
    /// The caller's mount namespace (its table included).
    pub namespace: Namespace,
    /// Whether the path is the mount's root (a mount point). `who` accepts any path and says
    /// which mount it is on when it is not.
    pub is_mount_point: bool,
}

/// Who resolves the path: the caller (pid and thread, for its root and cwd) in its namespace.
#[derive(Clone, Copy, Debug)]
pub struct Viewpoint {
    /// A process in the caller's mount namespace (the caller itself when alive).
    pub pid: u32,
    /// The thread whose cwd resolves a relative path.
    pub tid: u32,
}

impl Viewpoint {
    /// The caller of an unmount, or any live process of its mount namespace if it exited
    /// (a relative target then resolves against that process's cwd: said in the error).
    pub fn of_caller(pid: u32, tid: u32, mntns: u64) -> Result<Self> {
        let live = process::process_in(mntns, pid).with_context(|| {
            format!("the caller {pid} exited and no process is left in its mount namespace {mntns}")
        })?;
        Ok(if live == pid {
            Self { pid, tid }
        } else {
            Self {
                pid: live,
                tid: live,
            }
        })
    }

    /// This process.
    pub fn own() -> Self {
        let pid = std::process::id();
        Self { pid, tid: pid }
    }

    /// `path` as this viewpoint's process would look it up, through `/proc`.
    fn through_proc(&self, path: &[u8]) -> PathBuf {
        let (base, rest) = match path.strip_prefix(b"/") {
            Some(rest) => (process::proc_path(self.pid, "root"), rest),
            None => (
                process::proc_path(self.pid, &format!("task/{}/cwd", self.tid)),
                path,
            ),
        };
        base.join(Path::new(OsStr::from_bytes(rest)))
    }
}

/// Resolves `path` from `view` to one mount.
pub fn resolve(view: Viewpoint, path: &[u8]) -> Result<TargetMount> {
    let through = view.through_proc(path);
    let of = statx::mount_of(&through).with_context(|| {
        format!(
            "resolving {} as process {} sees it",
            String::from_utf8_lossy(path),
            view.pid
        )
    })?;
    let namespace = Namespace::of_pid(view.pid)
        .ok_or_else(|| anyhow!("cannot read the mount table of process {}", view.pid))?;
    let entry = namespace.mount(of.mount_id).cloned().with_context(|| {
        format!(
            "mount {} is not in the mount table of process {}",
            of.mount_id, view.pid
        )
    })?;
    Ok(TargetMount {
        entry,
        namespace,
        is_mount_point: of.is_mount_root,
    })
}
