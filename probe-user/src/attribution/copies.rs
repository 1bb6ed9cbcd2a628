//! Copies of the target mount in other mount namespaces.
//!
//! Unmounting a shared mount checks every mount it propagates to: the kernel
//! (`propagate_mount_busy`) fails with EBUSY when a copy that receives the unmount (a peer in
//! the same peer group, or a slave of it) is busy. A private copy (made by `unshare -m` of a
//! private mount, or `mount --make-private` after the copy) does not receive the unmount and
//! cannot cause EBUSY: it is reported, never blamed.

use super::namespaces::Namespace;
use crate::state::mountinfo::MountEntry;

/// A copy of the target in another namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountCopy {
    /// The copy's mount id.
    pub id: u64,
    /// The namespace it lives in.
    pub mntns: u64,
    /// A process in that namespace.
    pub pid: u32,
    /// Where it is mounted there.
    pub mount_point: Vec<u8>,
    /// Its propagation, as mountinfo shows it there.
    pub propagation: String,
    /// Whether the unmount propagates to it, so that its being busy makes the unmount fail.
    pub counted: bool,
}

/// Whether `copy` (same filesystem, same root) receives unmount propagation from `target`.
pub fn receives_propagation(target: &MountEntry, copy: &MountEntry) -> bool {
    match target.propagation.shared {
        Some(group) => {
            copy.propagation.shared == Some(group) || copy.propagation.master == Some(group)
        }
        None => false,
    }
}

/// Mounts of the same filesystem and root as `target` in namespaces other than `own`.
pub fn find<'a>(
    target: &MountEntry,
    own: u64,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
) -> Vec<MountCopy> {
    let mut copies = Vec::new();
    for ns in namespaces.into_iter().filter(|ns| ns.mntns != own) {
        for m in ns
            .mounts
            .iter()
            .filter(|m| same_filesystem_and_root(target, m))
        {
            copies.push(MountCopy {
                id: m.id,
                mntns: ns.mntns,
                pid: ns.pid,
                mount_point: m.mount_point.clone(),
                propagation: m.propagation.describe(),
                counted: receives_propagation(target, m),
            });
        }
    }
    copies
}

fn same_filesystem_and_root(a: &MountEntry, b: &MountEntry) -> bool {
    (a.major, a.minor) == (b.major, b.minor) && a.root == b.root && a.id != b.id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::mountinfo::parse_line;

    fn ns(mntns: u64, pid: u32, lines: &[&[u8]]) -> Namespace {
        Namespace {
            mntns,
            pid,
            mounts: lines.iter().map(|l| parse_line(l).unwrap()).collect(),
        }
    }

    #[test]
    fn peers_and_slaves_are_counted_private_copies_are_not() {
        let target = parse_line(b"100 1 0:50 / /mnt rw shared:7 - tmpfs t rw").unwrap();
        let namespaces = [
            ns(1, 10, &[b"100 1 0:50 / /mnt rw shared:7 - tmpfs t rw"]),
            ns(2, 20, &[b"200 2 0:50 / /mnt rw shared:7 - tmpfs t rw"]),
            ns(3, 30, &[b"300 3 0:50 / /host/mnt rw master:7 - tmpfs t rw"]),
            ns(
                4,
                40,
                &[
                    b"400 4 0:50 / /mnt rw - tmpfs t rw",
                    b"401 4 0:50 /sub /other rw - tmpfs t rw",
                ],
            ),
            ns(5, 50, &[b"500 5 0:51 / /mnt rw shared:7 - tmpfs t rw"]),
        ];
        let copies = find(&target, 1, &namespaces);
        let summary: Vec<_> = copies
            .iter()
            .map(|c| (c.id, c.mntns, c.pid, c.counted, c.propagation.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (200, 2, 20, true, "shared:7"),
                (300, 3, 30, true, "master:7"),
                (400, 4, 40, false, "private")
            ]
        );
        assert_eq!(copies[1].mount_point, b"/host/mnt");
    }

    #[test]
    fn nothing_propagates_from_a_private_target() {
        let target = parse_line(b"100 1 0:50 / /mnt rw - tmpfs t rw").unwrap();
        let copy = parse_line(b"200 2 0:50 / /mnt rw shared:7 - tmpfs t rw").unwrap();
        assert!(!receives_propagation(&target, &copy));
    }
}
