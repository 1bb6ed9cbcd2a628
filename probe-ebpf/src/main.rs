//! busyprobe's kernel side: every `umount`/`umount2` attempt streamed to user space through a
//! ring buffer (`umount.rs`), release tracking around a failed unmount (`release.rs`,
//! `window.rs`, `tracked.rs`, `walks.rs`) and open times (`open_times.rs`), each as syscall
//! tracepoints and as fentry/fexit twins (`syscall_fentry.rs`); the enhanced mode's security
//! hooks (`lsm.rs`: the exact mount of an attempt, and every open timed, fanotify's event fds
//! told apart by `event_fds.rs`); the holder scan's BPF iterators
//! (`holders.rs`, `fanotify.rs`); and tiny programs `busyprobe doctor` loads to learn which
//! probe kinds this kernel accepts (`doctor.rs`). Maps and load-time globals are in `maps.rs`
//! and `offsets.rs`; the names user space knows them by are `probe_common::names`.
#![no_std]
#![no_main]

mod doctor;
mod event_fds;
mod fanotify;
mod holders;
mod kernel;
mod lsm;
mod maps;
mod offsets;
mod open_times;
mod release;
mod syscall_fentry;
mod tracked;
mod umount;
mod walks;
mod window;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel refuses GPL-only helpers (`bpf_probe_read_kernel`, ...) to non-GPL programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
