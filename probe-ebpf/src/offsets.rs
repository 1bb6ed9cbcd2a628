//! Kernel struct field offsets, one read-only global each, set by the loader from the
//! running kernel's BTF (Rust eBPF has no CO-RE). `u32::MAX` means unknown: the code that
//! needs it does nothing.

use aya_ebpf::Global;

macro_rules! offsets {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            pub static $name: Global<u32> = Global::new(u32::MAX);
        )*
    };
}

offsets!(
    /// `task_struct.nsproxy`.
    OFF_TASK_NSPROXY,
    /// `nsproxy.mnt_ns`.
    OFF_NSPROXY_MNT_NS,
    /// `mnt_namespace.ns.inum`.
    OFF_MNT_NS_INUM,
    /// `task_struct.tgid`.
    OFF_TASK_TGID,
    /// `task_struct.pid`.
    OFF_TASK_PID,
    /// `task_struct.fs`.
    OFF_TASK_FS,
    /// `task_struct.mm`.
    OFF_TASK_MM,
    /// `mm_struct.exe_file`.
    OFF_MM_EXE_FILE,
    /// `fs_struct.root`.
    OFF_FS_ROOT,
    /// `fs_struct.pwd`.
    OFF_FS_PWD,
    /// `file.f_path`.
    OFF_FILE_F_PATH,
    /// `file.private_data`.
    OFF_FILE_PRIVATE_DATA,
    /// `path.mnt`.
    OFF_PATH_MNT,
    /// `path.dentry`.
    OFF_PATH_DENTRY,
    /// `mount.mnt` (the `vfsmount` inside `struct mount`).
    OFF_MOUNT_MNT,
    /// `mount.mnt_id`.
    OFF_MOUNT_MNT_ID,
    /// `mount.mnt_ns`.
    OFF_MOUNT_MNT_NS,
    /// `dentry.d_name.name`.
    OFF_DENTRY_NAME,
    /// `fsnotify_group.notification_list`.
    OFF_GROUP_NOTIFICATION_LIST,
    /// `fsnotify_group.q_len`.
    OFF_GROUP_Q_LEN,
    /// Byte offset of the 32-bit word holding `fanotify_event.type`.
    OFF_FAN_TYPE_WORD,
    /// Bit shift of `fanotify_event.type` in that word.
    FAN_TYPE_SHIFT,
    /// Bit width of `fanotify_event.type`.
    FAN_TYPE_WIDTH,
    /// `FANOTIFY_EVENT_TYPE_PATH`.
    FAN_TYPE_PATH,
    /// `FANOTIFY_EVENT_TYPE_PATH_PERM`.
    FAN_TYPE_PATH_PERM,
    /// `fanotify_path_event.path`.
    OFF_FAN_PATH_EVENT_PATH,
    /// `vm_area_struct.vm_file`.
    OFF_VMA_FILE,
    /// `vm_area_struct.vm_start`.
    OFF_VMA_START,
    /// `vm_area_struct.vm_end`.
    OFF_VMA_END,
    /// `task_struct.files`.
    OFF_TASK_FILES,
    /// `files_struct.fdt`.
    OFF_FILES_FDT,
    /// `fdtable.fd`.
    OFF_FDT_FD,
    /// `fdtable.max_fds`.
    OFF_FDT_MAX_FDS,
    /// `dentry.d_parent`.
    OFF_DENTRY_PARENT,
    /// `vfsmount.mnt_root`.
    OFF_VFSMOUNT_ROOT,
    /// `vfsmount.mnt_sb`.
    OFF_VFSMOUNT_SB,
    /// `super_block.s_magic`.
    OFF_SB_MAGIC,
    /// `files_struct.count`.
    OFF_FILES_COUNT,
    /// `fdtable.close_on_exec`.
    OFF_FDT_CLOSE_ON_EXEC,
    /// `fs_struct.users`.
    OFF_FS_USERS,
    /// `task_struct.comm`.
    OFF_TASK_COMM,
);

/// The offset held by `global`, or `None` when it is unknown.
#[inline(always)]
pub fn get(global: &Global<u32>) -> Option<u64> {
    let v = global.load();
    (v != u32::MAX).then_some(u64::from(v))
}
