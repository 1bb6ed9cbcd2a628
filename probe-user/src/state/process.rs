//! Processes as `/proc` shows them: the host's pids and their mount namespaces, and
//! ([`ProcFs`]) a process's working directory and cgroup paths, read while it is alive.

use std::{
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::PathBuf,
};

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

/// Where process information is read from (`/proc` in production, a fixture tree in tests).
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/proc"),
        }
    }
}

impl ProcFs {
    /// A `/proc` look-alike rooted elsewhere.
    #[cfg(test)]
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The working directory of thread `tid` of `pid` (threads may have their own).
    pub fn cwd(&self, pid: u32, tid: u32) -> Option<Vec<u8>> {
        let link = self.root.join(format!("{pid}/task/{tid}/cwd"));
        let target = fs::read_link(&link)
            .or_else(|_| fs::read_link(self.root.join(format!("{pid}/cwd"))))
            .ok()?;
        Some(target.as_os_str().as_bytes().to_vec())
    }

    /// The cgroup v2 path of `pid` (the `0::` line of `/proc/PID/cgroup`).
    pub fn cgroup(&self, pid: u32) -> Option<Vec<u8>> {
        let text = fs::read(self.root.join(format!("{pid}/cgroup"))).ok()?;
        text.split(|&b| b == b'\n')
            .find_map(|line| line.strip_prefix(b"0::"))
            .map(<[u8]>::to_vec)
    }

    /// Every cgroup path of `pid`: the v2 path first, then the v1 hierarchies' (hybrid
    /// hosts keep container layouts in the v1 lines while the `0::` path may be `/`); `None`
    /// when `/proc/PID/cgroup` cannot be read (the process is gone).
    pub fn cgroup_paths(&self, pid: u32) -> Option<Vec<Vec<u8>>> {
        let text = fs::read(self.root.join(format!("{pid}/cgroup"))).ok()?;
        let mut v2 = Vec::new();
        let mut v1 = Vec::new();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match line.strip_prefix(b"0::") {
                Some(path) => v2.push(path.to_vec()),
                None => v1.extend(line.splitn(3, |&b| b == b':').nth(2).map(<[u8]>::to_vec)),
            }
        }
        v2.extend(v1);
        Some(v2)
    }

    /// The container `pid` runs in, from the first of its cgroup paths (v2, then v1) that
    /// names one.
    pub fn container(&self, pid: u32) -> Option<crate::container::Container> {
        self.container_if_alive(pid).flatten()
    }

    /// [`Self::container`], telling apart a process that runs in no container (`Some(None)`)
    /// and one that is gone (`None`: its cgroups can no longer be read).
    pub fn container_if_alive(&self, pid: u32) -> Option<Option<crate::container::Container>> {
        let paths = self.cgroup_paths(pid)?;
        Some(
            paths
                .iter()
                .find_map(|path| crate::container::from_cgroup_path(path)),
        )
    }
}

/// Cgroup paths by the cgroup id the probe read at the call: a flood of attempts from one
/// service reads `/proc/PID/cgroup` once, not once per attempt (that read was most of the
/// cost of recording). Ids are not reused while the cgroup exists; bounded in size.
#[derive(Debug, Default)]
pub struct CgroupPaths {
    known: std::collections::HashMap<u64, Vec<u8>>,
}

/// Most cgroup paths kept before the cache starts over.
const CGROUP_PATHS_KEPT: usize = 4096;

impl CgroupPaths {
    /// The path of cgroup `id`, asking `read` (the caller's `/proc/PID/cgroup`) the first time.
    /// Id 0 (unknown) and failed reads are never cached.
    pub fn path(&mut self, id: u64, read: impl FnOnce() -> Option<Vec<u8>>) -> Option<Vec<u8>> {
        if let Some(path) = self.known.get(&id) {
            return Some(path.clone());
        }
        let path = read()?;
        if id != 0 {
            if self.known.len() >= CGROUP_PATHS_KEPT {
                self.known.clear();
            }
            self.known.insert(id, path.clone());
        }
        Some(path)
    }
}

/// A `/proc` look-alike in a new temporary directory (removed when dropped): process 10,
/// whose thread 11 works in `/srv/data`, with `cgroup` as its `/proc/10/cgroup`.
#[cfg(test)]
pub(crate) fn sample_proc_tree(cgroup: &[u8]) -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path();
    let task = dir.join("10/task/11");
    fs::create_dir_all(&task).unwrap();
    std::os::unix::fs::symlink("/srv/data", task.join("cwd")).unwrap();
    fs::write(dir.join("10/cgroup"), cgroup).unwrap();
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup v1 host (this machine's kind): every hierarchy has a line, the container's
    /// path is in the controllers' lines, and the v2 line says `/`.
    #[test]
    fn a_container_on_cgroup_v1_is_read_from_its_hierarchies() {
        let id = "4f6b3bd7c0e2a9185b4f0c6d2e7a8b9c1d2e3f405162738495a6b7c8d9e0f1a2";
        let uid = "0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";
        let pod = format!("/kubepods/besteffort/pod{uid}/{id}");
        let text = format!(
            "12:pids:{pod}\n11:hugetlb:{pod}\n4:memory:{pod}\n2:cpu,cpuacct:{pod}\n\
             1:name=systemd:{pod}\n0::/\n"
        );
        let tree = sample_proc_tree(text.as_bytes());
        let c = ProcFs::at(tree.path()).container(10).expect("a container");
        assert_eq!(
            (c.id.as_deref(), c.pod_uid.as_deref()),
            (Some(id), Some(uid))
        );
        let host = sample_proc_tree(b"4:memory:/system.slice/containerd.service\n0::/\n");
        assert_eq!(ProcFs::at(host.path()).container(10), None);
        assert_eq!(ProcFs::at(host.path()).container_if_alive(10), Some(None));
        assert_eq!(
            ProcFs::at(host.path()).container(99),
            None,
            "no such process"
        );
        assert_eq!(ProcFs::at(host.path()).container_if_alive(99), None, "gone");
    }

    #[test]
    fn reads_cwd_and_cgroup_from_a_proc_tree() {
        let tree = sample_proc_tree(
            b"12:memory:/docker/abc\n1:name=systemd:/system.slice/x.scope\n0::/system.slice/containerd.service\n",
        );
        let proc = ProcFs::at(tree.path());
        assert_eq!(proc.cwd(10, 11).as_deref(), Some(&b"/srv/data"[..]));
        assert_eq!(
            proc.cgroup(10).as_deref(),
            Some(&b"/system.slice/containerd.service"[..])
        );
        assert_eq!(
            proc.cgroup_paths(10).unwrap(),
            [
                &b"/system.slice/containerd.service"[..],
                b"/docker/abc",
                b"/system.slice/x.scope"
            ]
        );
        assert_eq!(proc.cgroup_paths(99), None);
        assert_eq!(proc.cwd(99, 99), None);
    }
}
