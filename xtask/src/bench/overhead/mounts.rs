//! Which mount a path is on, and that mount's filesystem type.

use std::{fs, fs::File, os::fd::AsRawFd, path::Path};

use anyhow::{Context, Result};

/// The id of the mount `path` is on (`mnt_id` in `/proc/self/fdinfo` of an fd on it).
pub fn mount_id(path: &Path) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd()))?;
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("mnt_id:")?.trim().parse().ok())
        .with_context(|| format!("no mnt_id in the fdinfo of {}", path.display()))
}

/// The filesystem type (`ext4`, `tmpfs`, `overlay`...) of the mount `path` is on, as this
/// namespace's mount table names it.
pub fn fs_type(path: &Path) -> Result<String> {
    let id = mount_id(path)?;
    let table = fs::read_to_string("/proc/self/mountinfo")?;
    fs_type_in(&table, id)
        .with_context(|| format!("mount {id} ({}) is not in mountinfo", path.display()))
}

/// The filesystem type of mount `id` in a mountinfo table: the first field after ` - `.
fn fs_type_in(mountinfo: &str, id: u64) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()?.parse::<u64>().ok()? == id).then_some(())?;
        let (_, after) = line.split_once(" - ")?;
        Some(after.split_whitespace().next()?.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_and_proc_are_different_mounts() {
        let root = mount_id(Path::new("/")).unwrap();
        assert_ne!(root, mount_id(Path::new("/proc/self")).unwrap());
    }

    #[test]
    fn filesystem_types_come_from_the_line_of_the_mount() {
        let table = "\
            22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            23 22 0:21 / /proc rw shared:2 - proc proc rw\n\
            230 22 0:50 / /tmp/x rw - tmpfs busyprobe-bench rw,size=4096k\n";
        assert_eq!(fs_type_in(table, 22).as_deref(), Some("ext4"));
        assert_eq!(fs_type_in(table, 230).as_deref(), Some("tmpfs"));
        assert_eq!(fs_type_in(table, 2), None);
        assert_eq!(fs_type(Path::new("/proc/self")).unwrap(), "proc");
    }
}
