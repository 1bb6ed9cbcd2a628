//! `statx(2)` for what mounts are about: the mount id of a path (following magic links such
//! as `/proc/PID/fd/N`, so the answer is the mount the open file was reached through).

use std::{ffi::CString, io, mem::MaybeUninit, os::unix::ffi::OsStrExt, path::Path};

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
    mount_of_following(path, true)
}

/// The mount `path` resolves to; a symlink as its last component is followed only when
/// `follow` (as `umount2` does without `UMOUNT_NOFOLLOW`).
pub fn mount_of_following(path: &Path, follow: bool) -> io::Result<MountOf> {
    let flags = match follow {
        true => libc::AT_STATX_SYNC_AS_STAT,
        false => libc::AT_STATX_SYNC_AS_STAT | libc::AT_SYMLINK_NOFOLLOW,
    };
    let c_path =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: valid NUL-terminated path and a writable statx buffer.
    let ret = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
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
    fn a_symlink_is_followed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("to-proc");
        std::os::unix::fs::symlink("/proc", &link).unwrap();
        let proc = mount_of(Path::new("/proc")).unwrap();
        assert_eq!(mount_of_following(&link, true).unwrap(), proc);
        let here = mount_of(dir.path()).unwrap().mount_id;
        let not_followed = mount_of_following(&link, false).unwrap();
        assert_eq!(not_followed.mount_id, here);
        assert!(!not_followed.is_mount_root);
    }
}
