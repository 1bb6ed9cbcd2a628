//! The successful unmounts of the last minutes, by mount namespace and absolute target: what
//! explains a later EINVAL on the same target (the mount was already gone, and who took it).
//! Bounded in time ([`KEEP_FOR_NS`]) and in size ([`MAX_ENTRIES`]).

use std::collections::{HashMap, VecDeque};

/// How long a successful unmount is remembered (`CLOCK_BOOTTIME` ns).
pub const KEEP_FOR_NS: u64 = 10 * 60 * 1_000_000_000;
/// Most unmounts remembered; beyond this the oldest is forgotten first.
pub const MAX_ENTRIES: usize = 4096;

/// One successful unmount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmounted {
    /// The attempt's `id`.
    pub id: u64,
    /// The process that unmounted.
    pub pid: u32,
    /// Its comm.
    pub comm: Vec<u8>,
    /// `CLOCK_BOOTTIME` ns when its call entered the kernel.
    pub ts_boot_ns: u64,
}

/// Mount namespace inode and absolute target.
type Key = (u64, Vec<u8>);

/// The last successful unmount of each target, the oldest forgotten first.
#[derive(Debug)]
pub struct UnmountHistory {
    latest: HashMap<Key, Unmounted>,
    /// The namespace of the latest unmount of each target, whichever namespace it was in.
    by_target: HashMap<Vec<u8>, u64>,
    /// Every recorded unmount's key and id, oldest first (an id no longer in `latest` was
    /// replaced by a later unmount of the same target).
    order: VecDeque<(Key, u64, u64)>,
    keep_for_ns: u64,
    max_entries: usize,
}

impl Default for UnmountHistory {
    fn default() -> Self {
        Self::bounded(KEEP_FOR_NS, MAX_ENTRIES)
    }
}

impl UnmountHistory {
    /// A history that keeps unmounts for `keep_for_ns` and at most `max_entries` of them.
    pub fn bounded(keep_for_ns: u64, max_entries: usize) -> Self {
        Self {
            latest: HashMap::new(),
            by_target: HashMap::new(),
            order: VecDeque::new(),
            keep_for_ns,
            max_entries: max_entries.max(1),
        }
    }

    /// Remembers that `unmounted` unmounted `target` in namespace `mntns`.
    pub fn record(&mut self, mntns: u64, target: &[u8], unmounted: Unmounted) {
        self.forget_before(unmounted.ts_boot_ns.saturating_sub(self.keep_for_ns));
        while self.order.len() >= self.max_entries {
            self.pop_oldest();
        }
        let key = (mntns, target.to_vec());
        self.order
            .push_back((key.clone(), unmounted.id, unmounted.ts_boot_ns));
        self.by_target.insert(target.to_vec(), mntns);
        self.latest.insert(key, unmounted);
    }

    /// The last successful unmount of `target` (the same path) in a namespace other than
    /// `mntns`, at most `within_ns` before `now_boot_ns`, with its namespace.
    pub fn last_elsewhere(
        &self,
        mntns: u64,
        target: &[u8],
        now_boot_ns: u64,
        within_ns: u64,
    ) -> Option<(u64, &Unmounted)> {
        let other = *self.by_target.get(target).filter(|ns| **ns != mntns)?;
        let found = self.latest.get(&(other, target.to_vec()))?;
        (now_boot_ns.saturating_sub(found.ts_boot_ns) <= within_ns.min(self.keep_for_ns))
            .then_some((other, found))
    }

    /// The last successful unmount of `target` in namespace `mntns` at most [`KEEP_FOR_NS`]
    /// before `now_boot_ns`.
    pub fn last(&self, mntns: u64, target: &[u8], now_boot_ns: u64) -> Option<&Unmounted> {
        let found = self.latest.get(&(mntns, target.to_vec()))?;
        (now_boot_ns.saturating_sub(found.ts_boot_ns) <= self.keep_for_ns).then_some(found)
    }

    /// How many targets are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.latest.len()
    }

    fn forget_before(&mut self, oldest_kept: u64) {
        while self
            .order
            .front()
            .is_some_and(|(_, _, ts)| *ts < oldest_kept)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some((key, id, _)) = self.order.pop_front() else {
            return;
        };
        if self.latest.get(&key).is_some_and(|u| u.id == id) {
            self.latest.remove(&key);
            if self.by_target.get(&key.1) == Some(&key.0) {
                self.by_target.remove(&key.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmounted(id: u64, ts_boot_ns: u64) -> Unmounted {
        Unmounted {
            id,
            pid: 100 + id as u32,
            comm: b"containerd".to_vec(),
            ts_boot_ns,
        }
    }

    #[test]
    fn the_latest_unmount_of_a_target_in_its_namespace_is_found() {
        let mut h = UnmountHistory::default();
        h.record(7, b"/run/a", unmounted(1, 10));
        h.record(7, b"/run/a", unmounted(2, 20));
        h.record(8, b"/run/a", unmounted(3, 30));
        assert_eq!(h.last(7, b"/run/a", 40).map(|u| u.id), Some(2));
        assert_eq!(h.last(8, b"/run/a", 40).map(|u| u.id), Some(3));
        assert_eq!(h.last(9, b"/run/a", 40), None, "another namespace");
        assert_eq!(h.last(7, b"/run/b", 40), None, "another target");
    }

    #[test]
    fn the_last_unmount_of_a_path_elsewhere_is_found_within_a_window() {
        let mut h = UnmountHistory::bounded(100, 10);
        h.record(8, b"/run/a", unmounted(1, 10));
        assert_eq!(
            h.last_elsewhere(7, b"/run/a", 40, 50)
                .map(|(ns, u)| (ns, u.id)),
            Some((8, 1))
        );
        assert_eq!(
            h.last_elsewhere(7, b"/run/a", 70, 50),
            None,
            "outside the window"
        );
        assert_eq!(
            h.last_elsewhere(8, b"/run/a", 40, 50),
            None,
            "its own namespace"
        );
        assert_eq!(h.last_elsewhere(7, b"/run/b", 40, 50), None, "another path");
        h.record(7, b"/run/a", unmounted(2, 20));
        assert_eq!(
            h.last_elsewhere(7, b"/run/a", 40, 50),
            None,
            "the latest is its own"
        );
        let mut h = UnmountHistory::bounded(u64::MAX, 1);
        h.record(8, b"/run/a", unmounted(1, 10));
        h.record(8, b"/run/b", unmounted(2, 20));
        assert_eq!(h.last_elsewhere(7, b"/run/a", 40, 50), None, "forgotten");
        assert_eq!(h.by_target.len(), 1, "and its path with it");
    }

    #[test]
    fn unmounts_older_than_the_window_are_forgotten() {
        let mut h = UnmountHistory::bounded(100, 10);
        h.record(7, b"/a", unmounted(1, 0));
        assert!(h.last(7, b"/a", 100).is_some());
        assert_eq!(h.last(7, b"/a", 101), None, "too old to say");
        h.record(7, b"/b", unmounted(2, 150));
        assert_eq!(h.len(), 1, "the old one dropped as a new one came");
    }

    #[test]
    fn beyond_the_limit_the_oldest_target_goes_first() {
        let mut h = UnmountHistory::bounded(u64::MAX, 3);
        for id in 1..=5u64 {
            h.record(7, format!("/m{id}").as_bytes(), unmounted(id, id));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.last(7, b"/m2", 6), None);
        assert_eq!(h.last(7, b"/m3", 6).map(|u| u.id), Some(3));
        // A target unmounted again keeps its latest entry when its older one is popped.
        let mut h = UnmountHistory::bounded(u64::MAX, 2);
        h.record(7, b"/a", unmounted(1, 1));
        h.record(7, b"/a", unmounted(2, 2));
        h.record(7, b"/b", unmounted(3, 3));
        assert_eq!(h.last(7, b"/a", 4).map(|u| u.id), Some(2));
        assert_eq!(h.last(7, b"/b", 4).map(|u| u.id), Some(3));
    }
}
