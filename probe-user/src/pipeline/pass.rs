//! One attribution pass planned: the EBUSYs it answers grouped by the mount they name, so
//! that each mount is attributed once however often it failed, and each target path resolved
//! once per caller.

use std::collections::HashMap;

use crate::{attribution::target::TargetMount, event::UmountAttempt, model::Attribution};

/// What an attempt's target resolved to.
pub enum Resolved {
    /// A mount to attribute.
    Mount(TargetMount),
    /// An answer that needs no scan (the caller's namespace is gone with its mounts).
    Ready(Attribution),
}

/// How one attempt of a pass is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// By the attribution of the pass's target number `n`.
    Target(usize),
    /// Without a scan: an attribution already made, or why there is none.
    Ready(Box<Result<Attribution, String>>),
}

/// A pass: its targets, each once, and each attempt's answer, in the attempts' order.
#[derive(Default)]
pub struct Pass {
    /// The mounts to attribute.
    pub targets: Vec<TargetMount>,
    /// Each attempt's answer.
    pub answers: Vec<Answer>,
}

/// What makes two calls resolve alike: the caller, its namespace and the target as it passed
/// it (a relative target also the thread, whose cwd it is resolved from).
#[derive(Clone, PartialEq, Eq, Hash)]
struct PathKey {
    mntns: u64,
    pid: u32,
    tid: Option<u32>,
    target: Vec<u8>,
    whole: bool,
}

impl PathKey {
    fn of(attempt: &UmountAttempt) -> Self {
        let call = &attempt.call;
        let relative = !call.target.bytes.starts_with(b"/");
        Self {
            mntns: call.mntns,
            pid: call.pid,
            tid: relative.then_some(call.tid),
            target: call.target.bytes.clone(),
            whole: !call.target.truncated && !call.target.unreadable,
        }
    }
}

impl Pass {
    /// Plans a pass over `attempts`: `resolve` is asked once per caller and target path, and
    /// attempts whose targets resolve to the same mount (same namespace, mount id and kind of
    /// path) share one target.
    pub fn plan(
        attempts: &[UmountAttempt],
        mut resolve: impl FnMut(&UmountAttempt) -> Result<Resolved, String>,
    ) -> Self {
        let mut pass = Self::default();
        let mut by_path: HashMap<PathKey, Answer> = HashMap::new();
        let mut by_mount: HashMap<(u64, u64, bool), usize> = HashMap::new();
        for attempt in attempts {
            let answer =
                by_path
                    .entry(PathKey::of(attempt))
                    .or_insert_with(|| match resolve(attempt) {
                        Ok(Resolved::Mount(target)) => {
                            let key = (
                                target.namespace.mntns,
                                target.entry.id,
                                target.is_mount_point,
                            );
                            let n = *by_mount.entry(key).or_insert_with(|| {
                                pass.targets.push(target);
                                pass.targets.len() - 1
                            });
                            Answer::Target(n)
                        }
                        Ok(Resolved::Ready(attribution)) => {
                            Answer::Ready(Box::new(Ok(attribution)))
                        }
                        Err(e) => Answer::Ready(Box::new(Err(e))),
                    });
            pass.answers.push(answer.clone());
        }
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::namespaces::Namespace,
        event::sample_attempt,
        model::sample_attribution,
        state::mountinfo::{parse_line, MountEntry},
    };

    fn entry(id: u64, point: &str) -> MountEntry {
        parse_line(format!("{id} 1 0:{id} / {point} rw - tmpfs tmpfs rw").as_bytes()).unwrap()
    }

    fn target(mntns: u64, id: u64, point: &str) -> TargetMount {
        TargetMount {
            entry: entry(id, point),
            namespace: Namespace {
                mntns,
                pid: 1,
                mounts: vec![entry(id, point)],
            },
            is_mount_point: true,
        }
    }

    fn attempt(pid: u32, mntns: u64, target: &[u8]) -> UmountAttempt {
        let mut a = sample_attempt(target, Some(target), -16, 0);
        a.call.pid = pid;
        a.call.tid = pid;
        a.call.mntns = mntns;
        a
    }

    #[test]
    fn failures_of_one_mount_share_its_target_and_each_path_is_resolved_once() {
        let attempts = [
            attempt(10, 1, b"/a"),
            attempt(10, 1, b"/b"),
            attempt(10, 1, b"/a"),
            // Another caller naming the same mount by another path (a bind of its parent).
            attempt(11, 1, b"/again/a"),
            // The same path in another namespace: another mount.
            attempt(12, 2, b"/a"),
            attempt(13, 1, b"/gone"),
            attempt(14, 1, b"/vanished"),
        ];
        let mut asked = Vec::new();
        let pass = Pass::plan(&attempts, |a| {
            let path = String::from_utf8(a.call.target.bytes.clone()).unwrap();
            asked.push((a.call.pid, path.clone()));
            match (a.call.mntns, path.as_str()) {
                (1, "/a" | "/again/a") => Ok(Resolved::Mount(target(1, 30, "/a"))),
                (1, "/b") => Ok(Resolved::Mount(target(1, 31, "/b"))),
                (2, "/a") => Ok(Resolved::Mount(target(2, 30, "/a"))),
                (1, "/vanished") => Ok(Resolved::Ready(sample_attribution("/vanished", vec![]))),
                _ => Err("no such mount".into()),
            }
        });
        assert_eq!(
            asked,
            [
                (10, "/a".into()),
                (10, "/b".into()),
                (11, "/again/a".into()),
                (12, "/a".into()),
                (13, "/gone".into()),
                (14, "/vanished".into()),
            ],
            "each caller's path once"
        );
        let targets: Vec<_> = pass
            .targets
            .iter()
            .map(|t| (t.namespace.mntns, t.entry.id))
            .collect();
        assert_eq!(targets, [(1, 30), (1, 31), (2, 30)]);
        assert_eq!(
            pass.answers,
            [
                Answer::Target(0),
                Answer::Target(1),
                Answer::Target(0),
                Answer::Target(0),
                Answer::Target(2),
                Answer::Ready(Box::new(Err("no such mount".into()))),
                Answer::Ready(Box::new(Ok(sample_attribution("/vanished", vec![])))),
            ]
        );
    }

    #[test]
    fn a_relative_target_is_resolved_per_thread() {
        let mut first = attempt(10, 1, b"mnt");
        first.call.tid = 20;
        let mut second = first.clone();
        second.call.tid = 21;
        let mut calls = 0;
        let pass = Pass::plan(&[first.clone(), second, first], |_| {
            calls += 1;
            Ok(Resolved::Mount(target(1, 30, "/w/mnt")))
        });
        assert_eq!(calls, 2, "once per thread (each has its own cwd)");
        assert_eq!(pass.targets.len(), 1);
    }
}
