//! Holder scan from the kernel's side: BPF iterators walk every task's open files
//! (`iter/task_file`), working directory, root and executable (`iter/task`) and file
//! mappings (`iter/task_vma`), compare the exact `struct mount` with the wanted mount ids in
//! `SCAN_MOUNTS`, and write one [`ScanRecord`] per hit. A fanotify group fd is followed into
//! its queue of unread events to count those that pin a wanted mount, and a
//! [`ScanFileRecord`](probe_common::ScanFileRecord) follows its record for each of the first
//! files they refer to.

use core::ffi::c_void;

use aya_ebpf::{bindings::seq_file, helpers::generated::bpf_seq_write};
use probe_common::{assert_symbol_name, names::programs, scan_kind, ScanRecord};

use crate::{
    fanotify::{self, MountFilter},
    kernel::{file_mount_id, path_mount, path_mount_id, read, read_ptr},
    maps::{bump, SCAN_COUNTS, SCAN_FILE_SCRATCH, SCAN_MOUNTS},
    offsets::{self, *},
    walks::path_names,
};

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

/// The scan's filter for fanotify queues: the wanted mounts.
struct Wanted;

impl MountFilter for Wanted {
    const SLOT: u32 = 0;

    fn wants(path: u64) -> Option<u32> {
        path_mount_id(path).filter(|&id| wanted(id))
    }
}

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

/// Writes `rec` (a plain record, on the stack or in a map) to the iterator's output.
#[inline(always)]
fn emit<T>(seq: *mut seq_file, rec: &T) {
    // SAFETY: `seq` comes from the iterator context; the record is plain data of that size.
    unsafe {
        bpf_seq_write(
            seq,
            (rec as *const T).cast(),
            core::mem::size_of::<T>() as u32,
        );
    }
}

/// Writes a [`ScanFileRecord`](probe_common::ScanFileRecord) for each file kept of a group's
/// queue, after its `FANOTIFY` record `group`: the file's names within its mount.
fn emit_queued_files(seq: *mut seq_file, group: &ScanRecord, paths: &[u64]) {
    let Some(file) = SCAN_FILE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, written and emitted before the program returns.
    let file = unsafe { &mut *file };
    for (index, &path) in paths.iter().enumerate() {
        let Some((vfsmount, mnt_id)) = path_mount(path).filter(|_| path != 0) else {
            continue;
        };
        let Some((depth, flags)) = path_names(path, vfsmount, &mut file.names) else {
            continue;
        };
        file.record = ScanRecord {
            kind: scan_kind::FANOTIFY_FILE,
            mnt_id,
            count: index as u32,
            ..*group
        };
        file.depth = depth;
        file.flags = flags;
        emit(seq, file);
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
        } else if role == MOUNT_ANON && fanotify::is_group(file) {
            if let Some(queued) = fanotify::queued::<Wanted>(file) {
                let mut rec = record(scan_kind::FANOTIFY, task, queued.mnt_id);
                rec.fd = fd;
                rec.count = queued.count;
                emit(seq, &rec);
                emit_queued_files(seq, &rec, &queued.paths);
            }
        }
    }
    0
}
assert_symbol_name!(scan_task_file, programs::SCAN_TASK_FILE);

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
assert_symbol_name!(scan_task, programs::SCAN_TASK);

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
assert_symbol_name!(scan_task_vma, programs::SCAN_TASK_VMA);
