//! Maps shared by the programs, and the drop counters.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use probe_common::DropCause;

/// Default ring buffer size; user space may change it before load (`--ring-buffer-size`).
const RING_BUF_BYTES: u32 = 4 << 20;

/// Kernel → user space events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUF_BYTES, 0);

/// Per-CPU counters indexed by [`DropCause`].
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropCause::COUNT, 0);

/// What `sys_enter_umount` saw, keyed by thread id, until `sys_exit_umount`.
#[map]
pub static UMOUNT_INFLIGHT: HashMap<u32, crate::umount::UmountStart> =
    HashMap::with_max_entries(16384, 0);

/// The mount ids a holder scan looks for (value unused), filled by user space before each
/// run of the iterators.
#[map]
pub static SCAN_MOUNTS: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// Per-CPU counts of what a holder scan visited: index 0 open files, 1 tasks. User space
/// zeroes them before a scan and sums them after.
#[map]
pub static SCAN_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

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
