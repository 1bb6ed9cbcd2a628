//! Tiny programs that `busyprobe doctor` loads (and attaches) one by one to learn which probe
//! kinds this kernel really accepts. They do nothing when they run. (fentry is tried with
//! fentry mode's own umount program, `syscall_fentry::fentry_umount`, and BPF LSM with the
//! enhanced mode's hooks, `lsm.rs`.)

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
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
