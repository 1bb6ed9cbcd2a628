//! Every mount namespace on the host, each with one live process to look through
//! (`/proc/PID/root`, `/proc/PID/mountinfo`) and its mount table.

use std::collections::BTreeMap;

use crate::state::{
    mountinfo::{self, MountEntry},
    process::{mntns_of, pids, proc_path},
};

/// One mount namespace as seen through one of its processes.
#[derive(Clone, Debug)]
pub struct Namespace {
    /// Inode of the namespace.
    pub mntns: u64,
    /// A process in it (the lowest pid found).
    pub pid: u32,
    /// Its mount table, read through that process.
    pub mounts: Vec<MountEntry>,
}

impl Namespace {
    /// Reads the namespace `pid` lives in.
    pub fn of_pid(pid: u32) -> Option<Self> {
        let mntns = mntns_of(pid)?;
        let mounts = mountinfo::read(&proc_path(pid, "mountinfo")).ok()?;
        Some(Self { mntns, pid, mounts })
    }

    /// The mount with this id.
    pub fn mount(&self, id: u64) -> Option<&MountEntry> {
        self.mounts.iter().find(|m| m.id == id)
    }

    /// Mounts directly below `id`.
    pub fn children(&self, id: u64) -> impl Iterator<Item = &MountEntry> {
        self.mounts
            .iter()
            .filter(move |m| m.parent == id && m.id != id)
    }
}

/// Every mount namespace, keyed by inode, each read through its lowest pid.
pub fn all_namespaces() -> BTreeMap<u64, Namespace> {
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for pid in pids() {
        if let Some(ns) = mntns_of(pid) {
            seen.entry(ns).or_insert(pid);
        }
    }
    seen.into_values()
        .filter_map(Namespace::of_pid)
        .map(|ns| (ns.mntns, ns))
        .collect()
}
