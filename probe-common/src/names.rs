//! The names the kernel side and user space agree on: programs, maps and globals of the eBPF
//! object, written here once and used by both sides.
//!
//! The aya macros in `probe-ebpf` take a program's or map's symbol from its identifier (they
//! accept only a string literal, never a constant), so the kernel side ties each identifier to
//! its name here with [`assert_symbol_name!`](crate::assert_symbol_name), a compile-time check;
//! the offset globals are declared from the same list as their names here
//! ([`with_offset_globals!`](crate::with_offset_globals)). User space names everything through
//! these constants, and a test in `probe-user` checks that the built object has each of them.

/// Whether `a` and `b` are the same string (usable in constants, where `==` on `&str` is not).
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Fails the build unless the identifier `$symbol` (a `#[map]` static, a program function or a
/// `#[no_mangle]` global: the aya macros make its identifier its symbol) is spelled as `$name`,
/// a constant of [`names`](crate::names).
#[macro_export]
macro_rules! assert_symbol_name {
    ($symbol:ident, $name:expr) => {
        const _: () = assert!(
            $crate::names::same(stringify!($symbol), $name),
            concat!(
                "`",
                stringify!($symbol),
                "` is not spelled as its name in probe_common::names"
            )
        );
    };
}

/// One `&str` constant per name (its value the identifier itself unless given), and `ALL`.
macro_rules! names {
    ($($(#[$doc:meta])* $name:ident $(= $value:literal)?;)*) => {
        $(
            $(#[$doc])*
            pub const $name: &str = names!(@value $name $($value)?);
        )*
        /// Every name of this module, in the order they are declared.
        pub const ALL: &[&str] = &[$($name),*];
    };
    (@value $name:ident) => { stringify!($name) };
    (@value $name:ident $value:literal) => { $value };
}

/// Programs, by the name of their function in the object.
pub mod programs {
    names! {
        /// Tracepoint `syscalls:sys_enter_umount`: an unmount attempt enters.
        SYS_ENTER_UMOUNT = "sys_enter_umount";
        /// Tracepoint `syscalls:sys_exit_umount`: an unmount attempt returns.
        SYS_EXIT_UMOUNT = "sys_exit_umount";
        /// Tracepoint on the open family's entries (open times).
        SYS_ENTER_OPEN = "sys_enter_open";
        /// Tracepoint on the open family's exits (open times).
        SYS_EXIT_OPEN = "sys_exit_open";
        /// Tracepoint `syscalls:sys_enter_close` (release tracking).
        SYS_ENTER_CLOSE = "sys_enter_close";
        /// Tracepoint on `dup2`/`dup3` entries (release tracking).
        SYS_ENTER_DUP = "sys_enter_dup";
        /// Tracepoint `syscalls:sys_enter_close_range` (release tracking).
        SYS_ENTER_CLOSE_RANGE = "sys_enter_close_range";
        /// Tracepoint on `execve`/`execveat` entries (release tracking).
        SYS_ENTER_EXEC = "sys_enter_exec";
        /// Tracepoint on `chdir`/`fchdir` entries (release tracking).
        SYS_ENTER_CHDIR = "sys_enter_chdir";
        /// Tracepoint `syscalls:sys_enter_chroot` (release tracking).
        SYS_ENTER_CHROOT = "sys_enter_chroot";
        /// Tracepoint on the exits of `chdir`, `fchdir` and `chroot` (release tracking).
        SYS_EXIT_DIR_CHANGE = "sys_exit_dir_change";
        /// Tracepoint `syscalls:sys_enter_munmap` (release tracking).
        SYS_ENTER_MUNMAP = "sys_enter_munmap";
        /// Tracepoint `sched:sched_process_exit` (release tracking, both modes).
        SCHED_PROCESS_EXIT = "sched_process_exit";
        /// fentry on `__x64_sys_umount`.
        FENTRY_UMOUNT = "fentry_umount";
        /// fexit on `__x64_sys_umount`.
        FEXIT_UMOUNT = "fexit_umount";
        /// fentry on `__x64_sys_open`.
        FENTRY_OPEN = "fentry_open";
        /// fentry on `__x64_sys_openat`.
        FENTRY_OPENAT = "fentry_openat";
        /// fentry on `__x64_sys_openat2`.
        FENTRY_OPENAT2 = "fentry_openat2";
        /// fentry on `__x64_sys_creat`.
        FENTRY_CREAT = "fentry_creat";
        /// fexit on `__x64_sys_open`.
        FEXIT_OPEN = "fexit_open";
        /// fexit on `__x64_sys_openat`.
        FEXIT_OPENAT = "fexit_openat";
        /// fexit on `__x64_sys_openat2`.
        FEXIT_OPENAT2 = "fexit_openat2";
        /// fexit on `__x64_sys_creat`.
        FEXIT_CREAT = "fexit_creat";
        /// fentry on `__x64_sys_close`.
        FENTRY_CLOSE = "fentry_close";
        /// fentry on `__x64_sys_dup2`.
        FENTRY_DUP2 = "fentry_dup2";
        /// fentry on `__x64_sys_dup3`.
        FENTRY_DUP3 = "fentry_dup3";
        /// fentry on `__x64_sys_close_range`.
        FENTRY_CLOSE_RANGE = "fentry_close_range";
        /// fentry on `__x64_sys_execve`.
        FENTRY_EXECVE = "fentry_execve";
        /// fentry on `__x64_sys_execveat`.
        FENTRY_EXECVEAT = "fentry_execveat";
        /// fentry on `__x64_sys_chdir`.
        FENTRY_CHDIR = "fentry_chdir";
        /// fentry on `__x64_sys_fchdir`.
        FENTRY_FCHDIR = "fentry_fchdir";
        /// fentry on `__x64_sys_chroot`.
        FENTRY_CHROOT = "fentry_chroot";
        /// fexit on `__x64_sys_chdir`.
        FEXIT_CHDIR = "fexit_chdir";
        /// fexit on `__x64_sys_fchdir`.
        FEXIT_FCHDIR = "fexit_fchdir";
        /// fexit on `__x64_sys_chroot`.
        FEXIT_CHROOT = "fexit_chroot";
        /// fentry on `__x64_sys_munmap`.
        FENTRY_MUNMAP = "fentry_munmap";
        /// Iterator `iter/task_file`: the holder scan's open files.
        SCAN_TASK_FILE = "scan_task_file";
        /// Iterator `iter/task`: the holder scan's cwd, root and executable.
        SCAN_TASK = "scan_task";
        /// Iterator `iter/task_vma`: the holder scan's file mappings.
        SCAN_TASK_VMA = "scan_task_vma";
        /// BPF LSM `sb_umount` (enhanced mode): the exact mount of an unmount attempt.
        LSM_SB_UMOUNT = "lsm_sb_umount";
        /// BPF LSM `file_open` (enhanced mode): open times of every open, the ones no `open*`
        /// syscall makes included.
        LSM_FILE_OPEN = "lsm_file_open";
        /// fentry on `fanotify_read` (enhanced mode): a listener starts reading its events,
        /// each opened as an event fd (which the `file_open` hook then marks as such).
        FENTRY_FANOTIFY_READ = "fentry_fanotify_read";
        /// fexit on `fanotify_read` (enhanced mode): the listener is done reading.
        FEXIT_FANOTIFY_READ = "fexit_fanotify_read";
        /// `busyprobe doctor`'s raw tracepoint.
        DOCTOR_RAW_TRACEPOINT = "doctor_raw_tracepoint";
        /// `busyprobe doctor`'s BTF-typed tracepoint.
        DOCTOR_TP_BTF = "doctor_tp_btf";
    }
}

/// The maps user space opens or sizes (the kernel side's private ones are not listed).
pub mod maps {
    names! {
        /// The ring buffer of events, kernel to user space.
        EVENTS;
        /// Per-CPU loss counters, indexed by [`DropCause`](crate::DropCause).
        DROPS;
        /// Unmount attempts between entry and exit, by thread.
        UMOUNT_INFLIGHT;
        /// The mount ids a holder scan looks for.
        SCAN_MOUNTS;
        /// Per-CPU counts of what a holder scan visited.
        SCAN_COUNTS;
        /// `(pid, fd)` → when a file on a tracked mount was opened.
        OPEN_TIMES;
        /// Per CPU, rings of tracked mounts' recent opens.
        RECENT_OPENS_BY_MOUNT;
        /// The mount filter of release tracking and open times.
        TRACKED_MOUNTS;
        /// The contended mounts (an unmount of theirs failed with EBUSY), whose opens are
        /// timed with `--open-times contended`.
        CONTENDED_MOUNTS;
    }
}

/// Read-only globals other than the offsets, set (or settable) before load.
pub mod globals {
    names! {
        /// `u8`: 1 when [`TRACKED_MOUNTS`](super::maps::TRACKED_MOUNTS) lists the tracked
        /// mounts (`--path`), 0 when it lists the untracked ones.
        FILTER_IS_ALLOW_LIST;
        /// `u64`: how long after an EBUSY releases are reported, in ns. The loader leaves the
        /// object's default (2 s).
        BUSY_WINDOW_NS;
        /// `u8`: 1 when opens are timed only on the mounts in
        /// [`CONTENDED_MOUNTS`](super::maps::CONTENDED_MOUNTS) (`--open-times contended`), 0
        /// on every tracked mount.
        OPEN_TIMES_WHERE_CONTENDED;
        /// `u8`: 1 when the `file_open` hook times opens (enhanced mode): the open syscalls'
        /// exits then time only `O_PATH` files, which the hook never sees.
        FILE_OPEN_HOOKED;
    }
}

/// Calls `$callback! { ... }` with every kernel offset global (a `u32` each, set by the loader
/// from BTF), each as its doc comment and identifier, comma-separated. The kernel side
/// declares the globals from it, and [`offsets`] holds their names.
#[macro_export]
macro_rules! with_offset_globals {
    ($callback:ident) => {
        $callback! {
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
            /// `files_struct.next_fd`.
            OFF_FILES_NEXT_FD,
            /// `fdtable.open_fds`.
            OFF_FDT_OPEN_FDS,
            /// `file.f_mode`.
            OFF_FILE_F_MODE,
            /// `file.f_flags`.
            OFF_FILE_F_FLAGS,
            /// `super_block.s_dev`.
            OFF_SB_DEV,
            /// `super_block.s_root`.
            OFF_SB_ROOT,
        }
    };
}

/// The kernel struct offset globals (`u32` each; [`OFFSET_UNKNOWN`](crate::OFFSET_UNKNOWN)
/// when the kernel's BTF lacks the field), from [`with_offset_globals!`](crate::with_offset_globals).
pub mod offsets {
    /// The names from the list's identifiers, their docs kept.
    macro_rules! offset_names {
        ($($(#[$doc:meta])* $name:ident,)*) => {
            names! { $($(#[$doc])* $name;)* }
        };
    }
    crate::with_offset_globals!(offset_names);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("EVENTS", "EVENTS"));
        assert!(!same("EVENTS", "EVENT"));
        assert!(!same("EVENTS", "EVENTZ"));
        assert!(same("", ""));
    }

    #[test]
    fn every_list_is_complete_and_without_repeats() {
        for (module, all, expected) in [
            ("programs", programs::ALL, 45),
            ("maps", maps::ALL, 9),
            ("globals", globals::ALL, 4),
            ("offsets", offsets::ALL, 47),
        ] {
            assert_eq!(all.len(), expected, "{module}");
            for (i, name) in all.iter().enumerate() {
                assert!(!all[..i].contains(name), "{module}: {name} twice");
            }
        }
        assert_eq!(offsets::OFF_TASK_COMM, "OFF_TASK_COMM");
        assert_eq!(programs::FEXIT_UMOUNT, "fexit_umount");
    }
}
