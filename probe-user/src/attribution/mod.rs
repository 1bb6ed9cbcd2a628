//! Attribution: who holds a mount. Given the mount a target resolves to, finds every holder
//! of every kind in every mount and PID namespace: processes' fds, cwd, root, executable and
//! mappings; submounts; copies in other namespaces that receive the unmount; loop devices;
//! swap files; fanotify listeners whose marks cover it.

pub mod copies;
pub mod devices;
pub mod fanotify;
pub mod kernel_scan;
pub mod namespaces;
pub mod proc_scan;
pub mod target;

use std::collections::HashSet;

use anyhow::Result;

use self::{
    copies::MountCopy,
    namespaces::Namespace,
    proc_scan::ScanOutcome,
    target::{TargetMount, Viewpoint},
};
use crate::{
    model::{Attribution, Coverage, Holder, HolderKind, HolderProcess, MountSummary, Seen},
    state::{mountinfo::MountEntry, process},
};

/// How the processes were scanned.
pub enum Scanner<'a> {
    /// Walk `/proc`.
    Proc,
    /// Run the BPF iterators; falls back to `/proc` (with a warning) if a run fails.
    Kernel(&'a mut kernel_scan::KernelScanner),
}

impl Scanner<'_> {
    fn scan(&mut self, ids: &HashSet<u64>) -> ScanOutcome {
        match self {
            Scanner::Proc => proc_scan::scan(ids),
            Scanner::Kernel(k) => k.scan(ids).unwrap_or_else(|e| {
                tracing::warn!("kernel holder scan failed ({e:#}); walking /proc instead");
                proc_scan::scan(ids)
            }),
        }
    }
}

/// Resolves `path` as `view` sees it and attributes the mount it names.
pub fn attribute(view: Viewpoint, path: &[u8], scanner: &mut Scanner) -> Result<Attribution> {
    let target = target::resolve(view, path)?;
    Ok(attribute_mount(&target, scanner))
}

/// Finds every holder of `target`'s mount.
pub fn attribute_mount(target: &TargetMount, scanner: &mut Scanner) -> Attribution {
    let namespaces = namespaces::all_namespaces();
    let own_ns = target.namespace.mntns;
    let parent = target.namespace.mount(target.entry.parent);
    let copies = if copies::still_mounted(&target.entry, reread(&target.namespace).as_ref()) {
        copies::find(&target.entry, parent, namespaces.values())
    } else {
        tracing::debug!(
            "mount {} left namespace {own_ns} before its copies could be told apart: none looked for",
            target.entry.id
        );
        Vec::new()
    };
    let mut ids: HashSet<u64> = copies.iter().map(|c| c.id).collect();
    ids.insert(target.entry.id);
    let scan = scanner.scan(&ids);

    let mut holders = process_holders(target.entry.id, &scan, &copies);
    holders.retain(|h| {
        !on_a_reused_id(h, &target.entry, |mntns, pid, id| {
            match namespaces.get(&mntns) {
                Some(ns) => ns.mount(id).cloned(),
                // A namespace born after the snapshot: read now.
                None => Namespace::of_pid(pid)
                    .filter(|n| n.mntns == mntns)?
                    .mount(id)
                    .cloned(),
            }
        })
    });
    holders.extend(submount_holders(target));
    let mut viewers: Vec<u32> = vec![target.namespace.pid];
    viewers.extend(copies.iter().map(|c| c.pid));
    viewers.push(std::process::id());
    holders.extend(backing_file_holders(&ids, &viewers));
    holders.extend(fanotify_holders(target, &scan));
    holders.extend(private_copy_notes(&copies, &holders));
    holders.sort_by_key(|h| (!h.blamed, h.kind, h.process.as_ref().map(|p| p.pid), h.fd));

    Attribution {
        mount: MountSummary {
            id: target.entry.id,
            mntns: own_ns,
            entry: target.entry.clone(),
        },
        is_mount_point: target.is_mount_point,
        holders,
        accessors: Vec::new(),
        uninspectable: scan.uninspectable,
        coverage: Coverage {
            method: scan.method,
            processes: scan.processes,
            fds: scan.fds,
            namespaces: namespaces.len(),
        },
    }
}

/// `ns` read again, through any process still in it.
fn reread(ns: &Namespace) -> Option<Namespace> {
    let pid = process::process_in(ns.mntns, ns.pid)?;
    Namespace::of_pid(pid).filter(|again| again.mntns == ns.mntns)
}

/// What keeps a filesystem alive after `unmounted` was successfully unmounted (plain or
/// lazy): other mounts of the same filesystem and root in any namespace, and processes still
/// holding the (lazily detached) mount. Empty when nothing does.
pub fn alive_after_unmount(unmounted: &MountEntry, scanner: &mut Scanner) -> Vec<Holder> {
    let namespaces = namespaces::all_namespaces();
    let mut holders: Vec<Holder> = Vec::new();
    for ns in namespaces.values() {
        for m in ns.mounts.iter().filter(|m| m.shows_same_tree(unmounted)) {
            let mut h = Holder::new(HolderKind::MountCopy, m.id, Seen::MountTable);
            h.path = Some(m.mount_point.clone());
            h.process = Some(proc_scan::process_facts(ns.pid));
            h.note = Some(format!(
                "the filesystem is still mounted at {} in mount namespace {}",
                String::from_utf8_lossy(&m.mount_point),
                ns.mntns
            ));
            holders.push(h);
        }
    }
    let scan = scanner.scan(&HashSet::from([unmounted.id]));
    for (process, holds) in &scan.holders {
        for hold in holds {
            let mut h = process_hold(process, hold, scan.method);
            h.note = Some("holds the detached mount".into());
            holders.push(h);
        }
    }
    holders
}

/// The holder for one hold of one process.
fn process_hold(process: &HolderProcess, hold: &proc_scan::Hold, seen: Seen) -> Holder {
    let mut h = Holder::new(hold.kind, hold.mount_id, seen);
    h.process = Some(process.clone());
    h.path = Some(hold.path.clone());
    h.fd = hold.fd;
    h
}

/// Holds of processes: direct ones on the target, `mount-copy` ones on its copies.
fn process_holders(target_id: u64, scan: &ScanOutcome, copies: &[MountCopy]) -> Vec<Holder> {
    let mut out = Vec::new();
    for (process, holds) in &scan.holders {
        for hold in holds {
            let mut h = process_hold(process, hold, scan.method);
            if hold.mount_id != target_id {
                let Some(copy) = copies.iter().find(|c| c.id == hold.mount_id) else {
                    continue;
                };
                h.kind = HolderKind::MountCopy;
                h.via = Some(hold.kind);
                h.blamed = copy.counted;
                h.note = Some(copy_note(copy));
            }
            out.push(h);
        }
    }
    out
}

/// Whether `h` holds a *different* mount that has the target's (or a copy's) id: a mount id
/// freed by an unmount goes at once to the next new mount, maybe a copy of another
/// namespace's root made by `unshare -m`, and a scan by id then finds that mount's users. The
/// holder's own namespace tells (`mount_in(mntns, pid, id)`: the mount with that id there):
/// its mount with that id is on another device or root than the target. Kept when that
/// cannot be told.
fn on_a_reused_id(
    h: &Holder,
    target: &MountEntry,
    mount_in: impl Fn(u64, u32, u64) -> Option<MountEntry>,
) -> bool {
    let Some((mntns, pid)) = h.process.as_ref().and_then(|p| Some((p.mntns?, p.pid))) else {
        return false;
    };
    mount_in(mntns, pid, h.mount_id).is_some_and(|m| {
        let reused = !m.shows_same_tree(target);
        if reused {
            tracing::debug!(
                "pid {pid} holds mount {} of namespace {mntns}, {}:{} {}: not the target ({}:{} {}), whose id it reuses",
                m.id,
                m.major,
                m.minor,
                String::from_utf8_lossy(&m.root),
                target.major,
                target.minor,
                String::from_utf8_lossy(&target.root)
            );
        }
        reused
    })
}

fn copy_note(copy: &MountCopy) -> String {
    let role = if copy.counted {
        "receives the unmount"
    } else {
        "cannot cause EBUSY"
    };
    format!(
        "copy (mount {}) at {} in mount namespace {} ({}, {role})",
        copy.id,
        String::from_utf8_lossy(&copy.mount_point),
        copy.mntns,
        copy.propagation
    )
}

/// Mounts stacked below the target.
fn submount_holders(target: &TargetMount) -> Vec<Holder> {
    target
        .namespace
        .children(target.entry.id)
        .map(|child| {
            let mut h = Holder::new(HolderKind::Submount, child.id, Seen::MountTable);
            h.path = Some(child.mount_point.clone());
            h.note = Some(format!(
                "{} mount {} of {}",
                child.fstype,
                child.id,
                String::from_utf8_lossy(&child.source)
            ));
            h
        })
        .collect()
}

/// Loop devices and swap files backed by files on the target or its copies.
fn backing_file_holders(ids: &HashSet<u64>, viewers: &[u32]) -> Vec<Holder> {
    let loops = devices::loop_devices(ids, viewers)
        .into_iter()
        .map(|b| (HolderKind::Loop, b));
    let swaps = devices::swap_files(ids, viewers)
        .into_iter()
        .map(|b| (HolderKind::Swap, b));
    loops
        .chain(swaps)
        .map(|(kind, b)| {
            let mut h = Holder::new(kind, b.mount_id, Seen::MountTable);
            h.path = Some(b.file);
            h.note = Some(match kind {
                HolderKind::Loop => format!("backing file of {}", b.device),
                _ => "active swap file".to_string(),
            });
            h
        })
        .collect()
}

/// fanotify listeners: exact ones (the kernel scan counted unread events pinning the mount)
/// or, from a `/proc` scan, suspects whose marks cover the target.
fn fanotify_holders(target: &TargetMount, scan: &ScanOutcome) -> Vec<Holder> {
    scan.fanotify
        .iter()
        .filter_map(|listener| {
            let note = match listener.queued {
                Some(n) => format!(
                    "its queue holds {n} unread {} on files opened through this mount",
                    if n == 1 { "event" } else { "events" }
                ),
                None => format!(
                    "suspected: its {}; unread events queued by this listener pin the mount, but a /proc scan cannot see its queue",
                    covering_mark(target, listener)?
                ),
            };
            let mut h = Holder::new(HolderKind::Fanotify, target.entry.id, scan.method);
            h.process = Some(listener.process.clone());
            h.fd = Some(listener.fd);
            h.note = Some(note);
            Some(h)
        })
        .collect()
}

/// Why a listener's marks cover the target, if they do.
fn covering_mark(target: &TargetMount, listener: &proc_scan::FanotifyFd) -> Option<String> {
    let dev = fanotify::kernel_dev(target.entry.major, target.entry.minor);
    fanotify::marks_of(listener.process.pid, listener.fd)
        .into_iter()
        .find_map(|mark| fanotify::covers(mark, target.entry.id, dev))
}

/// A line of information for each private copy nobody holds (so the user sees it exists).
fn private_copy_notes(copies: &[MountCopy], holders: &[Holder]) -> Vec<Holder> {
    copies
        .iter()
        .filter(|c| !c.counted && !holders.iter().any(|h| h.mount_id == c.id))
        .map(|c| {
            let mut h = Holder::new(HolderKind::MountCopy, c.id, Seen::MountTable);
            h.blamed = false;
            h.path = Some(c.mount_point.clone());
            h.process = Some(proc_scan::process_facts(c.pid));
            h.note = Some(copy_note(c));
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::sample_process_holder, state::mountinfo::parse_line};

    #[test]
    fn a_holder_of_another_mount_with_the_targets_id_is_not_a_holder() {
        // The target, tmpfs 0:30, was mount 56; unmounted, its id went to a copy of another
        // namespace's root (0:2), whose users the scan by id found.
        let target = parse_line(b"56 40 0:30 / /tmp/race/mnt rw - tmpfs tmpfs rw").unwrap();
        let root_copy = parse_line(b"56 56 0:2 / / rw - rootfs rootfs rw").unwrap();
        let same = target.clone();
        let mut h = sample_process_holder(HolderKind::Cwd, 56, 201, b"race", Some(4026532117));
        let asked = std::cell::Cell::new(None);
        let reused = on_a_reused_id(&h, &target, |mntns, pid, id| {
            asked.set(Some((mntns, pid, id)));
            Some(root_copy.clone())
        });
        assert!(reused);
        assert_eq!(asked.get(), Some((4026532117, 201, 56)));
        assert!(!on_a_reused_id(&h, &target, |_, _, _| Some(same.clone())));
        // Not told: the holder's namespace has no such mount, or its namespace is unknown.
        assert!(!on_a_reused_id(&h, &target, |_, _, _| None));
        h.process.as_mut().unwrap().mntns = None;
        assert!(!on_a_reused_id(&h, &target, |_, _, _| Some(
            root_copy.clone()
        )));
    }
}
