//! Every map of ours (aya-log adds its own), the globals user space may set before load (the
//! struct offsets apart: `offsets.rs`), and the drop counters. The names user space uses are
//! checked against `probe_common::names` at compile time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    Global,
};
use probe_common::{
    assert_symbol_name, names, DropCause, FdKey, OpenRecord, RecentOpens, ScanFileRecord,
    UmountEvent, QUEUED_FILES, RECENT_OPEN_RINGS,
};

use crate::{open_times::OpenEntry, release::PendingDirRelease, umount::UmountStart};

/// Default ring buffer size; user space may change it before load (`--ring-buffer-size`).
const RING_BUF_BYTES: u32 = 4 << 20;

/// Kernel → user space events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUF_BYTES, 0);
assert_symbol_name!(EVENTS, names::maps::EVENTS);

/// Per-CPU counters indexed by [`DropCause`].
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropCause::COUNT, 0);
assert_symbol_name!(DROPS, names::maps::DROPS);

// The unmount capture (`umount.rs`).

/// `[0]`: per CPU, the unmount record being built at `sys_exit_umount` (only its used bytes
/// go to the ring buffer).
#[map]
pub static UMOUNT_SCRATCH: PerCpuArray<UmountEvent> = PerCpuArray::with_max_entries(1, 0);

/// What `sys_enter_umount` saw, keyed by thread id, until `sys_exit_umount`.
#[map]
pub static UMOUNT_INFLIGHT: HashMap<u32, UmountStart> = HashMap::with_max_entries(16384, 0);
assert_symbol_name!(UMOUNT_INFLIGHT, names::maps::UMOUNT_INFLIGHT);

// The holder scan (`holders.rs`).

/// The mount ids a holder scan looks for (value unused), filled by user space before each
/// run of the iterators.
#[map]
pub static SCAN_MOUNTS: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);
assert_symbol_name!(SCAN_MOUNTS, names::maps::SCAN_MOUNTS);

/// Per-CPU counts of what a holder scan visited: index 0 open files, 1 tasks. User space
/// zeroes them before a scan and sums them after.
#[map]
pub static SCAN_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);
assert_symbol_name!(SCAN_COUNTS, names::maps::SCAN_COUNTS);

/// `[0]`: per CPU, the record of a fanotify group's queued file being written by the scan
/// (too big for the stack).
#[map]
pub static SCAN_FILE_SCRATCH: PerCpuArray<ScanFileRecord> = PerCpuArray::with_max_entries(1, 0);

// fanotify queue walks (`fanotify.rs`).

/// Per CPU, the files a fanotify queue walk keeps: `[0]` the holder scan's, `[1]` release
/// tracking's. In a map, not on the walk's stack: kernels before 6.7 verify a `bpf_loop`
/// callback once, with the caller's stack as it was at the call (every slot still 0), and
/// hard-wire the branches that finds dead, so "the first free slot" was always slot 0 there.
#[map]
pub static QUEUED_PATHS: PerCpuArray<[u64; QUEUED_FILES]> = PerCpuArray::with_max_entries(2, 0);

// Open times (`open_times.rs`).

/// `[0]`: how many unmount attempts have entered (wrapping; only its changes matter).
#[map]
pub static UMOUNT_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// `[0]`: per CPU, the last [`OpenEntry`].
#[map]
pub static OPEN_ENTRY: PerCpuArray<OpenEntry> = PerCpuArray::with_max_entries(1, 0);

/// When each fd on a tracked mount was opened (`CLOCK_BOOTTIME` ns; 0: unknown, see
/// `open_times::open_time`), by the open probes.
#[map]
pub static OPEN_TIMES: LruHashMap<FdKey, OpenRecord> = LruHashMap::with_max_entries(65536, 0);
assert_symbol_name!(OPEN_TIMES, names::maps::OPEN_TIMES);

/// Per CPU, rings of the last opens on tracked mounts, one per mount id modulo
/// [`RECENT_OPEN_RINGS`] (see [`RecentOpens`]).
#[map]
pub static RECENT_OPENS_BY_MOUNT: PerCpuArray<RecentOpens> =
    PerCpuArray::with_max_entries(RECENT_OPEN_RINGS, 0);
assert_symbol_name!(RECENT_OPENS_BY_MOUNT, names::maps::RECENT_OPENS_BY_MOUNT);

/// The contended mounts, kept by user space: a mount is added when an unmount of it fails
/// with EBUSY, and removed when it is gone (or has not failed for a while). With
/// `OPEN_TIMES_WHERE_CONTENDED` only their opens are timed.
#[map]
pub static CONTENDED_MOUNTS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);
assert_symbol_name!(CONTENDED_MOUNTS, names::maps::CONTENDED_MOUNTS);

/// 1: opens are timed only on `CONTENDED_MOUNTS` (`--open-times contended`); 0: on every
/// tracked mount.
#[unsafe(no_mangle)]
pub static OPEN_TIMES_WHERE_CONTENDED: Global<u8> = Global::new(0);
assert_symbol_name!(
    OPEN_TIMES_WHERE_CONTENDED,
    names::globals::OPEN_TIMES_WHERE_CONTENDED
);

/// 1: the `file_open` hook times opens (enhanced mode), and the open syscalls' exits time
/// only the `O_PATH` files it never sees; 0: the exits time every open.
#[unsafe(no_mangle)]
pub static FILE_OPEN_HOOKED: Global<u8> = Global::new(0);
assert_symbol_name!(FILE_OPEN_HOOKED, names::globals::FILE_OPEN_HOOKED);

// fanotify's event fds (`event_fds.rs`).

/// The threads inside `fanotify_read` (tid → 1): a file the `file_open` hook sees them open
/// is an event fd. Blocking reads wait inside, so one entry per listener thread.
#[map]
pub static READING_EVENTS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

// The busy window (`window.rs`).

/// How long after an EBUSY releases are reported, in ns (the loader leaves this default).
#[unsafe(no_mangle)]
pub static BUSY_WINDOW_NS: Global<u64> = Global::new(2_000_000_000);
assert_symbol_name!(BUSY_WINDOW_NS, names::globals::BUSY_WINDOW_NS);

/// `[0]`: the `CLOCK_BOOTTIME` ns until which releases are reported.
#[map]
pub static BUSY_UNTIL: Array<u64> = Array::with_max_entries(1, 0);

/// `[0]`: per CPU, the last deadline of `BUSY_UNTIL` this CPU saw pass (so that, outside a
/// window, `close` reads no clock).
#[map]
pub static SEEN_PASSED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// The tracked-mount filter (`tracked.rs`).

/// The mount filter, kept by user space. By default a deny list (the host root and pseudo
/// filesystems), so that a mount is tracked from the moment it appears; with `--path` an
/// allow list (the mounts under the prefix). See `FILTER_IS_ALLOW_LIST`.
#[map]
pub static TRACKED_MOUNTS: HashMap<u32, u8> = HashMap::with_max_entries(8192, 0);
assert_symbol_name!(TRACKED_MOUNTS, names::maps::TRACKED_MOUNTS);

/// 1: `TRACKED_MOUNTS` lists the tracked mounts; 0: it lists the untracked ones.
#[unsafe(no_mangle)]
pub static FILTER_IS_ALLOW_LIST: Global<u8> = Global::new(0);
assert_symbol_name!(FILTER_IS_ALLOW_LIST, names::globals::FILTER_IS_ALLOW_LIST);

// Release tracking (`release.rs`).

/// `[0]`: per CPU, where `chdir`/`fchdir`/`chroot` prepare a directory release before keeping
/// it in `PENDING_DIRS`.
#[map]
pub static DIR_RELEASE_SCRATCH: PerCpuArray<PendingDirRelease> =
    PerCpuArray::with_max_entries(1, 0);

/// The directory releases prepared by threads inside `chdir`/`fchdir`/`chroot` (tid → release),
/// sent or dropped as the call returns (on whatever CPU).
#[map]
pub static PENDING_DIRS: HashMap<u32, PendingDirRelease> = HashMap::with_max_entries(256, 0);

/// Adds one to the per-CPU counter `index` of `counters`.
#[inline(always)]
pub fn bump(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = counters.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *counter += 1 };
    }
}

/// Counts one loss of the given cause on this CPU.
#[inline(always)]
pub fn count_drop(cause: DropCause) {
    bump(&DROPS, cause as u32);
}
