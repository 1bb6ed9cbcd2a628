//! The live [`Attributor`]: the attribution engine with what only a running watch has. An
//! EBUSY gets its holders, resolved from the mount-table cache when the mount is already gone
//! and trimmed by the open probes' maps; a successful unmount whose filesystem lives on (a copy
//! in another namespace, processes on a lazily detached mount) gets a warning. Both run on
//! blocking threads ([`super::jobs`]), one scan at a time, so the event stream never waits; the
//! EBUSYs of a pass share one scan ([`super::pass`] groups them by mount).

use anyhow::Context as _;
use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

use super::{
    contention::Contention,
    jobs::Attributor,
    opens::OpenMaps,
    pass::{Answer, Pass, Resolved},
    tracked::TrackedMounts,
};

use crate::{
    attribution::{
        self, copies,
        kernel_scan::KernelScanner,
        namespaces::Namespace,
        pods::Unnamed,
        target::{self, TargetMount, Viewpoint},
        Scanner,
    },
    event::{ExactMount, UmountAttempt, Warning},
    kubernetes::{directory::PASS_LISTING_AGE, PodDirectory},
    model::{Attribution, Coverage, Holder, MountSummary, Seen},
    state::{
        mount_cache::{MountCache, OnTables},
        mountinfo::MountEntry,
        process,
    },
};

/// The scan used in `watch`.
enum ScanMode {
    /// BPF iterators.
    Kernel(KernelScanner),
    /// A /proc walk.
    Proc,
}

/// The attribution state of one `watch`: the scanner and the mount-table cache.
pub struct Live {
    scanner: Mutex<ScanMode>,
    mounts: Arc<MountCache>,
    opens: Option<OpenMaps>,
    /// With `--open-times contended`: the mounts whose opens are timed.
    contention: Option<Arc<Contention>>,
    /// Pod names for the containers of callers and holders.
    pods: Arc<PodDirectory>,
}

impl Live {
    /// Has the runtime list its containers while the scan runs: at once when a caller's
    /// container is new to the directory, else unless it did within [`PASS_LISTING_AGE`].
    fn list_pods_during_the_scan(&self, attempts: &[UmountAttempt]) {
        let new_caller = attempts.iter().any(|a| {
            let id = a.container.as_ref().and_then(|c| c.id.as_deref());
            id.is_some_and(|id| self.pods.is_new(id))
        });
        if new_caller {
            self.pods.prefetch();
        } else {
            self.pods.prefetch_if_older_than(PASS_LISTING_AGE);
        }
    }

    /// Names the callers' and holders' containers, with one lookup for the whole pass.
    fn name_pods(&self, attempts: &mut [UmountAttempt]) {
        let mut unnamed = Unnamed::default();
        for a in attempts.iter() {
            unnamed.add(a.container.as_ref(), a.call.pid);
            if let Some(Ok(attribution)) = &a.attribution {
                unnamed.add_holders(attribution);
            }
        }
        let names = unnamed.names(&self.pods);
        for a in attempts.iter_mut() {
            names.apply(a.container.as_mut());
            if let Some(Ok(attribution)) = &mut a.attribution {
                names.apply_to_holders(attribution);
            }
        }
    }

    /// Loads the kernel scanner (or settles for /proc) and starts the mount-table cache,
    /// which keeps `tracked` (the kernel's set of mounts whose releases matter) and
    /// `contention` (the mounts whose opens are timed) in step.
    pub fn start(
        tracked: Option<TrackedMounts>,
        opens: Option<OpenMaps>,
        contention: Option<Arc<Contention>>,
        pods: Arc<PodDirectory>,
    ) -> Arc<Self> {
        let scanner = match KernelScanner::load() {
            Ok(k) => ScanMode::Kernel(k),
            Err(e) => {
                tracing::warn!(
                    "kernel holder scan unavailable ({e:#}); holders come from a /proc walk"
                );
                ScanMode::Proc
            }
        };
        let mut on_change: Vec<Box<dyn OnTables>> = Vec::new();
        on_change.extend(tracked.map(|t| Box::new(t) as Box<dyn OnTables>));
        on_change.extend(contention.clone().map(|c| Box::new(c) as Box<dyn OnTables>));
        Arc::new(Self {
            scanner: Mutex::new(scanner),
            mounts: MountCache::start(on_change),
            opens,
            contention,
            pods,
        })
    }

    /// The mount-table cache (the explanation stage asks it what was mounted where).
    pub fn mounts(&self) -> Arc<MountCache> {
        Arc::clone(&self.mounts)
    }

    fn with_scanner<T>(&self, f: impl FnOnce(&mut Scanner) -> T) -> anyhow::Result<T> {
        let mut guard = self
            .scanner
            .lock()
            .map_err(|_| anyhow::anyhow!("a holder scan panicked"))?;
        let mut scanner = match &mut *guard {
            ScanMode::Kernel(k) => Scanner::Kernel(k),
            ScanMode::Proc => Scanner::Proc,
        };
        Ok(f(&mut scanner))
    }

    /// When every process of the caller's mount namespace exited before the scan (a sandbox
    /// torn down, a busy node where the scan started late), its mounts are gone with it and
    /// nothing is left to scan: the mount the call named, from the mount-table cache, with no
    /// holders yet (the watch loop adds the releases traced after the call).
    fn in_vanished_namespace(&self, attempt: &UmountAttempt) -> Option<Attribution> {
        let entry = match attempt.call.hooked {
            Some(exact) => self.mounts.with_id(attempt.call.mntns, exact.id)?,
            None => {
                let abs = attempt.target_abs.as_deref()?;
                self.mounts.unmounted_at(attempt.call.mntns, abs)?
            }
        };
        Some(Attribution {
            mount: MountSummary {
                id: entry.id,
                mntns: attempt.call.mntns,
                entry,
            },
            is_mount_point: true,
            holders: Vec::new(),
            copies: Vec::new(),
            accessors: Vec::new(),
            uninspectable: Vec::new(),
            coverage: Coverage {
                method: Seen::Traced,
                processes: 0,
                fds: 0,
                namespaces: 0,
            },
        })
    }

    /// The mount an EBUSY's target names, or an answer without a scan when the caller's
    /// namespace is gone, or why neither can be had.
    fn resolve(&self, attempt: &UmountAttempt) -> Result<Resolved, String> {
        let call = &attempt.call;
        if call.hooked.is_none() && (call.target.truncated || call.target.unreadable) {
            return Err("the probe could not read the whole target path".to_string());
        }
        let target = Viewpoint::of_caller(call.pid, call.tid, call.mntns)
            .and_then(|view| self.target(view, attempt));
        match target {
            Ok(target) => Ok(Resolved::Mount(target)),
            // The namespace died before or while the target was resolved.
            Err(e) if process::process_in(call.mntns, call.pid).is_none() => self
                .in_vanished_namespace(attempt)
                .map(Resolved::Ready)
                .ok_or(e),
            Err(e) => Err(e),
        }
        .map_err(|e| format!("{e:#}"))
    }

    /// The mount an EBUSY was about: from the mount-table cache when it knew the mount point
    /// (so a lazy unmount racing the scan does not change the answer), else resolved now.
    fn target(&self, view: Viewpoint, attempt: &UmountAttempt) -> anyhow::Result<TargetMount> {
        if let Some(exact) = attempt.call.hooked {
            return self.hooked_target(view, attempt, exact);
        }
        // Resolved now, the path names the mount the call failed on, unless that mount has
        // been detached since (a lazy unmount racing the scan): then the cache knows it.
        let live = target::resolve(view, &attempt.call.target.bytes);
        if live.as_ref().is_ok_and(|t| t.is_mount_point) {
            return live;
        }
        let cached = attempt
            .target_abs
            .as_deref()
            .and_then(|abs| self.mounts.mounted_at(attempt.call.mntns, abs));
        match (cached, Namespace::of_pid(view.pid)) {
            (Some(entry), Some(namespace)) => Ok(TargetMount {
                entry,
                namespace,
                is_mount_point: true,
            }),
            // The call failed with EBUSY, so its target was a mount point then: what is
            // there now is the mount below (never blame its holders).
            _ if live.is_ok() => anyhow::bail!(MOUNT_GONE),
            _ => live,
        }
    }
}

/// Why an EBUSY has no holders when its mount was unmounted before busyprobe read the table
/// it was in (outside enhanced mode the path alone does not say what it was; in it, when the
/// hook could not read the mount's device or the call's path is unknown).
const MOUNT_GONE: &str = "the mount was gone before busyprobe could read the mount table \
                          (unmounted right after the failure); its holders are unknown";

impl Live {
    /// The mount the `sb_umount` security hook named: nothing to resolve. From the caller's
    /// table now when it is there (at the target: a freed id may have been handed to a new
    /// mount), else from the cache (detached since), else as the hook saw it
    /// ([`unseen_mount`]: made, failed and detached before any table showed it).
    fn hooked_target(
        &self,
        view: Viewpoint,
        attempt: &UmountAttempt,
        exact: ExactMount,
    ) -> anyhow::Result<TargetMount> {
        let namespace = Namespace::of_pid(view.pid)
            .with_context(|| format!("cannot read the mount table of process {}", view.pid))?;
        let at_target = |m: &MountEntry| {
            let abs = attempt.target_abs.as_deref();
            abs.is_none_or(|abs| m.mount_point == abs)
        };
        let live = namespace.mount(exact.id).filter(|m| at_target(m)).cloned();
        let entry = live
            .or_else(|| self.mounts.with_id(attempt.call.mntns, exact.id))
            .or_else(|| unseen_mount(view, attempt, exact))
            .context(MOUNT_GONE)?;
        Ok(TargetMount {
            entry,
            namespace,
            is_mount_point: true,
        })
    }
}

/// The mount the hook named (`exact`) as far as the hook and the call tell it, for one that no
/// table read ever showed: its id, device and, when it showed its filesystem from the root,
/// that root (else an empty root, which no copy matches); its mount point the call's target,
/// its parent the mount that path is on now in the caller's namespace (what it was mounted
/// on, once it is detached). Its type, source and options are unknown (empty). `None` without
/// the device or the target.
fn unseen_mount(view: Viewpoint, attempt: &UmountAttempt, exact: ExactMount) -> Option<MountEntry> {
    let (major, minor) = exact.dev?;
    let mount_point = attempt.target_abs.clone()?;
    let now_on = target::resolve(view, &mount_point).ok()?;
    let parent = match now_on.is_mount_point {
        // Something else was mounted there since: what the target was on is below it.
        true => now_on.entry.parent,
        false => now_on.entry.id,
    };
    tracing::debug!(
        "mount {} was never in a table read: taken as the hook saw it, under mount {parent}",
        exact.id
    );
    Some(MountEntry {
        id: exact.id,
        parent,
        major,
        minor,
        root: if exact.fs_root {
            b"/".to_vec()
        } else {
            Vec::new()
        },
        mount_point,
        options: String::new(),
        propagation: Default::default(),
        fstype: String::new(),
        source: Vec::new(),
    })
}

impl Attributor for Live {
    /// Reads the caller's mount table now if the cache does not know it yet (a cheap no-op
    /// when it does): so that its mounts are known even if every process in it exits before
    /// the attribution runs. With `--open-times contended` the mount becomes contended now,
    /// so that the opens before its next attempt are timed.
    fn learn_namespace(&self, attempt: &UmountAttempt) {
        let Some(target) = attempt.target_abs.as_deref() else {
            return;
        };
        let mntns = attempt.call.mntns;
        self.mounts.learn(mntns, attempt.call.pid, target);
        if let Some(contention) = &self.contention {
            let mount = match attempt.call.hooked {
                Some(exact) => self.mounts.with_id(mntns, exact.id),
                None => self.mounts.mounted_at(mntns, target),
            };
            if let Some(mount) = mount {
                contention.failed(mount.id, mntns, std::time::Instant::now());
            }
        }
    }

    /// The EBUSY attempts of one pass with who holds their mounts now, from one scan for all
    /// of them, callers and holders named with their pods; the watch loop completes each with
    /// the transient holders (and `unknown` if nothing explains it).
    fn attribute(&self, mut attempts: Vec<UmountAttempt>) -> Vec<UmountAttempt> {
        self.list_pods_during_the_scan(&attempts);
        let pass = Pass::plan(&attempts, |attempt| self.resolve(attempt));
        self.contend(&pass.targets);
        let found = if pass.targets.is_empty() {
            Ok(Vec::new())
        } else {
            self.with_scanner(|s| attribution::attribute_mounts(&pass.targets, s))
                .map_err(|e| format!("{e:#}"))
        };
        for (attempt, answer) in attempts.iter_mut().zip(pass.answers) {
            let result = match answer {
                Answer::Target(n) => found.as_ref().map_err(Clone::clone).map(|all| {
                    let mut a = all[n].clone();
                    if let Some(opens) = &self.opens {
                        opens.apply(&attempt.call, &mut a);
                    }
                    a
                }),
                Answer::Ready(result) => *result,
            };
            attempt.attribution = Some(result.map(|mut a| {
                self.add_remembered_copies(&mut a);
                a
            }));
        }
        self.name_pods(&mut attempts);
        attempts
    }

    /// A warning for each successful unmount whose filesystem is still in use, from one scan
    /// for all of them.
    fn check_outlived(&self, attempts: &[UmountAttempt]) -> Vec<Warning> {
        let removed: Vec<(&UmountAttempt, MountEntry)> = attempts
            .iter()
            .filter_map(|a| Some((a, self.unmounted_by(a)?)))
            .collect();
        if removed.is_empty() {
            return Vec::new();
        }
        let entries: Vec<MountEntry> = removed.iter().map(|(_, m)| m.clone()).collect();
        let alive = self
            .with_scanner(|s| attribution::alive_after_unmounts(&entries, s))
            .unwrap_or_default();
        removed
            .into_iter()
            .zip(alive)
            .filter_map(|((attempt, unmounted), holders)| outlived(attempt, unmounted, holders))
            .collect()
    }
}

impl Live {
    /// With `--open-times contended`: the mounts a pass resolved are contended (again), in
    /// case the event loop could not tell which mount a failure was about (its caller had
    /// exited before its namespace's table was read).
    fn contend(&self, targets: &[TargetMount]) {
        if let Some(contention) = &self.contention {
            let now = std::time::Instant::now();
            for target in targets {
                contention.failed(target.entry.id, target.namespace.mntns, now);
            }
        }
    }

    /// Adds to `a` the copies of its mount that the mount-table cache remembers: a holder's
    /// copy in a namespace that died before the scan (a container deleted right after the
    /// failure, its process holding the file through its copy of the mount) is known no
    /// other way, and release tracking names that holder only if it knows the copy.
    fn add_remembered_copies(&self, a: &mut Attribution) {
        let known = self.mounts.tables_around(a.mount.mntns, &a.mount.entry);
        a.add_copies(copies::find_remembered(
            &a.mount.entry,
            a.mount.mntns,
            &known,
        ));
    }

    /// The mount a successful unmount removed, from the mount-table cache.
    fn unmounted_by(&self, attempt: &UmountAttempt) -> Option<MountEntry> {
        let target = attempt.target_abs.as_deref()?;
        let unmounted = self.mounts.unmounted_at(attempt.call.mntns, target);
        if unmounted.is_none() {
            tracing::debug!(
                "unmount {}: the cached table of mount namespace {} has nothing at {}",
                attempt.id,
                attempt.call.mntns,
                String::from_utf8_lossy(target)
            );
        }
        unmounted
    }
}

/// The warning for a successful unmount of `unmounted` that `holders` keep alive (none when
/// nothing does).
fn outlived(
    attempt: &UmountAttempt,
    unmounted: MountEntry,
    holders: Vec<Holder>,
) -> Option<Warning> {
    if holders.is_empty() {
        tracing::debug!(
            "unmount {}: nothing keeps mount {} alive",
            attempt.id,
            unmounted.id
        );
        return None;
    }
    Some(Warning::AliveAfterUnmount {
        umount_id: attempt.id,
        ts: SystemTime::now(),
        target: attempt.call.target.bytes.clone(),
        mount: MountSummary {
            id: unmounted.id,
            mntns: attempt.call.mntns,
            entry: unmounted,
        },
        holders,
    })
}
