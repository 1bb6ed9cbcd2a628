//! What an explanation needs from the caller, read from `/proc` in the context stage, while the
//! caller usually still lives: where its target leads (EINVAL), its privileges (EPERM), the
//! first component of its target that does not exist (ENOENT). Each read is a few syscalls,
//! made only for a failure of that errno.

use std::{
    fs::File,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    sync::Arc,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{openat2, OFlag, OpenHow, ResolveFlag},
    sys::stat::Mode,
};

use super::flags;
use crate::{
    event::UmountCall,
    state::{
        memo::Memo,
        mountinfo::{self, MountEntry},
        process::proc_path,
        statx,
    },
};

/// `ioctl(2)` on a namespace file: the user namespace that owns it (`NS_GET_USERNS`,
/// `_IO(0xb7, 0x1)` in `linux/nsfs.h`).
const NS_GET_USERNS: libc::c_ulong = 0xb701;
/// `ioctl(2)` on a user namespace file: the uid of its creator (`NS_GET_OWNER_UID`,
/// `_IO(0xb7, 0x4)`).
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
/// `CAP_SYS_ADMIN`'s bit in `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;

/// What was read about a failed call's caller, by errno.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerFacts {
    /// Nothing to read for this result.
    None,
    /// EINVAL: where the target leads now, or why that is unknown.
    Target(Result<TargetNow, String>),
    /// EPERM: the caller's privileges (each part unknown when it could not be read).
    Privileges(Privileges),
    /// ENOENT: the first missing component, or why that is unknown.
    Path(Result<PathNow, String>),
}

/// An EINVAL's target as the caller sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetNow {
    /// The mount the path is on (`stx_mnt_id`).
    pub mount_id: u64,
    /// Whether the path is that mount's root (something is mounted there).
    pub is_mount_root: bool,
    /// That mount's entry in the caller's mount table, when it could be read.
    pub mount: Option<MountEntry>,
    /// The mount of the caller's root directory (`MNT_EXPIRE` on it is refused).
    pub root_mount_id: Option<u64>,
    /// The user namespace that owns the caller's mount namespace (its inode).
    pub owner_userns: Option<u64>,
    /// busyprobe's own user namespace (its inode): the initial one on a host.
    pub watcher_userns: Option<u64>,
}

/// An EPERM caller's privileges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Privileges {
    /// The user namespace that owns the caller's mount namespace (its inode).
    pub owner_userns: Option<u64>,
    /// The uid that created that user namespace.
    pub owner_uid: Option<u32>,
    /// The caller's own user namespace (its inode).
    pub caller_userns: Option<u64>,
    /// Whether `CAP_SYS_ADMIN` is among the caller's effective capabilities.
    pub cap_sys_admin: Option<bool>,
    /// The caller's effective uid.
    pub euid: Option<u32>,
}

/// An ENOENT's target, component by component, as the caller sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathNow {
    /// `component` does not exist in `parent` (the path up to it, as passed).
    Missing {
        /// The part of the target that exists, as passed (empty: the caller's root or cwd).
        parent: Vec<u8>,
        /// The first component that does not.
        component: Vec<u8>,
    },
    /// Every component exists now (created after the call).
    ExistsNow,
}

/// How long the facts of one caller's identical failure are trusted.
const FACTS_KEPT_FOR: Duration = Duration::from_secs(1);
/// Most failures whose facts are kept before the memo starts over.
const FACTS_KEPT: usize = 1024;

/// The same failure of the same thread: pid, tid, result, flags, target.
type FailureKey = (u32, u32, i64, u32, Vec<u8>);

/// The facts of recent failures: a loop failing on the same path thousands of times a second
/// has its caller read once per [`FACTS_KEPT_FOR`], not once per call.
pub struct RecentFacts {
    memo: Memo<FailureKey, Arc<CallerFacts>>,
    /// The answer of every success and EBUSY, shared.
    nothing: Arc<CallerFacts>,
}

impl Default for RecentFacts {
    fn default() -> Self {
        Self {
            memo: Memo::new(FACTS_KEPT_FOR, FACTS_KEPT),
            nothing: Arc::new(CallerFacts::None),
        }
    }
}

impl RecentFacts {
    /// What explaining `call` needs ([`read`]), reused for an identical failure of the same
    /// thread within [`FACTS_KEPT_FOR`].
    pub fn of(&mut self, call: &UmountCall, now: Instant) -> Arc<CallerFacts> {
        if !needs_reading(call) {
            return Arc::clone(&self.nothing);
        }
        let key = (
            call.pid,
            call.tid,
            call.ret,
            call.flags,
            call.target.bytes.clone(),
        );
        self.memo.get_or(key, now, || Arc::new(read(call)))
    }
}

/// Whether [`read`] has anything to read for `call`: an EPERM; an EINVAL or ENOENT whose
/// target the probe read whole (an EINVAL for unknown flag bits needs nothing: the kernel
/// refused it before it looked at the target).
fn needs_reading(call: &UmountCall) -> bool {
    let whole = !call.target.truncated && !call.target.unreadable;
    match -call.ret {
        e if e == i64::from(libc::EPERM) => true,
        e if e == i64::from(libc::EINVAL) => whole && flags::unknown_bits(call.flags).is_none(),
        e if e == i64::from(libc::ENOENT) => whole,
        _ => false,
    }
}

/// Reads what explaining `call` needs, if it failed with EINVAL, EPERM or ENOENT (see
/// [`needs_reading`]).
pub fn read(call: &UmountCall) -> CallerFacts {
    if !needs_reading(call) {
        return CallerFacts::None;
    }
    match -call.ret {
        e if e == i64::from(libc::EPERM) => CallerFacts::Privileges(privileges(call.pid)),
        e if e == i64::from(libc::EINVAL) => CallerFacts::Target(target_now(call)),
        _ => CallerFacts::Path(path_now(call)),
    }
}

fn target_now(call: &UmountCall) -> Result<TargetNow, String> {
    let nofollow = call.flags & libc::UMOUNT_NOFOLLOW as u32 != 0;
    let target = CallersView::of(call)?.open(&call.target.bytes, nofollow);
    let target = target.map_err(|e| format!("the target: {}", cached_only(e)))?;
    let of = statx::mount_of_fd(target.as_fd()).map_err(|e| format!("the target: {e}"))?;
    let root = nix::fcntl::open(
        &proc_path(call.pid, "root"),
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
    );
    let root_mount_id = root
        .ok()
        .and_then(|fd| statx::mount_of_fd(fd.as_fd()).ok())
        .map(|m| m.mount_id);
    Ok(TargetNow {
        mount_id: of.mount_id,
        is_mount_root: of.is_mount_root,
        mount: mount_entry(call.pid, of.mount_id),
        root_mount_id,
        owner_userns: owner_userns(call.pid).as_ref().and_then(inode_of),
        watcher_userns: std::fs::metadata("/proc/self/ns/user")
            .ok()
            .map(|m| m.ino()),
    })
}

/// Where a caller's path starts (its root, or its thread's cwd for a relative path), opened
/// through `/proc`. Paths are opened from the kernel's dentry cache only (`RESOLVE_CACHED`):
/// the context stage runs on the event loop, which must never wait on a network filesystem's
/// server or a FUSE daemon; the caller's own call has just looked the same path up.
struct CallersView {
    base: OwnedFd,
    resolve: ResolveFlag,
}

impl CallersView {
    fn of(call: &UmountCall) -> Result<Self, String> {
        let (base, resolve) = match call.target.bytes.starts_with(b"/") {
            true => (proc_path(call.pid, "root"), ResolveFlag::RESOLVE_IN_ROOT),
            false => (
                proc_path(call.pid, &format!("task/{}/cwd", call.tid)),
                ResolveFlag::empty(),
            ),
        };
        let fd = nix::fcntl::open(&base, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| format!("the caller's {}: {e}", base.display()))?;
        Ok(Self {
            base: fd,
            // Linux 5.12; older kernels refuse it (EINVAL) and the facts are unknown.
            resolve: resolve | ResolveFlag::from_bits_retain(libc::RESOLVE_CACHED),
        })
    }

    /// `path` opened `O_PATH` as the caller would look it up (its last symlink not followed
    /// with `nofollow`).
    fn open(&self, path: &[u8], nofollow: bool) -> nix::Result<OwnedFd> {
        let mut flags = OFlag::O_PATH;
        if nofollow {
            flags |= OFlag::O_NOFOLLOW;
        }
        let how = OpenHow::new().flags(flags).resolve(self.resolve);
        let path = if path.is_empty() {
            b".".as_slice()
        } else {
            path
        };
        match openat2(&self.base, std::ffi::OsStr::from_bytes(path), how) {
            // Not cached: tmpfs and ramfs keep no negative dentry, so a missing name is never
            // cached there. Looked up for real when its directory's filesystem is local.
            Err(Errno::EAGAIN) if self.parent_is_local(path) => {
                let how = OpenHow::new()
                    .flags(flags)
                    .resolve(self.resolve - ResolveFlag::from_bits_retain(libc::RESOLVE_CACHED));
                openat2(&self.base, std::ffi::OsStr::from_bytes(path), how)
            }
            other => other,
        }
    }

    /// Whether the directory holding `path`'s last component (opened from the cache) is on a
    /// filesystem whose lookups never wait on a server or a daemon.
    fn parent_is_local(&self, path: &[u8]) -> bool {
        let parent = match path.iter().rposition(|&b| b == b'/') {
            Some(0) => b"/".as_slice(),
            Some(i) => &path[..i],
            None => b".".as_slice(),
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY)
            .resolve(self.resolve);
        openat2(&self.base, std::ffi::OsStr::from_bytes(parent), how)
            .and_then(|fd| nix::sys::statfs::fstatfs(&fd))
            // `f_type` is an i64 on x86-64, narrower elsewhere.
            .is_ok_and(|fs| {
                #[allow(clippy::unnecessary_cast)]
                is_local(fs.filesystem_type().0 as i64)
            })
    }
}

/// Filesystems whose lookups are local: memory or a local disk, never a network server or a
/// FUSE daemon.
fn is_local(magic: i64) -> bool {
    const LOCAL: [i64; 10] = [
        0x0102_1994, // tmpfs
        0x8584_58f6, // ramfs
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x794c_7630, // overlay
        0xF2F5_2010, // f2fs
        0x7371_7368, // squashfs
        0xE0F5_E1E2, // erofs
        0x9fa0,      // proc
    ];
    LOCAL.contains(&magic)
}

/// An error of a cached-only lookup, said: EAGAIN means it would have needed the filesystem.
fn cached_only(e: Errno) -> String {
    match e {
        Errno::EAGAIN => "not in the kernel's cache (not looked up on the filesystem, so that \
                          busyprobe never waits on it)"
            .to_string(),
        e => e.to_string(),
    }
}

/// Mount `id` in the mount table of `pid`.
fn mount_entry(pid: u32, id: u64) -> Option<MountEntry> {
    let table = mountinfo::read(&proc_path(pid, "mountinfo")).ok()?;
    table.into_iter().find(|m| m.id == id)
}

fn privileges(pid: u32) -> Privileges {
    let status = std::fs::read_to_string(proc_path(pid, "status")).unwrap_or_default();
    let owner = owner_userns(pid);
    Privileges {
        owner_userns: owner.as_ref().and_then(inode_of),
        owner_uid: owner.as_ref().and_then(owner_uid),
        caller_userns: std::fs::metadata(proc_path(pid, "ns/user"))
            .ok()
            .map(|m| m.ino()),
        cap_sys_admin: cap_eff(&status).map(|caps| caps & (1 << CAP_SYS_ADMIN) != 0),
        euid: status_field(&status, "Uid:", 1),
    }
}

/// The user namespace owning `pid`'s mount namespace, as an open fd.
fn owner_userns(pid: u32) -> Option<OwnedFd> {
    let mnt = File::open(proc_path(pid, "ns/mnt")).ok()?;
    // SAFETY: NS_GET_USERNS takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(mnt.as_raw_fd(), NS_GET_USERNS) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn inode_of(fd: &OwnedFd) -> Option<u64> {
    nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino)
}

fn owner_uid(userns: &OwnedFd) -> Option<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer.
    let ret = unsafe { libc::ioctl(userns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
    (ret == 0).then_some(uid)
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
pub fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The `n`th number of the line starting with `key` in a `/proc/PID/status` text.
fn status_field(status: &str, key: &str, n: usize) -> Option<u32> {
    let rest = status.lines().find_map(|l| l.strip_prefix(key))?;
    rest.split_whitespace().nth(n)?.parse().ok()
}

fn path_now(call: &UmountCall) -> Result<PathNow, String> {
    let view = CallersView::of(call)?;
    let nofollow = call.flags & libc::UMOUNT_NOFOLLOW as u32 != 0;
    first_missing(&call.target.bytes, |prefix, last| {
        view.open(prefix, last && nofollow).map(drop)
    })
    .map_err(|e| e.replace("EAGAIN", &cached_only(Errno::EAGAIN)))
}

/// Walks `target` one component at a time with `open(prefix, is_last)`: the first component
/// whose open says ENOENT is missing. `.` components and repeated slashes are skipped.
pub fn first_missing(
    target: &[u8],
    mut open: impl FnMut(&[u8], bool) -> nix::Result<()>,
) -> Result<PathNow, String> {
    let components: Vec<&[u8]> = target
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let absolute = target.starts_with(b"/");
    let mut prefix: Vec<u8> = Vec::new();
    for (i, component) in components.iter().enumerate() {
        let parent = prefix.clone();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(component);
        match open(&prefix, i + 1 == components.len()) {
            Ok(()) => {}
            Err(Errno::ENOENT) => {
                let parent = match (absolute, parent.is_empty()) {
                    (true, _) => [b"/".as_slice(), &parent].concat(),
                    (false, true) => b".".to_vec(),
                    (false, false) => parent,
                };
                return Ok(PathNow::Missing {
                    parent,
                    component: component.to_vec(),
                });
            }
            Err(e) => return Err(format!("{}: {e}", String::from_utf8_lossy(&prefix))),
        }
    }
    Ok(PathNow::ExistsNow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_missing_component_is_named_with_the_part_that_exists() {
        let exists = |p: &[u8]| p == b"tmp" || p == b"tmp/a";
        let walk = |target: &[u8]| {
            first_missing(target, |p, _| {
                if exists(p) {
                    Ok(())
                } else {
                    Err(Errno::ENOENT)
                }
            })
        };
        assert_eq!(
            walk(b"/tmp/a/missing/leaf"),
            Ok(PathNow::Missing {
                parent: b"/tmp/a".to_vec(),
                component: b"missing".to_vec()
            })
        );
        assert_eq!(
            walk(b"//tmp/./a//gone"),
            Ok(PathNow::Missing {
                parent: b"/tmp/a".to_vec(),
                component: b"gone".to_vec()
            })
        );
        assert_eq!(
            walk(b"nowhere/x"),
            Ok(PathNow::Missing {
                parent: b".".to_vec(),
                component: b"nowhere".to_vec()
            })
        );
        assert_eq!(walk(b"/tmp/a"), Ok(PathNow::ExistsNow));
    }

    #[test]
    fn another_error_on_the_way_is_said() {
        let got = first_missing(b"/a/b", |_, _| Err(Errno::EACCES));
        assert!(got.unwrap_err().starts_with("a: EACCES"));
    }

    /// An EINVAL on `/proc/self` (a directory inside procfs) by this very process.
    fn einval_here(flags: u32) -> UmountCall {
        let mut call = crate::event::sample_ebusy_call(1, 1);
        call.pid = std::process::id();
        call.tid = call.pid;
        call.ret = -i64::from(libc::EINVAL);
        call.flags = flags;
        call.target.bytes = format!("/proc/{}", call.pid).into_bytes();
        call
    }

    #[test]
    fn an_einvals_target_is_read_through_the_callers_root_and_reused_for_a_second() {
        let mut recent = RecentFacts::default();
        let now = Instant::now();
        let first = recent.of(&einval_here(0), now);
        let CallerFacts::Target(Ok(t)) = &*first else {
            panic!("the target read: {first:?}");
        };
        assert!(!t.is_mount_root, "a directory inside /proc");
        let proc = t.mount.as_ref().expect("the mount it lies inside");
        assert_eq!(proc.fstype, "proc");
        let again = recent.of(&einval_here(0), now + Duration::from_millis(500));
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same failure within a second"
        );
        let later = recent.of(&einval_here(0), now + FACTS_KEPT_FOR);
        assert!(!Arc::ptr_eq(&first, &later), "read again after a second");
        let other = recent.of(&einval_here(libc::MNT_DETACH as u32), now);
        assert!(!Arc::ptr_eq(&first, &other), "other flags, another failure");
        let mut busy = einval_here(0);
        busy.ret = -i64::from(libc::EBUSY);
        assert_eq!(*recent.of(&busy, now), CallerFacts::None);
        let mut unknown_bits = einval_here(0x40);
        unknown_bits.ret = -i64::from(libc::EINVAL);
        assert_eq!(*recent.of(&unknown_bits, now), CallerFacts::None);
    }

    #[test]
    fn reads_the_effective_capabilities() {
        let status = "Name:\tsh\nUid:\t65534\t65534\t65534\t65534\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(status_field(status, "Uid:", 1), Some(65534));
        assert_eq!(cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(cap_eff("Name: x\n"), None);
    }
}
