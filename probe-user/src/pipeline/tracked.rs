//! The kernel's mount filter (`TRACKED_MOUNTS`): which mounts' opens and releases matter.
//! By default every mount of every namespace except this namespace's root and pseudo
//! filesystems: the map is then a *deny list* of those, so that a new mount is tracked the
//! moment it appears. With `--path` only mounts under the prefix: an *allow list*, kept in
//! step with the mount tables (a new mount is tracked once the tables show it).

use std::collections::{HashMap, HashSet};

use aya::maps::{HashMap as BpfHashMap, MapData};

use crate::{
    paths,
    state::{mount_cache::OnTables, mountinfo::MountEntry},
};

/// Filesystems whose files never pin an unmount anyone cares about.
const PSEUDO: [&str; 20] = [
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devtmpfs",
    "devpts",
    "tracefs",
    "debugfs",
    "bpf",
    "securityfs",
    "pstore",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
];

/// Keeps the kernel map equal to the mounts it should list.
pub struct TrackedMounts {
    map: BpfHashMap<MapData, u32, u8>,
    home: Vec<u64>,
    prefix: Option<Vec<u8>>,
    synced: HashSet<u32>,
}

impl TrackedMounts {
    /// Tracks through `map`; `prefix` narrows to mounts at or below it.
    pub fn new(map: BpfHashMap<MapData, u32, u8>, prefix: Option<Vec<u8>>) -> Self {
        // Ours, and the host's (pid 1): under systemd's ProtectSystem we run in a copy of it.
        let home = [std::process::id(), 1]
            .iter()
            .filter_map(|&p| crate::state::process::mntns_of(p))
            .collect();
        Self {
            map,
            home,
            prefix,
            synced: HashSet::new(),
        }
    }
}

/// Whether the kernel map is an allow list (with a prefix) rather than a deny list.
pub fn is_allow_list(prefix: Option<&[u8]>) -> bool {
    prefix.is_some()
}

/// The mount ids the kernel map must list: with a prefix, the tracked mounts; without, the
/// root and pseudo mounts of the `home` namespaces (ours and the host's; pseudo filesystems
/// elsewhere are recognised by the kernel from their superblock, so the deny list never
/// follows other namespaces, whose mount ids the kernel reuses as soon as they die).
pub fn listed(
    tables: &HashMap<u64, Vec<MountEntry>>,
    home: &[u64],
    prefix: Option<&[u8]>,
) -> HashSet<u32> {
    let tracked = |ns: u64, m: &MountEntry| {
        let our_root = home.contains(&ns) && m.mount_point == b"/";
        let pseudo = PSEUDO.contains(&m.fstype.as_str());
        !our_root && !pseudo && prefix.is_none_or(|p| paths::is_under(&m.mount_point, p))
    };
    tables
        .iter()
        .flat_map(|(ns, mounts)| mounts.iter().map(move |m| (*ns, m)))
        .filter(|(ns, _)| is_allow_list(prefix) || home.contains(ns))
        .filter(|(ns, m)| tracked(*ns, m) == is_allow_list(prefix))
        .filter_map(|(_, m)| u32::try_from(m.id).ok())
        .collect()
}

impl OnTables for TrackedMounts {
    fn tables_changed(&mut self, tables: &HashMap<u64, Vec<MountEntry>>) {
        let want = listed(tables, &self.home, self.prefix.as_deref());
        for gone in self.synced.difference(&want).copied().collect::<Vec<_>>() {
            let _ = self.map.remove(&gone);
            self.synced.remove(&gone);
        }
        for new in want.difference(&self.synced).copied().collect::<Vec<_>>() {
            match self.map.insert(new, 1, 0) {
                Ok(()) => {
                    self.synced.insert(new);
                }
                Err(e) => {
                    tracing::warn!("cannot track mount {new} ({e}): its releases will not be seen")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::mountinfo::parse_line;

    #[test]
    fn lists_what_is_denied_or_allowed() {
        let line = |l: &[u8]| parse_line(l).unwrap();
        let tables = HashMap::from([
            (
                1,
                vec![
                    line(b"1 1 8:1 / / rw - ext4 /dev/sda1 rw"),
                    line(b"2 1 0:5 / /proc rw - proc proc rw"),
                    line(b"3 1 0:50 / /var/lib/x rw - tmpfs t rw"),
                ],
            ),
            (
                2,
                vec![
                    line(b"10 10 0:60 / / rw - overlay overlay rw"),
                    line(b"11 10 0:61 / /data rw - ext4 /dev/sdb rw"),
                ],
            ),
        ]);
        let denied = listed(&tables, &[1], None);
        assert_eq!(
            denied,
            HashSet::from([1, 2]),
            "our root and /proc are denied; a container's root is not"
        );
        let allowed = listed(&tables, &[1], Some(b"/var/lib"));
        assert_eq!(allowed, HashSet::from([3]));
        assert!(is_allow_list(Some(b"/x")) && !is_allow_list(None));
    }
}
