//! fanotify groups, shared by the holder scan and release tracking: whether a file is a
//! group, and a walk over its queue of unread events that counts the path events on the
//! mounts the caller wants (a [`MountFilter`]: the scan's targets, or the tracked mounts),
//! keeping the files of the first [`QUEUED_FILES`] of them. Each such event holds a reference
//! to its file's mount until it is read.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_loop;
use probe_common::QUEUED_FILES;

use crate::{
    kernel::{read, read_ptr},
    maps::QUEUED_PATHS,
    offsets::{self, *},
};

/// Longest fanotify queue walked (the default queue limit is 16384 events).
const MAX_QUEUE_WALK: u32 = 1 << 16;

/// Which mounts a queue walk counts events on.
pub trait MountFilter {
    /// The walk's entry in `QUEUED_PATHS` (one per kind of program that walks).
    const SLOT: u32;
    /// The mount id of the `struct path` at `path` when its mount is wanted.
    fn wants(path: u64) -> Option<u32>;
}

/// Whether `file` is a fanotify group (an anonymous inode named `[fanotify]`).
pub fn is_group(file: u64) -> bool {
    let name = offsets::get(&OFF_FILE_F_PATH)
        .zip(offsets::get(&OFF_PATH_DENTRY))
        .and_then(|(f_path, dentry)| read_ptr(file, f_path + dentry))
        .and_then(|dentry| read_ptr(dentry, offsets::get(&OFF_DENTRY_NAME)?))
        .and_then(read::<[u8; 11]>);
    matches!(name, Some(n) if &n == b"[fanotify]\0")
}

/// The unread path events of a group on wanted mounts.
#[repr(C)]
pub struct Queued {
    /// How many.
    pub count: u32,
    /// The mount of the last one counted.
    pub mnt_id: u32,
    /// The `struct path`s (their files) of the first [`QUEUED_FILES`] counted, in queue
    /// order; 0 in the slots beyond `count`.
    pub paths: [u64; QUEUED_FILES],
}

/// State of the walk over a group's notification list.
#[repr(C)]
struct QueueWalk {
    head: u64,
    next: u64,
    queued: Queued,
}

/// Counts the queued path events of the fanotify group behind `file` on mounts `F` wants;
/// `None` when there are none.
pub fn queued<F: MountFilter>(file: u64) -> Option<Queued> {
    let group = read_ptr(file, offsets::get(&OFF_FILE_PRIVATE_DATA)?)?;
    let q_len: u32 = read(group + offsets::get(&OFF_GROUP_Q_LEN)?)?;
    let head = group + offsets::get(&OFF_GROUP_NOTIFICATION_LIST)?;
    let kept = QUEUED_PATHS.get_ptr_mut(F::SLOT)?;
    // SAFETY: this CPU's entry of this kind of walk; emptied before the walk fills it.
    unsafe { *kept = [0; QUEUED_FILES] };
    let mut walk = QueueWalk {
        head,
        next: read_ptr(head, 0)?,
        queued: Queued {
            count: 0,
            mnt_id: 0,
            paths: [0; QUEUED_FILES],
        },
    };
    // SAFETY: the callback only reads kernel memory through probe reads; `walk` outlives the call.
    unsafe {
        bpf_loop(
            q_len.min(MAX_QUEUE_WALK),
            queue_step::<F> as *mut c_void,
            (&mut walk as *mut QueueWalk).cast(),
            0,
        );
        walk.queued.paths = *kept;
    }
    (walk.queued.count > 0).then_some(walk.queued)
}

/// One event of the queue: counted when it is a path event on a wanted mount, and its path
/// kept in the first free slot of `QUEUED_PATHS` (see there why not on the stack). The match
/// is stored whatever the count so far (a branch on the loop-carried count kept the verifier
/// from seeing the callback's states converge): a free slot is found by its contents.
#[inline(never)]
extern "C" fn queue_step<F: MountFilter>(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `QueueWalk` given to it.
    let walk = unsafe { &mut *(ctx as *mut QueueWalk) };
    let event = walk.next;
    if event == 0 || event == walk.head {
        return 1;
    }
    if let Some(path) = path_of_event(event) {
        if let Some(id) = F::wants(path) {
            walk.queued.count += 1;
            walk.queued.mnt_id = id;
            keep::<F>(path);
        }
    }
    match read_ptr(event, 0) {
        Some(next) => {
            walk.next = next;
            0
        }
        None => 1,
    }
}

/// Keeps `path` in the first free slot of this walk's `QUEUED_PATHS` entry, if any is free.
fn keep<F: MountFilter>(path: u64) {
    let Some(kept) = QUEUED_PATHS.get_ptr_mut(F::SLOT) else {
        return;
    };
    // SAFETY: this CPU's entry of this kind of walk, which only the walk writes.
    if let Some(slot) = unsafe { (*kept).iter_mut().find(|p| **p == 0) } {
        *slot = path;
    }
}

/// The `struct path` of a fanotify path event (`FANOTIFY_EVENT_TYPE_PATH` or `_PATH_PERM`).
fn path_of_event(event: u64) -> Option<u64> {
    let word: u32 = read(event + offsets::get(&OFF_FAN_TYPE_WORD)?)?;
    let width = offsets::get(&FAN_TYPE_WIDTH)?;
    let kind = (u64::from(word) >> offsets::get(&FAN_TYPE_SHIFT)?) & ((1 << width) - 1);
    if kind != offsets::get(&FAN_TYPE_PATH)? && kind != offsets::get(&FAN_TYPE_PATH_PERM)? {
        return None;
    }
    Some(event + offsets::get(&OFF_FAN_PATH_EVENT_PATH)?)
}
