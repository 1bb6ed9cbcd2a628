//! Copies of the target mount in other mount namespaces.
//!
//! An unmount propagates through the target's *parent*: the kernel (`propagate_mount_busy` in
//! fs/pnode.c) looks, in every mount that receives propagation from the parent (its peers and
//! slaves, in any namespace), at the copy mounted at the same place, and fails with EBUSY when
//! that copy is busy. So a copy counts when its parent is a peer (`shared:N`) or a slave
//! (`master:N`) of the target's parent's peer group N, *and* it has no submounts of its own
//! other than one mount covering it entirely (the kernel skips such copies, and the unmount
//! leaves them in place). Any other copy (the parent is private, as after `unshare -m` with
//! the default private propagation) cannot cause EBUSY: it is reported, never blamed, and it
//! keeps the filesystem alive after the unmount.

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
    /// Its parent's propagation there (`parent shared:5`): what decides whether it counts.
    pub propagation: String,
    /// Whether the unmount propagates to it, so that its being busy makes the unmount fail.
    pub counted: bool,
}

/// Whether a copy whose parent is `copy_parent` receives unmount propagation from a target
/// whose parent is `target_parent`.
pub fn receives_propagation(
    target_parent: Option<&MountEntry>,
    copy_parent: Option<&MountEntry>,
) -> bool {
    let (Some(tp), Some(cp)) = (target_parent, copy_parent) else {
        return false;
    };
    match tp.propagation.shared {
        Some(group) => cp.propagation.shared == Some(group) || cp.propagation.master == Some(group),
        None => false,
    }
}

/// Other mounts of the same filesystem and root as `target` (the target's own namespace
/// included: a bind mount of a shared parent makes a copy there too). `target_parent` is
/// the target's parent mount in its namespace.
pub fn find<'a>(
    target: &MountEntry,
    target_parent: Option<&MountEntry>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
) -> Vec<MountCopy> {
    let mut copies = Vec::new();
    for ns in namespaces {
        for m in ns
            .mounts
            .iter()
            .filter(|m| same_filesystem_and_root(target, m))
        {
            let parent = ns.mount(m.parent);
            let mut propagation = parent.map_or_else(
                || "parent unknown".into(),
                |p| format!("parent {}", p.propagation.describe()),
            );
            let mut counted = receives_propagation(target_parent, parent);
            if counted && has_submounts(ns, m) {
                counted = false;
                propagation.push_str("; it has submounts of its own, so the kernel skips it");
            }
            copies.push(MountCopy {
                id: m.id,
                mntns: ns.mntns,
                pid: ns.pid,
                mount_point: m.mount_point.clone(),
                propagation,
                counted,
            });
        }
    }
    copies
}

/// Whether `target` is still mounted in `recheck`, its own namespace read again after every
/// other table. Copies are told by device and root: a target unmounted meanwhile may have
/// left its device number (and its id) to a new mount in another namespace, which would pass
/// for a copy, so copies are only looked for while the target is still there.
pub fn still_mounted(target: &MountEntry, recheck: Option<&Namespace>) -> bool {
    recheck
        .and_then(|ns| ns.mount(target.id))
        .is_some_and(|m| m.shows_same_tree(target))
}

/// Whether `m` has children other than a single mount covering its root (`find_topper`).
fn has_submounts(ns: &Namespace, m: &MountEntry) -> bool {
    let children: Vec<&MountEntry> = ns.children(m.id).collect();
    match children.as_slice() {
        [] => false,
        [topper] => topper.mount_point != m.mount_point,
        _ => true,
    }
}

fn same_filesystem_and_root(a: &MountEntry, b: &MountEntry) -> bool {
    a.shows_same_tree(b) && a.id != b.id
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
    fn copies_under_peers_and_slaves_of_the_parent_count_others_do_not() {
        let host = ns(
            1,
            10,
            &[
                b"1 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw",
                b"100 1 0:50 / /mnt rw shared:7 - tmpfs t rw",
            ],
        );
        let target = host.mount(100).unwrap().clone();
        let namespaces = [
            host.clone(),
            ns(
                2,
                20,
                &[
                    b"2 2 8:1 / / rw shared:1 - ext4 /dev/sda1 rw",
                    b"200 2 0:50 / /mnt rw shared:7 - tmpfs t rw",
                ],
            ),
            ns(
                3,
                30,
                &[
                    b"3 3 8:1 / / rw master:1 - ext4 /dev/sda1 rw",
                    b"300 3 0:50 / /mnt rw master:7 - tmpfs t rw",
                ],
            ),
            ns(
                4,
                40,
                &[
                    b"4 4 8:1 / / rw - ext4 /dev/sda1 rw",
                    b"400 4 0:50 / /mnt rw shared:7 - tmpfs t rw",
                ],
            ),
            ns(
                5,
                50,
                &[
                    b"5 5 8:1 / / rw shared:1 - ext4 /dev/sda1 rw",
                    b"500 5 0:51 / /mnt rw - tmpfs t rw",
                ],
            ),
        ];
        let copies = find(&target, host.mount(1), &namespaces);
        let summary: Vec<_> = copies
            .iter()
            .map(|c| (c.id, c.mntns, c.pid, c.counted, c.propagation.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (200, 2, 20, true, "parent shared:1"),
                (300, 3, 30, true, "parent master:1"),
                (400, 4, 40, false, "parent private")
            ]
        );
    }

    #[test]
    fn a_copy_with_submounts_is_skipped_a_covered_one_is_not() {
        let host = ns(
            1,
            10,
            &[
                b"1 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw",
                b"100 1 0:50 / /mnt rw shared:7 - tmpfs t rw",
            ],
        );
        let target = host.mount(100).unwrap().clone();
        let with_sub = ns(
            2,
            20,
            &[
                b"2 2 8:1 / / rw master:1 - ext4 /dev/sda1 rw",
                b"200 2 0:50 / /mnt rw master:7 - tmpfs t rw",
                b"201 200 0:60 / /mnt/sub rw - tmpfs s rw",
            ],
        );
        let covered = ns(
            3,
            30,
            &[
                b"3 3 8:1 / / rw master:1 - ext4 /dev/sda1 rw",
                b"300 3 0:50 / /mnt rw master:7 - tmpfs t rw",
                b"301 300 0:61 / /mnt rw - tmpfs c rw",
            ],
        );
        let copies = find(&target, host.mount(1), [&host, &with_sub, &covered]);
        let summary: Vec<_> = copies.iter().map(|c| (c.id, c.counted)).collect();
        assert_eq!(summary, [(200, false), (300, true)]);
        assert!(
            copies[0].propagation.contains("submounts of its own"),
            "{}",
            copies[0].propagation
        );
    }

    #[test]
    fn copies_are_looked_for_only_while_the_target_is_still_mounted() {
        let target = parse_line(b"100 1 0:50 / /mnt rw shared:7 - tmpfs t rw").unwrap();
        let there = ns(1, 10, &[b"100 1 0:50 / /mnt rw shared:7 - tmpfs t rw"]);
        assert!(still_mounted(&target, Some(&there)));
        // Unmounted; its id reused by another filesystem; the namespace unreadable.
        let gone = ns(1, 10, &[b"1 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw"]);
        let reused = ns(1, 10, &[b"100 1 0:51 / /other rw - tmpfs u rw"]);
        assert!(!still_mounted(&target, Some(&gone)));
        assert!(!still_mounted(&target, Some(&reused)));
        assert!(!still_mounted(&target, None));
    }

    #[test]
    fn nothing_propagates_below_a_private_parent() {
        let tp = parse_line(b"1 1 8:1 / / rw - ext4 /dev/sda1 rw").unwrap();
        let cp = parse_line(b"2 2 8:1 / / rw shared:1 - ext4 /dev/sda1 rw").unwrap();
        assert!(!receives_propagation(Some(&tp), Some(&cp)));
        assert!(!receives_propagation(None, Some(&cp)));
    }
}
