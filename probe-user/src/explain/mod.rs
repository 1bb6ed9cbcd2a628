//! Why a failed unmount that is not an EBUSY failed: EINVAL (bad flags; nothing mounted at the
//! target, and why: an unmount-all loop's end, an earlier unmount by another process, one of
//! the same path in a peer namespace that propagated, a path inside a mount), EPERM (no `CAP_SYS_ADMIN` where it counts) and ENOENT (the first missing
//! component). The caller's side is read in the context stage ([`facts`]); the [`Explainer`]
//! adds what busyprobe saw before: the successful unmounts ([`UnmountHistory`]) and the mount
//! tables ([`MountCache`]). It runs on the event loop, in the kernel's order of the calls, and
//! reads nothing from `/proc` itself.

pub mod facts;
pub mod flags;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use self::facts::{CallerFacts, PathNow, Privileges, TargetNow};
use crate::{
    clock,
    event::{UmountAttempt, UmountCall},
    model::{Explanation, ExplanationCode},
    state::{
        memo::Memo,
        mount_cache::{MountCache, REMEMBER_REMOVED},
        mountinfo::MountEntry,
        unmount_history::{UnmountHistory, Unmounted, KEEP_FOR_NS},
    },
};

/// How long what the mount tables said at a target is trusted.
const TABLES_KEPT_FOR: Duration = Duration::from_secs(1);
/// Most targets whose answer is kept before the memo starts over.
const TABLES_KEPT: usize = 1024;

/// The explanation stage: the successful unmounts seen so far and, when the attribution runs,
/// the mount tables.
pub struct Explainer {
    history: UnmountHistory,
    mounts: Option<Arc<MountCache>>,
    /// `CLOCK_BOOTTIME` ns when it started watching.
    started_boot_ns: u64,
    /// What the tables said at a target lately.
    tables_memo: Memo<(u64, Vec<u8>), Option<MountEntry>>,
}

impl Default for Explainer {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Explainer {
    /// An explainer that also asks `mounts` what was mounted where (none: `--no-holders`,
    /// where no mount-table cache runs), watching from now.
    pub fn new(mounts: Option<Arc<MountCache>>) -> Self {
        Self {
            history: UnmountHistory::default(),
            mounts,
            started_boot_ns: clock::boot_ns_now(),
            tables_memo: Memo::new(TABLES_KEPT_FOR, TABLES_KEPT),
        }
    }

    /// Every attempt, in the kernel's order: a success is remembered; a failure other than
    /// EBUSY gets its explanation from `facts` (read by the context stage) and what was seen.
    pub fn observe(&mut self, attempt: &mut UmountAttempt, facts: &CallerFacts) {
        let call = &attempt.call;
        if !call.failed() {
            self.remember(attempt);
            return;
        }
        let abs = attempt.target_abs.as_deref();
        let last_unmount = abs.and_then(|t| self.history.last(call.mntns, t, call.ts_boot_ns));
        // The tables are asked only when they can tell: a path that is no mount's root, with
        // no unmount of it seen.
        let ask_tables = matches!(facts, CallerFacts::Target(Ok(t)) if !t.is_mount_root);
        let cached_mount = match (abs, last_unmount, ask_tables) {
            (Some(target), None, true) => {
                let mounts = self.mounts.as_deref();
                tables_at(&mut self.tables_memo, mounts, call.mntns, target)
            }
            _ => None,
        };
        // A mount gone from the caller's table that follows other namespaces' unmounts (a
        // peer, or a slave) may have gone with an unmount of the same path in another one.
        let follows = |m: &MountEntry| m.propagation.shared.or(m.propagation.master).is_some();
        let propagated_from = match (abs, &cached_mount) {
            (Some(target), Some(gone)) if follows(gone) => self.history.last_elsewhere(
                call.mntns,
                target,
                call.ts_boot_ns,
                REMEMBER_REMOVED.as_nanos() as u64,
            ),
            _ => None,
        };
        let seen = Seen {
            last_unmount,
            cached_mount,
            propagated_from,
            watched_ns: call.ts_boot_ns.saturating_sub(self.started_boot_ns),
        };
        attempt.explanation = explain(call, abs, facts, &seen);
    }

    fn remember(&mut self, attempt: &UmountAttempt) {
        let Some(target) = attempt.target_abs.as_deref() else {
            return;
        };
        let call = &attempt.call;
        let unmounted = Unmounted {
            id: attempt.id,
            pid: call.pid,
            comm: call.comm.clone(),
            ts_boot_ns: call.ts_boot_ns,
        };
        self.history.record(call.mntns, target, unmounted);
    }
}

/// What the mount-table cache `mounts` knows at `target` (memoized for a second in `memo`: a
/// flood of failures on one path scans the table once a second).
fn tables_at(
    memo: &mut Memo<(u64, Vec<u8>), Option<MountEntry>>,
    mounts: Option<&MountCache>,
    mntns: u64,
    target: &[u8],
) -> Option<MountEntry> {
    let mounts = mounts?;
    memo.get_or((mntns, target.to_vec()), Instant::now(), || {
        mounts.mounted_at(mntns, target)
    })
}

/// What busyprobe saw before a failed call.
#[derive(Debug, Default)]
pub struct Seen<'a> {
    /// The last successful unmount of the same target in the same namespace.
    pub last_unmount: Option<&'a Unmounted>,
    /// The mount the mount-table cache last knew at the target (there now, or removed in the
    /// last half minute).
    pub cached_mount: Option<MountEntry>,
    /// When that mount follows other namespaces' unmounts (shared or a slave): the last
    /// successful unmount of the same path in another namespace, in the last half minute,
    /// with that namespace.
    pub propagated_from: Option<(u64, &'a Unmounted)>,
    /// How long busyprobe had been watching when the call entered.
    pub watched_ns: u64,
}

/// The explanation of a failed `call` (none for EBUSY, and none when nothing fits).
pub fn explain(
    call: &UmountCall,
    abs: Option<&[u8]>,
    facts: &CallerFacts,
    seen: &Seen,
) -> Option<Explanation> {
    match (-call.ret, facts) {
        (e, CallerFacts::Target(target)) if e == i64::from(libc::EINVAL) => {
            einval(call, abs, target.as_ref().ok(), seen)
        }
        (e, _) if e == i64::from(libc::EINVAL) => einval(call, abs, None, seen),
        (e, CallerFacts::Privileges(p)) if e == i64::from(libc::EPERM) => eperm(call, p),
        (e, _) if e == i64::from(libc::EPERM) => eperm(call, &Privileges::default()),
        (e, CallerFacts::Path(path)) if e == i64::from(libc::ENOENT) => Some(enoent(call, path)),
        _ => None,
    }
}

fn explanation(code: ExplanationCode, sentence: String, related: Option<u64>) -> Explanation {
    Explanation {
        code,
        sentence,
        related_event: related,
    }
}

/// EINVAL, in the kernel's order: unknown flag bits; a target that is no mount's root (and
/// why nothing is mounted there); then, on a mount's root, `MNT_EXPIRE` refused.
fn einval(
    call: &UmountCall,
    abs: Option<&[u8]>,
    now: Option<&TargetNow>,
    seen: &Seen,
) -> Option<Explanation> {
    if let Some(unknown) = flags::unknown_bits(call.flags) {
        let s = flags::unknown_bits_sentence(unknown);
        return Some(explanation(ExplanationCode::InvalidFlags, s, None));
    }
    let target = text(abs.unwrap_or(&call.target.bytes));
    let mounted_there = now.map(|t| t.is_mount_root);
    if mounted_there != Some(true) {
        if let Some(earlier) = seen.last_unmount {
            return Some(unmounted_before(call, &target, earlier));
        }
    }
    if mounted_there == Some(false) {
        let now = now?;
        if let Some(gone) = &seen.cached_mount {
            return Some(match seen.propagated_from {
                Some((mntns, by)) => gone_with_a_peer(call, &target, gone, now, (mntns, by)),
                None => gone_unseen(&target, gone, now),
            });
        }
        return Some(inside_a_mount(&target, now, seen.watched_ns));
    }
    let conflicts = flags::expire_conflicts(call.flags);
    if !conflicts.is_empty() {
        let s = flags::expire_conflict_sentence(&conflicts);
        return Some(explanation(ExplanationCode::InvalidFlags, s, None));
    }
    let expire = call.flags & libc::MNT_EXPIRE as u32 != 0;
    let on_root = now.is_some_and(|t| Some(t.mount_id) == t.root_mount_id);
    if expire && on_root {
        let s = format!(
            "MNT_EXPIRE on {target}, the caller's own root mount: the kernel never expires the \
             mount a process has as its root"
        );
        return Some(explanation(ExplanationCode::InvalidFlags, s, None));
    }
    locked(call, now?)
}

/// A mount's root, good flags, and the caller's mount namespace owned by a user namespace
/// other than busyprobe's (the initial one on a host): the mount is locked (a mount made
/// inside such a namespace is not, but then nothing else the kernel checks gives EINVAL).
fn locked(call: &UmountCall, now: &TargetNow) -> Option<Explanation> {
    let (Some(owner), Some(watcher)) = (now.owner_userns, now.watcher_userns) else {
        return None;
    };
    if owner == watcher || now.mount.is_none() {
        return None;
    }
    let s = format!(
        "{} is locked: it came into mount namespace {} from a more privileged one (copied when \
         that namespace was made for user namespace {owner}, or propagated into it since), and \
         the kernel lets no process there unmount it on its own, which would reveal what is \
         under it; unmount it in the namespace it came from",
        mount_words(now),
        call.mntns
    );
    Some(explanation(ExplanationCode::LockedMount, s, None))
}

/// Nothing is mounted at the target because `earlier` unmounted it: the same process (an
/// unmount-all loop's end) or another one (a double teardown).
fn unmounted_before(call: &UmountCall, target: &str, earlier: &Unmounted) -> Explanation {
    let ago = clock::for_people(call.ts_boot_ns.saturating_sub(earlier.ts_boot_ns));
    let who = process(&earlier.comm, earlier.pid);
    if earlier.pid == call.pid {
        let s = format!(
            "end of an unmount-all loop: {who} unmounted {target} successfully {ago} before \
             (event {}) and called again until the kernel said nothing is mounted there: \
             nothing to chase",
            earlier.id
        );
        return explanation(ExplanationCode::UnmountAllLoopEnd, s, Some(earlier.id));
    }
    let s = format!(
        "nothing is mounted at {target} any more: {who} unmounted it {ago} earlier (event {}); \
         this is a second teardown of the same mount",
        earlier.id
    );
    explanation(ExplanationCode::UnmountedEarlier, s, Some(earlier.id))
}

/// A mount was at the target lately and is gone, though busyprobe saw no unmount of it there.
fn gone_unseen(target: &str, gone: &MountEntry, now: &TargetNow) -> Explanation {
    let s = format!(
        "nothing is mounted at {target} any more: mount {} ({}) was there and is gone without an \
         unmount of {target} that busyprobe saw in this namespace (unmounted by propagation from \
         another namespace, or with a mount above it); the path is now inside {}",
        gone.id,
        gone.fstype,
        mount_words(now)
    );
    explanation(ExplanationCode::UnmountedEarlier, s, None)
}

/// A mount was at the target lately and is gone with no unmount of it in this namespace, but
/// `by` unmounted the same path in namespace `mntns` shortly before, and the mount follows
/// its peers' or its master's unmounts: most likely it went by that propagation.
fn gone_with_a_peer(
    call: &UmountCall,
    target: &str,
    gone: &MountEntry,
    now: &TargetNow,
    (mntns, by): (u64, &Unmounted),
) -> Explanation {
    let ago = clock::for_people(call.ts_boot_ns.saturating_sub(by.ts_boot_ns));
    let s = format!(
        "nothing is mounted at {target} any more: mount {} ({}, {}) was there and is gone \
         without an unmount busyprobe saw in this namespace, most likely by propagation: {} \
         unmounted the same path in mount namespace {mntns} {ago} before (event {}), and this \
         mount follows the unmounts of its peer group; the path is now inside {}",
        gone.id,
        gone.fstype,
        gone.propagation.describe(),
        process(&by.comm, by.pid),
        by.id,
        mount_words(now)
    );
    explanation(ExplanationCode::UnmountedEarlier, s, Some(by.id))
}

/// Nothing was mounted at the target since busyprobe started (or in the history's window,
/// when it started earlier): it lies inside a mount.
fn inside_a_mount(target: &str, now: &TargetNow, watched_ns: u64) -> Explanation {
    let since = match watched_ns < KEEP_FOR_NS {
        true => format!(
            "since busyprobe started {} before the call",
            clock::for_people(watched_ns)
        ),
        false => format!("in the last {} minutes", KEEP_FOR_NS / 60_000_000_000),
    };
    let s = format!(
        "{target} is not a mount point: busyprobe saw nothing mounted there {since}, and it is \
         a path inside {}",
        mount_words(now)
    );
    explanation(ExplanationCode::NotAMountPoint, s, None)
}

/// `mount 812 (tmpfs on /tmp/x)`, or `mount 812` when its entry is unknown.
fn mount_words(now: &TargetNow) -> String {
    match &now.mount {
        Some(m) => format!("mount {} ({} on {})", m.id, m.fstype, text(&m.mount_point)),
        None => format!("mount {}", now.mount_id),
    }
}

/// EPERM: the caller lacks `CAP_SYS_ADMIN` in the user namespace that owns its mount
/// namespace (or, with `MNT_FORCE`, in the initial one), named as far as it could be read.
/// None when it has the capability where it counts: a security module or seccomp refused.
fn eperm(call: &UmountCall, p: &Privileges) -> Option<Explanation> {
    let who = format!(
        "{} (uid {})",
        process(&call.comm, call.pid),
        p.euid.unwrap_or(call.uid)
    );
    let userns = match (p.owner_userns, p.owner_uid) {
        (Some(ns), Some(owner)) => format!("user namespace {ns} (created by uid {owner})"),
        (Some(ns), None) => format!("user namespace {ns}"),
        _ => "the user namespace (unknown: the caller was gone before it could be read)".into(),
    };
    let mntns = match call.mntns {
        0 => "its mount namespace".to_string(),
        ns => format!("its mount namespace {ns}"),
    };
    let force = call.flags & libc::MNT_FORCE as u32 != 0;
    let why = match (p.cap_sys_admin, p.caller_userns, p.owner_userns) {
        (Some(false), _, _) => "its effective capabilities lack CAP_SYS_ADMIN".to_string(),
        (Some(true), Some(own), Some(owner)) if own != owner => format!(
            "it has CAP_SYS_ADMIN only in its own user namespace {own}, which does not own \
             the mount namespace"
        ),
        (Some(true), _, _) if force => {
            let s = format!(
                "{who} has CAP_SYS_ADMIN in {userns}, which owns {mntns}, but MNT_FORCE needs \
                 it in the initial user namespace (or the one that owns the filesystem), where \
                 it lacks it"
            );
            return Some(explanation(ExplanationCode::NoCapSysAdmin, s, None));
        }
        (Some(true), _, _) => return None,
        (None, _, _) => "its capabilities are unknown: it exited first".to_string(),
    };
    let s = format!(
        "{who} lacks CAP_SYS_ADMIN in {userns}, which owns {mntns}: unmounting needs it there \
         ({why})"
    );
    Some(explanation(ExplanationCode::NoCapSysAdmin, s, None))
}

/// ENOENT: the first component of the target that does not exist, or why that is unknown.
fn enoent(call: &UmountCall, path: &Result<PathNow, String>) -> Explanation {
    let target = text(&call.target.bytes);
    let who = process(&call.comm, call.pid);
    let s = match path {
        _ if call.target.bytes.is_empty() => "the target is an empty path".to_string(),
        Ok(PathNow::Missing { parent, component }) => format!(
            "{target} does not exist as {who} sees it: there is no {} in {}",
            text(component),
            text(parent)
        ),
        Ok(PathNow::ExistsNow) => format!(
            "{target} did not exist as {who} saw it, and exists now: it was created after the \
             call"
        ),
        Err(why) => format!(
            "{target} does not exist as {who} saw it (which component is missing is unknown: \
             {why})"
        ),
    };
    explanation(ExplanationCode::NoSuchPath, s, None)
}

/// Bytes as text in a sentence (lossy; the sinks escape what they show on a terminal).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `comm[pid]` in a sentence.
fn process(comm: &[u8], pid: u32) -> String {
    format!("{}[{pid}]", text(comm))
}

#[cfg(test)]
mod tests;
