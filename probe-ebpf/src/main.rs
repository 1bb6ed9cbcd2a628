//! busyprobe's kernel side: tracepoints on `umount`/`umount2` that stream every unmount attempt
//! to user space through a ring buffer, plus tiny programs `busyprobe doctor` loads to learn
//! which probe kinds this kernel accepts.
#![no_std]
#![no_main]

mod doctor;
mod fanotify;
mod holders;
mod kernel;
mod maps;
mod offsets;
mod release;
mod syscall_fentry;
mod umount;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel refuses GPL-only helpers (`bpf_probe_read_kernel`, ...) to non-GPL programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
