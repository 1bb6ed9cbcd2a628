//! Event structs shared by busyprobe's eBPF programs (`probe-ebpf`) and its user-space decoder
//! (`probe-user`), and the names of the object's programs, maps and globals ([`names`]).
//!
//! Every record in the ring buffer starts with an [`EventHeader`]; the decoder reads the header
//! first, checks `size` against the bytes it got, then casts by [`EventKind`]. All structs are
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte.
#![no_std]

pub mod names;

/// Bytes kept of a path passed to a syscall: `PATH_MAX`. A longer path is flagged
/// [`PATH_TRUNCATED`], never silently cut.
pub const PATH_BUF_LEN: usize = 4096;

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// [`PathBuf::status`] bit: the path was longer than the buffer; `bytes` holds its start.
pub const PATH_TRUNCATED: u32 = 1;
/// [`PathBuf::status`] bit: the path could not be read from the caller's memory (for example
/// a bad pointer, the syscall then fails with EFAULT).
pub const PATH_UNREADABLE: u32 = 2;

/// Type tag of a ring-buffer record. Ids are stable; a retired id stays a hole.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An [`UmountEvent`]: one finished `umount`/`umount2` call.
    Umount = 1,
    /// A [`ReleaseEvent`]: a file on a tracked mount let go during the busy window.
    Release = 2,
}

impl EventKind {
    /// The kind for a raw tag, or `None` for a tag this build does not know.
    pub fn from_u32(tag: u32) -> Option<Self> {
        match tag {
            1 => Some(Self::Umount),
            2 => Some(Self::Release),
            _ => None,
        }
    }
}

/// The first bytes of every ring-buffer record.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Size in bytes of the whole record, header included.
    pub size: u32,
    /// `CLOCK_BOOTTIME` nanoseconds when the event started (the syscall's entry).
    pub ts_boot_ns: u64,
    /// Thread group id (the process id) in the initial PID namespace.
    pub pid: u32,
    /// Thread id in the initial PID namespace.
    pub tid: u32,
}

/// A path as bytes: `len` valid bytes of `bytes`, and `status` bits
/// ([`PATH_TRUNCATED`], [`PATH_UNREADABLE`]).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct PathBuf {
    /// Number of valid bytes in `bytes` (no terminating NUL).
    pub len: u32,
    /// [`PATH_TRUNCATED`] and [`PATH_UNREADABLE`] bits.
    pub status: u32,
    /// The path's bytes; only the first `len` are meaningful.
    pub bytes: [u8; PATH_BUF_LEN],
}

impl PathBuf {
    /// The valid bytes of the path (clamped to the buffer).
    pub fn as_bytes(&self) -> &[u8] {
        let len = (self.len as usize).min(PATH_BUF_LEN);
        &self.bytes[..len]
    }
}

/// One finished `umount`/`umount2` call, emitted at syscall exit. The record in the ring buffer
/// is cut after the target's valid bytes: `header.size` is [`UMOUNT_EVENT_FIXED`] plus
/// `target.len`, never more than the struct.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct UmountEvent {
    /// `kind` = [`EventKind::Umount`]; `ts_boot_ns` is the syscall entry.
    pub header: EventHeader,
    /// Real uid of the caller.
    pub uid: u32,
    /// Real gid of the caller.
    pub gid: u32,
    /// Flags as passed (`MNT_FORCE` 1, `MNT_DETACH` 2, `MNT_EXPIRE` 4, `UMOUNT_NOFOLLOW` 8).
    pub flags: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// The syscall's return value: 0 or `-errno`.
    pub ret: i64,
    /// Time between syscall entry and exit.
    pub duration_ns: u64,
    /// cgroup v2 id of the caller (the inode of its cgroup directory).
    pub cgroup_id: u64,
    /// Inode number of the caller's mount namespace; 0 when the kernel offsets were unknown.
    pub mntns: u64,
    /// The mount the security hook saw the call unmount (enhanced mode).
    pub hooked: HookedMount,
    /// The caller's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// The target path exactly as the caller passed it.
    pub target: PathBuf,
}

/// [`HookedMount::seen`] bit: the `sb_umount` security hook ran for the call.
pub const HOOK_SAW_MOUNT: u32 = 1;
/// [`HookedMount::seen`] bit: the mount's root is its filesystem's root (`mnt_root ==
/// s_root`: not a bind mount of a directory within it).
pub const HOOK_FS_ROOT: u32 = 2;

/// The exact mount an unmount attempt is about, as the BPF LSM program on `sb_umount` sees it
/// (the `struct vfsmount` being unmounted, before the busy check). The hook runs only once
/// the kernel has resolved the target to a mount root it may unmount: never for an attempt
/// that fails earlier (EINVAL, EPERM, ENOENT), nor outside the enhanced mode.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HookedMount {
    /// [`HOOK_SAW_MOUNT`] (and [`HOOK_FS_ROOT`]) when the hook ran; 0 when it did not (the
    /// other fields are then 0).
    pub seen: u32,
    /// The mount's id.
    pub mnt_id: u32,
    /// Inode number of the mount namespace the mount is in (the caller's); 0 when unknown.
    pub mnt_ns: u32,
    /// Its filesystem's device (`super_block.s_dev`, the kernel's encoding: major << 20 |
    /// minor); 0 when unknown. (Was padding, always zero.)
    pub dev: u32,
}

/// Bytes of an [`UmountEvent`] before the target's bytes: the shortest record (an empty or
/// unreadable target).
pub const UMOUNT_EVENT_FIXED: usize = core::mem::offset_of!(UmountEvent, target) + 8;

/// Path components a [`ReleaseEvent`] carries, leaf first.
pub const RELEASE_DEPTH: usize = 12;
/// Bytes kept of each component (NUL included).
pub const NAME_LEN: usize = 64;

/// [`ReleaseEvent::flags`] bit: the path had more components than [`RELEASE_DEPTH`].
pub const RELEASE_PATH_DEEPER: u32 = 1;
/// [`ReleaseEvent::flags`] bit: a component was longer than [`NAME_LEN`]` - 1`.
pub const RELEASE_NAME_CUT: u32 = 2;
/// [`ReleaseEvent::flags`]: the file let go was a fanotify event fd ([`OPENED_FOR_EVENT`] in
/// its open record).
pub const RELEASE_OPENED_FOR_EVENT: u32 = 4;

/// How a file was let go.
pub mod release_how {
    /// `close(fd)`.
    pub const CLOSE: u32 = 1;
    /// The process exited (its last thread: the fd table was not shared).
    pub const EXIT: u32 = 2;
    /// `dup2`/`dup3` over the fd.
    pub const DUP_OVER: u32 = 3;
    /// `close_range` over the fd.
    pub const CLOSE_RANGE: u32 = 4;
    /// `execve`/`execveat` with the fd marked close-on-exec (reported when the call enters: an
    /// exec that then fails keeps the fd).
    pub const EXEC: u32 = 5;
    /// `chdir`/`fchdir` off the mount (the working directory; `fd` is [`super::NO_FD`]).
    pub const CHDIR: u32 = 6;
    /// `chroot` off the mount (the root directory; `fd` is [`super::NO_FD`]).
    pub const CHROOT: u32 = 7;
    /// `munmap` of a mapping of the file (the first mapping in the range; `fd` is
    /// [`super::NO_FD`]).
    pub const MUNMAP: u32 = 8;
}

/// [`ReleaseEvent::fd`] of a working or root directory let go: no fd.
pub const NO_FD: u32 = u32::MAX;

/// [`ReleaseEvent::opened_ts_boot_ns`] of a file whose open was seen but overlapped an
/// unmount attempt's entry (its time cannot be placed on either side of that call).
pub const OPEN_RACED: u64 = u64::MAX;

/// A file on a tracked mount let go (closed) while some unmount was recently busy: the
/// evidence of a transient holder. Its path is given within the mount, leaf first.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct ReleaseEvent {
    /// `kind` = [`EventKind::Release`]; `ts_boot_ns` is the release.
    pub header: EventHeader,
    /// A [`release_how`] constant.
    pub how: u32,
    /// The fd let go.
    pub fd: u32,
    /// Mount id of the file.
    pub mnt_id: u32,
    /// Components filled in `names`.
    pub depth: u32,
    /// [`RELEASE_PATH_DEEPER`], [`RELEASE_NAME_CUT`], [`RELEASE_OPENED_FOR_EVENT`].
    pub flags: u32,
    /// Inode number of the mount namespace the file's mount is in (`mount.mnt_ns->ns.inum`):
    /// a mount id freed by an unmount is soon handed to a new mount, maybe in another
    /// namespace. 0 when the mount is detached or the offsets are unknown.
    pub mount_ns: u32,
    /// `CLOCK_BOOTTIME` ns when the file was opened, if the open was seen; else 0, or
    /// [`OPEN_RACED`] when the open overlapped an unmount attempt's entry.
    pub opened_ts_boot_ns: u64,
    /// The process's `comm`.
    pub comm: [u8; COMM_LEN],
    /// For a fanotify group let go (`fd` is the group's): how many of its unread events were
    /// on tracked mounts. A group is reported as one event per file of the first
    /// [`QUEUED_FILES`] of them, in queue order, with the same header, `fd` and count. 0 for any
    /// other file.
    pub queued_events: u32,
    /// For a fanotify group let go: which of those first events' files this event names (0:
    /// the first); 0 for any other file. (Was padding, always zero: events of older objects
    /// read as the first file.)
    pub queued_index: u32,
    /// Path components from the file up to (not including) the mount's root, NUL-terminated.
    pub names: [[u8; NAME_LEN]; RELEASE_DEPTH],
}

/// Key of the open-times map: which fd of which process.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FdKey {
    /// Thread group id.
    pub pid: u32,
    /// File descriptor.
    pub fd: u32,
}

/// Value of the open-times map: when a file on a tracked mount was opened, and on which mount
/// (an entry left by an earlier file under the same fd number is told apart by it).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenRecord {
    /// `CLOCK_BOOTTIME` ns of the open; 0: unknown (it raced an unmount).
    pub opened_ts_boot_ns: u64,
    /// Mount id of the file.
    pub mnt_id: u32,
    /// [`OPENED_FOR_EVENT`] or 0. (Was padding, always zero.)
    pub flags: u32,
}

/// [`OpenRecord::flags`]: the file was opened by fanotify for one of the opener's events (an
/// event fd, timed by the `file_open` hook in enhanced mode): the queued event held the
/// file's mount before the fd was opened.
pub const OPENED_FOR_EVENT: u32 = 1;

/// Opens on one mount kept per CPU, most recent first after sorting by time.
pub const RECENT_OPENS: usize = 8;

/// One open on a tracked mount, as the recent-opens ring keeps it.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentOpen {
    /// `CLOCK_BOOTTIME` ns of the open; 0: an empty slot or unknown.
    pub opened_ts_boot_ns: u64,
    /// Thread group id of the opener.
    pub pid: u32,
    /// The fd it got.
    pub fd: u32,
    /// The opener's `comm`.
    pub comm: [u8; COMM_LEN],
}

/// Rings in the per-CPU recent-opens array: mount id `m` uses ring `m % RECENT_OPEN_RINGS`.
pub const RECENT_OPEN_RINGS: u32 = 1024;

/// Value of the per-CPU recent-opens array: the last [`RECENT_OPENS`] opens of files on mount
/// `mnt_id` on one CPU, a ring (`next` is the slot written next). User space reads it on an
/// EBUSY: who touched the mount shortly before the call, holder or not.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentOpens {
    /// The slot written next, modulo [`RECENT_OPENS`].
    pub next: u32,
    /// The mount whose opens these are (another mount may take the ring over).
    pub mnt_id: u32,
    /// The ring.
    pub slots: [RecentOpen; RECENT_OPENS],
}

/// Why an event or part of one was lost; index into the per-CPU `DROPS` counter array.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// The ring buffer was full: a whole event was lost.
    RingBufFull = 0,
    /// The in-flight map (entry → exit) was full: the call was not traced.
    InflightMapFull = 1,
    /// A path was longer than its buffer (the event carries the flag too).
    PathTruncated = 2,
    /// A path could not be read from user memory.
    PathUnreadable = 3,
    /// A released file's path within its mount was cut (deeper than [`RELEASE_DEPTH`] or a
    /// name longer than [`NAME_LEN`]; the event carries the flags too).
    ReleasePathCut = 4,
}

impl DropCause {
    /// Every cause, in index order.
    pub const ALL: [DropCause; 5] = [
        DropCause::RingBufFull,
        DropCause::InflightMapFull,
        DropCause::PathTruncated,
        DropCause::PathUnreadable,
        DropCause::ReleasePathCut,
    ];
    /// Number of causes: the size of the `DROPS` array.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The cause's name in `stats` lines and the TUI.
    pub fn as_str(self) -> &'static str {
        match self {
            DropCause::RingBufFull => "ringbuf_full",
            DropCause::InflightMapFull => "inflight_map_full",
            DropCause::PathTruncated => "path_truncated",
            DropCause::PathUnreadable => "path_unreadable",
            DropCause::ReleasePathCut => "release_path_cut",
        }
    }
}

/// Value of an offset global that the loader could not resolve from BTF: programs skip what
/// needs it.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

/// What a holder-scan record reports ([`ScanRecord::kind`]).
pub mod scan_kind {
    /// An open file descriptor on a wanted mount.
    pub const FD: u32 = 1;
    /// A task's working directory.
    pub const CWD: u32 = 2;
    /// A task's root directory.
    pub const ROOT: u32 = 3;
    /// A task's executable.
    pub const EXE: u32 = 4;
    /// A file mapping (`addr`..`addr_end`).
    pub const MMAP: u32 = 5;
    /// A fanotify group fd with `count` queued events on a wanted mount.
    pub const FANOTIFY: u32 = 6;
    /// The file of one of the first [`super::QUEUED_FILES`] queued events of the group of
    /// the `FANOTIFY` record just before it: a [`super::ScanFileRecord`], longer than a
    /// [`super::ScanRecord`].
    pub const FANOTIFY_FILE: u32 = 7;
}

/// Files of a fanotify group's unread events named (the first ones in its queue, on the
/// mounts looked for); the rest are counted only.
pub const QUEUED_FILES: usize = 4;

/// One record written by the holder-scan iterators (`iter/task_file`, `iter/task`,
/// `iter/task_vma`) with `bpf_seq_write`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanRecord {
    /// A [`scan_kind`] constant.
    pub kind: u32,
    /// Thread group id (host PID namespace).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The fd for `FD` and `FANOTIFY`.
    pub fd: u32,
    /// The wanted mount held.
    pub mnt_id: u32,
    /// For `FANOTIFY`: queued events referencing a wanted mount.
    pub count: u32,
    /// For `MMAP`: the mapping's start.
    pub addr: u64,
    /// For `MMAP`: the mapping's end.
    pub addr_end: u64,
}

/// A [`scan_kind::FANOTIFY_FILE`] record: the file of one queued event of a fanotify group,
/// as its path within its mount (leaf-first names, as in a [`ReleaseEvent`]).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ScanFileRecord {
    /// `kind` [`scan_kind::FANOTIFY_FILE`], the listener's `pid`, `tid` and group `fd`,
    /// `mnt_id` the file's mount, `count` the event's index among those named (0: the first).
    pub record: ScanRecord,
    /// Components filled in `names`.
    pub depth: u32,
    /// [`RELEASE_PATH_DEEPER`], [`RELEASE_NAME_CUT`].
    pub flags: u32,
    /// Path components from the file up to (not including) the mount's root, NUL-terminated.
    pub names: [[u8; NAME_LEN]; RELEASE_DEPTH],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` structs of integers, no implicit padding.
    unsafe impl aya::Pod for super::ScanRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FdKey {}
    // SAFETY: as above (`_pad` makes the padding explicit).
    unsafe impl aya::Pod for super::OpenRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RecentOpens {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// The layout both sides rely on: a change here breaks recordings' decoder compatibility.
    #[test]
    fn layout_is_stable() {
        assert_eq!(size_of::<EventHeader>(), 24);
        assert_eq!(offset_of!(UmountEvent, uid), 24);
        assert_eq!(offset_of!(UmountEvent, ret), 40);
        assert_eq!(offset_of!(UmountEvent, mntns), 64);
        assert_eq!(offset_of!(UmountEvent, hooked), 72);
        assert_eq!(offset_of!(UmountEvent, comm), 88);
        assert_eq!(offset_of!(UmountEvent, target), 104);
        assert_eq!(size_of::<UmountEvent>(), 104 + 8 + PATH_BUF_LEN);
        assert_eq!(UMOUNT_EVENT_FIXED, 112);
        assert_eq!(size_of::<ScanRecord>(), 40);
        assert_eq!(offset_of!(ReleaseEvent, mount_ns), 44);
        assert_eq!(offset_of!(ReleaseEvent, opened_ts_boot_ns), 48);
        assert_eq!(offset_of!(ReleaseEvent, comm), 56);
        assert_eq!(offset_of!(ReleaseEvent, queued_events), 72);
        assert_eq!(size_of::<ReleaseEvent>(), 80 + NAME_LEN * RELEASE_DEPTH);
        assert_eq!(offset_of!(ReleaseEvent, queued_index), 76);
        assert_eq!(offset_of!(ScanFileRecord, names), 48);
        assert_eq!(size_of::<ScanFileRecord>(), 48 + NAME_LEN * RELEASE_DEPTH);
    }

    #[test]
    fn kind_tags_round_trip() {
        assert_eq!(
            EventKind::from_u32(EventKind::Umount as u32),
            Some(EventKind::Umount)
        );
        assert_eq!(EventKind::from_u32(0), None);
        assert_eq!(EventKind::from_u32(99), None);
    }

    #[test]
    fn drop_causes_are_indexed_in_order() {
        for (i, cause) in DropCause::ALL.iter().enumerate() {
            assert_eq!(*cause as usize, i);
        }
    }
}
