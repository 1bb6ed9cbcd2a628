//! fentry/fexit twins of the syscall tracepoints, on the x86-64 syscall wrappers
//! (`__x64_sys_*`, whose one argument is the caller's saved `struct pt_regs`). busyprobe
//! attaches these instead of the tracepoints where the kernel allows it (`--mode fentry`, or
//! `auto`): enabling any syscall tracepoint puts every task on the syscall slow path, while a
//! BPF trampoline costs only the calls it traces. The bodies are the tracepoints' own.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use probe_common::{assert_symbol_name, names::programs, release_how};

use crate::{
    kernel::read,
    offsets::{OFF_FS_PWD, OFF_FS_ROOT},
    open_times, release, umount,
    window::window_open,
};

/// Byte offsets in x86-64 `struct pt_regs` of the registers that carry syscall arguments 0..4
/// (`di`, `si`, `dx`, `r10`): the layout is the kernel's user ABI.
const ARG_REGS: [u64; 4] = [112, 104, 96, 56];

/// Syscall argument `N` of a traced `__x64_sys_*` call, read from the saved registers.
fn arg<const N: usize>(ctx: &FEntryContext) -> u64 {
    let regs: u64 = ctx.arg(0);
    read::<u64>(regs + ARG_REGS[N]).unwrap_or(0)
}

/// The return value of a traced `__x64_sys_*` call (after its one argument).
fn ret(ctx: &FExitContext) -> i64 {
    ctx.arg(1)
}

/// An fentry program `$name` (named `programs::$constant`) on `$function` running `$body`
/// (with `ctx` in scope).
macro_rules! on_entry {
    ($(#[$doc:meta])* $name:ident = $constant:ident, $function:literal, |$ctx:ident| $body:expr) => {
        #[doc = concat!("fentry on `", $function, "`.")]
        $(#[$doc])*
        #[fentry(function = $function)]
        pub fn $name($ctx: FEntryContext) -> u32 {
            let _ = $body;
            0
        }
        assert_symbol_name!($name, programs::$constant);
    };
}

/// An fexit program `$name` (named `programs::$constant`) on `$function` running `$body`
/// (with `ctx` in scope).
macro_rules! on_exit {
    ($(#[$doc:meta])* $name:ident = $constant:ident, $function:literal, |$ctx:ident| $body:expr) => {
        #[doc = concat!("fexit on `", $function, "`.")]
        $(#[$doc])*
        #[fexit(function = $function)]
        pub fn $name($ctx: FExitContext) -> u32 {
            let _ = $body;
            0
        }
        assert_symbol_name!($name, programs::$constant);
    };
}

on_entry!(
    /// `umount2(name, flags)` entering.
    fentry_umount = FENTRY_UMOUNT,
    "__x64_sys_umount",
    |ctx| { umount::on_umount_entry(arg::<0>(&ctx), arg::<1>(&ctx) as u32) }
);
on_exit!(
    /// `umount2` returning.
    fexit_umount = FEXIT_UMOUNT,
    "__x64_sys_umount",
    |ctx| { umount::on_umount_exit(&ctx, ret(&ctx)) }
);

on_entry!(fentry_open = FENTRY_OPEN, "__x64_sys_open", |_ctx| {
    open_times::on_open_entry()
});
on_entry!(fentry_openat = FENTRY_OPENAT, "__x64_sys_openat", |_ctx| {
    open_times::on_open_entry()
});
on_entry!(
    fentry_openat2 = FENTRY_OPENAT2,
    "__x64_sys_openat2",
    |_ctx| { open_times::on_open_entry() }
);
on_entry!(fentry_creat = FENTRY_CREAT, "__x64_sys_creat", |_ctx| {
    open_times::on_open_entry()
});
on_exit!(fexit_open = FEXIT_OPEN, "__x64_sys_open", |ctx| {
    open_times::on_open_exit(ret(&ctx))
});
on_exit!(fexit_openat = FEXIT_OPENAT, "__x64_sys_openat", |ctx| {
    open_times::on_open_exit(ret(&ctx))
});
on_exit!(fexit_openat2 = FEXIT_OPENAT2, "__x64_sys_openat2", |ctx| {
    open_times::on_open_exit(ret(&ctx))
});
on_exit!(fexit_creat = FEXIT_CREAT, "__x64_sys_creat", |ctx| {
    open_times::on_open_exit(ret(&ctx))
});

on_entry!(fentry_close = FENTRY_CLOSE, "__x64_sys_close", |ctx| {
    if let Some(now) = window_open() {
        release::on_close(now, arg::<0>(&ctx))
    }
});
on_entry!(fentry_dup2 = FENTRY_DUP2, "__x64_sys_dup2", |ctx| {
    if let Some(now) = window_open() {
        release::on_dup(now, arg::<0>(&ctx), arg::<1>(&ctx))
    }
});
on_entry!(fentry_dup3 = FENTRY_DUP3, "__x64_sys_dup3", |ctx| {
    if let Some(now) = window_open() {
        release::on_dup(now, arg::<0>(&ctx), arg::<1>(&ctx))
    }
});
on_entry!(
    fentry_close_range = FENTRY_CLOSE_RANGE,
    "__x64_sys_close_range",
    |ctx| {
        if let Some(now) = window_open() {
            release::on_close_range(now, arg::<0>(&ctx), arg::<1>(&ctx), arg::<2>(&ctx))
        }
    }
);
on_entry!(fentry_execve = FENTRY_EXECVE, "__x64_sys_execve", |_ctx| {
    release::on_exec()
});
on_entry!(
    fentry_execveat = FENTRY_EXECVEAT,
    "__x64_sys_execveat",
    |_ctx| { release::on_exec() }
);
on_entry!(fentry_chdir = FENTRY_CHDIR, "__x64_sys_chdir", |_ctx| {
    release::on_dir_change_entry(&OFF_FS_PWD, release_how::CHDIR)
});
on_entry!(fentry_fchdir = FENTRY_FCHDIR, "__x64_sys_fchdir", |_ctx| {
    release::on_dir_change_entry(&OFF_FS_PWD, release_how::CHDIR)
});
on_entry!(fentry_chroot = FENTRY_CHROOT, "__x64_sys_chroot", |_ctx| {
    release::on_dir_change_entry(&OFF_FS_ROOT, release_how::CHROOT)
});
on_exit!(fexit_chdir = FEXIT_CHDIR, "__x64_sys_chdir", |ctx| {
    release::finish_dir_release(ret(&ctx))
});
on_exit!(fexit_fchdir = FEXIT_FCHDIR, "__x64_sys_fchdir", |ctx| {
    release::finish_dir_release(ret(&ctx))
});
on_exit!(fexit_chroot = FEXIT_CHROOT, "__x64_sys_chroot", |ctx| {
    release::finish_dir_release(ret(&ctx))
});
on_entry!(fentry_munmap = FENTRY_MUNMAP, "__x64_sys_munmap", |ctx| {
    if let Some(now) = window_open() {
        release::on_munmap(now, arg::<0>(&ctx))
    }
});
