//! Transient holders: processes that held a file on the mount at the failing call and let go
//! after it. The kernel reports every release on a tracked mount during the busy window after
//! an EBUSY; these are kept for a few seconds and matched with each EBUSY's mount.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::{
    container::Container,
    event::{Release, UmountCall},
    model::{
        Attribution, Holder, HolderKind, HolderProcess, MountCopy, OpenTimeUnknown, QueuedFile,
        Seen,
    },
    paths,
    state::process,
};

/// How long releases are kept (longer than the kernel's busy window).
const KEEP_NS: u64 = 10_000_000_000;
/// At most this many releases are kept (the oldest go first).
const KEEP_COUNT: usize = 100_000;
/// How long before the failing call a close may have entered and its file still held the
/// mount: the file is let go only as its closer returns to user space, and a closer preempted
/// on the way back (a slow or busy machine) can stay off the CPU for tens of milliseconds.
const LATE_CLOSE_NS: u64 = 100_000_000;

/// Most releasing processes whose container is kept.
const CONTAINERS_KEPT: usize = 4096;

/// Recent releases, oldest first.
#[derive(Default)]
pub struct RecentReleases {
    releases: VecDeque<Release>,
    /// Each releasing process as read when its first release arrived: a process that lets
    /// go as it exits (a container deleted) is usually still readable then, and gone when
    /// the EBUSY is completed.
    releasers: HashMap<u32, Releaser>,
    proc: process::ProcFs,
}

/// A releasing process as read when its first release arrived.
#[derive(Clone, Debug, PartialEq)]
enum Releaser {
    /// It was there: the container it runs in, if any.
    Read(Option<Container>),
    /// It was gone already (reaped before its release was decoded): its container is not
    /// known.
    Gone,
}

impl RecentReleases {
    /// Keeps one release (and forgets old ones), reading its process's container if it is
    /// the process's first.
    pub fn record(&mut self, release: Release) {
        if self.releases.is_empty() || self.releasers.len() >= CONTAINERS_KEPT {
            self.releasers.clear();
        }
        let proc = &self.proc;
        self.releasers.entry(release.pid).or_insert_with(|| {
            proc.container_if_alive(release.pid)
                .map_or(Releaser::Gone, Releaser::Read)
        });
        tracing::trace!(
            "release: pid {} fd {} mount {} (namespace {:?}) {} how={:?} opened={:?} at {}",
            release.pid,
            release.fd,
            release.mnt_id,
            release.mount_ns,
            String::from_utf8_lossy(&release.path_within_mount),
            release.how,
            release.opened_ts_boot_ns,
            release.ts_boot_ns
        );
        let horizon = release.ts_boot_ns.saturating_sub(KEEP_NS);
        while self
            .releases
            .front()
            .is_some_and(|r| r.ts_boot_ns < horizon)
            || self.releases.len() >= KEEP_COUNT
        {
            self.releases.pop_front();
        }
        self.releases.push_back(release);
    }

    /// Adds to `attribution` a `transient` holder for every process that let go of a file on
    /// the attributed mount after `call` failed, unless the file was opened after the call or
    /// the scan still sees it holding that same file; one that let go of a file on a counted
    /// copy of the mount (one of [`Attribution::copies`], whose namespace may have died with
    /// the holder before the scan) is a `mount-copy` holder `via` `transient` (a process gone
    /// by now is taken to have run in the copy's namespace: see [`in_namespace_of`]). If that
    /// explains nothing, the last close on the mount shortly before the call whose closer may
    /// not have come back from it (see [`Self::closed_just_before`]) is named; then, if still
    /// nothing explains the EBUSY, `unknown`.
    pub fn complete(&self, call: &UmountCall, attribution: &mut Attribution) {
        let mounts = Mounts::of(attribution);
        // A file opened after the call returned did not hold the mount when the kernel said
        // busy (a fanotify event fd's queued event did); one opened during the call may have
        // (before its busy check).
        let held_at_call = |r: &&Release| {
            r.opened_ts_boot_ns
                .is_none_or(|t| super::opens::held_at_the_call(call, t, r.opened_for_event))
        };
        let held = super::opens::held_fds(&attribution.holders);
        // A listener's path is a queued event's file, not a file it holds.
        let mut seen: HashSet<(u32, Vec<u8>)> = attribution
            .holders
            .iter()
            .filter(|h| h.kind != HolderKind::Fanotify)
            .filter_map(|h| Some((h.process.as_ref()?.pid, h.path.clone()?)))
            .collect();
        let mut groups = HashSet::new();
        for r in self
            .releases
            .iter()
            .filter(|r| r.ts_boot_ns >= call.ts_boot_ns && mounts.holds(r))
            .filter(held_at_call)
        {
            // A group comes as one release per queued file: one holder names them all.
            if r.queued_events > 0 && !groups.insert(group_of(r)) {
                continue;
            }
            let path = mounts.path_of(r);
            // Already a holder: the same file (by path), or the same fd (its path may be cut).
            if held.contains(&(r.pid, r.fd)) || !seen.insert((r.pid, path.clone())) {
                continue;
            }
            let container = self.container_of(r.pid);
            let holder = self.with_queued_files(transient(r, path, call, container), r, &mounts);
            attribution
                .holders
                .push(mounts.on_copy(r, holder, self.was_gone(r.pid)));
        }
        // An accessor whose release came after the call was holding: it is a holder now.
        let held = super::opens::held_fds(&attribution.holders);
        attribution
            .accessors
            .retain(|x| !held.contains(&(x.pid, x.fd)));
        if !attribution.has_blamed() {
            if let Some(r) = self.closed_just_before(call, &mounts) {
                let container = self.container_of(r.pid);
                let holder = closed_before(r, mounts.path_of(r), call, container);
                let holder = self.with_queued_files(holder, r, &mounts);
                attribution
                    .holders
                    .push(mounts.on_copy(r, holder, self.was_gone(r.pid)));
            }
        }
        attribution.add_unknown_if_unexplained();
    }

    /// `holder`, for release `r`, with the files of its group's unread events on `mounts`
    /// when `r` let go of a fanotify group (its releases, one per file, in queue order; `path`
    /// the first's); as it is for any other release.
    fn with_queued_files(&self, mut holder: Holder, r: &Release, mounts: &Mounts) -> Holder {
        if r.queued_events == 0 {
            return holder;
        }
        let mut files: Vec<&Release> = self
            .releases
            .iter()
            .filter(|x| x.queued_events > 0 && group_of(x) == group_of(r) && mounts.holds(x))
            .collect();
        files.sort_by_key(|x| x.queued_index);
        holder.queued_events = Some(r.queued_events);
        holder.queued_files = files
            .iter()
            .map(|x| QueuedFile {
                path: mounts.path_of(x),
                cut: x.truncated,
            })
            .collect();
        if let Some(first) = holder.queued_files.first() {
            holder.path = Some(first.path.clone());
        }
        holder
    }

    /// The container of a releasing process, as read when its first release arrived.
    fn container_of(&self, pid: u32) -> Option<Container> {
        match self.releasers.get(&pid) {
            Some(Releaser::Read(container)) => container.clone(),
            _ => None,
        }
    }

    /// Whether a releasing process was gone already as its first release arrived.
    fn was_gone(&self, pid: u32) -> bool {
        self.releasers.get(&pid) == Some(&Releaser::Gone)
    }

    /// The latest release of a file on `mounts` that entered at most [`LATE_CLOSE_NS`] before
    /// `call` by a thread that may still have been on its way back from it when the kernel
    /// checked the mount: not the calling thread, and not a thread with a later traced release
    /// before the call (either had returned to user space, and so dropped the file). Working
    /// and root directory changes are left out: they let go at once.
    fn closed_just_before(&self, call: &UmountCall, mounts: &Mounts) -> Option<&Release> {
        let since = call.ts_boot_ns.saturating_sub(LATE_CLOSE_NS);
        let window: Vec<&Release> = self
            .releases
            .iter()
            .filter(|r| (since..call.ts_boot_ns).contains(&r.ts_boot_ns))
            .collect();
        let came_back = |r: &Release| {
            r.tid == call.tid
                || window
                    .iter()
                    .any(|later| later.tid == r.tid && later.ts_boot_ns > r.ts_boot_ns)
        };
        window
            .iter()
            .copied()
            .filter(|r| mounts.holds(r) && r.how.drops_file_on_return())
            .filter(|r| !came_back(r))
            .max_by_key(|r| r.ts_boot_ns)
    }
}

/// The mounts whose releases explain an EBUSY: the target and the copies it propagates to.
struct Mounts {
    /// The ids of the mounts of blamed holders (the target's among them).
    ids: HashSet<u64>,
    /// The target's id and the namespace it is in (0: unknown).
    target: (u64, u64),
    /// Where the target is mounted.
    mount_point: Vec<u8>,
    /// The copies that receive the unmount, by mount id and namespace.
    copies: Vec<MountCopy>,
}

impl Mounts {
    /// The mounts of `a`: its target, the mounts of its blamed holders and its counted copies.
    fn of(a: &Attribution) -> Self {
        Self {
            ids: a.blamed_mount_ids(),
            target: (a.mount.id, a.mount.mntns),
            mount_point: a.mount.entry.mount_point.clone(),
            copies: a.copies.iter().filter(|c| c.counted).cloned().collect(),
        }
    }

    /// Whether `r` let go of a file on one of these mounts. A mount id freed by an unmount
    /// goes at once to the next new mount, maybe in another namespace: a release on the
    /// target's id from a mount in another namespace than the target's is on that new mount.
    /// An unknown namespace (either side) matches by id.
    fn holds(&self, r: &Release) -> bool {
        let (target_id, target_ns) = self.target;
        let by_id = self.ids.contains(&r.mnt_id)
            && (r.mnt_id != target_id
                || target_ns == 0
                || r.mount_ns.is_none_or(|ns| ns == target_ns));
        by_id || self.copy_of(r).is_some()
    }

    /// The counted copy `r` let go of a file on (by its mount id and namespace; an unknown
    /// namespace matches by id), unless that is the target's id.
    fn copy_of(&self, r: &Release) -> Option<&MountCopy> {
        if r.mnt_id == self.target.0 {
            return None;
        }
        self.copies
            .iter()
            .find(|c| c.id == r.mnt_id && r.mount_ns.is_none_or(|ns| ns == c.mntns))
    }

    /// The absolute path of the file `r` let go of, as its mount's namespace names it: on a
    /// copy, under the copy's mount point.
    fn path_of(&self, r: &Release) -> Vec<u8> {
        let mount_point = self
            .copy_of(r)
            .map_or(&self.mount_point, |c| &c.mount_point);
        path_on_mount(mount_point, r)
    }

    /// `holder`, for release `r`, as a holder of the copy it was on, if it was on one: a
    /// `mount-copy` holder of that copy `via` its own kind (`transient`, `fanotify`), its note
    /// saying which copy, as the scan's holders on a copy say. Its process, if gone, is taken
    /// to be of the copy's namespace (see [`in_namespace_of`]; `gone`: already as its first
    /// release arrived).
    fn on_copy(&self, r: &Release, mut holder: Holder, gone: bool) -> Holder {
        let Some(copy) = self.copy_of(r) else {
            return holder;
        };
        if let Some(p) = holder.process.as_mut() {
            in_namespace_of(p, copy, gone);
        }
        holder.via = Some(holder.kind);
        holder.kind = HolderKind::MountCopy;
        holder.blamed = copy.counted;
        holder.note = Some(match holder.note.take() {
            Some(how) => format!("{}; {how}", copy.describe()),
            None => copy.describe(),
        });
        holder
    }
}

/// Which group let go a fanotify group's release is of: its releases (one per queued file
/// named) share the process, the fd and the time.
fn group_of(r: &Release) -> (u32, u32, u64) {
    (r.pid, r.fd, r.ts_boot_ns)
}

/// A process that held a file on `copy` held it through the copy of its own namespace, as a
/// container's process does (one outside it, through `/proc/PID/root`, is the rare
/// exception): where its namespace could not be read (it is gone), it is the copy's; and
/// where its container could not be read either (it was `gone` already as its first release
/// arrived: reaped by a container runtime's shim), it is that namespace's. A process read
/// then keeps what was read: a host process is never given a container.
fn in_namespace_of(p: &mut HolderProcess, copy: &MountCopy, gone: bool) {
    p.mntns = p.mntns.or(Some(copy.mntns));
    if gone {
        p.container = copy.container.clone();
    }
}

/// The absolute path of a released file: the mount point joined with its path in the mount.
fn path_on_mount(mount_point: &[u8], r: &Release) -> Vec<u8> {
    paths::under_mount_point(mount_point, &r.path_within_mount)
}

/// A `transient` holder for a file let go shortly before the failing call by a closer that may
/// not have come back from the close (no `closed_ns_after`: the note says how long before).
fn closed_before(
    r: &Release,
    path: Vec<u8>,
    call: &UmountCall,
    container: Option<Container>,
) -> Holder {
    let mut h = transient(r, path, call, container);
    h.closed_ns_after = None;
    h.note = Some(format!(
        "{} {:.1} ms before the failing call and had not been seen running since: a closed file is let go only as its closer returns to user space, so it may still have held the mount (the latest such release on this mount; nothing else explains the EBUSY)",
        r.how.verb(),
        call.ts_boot_ns.saturating_sub(r.ts_boot_ns) as f64 / 1e6
    ));
    h
}

/// The holder for a release after the failing call: `transient`, or `fanotify` for a group
/// let go with unread events on the mount (its queue held the mount; `path` is the file of one
/// of those events, and [`RecentReleases::with_queued_files`] names them).
fn transient(
    r: &Release,
    path: Vec<u8>,
    call: &UmountCall,
    container: Option<Container>,
) -> Holder {
    let call_end = call.returned_ts_boot_ns();
    let group = r.queued_events > 0;
    let kind = if group {
        HolderKind::Fanotify
    } else {
        HolderKind::Transient
    };
    let mut h = Holder::new(kind, r.mnt_id, Seen::Traced);
    h.process = Some(HolderProcess {
        pid: r.pid,
        comm: r.comm.clone(),
        mntns: process::mntns_of(r.pid),
        container,
    });
    h.path = Some(path);
    h.fd = i32::try_from(r.fd).ok();
    h.closed_ns_after = Some(r.ts_boot_ns.saturating_sub(call_end));
    let how = r.how.verb();
    let mut note = if group {
        let events = match r.queued_events {
            1 => "1 unread event".to_owned(),
            n => format!("{n} unread events"),
        };
        format!("{how} after the failing call, letting go of its fanotify group with {events} on this mount (its queue held the mount; the path is the first one's file)")
    } else {
        match r.opened_ts_boot_ns {
            Some(t) => super::opens::place_open(&mut h, call, t, r.opened_for_event),
            None if r.open_raced => h.open_time_unknown = Some(OpenTimeUnknown::RacedAnUnmount),
            None => h.open_time_unknown = Some(OpenTimeUnknown::NotTimed),
        }
        format!("{how} after the failing call")
    };
    if r.truncated {
        note.push_str(" (path cut: too deep or a name too long)");
    }
    h.note = Some(note);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{sample_ebusy_call, ReleaseHow},
        model::sample_attribution,
    };

    const CALL_TS: u64 = 10_000_000;

    fn call() -> UmountCall {
        sample_ebusy_call(CALL_TS, 5_000)
    }

    fn attribution() -> Attribution {
        sample_attribution("/var/lib/m", Vec::new())
    }

    fn release(pid: u32, at: u64, mnt_id: u64, path: &[u8], opened: Option<u64>) -> Release {
        Release {
            ts_boot_ns: at,
            pid,
            tid: pid,
            comm: b"scanner".to_vec(),
            fd: 7,
            how: ReleaseHow::Close,
            mnt_id,
            mount_ns: None,
            queued_events: 0,
            queued_index: 0,
            path_within_mount: path.to_vec(),
            truncated: false,
            opened_ts_boot_ns: opened,
            open_raced: false,
            opened_for_event: false,
        }
    }

    /// A process that lets go as its container is deleted is gone when the EBUSY is
    /// completed: its container was read as its release arrived.
    #[test]
    fn a_transient_holder_keeps_the_container_read_as_it_let_go() {
        let id = "4f6b3bd7c0e2a9185b4f0c6d2e7a8b9c1d2e3f405162738495a6b7c8d9e0f1a2";
        let cgroup = format!(
            "4:memory:/kubepods/besteffort/pod0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d/{id}\n0::/\n"
        );
        let tree = process::sample_proc_tree(cgroup.as_bytes());
        let mut recent = RecentReleases {
            proc: process::ProcFs::at(tree.path()),
            ..RecentReleases::default()
        };
        recent.record(release(
            10,
            CALL_TS + 400_000,
            812,
            b"/f",
            Some(CALL_TS - 1),
        ));
        std::fs::remove_dir_all(tree.path().join("10")).unwrap();
        recent.record(release(
            10,
            CALL_TS + 500_000,
            812,
            b"/g",
            Some(CALL_TS - 1),
        ));
        let mut a = attribution();
        recent.complete(&call(), &mut a);
        let ids: Vec<Option<&str>> = a
            .holders
            .iter()
            .map(|h| h.process.as_ref()?.container.as_ref()?.id.as_deref())
            .collect();
        assert_eq!(ids, vec![Some(id), Some(id)]);
    }

    #[test]
    fn releases_after_the_call_of_files_held_at_it_are_transient_holders() {
        let mut recent = RecentReleases::default();
        recent.record(release(9, CALL_TS - 10, 812, b"/etc/before", Some(1))); // let go before the call
        recent.record(release(
            9,
            CALL_TS + 400_000,
            812,
            b"/etc/passwd",
            Some(CALL_TS - 1_800_000),
        )); // the holder
        recent.record(release(
            9,
            CALL_TS + 500_000,
            812,
            b"/etc/passwd",
            Some(CALL_TS - 1_800_000),
        )); // same file again
        recent.record(release(
            9,
            CALL_TS + 600_000,
            812,
            b"/etc/later",
            Some(CALL_TS + 5_001),
        )); // opened after the call returned (it took 5,000 ns)
        recent.record(release(
            11,
            CALL_TS + 650_000,
            812,
            b"/etc/during",
            Some(CALL_TS + 1),
        )); // opened during the call: maybe before the busy check
        recent.record(release(9, CALL_TS + 700_000, 999, b"/elsewhere", None)); // another mount
        recent.record(release(10, CALL_TS + 800_000, 812, b"/fanotify-fd", None)); // open never seen
        let mut raced = release(12, CALL_TS + 900_000, 812, b"/raced", None);
        raced.open_raced = true; // seen, but it overlapped an unmount's entry
        recent.record(raced);
        // A fanotify event fd opened after the call returned: its event, queued before, held
        // the mount at the busy check.
        let mut event_fd = release(
            13,
            CALL_TS + 950_000,
            812,
            b"/scanned",
            Some(CALL_TS + 7_000),
        );
        event_fd.opened_for_event = true;
        recent.record(event_fd);
        let mut a = attribution();
        recent.complete(&call(), &mut a);
        let got: Vec<_> = a
            .holders
            .iter()
            .map(|h| {
                (
                    h.kind,
                    h.process.as_ref().unwrap().pid,
                    h.path.clone().unwrap(),
                    h.opened_ns_before,
                    h.closed_ns_after,
                )
            })
            .collect();
        let unknown: Vec<_> = a.holders.iter().map(|h| h.open_time_unknown).collect();
        use OpenTimeUnknown::{NotTimed, RacedAnUnmount};
        assert_eq!(
            unknown,
            [None, None, Some(NotTimed), Some(RacedAnUnmount), None],
            "why an open time is missing"
        );
        let event = a.holders.last().unwrap();
        assert_eq!(
            (
                event.process.as_ref().unwrap().pid,
                event.event_fd,
                event.opened_ns_before,
                event.opened_ns_after
            ),
            (13, true, None, Some(2_000)),
            "the event fd opened 2,000 ns after the call returned is kept"
        );
        assert!(a.holders[..4]
            .iter()
            .all(|h| !h.event_fd && h.opened_ns_after.is_none()));
        assert_eq!(
            got[..3],
            [
                (
                    HolderKind::Transient,
                    9,
                    b"/var/lib/m/etc/passwd".to_vec(),
                    Some(1_800_000),
                    Some(395_000)
                ),
                (
                    HolderKind::Transient,
                    11,
                    b"/var/lib/m/etc/during".to_vec(),
                    Some(0),
                    Some(645_000)
                ),
                (
                    HolderKind::Transient,
                    10,
                    b"/var/lib/m/fanotify-fd".to_vec(),
                    None,
                    Some(795_000)
                ),
            ]
        );
        assert!(a.holders.iter().all(|h| h.seen == Seen::Traced && h.blamed));
    }

    /// The kinds, pids and notes of `a`'s holders.
    fn kinds_pids(a: &Attribution) -> Vec<(HolderKind, Option<u32>)> {
        a.holders
            .iter()
            .map(|h| (h.kind, h.process.as_ref().map(|p| p.pid)))
            .collect()
    }

    #[test]
    fn a_close_just_before_is_a_suspect_only_while_its_closer_may_not_have_come_back() {
        let ms = 1_000_000;
        let complete = |releases: Vec<Release>, call: &UmountCall| {
            let mut recent = RecentReleases::default();
            releases.into_iter().for_each(|r| recent.record(r));
            let mut a = attribution();
            recent.complete(call, &mut a);
            a
        };
        let late = 150 * ms;
        let call = sample_ebusy_call(late + 10 * ms, 5_000);
        let at = |ms_before: u64| call.ts_boot_ns - ms_before * ms;

        // Closed 11 ms before the call and not seen since: named, with how long before.
        let a = complete(vec![release(9, at(11), 812, b"/etc/hosts", None)], &call);
        assert_eq!(kinds_pids(&a), [(HolderKind::Transient, Some(9))]);
        let h = &a.holders[0];
        assert_eq!(h.path.as_deref(), Some(&b"/var/lib/m/etc/hosts"[..]));
        assert_eq!((h.closed_ns_after, h.seen), (None, Seen::Traced));
        assert!(
            h.note
                .as_deref()
                .unwrap()
                .starts_with("closed it 11.0 ms before the failing call"),
            "{:?}",
            h.note
        );

        // The latest of two suspects is named.
        let a = complete(
            vec![
                release(9, at(30), 812, b"/a", None),
                release(8, at(20), 812, b"/b", None),
            ],
            &call,
        );
        assert_eq!(kinds_pids(&a), [(HolderKind::Transient, Some(8))]);

        // Too long before (150 ms), on another mount, or a directory change: not named.
        for r in [
            release(9, at(150), 812, b"/a", None),
            release(9, at(5), 999, b"/a", None),
            Release {
                how: ReleaseHow::Chdir,
                ..release(9, at(5), 812, b"/a", None)
            },
        ] {
            let a = complete(vec![r], &call);
            assert_eq!(kinds_pids(&a), [(HolderKind::Unknown, None)]);
        }

        // The closer released another file (any mount) later, before the call: it had come
        // back, so its file was gone.
        let a = complete(
            vec![
                release(9, at(11), 812, b"/a", None),
                release(9, at(3), 999, b"/b", None),
            ],
            &call,
        );
        assert_eq!(kinds_pids(&a), [(HolderKind::Unknown, None)]);

        // The caller's own thread closed it: it is running the call, so it came back.
        let a = complete(
            vec![Release {
                tid: call.tid,
                ..release(9, at(11), 812, b"/a", None)
            }],
            &call,
        );
        assert_eq!(kinds_pids(&a), [(HolderKind::Unknown, None)]);

        // Something else explains the EBUSY (a release after the call): no suspect added.
        let a = complete(
            vec![
                release(8, at(11), 812, b"/a", None),
                release(9, call.ts_boot_ns + ms, 812, b"/b", Some(at(40))),
            ],
            &call,
        );
        assert_eq!(kinds_pids(&a), [(HolderKind::Transient, Some(9))]);
        assert!(a.holders[0].closed_ns_after.is_some());
    }

    #[test]
    fn a_release_on_a_new_mount_with_the_targets_id_in_another_namespace_is_not_a_holder() {
        let (ours, theirs) = (4026532115, 4026532116);
        let mut recent = RecentReleases::default();
        let after = |pid: u32, ns: Option<u64>| Release {
            mount_ns: ns,
            ..release(pid, CALL_TS + 100_000, 812, b"/etc/passwd", None)
        };
        recent.record(after(7, Some(ours)));
        recent.record(after(8, None)); // namespace unknown: matched by id
        recent.record(after(9, Some(theirs))); // id 812 handed to a new mount over there
        let mut a = attribution();
        a.mount.mntns = ours;
        recent.complete(&call(), &mut a);
        assert_eq!(
            kinds_pids(&a),
            [
                (HolderKind::Transient, Some(7)),
                (HolderKind::Transient, Some(8))
            ]
        );

        // Nor is its close just before the call a suspect.
        let mut recent = RecentReleases::default();
        recent.record(Release {
            mount_ns: Some(theirs),
            ..release(9, CALL_TS - 1_000_000, 812, b"/etc/passwd", None)
        });
        let mut a = attribution();
        a.mount.mntns = ours;
        recent.complete(&call(), &mut a);
        assert_eq!(kinds_pids(&a), [(HolderKind::Unknown, None)]);
    }

    /// A container's process held a file through its namespace's copy of the mount (which
    /// receives the unmount) and exited after the call, its namespace with it, before the
    /// scan: the scan found no holder on the copy, but the copy is among the attribution's
    /// copies (from the mount tables remembered), and the exit's release on it names the
    /// process as a holder of that copy, under the copy's mount point.
    #[test]
    fn a_release_on_a_copy_in_another_namespace_the_scan_never_saw_held_is_a_holder() {
        let (ours, theirs) = (4026532115, 4026532300);
        let copy = |id: u64, counted: bool| MountCopy {
            id,
            mntns: theirs,
            pid: None,
            mount_point: b"/vol/m".to_vec(),
            propagation: "parent master:1".into(),
            counted,
            container: None,
        };
        let exit = |pid: u32, mnt_id: u64, ns: Option<u64>| Release {
            how: ReleaseHow::Exit,
            fd: 3,
            mount_ns: ns,
            ..release(pid, CALL_TS + 300_000, mnt_id, b"/held", None)
        };
        let mut recent = RecentReleases::default();
        recent.record(exit(20, 900, Some(theirs))); // the container's process
        recent.record(exit(21, 900, Some(ours))); // id 900 over here: another mount
        recent.record(exit(22, 901, Some(theirs))); // a private copy: cannot cause EBUSY
        let mut a = attribution();
        a.mount.mntns = ours;
        a.copies = vec![copy(900, true), copy(901, false)];
        recent.complete(&call(), &mut a);
        assert_eq!(kinds_pids(&a), [(HolderKind::MountCopy, Some(20))]);
        let h = &a.holders[0];
        assert_eq!(
            (h.via, h.mount_id, h.blamed, h.seen, h.fd),
            (
                Some(HolderKind::Transient),
                900,
                true,
                Seen::Traced,
                Some(3)
            )
        );
        assert_eq!(h.path.as_deref(), Some(&b"/vol/m/held"[..]));
        assert_eq!(h.closed_ns_after, Some(295_000));
        assert_eq!(
            h.note.as_deref(),
            Some("copy (mount 900) at /vol/m in mount namespace 4026532300 (parent master:1, receives the unmount); exited after the failing call")
        );

        // Without the copy known, the same release explains nothing.
        let mut a = attribution();
        a.mount.mntns = ours;
        recent.complete(&call(), &mut a);
        assert_eq!(kinds_pids(&a), [(HolderKind::Unknown, None)]);
    }

    /// A container's process held a file through its namespace's copy and was reaped (by the
    /// runtime's shim) before the loop decoded its exit release: its own container and
    /// namespace cannot be read any more, so it takes those of the copy's namespace (the
    /// mount-table cache read that namespace's container when it found it). A process read
    /// as its release arrived keeps what was read: a host process (no container) holding a
    /// file through a container's copy is never given the container. A copy in a namespace
    /// of no container gives none.
    #[test]
    fn a_holder_gone_before_its_release_was_read_takes_the_container_of_its_copys_namespace() {
        let id = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d";
        let uid = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a";
        let theirs = 4026532300;
        let pod_container =
            crate::container::from_cgroup_path(format!("/kubepods/pod{uid}/{id}").as_bytes());
        let copy = |id: u64, mntns: u64, container: Option<Container>| MountCopy {
            id,
            mntns,
            pid: None,
            mount_point: b"/vol/m".to_vec(),
            propagation: "parent master:1".into(),
            counted: true,
            container,
        };
        let exit = |pid: u32, mnt_id: u64, ns: u64| Release {
            how: ReleaseHow::Exit,
            fd: 3,
            mount_ns: Some(ns),
            ..release(pid, CALL_TS + 300_000, mnt_id, b"/held", None)
        };
        // Pid 10 lives, on the host (no container); 4,190,020 and 4,190,030 are gone.
        let tree = process::sample_proc_tree(b"4:memory:/system.slice/sshd.service\n0::/\n");
        let mut recent = RecentReleases {
            proc: process::ProcFs::at(tree.path()),
            ..RecentReleases::default()
        };
        let (reaped, reaped_too) = (4_190_020, 4_190_030);
        recent.record(exit(reaped, 900, theirs)); // the container's process
        recent.record(exit(10, 900, theirs)); // a host process, through /proc/PID/root
        recent.record(exit(reaped_too, 901, theirs + 1)); // on a copy of no container
        let mut a = attribution();
        a.mount.mntns = 4026532115;
        a.copies = vec![
            copy(900, theirs, pod_container.clone()),
            copy(901, theirs + 1, None),
        ];
        recent.complete(&call(), &mut a);
        let got: Vec<_> = a
            .holders
            .iter()
            .map(|h| {
                let p = h.process.as_ref().unwrap();
                let c = p.container.as_ref();
                (
                    p.pid,
                    p.mntns,
                    c.and_then(|c| c.id.as_deref()),
                    c.and_then(|c| c.pod_uid.as_deref()),
                )
            })
            .collect();
        assert_eq!(got[0], (reaped, Some(theirs), Some(id), Some(uid)));
        assert_eq!(
            (got[1].0, got[1].2),
            (10, None),
            "read as it let go: no container"
        );
        assert_eq!(got[2], (reaped_too, Some(theirs + 1), None, None));
        assert!(a
            .holders
            .iter()
            .all(|h| (h.kind, h.via) == (HolderKind::MountCopy, Some(HolderKind::Transient))));

        // Gone, but on the target itself (no copy): nothing to take it from.
        let mut recent = RecentReleases {
            proc: process::ProcFs::at(tree.path()),
            ..RecentReleases::default()
        };
        recent.record(exit(reaped, 812, theirs));
        let mut a = attribution();
        a.copies = vec![copy(900, theirs, pod_container)];
        recent.complete(&call(), &mut a);
        assert_eq!(kinds_pids(&a), [(HolderKind::Transient, Some(reaped))]);
        let p = a.holders[0].process.as_ref().unwrap();
        assert_eq!((p.mntns, &p.container), (None, &None));
    }

    #[test]
    fn a_listener_letting_go_of_unread_events_is_a_traced_fanotify_holder() {
        let group = |pid: u32| Release {
            how: ReleaseHow::Exit,
            fd: 3,
            queued_events: 2,
            ..release(
                pid,
                CALL_TS + 300_000,
                812,
                b"/etc/passwd",
                Some(CALL_TS - 10),
            )
        };
        let mut recent = RecentReleases::default();
        recent.record(group(9));
        let mut a = attribution();
        recent.complete(&call(), &mut a);
        assert_eq!(kinds_pids(&a), [(HolderKind::Fanotify, Some(9))]);
        let h = &a.holders[0];
        assert_eq!(
            (h.fd, h.seen, h.closed_ns_after, h.opened_ns_before),
            (Some(3), Seen::Traced, Some(295_000), None)
        );
        assert_eq!(h.path.as_deref(), Some(&b"/var/lib/m/etc/passwd"[..]));
        assert_eq!(
            h.note.as_deref(),
            Some("exited after the failing call, letting go of its fanotify group with 2 unread events on this mount (its queue held the mount; the path is the first one's file)")
        );

        // The scan saw the listener's queue already (same process, same group fd): once.
        let mut scanned = Holder::new(HolderKind::Fanotify, 812, Seen::KernelScan);
        scanned.process = h.process.clone();
        scanned.fd = Some(3);
        let mut a = attribution();
        a.holders.push(scanned);
        recent.complete(&call(), &mut a);
        assert_eq!(kinds_pids(&a), [(HolderKind::Fanotify, Some(9))]);
        assert_eq!(a.holders[0].seen, Seen::KernelScan);
    }

    /// A holder's kind, pid, path, queued events and files (path, cut).
    type Summary = (
        HolderKind,
        Option<u32>,
        Option<Vec<u8>>,
        Option<u32>,
        Vec<(Vec<u8>, bool)>,
    );

    /// A group let go with 7 unread events comes as one release per named file: one holder
    /// names them in queue order (a file on a mount that is not this one's left out), its
    /// path the first's; another group of the same listener (another time) is another holder.
    #[test]
    fn a_listeners_group_names_its_queued_files_once() {
        let file = |index: u32, mnt_id: u64, path: &[u8], at: u64| Release {
            how: ReleaseHow::Close,
            fd: 4,
            queued_events: 7,
            queued_index: index,
            truncated: index == 3,
            ..release(9, CALL_TS + at, mnt_id, path, None)
        };
        let mut recent = RecentReleases::default();
        // Arrived out of order, with a plain release between them.
        for r in [
            file(1, 812, b"/b", 300_000),
            file(0, 812, b"/a", 300_000),
            release(10, CALL_TS + 300_000, 812, b"/x", None),
            file(2, 999, b"/elsewhere", 300_000),
            file(3, 812, b"/\xe2\x80\xa6/deep", 300_000),
            file(0, 812, b"/later", 900_000),
        ] {
            recent.record(r);
        }
        let mut a = attribution();
        recent.complete(&call(), &mut a);
        let got: Vec<Summary> = a
            .holders
            .iter()
            .map(|h| {
                let files = h
                    .queued_files
                    .iter()
                    .map(|f| (f.path.clone(), f.cut))
                    .collect();
                (
                    h.kind,
                    h.process.as_ref().map(|p| p.pid),
                    h.path.clone(),
                    h.queued_events,
                    files,
                )
            })
            .collect();
        let at = |p: &str| format!("/var/lib/m{p}").into_bytes();
        assert_eq!(
            got,
            [
                (
                    HolderKind::Fanotify,
                    Some(9),
                    Some(at("/a")),
                    Some(7),
                    vec![(at("/a"), false), (at("/b"), false), (at("/…/deep"), true)]
                ),
                (
                    HolderKind::Transient,
                    Some(10),
                    Some(at("/x")),
                    None,
                    vec![]
                ),
                (
                    HolderKind::Fanotify,
                    Some(9),
                    Some(at("/later")),
                    Some(7),
                    vec![(at("/later"), false)]
                ),
            ]
        );
    }

    #[test]
    fn nothing_released_leaves_unknown() {
        let mut a = attribution();
        RecentReleases::default().complete(&call(), &mut a);
        assert_eq!(a.holders.len(), 1);
        assert_eq!(a.holders[0].kind, HolderKind::Unknown);
    }

    #[test]
    fn old_releases_are_forgotten() {
        let mut recent = RecentReleases::default();
        recent.record(release(1, 1, 812, b"/a", None));
        recent.record(release(1, KEEP_NS + 10, 812, b"/b", None));
        assert_eq!(recent.releases.len(), 1);
    }
}
