//! `syscalls:sys_enter_umount` / `sys_exit_umount`: every unmount attempt with its caller,
//! target, flags, result and duration.

use core::{mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use aya_log_ebpf::debug;
use probe_common::{
    assert_symbol_name, names::programs, DropCause, EventKind, HookedMount, PathBuf, UmountEvent,
    HOOK_FS_ROOT, HOOK_SAW_MOUNT, PATH_BUF_LEN, PATH_TRUNCATED, PATH_UNREADABLE,
    UMOUNT_EVENT_FIXED,
};

use crate::{
    kernel::{self, read_ptr, vfsmount_fs, vfsmount_id, vfsmount_ns},
    maps::{count_drop, EVENTS, UMOUNT_INFLIGHT, UMOUNT_SCRATCH},
    offsets::{self, OFF_NSPROXY_MNT_NS, OFF_TASK_NSPROXY},
};

/// `sys_enter_umount` format: `char * name` at 16, `int flags` at 24.
const ENTER_NAME: usize = 16;
const ENTER_FLAGS: usize = 24;

/// What the entry probe keeps for the exit probe (and the `sb_umount` hook adds to).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct UmountStart {
    ts_boot_ns: u64,
    name: u64,
    flags: u32,
    _pad: u32,
    hooked: HookedMount,
}

#[tracepoint(category = "syscalls", name = "sys_enter_umount")]
pub fn sys_enter_umount(ctx: TracePointContext) -> u32 {
    on_umount_entry(
        kernel::tracepoint_field(&ctx, ENTER_NAME),
        kernel::tracepoint_field::<u64>(&ctx, ENTER_FLAGS) as u32,
    );
    0
}
assert_symbol_name!(sys_enter_umount, programs::SYS_ENTER_UMOUNT);

/// `umount2(name, flags)` entering (the body of [`sys_enter_umount`] and its fentry twin).
pub fn on_umount_entry(name: u64, flags: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let start = UmountStart {
        // SAFETY: helper without preconditions.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        name,
        flags,
        _pad: 0,
        hooked: HookedMount::default(),
    };
    crate::open_times::note_umount_entry();
    crate::window::open_attempt_window(start.ts_boot_ns);
    if UMOUNT_INFLIGHT.insert(tid, start, 0).is_err() {
        count_drop(DropCause::InflightMapFull);
    }
}

#[tracepoint(category = "syscalls", name = "sys_exit_umount")]
pub fn sys_exit_umount(ctx: TracePointContext) -> u32 {
    let _ = on_umount_exit(&ctx, kernel::tracepoint_field(&ctx, kernel::SYS_EXIT_RET));
    0
}
assert_symbol_name!(sys_exit_umount, programs::SYS_EXIT_UMOUNT);

/// The `sb_umount` security hook of the current thread's unmount attempt: notes the exact
/// mount (`vfsmount`) it is about, for the exit to send.
pub fn on_sb_umount(vfsmount: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(start) = UMOUNT_INFLIGHT.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: this thread's own entry: only its entry, hook and exit touch it, one at a time.
    unsafe {
        let (dev, fs_root) = vfsmount_fs(vfsmount).unwrap_or((0, false));
        (*start).hooked = HookedMount {
            seen: HOOK_SAW_MOUNT | if fs_root { HOOK_FS_ROOT } else { 0 },
            mnt_id: vfsmount_id(vfsmount).unwrap_or(0),
            mnt_ns: vfsmount_ns(vfsmount),
            dev,
        };
    }
}

/// `umount2` returning `ret`: sends the attempt (the body of [`sys_exit_umount`] and its fexit
/// twin; `ctx` is for the log).
pub fn on_umount_exit<C: EbpfContext>(ctx: &C, ret: i64) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let start = match unsafe { UMOUNT_INFLIGHT.get(tid) } {
        Some(start) => *start,
        None => {
            debug!(ctx, "umount exit of tid {} without a traced entry", tid);
            return Ok(());
        }
    };
    let _ = UMOUNT_INFLIGHT.remove(tid);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };

    if ret == -16 {
        crate::window::open_busy_window(now);
    }
    // The record is built in a per-CPU slot and only its used bytes are sent: the target is
    // usually tens of bytes of its 4096, and a fixed-size record would take 4.2 KiB of the
    // ring buffer each (1,000 of them fill the default 4 MiB).
    let Some(event) = UMOUNT_SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `event` points at this CPU's slot, which no other program touches while this
    // one runs; every field sent is written first.
    let size = unsafe {
        let header = addr_of_mut!((*event).header);
        (*header).kind = EventKind::Umount as u32;
        (*header).ts_boot_ns = start.ts_boot_ns;
        (*header).pid = (pid_tgid >> 32) as u32;
        (*header).tid = tid;
        (*event).uid = uid_gid as u32;
        (*event).gid = (uid_gid >> 32) as u32;
        (*event).flags = start.flags;
        (*event)._pad = 0;
        (*event).ret = ret;
        (*event).duration_ns = now.saturating_sub(start.ts_boot_ns);
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).mntns = current_mntns();
        (*event).hooked = start.hooked;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let len = read_user_path(start.name as *const u8, addr_of_mut!((*event).target));
        let size = UMOUNT_EVENT_FIXED + len.min(PATH_BUF_LEN);
        (*header).size = size as u32;
        size
    };
    // Bounded for the verifier: at most the whole record.
    let size = size.min(size_of::<UmountEvent>());
    // SAFETY: `size` bytes of the slot, all written above.
    let bytes = unsafe { core::slice::from_raw_parts(event.cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_drop(DropCause::RingBufFull);
    }
    Ok(())
}

/// Reads a NUL-terminated user-space path into `out`, flagging truncation and faults; returns
/// the bytes read (0 when unreadable).
///
/// Read at syscall exit: the kernel has already copied the name, so its page is resident.
///
/// # Safety
/// `out` must point at a writable [`PathBuf`].
unsafe fn read_user_path(src: *const u8, out: *mut PathBuf) -> usize {
    let bytes = unsafe { &mut (*out).bytes };
    match unsafe { bpf_probe_read_user_str_bytes(src, bytes) } {
        Ok(read) => {
            let len = read.len();
            let mut status = 0;
            // A full buffer may be a cut: look at the byte after the last one kept.
            if len >= PATH_BUF_LEN - 1 {
                let next = unsafe { bpf_probe_read_user::<u8>(src.wrapping_add(PATH_BUF_LEN - 1)) };
                if matches!(next, Ok(b) if b != 0) {
                    status = PATH_TRUNCATED;
                    count_drop(DropCause::PathTruncated);
                }
            }
            unsafe {
                (*out).len = len as u32;
                (*out).status = status;
            }
            len
        }
        Err(_) => {
            count_drop(DropCause::PathUnreadable);
            unsafe {
                (*out).len = 0;
                (*out).status = PATH_UNREADABLE;
            }
            0
        }
    }
}

/// Inode number of the current task's mount namespace, or 0 when the offsets are unknown or
/// a read fails.
fn current_mntns() -> u64 {
    // SAFETY: helper without preconditions; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    mntns_of(task).unwrap_or(0)
}

fn mntns_of(task: u64) -> Option<u64> {
    let nsproxy = read_ptr(task, offsets::get(&OFF_TASK_NSPROXY)?)?;
    let mnt_ns = read_ptr(nsproxy, offsets::get(&OFF_NSPROXY_MNT_NS)?)?;
    kernel::namespace_inum(mnt_ns).map(u64::from)
}
