//! Attribution: who holds a mount. Given the mount a target resolves to, finds every holder
//! of every kind in every mount and PID namespace: processes' fds, cwd, root, executable and
//! mappings; submounts; copies in other namespaces that receive the unmount; loop devices;
//! swap files; fanotify listeners whose marks cover it.

pub mod copies;
pub mod devices;
pub mod fanotify;
pub mod kernel_scan;
pub mod namespaces;
pub mod pods;
pub mod proc_scan;
pub mod target;

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;

use self::{
    copies::MountCopy,
    namespaces::Namespace,
    proc_scan::ScanOutcome,
    target::{TargetMount, Viewpoint},
};
use crate::{
    model::{
        Attribution, Coverage, Holder, HolderKind, HolderProcess, MountSummary, QueuedFile, Seen,
    },
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
    attribute_mounts(std::slice::from_ref(target), scanner)
        .pop()
        .expect("one attribution per target")
}

/// Finds every holder of each of `targets`' mounts, in order, with one namespace snapshot and
/// as few scans as the kernel scan's map allows: one pass over the processes answers them all
/// (holds are told apart by mount id). A pass that saw a fanotify queue pinning any of them
/// is redone per mount, since a queue's count covers every mount the pass looked for.
pub fn attribute_mounts(targets: &[TargetMount], scanner: &mut Scanner) -> Vec<Attribution> {
    let namespaces = namespaces::all_namespaces();
    let mut rereads = BTreeMap::new();
    let looks: Vec<Look> = targets
        .iter()
        .map(|target| {
            let reread = rereads
                .entry(target.namespace.mntns)
                .or_insert_with(|| reread(&target.namespace));
            Look::new(target, &namespaces, reread.as_ref())
        })
        .collect();
    let mut out = Vec::with_capacity(targets.len());
    let id_sets: Vec<&HashSet<u64>> = looks.iter().map(|l| &l.ids).collect();
    for pass in passes(&id_sets, kernel_scan::MAX_SCAN_MOUNTS) {
        let ids: HashSet<u64> = pass
            .iter()
            .flat_map(|&i| looks[i].ids.iter().copied())
            .collect();
        let scan = scanner.scan(&ids);
        if pass.len() > 1 && counted_fanotify_queues(&scan) {
            for &i in &pass {
                let own = scanner.scan(&looks[i].ids);
                out.push((i, looks[i].attribution(&own, &namespaces)));
            }
            continue;
        }
        out.extend(
            pass.iter()
                .map(|&i| (i, looks[i].attribution(&scan, &namespaces))),
        );
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, a)| a).collect()
}

/// What one target's attribution looks for: its mount, its copies and their ids.
struct Look<'t> {
    target: &'t TargetMount,
    copies: Vec<MountCopy>,
    ids: HashSet<u64>,
    /// The target was detached since it was resolved ([`detached_alone`]): its holders' paths
    /// are named from its root.
    detached: bool,
}

impl<'t> Look<'t> {
    /// The copies of `target` in `namespaces` (none when its own namespace, read again in
    /// `reread`, no longer has it).
    fn new(
        target: &'t TargetMount,
        namespaces: &BTreeMap<u64, Namespace>,
        reread: Option<&Namespace>,
    ) -> Self {
        let parent = target.namespace.mount(target.entry.parent);
        let copies = if copies::still_mounted(&target.entry, reread) {
            copies::find(&target.entry, parent, namespaces.values())
        } else {
            tracing::debug!(
                "mount {} left namespace {} before its copies could be told apart: none looked for",
                target.entry.id,
                target.namespace.mntns
            );
            Vec::new()
        };
        let mut ids: HashSet<u64> = copies.iter().map(|c| c.id).collect();
        ids.insert(target.entry.id);
        Self {
            target,
            copies,
            ids,
            detached: detached_alone(&target.entry, reread),
        }
    }

    /// The target's process holders named as they were if the target was detached: the
    /// kernel names a file on a detached mount from the mount's root (`/f`), and on an
    /// attached one under its mount point. Detached before its namespace was read again for
    /// the scan ([`Self::detached`]), every one is; detached while the scan ran (found by
    /// `recheck`, which reads its namespace again, asked only when a holder's path is not
    /// under the mount point), those read after the detach, whose paths are not.
    fn name_detached_holders(&self, holders: &mut [Holder], recheck: impl FnOnce() -> bool) {
        let entry = &self.target.entry;
        let named_from_root = |h: &Holder| {
            h.path
                .as_deref()
                .is_some_and(|p| !crate::paths::is_under(p, &entry.mount_point))
        };
        let mut on_target: Vec<&mut Holder> = holders
            .iter_mut()
            .filter(|h| h.mount_id == entry.id && h.process.is_some())
            .collect();
        if !self.detached {
            on_target.retain(|h| named_from_root(h));
            if on_target.is_empty() || !recheck() {
                return;
            }
        }
        for h in on_target {
            h.on_detached_mount(&entry.mount_point);
        }
    }

    /// The target's holders in `scan` (which may have looked for other mounts too).
    fn attribution(
        &self,
        scan: &ScanOutcome,
        namespaces: &BTreeMap<u64, Namespace>,
    ) -> Attribution {
        let target = self.target;
        let mut holders = process_holders(target.entry.id, scan, &self.copies);
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
        self.name_detached_holders(&mut holders, || {
            detached_alone(&target.entry, reread(&target.namespace).as_ref())
        });
        holders.extend(submount_holders(target));
        let mut viewers: Vec<u32> = vec![target.namespace.pid];
        viewers.extend(self.copies.iter().filter_map(|c| c.pid));
        viewers.push(std::process::id());
        holders.extend(backing_file_holders(&self.ids, &viewers));
        holders.extend(fanotify_holders(target, &self.copies, scan));
        holders.extend(private_copy_notes(&self.copies, &holders));
        holders.sort_by_key(|h| (!h.blamed, h.kind, h.process.as_ref().map(|p| p.pid), h.fd));

        Attribution {
            mount: MountSummary {
                id: target.entry.id,
                mntns: target.namespace.mntns,
                entry: target.entry.clone(),
            },
            is_mount_point: target.is_mount_point,
            holders,
            copies: self.copies.clone(),
            accessors: Vec::new(),
            uninspectable: scan.uninspectable.clone(),
            coverage: Coverage {
                method: scan.method,
                processes: scan.processes,
                fds: scan.fds,
                namespaces: namespaces.len(),
            },
        }
    }
}

/// Whether `target` was detached since it was resolved, alone or with what is mounted below
/// it: `recheck`, its namespace read again, no longer has it but has its parent. With its
/// parent gone too it left with a tree detached above it, which the kernel names its files
/// from: their paths cannot be told under the target's mount point.
fn detached_alone(target: &MountEntry, recheck: Option<&Namespace>) -> bool {
    let Some(ns) = recheck else {
        return false;
    };
    !copies::still_mounted(target, Some(ns)) && ns.mount(target.parent).is_some()
}

/// The targets' id sets (by index) grouped into scans of at most `max_ids` mount ids each,
/// in order (a target with more ids than that gets a scan of its own, which the scanner then
/// answers as it can).
fn passes(id_sets: &[&HashSet<u64>], max_ids: usize) -> Vec<Vec<usize>> {
    let mut passes: Vec<Vec<usize>> = Vec::new();
    let mut ids: HashSet<u64> = HashSet::new();
    for (i, set) in id_sets.iter().enumerate() {
        let more = set.difference(&ids).count();
        match passes.last_mut() {
            Some(pass) if ids.len() + more <= max_ids => pass.push(i),
            _ => {
                passes.push(vec![i]);
                ids.clear();
            }
        }
        ids.extend(set.iter().copied());
    }
    passes
}

/// Whether the kernel scan counted unread fanotify events on the mounts it looked for: the
/// count is per queue, over all of them, so it cannot be split between mounts.
fn counted_fanotify_queues(scan: &ScanOutcome) -> bool {
    scan.fanotify.iter().any(|l| l.queued.is_some())
}

/// `ns` read again, through any process still in it.
fn reread(ns: &Namespace) -> Option<Namespace> {
    let pid = process::process_in(ns.mntns, ns.pid)?;
    Namespace::of_pid(pid).filter(|again| again.mntns == ns.mntns)
}

/// What keeps each filesystem alive after each of `unmounted` was successfully unmounted
/// (plain or lazy), in order: other mounts of the same filesystem and root in any namespace,
/// and processes still holding the (lazily detached) mount. Empty for one nothing keeps. One
/// namespace snapshot and as few scans as the kernel scan's map allows serve them all.
pub fn alive_after_unmounts(unmounted: &[MountEntry], scanner: &mut Scanner) -> Vec<Vec<Holder>> {
    let namespaces = namespaces::all_namespaces();
    let mut all: Vec<Vec<Holder>> = unmounted
        .iter()
        .map(|m| still_mounted_elsewhere(m, &namespaces))
        .collect();
    let id_sets: Vec<HashSet<u64>> = unmounted.iter().map(|m| HashSet::from([m.id])).collect();
    let refs: Vec<&HashSet<u64>> = id_sets.iter().collect();
    for pass in passes(&refs, kernel_scan::MAX_SCAN_MOUNTS) {
        let ids: HashSet<u64> = pass.iter().map(|&i| unmounted[i].id).collect();
        let scan = scanner.scan(&ids);
        for &i in &pass {
            all[i].extend(detached_holders(&unmounted[i], &scan));
        }
    }
    all
}

/// Mounts of `unmounted`'s filesystem and root in any of `namespaces`.
fn still_mounted_elsewhere(
    unmounted: &MountEntry,
    namespaces: &BTreeMap<u64, Namespace>,
) -> Vec<Holder> {
    let mut holders = Vec::new();
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
    holders
}

/// The processes in `scan` holding the detached mount `unmounted`, each named by the path it
/// had under the mount's old mount point.
fn detached_holders(unmounted: &MountEntry, scan: &ScanOutcome) -> Vec<Holder> {
    let mut holders = Vec::new();
    for (process, holds) in &scan.holders {
        for hold in holds.iter().filter(|h| h.mount_id == unmounted.id) {
            let mut h = process_hold(process, hold, scan.method);
            h.note = Some("holds the detached mount".into());
            h.on_detached_mount(&unmounted.mount_point);
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
                h.note = Some(copy.describe());
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

/// fanotify listeners: exact ones (the kernel scan counted unread events pinning the mount,
/// and named the files of the first, each under the mount point of the target or of the copy
/// it is on; `path` stays null, as a `/proc` scan's suspect has it: the listener holds no
/// file there) or, from a `/proc` scan, suspects whose marks cover the target.
fn fanotify_holders(target: &TargetMount, copies: &[MountCopy], scan: &ScanOutcome) -> Vec<Holder> {
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
            h.queued_events = listener.queued;
            h.queued_files = queued_files(target, copies, &listener.files);
            Some(h)
        })
        .collect()
}

/// The queued files the kernel scan named, as absolute paths on the target or its copies
/// (a file on another mount, never looked for, is left out).
fn queued_files(
    target: &TargetMount,
    copies: &[MountCopy],
    files: &[proc_scan::QueuedOnMount],
) -> Vec<QueuedFile> {
    files
        .iter()
        .filter_map(|f| {
            let mount_point = if f.mount_id == target.entry.id {
                &target.entry.mount_point
            } else {
                &copies.iter().find(|c| c.id == f.mount_id)?.mount_point
            };
            Some(QueuedFile {
                path: crate::paths::under_mount_point(mount_point, &f.within),
                cut: f.cut,
            })
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
            h.process = c.pid.map(proc_scan::process_facts);
            h.note = Some(c.describe());
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::sample_process_holder, state::mountinfo::parse_line};

    fn ids(list: &[u64]) -> HashSet<u64> {
        list.iter().copied().collect()
    }

    #[test]
    fn targets_share_scans_up_to_the_maps_size_and_are_never_split() {
        let sets = [
            ids(&[1, 2]),
            ids(&[3]),
            ids(&[2, 4]),
            ids(&[5, 6, 7]),
            ids(&[8]),
        ];
        let refs: Vec<&HashSet<u64>> = sets.iter().collect();
        // 1 2 3 4 fit in four; 5 6 7 would make seven.
        assert_eq!(passes(&refs, 4), [vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(passes(&refs, 63), [vec![0, 1, 2, 3, 4]]);
        // A target with more ids than a scan takes still gets one, alone.
        assert_eq!(passes(&refs[3..], 2), [vec![0], vec![1]]);
    }

    fn tmpfs(id: u64, parent: u64, dev: u64, point: &str) -> MountEntry {
        let line = format!("{id} {parent} 0:{dev} / {point} rw - tmpfs tmpfs rw");
        parse_line(line.as_bytes()).unwrap()
    }

    /// Namespace 4026530001 (its process 4_000_000) with `mounts`.
    fn namespace_of(mounts: Vec<MountEntry>) -> Namespace {
        Namespace {
            mntns: 4026530001,
            pid: 4_000_000,
            mounts,
        }
    }

    /// A copy `id` at `/elsewhere/a` in namespace 4026530002 that receives the unmount.
    fn counted_copy(id: u64) -> MountCopy {
        MountCopy {
            id,
            mntns: 4026530002,
            pid: Some(4_000_001),
            mount_point: b"/elsewhere/a".to_vec(),
            propagation: "parent shared:7".into(),
            counted: true,
            container: None,
        }
    }

    /// A tmpfs `id` at `/s/a`, alone in [`namespace_of`].
    fn target_at_s_a(id: u64) -> TargetMount {
        let entry = tmpfs(id, 1, id - 890000, "/s/a");
        TargetMount {
            entry: entry.clone(),
            namespace: namespace_of(vec![entry]),
            is_mount_point: true,
        }
    }

    /// Each holder's kind, path and whether its mount was detached.
    fn named(holders: &[Holder]) -> Vec<(HolderKind, String, bool)> {
        holders
            .iter()
            .map(|h| {
                let path = String::from_utf8(h.path.clone().unwrap()).unwrap();
                (h.kind, path, h.mount_detached)
            })
            .collect()
    }

    /// Where [`hold`]'s file was, on a mount at `/old/m` detached since.
    fn held_at(mount_id: u64) -> String {
        format!("/old/m/held/on/{mount_id}")
    }

    fn hold(kind: HolderKind, mount_id: u64, fd: Option<i32>) -> proc_scan::Hold {
        proc_scan::Hold {
            kind,
            mount_id,
            path: format!("/held/on/{mount_id}").into_bytes(),
            fd,
        }
    }

    #[test]
    fn one_scan_for_several_mounts_gives_each_its_own_holders() {
        // Two tmpfs mounts of one namespace (ids far above any real mount's), the first with
        // a copy (900040) in another namespace that receives the unmount.
        let (a, b) = (
            tmpfs(900030, 1, 9030, "/s/a"),
            tmpfs(900031, 1, 9031, "/s/b"),
        );
        let namespace = namespace_of(vec![a.clone(), b.clone()]);
        let target = |entry: &MountEntry| TargetMount {
            entry: entry.clone(),
            namespace: namespace.clone(),
            is_mount_point: true,
        };
        let (ta, tb) = (target(&a), target(&b));
        let look_a = Look {
            target: &ta,
            copies: vec![counted_copy(900040)],
            ids: ids(&[900030, 900040]),
            detached: false,
        };
        let look_b = Look {
            target: &tb,
            copies: Vec::new(),
            ids: ids(&[900031]),
            detached: false,
        };
        let process = |pid: u32| {
            sample_process_holder(HolderKind::Fd, 0, pid, b"p", None)
                .process
                .unwrap()
        };
        let scan = ScanOutcome {
            holders: vec![
                (
                    process(4_100_001),
                    vec![hold(HolderKind::Fd, 900030, Some(3))],
                ),
                (
                    process(4_100_002),
                    vec![
                        hold(HolderKind::Cwd, 900031, None),
                        hold(HolderKind::Fd, 900030, Some(5)),
                    ],
                ),
                (
                    process(4_100_003),
                    vec![hold(HolderKind::Fd, 900040, Some(7))],
                ),
            ],
            processes: 3,
            fds: 300,
            method: Seen::KernelScan,
            ..ScanOutcome::default()
        };
        let none = BTreeMap::new();
        let summary = |a: &Attribution| -> Vec<(HolderKind, u32, u64, Option<i32>)> {
            a.holders
                .iter()
                .map(|h| (h.kind, h.process.as_ref().unwrap().pid, h.mount_id, h.fd))
                .collect()
        };
        let for_a = look_a.attribution(&scan, &none);
        assert_eq!(
            summary(&for_a),
            [
                (HolderKind::Fd, 4_100_001, 900030, Some(3)),
                (HolderKind::Fd, 4_100_002, 900030, Some(5)),
                (HolderKind::MountCopy, 4_100_003, 900040, Some(7)),
            ]
        );
        assert_eq!((for_a.mount.id, for_a.coverage.fds), (900030, 300));
        let for_b = look_b.attribution(&scan, &none);
        assert_eq!(
            summary(&for_b),
            [(HolderKind::Cwd, 4_100_002, 900031, None)]
        );
        assert_eq!(for_b.mount.id, 900031);
    }

    #[test]
    fn a_target_detached_alone_is_told_from_one_left_with_its_parent() {
        let parent = tmpfs(900060, 1, 9060, "/s");
        let target = tmpfs(900061, 900060, 9061, "/s/m");
        let still = namespace_of(vec![parent.clone(), target.clone()]);
        assert!(!detached_alone(&target, Some(&still)));
        let alone = namespace_of(vec![parent.clone()]);
        assert!(detached_alone(&target, Some(&alone)));
        // Its parent went too (a lazy unmount of /s): paths are named from /s's root.
        assert!(!detached_alone(&target, Some(&namespace_of(Vec::new()))));
        // Another mount with its id (reused) is not the target.
        let reused = namespace_of(vec![parent, tmpfs(900061, 900060, 9099, "/s/m")]);
        assert!(detached_alone(&target, Some(&reused)));
        assert!(
            !detached_alone(&target, None),
            "the namespace could not be read"
        );
    }

    /// The holders of a target detached since it was resolved are named by their paths under
    /// its old mount point, and marked; holders of its copies (still mounted) are not.
    #[test]
    fn holders_of_a_detached_target_are_named_under_its_old_mount_point() {
        let target = target_at_s_a(900070);
        let look = Look {
            target: &target,
            copies: vec![counted_copy(900071)],
            ids: ids(&[900070, 900071]),
            detached: true,
        };
        let process = sample_process_holder(HolderKind::Fd, 0, 4_100_001, b"p", None)
            .process
            .unwrap();
        let mut root = hold(HolderKind::Cwd, 900070, None);
        root.path = b"/".to_vec();
        let scan = ScanOutcome {
            holders: vec![(
                process,
                vec![
                    hold(HolderKind::Fd, 900070, Some(3)),
                    root,
                    hold(HolderKind::Fd, 900071, Some(4)),
                ],
            )],
            method: Seen::KernelScan,
            ..ScanOutcome::default()
        };
        assert_eq!(
            named(&look.attribution(&scan, &BTreeMap::new()).holders),
            [
                (HolderKind::Fd, "/s/a/held/on/900070".to_owned(), true),
                (HolderKind::Cwd, "/s/a".to_owned(), true),
                (HolderKind::MountCopy, "/held/on/900071".to_owned(), false),
            ]
        );
    }

    /// A target detached while the scan ran: a holder read after the detach (named from the
    /// mount's root) is named as it was once its namespace, read again, says so; one read
    /// before keeps its path. Nothing is read again while every path is under the mount point.
    #[test]
    fn holders_of_a_target_detached_during_the_scan_are_named_as_they_were() {
        let target = target_at_s_a(900080);
        let look = Look {
            target: &target,
            copies: Vec::new(),
            ids: ids(&[900080]),
            detached: false,
        };
        let holder = |path: &str| {
            let mut h = sample_process_holder(HolderKind::Fd, 900080, 4_100_001, b"p", None);
            h.path = Some(path.as_bytes().to_vec());
            h
        };
        let fd = HolderKind::Fd;
        let mut holders = vec![holder("/s/a/before"), holder("/after")];
        look.name_detached_holders(&mut holders, || true);
        assert_eq!(
            named(&holders),
            [
                (fd, "/s/a/before".to_owned(), false),
                (fd, "/s/a/after".to_owned(), true)
            ]
        );
        let mut holders = vec![holder("/elsewhere")];
        look.name_detached_holders(&mut holders, || false);
        assert_eq!(
            named(&holders),
            [(fd, "/elsewhere".to_owned(), false)],
            "still mounted"
        );
        let mut holders = vec![holder("/s/a/f")];
        look.name_detached_holders(&mut holders, || panic!("nothing to check"));
        assert_eq!(named(&holders), [(fd, "/s/a/f".to_owned(), false)]);
    }

    #[test]
    fn one_scan_for_several_detached_mounts_gives_each_its_own_holders() {
        let process = |pid: u32| {
            sample_process_holder(HolderKind::Fd, 0, pid, b"p", None)
                .process
                .unwrap()
        };
        let scan = ScanOutcome {
            holders: vec![
                (
                    process(4_100_001),
                    vec![hold(HolderKind::Fd, 900050, Some(3))],
                ),
                (
                    process(4_100_002),
                    vec![
                        hold(HolderKind::Cwd, 900051, None),
                        hold(HolderKind::Fd, 900050, Some(4)),
                    ],
                ),
            ],
            method: Seen::KernelScan,
            ..ScanOutcome::default()
        };
        let summary = |id| -> Vec<(HolderKind, u32, Option<i32>, String, bool)> {
            detached_holders(&tmpfs(id, 1, 60, "/old/m"), &scan)
                .iter()
                .map(|h| {
                    let path = String::from_utf8(h.path.clone().unwrap()).unwrap();
                    let pid = h.process.as_ref().unwrap().pid;
                    (h.kind, pid, h.fd, path, h.mount_detached)
                })
                .collect()
        };
        // The kernel named each file from the detached mount's root: said under /old/m.
        assert_eq!(
            summary(900050),
            [
                (HolderKind::Fd, 4_100_001, Some(3), held_at(900050), true),
                (HolderKind::Fd, 4_100_002, Some(4), held_at(900050), true)
            ]
        );
        assert_eq!(
            summary(900051),
            [(HolderKind::Cwd, 4_100_002, None, held_at(900051), true)]
        );
        assert!(summary(900052).is_empty());
    }

    #[test]
    fn only_a_counted_fanotify_queue_makes_a_shared_scan_unsplittable() {
        let listener = |queued| proc_scan::FanotifyFd {
            process: sample_process_holder(HolderKind::Fd, 0, 9, b"l", None)
                .process
                .unwrap(),
            fd: 4,
            queued,
            files: Vec::new(),
        };
        let mut scan = ScanOutcome::default();
        assert!(!counted_fanotify_queues(&scan));
        // A /proc scan's suspects are matched per mount by their marks.
        scan.fanotify.push(listener(None));
        assert!(!counted_fanotify_queues(&scan));
        scan.fanotify.push(listener(Some(2)));
        assert!(counted_fanotify_queues(&scan));
    }

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
