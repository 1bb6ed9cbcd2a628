//! Reading kernel memory at `base + offset` through `bpf_probe_read_kernel`, tracepoint
//! record fields, and the walk from a `struct file` or `struct path` to its mount and mount id.

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext, EbpfContext};

use crate::offsets::{
    self, OFF_FILE_F_PATH, OFF_MNT_NS_INUM, OFF_MOUNT_MNT, OFF_MOUNT_MNT_ID, OFF_MOUNT_MNT_NS,
    OFF_PATH_MNT, OFF_SB_DEV, OFF_SB_ROOT, OFF_VFSMOUNT_ROOT, OFF_VFSMOUNT_SB,
};

/// Reads a `T` at kernel address `addr`.
#[inline(always)]
pub fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_kernel(addr as *const T).ok() }
}

/// `sys_exit_*` tracepoint formats: `long ret` at 16.
pub const SYS_EXIT_RET: usize = 16;

/// Reads the tracepoint record's field at `offset` with a direct load (the verifier checks the
/// offset against the record; cheaper than a `bpf_probe_read_kernel`).
#[inline(always)]
pub fn tracepoint_field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: `offset` comes from the tracepoint's fixed format and is aligned for `T`.
    unsafe { *(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

/// Reads a non-null pointer at `base + offset`.
#[inline(always)]
pub fn read_ptr(base: u64, offset: u64) -> Option<u64> {
    read::<u64>(base + offset).filter(|&p| p != 0)
}

/// The `struct mount` around the `struct vfsmount` at `vfsmount`.
#[inline(always)]
fn mount_of(vfsmount: u64) -> Option<u64> {
    vfsmount.checked_sub(offsets::get(&OFF_MOUNT_MNT)?)
}

/// Mount id of the `struct vfsmount` at `vfsmount`.
#[inline(always)]
pub fn vfsmount_id(vfsmount: u64) -> Option<u32> {
    read::<u32>(mount_of(vfsmount)? + offsets::get(&OFF_MOUNT_MNT_ID)?)
}

/// The filesystem of the `struct vfsmount` at `vfsmount`: its device (`s_dev`, the kernel's
/// encoding) and whether the mount shows it from its root (`mnt_root == s_root`).
pub fn vfsmount_fs(vfsmount: u64) -> Option<(u32, bool)> {
    let sb = read_ptr(vfsmount, offsets::get(&OFF_VFSMOUNT_SB)?)?;
    let dev = read::<u32>(sb + offsets::get(&OFF_SB_DEV)?)?;
    let fs_root = read_ptr(sb, offsets::get(&OFF_SB_ROOT)?)?;
    let mnt_root = read_ptr(vfsmount, offsets::get(&OFF_VFSMOUNT_ROOT)?)?;
    Some((dev, fs_root == mnt_root))
}

/// Inode number of the mount namespace the `struct vfsmount` at `vfsmount` is in; 0 when it
/// is in none (detached) or the offsets are unknown.
#[inline(always)]
pub fn vfsmount_ns(vfsmount: u64) -> u32 {
    mount_of(vfsmount)
        .and_then(|m| read_ptr(m, offsets::get(&OFF_MOUNT_MNT_NS)?))
        .and_then(namespace_inum)
        .unwrap_or(0)
}

/// Inode number of the `struct mnt_namespace` at `mnt_ns`.
#[inline(always)]
pub fn namespace_inum(mnt_ns: u64) -> Option<u32> {
    read::<u32>(mnt_ns + offsets::get(&OFF_MNT_NS_INUM)?)
}

/// Mount id of the `struct path` at `path`.
#[inline(always)]
pub fn path_mount_id(path: u64) -> Option<u32> {
    vfsmount_id(read_ptr(path, offsets::get(&OFF_PATH_MNT)?)?)
}

/// Mount id of the `struct file` at `file`.
#[inline(always)]
pub fn file_mount_id(file: u64) -> Option<u32> {
    path_mount_id(file + offsets::get(&OFF_FILE_F_PATH)?)
}

/// The vfsmount and mount id of the file at `file`.
pub fn file_mount(file: u64) -> Option<(u64, u32)> {
    path_mount(file + offsets::get(&OFF_FILE_F_PATH)?)
}

/// The vfsmount and mount id of the `struct path` at `path`.
pub fn path_mount(path: u64) -> Option<(u64, u32)> {
    let vfsmount = read_ptr(path, offsets::get(&OFF_PATH_MNT)?)?;
    Some((vfsmount, vfsmount_id(vfsmount)?))
}
