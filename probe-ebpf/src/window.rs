//! The busy window: while it is open, releases on tracked mounts are reported. Every unmount
//! attempt opens it briefly at entry, an EBUSY for `BUSY_WINDOW_NS` (2 s) from the exit; the
//! deadline is `BUSY_UNTIL`. Outside it a release probe costs two array lookups and no clock
//! read (`SEEN_PASSED`, per CPU).

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;

use crate::maps::{BUSY_UNTIL, BUSY_WINDOW_NS, SEEN_PASSED};

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
