//! The kernel's set of tracked mounts (`TRACKED_MOUNTS`): the mounts whose releases the busy
//! window reports. Every mount of every namespace except this namespace's root and pseudo
//! filesystems, or only those under `--path`; kept in step with the mount tables.

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

/// Keeps the kernel map equal to the mounts that should be tracked.
pub struct TrackedMounts {
    map: BpfHashMap<MapData, u32, u8>,
    own_mntns: u64,
    prefix: Option<Vec<u8>>,
    synced: HashSet<u32>,
}

impl TrackedMounts {
    /// Tracks through `map`; `prefix` narrows to mounts at or below it.
    pub fn new(map: BpfHashMap<MapData, u32, u8>, prefix: Option<Vec<u8>>) -> Self {
        let own_mntns = crate::attribution::namespaces::mntns_of(std::process::id()).unwrap_or(0);
        Self {
            map,
            own_mntns,
            prefix,
            synced: HashSet::new(),
        }
    }
}

/// The mount ids to track in these tables.
pub fn wanted(
    tables: &HashMap<u64, Vec<MountEntry>>,
    own_mntns: u64,
    prefix: Option<&[u8]>,
) -> HashSet<u32> {
    tables
        .iter()
        .flat_map(|(ns, mounts)| mounts.iter().map(move |m| (*ns, m)))
        .filter(|(ns, m)| !(*ns == own_mntns && m.mount_point == b"/"))
        .filter(|(_, m)| !PSEUDO.contains(&m.fstype.as_str()))
        .filter(|(_, m)| prefix.is_none_or(|p| paths::is_under(&m.mount_point, p)))
        .filter_map(|(_, m)| u32::try_from(m.id).ok())
        .collect()
}

impl OnTables for TrackedMounts {
    fn tables_changed(&mut self, tables: &HashMap<u64, Vec<MountEntry>>) {
        let want = wanted(tables, self.own_mntns, self.prefix.as_deref());
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
    fn tracks_all_but_our_root_and_pseudo_filesystems() {
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
        let all = wanted(&tables, 1, None);
        assert_eq!(
            all,
            HashSet::from([3, 10, 11]),
            "a container's root is tracked, ours is not"
        );
        let under = wanted(&tables, 1, Some(b"/var/lib"));
        assert_eq!(under, HashSet::from([3]));
    }
}
