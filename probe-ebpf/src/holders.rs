//! Holder scan from the kernel's side: BPF iterators walk every task's open files
//! (`iter/task_file`), working directory, root and executable (`iter/task`) and file
//! mappings (`iter/task_vma`), compare the exact `struct mount` with the wanted mount ids in
//! `SCAN_MOUNTS`, and write one [`ScanRecord`] per hit. A fanotify group fd is followed into
//! its queue of unread events to count those that pin a wanted mount.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::seq_file,
    helpers::generated::{bpf_loop, bpf_seq_write},
};
use probe_common::{scan_kind, ScanRecord};

use crate::{
    kernel::{file_mount_id, path_mount_id, read, read_ptr},
    maps::{bump, SCAN_COUNTS, SCAN_MOUNTS},
    offsets::{self, *},
};

/// Longest fanotify queue walked (the default queue limit is 16384 events).
const MAX_QUEUE_WALK: u32 = 1 << 16;

/// `struct bpf_iter_meta`.
#[repr(C)]
struct IterMeta {
    seq: *mut seq_file,
}

/// `struct bpf_iter__task_file`.
#[repr(C)]
struct IterTaskFile {
    meta: *const IterMeta,
    task: *const u8,
    fd: u32,
    _pad: u32,
    file: *const u8,
}

/// `struct bpf_iter__task`.
#[repr(C)]
struct IterTask {
    meta: *const IterMeta,
    task: *const u8,
}

/// `struct bpf_iter__task_vma`.
#[repr(C)]
struct IterTaskVma {
    meta: *const IterMeta,
    task: *const u8,
    vma: *const u8,
}

/// `SCAN_MOUNTS` value of a mount whose holders are wanted.
const MOUNT_WANTED: u32 = 1;
/// `SCAN_MOUNTS` value of the anonymous-inode mount, where fanotify groups live.
const MOUNT_ANON: u32 = 2;

/// What `SCAN_MOUNTS` says of a mount (0: nothing).
fn role(mnt_id: u32) -> u32 {
    // SAFETY: the value is copied out at once.
    unsafe { SCAN_MOUNTS.get(mnt_id).copied().unwrap_or(0) }
}

fn wanted(mnt_id: u32) -> bool {
    role(mnt_id) == MOUNT_WANTED
}

/// A record for `task` with everything else zero.
fn record(kind: u32, task: u64, mnt_id: u32) -> ScanRecord {
    ScanRecord {
        kind,
        pid: read::<u32>(task + offsets::get(&OFF_TASK_TGID).unwrap_or(0)).unwrap_or(0),
        tid: read::<u32>(task + offsets::get(&OFF_TASK_PID).unwrap_or(0)).unwrap_or(0),
        mnt_id,
        ..ScanRecord::default()
    }
}

fn emit(seq: *mut seq_file, rec: &ScanRecord) {
    // SAFETY: `seq` comes from the iterator context; the record is a plain stack value.
    unsafe {
        bpf_seq_write(
            seq,
            (rec as *const ScanRecord).cast(),
            core::mem::size_of::<ScanRecord>() as u32,
        );
    }
}

/// Every open file of every task (threads sharing a file table are visited once).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn scan_task_file(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const IterTaskFile;
    // SAFETY: the kernel passes a valid `bpf_iter__task_file`; task and file are checked.
    unsafe {
        let (task, file) = ((*ctx).task, (*ctx).file);
        if task.is_null() || file.is_null() {
            return 0;
        }
        bump(&SCAN_COUNTS, 0);
        let seq = (*(*ctx).meta).seq;
        let (task, file, fd) = (task as u64, file as u64, (*ctx).fd);
        let Some(id) = file_mount_id(file) else {
            return 0;
        };
        let role = role(id);
        if role == MOUNT_WANTED {
            let mut rec = record(scan_kind::FD, task, id);
            rec.fd = fd;
            emit(seq, &rec);
        } else if role == MOUNT_ANON && is_fanotify(file) {
            if let Some((count, id)) = queued_on_wanted(file) {
                let mut rec = record(scan_kind::FANOTIFY, task, id);
                rec.fd = fd;
                rec.count = count;
                emit(seq, &rec);
            }
        }
    }
    0
}

/// Every task's cwd, root and executable.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn scan_task(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const IterTask;
    // SAFETY: the kernel passes a valid `bpf_iter__task`; task is checked.
    unsafe {
        let task = (*ctx).task;
        if task.is_null() {
            return 0;
        }
        bump(&SCAN_COUNTS, 1);
        let seq = (*(*ctx).meta).seq;
        let task = task as u64;
        if let Some(fs) = offsets::get(&OFF_TASK_FS).and_then(|o| read_ptr(task, o)) {
            for (kind, global) in [
                (scan_kind::CWD, &OFF_FS_PWD),
                (scan_kind::ROOT, &OFF_FS_ROOT),
            ] {
                let id = offsets::get(global).and_then(|o| path_mount_id(fs + o));
                if let Some(id) = id.filter(|&id| wanted(id)) {
                    emit(seq, &record(kind, task, id));
                }
            }
        }
        let exe = offsets::get(&OFF_TASK_MM)
            .and_then(|o| read_ptr(task, o))
            .and_then(|mm| read_ptr(mm, offsets::get(&OFF_MM_EXE_FILE)?));
        if let Some(id) = exe.and_then(file_mount_id).filter(|&id| wanted(id)) {
            emit(seq, &record(scan_kind::EXE, task, id));
        }
    }
    0
}

/// Every task's file mappings.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_vma")]
pub fn scan_task_vma(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const IterTaskVma;
    // SAFETY: the kernel passes a valid `bpf_iter__task_vma`; task and vma are checked.
    unsafe {
        let (task, vma) = ((*ctx).task, (*ctx).vma);
        if task.is_null() || vma.is_null() {
            return 0;
        }
        let seq = (*(*ctx).meta).seq;
        let (task, vma) = (task as u64, vma as u64);
        let file = offsets::get(&OFF_VMA_FILE).and_then(|o| read_ptr(vma, o));
        if let Some(id) = file.and_then(file_mount_id).filter(|&id| wanted(id)) {
            let mut rec = record(scan_kind::MMAP, task, id);
            rec.addr = offsets::get(&OFF_VMA_START)
                .and_then(|o| read(vma + o))
                .unwrap_or(0);
            rec.addr_end = offsets::get(&OFF_VMA_END)
                .and_then(|o| read(vma + o))
                .unwrap_or(0);
            emit(seq, &rec);
        }
    }
    0
}

/// Whether `file` is a fanotify group (an anonymous inode named `[fanotify]`).
fn is_fanotify(file: u64) -> bool {
    let name = offsets::get(&OFF_FILE_F_PATH)
        .zip(offsets::get(&OFF_PATH_DENTRY))
        .and_then(|(f_path, dentry)| read_ptr(file, f_path + dentry))
        .and_then(|dentry| read_ptr(dentry, offsets::get(&OFF_DENTRY_NAME)?))
        .and_then(read::<[u8; 11]>);
    matches!(name, Some(n) if &n == b"[fanotify]\0")
}

/// State of the walk over a group's notification list.
#[repr(C)]
struct QueueWalk {
    head: u64,
    next: u64,
    count: u32,
    mnt_id: u32,
}

/// Counts queued path events of the fanotify group behind `file` on wanted mounts; returns
/// `(count, one of the mount ids)` when there are any.
fn queued_on_wanted(file: u64) -> Option<(u32, u32)> {
    let group = read_ptr(file, offsets::get(&OFF_FILE_PRIVATE_DATA)?)?;
    let q_len: u32 = read(group + offsets::get(&OFF_GROUP_Q_LEN)?)?;
    let head = group + offsets::get(&OFF_GROUP_NOTIFICATION_LIST)?;
    let mut walk = QueueWalk {
        head,
        next: read_ptr(head, 0)?,
        count: 0,
        mnt_id: 0,
    };
    // SAFETY: the callback only reads kernel memory through probe reads; `walk` outlives the call.
    unsafe {
        bpf_loop(
            q_len.min(MAX_QUEUE_WALK),
            queue_step as *mut c_void,
            (&mut walk as *mut QueueWalk).cast(),
            0,
        );
    }
    (walk.count > 0).then_some((walk.count, walk.mnt_id))
}

/// One event of the queue: counts it when it is a path event on a wanted mount.
#[inline(never)]
extern "C" fn queue_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `QueueWalk` given to it.
    let walk = unsafe { &mut *(ctx as *mut QueueWalk) };
    let event = walk.next;
    if event == 0 || event == walk.head {
        return 1;
    }
    if let Some(id) = path_event_mount(event).filter(|&id| wanted(id)) {
        walk.count += 1;
        walk.mnt_id = id;
    }
    match read_ptr(event, 0) {
        Some(next) => {
            walk.next = next;
            0
        }
        None => 1,
    }
}

/// The mount id of a fanotify path event (`FANOTIFY_EVENT_TYPE_PATH` or `_PATH_PERM`).
fn path_event_mount(event: u64) -> Option<u32> {
    let word: u32 = read(event + offsets::get(&OFF_FAN_TYPE_WORD)?)?;
    let width = offsets::get(&FAN_TYPE_WIDTH)?;
    let kind = (u64::from(word) >> offsets::get(&FAN_TYPE_SHIFT)?) & ((1 << width) - 1);
    if kind != offsets::get(&FAN_TYPE_PATH)? && kind != offsets::get(&FAN_TYPE_PATH_PERM)? {
        return None;
    }
    path_mount_id(event + offsets::get(&OFF_FAN_PATH_EVENT_PATH)?)
}
