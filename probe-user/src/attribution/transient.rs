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
        let mounts = blamed_mounts(attribution);
        let mount_point = attribution.mount.entry.mount_point.clone();
        let call_end = call.ts_boot_ns + call.duration_ns;
        let mut seen: HashSet<(u32, Vec<u8>)> = attribution
            .holders
            .iter()
            .filter_map(|h| Some((h.process.as_ref()?.pid, h.path.clone()?)))
            .collect();
        for r in self
            .releases
            .iter()
            .filter(|r| r.ts_boot_ns >= call.ts_boot_ns && mounts.contains(&r.mnt_id))
        {
            let path = paths::join(
                &mount_point,
                r.path_within_mount
                    .strip_prefix(b"/")
                    .unwrap_or(&r.path_within_mount),
            );
            if !seen.insert((r.pid, path.clone())) {
                continue;
            }
            attribution
                .holders
                .push(transient(r, path, call.ts_boot_ns, call_end));
        }
        attribution.add_unknown_if_unexplained();
    }
}

/// The target and the counted copies: the mounts whose holders make the unmount fail.
fn blamed_mounts(a: &Attribution) -> HashSet<u64> {
    let mut ids: HashSet<u64> = a
        .holders
        .iter()
        .filter(|h| h.blamed)
        .map(|h| h.mount_id)
        .collect();
    ids.insert(a.mount.id);
    ids
}

fn transient(r: &Release, path: Vec<u8>, call_start: u64, call_end: u64) -> Holder {
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
    h.opened_ns_before = r
        .opened_ts_boot_ns
        .map(|opened| call_start.saturating_sub(opened));
    h.note = Some(if r.truncated {
        "closed after the failing call (path cut: too deep or a name too long)".into()
    } else {
        "closed after the failing call".into()
    });
    h
}
