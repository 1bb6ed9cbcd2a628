//! The vocabulary of attribution: what holds a mount ([`HolderKind`]), how it was seen
//! ([`Seen`]), and one [`Holder`].

use crate::container::Container;

/// What holds the mount (design.md, "Holder kinds").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HolderKind {
    /// An open file descriptor (any flags, `O_PATH` too).
    Fd,
    /// A process's working directory.
    Cwd,
    /// A process's root directory (chroot, pivot_root).
    Root,
    /// The running executable.
    Exe,
    /// A memory mapping of a file.
    Mmap,
    /// Another mount on top of or under the target.
    Submount,
    /// A copy of the mount in another mount namespace, and what holds that copy.
    MountCopy,
    /// A loop device backed by a file on the mount.
    Loop,
    /// A swap file on the mount.
    Swap,
    /// A fanotify listener whose queued events (may) reference the mount.
    Fanotify,
    /// A process that held a file on the mount at the failing call and let go after it.
    Transient,
    /// Nothing found explains the EBUSY.
    Unknown,
}

impl HolderKind {
    /// The name used in JSON and the TUI.
    pub fn as_str(self) -> &'static str {
        match self {
            HolderKind::Fd => "fd",
            HolderKind::Cwd => "cwd",
            HolderKind::Root => "root",
            HolderKind::Exe => "exe",
            HolderKind::Mmap => "mmap",
            HolderKind::Submount => "submount",
            HolderKind::MountCopy => "mount-copy",
            HolderKind::Loop => "loop",
            HolderKind::Swap => "swap",
            HolderKind::Fanotify => "fanotify",
            HolderKind::Transient => "transient",
            HolderKind::Unknown => "unknown",
        }
    }
}

/// How a holder was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A walk of `/proc` after the fact.
    ProcScan,
    /// BPF iterators over every task, comparing the exact `struct mount`.
    KernelScan,
    /// Release tracking: the probe saw it let go.
    Traced,
    /// The mount tables (`/proc/PID/mountinfo`), `/sys/block`, `/proc/swaps`.
    MountTable,
}

impl Seen {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Seen::ProcScan => "proc-scan",
            Seen::KernelScan => "kernel-scan",
            Seen::Traced => "traced",
            Seen::MountTable => "mount-table",
        }
    }
}

/// Why an fd holder has no open time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenTimeUnknown {
    /// Its open overlapped an unmount attempt's entry: it cannot be placed on either side of
    /// the busy check.
    RacedAnUnmount,
    /// Its open was not timed: opened before busyprobe timed opens on this mount (before it
    /// started, or before the mount was contended with `--open-times contended`), inherited
    /// or received rather than opened (`fork`, `SCM_RIGHTS`, fanotify's event fds), or open
    /// times are off.
    NotTimed,
}

impl OpenTimeUnknown {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RacedAnUnmount => "raced_an_unmount",
            Self::NotTimed => "not_timed",
        }
    }
}

/// The process side of a holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderProcess {
    /// Process id in the host's PID namespace.
    pub pid: u32,
    /// Its `comm`.
    pub comm: Vec<u8>,
    /// Inode of its mount namespace.
    pub mntns: Option<u64>,
    /// Its container, when its cgroup path names one.
    pub container: Option<Container>,
}

/// One thing that holds the mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// What kind of hold.
    pub kind: HolderKind,
    /// The process, for kinds that have one.
    pub process: Option<HolderProcess>,
    /// The held path (file, directory, mount point, backing file), as the kernel names it.
    pub path: Option<Vec<u8>>,
    /// The file descriptor, for `fd` (and the listener's fd for `fanotify`).
    pub fd: Option<i32>,
    /// The mount that is held: the target, a submount or a copy.
    pub mount_id: u64,
    /// For `mount-copy`: the kind of hold on the copy (`fd`, `cwd`, ...; `submount`;
    /// `transient` or `fanotify` for a release traced on it after the call).
    pub via: Option<HolderKind>,
    /// Whether this holder can make the unmount fail. A private copy in another namespace
    /// cannot: it is reported as information with `blamed: false`.
    pub blamed: bool,
    /// How it was found.
    pub seen: Seen,
    /// A sentence for the human: the device of a loop, the propagation of a copy, why a
    /// fanotify listener is only suspected, what was checked for `unknown`.
    pub note: Option<String>,
    /// For `transient`: how long before the failing call the file was opened, when the open
    /// was seen.
    pub opened_ns_before: Option<u64>,
    /// For `fd`: why `opened_ns_before` is not known.
    pub open_time_unknown: Option<OpenTimeUnknown>,
    /// For `fd` and `transient`: the fd is a fanotify event fd, which the kernel opened for
    /// one of the process's events (enhanced mode's `file_open` hook tells them apart).
    pub event_fd: bool,
    /// For an event fd opened after the failing call returned: how long after. Its event,
    /// queued before, held the mount at the busy check (`opened_ns_before` is then `None`).
    pub opened_ns_after: Option<u64>,
    /// For `transient`: how long after the failing call returned the file was let go.
    pub closed_ns_after: Option<u64>,
    /// The held mount had been detached (lazily unmounted) by the time of the scan: `path`
    /// is then the mount's old mount point joined with the path within it (the kernel names
    /// a file on a detached mount from the mount's root, `/f`).
    pub mount_detached: bool,
    /// The holder is the failing call's own process (`cd /mnt/x && umount /mnt/x`: its
    /// working directory; `umount(8)` holds nothing itself, so this is usually a program that
    /// unmounts what it still uses).
    pub by_caller: bool,
    /// For `fanotify` when its queue was seen (the kernel scan, or its release traced): its
    /// unread events on the mount.
    pub queued_events: Option<u32>,
    /// For `fanotify` when its queue was seen: the files of the first of those events (at
    /// most [`probe_common::QUEUED_FILES`]), in queue order; the rest are only counted.
    pub queued_files: Vec<QueuedFile>,
}

/// The file of an unread fanotify event queued on the mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedFile {
    /// Its absolute path, as the mount's namespace names it.
    pub path: Vec<u8>,
    /// The probe could not walk the whole path (too deep or a name too long).
    pub cut: bool,
}

impl Holder {
    /// A blamed holder of `kind` on `mount_id`, with nothing else set.
    pub fn new(kind: HolderKind, mount_id: u64, seen: Seen) -> Self {
        Self {
            kind,
            process: None,
            path: None,
            fd: None,
            mount_id,
            via: None,
            blamed: true,
            seen,
            note: None,
            opened_ns_before: None,
            open_time_unknown: None,
            event_fd: false,
            opened_ns_after: None,
            closed_ns_after: None,
            queued_events: None,
            queued_files: Vec::new(),
            mount_detached: false,
            by_caller: false,
        }
    }

    /// This holder of a detached mount named as it was before: its path, as the kernel names
    /// a file on a detached mount (from the mount's root: `/f`), under `mount_point`, the
    /// mount's old mount point, and marked [`Self::mount_detached`]. A path that is not
    /// absolute (not a file's) stays as it is.
    pub fn on_detached_mount(&mut self, mount_point: &[u8]) {
        if let Some(path) = self.path.as_mut().filter(|p| p.starts_with(b"/")) {
            *path = crate::paths::under_mount_point(mount_point, path);
            self.mount_detached = true;
        }
    }
}

/// A holder of `kind` on mount `mount_id` found by the kernel scan in process `pid` (`comm`,
/// in mount namespace `mntns`, no container), for tests.
#[cfg(test)]
pub(crate) fn sample_process_holder(
    kind: HolderKind,
    mount_id: u64,
    pid: u32,
    comm: &[u8],
    mntns: Option<u64>,
) -> Holder {
    let mut h = Holder::new(kind, mount_id, Seen::KernelScan);
    h.process = Some(HolderProcess {
        pid,
        comm: comm.to_vec(),
        mntns,
        container: None,
    });
    h
}
