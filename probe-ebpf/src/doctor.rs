//! Tiny programs that `busyprobe doctor` loads (and attaches) one by one to learn which probe
//! kinds this kernel really accepts. They do nothing when they run.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, lsm, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, LsmContext, RawTracePointContext},
};

/// raw_tracepoint `sched_process_exit`.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn doctor_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

/// tp_btf `sched_process_exit`.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn doctor_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// fentry on `path_umount` (the function behind umount2).
#[fentry(function = "path_umount")]
pub fn doctor_fentry(_ctx: FEntryContext) -> u32 {
    0
}

/// BPF LSM `sb_umount`: allows everything.
#[lsm(hook = "sb_umount")]
pub fn doctor_lsm(_ctx: LsmContext) -> i32 {
    0
}
