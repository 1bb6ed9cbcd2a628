//! A live copy of every mount namespace's mount table, kept by a background thread that
//! wakes when a table changes (`poll` on `/proc/PID/mountinfo` reports `POLLPRI`). Mounts
//! that disappear are kept a while as *removed*: after a successful unmount, user space can
//! still learn what was unmounted (its id, device and root) to check whether it lives on.
//! Each namespace that is a container's own also has that container, read once from one of its
//! processes as the namespace is found, and remembered with its removed mounts: a mount copy's
//! holder whose process is gone can still be told which container it ran in.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{Read, Seek},
    os::fd::AsFd,
    sync::{Arc, RwLock},
    thread,
    time::{Duration, Instant},
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{
    mountinfo::{self, MountEntry},
    process::{self, ProcFs},
};
use crate::container::Container;

/// How long a removed mount is remembered.
pub const REMEMBER_REMOVED: Duration = Duration::from_secs(30);
/// How often new mount namespaces are looked for.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);

/// Told about every change of the tables (by the thread that keeps them).
pub trait OnTables: Send {
    /// The tables of every known namespace, after a change.
    fn tables_changed(&mut self, tables: &HashMap<u64, Vec<MountEntry>>);
}

/// The tables, shared with the thread that keeps them.
#[derive(Default)]
pub struct MountCache {
    inner: RwLock<Tables>,
    /// Where namespaces' processes are read (their containers).
    proc: ProcFs,
}

#[derive(Default)]
struct Tables {
    current: HashMap<u64, Vec<MountEntry>>,
    /// The container of each current namespace that is a container's own.
    containers: HashMap<u64, Container>,
    removed: Vec<Removed>,
}

/// A mount gone from a namespace's table (unmounted, or the namespace died).
struct Removed {
    mntns: u64,
    entry: MountEntry,
    at: Instant,
    /// The container whose namespace it was in (the inode may come back as another's).
    container: Option<Container>,
}

impl Removed {
    /// Whether it is still remembered at `now`.
    fn remembered(&self, now: Instant) -> bool {
        now.duration_since(self.at) < REMEMBER_REMOVED
    }
}

impl Tables {
    fn current_at(&self, mntns: u64, mount_point: &[u8]) -> Option<MountEntry> {
        self.current
            .get(&mntns)?
            .iter()
            .rev()
            .find(|m| m.mount_point == mount_point)
            .cloned()
    }

    /// The table of `mntns` as known: its current mounts, then those removed from it in the
    /// last [`REMEMBER_REMOVED`] (the most recently removed first), each id once (a current
    /// mount hides a removed one whose id it got); each with the container its namespace was
    /// while it was there.
    fn known_table(&self, mntns: u64, now: Instant) -> Vec<(&MountEntry, Option<&Container>)> {
        let container = self.containers.get(&mntns);
        let mut table: Vec<(&MountEntry, Option<&Container>)> = self
            .current
            .get(&mntns)
            .into_iter()
            .flatten()
            .map(|m| (m, container))
            .collect();
        let mut ids: HashSet<u64> = table.iter().map(|(m, _)| m.id).collect();
        for r in self
            .removed
            .iter()
            .rev()
            .filter(|r| r.mntns == mntns && r.remembered(now))
        {
            if ids.insert(r.entry.id) {
                table.push((&r.entry, r.container.as_ref()));
            }
        }
        table
    }

    fn removed_at(&self, mntns: u64, mount_point: &[u8]) -> Option<MountEntry> {
        self.removed
            .iter()
            .rev()
            .find(|r| r.mntns == mntns && r.entry.mount_point == mount_point)
            .map(|r| r.entry.clone())
    }

    /// Remembers `mounts`, gone from `mntns` now, with the namespace's container.
    fn remove(&mut self, mntns: u64, mounts: Vec<MountEntry>, now: Instant) {
        let container = self.containers.get(&mntns);
        let removed = mounts.into_iter().map(|entry| Removed {
            mntns,
            entry,
            at: now,
            container: container.cloned(),
        });
        self.removed.extend(removed);
    }

    /// Takes `table` as the current table of `mntns`, remembering the mounts it no longer
    /// has, and forgets what was removed too long ago.
    fn replace(&mut self, mntns: u64, table: Vec<MountEntry>, now: Instant) {
        if let Some(old) = self.current.insert(mntns, table) {
            let gone: Vec<MountEntry> = {
                let new = &self.current[&mntns];
                old.into_iter()
                    .filter(|m| !new.iter().any(|n| n.id == m.id))
                    .collect()
            };
            self.remove(mntns, gone, now);
        }
        self.removed.retain(|r| r.remembered(now));
    }
}

impl MountCache {
    /// Reads every namespace's table now and keeps them current from a background thread.
    pub fn start(mut on_change: Vec<Box<dyn OnTables>>) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        let mut watched = HashMap::new();
        cache.discover(&mut watched);
        cache.notify(&mut on_change);
        let keeper = Arc::clone(&cache);
        thread::Builder::new()
            .name("mount-cache".into())
            .spawn(move || keeper.keep_current(watched, on_change))
            .expect("spawning a thread");
        cache
    }

    fn notify(&self, on_change: &mut [Box<dyn OnTables>]) {
        if let Ok(tables) = self.inner.read() {
            for listener in on_change {
                listener.tables_changed(&tables.current);
            }
        }
    }

    /// The mount that was at `mount_point` in namespace `mntns` and has been removed in the
    /// last half minute (the most recently removed first), or else the one there now: what a
    /// successful unmount removed.
    pub fn unmounted_at(&self, mntns: u64, mount_point: &[u8]) -> Option<MountEntry> {
        let tables = self.inner.read().ok()?;
        tables
            .removed_at(mntns, mount_point)
            .or_else(|| tables.current_at(mntns, mount_point))
    }

    /// The topmost mount at `mount_point` in namespace `mntns` now, or else the one most
    /// recently removed from there: what a failed unmount was about, even if it has been
    /// lazily detached since.
    pub fn mounted_at(&self, mntns: u64, mount_point: &[u8]) -> Option<MountEntry> {
        let tables = self.inner.read().ok()?;
        tables
            .current_at(mntns, mount_point)
            .or_else(|| tables.removed_at(mntns, mount_point))
    }

    /// Mount `id` of namespace `mntns` now, or else the one most recently removed with that id:
    /// the mount the `sb_umount` security hook named, even if it has been detached since.
    pub fn with_id(&self, mntns: u64, id: u64) -> Option<MountEntry> {
        let tables = self.inner.read().ok()?;
        let current = tables.current.get(&mntns).into_iter().flatten();
        current.rev().find(|m| m.id == id).cloned().or_else(|| {
            let removed = tables.removed.iter().rev();
            removed
                .filter(|r| r.mntns == mntns && r.entry.id == id)
                .map(|r| r.entry.clone())
                .next()
        })
    }

    /// The tables around a mount: those of `mntns` and of every namespace where a mount shows
    /// the same tree as `tree` (same filesystem and root), now or within the last half minute,
    /// with the removed mounts: a namespace that died after a failed unmount (a container
    /// deleted) is still there by what it had, so that its copy of the mount can be told, and
    /// whose container it was.
    pub fn tables_around(&self, mntns: u64, tree: &MountEntry) -> KnownTables {
        let Ok(tables) = self.inner.read() else {
            return KnownTables::default();
        };
        let now = Instant::now();
        let mut namespaces: HashSet<u64> = tables
            .current
            .iter()
            .filter(|(_, table)| table.iter().any(|m| m.shows_same_tree(tree)))
            .map(|(ns, _)| *ns)
            .collect();
        namespaces.extend(
            tables
                .removed
                .iter()
                .filter(|r| r.remembered(now) && r.entry.shows_same_tree(tree))
                .map(|r| r.mntns),
        );
        namespaces.insert(mntns);
        let mut known = KnownTables::default();
        for ns in namespaces {
            if let Some(table) = tables.current.get(&ns) {
                known
                    .current
                    .insert(ns, table.iter().map(|m| m.id).collect());
            }
            let table = tables.known_table(ns, now);
            known.containers.extend(
                table
                    .iter()
                    .filter(|(m, _)| m.shows_same_tree(tree))
                    .filter_map(|(m, c)| Some(((ns, m.id), (*c)?.clone()))),
            );
            known
                .tables
                .insert(ns, table.into_iter().map(|(m, _)| m.clone()).collect());
        }
        known
    }

    /// Makes sure the table of `mntns` knows `mount_point`, reading it through `pid` now when it
    /// does not: a namespace may die before the keeper thread finds it, or before it re-reads
    /// the table after a mount, taking with it the mount an EBUSY named.
    pub fn learn(&self, mntns: u64, pid: u32, mount_point: &[u8]) {
        if self
            .inner
            .read()
            .is_ok_and(|t| t.current_at(mntns, mount_point).is_some())
        {
            return;
        }
        let Ok(mut file) = File::open(process::proc_path(pid, "mountinfo")) else {
            return;
        };
        if process::mntns_of(pid) != Some(mntns) {
            return;
        }
        let Some(table) = read_table(&mut file) else {
            return;
        };
        tracing::trace!("mount cache: learnt namespace {mntns} through pid {pid}");
        // A namespace known already keeps its container: `pid` may be a process that entered
        // it from outside (`nsenter`, a CSI plugin's helper) in cgroups of its own.
        if self
            .inner
            .read()
            .is_ok_and(|t| t.current.contains_key(&mntns))
        {
            self.update(mntns, table);
        } else {
            self.found(mntns, pid, table);
        }
    }

    /// Takes `table` as the table of `mntns`, read through `pid`: a namespace new to the
    /// cache (or whose inode may be another namespace's now), whose container is read from
    /// `pid` with it (the lowest pid in it, when the keeper thread finds it: the container's
    /// first process, not one that entered it later).
    fn found(&self, mntns: u64, pid: u32, table: Vec<MountEntry>) {
        let container = self.container_of(mntns, pid);
        let Ok(mut tables) = self.inner.write() else {
            return;
        };
        tables.replace(mntns, table, Instant::now());
        match container {
            Some(container) => tables.containers.insert(mntns, container),
            None => tables.containers.remove(&mntns),
        };
    }

    /// The container whose own namespace `mntns` is, read from its process `pid`: none for
    /// the host's namespace (pid 1's) and busyprobe's, whatever cgroups the process is in (a
    /// runtime's shim, on the host, may run in its pod's cgroup).
    fn container_of(&self, mntns: u64, pid: u32) -> Option<Container> {
        let host = [1, std::process::id()].map(process::mntns_of);
        if host.contains(&Some(mntns)) {
            return None;
        }
        self.proc.container(pid)
    }

    /// Takes `table` as the table of `mntns` now (its container unchanged).
    fn update(&self, mntns: u64, table: Vec<MountEntry>) {
        if let Ok(mut tables) = self.inner.write() {
            tables.replace(mntns, table, Instant::now());
        }
    }

    /// Drops a namespace whose processes all left it; its mounts went with it, and are
    /// remembered as removed (an EBUSY in it may still be waiting for its attribution), with
    /// its container.
    fn forget(&self, mntns: u64) {
        if let Ok(mut tables) = self.inner.write() {
            if let Some(table) = tables.current.remove(&mntns) {
                tables.remove(mntns, table, Instant::now());
            }
            tables.containers.remove(&mntns);
        }
    }

    /// The thread (given the namespaces found at start): watches one mountinfo file per
    /// namespace, re-reading a table when the kernel says it changed, and looks for new
    /// namespaces every second; tells `on_change` after each change.
    fn keep_current(
        &self,
        mut watched: HashMap<u64, Watched>,
        mut on_change: Vec<Box<dyn OnTables>>,
    ) {
        let mut last_discovery = Instant::now();
        loop {
            if last_discovery.elapsed() >= DISCOVER_EVERY {
                self.discover(&mut watched);
                self.notify(&mut on_change);
                last_discovery = Instant::now();
            }
            let until_discovery = DISCOVER_EVERY.saturating_sub(last_discovery.elapsed());
            let changed = wait_for_changes(&watched, until_discovery);
            let any = !changed.is_empty();
            for mntns in changed {
                let table = watched
                    .get_mut(&mntns)
                    .and_then(|w| read_table(&mut w.file));
                match table {
                    Some(table) => {
                        tracing::trace!(
                            "mount cache: namespace {mntns} changed ({} mounts)",
                            table.len()
                        );
                        self.update(mntns, table)
                    }
                    None => {
                        watched.remove(&mntns);
                        self.forget(mntns);
                    }
                }
            }
            if any {
                self.notify(&mut on_change);
            }
        }
    }

    /// Watches namespaces that appeared, and drops those whose process left them: namespace
    /// inode numbers are reused as soon as a namespace dies, so a namespace is known by its
    /// inode *and* a live process still in it.
    fn discover(&self, watched: &mut HashMap<u64, Watched>) {
        let stale: Vec<u64> = watched
            .iter()
            .filter(|(ns, w)| process::mntns_of(w.pid) != Some(**ns))
            .map(|(ns, _)| *ns)
            .collect();
        for ns in stale {
            tracing::trace!("mount cache: namespace {ns} is gone");
            watched.remove(&ns);
            self.forget(ns);
        }
        let mut seen = HashMap::new();
        for pid in process::pids() {
            if let Some(ns) = process::mntns_of(pid) {
                seen.entry(ns).or_insert(pid);
            }
        }
        for (ns, pid) in seen {
            if watched.contains_key(&ns) {
                continue;
            }
            if let Ok(mut file) = File::open(process::proc_path(pid, "mountinfo")) {
                if let Some(table) = read_table(&mut file) {
                    tracing::trace!(
                        "mount cache: watching namespace {ns} through pid {pid} ({} mounts)",
                        table.len()
                    );
                    self.found(ns, pid, table);
                    watched.insert(ns, Watched { file, pid });
                }
            }
        }
        // Namespaces learnt between two discoveries that died before this one.
        let unwatched: Vec<u64> = self.inner.read().map_or_else(
            |_| Vec::new(),
            |t| {
                t.current
                    .keys()
                    .filter(|ns| !watched.contains_key(ns))
                    .copied()
                    .collect()
            },
        );
        for ns in unwatched {
            self.forget(ns);
        }
    }
}

/// Some namespaces' tables as the cache knows them ([`MountCache::tables_around`]).
#[derive(Debug, Default)]
pub struct KnownTables {
    /// By namespace: its current mounts, then those removed from it in the last half minute
    /// (only those, for a namespace gone since).
    pub tables: HashMap<u64, Vec<MountEntry>>,
    /// The ids of the current ones, by namespace (those that live).
    pub current: HashMap<u64, HashSet<u64>>,
    /// By namespace and mount id, for the mounts showing the tree asked about: the container
    /// whose own namespace it was while the mount was there (absent: none, or not known).
    pub containers: HashMap<(u64, u64), Container>,
}

impl KnownTables {
    /// Whether namespace `mntns` lives and has mount `id` now.
    pub fn is_current(&self, mntns: u64, id: u64) -> bool {
        self.current
            .get(&mntns)
            .is_some_and(|ids| ids.contains(&id))
    }

    /// Whether namespace `mntns` lives.
    pub fn lives(&self, mntns: u64) -> bool {
        self.current.contains_key(&mntns)
    }

    /// The container whose own namespace `mntns` was while it had mount `id` (one showing
    /// the tree asked about).
    pub fn container_of(&self, mntns: u64, id: u64) -> Option<&Container> {
        self.containers.get(&(mntns, id))
    }
}

/// A namespace's mountinfo, opened through one of its processes.
struct Watched {
    file: File,
    pid: u32,
}

/// Re-reads a mountinfo file from the start.
fn read_table(file: &mut File) -> Option<Vec<MountEntry>> {
    file.rewind().ok()?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).ok()?;
    mountinfo::parse(&text).ok()
}

/// The namespaces whose table changed (or whose process went away), waiting `at_most`.
fn wait_for_changes(watched: &HashMap<u64, Watched>, at_most: Duration) -> Vec<u64> {
    let keys: Vec<u64> = watched.keys().copied().collect();
    let mut fds: Vec<PollFd> = keys
        .iter()
        .map(|k| PollFd::new(watched[k].file.as_fd(), PollFlags::POLLPRI))
        .collect();
    if fds.is_empty() {
        thread::sleep(at_most);
        return Vec::new();
    }
    let timeout = PollTimeout::try_from(at_most).unwrap_or(PollTimeout::ZERO);
    match poll(&mut fds, timeout) {
        Ok(n) if n > 0 => keys
            .iter()
            .zip(&fds)
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(k, _)| *k)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::mountinfo::parse_line;

    #[test]
    fn learns_a_namespace_through_a_process_in_it() {
        let cache = MountCache::default();
        let me = std::process::id();
        let ns = process::mntns_of(me).unwrap();
        cache.learn(ns + 1, me, b"/");
        assert_eq!(
            cache.mounted_at(ns + 1, b"/"),
            None,
            "not that process's namespace"
        );
        cache.learn(ns, me, b"/");
        assert!(cache.mounted_at(ns, b"/").is_some());
        // Known, but without the mount point asked about: read again, keeping the container
        // the namespace was found with (the process learnt through may have entered it).
        let container = crate::container::from_cgroup_path(
            b"/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        );
        cache.update(ns, Vec::new());
        let mut tables = cache.inner.write().unwrap();
        tables.removed.clear();
        tables.containers.insert(ns, container.clone().unwrap());
        drop(tables);
        cache.learn(ns, me, b"/");
        assert!(cache.mounted_at(ns, b"/").is_some(), "read again");
        assert_eq!(
            cache.inner.read().unwrap().containers.get(&ns),
            container.as_ref()
        );
    }

    #[test]
    fn a_vanished_namespace_leaves_its_mounts_as_removed() {
        let cache = MountCache::default();
        let layer = parse_line(b"10 1 0:50 / /run/sandbox/rootfs rw - overlay o rw").unwrap();
        cache.update(9, vec![layer.clone()]);
        cache.forget(9);
        assert_eq!(cache.mounted_at(9, b"/run/sandbox/rootfs"), Some(layer));
        assert_eq!(cache.mounted_at(9, b"/elsewhere"), None);
        assert!(cache.inner.read().unwrap().current.is_empty());
    }

    #[test]
    fn the_tables_around_a_mount_keep_namespaces_gone_since_until_their_inode_comes_back() {
        let cache = MountCache::default();
        let line = |l: &str| parse_line(l.as_bytes()).unwrap();
        let target = line("100 1 0:50 / /mnt rw shared:7 - tmpfs t rw");
        let copy = line("200 2 0:50 / /mnt rw master:7 - tmpfs t rw");
        cache.update(
            1,
            vec![line("1 1 8:1 / / rw shared:1 - ext4 s rw"), target.clone()],
        );
        cache.update(
            2,
            vec![line("2 2 8:1 / / rw master:1 - ext4 s rw"), copy.clone()],
        );
        cache.update(3, vec![line("3 3 8:1 / / rw - ext4 s rw")]);
        cache.forget(2);
        let known = cache.tables_around(1, &target);
        let mut namespaces: Vec<u64> = known.tables.keys().copied().collect();
        namespaces.sort_unstable();
        assert_eq!(namespaces, [1, 2], "the target's, and the one with a copy");
        assert!(known.tables[&2].contains(&copy), "{:?}", known.tables[&2]);
        assert!(known.lives(1) && !known.lives(2));
        assert!(known.is_current(1, 100) && !known.is_current(2, 200));

        // Namespace inode 2 comes back, its mount 200 another filesystem: that hides the copy.
        let other = line("200 2 0:60 / /other rw - tmpfs o rw");
        cache.update(2, vec![other.clone()]);
        let known = cache.tables_around(1, &target);
        assert!(known.tables[&2].contains(&other));
        assert!(!known.tables[&2].contains(&copy));
        assert!(known.is_current(2, 200));
    }

    /// A namespace's container is read from the process it was found through, except in the
    /// host's namespace or busyprobe's (never a container's, whatever cgroups that process is
    /// in); it is kept with the namespace's mounts, removed ones included, so that a copy in
    /// a namespace gone since is still told whose it was, even once its inode is another
    /// namespace's.
    #[test]
    fn the_container_of_a_namespace_stays_with_its_mounts_even_gone() {
        let id = "4f6b3bd7c0e2a9185b4f0c6d2e7a8b9c1d2e3f405162738495a6b7c8d9e0f1a2";
        let uid = "0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";
        let cgroup = format!("4:memory:/kubepods/besteffort/pod{uid}/{id}\n0::/\n");
        let tree = process::sample_proc_tree(cgroup.as_bytes());
        let cache = MountCache {
            proc: ProcFs::at(tree.path()),
            ..MountCache::default()
        };
        let ours = process::mntns_of(std::process::id()).unwrap();
        assert_eq!(cache.container_of(ours, 10), None, "busyprobe's namespace");
        let theirs = ours + 1;
        let container = cache.container_of(theirs, 10).expect("a container");
        assert_eq!(container.id.as_deref(), Some(id));

        let line = |l: &str| parse_line(l.as_bytes()).unwrap();
        let target = line("100 1 0:50 / /mnt rw shared:7 - tmpfs t rw");
        let copy = line("200 2 0:50 / /vol/m rw master:7 - tmpfs t rw");
        cache.update(
            ours,
            vec![line("1 1 8:1 / / rw shared:1 - ext4 s rw"), target.clone()],
        );
        cache.found(
            theirs,
            10,
            vec![line("2 2 8:1 / / rw master:1 - ext4 s rw"), copy.clone()],
        );
        let known = cache.tables_around(ours, &target);
        assert_eq!(known.container_of(theirs, 200), Some(&container));
        assert_eq!(known.container_of(theirs, 2), None, "another tree");
        assert_eq!(known.container_of(ours, 100), None, "busyprobe's namespace");

        // The container deleted: its namespace is gone, its copy and container remembered.
        cache.forget(theirs);
        let known = cache.tables_around(ours, &target);
        assert!(!known.lives(theirs));
        assert_eq!(known.container_of(theirs, 200), Some(&container));

        // The inode comes back as a namespace of no container, with a copy of its own: that
        // one has no container, the one removed keeps its own.
        let host = process::sample_proc_tree(b"4:memory:/system.slice/x.service\n0::/\n");
        let cache = MountCache {
            proc: ProcFs::at(host.path()),
            inner: RwLock::new(std::mem::take(&mut *cache.inner.write().unwrap())),
        };
        let again = line("201 2 0:50 / /vol/m rw master:7 - tmpfs t rw");
        cache.found(theirs, 10, vec![again.clone()]);
        let known = cache.tables_around(ours, &target);
        assert!(known.tables[&theirs].contains(&again) && known.tables[&theirs].contains(&copy));
        assert_eq!(known.container_of(theirs, 201), None);
        assert_eq!(known.container_of(theirs, 200), Some(&container));
    }

    #[test]
    fn remembers_what_an_update_removed() {
        let cache = MountCache::default();
        let a = parse_line(b"10 1 0:50 / /mnt rw - tmpfs t rw").unwrap();
        let b = parse_line(b"11 1 0:51 / /other rw - tmpfs t rw").unwrap();
        cache.update(7, vec![a.clone(), b.clone()]);
        assert_eq!(
            cache.unmounted_at(7, b"/mnt"),
            Some(a.clone()),
            "present now"
        );
        cache.update(7, vec![b.clone()]);
        assert_eq!(
            cache.unmounted_at(7, b"/mnt"),
            Some(a.clone()),
            "removed, remembered"
        );
        let again = parse_line(b"12 1 0:52 / /mnt rw - tmpfs t rw").unwrap();
        cache.update(7, vec![b.clone(), again.clone()]);
        assert_eq!(
            cache.mounted_at(7, b"/mnt"),
            Some(again),
            "a failed unmount is about what is there now"
        );
        assert_eq!(
            cache.unmounted_at(7, b"/mnt"),
            Some(a),
            "a success removed the older one"
        );
        assert_eq!(cache.unmounted_at(8, b"/mnt"), None, "other namespace");
        assert_eq!(cache.unmounted_at(7, b"/nothing"), None);
    }
}
