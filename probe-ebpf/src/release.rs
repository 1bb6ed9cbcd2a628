//! Release tracking's syscall handlers: a holder that made the kernel say busy lets go
//! *after* the failing call. Inside the busy window (`window.rs`), `close`, `dup2`/`dup3` (the
//! fd replaced), `close_range` (without `CLOSE_RANGE_CLOEXEC`), `execve`/`execveat` (the fds
//! marked close-on-exec, as the call enters), `munmap` (the file of the first mapping of the
//! range), `chdir`/`fchdir`/`chroot` (the old directory, prepared as the call enters in
//! `PENDING_DIRS` and sent from the exit when the call worked and left the mount) and
//! `sched_process_exit` (the last user of an fd table or `fs_struct`: its files, working and
//! root directories) report files on tracked mounts as `ReleaseEvent`s (`walks.rs`). Each
//! tracepoint's body is an `on_*` function that its fentry twin (`syscall_fentry.rs`) runs too.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::{bpf_find_vma, bpf_get_current_task_btf},
    },
    macros::tracepoint,
    programs::TracePointContext,
    Global,
};
use probe_common::{
    assert_symbol_name, names::programs, release_how, DropCause, ReleaseEvent, NO_FD,
};

use crate::{
    kernel::{path_mount, read, read_ptr, tracepoint_field, SYS_EXIT_RET},
    maps::{count_drop, DIR_RELEASE_SCRATCH, EVENTS, PENDING_DIRS},
    offsets::{self, *},
    tracked::tracked,
    walks::{fill_release, report_fd, report_file, report_path, walk_fds, GroupFile},
    window::window_open,
};

/// `sys_enter_close` format: `unsigned int fd` at 16.
const CLOSE_FD: usize = 16;

/// `close`: the file at `fd` is let go.
#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    if let Some(now) = window_open() {
        on_close(now, tracepoint_field(&ctx, CLOSE_FD));
    }
    0
}
assert_symbol_name!(sys_enter_close, programs::SYS_ENTER_CLOSE);

/// `close(fd)` inside the window (read the arguments only then: most closes are outside it).
pub fn on_close(now: u64, fd: u64) {
    let _ = report_fd::<true>(now, fd as u32, release_how::CLOSE);
}

/// `sys_enter_dup2` / `sys_enter_dup3` formats: `oldfd` at 16, `newfd` at 24.
const DUP_OLDFD: usize = 16;
const DUP_NEWFD: usize = 24;

/// `dup2`/`dup3` close the file at `newfd` (attached to both).
#[tracepoint(category = "syscalls", name = "sys_enter_dup2")]
pub fn sys_enter_dup(ctx: TracePointContext) -> u32 {
    if let Some(now) = window_open() {
        on_dup(
            now,
            tracepoint_field(&ctx, DUP_OLDFD),
            tracepoint_field(&ctx, DUP_NEWFD),
        );
    }
    0
}
assert_symbol_name!(sys_enter_dup, programs::SYS_ENTER_DUP);

/// `dup2(old, new)`/`dup3` inside the window: the file at `new` is let go.
pub fn on_dup(now: u64, old: u64, new: u64) {
    if old != new {
        let _ = report_fd::<false>(now, new as u32, release_how::DUP_OVER);
    }
}

/// `sys_enter_close_range` format: `fd` at 16, `max_fd` at 24, `flags` at 32.
const RANGE_FIRST: usize = 16;
const RANGE_LAST: usize = 24;
const RANGE_FLAGS: usize = 32;
/// `CLOSE_RANGE_CLOEXEC`: the range is only marked close-on-exec, nothing is let go.
const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;

/// `close_range`: the files at the fds of the range are let go.
#[tracepoint(category = "syscalls", name = "sys_enter_close_range")]
pub fn sys_enter_close_range(ctx: TracePointContext) -> u32 {
    if let Some(now) = window_open() {
        on_close_range(
            now,
            tracepoint_field(&ctx, RANGE_FIRST),
            tracepoint_field(&ctx, RANGE_LAST),
            tracepoint_field(&ctx, RANGE_FLAGS),
        );
    }
    0
}
assert_symbol_name!(sys_enter_close_range, programs::SYS_ENTER_CLOSE_RANGE);

/// `close_range(first, last, flags)` inside the window.
pub fn on_close_range(now: u64, first: u64, last: u64, flags: u64) {
    if flags & CLOSE_RANGE_CLOEXEC == 0 {
        let _ = walk_fds::<false>(now, first as u32, last as u32, release_how::CLOSE_RANGE);
    }
}

/// `execve`/`execveat` close the fds marked close-on-exec (attached to both).
#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn sys_enter_exec(_ctx: TracePointContext) -> u32 {
    on_exec();
    0
}
assert_symbol_name!(sys_enter_exec, programs::SYS_ENTER_EXEC);

/// `execve`/`execveat` entering: the fds marked close-on-exec go.
pub fn on_exec() {
    if let Some(now) = window_open() {
        let _ = walk_fds::<false>(now, 0, u32::MAX, release_how::EXEC);
    }
}

/// A working or root directory about to be let go: prepared as `chdir`/`fchdir`/`chroot`
/// enters (while the old directory is still referenced, so its names can be read), kept by
/// thread (the call may sleep and return on another CPU), sent when the call returns having
/// moved off that mount.
#[repr(C)]
pub struct PendingDirRelease {
    /// The `fs_struct` member changed: `fs_struct.pwd` or `fs_struct.root` offset.
    which: u32,
    _pad: u32,
    /// The old directory's vfsmount.
    vfsmount: u64,
    event: ReleaseEvent,
}

/// `chdir`/`fchdir` (attached to both): the working directory may leave its mount.
#[tracepoint(category = "syscalls", name = "sys_enter_chdir")]
pub fn sys_enter_chdir(_ctx: TracePointContext) -> u32 {
    on_dir_change_entry(&OFF_FS_PWD, release_how::CHDIR);
    0
}
assert_symbol_name!(sys_enter_chdir, programs::SYS_ENTER_CHDIR);

/// `chdir`/`fchdir` (`which`: `OFF_FS_PWD`, how `CHDIR`) or `chroot` (`OFF_FS_ROOT`,
/// `CHROOT`) entering.
pub fn on_dir_change_entry(which: &Global<u32>, how: u32) {
    if let Some(now) = window_open() {
        let _ = prepare_dir_release(now, which, how);
    }
}

/// `chroot`: the root directory may leave its mount.
#[tracepoint(category = "syscalls", name = "sys_enter_chroot")]
pub fn sys_enter_chroot(_ctx: TracePointContext) -> u32 {
    on_dir_change_entry(&OFF_FS_ROOT, release_how::CHROOT);
    0
}
assert_symbol_name!(sys_enter_chroot, programs::SYS_ENTER_CHROOT);

/// The exits of `chdir`, `fchdir` and `chroot`: sends the prepared release when the call
/// worked and the directory is now on another mount.
#[tracepoint(category = "syscalls", name = "sys_exit_chdir")]
pub fn sys_exit_dir_change(ctx: TracePointContext) -> u32 {
    let _ = finish_dir_release(tracepoint_field(&ctx, SYS_EXIT_RET));
    0
}
assert_symbol_name!(sys_exit_dir_change, programs::SYS_EXIT_DIR_CHANGE);

/// The current task's `fs_struct` member at offset `which` (its pwd or root).
fn current_dir(which: u64) -> Option<u64> {
    // SAFETY: helper without preconditions; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    Some(read_ptr(task, offsets::get(&OFF_TASK_FS)?)? + which)
}

fn prepare_dir_release(now: u64, which: &Global<u32>, how: u32) -> Option<()> {
    let which = offsets::get(which)?;
    let path = current_dir(which)?;
    let (vfsmount, mnt_id) = path_mount(path)?;
    if !tracked(vfsmount, mnt_id) {
        return None;
    }
    let pending = DIR_RELEASE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot (too big for the stack), copied into `PENDING_DIRS` before this
    // program ends; `fill_release` writes every field of the event.
    unsafe {
        fill_release(
            &raw mut (*pending).event,
            now,
            NO_FD,
            how,
            path,
            vfsmount,
            mnt_id,
        )?;
        (*pending).which = which as u32;
        (*pending)._pad = 0;
        (*pending).vfsmount = vfsmount;
        if PENDING_DIRS
            .insert(bpf_get_current_pid_tgid() as u32, &*pending, 0)
            .is_err()
        {
            count_drop(DropCause::InflightMapFull);
        }
    }
    Some(())
}

/// `chdir`/`fchdir`/`chroot` returning `ret`: sends the prepared release when the call worked
/// and the directory is now on another mount.
pub fn finish_dir_release(ret: i64) -> Option<()> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let pending = PENDING_DIRS.get_ptr_mut(tid)?;
    // SAFETY: this thread's entry: only this thread writes it, and it removes it below.
    unsafe {
        if ret == 0 {
            send_dir_release(pending);
        }
    }
    let _ = PENDING_DIRS.remove(tid);
    Some(())
}

/// Sends `pending` when the directory it changed is now on another mount.
///
/// # Safety
/// `pending` must point at a `PENDING_DIRS` value.
unsafe fn send_dir_release(pending: *mut PendingDirRelease) -> Option<()> {
    // SAFETY: the caller's promise.
    unsafe {
        let now_on = read_ptr(
            current_dir(u64::from((*pending).which))?,
            offsets::get(&OFF_PATH_MNT)?,
        )?;
        if now_on == (*pending).vfsmount {
            return None; // moved within the mount: still holding it
        }
        (*pending).event.header.ts_boot_ns = bpf_ktime_get_boot_ns();
        if EVENTS.output::<ReleaseEvent>(&(*pending).event, 0).is_err() {
            count_drop(DropCause::RingBufFull);
        }
    }
    Some(())
}

/// `sys_enter_munmap` format: `addr` at 16.
const MUNMAP_ADDR: usize = 16;

/// `munmap`: the file mapped at `addr` (the first mapping of the range) is let go.
#[tracepoint(category = "syscalls", name = "sys_enter_munmap")]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    if let Some(now) = window_open() {
        on_munmap(now, tracepoint_field(&ctx, MUNMAP_ADDR));
    }
    0
}
assert_symbol_name!(sys_enter_munmap, programs::SYS_ENTER_MUNMAP);

/// `munmap(addr, ...)` inside the window.
pub fn on_munmap(mut now: u64, addr: u64) {
    // SAFETY: the BTF task pointer is what the helper wants; the callback only reads through
    // probe reads, and `now` outlives the call.
    unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            addr,
            munmap_vma as *mut c_void,
            (&mut now as *mut u64).cast(),
            0,
        );
    }
}

/// The mapping `munmap` found: reports its file.
#[inline(never)]
extern "C" fn munmap_vma(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `now` given to `bpf_find_vma`.
    let now = unsafe { *(ctx as *const u64) };
    let file = offsets::get(&OFF_VMA_FILE).and_then(|o| read_ptr(vma as u64, o));
    if let Some(file) = file {
        let _ = report_file::<false>(now, NO_FD, file, release_how::MUNMAP);
    }
    0
}

/// A task exits: the last user of an fd table or `fs_struct` lets go of what they hold.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    if let Some(now) = window_open() {
        let _ = report_exit(now);
    }
    0
}
assert_symbol_name!(sched_process_exit, programs::SCHED_PROCESS_EXIT);

/// Reports every file on a tracked mount in the fd table of the exiting task, when it is
/// the table's last user (the tracepoint runs before the files are closed).
fn report_exit(now: u64) -> Option<()> {
    // SAFETY: helper without preconditions; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let files = read_ptr(task, offsets::get(&OFF_TASK_FILES)?)?;
    let users: u32 = read(files + offsets::get(&OFF_FILES_COUNT)?)?;
    if users == 1 {
        walk_fds::<true>(now, 0, u32::MAX, release_how::EXIT);
    }
    report_exit_dirs(now)
}

/// Reports the exiting task's working and root directories when it is the last user of its
/// `fs_struct` and they are on a tracked mount.
fn report_exit_dirs(now: u64) -> Option<()> {
    // SAFETY: helper without preconditions; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let fs = read_ptr(task, offsets::get(&OFF_TASK_FS)?)?;
    let users: i32 = read(fs + offsets::get(&OFF_FS_USERS)?)?;
    if users != 1 {
        return None;
    }
    let _ = report_path(
        now,
        NO_FD,
        fs + offsets::get(&OFF_FS_PWD)?,
        release_how::EXIT,
        GroupFile::NONE,
    );
    report_path(
        now,
        NO_FD,
        fs + offsets::get(&OFF_FS_ROOT)?,
        release_how::EXIT,
        GroupFile::NONE,
    )
}
