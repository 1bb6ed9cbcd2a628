//! Typed events: what the decoder makes of ring-buffer records ([`UmountCall`]) and what the
//! sinks receive once process context is added ([`UmountAttempt`]).

use std::time::SystemTime;

use nix::errno::Errno;

/// A file on a tracked mount let go while an unmount was recently busy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// `CLOCK_BOOTTIME` ns of the release.
    pub ts_boot_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The process's comm.
    pub comm: Vec<u8>,
    /// The fd let go ([`probe_common::NO_FD`] for a working or root directory).
    pub fd: u32,
    /// How it was let go.
    pub how: ReleaseHow,
    /// The file's mount.
    pub mnt_id: u64,
    /// The mount namespace that mount is in, when the kernel said (not for a detached mount,
    /// or when the offsets are unknown).
    pub mount_ns: Option<u64>,
    /// The file's path within the mount (`/etc/passwd`), as far as the probe walked.
    pub path_within_mount: Vec<u8>,
    /// The probe could not walk the whole path (too deep or a name too long).
    pub truncated: bool,
    /// When the file was opened, if the open probe saw it (not for fds made by `dup`, Unix
    /// sockets, fanotify outside enhanced mode, or opened before busyprobe started).
    pub opened_ts_boot_ns: Option<u64>,
    /// The open probe saw the open, but it overlapped an unmount attempt's entry (so
    /// `opened_ts_boot_ns` is `None`).
    pub open_raced: bool,
    /// The file was a fanotify event fd, opened for one of the process's events (seen by
    /// the `file_open` hook in enhanced mode): its queued event held the mount before.
    pub opened_for_event: bool,
    /// For a fanotify group let go (`fd` is the group's): its unread events on tracked mounts
    /// (the path is the file of one of them); 0 for any other file.
    pub queued_events: u32,
    /// For a fanotify group let go: which of the first of those events' files the path is (0:
    /// the first; a group comes as one release per file named, with the same time and fd).
    pub queued_index: u32,
}

/// How a process let go of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseHow {
    /// `close`.
    Close,
    /// `dup2`/`dup3` over its fd.
    DupOver,
    /// `close_range`.
    CloseRange,
    /// `execve` with the fd marked close-on-exec (seen as the call entered).
    Exec,
    /// `chdir`/`fchdir` off the mount (a working directory).
    Chdir,
    /// `chroot` off the mount (a root directory).
    Chroot,
    /// `munmap` of a mapping of the file.
    Munmap,
    /// The process exited.
    Exit,
}

impl ReleaseHow {
    /// From the kernel's [`probe_common::release_how`] constant (unknown ones read as close).
    pub fn from_raw(how: u32) -> Self {
        use probe_common::release_how as raw;
        match how {
            raw::EXIT => Self::Exit,
            raw::DUP_OVER => Self::DupOver,
            raw::CLOSE_RANGE => Self::CloseRange,
            raw::EXEC => Self::Exec,
            raw::CHDIR => Self::Chdir,
            raw::CHROOT => Self::Chroot,
            raw::MUNMAP => Self::Munmap,
            _ => Self::Close,
        }
    }

    /// What the holder did, for a holder's note: "closed it", "exited", ...
    pub fn verb(self) -> &'static str {
        match self {
            Self::Close => "closed it",
            Self::DupOver => "replaced it with dup2/dup3",
            Self::CloseRange => "closed it with close_range",
            Self::Exec => "exec'd (close-on-exec)",
            Self::Chdir => "changed its working directory off the mount",
            Self::Chroot => "changed its root directory off the mount",
            Self::Munmap => "unmapped it (munmap)",
            Self::Exit => "exited",
        }
    }

    /// Whether the file is dropped only as the thread returns to user space (or finishes
    /// exiting), so that it may outlive the syscall's entry by a preemption: true for every
    /// way of letting go of a file, false for working and root directories (let go at once).
    pub fn drops_file_on_return(self) -> bool {
        !matches!(self, Self::Chdir | Self::Chroot)
    }
}

/// `umount2` flags and their names, in bit order.
pub const UMOUNT_FLAGS: [(u32, &str); 4] = [
    (libc::MNT_FORCE as u32, "MNT_FORCE"),
    (libc::MNT_DETACH as u32, "MNT_DETACH"),
    (libc::MNT_EXPIRE as u32, "MNT_EXPIRE"),
    (libc::UMOUNT_NOFOLLOW as u32, "UMOUNT_NOFOLLOW"),
];

/// A path read by a probe: its bytes as the kernel saw them and whether they are complete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelPath {
    /// The bytes (no NUL); a prefix when `truncated`.
    pub bytes: Vec<u8>,
    /// Longer than the probe's buffer: `bytes` is its start.
    pub truncated: bool,
    /// The probe could not read it (bad pointer): `bytes` is empty.
    pub unreadable: bool,
}

/// One finished `umount`/`umount2` call as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UmountCall {
    /// `CLOCK_BOOTTIME` ns at syscall entry.
    pub ts_boot_ns: u64,
    /// Process id (host PID namespace).
    pub pid: u32,
    /// Thread id (host PID namespace).
    pub tid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// The caller's `comm` bytes (up to 15, no NUL).
    pub comm: Vec<u8>,
    /// Inode of the caller's mount namespace; 0 when unknown.
    pub mntns: u64,
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
    /// The target as passed.
    pub target: KernelPath,
    /// Flags as passed.
    pub flags: u32,
    /// 0 or `-errno`.
    pub ret: i64,
    /// Entry to exit.
    pub duration_ns: u64,
    /// The exact mount the call was about, when the `sb_umount` security hook saw it
    /// (enhanced mode, and only for calls that got as far as the busy check).
    pub hooked: Option<ExactMount>,
}

/// A mount as the kernel named it to the `sb_umount` security hook: no path to resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExactMount {
    /// The mount id (`/proc/PID/mountinfo`'s first field).
    pub id: u64,
    /// Inode of the mount namespace it was in (the caller's); 0 when unknown.
    pub mntns: u64,
    /// Its filesystem's device (major, minor), when the hook could read it.
    pub dev: Option<(u32, u32)>,
    /// Whether it showed its filesystem from the root (not a bind mount of a directory).
    pub fs_root: bool,
}

impl UmountCall {
    /// Whether the call failed.
    pub fn failed(&self) -> bool {
        self.ret != 0
    }

    /// Whether the call failed with `errno` (`libc::EBUSY`, ...).
    pub fn failed_with(&self, errno: i32) -> bool {
        self.ret == -i64::from(errno)
    }

    /// The errno name (`EBUSY`, ...) of a failed call; `None` on success.
    pub fn errno_name(&self) -> Option<String> {
        errno_name(self.ret)
    }

    /// Names of the flags that are set; unknown bits as `0x...`.
    pub fn flag_names(&self) -> Vec<String> {
        flag_names(self.flags)
    }

    /// For a file opened at `opened_ts_boot_ns`: how long before the call it was opened (0 when
    /// it was opened during the call, before the kernel's busy check as far as the tracepoints
    /// can tell), or `None` when it was opened after the call returned and so cannot have
    /// held the mount when the kernel said busy.
    pub fn opened_before(&self, opened_ts_boot_ns: u64) -> Option<u64> {
        (opened_ts_boot_ns <= self.returned_ts_boot_ns())
            .then(|| self.ts_boot_ns.saturating_sub(opened_ts_boot_ns))
    }

    /// `CLOCK_BOOTTIME` ns when the call returned.
    pub fn returned_ts_boot_ns(&self) -> u64 {
        self.ts_boot_ns + self.duration_ns
    }
}

/// The name of `-ret` as an errno (`EBUSY`), `None` for `ret >= 0`.
pub fn errno_name(ret: i64) -> Option<String> {
    if ret >= 0 {
        return None;
    }
    let code = i32::try_from(-ret).unwrap_or(i32::MAX);
    Some(match Errno::from_raw(code) {
        Errno::UnknownErrno => format!("E{code}"),
        known => format!("{known:?}"),
    })
}

/// Names of the set flags in bit order; unknown bits become one `0x...` entry.
pub fn flag_names(flags: u32) -> Vec<String> {
    let mut names: Vec<String> = UMOUNT_FLAGS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| (*name).to_string())
        .collect();
    let known = UMOUNT_FLAGS.iter().fold(0, |acc, (bit, _)| acc | bit);
    if flags & !known != 0 {
        names.push(format!("{:#x}", flags & !known));
    }
    names
}

/// An unmount attempt as the sinks see it: the kernel's report plus what user space added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UmountAttempt {
    /// Sequence number in this run, from 1.
    pub id: u64,
    /// Wall-clock time of the syscall entry.
    pub ts: SystemTime,
    /// What the kernel reported.
    pub call: UmountCall,
    /// The caller's cgroup v2 path, when it could be read.
    pub cgroup: Option<Vec<u8>>,
    /// The caller's container (from its cgroup paths, v2 or v1), with its Kubernetes names
    /// when the runtime gave them.
    pub container: Option<crate::container::Container>,
    /// The target made absolute: itself when absolute, else joined to the caller's working
    /// directory (read while the caller was alive); `None` when that could not be read.
    pub target_abs: Option<Vec<u8>>,
    /// For an EBUSY: who holds the mount, or why that could not be found out.
    pub attribution: Option<Result<crate::model::Attribution, String>>,
    /// For a failure other than EBUSY: why it failed, when busyprobe could tell.
    pub explanation: Option<crate::model::Explanation>,
}

/// Something a user should know that is not an unmount attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// An unmount succeeded but the filesystem lives on.
    AliveAfterUnmount {
        /// The successful attempt.
        umount_id: u64,
        /// When it was noticed.
        ts: SystemTime,
        /// The unmount's target as passed.
        target: Vec<u8>,
        /// The mount that was unmounted.
        mount: crate::model::MountSummary,
        /// What keeps the filesystem alive.
        holders: Vec<crate::model::Holder>,
    },
    /// The recording could not write a line and counts the lines it loses from now on (told
    /// to the other outputs: the recording says [`Warning::RecordingLinesLost`] itself once
    /// it can write again).
    RecordingFailing {
        /// When the first line was lost.
        ts: SystemTime,
        /// Why: the errno name of the failed write (`ENOSPC`, `EIO`, `EDQUOT`, ...).
        cause: String,
    },
    /// The recording writes again after losing `lines` lines: the first line it writes.
    RecordingLinesLost {
        /// When it could write again.
        ts: SystemTime,
        /// Lines not written (events, warnings, stats).
        lines: u64,
        /// Why the first of them was lost (as in [`Warning::RecordingFailing`]).
        cause: String,
        /// When the first of them was lost.
        since: SystemTime,
    },
}

/// An EBUSY `umount2("/mnt")` by containerd that entered at `ts_boot_ns` and took
/// `duration_ns`, for tests of what is matched against a call's times.
#[cfg(test)]
pub(crate) fn sample_ebusy_call(ts_boot_ns: u64, duration_ns: u64) -> UmountCall {
    UmountCall {
        ts_boot_ns,
        pid: 1,
        tid: 1,
        uid: 0,
        gid: 0,
        comm: b"containerd".to_vec(),
        mntns: 0,
        cgroup_id: 0,
        target: KernelPath {
            bytes: b"/mnt".to_vec(),
            ..Default::default()
        },
        flags: 0,
        ret: -16,
        duration_ns,
        hooked: None,
    }
}

/// A realistic attempt for tests of the consumers of [`UmountAttempt`].
#[cfg(test)]
pub(crate) fn sample_attempt(
    target: &[u8],
    abs: Option<&[u8]>,
    ret: i64,
    flags: u32,
) -> UmountAttempt {
    UmountAttempt {
        id: 42,
        ts: std::time::UNIX_EPOCH + std::time::Duration::new(1_795_428_062, 123_456_789),
        call: UmountCall {
            ts_boot_ns: 5,
            pid: 1234,
            tid: 1235,
            uid: 0,
            gid: 0,
            comm: b"containerd".to_vec(),
            mntns: 4026532001,
            cgroup_id: 99,
            target: KernelPath {
                bytes: target.to_vec(),
                ..Default::default()
            },
            flags,
            ret,
            duration_ns: 5120,
            hooked: None,
        },
        cgroup: Some(b"/system.slice/containerd.service".to_vec()),
        container: None,
        target_abs: abs.map(<[u8]>::to_vec),
        attribution: None,
        explanation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_errnos() {
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(-16).as_deref(), Some("EBUSY"));
        assert_eq!(errno_name(-22).as_deref(), Some("EINVAL"));
        assert_eq!(errno_name(-2).as_deref(), Some("ENOENT"));
        assert_eq!(errno_name(-1).as_deref(), Some("EPERM"));
        assert_eq!(errno_name(-36).as_deref(), Some("ENAMETOOLONG"));
        assert_eq!(errno_name(-4000).as_deref(), Some("E4000"));
    }

    #[test]
    fn names_flags() {
        assert!(flag_names(0).is_empty());
        assert_eq!(flag_names(2), ["MNT_DETACH"]);
        assert_eq!(flag_names(1 | 8), ["MNT_FORCE", "UMOUNT_NOFOLLOW"]);
        assert_eq!(flag_names(4 | 0x40), ["MNT_EXPIRE", "0x40"]);
    }
}
