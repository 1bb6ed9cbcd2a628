//! The tracked-mount filter of release tracking and open times: by default every mount but
//! those listed in `TRACKED_MOUNTS` (this namespace's root and pseudo mounts, kept by user
//! space) and pseudo filesystems by superblock magic; with `--path`
//! (`FILTER_IS_ALLOW_LIST`), only the listed ones.

use crate::{
    fanotify::MountFilter,
    kernel::{path_mount, read, read_ptr},
    maps::{FILTER_IS_ALLOW_LIST, TRACKED_MOUNTS},
    offsets::{self, OFF_SB_MAGIC, OFF_VFSMOUNT_SB},
};

/// Superblock magic numbers of pseudo filesystems, never tracked in any namespace (so that
/// no map of mount ids, which the kernel reuses at once, has to follow every namespace); the
/// kernel's internal mounts (pipes, sockets, anonymous inodes) are in no mount table at all.
const PSEUDO_MAGICS: [u64; 23] = [
    0x5049_5045, // pipefs (pipes)
    0x534f_434b, // sockfs (sockets)
    0x0904_1934, // anon_inodefs (eventfd, epoll, bpf links...)
    0x5049_4446, // pidfs
    0x6264_6576, // bdev
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x1cd1,      // devpts
    0x7472_6163, // tracefs
    0x6462_6720, // debugfs
    0xcafe_4a11, // bpf
    0x7363_6673, // securityfs
    0x6165_676c, // pstore
    0x1980_0202, // mqueue
    0x9584_58f6, // hugetlbfs
    0x6265_6570, // configfs
    0x6573_5543, // fusectl
    0x4249_4e4d, // binfmt_misc
    0x0187,      // autofs
    0x6e73_6673, // nsfs
    0xde5e_81e4, // efivarfs
];

/// Whether opens and releases on the mount `vfsmount` (id `mnt_id`) matter. With an allow
/// list (`--path`) it must be listed; otherwise it must not be listed (this namespace's root
/// and pseudo mounts) and must not be a pseudo filesystem.
pub fn tracked(vfsmount: u64, mnt_id: u32) -> bool {
    // SAFETY: presence check only.
    let listed = unsafe { TRACKED_MOUNTS.get(mnt_id) }.is_some();
    if FILTER_IS_ALLOW_LIST.load() == 1 {
        return listed;
    }
    !listed && !is_pseudo(vfsmount)
}

fn is_pseudo(vfsmount: u64) -> bool {
    let magic = offsets::get(&OFF_VFSMOUNT_SB)
        .and_then(|o| read_ptr(vfsmount, o))
        .and_then(|sb| read::<u64>(sb + offsets::get(&OFF_SB_MAGIC)?));
    matches!(magic, Some(m) if PSEUDO_MAGICS.contains(&m))
}

/// Release tracking's filter for fanotify queues: the tracked mounts.
pub struct Tracked;

impl MountFilter for Tracked {
    const SLOT: u32 = 1;

    fn wants(path: u64) -> Option<u32> {
        let (vfsmount, mnt_id) = path_mount(path)?;
        tracked(vfsmount, mnt_id).then_some(mnt_id)
    }
}
