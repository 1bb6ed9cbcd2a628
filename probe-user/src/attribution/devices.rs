//! Holders that are not processes: loop devices backed by a file on the mount
//! (`/sys/block/loopN/loop/backing_file`) and swap files on it (`/proc/swaps`).

use std::{collections::HashSet, ffi::OsStr, fs, os::unix::ffi::OsStrExt, path::PathBuf};

use crate::state::{mountinfo::unescape, process::proc_path, statx};

/// A backing file found on one of the mounts of interest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackedBy {
    /// `/dev/loop3`, or the swap file itself.
    pub device: String,
    /// The file, as the kernel names it.
    pub file: Vec<u8>,
    /// The mount it is on.
    pub mount_id: u64,
}

/// Loop devices whose backing file is on one of `ids`. Paths are resolved through each of
/// `viewers`' roots (the kernel names the file relative to the namespace it lives in).
pub fn loop_devices(ids: &HashSet<u64>, viewers: &[u32]) -> Vec<BackedBy> {
    let Ok(dir) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let file = trim_backing_file(&raw);
        if let Some(mount_id) = mount_of_file(&file, ids, viewers) {
            found.push(BackedBy {
                device: format!("/dev/{name}"),
                file,
                mount_id,
            });
        }
    }
    found.sort_by(|a, b| a.device.cmp(&b.device));
    found
}

/// Swap files on one of `ids`.
pub fn swap_files(ids: &HashSet<u64>, viewers: &[u32]) -> Vec<BackedBy> {
    let Ok(text) = fs::read("/proc/swaps") else {
        return Vec::new();
    };
    text.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let mut fields = line
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|f| !f.is_empty());
            let file = unescape(fields.next()?);
            (fields.next()? == b"file").then_some(file)
        })
        .filter_map(|file| {
            let mount_id = mount_of_file(&file, ids, viewers)?;
            Some(BackedBy {
                device: String::from_utf8_lossy(&file).into_owned(),
                file,
                mount_id,
            })
        })
        .collect()
}

/// The backing file path without its newline and ` (deleted)` mark.
fn trim_backing_file(raw: &[u8]) -> Vec<u8> {
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    line.strip_suffix(b" (deleted)").unwrap_or(line).to_vec()
}

/// The mount of interest `file` is on, looking through each viewer's root in turn.
fn mount_of_file(file: &[u8], ids: &HashSet<u64>, viewers: &[u32]) -> Option<u64> {
    let rel = file.strip_prefix(b"/").unwrap_or(file);
    viewers.iter().find_map(|&pid| {
        let path: PathBuf = proc_path(pid, "root").join(OsStr::from_bytes(rel));
        let id = statx::mount_of(&path).ok()?.mount_id;
        ids.contains(&id).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_the_sysfs_backing_file() {
        assert_eq!(trim_backing_file(b"/srv/disk.img\n"), b"/srv/disk.img");
        assert_eq!(
            trim_backing_file(b"/srv/disk.img (deleted)\n"),
            b"/srv/disk.img"
        );
        assert_eq!(trim_backing_file(b"/a b"), b"/a b");
    }

    #[test]
    fn resolves_files_through_a_viewers_root() {
        let me = std::process::id();
        let id = statx::mount_of(std::path::Path::new("/proc/self"))
            .unwrap()
            .mount_id;
        assert_eq!(
            mount_of_file(b"/proc/self/status", &HashSet::from([id]), &[me]),
            Some(id)
        );
        assert_eq!(
            mount_of_file(
                b"/proc/self/status",
                &HashSet::from([id + 1_000_000]),
                &[me]
            ),
            None
        );
    }
}
