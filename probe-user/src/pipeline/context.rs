//! The context stage: a decoded [`UmountCall`] becomes an [`UmountAttempt`] with its
//! sequence number, its wall-clock time, its target made absolute (through the caller's
//! working directory, read while it lives) and its cgroup path.

use crate::{
    clock::BootClock,
    event::{UmountAttempt, UmountCall},
    paths,
    state::process::{CgroupPaths, ProcFs},
};

/// What the context stage keeps between attempts.
pub struct Context {
    clock: BootClock,
    proc: ProcFs,
    cgroups: CgroupPaths,
    last_id: u64,
}

impl Context {
    /// Context read from `proc` (`/proc` in production), times converted by `clock`.
    pub fn new(clock: BootClock, proc: ProcFs) -> Self {
        Self {
            clock,
            proc,
            cgroups: CgroupPaths::default(),
            last_id: 0,
        }
    }

    /// The next attempt: `call` with its id (from 1), time, absolute target and cgroup.
    pub fn attempt(&mut self, call: UmountCall) -> UmountAttempt {
        self.last_id += 1;
        let proc = &self.proc;
        let target_abs = absolute_target(&call, || proc.cwd(call.pid, call.tid));
        let cgroup = self.cgroups.path(call.cgroup_id, || proc.cgroup(call.pid));
        UmountAttempt {
            id: self.last_id,
            ts: self.clock.to_wall(call.ts_boot_ns),
            call,
            cgroup,
            target_abs,
            attribution: None,
        }
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
        let mut context = Context::new(BootClock::booted_at_ns(0), ProcFs::at(dir));
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
}
