//! Every mount namespace on the host, each with one live process to look through
//! (`/proc/PID/root`, `/proc/PID/mountinfo`) and its mount table.

use std::{collections::BTreeMap, fs, os::unix::fs::MetadataExt, path::PathBuf};

use crate::state::mountinfo::{self, MountEntry};

/// Where `/proc` is.
pub const PROC: &str = "/proc";

/// The pids listed in `/proc` (processes, not threads), in ascending order.
pub fn pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir(PROC)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Inode of a process's mount namespace.
pub fn mntns_of(pid: u32) -> Option<u64> {
    fs::metadata(format!("{PROC}/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// `/proc/PID/<rest>`.
pub fn proc_path(pid: u32, rest: &str) -> PathBuf {
    PathBuf::from(format!("{PROC}/{pid}/{rest}"))
}

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

/// A live process in mount namespace `mntns`, preferring `preferred` when it is still there.
pub fn process_in(mntns: u64, preferred: u32) -> Option<u32> {
    let preferred_ns = mntns_of(preferred);
    if preferred_ns.is_some() && (mntns == 0 || preferred_ns == Some(mntns)) {
        return Some(preferred);
    }
    if mntns == 0 {
        return None;
    }
    pids().into_iter().find(|&pid| mntns_of(pid) == Some(mntns))
}
