//! `statx(2)` for what mounts are about: the mount id of a path (following magic links such
//! as `/proc/PID/fd/N`, so the answer is the mount the open file was reached through).

use std::{
    ffi::{CStr, CString},
    io,
    mem::MaybeUninit,
    os::{
        fd::{AsRawFd, BorrowedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// Mount id and device of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountOf {
    /// `stx_mnt_id` (the mountinfo id).
    pub mount_id: u64,
    /// Device of the filesystem: major.
    pub dev_major: u32,
    /// Device of the filesystem: minor.
    pub dev_minor: u32,
    /// Inode number.
    pub ino: u64,
    /// The path is the root of its mount (a mount point, as seen through it).
    pub is_mount_root: bool,
}

/// The mount `path` resolves to (symlinks and magic links followed).
pub fn mount_of(path: &Path) -> io::Result<MountOf> {
    let c_path =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    statx_at(libc::AT_FDCWD, &c_path, libc::AT_STATX_SYNC_AS_STAT)
}

/// The mount of the file `fd` is open on (an `O_PATH` fd will do), from the attributes the
/// kernel has cached: no round trip to a network filesystem's server or a FUSE daemon.
pub fn mount_of_fd(fd: BorrowedFd<'_>) -> io::Result<MountOf> {
    statx_at(
        fd.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
    )
}

fn statx_at(dirfd: RawFd, path: &CStr, flags: i32) -> io::Result<MountOf> {
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: valid NUL-terminated path and a writable statx buffer.
    let ret = unsafe {
        libc::statx(
            dirfd,
            path.as_ptr(),
            flags,
            libc::STATX_MNT_ID | libc::STATX_INO,
            buf.as_mut_ptr(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded and filled the buffer.
    let stx = unsafe { buf.assume_init() };
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gave no mount id (kernel older than 5.8)",
        ));
    }
    let is_mount_root = stx.stx_attributes_mask & (libc::STATX_ATTR_MOUNT_ROOT as u64) != 0
        && stx.stx_attributes & (libc::STATX_ATTR_MOUNT_ROOT as u64) != 0;
    Ok(MountOf {
        mount_id: stx.stx_mnt_id,
        dev_major: stx.stx_dev_major,
        dev_minor: stx.stx_dev_minor,
        ino: stx.stx_ino,
        is_mount_root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_proc_are_different_mounts() {
        let root = mount_of(Path::new("/")).unwrap();
        let proc = mount_of(Path::new("/proc/self")).unwrap();
        assert_ne!(root.mount_id, proc.mount_id);
        assert!(root.is_mount_root);
        assert!(mount_of(Path::new("/proc")).unwrap().is_mount_root);
        assert!(!proc.is_mount_root);
        let cwd = mount_of(Path::new("/proc/self/cwd")).unwrap();
        assert_eq!(cwd, mount_of(&std::env::current_dir().unwrap()).unwrap());
        assert!(mount_of(Path::new("/no/such/path")).is_err());
    }

    #[test]
    fn an_fd_names_its_mount_without_syncing() {
        let dir = std::fs::File::open("/proc").unwrap();
        let of = mount_of_fd(std::os::fd::AsFd::as_fd(&dir)).unwrap();
        assert_eq!(of, mount_of(Path::new("/proc")).unwrap());
        assert!(of.is_mount_root);
    }
}
