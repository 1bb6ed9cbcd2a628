//! Transient holders: processes that held a file on the mount at the failing call and let go
//! after it. The kernel reports every release on a tracked mount during the busy window after
//! an EBUSY; these are kept for a few seconds and matched with each EBUSY's mount.

use std::collections::{HashSet, VecDeque};

use super::{
    holder::{Holder, HolderKind, HolderProcess, Seen},
    Attribution,
};
use crate::{
    attribution::namespaces,
    event::{Release, UmountCall},
    paths,
};

/// How long releases are kept (longer than the kernel's busy window).
const KEEP_NS: u64 = 10_000_000_000;
/// At most this many releases are kept (the oldest go first).
const KEEP_COUNT: usize = 100_000;

/// Recent releases, oldest first.
#[derive(Default)]
pub struct RecentReleases {
    releases: VecDeque<Release>,
}

impl RecentReleases {
    /// Keeps one release (and forgets old ones).
    pub fn record(&mut self, release: Release) {
        tracing::trace!(
            "release: pid {} fd {} mount {} {} how={:?} opened={:?} at {}",
            release.pid,
            release.fd,
            release.mnt_id,
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
    /// the attributed mount (or a counted copy of it) after `call` failed, unless the file was
    /// opened after the call or the scan still sees it holding that same file; then, if still
    /// nothing explains the EBUSY, `unknown`.
    pub fn complete(&self, call: &UmountCall, attribution: &mut Attribution) {
        let mounts = attribution.blamed_mount_ids();
        let mount_point = attribution.mount.entry.mount_point.clone();
        // A file opened after the call returned did not hold the mount when the kernel said
        // busy; one opened during the call may have (before its busy check).
        let held_at_call = |r: &&Release| {
            r.opened_ts_boot_ns
                .is_none_or(|t| call.opened_before(t).is_some())
        };
        let held = super::opens::held_fds(&attribution.holders);
        let mut seen: HashSet<(u32, Vec<u8>)> = attribution
            .holders
            .iter()
            .filter_map(|h| Some((h.process.as_ref()?.pid, h.path.clone()?)))
            .collect();
        for r in self
            .releases
            .iter()
            .filter(|r| r.ts_boot_ns >= call.ts_boot_ns && mounts.contains(&r.mnt_id))
            .filter(held_at_call)
        {
            let path = paths::join(
                &mount_point,
                r.path_within_mount
                    .strip_prefix(b"/")
                    .unwrap_or(&r.path_within_mount),
            );
            // Already a holder: the same file (by path), or the same fd (its path may be cut).
            if held.contains(&(r.pid, r.fd)) || !seen.insert((r.pid, path.clone())) {
                continue;
            }
            attribution.holders.push(transient(r, path, call));
        }
        // An accessor whose release came after the call was holding: it is a holder now.
        let held = super::opens::held_fds(&attribution.holders);
        attribution
            .accessors
            .retain(|x| !held.contains(&(x.pid, x.fd)));
        attribution.add_unknown_if_unexplained();
    }
}

fn transient(r: &Release, path: Vec<u8>, call: &UmountCall) -> Holder {
    let call_end = call.ts_boot_ns + call.duration_ns;
    let mut h = Holder::new(HolderKind::Transient, r.mnt_id, Seen::Traced);
    h.process = Some(HolderProcess {
        pid: r.pid,
        comm: r.comm.clone(),
        mntns: namespaces::mntns_of(r.pid),
        container: None,
    });
    h.path = Some(path);
    h.fd = i32::try_from(r.fd).ok();
    h.closed_ns_after = Some(r.ts_boot_ns.saturating_sub(call_end));
    h.opened_ns_before = r.opened_ts_boot_ns.and_then(|t| call.opened_before(t));
    let how = r.how.verb();
    h.note = Some(if r.truncated {
        format!("{how} after the failing call (path cut: too deep or a name too long)")
    } else {
        format!("{how} after the failing call")
    });
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::sample_attribution,
        event::{sample_ebusy_call, ReleaseHow},
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
            path_within_mount: path.to_vec(),
            truncated: false,
            opened_ts_boot_ns: opened,
        }
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
        assert_eq!(
            got,
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
