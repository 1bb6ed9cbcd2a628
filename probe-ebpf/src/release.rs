//! Release tracking: a holder that made the kernel say busy lets go *after* the failing call.
//! An EBUSY opens a busy window (`BUSY_UNTIL`); while it is open, `close` reports files on
//! tracked mounts (see `tracked`) with their path within the mount.
//! Outside the window `close` costs one array lookup.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes,
        generated::{bpf_find_vma, bpf_get_current_task_btf, bpf_loop},
    },
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
    Global,
};
use probe_common::{
    release_how, DropCause, EventKind, FdKey, OpenRecord, RecentOpens, ReleaseEvent, NAME_LEN,
    NO_FD, RECENT_OPENS, RECENT_OPEN_RINGS, RELEASE_DEPTH, RELEASE_NAME_CUT, RELEASE_PATH_DEEPER,
};

use crate::{
    fanotify::{self, MountFilter},
    kernel::{self, read, read_ptr, tracepoint_field},
    maps::{count_drop, EVENTS},
    offsets::{self, *},
};

/// `sys_enter_close` format: `unsigned int fd` at 16.
const CLOSE_FD: usize = 16;
/// `sys_exit_open*` / `sys_exit_creat` format: `long ret` at 16.
const EXIT_RET: usize = 16;

/// `[0]`: how many unmount attempts have entered (wrapping; only its changes matter).
#[map]
static UMOUNT_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// The thread that last entered an open syscall on a CPU, and the [`UMOUNT_EPOCH`] then.
#[repr(C)]
pub struct OpenEntry {
    tid: u32,
    umount_epoch: u32,
}

/// `[0]`: per CPU, the last [`OpenEntry`].
#[map]
static OPEN_ENTRY: PerCpuArray<OpenEntry> = PerCpuArray::with_max_entries(1, 0);

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
    on_open_exit(tracepoint_field(&ctx, EXIT_RET));
    0
}

/// The body of [`sys_exit_open`]: `ret` is the open's result.
pub fn on_open_exit(ret: i64) {
    if ret >= 0 {
        let _ = record_open(ret as u32);
    }
}

fn record_open(fd: u32) -> Option<()> {
    let (vfsmount, mnt_id) = current_file_of_fd(fd).and_then(file_mount)?;
    if !tracked(vfsmount, mnt_id) {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = FdKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    let record = OpenRecord {
        opened_ts_boot_ns: open_time(pid_tgid as u32),
        mnt_id,
        _pad: 0,
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

/// How long after an EBUSY releases are reported, in ns (set by the loader).
#[unsafe(no_mangle)]
pub static BUSY_WINDOW_NS: Global<u64> = Global::new(2_000_000_000);

/// `[0]`: the `CLOCK_BOOTTIME` ns until which releases are reported.
#[map]
pub static BUSY_UNTIL: Array<u64> = Array::with_max_entries(1, 0);

/// `[0]`: per CPU, the last deadline of `BUSY_UNTIL` this CPU saw pass (so that, outside a
/// window, `close` reads no clock).
#[map]
static SEEN_PASSED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// When each fd on a tracked mount was opened (`CLOCK_BOOTTIME` ns; 0: unknown, see
/// [`open_time`]), by the open probes.
#[map]
pub static OPEN_TIMES: LruHashMap<FdKey, OpenRecord> = LruHashMap::with_max_entries(65536, 0);

/// The mount filter, kept by user space. By default a deny list (the host root and pseudo
/// filesystems), so that a mount is tracked from the moment it appears; with `--path` an
/// allow list (the mounts under the prefix). See `FILTER_IS_ALLOW_LIST`.
#[map]
pub static TRACKED_MOUNTS: HashMap<u32, u8> = HashMap::with_max_entries(8192, 0);

/// 1: `TRACKED_MOUNTS` lists the tracked mounts; 0: it lists the untracked ones.
#[unsafe(no_mangle)]
pub static FILTER_IS_ALLOW_LIST: Global<u8> = Global::new(0);

/// Superblock magic numbers of pseudo filesystems, never tracked in any namespace (so that
/// no map of mount ids, which the kernel reuses at once, has to follow every namespace); the
/// kernel's internal mounts (pipes, sockets, anonymous inodes) are in no mount table at all.
const PSEUDO_MAGICS: [u64; 23] = [
    0x5049_5045, // pipefs (pipes)
    0x534f_434b, // sockfs (sockets)
    0x0904_1934, // anon_inodefs (eventfd, epoll, bpf links...)
    0x5049_4446, // pidfs
    0x6264_6576, // bdev
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x1cd1,      // devpts
    0x7472_6163, // tracefs
    0x6462_6720, // debugfs
    0xcafe_4a11, // bpf
    0x7363_6673, // securityfs
    0x6165_676c, // pstore
    0x1980_0202, // mqueue
    0x9584_58f6, // hugetlbfs
    0x6265_6570, // configfs
    0x6573_5543, // fusectl
    0x4249_4e4d, // binfmt_misc
    0x0187,      // autofs
    0x6e73_6673, // nsfs
    0xde5e_81e4, // efivarfs
];

/// Whether opens and releases on the mount `vfsmount` (id `mnt_id`) matter. With an allow
/// list (`--path`) it must be listed; otherwise it must not be listed (this namespace's root
/// and pseudo mounts) and must not be a pseudo filesystem.
fn tracked(vfsmount: u64, mnt_id: u32) -> bool {
    // SAFETY: presence check only.
    let listed = unsafe { TRACKED_MOUNTS.get(mnt_id) }.is_some();
    if FILTER_IS_ALLOW_LIST.load() == 1 {
        return listed;
    }
    !listed && !is_pseudo(vfsmount)
}

fn is_pseudo(vfsmount: u64) -> bool {
    let magic = offsets::get(&OFF_VFSMOUNT_SB)
        .and_then(|o| read_ptr(vfsmount, o))
        .and_then(|sb| read::<u64>(sb + offsets::get(&OFF_SB_MAGIC)?));
    matches!(magic, Some(m) if PSEUDO_MAGICS.contains(&m))
}

/// The vfsmount and mount id of the file at `file`.
fn file_mount(file: u64) -> Option<(u64, u32)> {
    path_mount(file + offsets::get(&OFF_FILE_F_PATH)?)
}

/// The vfsmount and mount id of the `struct path` at `path`.
fn path_mount(path: u64) -> Option<(u64, u32)> {
    let vfsmount = read_ptr(path, offsets::get(&OFF_PATH_MNT)?)?;
    Some((vfsmount, kernel::vfsmount_id(vfsmount)?))
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

/// Per CPU, rings of the last opens on tracked mounts, one per mount id modulo
/// [`RECENT_OPEN_RINGS`] (see [`RecentOpens`]).
#[map]
pub static RECENT_OPENS_BY_MOUNT: PerCpuArray<RecentOpens> =
    PerCpuArray::with_max_entries(RECENT_OPEN_RINGS, 0);

/// How long every unmount attempt opens the window for, from its entry: a holder may let go
/// between the kernel's busy check and the syscall's exit, before an EBUSY is known.
const ATTEMPT_WINDOW_NS: u64 = 100_000_000;

/// Opens the busy window: for the whole window on EBUSY (the umount exit probe).
pub fn open_busy_window(now: u64) {
    extend_window(now + BUSY_WINDOW_NS.load());
}

/// Opens the window briefly at every unmount attempt's entry.
pub fn open_attempt_window(now: u64) {
    extend_window(now + ATTEMPT_WINDOW_NS);
}

fn extend_window(deadline: u64) {
    if let Some(until) = BUSY_UNTIL.get_ptr_mut(0) {
        // SAFETY: a single u64 slot; a racing writer only moves the deadline.
        unsafe {
            if *until < deadline {
                *until = deadline;
            }
        }
    }
}

/// The time now, when releases are being reported. Once this CPU has seen the current deadline
/// pass, it costs two array lookups and no clock read until an unmount moves the deadline.
pub fn window_open() -> Option<u64> {
    // SAFETY: single u64 slots; the per-CPU one is only written on this CPU.
    unsafe {
        let deadline = *BUSY_UNTIL.get(0)?;
        let seen_passed = SEEN_PASSED.get_ptr_mut(0)?;
        if deadline == *seen_passed {
            return None;
        }
        let now = bpf_ktime_get_boot_ns();
        if now < deadline {
            return Some(now);
        }
        *seen_passed = deadline;
    }
    None
}

#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    if let Some(now) = window_open() {
        on_close(now, tracepoint_field(&ctx, CLOSE_FD));
    }
    0
}

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

/// `execve`/`execveat` entering: the fds marked close-on-exec go.
pub fn on_exec() {
    if let Some(now) = window_open() {
        let _ = walk_fds::<false>(now, 0, u32::MAX, release_how::EXEC);
    }
}

/// A working or root directory about to be let go: prepared as `chdir`/`fchdir`/`chroot`
/// enters (while the old directory is still referenced, so its names can be read), sent when
/// the call returns having moved off that mount.
#[repr(C)]
pub struct PendingDirRelease {
    tid: u32,
    /// The `fs_struct` member changed: `fs_struct.pwd` or `fs_struct.root` offset.
    which: u32,
    /// The old directory's vfsmount; 0: nothing pending.
    vfsmount: u64,
    event: ReleaseEvent,
}

/// `[0]`: per CPU, the directory release being prepared.
#[map]
static PENDING_DIR: PerCpuArray<PendingDirRelease> = PerCpuArray::with_max_entries(1, 0);

/// `chdir`/`fchdir` (attached to both): the working directory may leave its mount.
#[tracepoint(category = "syscalls", name = "sys_enter_chdir")]
pub fn sys_enter_chdir(_ctx: TracePointContext) -> u32 {
    on_dir_change_entry(&OFF_FS_PWD, release_how::CHDIR);
    0
}

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

/// The exits of `chdir`, `fchdir` and `chroot`: sends the prepared release when the call
/// worked and the directory is now on another mount.
#[tracepoint(category = "syscalls", name = "sys_exit_chdir")]
pub fn sys_exit_dir_change(ctx: TracePointContext) -> u32 {
    let _ = finish_dir_release(tracepoint_field(&ctx, EXIT_RET));
    0
}

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
    let pending = PENDING_DIR.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; `fill_release` writes every field of the event.
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
        (*pending).tid = bpf_get_current_pid_tgid() as u32;
        (*pending).which = which as u32;
        (*pending).vfsmount = vfsmount;
    }
    Some(())
}

/// `chdir`/`fchdir`/`chroot` returning `ret`: sends the prepared release when the call worked
/// and the directory is now on another mount.
pub fn finish_dir_release(ret: i64) -> Option<()> {
    let pending = PENDING_DIR.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot.
    unsafe {
        let old = (*pending).vfsmount;
        (*pending).vfsmount = 0;
        if old == 0 || ret != 0 || (*pending).tid != bpf_get_current_pid_tgid() as u32 {
            return None;
        }
        let now_on = read_ptr(
            current_dir(u64::from((*pending).which))?,
            offsets::get(&OFF_PATH_MNT)?,
        )?;
        if now_on == old {
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

/// Reports the file at `fd` of the current task (`GROUPS`: see [`report_file`]).
fn report_fd<const GROUPS: bool>(now: u64, fd: u32, how: u32) -> Option<()> {
    // SAFETY: helper without preconditions; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    report_file::<GROUPS>(now, fd, file_of_fd(task, fd)?, how)
}

/// Most fds a walk over one fd table covers.
const MAX_WALK_FDS: u32 = 4096;

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    if let Some(now) = window_open() {
        let _ = report_exit(now);
    }
    0
}

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
        0,
    );
    report_path(
        now,
        NO_FD,
        fs + offsets::get(&OFF_FS_ROOT)?,
        release_how::EXIT,
        0,
    )
}

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
fn walk_fds<const GROUPS: bool>(now: u64, first: u32, last: u32, how: u32) -> Option<()> {
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
/// fanotify group with unread events on tracked mounts is reported too: its queue pinned
/// those mounts, and goes with it (only `close` and exit follow groups: each program that
/// does carries the queue walk, and the others are loaded faster without it).
fn report_file<const GROUPS: bool>(now: u64, fd: u32, file: u64, how: u32) -> Option<()> {
    if GROUPS && fanotify::is_group(file) {
        let queued = fanotify::queued::<Tracked>(file)?;
        return report_path(now, fd, queued.path, how, queued.count);
    }
    report_path(now, fd, file + offsets::get(&OFF_FILE_F_PATH)?, how, 0)
}

/// Release tracking's filter for fanotify queues: the tracked mounts.
struct Tracked;

impl MountFilter for Tracked {
    fn wants(path: u64) -> Option<u32> {
        let (vfsmount, mnt_id) = path_mount(path)?;
        tracked(vfsmount, mnt_id).then_some(mnt_id)
    }
}

/// Reports the `struct path` at `path` (of `fd`, or [`NO_FD`] for a cwd or root) let go
/// `how`, when it is on a tracked mount; `queued_events` for a fanotify group (see
/// [`ReleaseEvent::queued_events`]).
fn report_path(now: u64, fd: u32, path: u64, how: u32, queued_events: u32) -> Option<()> {
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
            (*ev).queued_events = queued_events;
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
unsafe fn fill_release(
    ev: *mut ReleaseEvent,
    now: u64,
    fd: u32,
    how: u32,
    path: u64,
    vfsmount: u64,
    mnt_id: u32,
) -> Option<()> {
    let dentry = read_ptr(path, offsets::get(&OFF_PATH_DENTRY)?)?;
    let root = read_ptr(vfsmount, offsets::get(&OFF_VFSMOUNT_ROOT)?)?;
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
        (*ev)._pad = 0;
        let key = FdKey {
            pid: (pid_tgid >> 32) as u32,
            fd,
        };
        // An entry left by an earlier file on another mount under the same fd number (this
        // one came from fanotify, a socket, dup...) is not this file's open.
        (*ev).opened_ts_boot_ns = OPEN_TIMES
            .get(key)
            .filter(|r| r.mnt_id == mnt_id)
            .map_or(0, |r| r.opened_ts_boot_ns);
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let (depth, flags) = walk_names(dentry, root, &mut (*ev).names);
        (*ev).depth = depth;
        (*ev).flags = flags;
        if flags != 0 {
            count_drop(DropCause::ReleasePathCut);
        }
    }
    Some(())
}

/// The current task's `files->fdt->fd[fd]`, reading the BTF-typed task pointer directly
/// (cheaper than `bpf_probe_read_kernel` for each step); only the array element needs the
/// helper (the verifier refuses a variable offset into it).
fn current_file_of_fd(fd: u32) -> Option<u64> {
    let (files_off, fdt_off, max_off, fd_off) = (
        offsets::get(&OFF_TASK_FILES)?,
        offsets::get(&OFF_FILES_FDT)?,
        offsets::get(&OFF_FDT_MAX_FDS)?,
        offsets::get(&OFF_FDT_FD)?,
    );
    // SAFETY: the task pointer is trusted by the verifier; each load is checked against BTF.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let files = *(task.add(files_off as usize) as *const *const u8);
        if files.is_null() {
            return None;
        }
        let fdt = *(files.add(fdt_off as usize) as *const *const u8);
        if fdt.is_null() {
            return None;
        }
        let max_fds = *(fdt.add(max_off as usize) as *const u32);
        if fd >= max_fds {
            return None;
        }
        let array = *(fdt.add(fd_off as usize) as *const *const u8) as u64;
        read_ptr(array, u64::from(fd) * 8)
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
