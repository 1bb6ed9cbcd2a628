//! From a file, an fd or a whole fd table to `ReleaseEvent`s: the fd lookups (`task->files->
//! fdt->fd[fd]`), the fd-table walks (`bpf_loop` over at most 4096 fds, for `close_range`,
//! close-on-exec and exit), a fanotify group's queue (`fanotify.rs`), and the bounded dentry
//! walk that gives a released file's path within its mount.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
    bpf_probe_read_kernel_str_bytes,
    generated::{bpf_get_current_task_btf, bpf_loop},
};
use probe_common::{
    release_how, DropCause, EventKind, FdKey, ReleaseEvent, NAME_LEN, OPENED_FOR_EVENT, OPEN_RACED,
    QUEUED_FILES, RELEASE_DEPTH, RELEASE_NAME_CUT, RELEASE_OPENED_FOR_EVENT, RELEASE_PATH_DEEPER,
};

use crate::{
    fanotify,
    kernel::{self, path_mount, read, read_ptr},
    maps::{count_drop, EVENTS, OPEN_TIMES},
    offsets::{self, *},
    tracked::{tracked, Tracked},
};

/// Reports the file at `fd` of the current task (`GROUPS`: see [`report_file`]).
pub fn report_fd<const GROUPS: bool>(now: u64, fd: u32, how: u32) -> Option<()> {
    // SAFETY: helper without preconditions; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    report_file::<GROUPS>(now, fd, file_of_fd(task, fd)?, how)
}

/// Most fds a walk over one fd table covers.
const MAX_WALK_FDS: u32 = 4096;

/// What a walk over the current task's fd table needs.
#[repr(C)]
struct FdWalk {
    fd_array: u64,
    /// The close-on-exec bitmap, when only the fds marked in it are let go; else 0.
    close_on_exec: u64,
    first: u32,
    how: u32,
    now: u64,
}

/// Reports the files on tracked mounts at fds `first..=last` of the current task (for
/// [`release_how::EXEC`], only those marked close-on-exec), at most [`MAX_WALK_FDS`].
pub fn walk_fds<const GROUPS: bool>(now: u64, first: u32, last: u32, how: u32) -> Option<()> {
    // SAFETY: helper without preconditions; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let files = read_ptr(task, offsets::get(&OFF_TASK_FILES)?)?;
    let fdt = read_ptr(files, offsets::get(&OFF_FILES_FDT)?)?;
    let max_fds: u32 = read(fdt + offsets::get(&OFF_FDT_MAX_FDS)?)?;
    let last = last.min(max_fds.checked_sub(1)?);
    if first > last {
        return None;
    }
    let close_on_exec = if how == release_how::EXEC {
        read_ptr(fdt, offsets::get(&OFF_FDT_CLOSE_ON_EXEC)?)?
    } else {
        0
    };
    let mut walk = FdWalk {
        fd_array: read_ptr(fdt, offsets::get(&OFF_FDT_FD)?)?,
        close_on_exec,
        first,
        how,
        now,
    };
    // SAFETY: the callback only reads kernel memory through probe reads; `walk` outlives it.
    unsafe {
        bpf_loop(
            (last - first + 1).min(MAX_WALK_FDS),
            walk_step::<GROUPS> as *mut c_void,
            (&mut walk as *mut FdWalk).cast(),
            0,
        );
    }
    Some(())
}

/// One fd of a walk.
#[inline(never)]
extern "C" fn walk_step<const GROUPS: bool>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `FdWalk` given to it.
    let walk = unsafe { &*(ctx as *const FdWalk) };
    let fd = u64::from(walk.first) + index;
    if walk.close_on_exec != 0 {
        let marked = read::<u64>(walk.close_on_exec + fd / 64 * 8)
            .is_some_and(|word| word & (1 << (fd % 64)) != 0);
        if !marked {
            return 0;
        }
    }
    if let Some(file) = read_ptr(walk.fd_array, fd * 8) {
        let _ = report_file::<GROUPS>(walk.now, fd as u32, file, walk.how);
    }
    0
}

/// Reports `file` (at `fd`) let go `how`, when it is on a tracked mount. With `GROUPS`, a
/// fanotify group with unread events on tracked mounts is reported too, one event per file of
/// the first [`QUEUED_FILES`](probe_common::QUEUED_FILES) of them: its queue pinned those
/// mounts, and goes with it (only `close` and exit follow groups: each program that does
/// carries the queue walk, and the others are loaded faster without it).
pub fn report_file<const GROUPS: bool>(now: u64, fd: u32, file: u64, how: u32) -> Option<()> {
    if GROUPS && fanotify::is_group(file) {
        let queued = fanotify::queued::<Tracked>(file)?;
        let mut group = GroupWalk {
            queued,
            now,
            fd,
            how,
        };
        // One loop body for every file kept: the verifier walks `report_path` once, not once
        // per file, inside the fd walk's loop.
        // SAFETY: the callback only reads kernel memory through probe reads; `group` outlives
        // the call.
        unsafe {
            bpf_loop(
                QUEUED_FILES as u32,
                group_step as *mut c_void,
                (&mut group as *mut GroupWalk).cast(),
                0,
            );
        }
        return Some(());
    }
    report_path(
        now,
        fd,
        file + offsets::get(&OFF_FILE_F_PATH)?,
        how,
        GroupFile::NONE,
    )
}

/// What reporting a fanotify group's files needs.
#[repr(C)]
struct GroupWalk {
    queued: fanotify::Queued,
    now: u64,
    fd: u32,
    how: u32,
}

/// One file kept of a group's queue: reported when its slot is filled.
#[inline(never)]
extern "C" fn group_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `GroupWalk` given to it.
    let group = unsafe { &*(ctx as *const GroupWalk) };
    let index = index as usize % QUEUED_FILES;
    let path = group.queued.paths[index];
    if path == 0 {
        return 1;
    }
    let file = GroupFile::new(group.queued.count, index as u32);
    let _ = report_path(group.now, group.fd, path, group.how, file);
    0
}

/// For a fanotify group's release, the group's count of unread events on tracked mounts and
/// which of their files the event names ([`ReleaseEvent::queued_events`],
/// [`ReleaseEvent::queued_index`]), in one word: BPF calls take at most five arguments.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct GroupFile(u64);

impl GroupFile {
    /// Not a group: any other file.
    pub const NONE: Self = Self(0);

    /// The file at `index` among a group's `count` unread events.
    fn new(count: u32, index: u32) -> Self {
        Self(u64::from(count) | u64::from(index) << 32)
    }
}

/// Reports the `struct path` at `path` (of `fd`, or [`NO_FD`](probe_common::NO_FD) for a cwd or root) let go
/// `how`, when it is on a tracked mount; `group` for a fanotify group's event file.
pub fn report_path(now: u64, fd: u32, path: u64, how: u32, group: GroupFile) -> Option<()> {
    let (vfsmount, mnt_id) = path_mount(path)?;
    if !tracked(vfsmount, mnt_id) {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<ReleaseEvent>(0) else {
        count_drop(DropCause::RingBufFull);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reserved record; `fill_release` writes every field before submit.
    let filled = unsafe {
        fill_release(ev, now, fd, how, path, vfsmount, mnt_id).map(|()| {
            (*ev).queued_events = group.0 as u32;
            (*ev).queued_index = (group.0 >> 32) as u32;
        })
    };
    if filled.is_none() {
        entry.discard(0);
        return None;
    }
    entry.submit(0);
    Some(())
}

/// Writes every field of the release event at `ev`: the path at `path` on `vfsmount`.
///
/// # Safety
/// `ev` must point at a writable `ReleaseEvent`.
#[inline(always)] // BPF calls take at most five arguments
pub unsafe fn fill_release(
    ev: *mut ReleaseEvent,
    now: u64,
    fd: u32,
    how: u32,
    path: u64,
    vfsmount: u64,
    mnt_id: u32,
) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the caller's promise.
    unsafe {
        (*ev).header.kind = EventKind::Release as u32;
        (*ev).header.size = core::mem::size_of::<ReleaseEvent>() as u32;
        (*ev).header.ts_boot_ns = now;
        (*ev).header.pid = (pid_tgid >> 32) as u32;
        (*ev).header.tid = pid_tgid as u32;
        (*ev).how = how;
        (*ev).fd = fd;
        (*ev).mnt_id = mnt_id;
        (*ev).mount_ns = kernel::vfsmount_ns(vfsmount);
        (*ev).queued_events = 0;
        (*ev).queued_index = 0;
        let key = FdKey {
            pid: (pid_tgid >> 32) as u32,
            fd,
        };
        // An entry left by an earlier file on another mount under the same fd number (this
        // one came from fanotify, a socket, dup...) is not this file's open.
        let record = OPEN_TIMES.get(key).filter(|r| r.mnt_id == mnt_id);
        (*ev).opened_ts_boot_ns = match record {
            Some(r) if r.opened_ts_boot_ns == 0 => OPEN_RACED,
            Some(r) => r.opened_ts_boot_ns,
            None => 0,
        };
        let for_event = record.is_some_and(|r| r.flags & OPENED_FOR_EVENT != 0);
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let (depth, cut) = path_names(path, vfsmount, &mut (*ev).names)?;
        (*ev).depth = depth;
        (*ev).flags = cut
            | if for_event {
                RELEASE_OPENED_FOR_EVENT
            } else {
                0
            };
        if cut != 0 {
            count_drop(DropCause::ReleasePathCut);
        }
    }
    Some(())
}

/// The names of the `struct path` at `path` on `vfsmount` within that mount, leaf first,
/// into `names`: how many and the truncation flags (see [`ReleaseEvent::names`]).
#[inline(always)]
pub fn path_names(
    path: u64,
    vfsmount: u64,
    names: &mut [[u8; NAME_LEN]; RELEASE_DEPTH],
) -> Option<(u32, u32)> {
    let dentry = read_ptr(path, offsets::get(&OFF_PATH_DENTRY)?)?;
    let root = read_ptr(vfsmount, offsets::get(&OFF_VFSMOUNT_ROOT)?)?;
    Some(walk_names(dentry, root, names))
}

/// The current task's `files` and `files->fdt`, read from the BTF-typed task pointer directly
/// (cheaper than `bpf_probe_read_kernel` for each step).
#[inline(always)]
fn current_files() -> Option<(*const u8, *const u8)> {
    let (files_off, fdt_off) = (
        offsets::get(&OFF_TASK_FILES)?,
        offsets::get(&OFF_FILES_FDT)?,
    );
    // SAFETY: the task pointer is trusted by the verifier; each load is checked against BTF.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let files = *(task.add(files_off as usize) as *const *const u8);
        if files.is_null() {
            return None;
        }
        let fdt = *(files.add(fdt_off as usize) as *const *const u8);
        (!fdt.is_null()).then_some((files, fdt))
    }
}

/// The current task's `files->fdt->fd[fd]` slot address, when `fd` is below `max_fds` (only
/// the array element needs the helper: the verifier refuses a variable offset into it).
#[inline(always)]
fn current_fd_slot(fdt: *const u8, fd: u32) -> Option<u64> {
    let (max_off, fd_off) = (offsets::get(&OFF_FDT_MAX_FDS)?, offsets::get(&OFF_FDT_FD)?);
    // SAFETY: `fdt` is a BTF-typed pointer from `current_files`; the loads are checked.
    unsafe {
        let max_fds = *(fdt.add(max_off as usize) as *const u32);
        if fd >= max_fds {
            return None;
        }
        let array = *(fdt.add(fd_off as usize) as *const *const u8) as u64;
        Some(array + u64::from(fd) * 8)
    }
}

/// The current task's `files->fdt->fd[fd]`.
pub fn current_file_of_fd(fd: u32) -> Option<u64> {
    let (_, fdt) = current_files()?;
    read_ptr(current_fd_slot(fdt, fd)?, 0)
}

/// The fd the current task has reserved for the file it is opening, from a security hook on
/// the open: `open*`, fanotify's event fds and io_uring all reserve the lowest free fd first
/// (which leaves `files->next_fd` one past it), open the file, then install it. `None` when
/// that fd is not reserved-but-empty (an open that reserves no fd, such as `execve`'s, or
/// another thread of the process that moved `next_fd` in between).
pub fn reserved_fd() -> Option<u32> {
    let (next_off, open_off) = (
        offsets::get(&OFF_FILES_NEXT_FD)?,
        offsets::get(&OFF_FDT_OPEN_FDS)?,
    );
    let (files, fdt) = current_files()?;
    // SAFETY: BTF-typed pointers from `current_files`; the loads are checked against BTF.
    let (next_fd, open_fds) = unsafe {
        (
            *(files.add(next_off as usize) as *const u32),
            *(fdt.add(open_off as usize) as *const *const u8) as u64,
        )
    };
    let fd = next_fd.checked_sub(1)?;
    let reserved = read::<u64>(open_fds + u64::from(fd / 64) * 8)? & (1 << (fd % 64)) != 0;
    let empty = read::<u64>(current_fd_slot(fdt, fd)?)? == 0;
    (reserved && empty).then_some(fd)
}

/// `task->files->fdt->fd[fd]`, when `fd` is open.
fn file_of_fd(task: u64, fd: u32) -> Option<u64> {
    let files = read_ptr(task, offsets::get(&OFF_TASK_FILES)?)?;
    let fdt = read_ptr(files, offsets::get(&OFF_FILES_FDT)?)?;
    let max_fds: u32 = read(fdt + offsets::get(&OFF_FDT_MAX_FDS)?)?;
    if fd >= max_fds {
        return None;
    }
    let array = read_ptr(fdt, offsets::get(&OFF_FDT_FD)?)?;
    read_ptr(array, u64::from(fd) * 8)
}

/// Copies the names from `dentry` up to (not including) `root` into `names`, leaf first;
/// returns how many and the truncation flags.
fn walk_names(
    mut dentry: u64,
    root: u64,
    names: &mut [[u8; NAME_LEN]; RELEASE_DEPTH],
) -> (u32, u32) {
    let (Some(name_off), Some(parent_off)) = (
        offsets::get(&OFF_DENTRY_NAME),
        offsets::get(&OFF_DENTRY_PARENT),
    ) else {
        return (0, RELEASE_PATH_DEEPER);
    };
    let mut flags = 0;
    for (depth, slot) in names.iter_mut().enumerate() {
        if dentry == root || dentry == 0 {
            return (depth as u32, flags);
        }
        let Some(name) = read_ptr(dentry, name_off) else {
            return (depth as u32, flags);
        };
        // SAFETY: a bounded copy of a kernel string into the event.
        match unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, slot) } {
            Ok(bytes) if bytes.len() >= NAME_LEN - 1 => flags |= RELEASE_NAME_CUT,
            Ok(_) => {}
            Err(_) => slot[0] = 0,
        }
        let parent = read_ptr(dentry, parent_off).unwrap_or(0);
        if parent == dentry {
            return (depth as u32 + 1, flags);
        }
        dentry = parent;
    }
    if dentry != root {
        flags |= RELEASE_PATH_DEEPER;
    }
    (RELEASE_DEPTH as u32, flags)
}
