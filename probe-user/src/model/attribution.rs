//! What an attribution found: the mount ([`MountSummary`]), its holders, the recent
//! accessors and the processes that could not be inspected, and how much was looked at.

use std::collections::HashSet;

use crate::model::{Holder, HolderKind, MountCopy, Seen};
use crate::state::mountinfo::MountEntry;

/// The mount that was attributed, as reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSummary {
    /// Mount id.
    pub id: u64,
    /// Mount namespace it was resolved in.
    pub mntns: u64,
    /// Its mountinfo entry there.
    pub entry: MountEntry,
}

/// How much was looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coverage {
    /// How processes were scanned.
    pub method: Seen,
    /// Processes walked.
    pub processes: usize,
    /// File descriptors examined.
    pub fds: usize,
    /// Mount namespaces whose tables were read.
    pub namespaces: usize,
}

/// Everything known about who holds one mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    /// The mount.
    pub mount: MountSummary,
    /// Whether the path asked about is the mount's root (a mount point).
    pub is_mount_point: bool,
    /// Holders: blamed ones first, then information (private copies).
    pub holders: Vec<Holder>,
    /// Its copies in other mount namespaces (and bind copies in its own), counted or not:
    /// those of the namespaces read for the scan and, in a watch, those the mount-table cache
    /// knew at the pass (namespaces gone since included). Not written out: release tracking
    /// tells with them which releases were on a copy.
    pub copies: Vec<MountCopy>,
    /// Processes that opened a file on the mount shortly before the call and no longer
    /// held it: context, not holders (filled when open times are on).
    pub accessors: Vec<Accessor>,
    /// Processes that could not be inspected.
    pub uninspectable: Vec<Uninspectable>,
    /// What was scanned.
    pub coverage: Coverage,
}

impl Attribution {
    /// The holders that can make an unmount fail.
    fn blamed(&self) -> impl Iterator<Item = &Holder> {
        self.holders.iter().filter(|h| h.blamed)
    }

    /// Marks the holders that are the failing call's own process (`pid`).
    pub fn mark_caller(&mut self, pid: u32) {
        for h in &mut self.holders {
            h.by_caller = h.process.as_ref().is_some_and(|p| p.pid == pid);
        }
    }

    /// The kinds of its blamed holders, each once, in [`HolderKind`] order.
    pub fn blamed_kinds(&self) -> Vec<HolderKind> {
        let mut kinds: Vec<HolderKind> = self.blamed().map(|h| h.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }

    /// The process names (`comm`) of its blamed holders, each once, in byte order.
    pub fn blamed_process_names(&self) -> Vec<&[u8]> {
        let mut names: Vec<&[u8]> = self
            .blamed()
            .filter_map(|h| h.process.as_ref())
            .map(|p| p.comm.as_slice())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The target's mount id and those of the copies whose holders are blamed: the mounts
    /// whose holders make the unmount fail.
    pub fn blamed_mount_ids(&self) -> HashSet<u64> {
        let mut ids: HashSet<u64> = self.blamed().map(|h| h.mount_id).collect();
        ids.insert(self.mount.id);
        ids
    }

    /// Adds the copies of `more` not already known (by mount id and namespace); a known one
    /// whose namespace's container is not known takes the one `more` knows.
    pub fn add_copies(&mut self, more: impl IntoIterator<Item = MountCopy>) {
        for copy in more {
            match self
                .copies
                .iter_mut()
                .find(|c| (c.id, c.mntns) == (copy.id, copy.mntns))
            {
                Some(known) => {
                    if known.container.is_none() {
                        known.container = copy.container;
                    }
                }
                None => self.copies.push(copy),
            }
        }
    }

    /// Whether any holder can make an unmount fail.
    pub fn has_blamed(&self) -> bool {
        self.blamed().next().is_some()
    }

    /// For an EBUSY that nothing explains: an `unknown` holder saying what was checked.
    pub fn add_unknown_if_unexplained(&mut self) {
        if self.has_blamed() {
            return;
        }
        let c = self.coverage;
        if c.namespaces == 0 {
            let mut unknown = Holder::new(HolderKind::Unknown, self.mount.id, c.method);
            unknown.note = Some(
                "nothing found: every process of the caller's mount namespace had exited before the scan, and its mounts with it; no release traced after the call matched".into(),
            );
            self.holders.push(unknown);
            return;
        }
        let mut note = format!(
            "nothing found: checked {} processes ({} fds, cwd, root, exe, mappings), {} mount namespaces, submounts, loop devices, swap files and fanotify marks",
            c.processes, c.fds, c.namespaces
        );
        if !self.uninspectable.is_empty() {
            note.push_str(&format!(
                "; {} processes could not be inspected",
                self.uninspectable.len()
            ));
        }
        note.push_str(
            "; not visible to a scan: a holder that let go before the scan, fds passed over Unix sockets and not yet received, references held inside the kernel",
        );
        let mut unknown = Holder::new(HolderKind::Unknown, self.mount.id, c.method);
        unknown.note = Some(note);
        self.holders.push(unknown);
    }
}

/// An attribution of tmpfs mount 812 at `mount_point` with `holders`, for tests.
#[cfg(test)]
pub(crate) fn sample_attribution(mount_point: &str, holders: Vec<Holder>) -> Attribution {
    let line = format!("812 1 0:50 / {mount_point} rw - tmpfs t rw");
    let entry = crate::state::mountinfo::parse_line(line.as_bytes()).unwrap();
    Attribution {
        mount: MountSummary {
            id: 812,
            mntns: 0,
            entry,
        },
        is_mount_point: true,
        holders,
        copies: Vec::new(),
        accessors: Vec::new(),
        uninspectable: Vec::new(),
        coverage: Coverage {
            method: Seen::KernelScan,
            processes: 1,
            fds: 1,
            namespaces: 1,
        },
    }
}

/// A process that opened a file on the mount shortly before the failing call and, by the
/// time of the scan, held it no more (it let go before the call, or the scan would have seen it
/// or the release been traced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accessor {
    /// Process id.
    pub pid: u32,
    /// Its `comm` at the open.
    pub comm: Vec<u8>,
    /// The fd it got.
    pub fd: u32,
    /// The mount (the target or a counted copy).
    pub mount_id: u64,
    /// How long before the call it opened the file.
    pub opened_ns_before: u64,
    /// Whether the opener was the caller itself (its thread group, under any `comm`): not
    /// another process's activity, written apart (`caller_accesses`).
    pub by_caller: bool,
}

/// A process that could not be inspected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uninspectable {
    /// Its pid.
    pub pid: u32,
    /// Its comm, if that could be read.
    pub comm: Vec<u8>,
    /// What failed (`EACCES reading /proc/PID/fd`).
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Container, Runtime};

    fn copy(id: u64, container: Option<&str>) -> MountCopy {
        MountCopy {
            id,
            mntns: 7,
            pid: None,
            mount_point: b"/vol/m".to_vec(),
            propagation: "parent master:1".into(),
            counted: true,
            container: container.map(|id| Container {
                runtime: Runtime::Containerd,
                id: Some(id.into()),
                pod_uid: None,
                k8s: None,
            }),
        }
    }

    /// A copy the scan found (its namespace's container not read) and the same copy from the
    /// mount-table cache (with it) are one copy, with the container.
    #[test]
    fn a_copy_known_twice_is_kept_once_with_the_container_either_knew() {
        let mut a = sample_attribution("/m", Vec::new());
        a.copies = vec![copy(200, None), copy(300, Some("c"))];
        a.add_copies([copy(200, Some("a")), copy(300, Some("b")), copy(400, None)]);
        let got: Vec<(u64, Option<&str>)> = a
            .copies
            .iter()
            .map(|c| (c.id, c.container.as_ref().and_then(|c| c.id.as_deref())))
            .collect();
        assert_eq!(got, [(200, Some("a")), (300, Some("c")), (400, None)]);
    }
}
