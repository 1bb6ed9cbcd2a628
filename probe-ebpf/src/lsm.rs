//! The enhanced mode's BPF LSM programs: `sb_umount` notes the exact mount an unmount attempt
//! is about (the `struct vfsmount` in the caller's namespace, before the busy check), and
//! `file_open` times every open of a file on a tracked mount, the ones no `open*` syscall
//! makes included (fanotify's event fds). They only observe: they always allow.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use probe_common::{assert_symbol_name, names::programs};

use crate::{open_times, umount};

/// `security_sb_umount(struct vfsmount *mnt, int flags)`.
#[lsm(hook = "sb_umount")]
pub fn lsm_sb_umount(ctx: LsmContext) -> i32 {
    umount::on_sb_umount(ctx.arg::<u64>(0));
    0
}
assert_symbol_name!(lsm_sb_umount, programs::LSM_SB_UMOUNT);

/// `security_file_open(struct file *file)`.
#[lsm(hook = "file_open")]
pub fn lsm_file_open(ctx: LsmContext) -> i32 {
    open_times::on_file_open(ctx.arg::<u64>(0));
    0
}
assert_symbol_name!(lsm_file_open, programs::LSM_FILE_OPEN);
