//! Tiny programs that `busyprobe doctor` loads (and attaches) one by one to learn which probe
//! kinds this kernel really accepts. They do nothing when they run. (fentry is tried with
//! fentry mode's own umount program, `syscall_fentry::fentry_umount`.)

use aya_ebpf::{
    macros::{btf_tracepoint, lsm, raw_tracepoint},
    programs::{BtfTracePointContext, LsmContext, RawTracePointContext},
};
use probe_common::{assert_symbol_name, names::programs};

/// raw_tracepoint `sched_process_exit`.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn doctor_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}
assert_symbol_name!(doctor_raw_tracepoint, programs::DOCTOR_RAW_TRACEPOINT);

/// tp_btf `sched_process_exit`.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn doctor_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}
assert_symbol_name!(doctor_tp_btf, programs::DOCTOR_TP_BTF);

/// BPF LSM `sb_umount`: allows everything.
#[lsm(hook = "sb_umount")]
pub fn doctor_lsm(_ctx: LsmContext) -> i32 {
    0
}
assert_symbol_name!(doctor_lsm, programs::DOCTOR_LSM);
