//! The context stage: a decoded [`UmountCall`] becomes an [`UmountAttempt`] with its
//! sequence number, its wall-clock time, its target made absolute (through the caller's
//! working directory, read while it lives), its cgroup path and its container (with the
//! pod names the directory already knows: this stage never asks the runtime); and, for a
//! failure the explanation stage explains, what it needs from the caller
//! ([`Context::caller_facts`], also read while it lives).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    attribution::pods::Unnamed,
    clock::BootClock,
    container::{self, Container},
    event::{UmountAttempt, UmountCall},
    explain::facts::{CallerFacts, RecentFacts},
    kubernetes::{directory::UNKNOWN_FOR, PodDirectory},
    model::Attribution,
    paths,
    state::process::{CgroupPaths, ProcFs},
};

/// What the context stage keeps between attempts.
pub struct Context {
    clock: BootClock,
    proc: ProcFs,
    cgroups: CgroupPaths,
    v1_containers: V1Containers,
    pods: Arc<PodDirectory>,
    facts: RecentFacts,
    last_id: u64,
}

impl Context {
    /// Context read from `proc` (`/proc` in production), times converted by `clock`, pod
    /// names from what `pods` already knows.
    pub fn new(clock: BootClock, proc: ProcFs, pods: Arc<PodDirectory>) -> Self {
        Self {
            clock,
            proc,
            cgroups: CgroupPaths::default(),
            v1_containers: V1Containers::default(),
            pods,
            facts: RecentFacts::default(),
            last_id: 0,
        }
    }

    /// The next attempt: `call` with its id (from 1), time, absolute target, cgroup and
    /// container.
    pub fn attempt(&mut self, call: UmountCall) -> UmountAttempt {
        self.last_id += 1;
        let proc = &self.proc;
        let target_abs = absolute_target(&call, || proc.cwd(call.pid, call.tid));
        let cgroup = self.cgroups.path(call.cgroup_id, || proc.cgroup(call.pid));
        let container = self.container(call.pid, cgroup.as_deref());
        UmountAttempt {
            id: self.last_id,
            ts: self.clock.to_wall(call.ts_boot_ns),
            call,
            cgroup,
            container,
            target_abs,
            attribution: None,
            explanation: None,
        }
    }

    /// The caller's container: from its cgroup v2 path, or, where that path says nothing
    /// (`/` on cgroup v1 and hybrid hosts), from its v1 hierarchies' paths.
    fn container(&mut self, pid: u32, cgroup: Option<&[u8]>) -> Option<Container> {
        let mut found = match cgroup {
            Some(path) if path != b"/" => container::from_cgroup_path(path),
            _ => {
                let proc = &self.proc;
                self.v1_containers
                    .of(pid, Instant::now(), || proc.container(pid))
            }
        }?;
        if let Some(id) = found.id.as_deref() {
            found.k8s = self.pods.cached(id);
            if found.k8s.is_none() {
                // Named by a later attempt, once a listing in the background knows it.
                self.pods.prefetch_if_older_than(UNKNOWN_FOR);
            }
        }
        Some(found)
    }
}

impl Context {
    /// What explaining `attempt`'s failure needs from its caller (its target's mount,
    /// privileges or missing path component), read now, while the caller usually still
    /// lives (an identical failure of the same thread within a second reuses it); nothing for
    /// a success or an EBUSY.
    pub fn caller_facts(&mut self, attempt: &UmountAttempt) -> Arc<CallerFacts> {
        self.facts.of(&attempt.call, Instant::now())
    }

    /// Names, from what the directory knows, the holders' containers still unnamed: the
    /// transient holders, added after the pass named the others (the pass's listing knows
    /// their containers, or remembers them gone).
    pub fn name_holders_from_cache(&self, a: &mut Attribution) {
        let mut unnamed = Unnamed::default();
        unnamed.add_holders(a);
        unnamed.known_names(&self.pods).apply_to_holders(a);
    }
}

/// Callers' containers from their v1 cgroup paths, kept per pid for [`V1_KEPT_FOR`]: a
/// flood of unmounts by one process reads `/proc/PID/cgroup` once (the v2 cgroup id, which
/// keys [`CgroupPaths`], is the same for every process on a v1 host).
#[derive(Default)]
struct V1Containers {
    by_pid: HashMap<u32, (Instant, Option<Container>)>,
}

/// How long a caller's container is trusted before its cgroups are read again (pids are
/// reused).
const V1_KEPT_FOR: Duration = Duration::from_secs(10);
/// Most callers kept before the cache starts over.
const V1_CALLERS_KEPT: usize = 4096;

impl V1Containers {
    fn of(
        &mut self,
        pid: u32,
        now: Instant,
        read: impl FnOnce() -> Option<Container>,
    ) -> Option<Container> {
        if let Some((at, c)) = self.by_pid.get(&pid) {
            if now.duration_since(*at) < V1_KEPT_FOR {
                return c.clone();
            }
        }
        if self.by_pid.len() >= V1_CALLERS_KEPT {
            self.by_pid.clear();
        }
        let c = read();
        self.by_pid.insert(pid, (now, c.clone()));
        c
    }
}

/// The target made absolute; `cwd` is asked only for a relative, complete target.
fn absolute_target(call: &UmountCall, cwd: impl FnOnce() -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    let target = &call.target;
    if target.unreadable || target.bytes.is_empty() {
        return None;
    }
    if target.bytes.starts_with(b"/") {
        return Some(target.bytes.clone());
    }
    if target.truncated {
        return None;
    }
    cwd().map(|dir| paths::join(&dir, &target.bytes))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{event::KernelPath, state::process::sample_proc_tree};

    fn call(target: &[u8]) -> UmountCall {
        UmountCall {
            ts_boot_ns: 1,
            pid: 10,
            tid: 11,
            uid: 0,
            gid: 0,
            comm: b"umount".to_vec(),
            mntns: 1,
            cgroup_id: 1,
            target: KernelPath {
                bytes: target.to_vec(),
                truncated: false,
                unreadable: false,
            },
            flags: 0,
            ret: -16,
            duration_ns: 1,
            hooked: None,
        }
    }

    #[test]
    fn absolute_targets_stay_as_they_are() {
        let got = absolute_target(&call(b"/mnt/x"), || panic!("cwd must not be read"));
        assert_eq!(got.as_deref(), Some(&b"/mnt/x"[..]));
    }

    #[test]
    fn relative_targets_join_the_callers_cwd() {
        let got = absolute_target(&call(b"mnt"), || Some(b"/tmp/work".to_vec()));
        assert_eq!(got.as_deref(), Some(&b"/tmp/work/mnt"[..]));
        assert_eq!(absolute_target(&call(b"mnt"), || None), None);
    }

    #[test]
    fn truncated_or_unreadable_relative_targets_have_no_absolute_form() {
        let mut c = call(b"mnt");
        c.target.truncated = true;
        assert_eq!(absolute_target(&c, || Some(b"/x".to_vec())), None);
        let mut c = call(b"");
        c.target.unreadable = true;
        assert_eq!(absolute_target(&c, || Some(b"/x".to_vec())), None);
    }

    #[test]
    fn an_attempt_gets_its_id_absolute_target_and_cgroup_from_the_proc_tree() {
        let tree = sample_proc_tree(b"0::/system.slice/containerd.service\n");
        let dir = tree.path();
        let mut context = context_at(dir);
        let attempt = context.attempt(call(b"mnt"));
        assert_eq!(attempt.target_abs.as_deref(), Some(&b"/srv/data/mnt"[..]));
        assert_eq!(attempt.id, 1, "ids count from 1");
        assert_eq!(
            attempt.cgroup.as_deref(),
            Some(&b"/system.slice/containerd.service"[..])
        );
        // The same cgroup id again: the path comes from the cache, not from /proc.
        fs::remove_file(dir.join("10/cgroup")).unwrap();
        let again = context.attempt(call(b"mnt"));
        assert_eq!(
            again.cgroup.as_deref(),
            Some(&b"/system.slice/containerd.service"[..])
        );
        let mut other = call(b"mnt");
        other.cgroup_id = 2;
        let unknown = context.attempt(other);
        assert_eq!(
            unknown.cgroup, None,
            "another cgroup is read, and the process is gone"
        );
    }

    /// The context stage over a `/proc` look-alike, with no runtime to ask.
    fn context_at(dir: &std::path::Path) -> Context {
        Context::new(
            BootClock::booted_at_ns(0),
            ProcFs::at(dir),
            Arc::new(PodDirectory::off()),
        )
    }

    const ID: &str = "4f6b3bd7c0e2a9185b4f0c6d2e7a8b9c1d2e3f405162738495a6b7c8d9e0f1a2";
    const UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";

    /// On a cgroup v1 host the v2 path is `/` for everyone: the caller's container comes
    /// from its v1 lines, read once per caller.
    #[test]
    fn a_callers_container_on_cgroup_v1_comes_from_its_v1_paths() {
        let text = format!("4:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:cpu:/\n0::/\n");
        let tree = sample_proc_tree(text.as_bytes());
        let dir = tree.path();
        let mut context = context_at(dir);
        let attempt = context.attempt(call(b"/mnt"));
        let c = attempt.container.expect("the caller's container");
        assert_eq!(c.id.as_deref(), Some(ID));
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
        assert_eq!(c.k8s, None, "an off directory names nothing");
        fs::remove_file(dir.join("10/cgroup")).unwrap();
        let again = context.attempt(call(b"/mnt"));
        assert_eq!(again.container.unwrap().id.as_deref(), Some(ID), "kept");
    }

    #[test]
    fn a_callers_container_on_cgroup_v2_comes_from_its_path() {
        let text = format!("0::/kubepods.slice/cri-containerd-{ID}.scope\n");
        let tree = sample_proc_tree(text.as_bytes());
        let mut context = context_at(tree.path());
        let c = context.attempt(call(b"/mnt")).container.unwrap();
        assert_eq!(
            (c.runtime, c.id.as_deref()),
            (container::Runtime::Containerd, Some(ID))
        );
    }

    #[test]
    fn a_host_caller_has_no_container() {
        let tree = sample_proc_tree(b"4:memory:/system.slice/containerd.service\n0::/\n");
        let mut context = context_at(tree.path());
        assert_eq!(context.attempt(call(b"/mnt")).container, None);
    }
}
