//! A copy of the attributed mount in another mount namespace ([`MountCopy`]).

use crate::container::Container;

/// A copy of the target in another namespace (or a bind copy in its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountCopy {
    /// The copy's mount id.
    pub id: u64,
    /// The namespace it lives in.
    pub mntns: u64,
    /// A process in that namespace; none for a copy known only from the mount tables
    /// remembered since (its namespace may be gone).
    pub pid: Option<u32>,
    /// Where it is mounted there.
    pub mount_point: Vec<u8>,
    /// Its parent's propagation there (`parent shared:5`): what decides whether it counts.
    pub propagation: String,
    /// Whether the unmount propagates to it, so that its being busy makes the unmount fail.
    pub counted: bool,
    /// The container whose own namespace `mntns` is (was), as the mount-table cache read it
    /// from one of its processes when it found the namespace; none when not known, or for a
    /// namespace that is no container's (the host's, busyprobe's, a service's).
    pub container: Option<Container>,
}

impl MountCopy {
    /// The copy in words, for the note of a holder on it: `copy (mount 200) at /mnt in
    /// mount namespace 4026532115 (parent shared:1, receives the unmount)`.
    pub fn describe(&self) -> String {
        let role = if self.counted {
            "receives the unmount"
        } else {
            "cannot cause EBUSY"
        };
        format!(
            "copy (mount {}) at {} in mount namespace {} ({}, {role})",
            self.id,
            String::from_utf8_lossy(&self.mount_point),
            self.mntns,
            self.propagation
        )
    }
}
