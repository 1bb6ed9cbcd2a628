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
pub use crate::model::MountCopy;
use crate::state::{mount_cache::KnownTables, mountinfo::MountEntry};

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
    namespaces
        .into_iter()
        .flat_map(|ns| in_table(target, target_parent, ns.mntns, Some(ns.pid), &ns.mounts))
        .collect()
}

/// [`find`] in the tables the mount-table cache remembers around `target` (of namespace
/// `mntns`), removed mounts included: the copies of namespaces that died since the call (a
/// container deleted right after the failure) too. No process is known to look through them.
/// When the target has left the table of its namespace, which lives on (unmounted since),
/// the copies that counted went with it, and a copy still mounted may be a new mount on the
/// device it freed: then only removed copies are kept. Each copy carries the container of its
/// namespace, as the cache knew it while the copy was there.
pub fn find_remembered(target: &MountEntry, mntns: u64, known: &KnownTables) -> Vec<MountCopy> {
    let parent = known
        .tables
        .get(&mntns)
        .and_then(|table| table.iter().find(|m| m.id == target.parent));
    let unmounted = known.lives(mntns) && !known.is_current(mntns, target.id);
    let mut namespaces: Vec<&u64> = known.tables.keys().collect();
    namespaces.sort_unstable();
    namespaces
        .into_iter()
        .flat_map(|ns| in_table(target, parent, *ns, None, &known.tables[ns]))
        .filter(|c| !unmounted || !known.is_current(c.mntns, c.id))
        .map(|c| MountCopy {
            container: known.container_of(c.mntns, c.id).cloned(),
            ..c
        })
        .collect()
}

/// The copies of `target` in namespace `mntns`, whose table is `mounts` (`pid`: a process in
/// it, if one is known).
fn in_table(
    target: &MountEntry,
    target_parent: Option<&MountEntry>,
    mntns: u64,
    pid: Option<u32>,
    mounts: &[MountEntry],
) -> Vec<MountCopy> {
    mounts
        .iter()
        .filter(|m| same_filesystem_and_root(target, m))
        .map(|m| {
            let parent = mounts.iter().find(|p| p.id == m.parent);
            let mut propagation = parent.map_or_else(
                || "parent unknown".into(),
                |p| format!("parent {}", p.propagation.describe()),
            );
            let mut counted = receives_propagation(target_parent, parent);
            if counted && has_submounts(mounts, m) {
                counted = false;
                propagation.push_str("; it has submounts of its own, so the kernel skips it");
            }
            MountCopy {
                id: m.id,
                mntns,
                pid,
                mount_point: m.mount_point.clone(),
                propagation,
                counted,
                container: None,
            }
        })
        .collect()
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

/// Whether `m` has children in `mounts` other than a single mount covering its root
/// (`find_topper`).
fn has_submounts(mounts: &[MountEntry], m: &MountEntry) -> bool {
    let children: Vec<&MountEntry> = mounts
        .iter()
        .filter(|c| c.parent == m.id && c.id != m.id)
        .collect();
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
            .map(|c| {
                (
                    c.id,
                    c.mntns,
                    c.pid.unwrap(),
                    c.counted,
                    c.propagation.as_str(),
                )
            })
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
    fn copies_of_namespaces_gone_since_are_found_in_the_remembered_tables() {
        let line = |l: &[u8]| parse_line(l).unwrap();
        let target = line(b"100 1 0:50 / /mnt rw shared:7 - tmpfs t rw");
        let mut known = KnownTables::default();
        known.tables.insert(
            1,
            vec![
                line(b"1 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw"),
                target.clone(),
            ],
        );
        known.current.insert(1, [1, 100].into());
        // Namespace 3 is gone (a container deleted): only its remembered table is left.
        known.tables.insert(
            3,
            vec![
                line(b"300 3 0:50 / /mnt rw master:7 - tmpfs t rw"),
                line(b"3 3 8:1 / / rw master:1 - ext4 /dev/sda1 rw"),
            ],
        );
        // Namespace 4 lives, with a copy mounted.
        known.tables.insert(
            4,
            vec![
                line(b"4 4 8:1 / / rw master:1 - ext4 /dev/sda1 rw"),
                line(b"400 4 0:50 / /mnt rw master:7 - tmpfs t rw"),
            ],
        );
        known.current.insert(4, [4, 400].into());
        let summary = |known: &KnownTables| -> Vec<(u64, u64, Option<u32>, bool)> {
            find_remembered(&target, 1, known)
                .iter()
                .map(|c| (c.id, c.mntns, c.pid, c.counted))
                .collect()
        };
        assert_eq!(
            summary(&known),
            [(300, 3, None, true), (400, 4, None, true)]
        );
        // Each copy with its namespace's container, as the cache knew it.
        let container = crate::container::from_cgroup_path(
            b"/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        );
        known
            .containers
            .insert((3, 300), container.clone().unwrap());
        let containers: Vec<_> = find_remembered(&target, 1, &known)
            .into_iter()
            .map(|c| c.container)
            .collect();
        assert_eq!(containers, [container, None]);
        // The target unmounted since: its counted copies went with it, so a copy still
        // mounted may be a new mount on the device it freed. The removed one is kept.
        known.current.insert(1, [1].into());
        assert_eq!(summary(&known), [(300, 3, None, true)]);
    }

    #[test]
    fn nothing_propagates_below_a_private_parent() {
        let tp = parse_line(b"1 1 8:1 / / rw - ext4 /dev/sda1 rw").unwrap();
        let cp = parse_line(b"2 2 8:1 / / rw shared:1 - ext4 /dev/sda1 rw").unwrap();
        assert!(!receives_propagation(Some(&tp), Some(&cp)));
        assert!(!receives_propagation(None, Some(&cp)));
    }
}
