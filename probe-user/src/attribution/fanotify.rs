//! fanotify listeners whose marks cover the target. Their queued, unread events hold the
//! mounts they were opened through, while the listener holds no fd there; a `/proc` scan sees
//! only the marks (`/proc/PID/fdinfo/FD`), never the queue, so these are *suspects*.

use std::fs;

use crate::state::process::proc_path;

/// A mark of a fanotify group, as fdinfo lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// `fanotify mnt_id:HEX`: a mount mark.
    Mount(u64),
    /// `fanotify sdev:HEX` without `ino:`: a filesystem mark (kernel `dev_t`).
    Filesystem(u64),
    /// `fanotify ino:HEX sdev:HEX`: an inode mark on that filesystem.
    Inode {
        /// Inode number.
        ino: u64,
        /// Kernel `dev_t` of the filesystem.
        sdev: u64,
    },
}

/// The marks listed in a fanotify fd's fdinfo text.
pub fn parse_marks(fdinfo: &str) -> Vec<Mark> {
    fdinfo
        .lines()
        .filter_map(|l| l.strip_prefix("fanotify "))
        .filter_map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            match (field("mnt_id:"), field("ino:"), field("sdev:")) {
                (Some(id), _, _) => Some(Mark::Mount(id)),
                (None, Some(ino), Some(sdev)) => Some(Mark::Inode { ino, sdev }),
                (None, None, Some(sdev)) => Some(Mark::Filesystem(sdev)),
                _ => None,
            }
        })
        .collect()
}

/// The marks of `pid`'s fanotify fd `fd`.
pub fn marks_of(pid: u32, fd: i32) -> Vec<Mark> {
    fs::read_to_string(proc_path(pid, &format!("fdinfo/{fd}")))
        .map(|t| parse_marks(&t))
        .unwrap_or_default()
}

/// The kernel's `dev_t` encoding (`MAJOR << 20 | MINOR`), as fdinfo prints `sdev`.
pub fn kernel_dev(major: u32, minor: u32) -> u64 {
    (u64::from(major) << 20) | u64::from(minor)
}

/// Why `mark` makes a listener a suspect for mount `mount_id` on device `dev` (kernel
/// encoding), or `None` when it does not cover it.
pub fn covers(mark: Mark, mount_id: u64, dev: u64) -> Option<String> {
    match mark {
        Mark::Mount(id) if id == mount_id => Some(format!("mount mark on mount {id}")),
        Mark::Filesystem(sdev) if sdev == dev => Some(format!("filesystem mark on sdev {sdev:#x}")),
        Mark::Inode { ino, sdev } if sdev == dev => {
            Some(format!("inode mark on inode {ino} of sdev {sdev:#x}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FDINFO: &str = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\n\
fanotify flags:10 event-flags:0\n\
fanotify mnt_id:2a mflags:0 mask:3b ignored_mask:0\n\
fanotify sdev:800013 mflags:0 mask:3b ignored_mask:0\n\
fanotify ino:7b sdev:800013 mflags:0 mask:1 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:7b00000000000000\n";

    #[test]
    fn parses_mount_filesystem_and_inode_marks() {
        assert_eq!(
            parse_marks(FDINFO),
            [
                Mark::Mount(0x2a),
                Mark::Filesystem(0x800013),
                Mark::Inode {
                    ino: 0x7b,
                    sdev: 0x800013
                }
            ]
        );
    }

    #[test]
    fn a_mark_covers_its_mount_or_filesystem() {
        let dev = kernel_dev(8, 19);
        assert_eq!(dev, 0x800013);
        assert_eq!(
            covers(Mark::Mount(42), 42, dev).as_deref(),
            Some("mount mark on mount 42")
        );
        assert_eq!(covers(Mark::Mount(41), 42, dev), None);
        assert!(covers(Mark::Filesystem(dev), 1, dev)
            .unwrap()
            .contains("filesystem mark"));
        assert!(covers(Mark::Inode { ino: 5, sdev: dev }, 1, dev)
            .unwrap()
            .contains("inode 5"));
        assert_eq!(covers(Mark::Filesystem(dev + 1), 1, dev), None);
    }
}
