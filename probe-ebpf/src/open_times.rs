//! Open times: the entries of `open`/`openat`/`openat2`/`creat` note the unmount epoch
//! (`UMOUNT_EPOCH`, bumped by every umount entry) per CPU in `OPEN_ENTRY`; their exits keep
//! `(pid, fd) → open time` for files on tracked mounts in the LRU map `OPEN_TIMES` (updated in
//! place when an fd number comes back), the time unknown when an unmount entered in between,
//! and each tracked mount's last opens per CPU in `RECENT_OPENS_BY_MOUNT`. User space reads
//! both on an EBUSY: fds opened after the call are not its holders, and the recent opens name
//! the recent accessors. With `--open-times contended` only the contended mounts' opens are
//! timed (`CONTENDED_MOUNTS`), and user space attaches these programs only while there is one.
//! In enhanced mode the `file_open` security hook (`on_file_open`) times every open but
//! `O_PATH` ones exactly and marks fanotify's event fds (`OPENED_FOR_EVENT`); the syscall
//! exits then time `O_PATH` files only (`FILE_OPEN_HOOKED`).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, generated::bpf_get_current_task_btf,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    assert_symbol_name, names::programs, DropCause, FdKey, OpenRecord, OPENED_FOR_EVENT,
    RECENT_OPENS, RECENT_OPEN_RINGS,
};

use crate::{
    event_fds,
    kernel::{file_mount, read, tracepoint_field, SYS_EXIT_RET},
    maps::{
        count_drop, CONTENDED_MOUNTS, FILE_OPEN_HOOKED, OPEN_ENTRY, OPEN_TIMES,
        OPEN_TIMES_WHERE_CONTENDED, RECENT_OPENS_BY_MOUNT, UMOUNT_EPOCH,
    },
    offsets::{self, OFF_FILE_F_FLAGS, OFF_FILE_F_MODE, OFF_TASK_COMM},
    tracked::tracked,
    walks::{current_file_of_fd, reserved_fd},
};

/// The thread that last entered an open syscall on a CPU, and the `UMOUNT_EPOCH` then.
#[repr(C)]
pub struct OpenEntry {
    tid: u32,
    umount_epoch: u32,
}

/// Notes that an unmount attempt entered (from the umount entry probe).
pub fn note_umount_entry() {
    if let Some(epoch) = UMOUNT_EPOCH.get_ptr_mut(0) {
        // SAFETY: a single u32 slot; a racing increment still changes it.
        unsafe { *epoch = (*epoch).wrapping_add(1) };
    }
}

fn umount_epoch() -> u32 {
    UMOUNT_EPOCH.get(0).copied().unwrap_or(0)
}

/// Stamps the entry of `open`, `openat`, `openat2` and `creat` with the unmount epoch: an open
/// whose exit probe ran after an unmount's entry may have installed its fd before that
/// unmount's busy check (the opener was preempted in between), so its exit time would wrongly
/// say "opened after the call".
#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_open(_ctx: TracePointContext) -> u32 {
    on_open_entry();
    0
}
assert_symbol_name!(sys_enter_open, programs::SYS_ENTER_OPEN);

/// The body of [`sys_enter_open`] (and of its fentry twins).
pub fn on_open_entry() {
    if let Some(entry) = OPEN_ENTRY.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; helper without preconditions.
        unsafe {
            (*entry).tid = bpf_get_current_pid_tgid() as u32;
            (*entry).umount_epoch = umount_epoch();
        }
    }
}

/// When the open the current thread is leaving installed its fd, as far as it matters: now,
/// when no unmount attempt entered since the open entered on this CPU; else 0 (unknown: the
/// open may have raced that unmount's busy check, or the call slept and moved CPU).
fn open_time(tid: u32) -> u64 {
    let raced = match OPEN_ENTRY.get(0) {
        Some(entry) => entry.tid != tid || entry.umount_epoch != umount_epoch(),
        None => true,
    };
    if raced {
        return 0;
    }
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Records when a file on a tracked mount was opened (attached to the exit of `open`,
/// `openat`, `openat2` and `creat`): see [`open_time`].
#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    on_open_exit(tracepoint_field(&ctx, SYS_EXIT_RET));
    0
}
assert_symbol_name!(sys_exit_open, programs::SYS_EXIT_OPEN);

/// The body of [`sys_exit_open`]: `ret` is the open's result.
pub fn on_open_exit(ret: i64) {
    if ret >= 0 {
        let _ = record_open(ret as u32);
    }
}

fn record_open(fd: u32) -> Option<()> {
    let file = current_file_of_fd(fd)?;
    if FILE_OPEN_HOOKED.load() == 1 && !is_o_path(file) {
        return None;
    }
    let (vfsmount, mnt_id) = file_mount(file)?;
    if !timed(vfsmount, mnt_id) {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    time_open(pid_tgid, fd, mnt_id, open_time(pid_tgid as u32), 0)
}

/// `f_mode` bit of an `O_PATH` file (the same since 2.6.39).
const FMODE_PATH: u32 = 0x4000;

/// Whether `file` was opened with `O_PATH`: the one open the `file_open` hook never sees.
fn is_o_path(file: u64) -> bool {
    offsets::get(&OFF_FILE_F_MODE)
        .and_then(|off| read::<u32>(file + off))
        .is_some_and(|mode| mode & FMODE_PATH != 0)
}

/// `f_mode` bit 29: set on a file the kernel opens on behalf of another (overlayfs's real
/// files, cachefiles), inside the open of the file the process asked for and under its
/// reserved fd (`FMODE_NOACCOUNT` in 6.1 and again in recent kernels; for a while
/// `FMODE_FAKE_PATH`/`FMODE_BACKING`, set on the same files).
const FMODE_NOACCOUNT: u32 = 1 << 29;

/// `f_flags` bits above every open flag a process can pass (`O_*` use bits 0-22 on x86-64,
/// and `build_open_flags` drops the others): only the kernel's own `__FMODE_NONOTIFY` lands
/// there, which fanotify passes when it opens an event fd (bit 26 on 6.1, 25 on Debian's 6.12;
/// kernels from 6.14 set it in `f_mode` instead, through `dentry_open_nonotify`).
const KERNEL_OPEN_FLAGS: u32 = !((1 << 23) - 1);

/// Whether `file`, being opened, is a fanotify event fd: its `f_flags` carry
/// `__FMODE_NONOTIFY`, or the opener is inside `fanotify_read` (`event_fds`, for kernels that
/// no longer pass the flag; it misses a read that was already waiting when it was attached).
fn is_event_fd(file: u64) -> bool {
    let nonotify = offsets::get(&OFF_FILE_F_FLAGS)
        .and_then(|off| read::<u32>(file + off))
        .is_some_and(|flags| flags & KERNEL_OPEN_FLAGS != 0);
    nonotify || event_fds::reading_events()
}

/// The `file_open` security hook (enhanced mode): times the open of `file` when it is on a
/// timed mount, under the fd the opener reserved for it. The hook runs once the file holds
/// its mount, before the fd is installed, for nearly every way a process gets a file: the
/// `open*` syscalls, fanotify's event fds (marked [`OPENED_FOR_EVENT`]: [`is_event_fd`]),
/// io_uring. Its time is exact: no unmount can race it. It never runs for `O_PATH` opens
/// (`do_dentry_open` returns before the hook), which the open syscalls' probes, attached
/// beside it, time as in fentry mode: with `FILE_OPEN_HOOKED` their exits time `O_PATH`
/// files only (read from the file, not from a mark the hook would leave per CPU: the opener
/// may move to another CPU between the hook and its exit).
pub fn on_file_open(file: u64) {
    let _ = record_file_open(file);
}

fn record_file_open(file: u64) -> Option<()> {
    let (vfsmount, mnt_id) = file_mount(file)?;
    if !timed(vfsmount, mnt_id) {
        return None;
    }
    let mode: u32 = read(file + offsets::get(&OFF_FILE_F_MODE)?)?;
    if mode & FMODE_NOACCOUNT != 0 {
        return None;
    }
    let flags = if is_event_fd(file) {
        OPENED_FOR_EVENT
    } else {
        0
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    time_open(
        bpf_get_current_pid_tgid(),
        reserved_fd()?,
        mnt_id,
        now,
        flags,
    )
}

/// Keeps that the current process (`pid_tgid`) opened `fd` on `mnt_id` at
/// `opened_ts_boot_ns` (0: unknown), with [`OpenRecord::flags`] `flags`, in `OPEN_TIMES` and
/// the mount's ring of recent opens.
fn time_open(
    pid_tgid: u64,
    fd: u32,
    mnt_id: u32,
    opened_ts_boot_ns: u64,
    flags: u32,
) -> Option<()> {
    let key = FdKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    let record = OpenRecord {
        opened_ts_boot_ns,
        mnt_id,
        flags,
    };
    note_recent_open(mnt_id, key, record.opened_ts_boot_ns);
    // fd numbers are reused at once: overwriting the slot in place is far cheaper than an
    // LRU update, which takes a fresh node from the free list every time.
    if let Some(slot) = OPEN_TIMES.get_ptr_mut(key) {
        // SAFETY: a slot of this map; only this (tgid, fd) writes it.
        unsafe { *slot = record };
    } else if OPEN_TIMES.insert(key, record, 0).is_err() {
        count_drop(DropCause::InflightMapFull);
    }
    Some(())
}

/// Whether opens on the mount are timed: on every tracked mount, or with
/// `OPEN_TIMES_WHERE_CONTENDED` only on the contended ones (user space adds a mount there only
/// after an EBUSY on it, which the path filter had let through: no need to ask `tracked`).
fn timed(vfsmount: u64, mnt_id: u32) -> bool {
    if OPEN_TIMES_WHERE_CONTENDED.load() == 1 {
        // SAFETY: presence check only.
        return unsafe { CONTENDED_MOUNTS.get(mnt_id) }.is_some();
    }
    tracked(vfsmount, mnt_id)
}

/// Adds an open to this CPU's ring of recent opens on `mnt_id` (slot `mnt_id %`
/// [`RECENT_OPEN_RINGS`]: an array lookup, which the kernel inlines, rather than a hash; a
/// mount taking over a slot from another starts it afresh).
fn note_recent_open(mnt_id: u32, key: FdKey, opened_ts_boot_ns: u64) {
    let Some(ring) = RECENT_OPENS_BY_MOUNT.get_ptr_mut(mnt_id % RECENT_OPEN_RINGS) else {
        return;
    };
    // SAFETY: this CPU's value; programs on one CPU do not run concurrently.
    unsafe {
        if (*ring).mnt_id != mnt_id {
            (*ring).mnt_id = mnt_id;
            for slot in (*ring).slots.iter_mut() {
                slot.opened_ts_boot_ns = 0;
            }
        }
        let slot = &mut (*ring).slots[(*ring).next as usize % RECENT_OPENS];
        slot.opened_ts_boot_ns = opened_ts_boot_ns;
        slot.pid = key.pid;
        slot.fd = key.fd;
        slot.comm = current_comm();
        (*ring).next = (*ring).next.wrapping_add(1);
    }
}

/// The current task's `comm`, read straight from the BTF-typed task (much cheaper than
/// `bpf_get_current_comm`, which copies it with `strscpy`); zeros when the offset is unknown.
fn current_comm() -> [u8; 16] {
    let Some(off) = offsets::get(&OFF_TASK_COMM) else {
        return [0; 16];
    };
    // SAFETY: the task pointer is trusted by the verifier; the load is checked against BTF.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        *(task.add(off as usize) as *const [u8; 16])
    }
}
