//! Why a failed unmount that is not an EBUSY failed: a stable [`ExplanationCode`], a sentence
//! for people and the event it relates to (the earlier unmount that took the mount away).

/// Which explanation: the JSON `explanation.code`, stable within schema v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExplanationCode {
    /// EINVAL: unknown flag bits, or `MNT_EXPIRE` with `MNT_FORCE` or `MNT_DETACH`.
    InvalidFlags,
    /// EINVAL: the same process unmounted the same target just before (the end of an
    /// unmount-all loop, containerd's way of peeling every mount off a path).
    UnmountAllLoopEnd,
    /// EINVAL: another process unmounted the target earlier (a double teardown).
    UnmountedEarlier,
    /// EINVAL: nothing was mounted at the target since busyprobe started: it is a directory
    /// (or file) inside a mount, not a mount's root.
    NotAMountPoint,
    /// EINVAL: the target is a mount's root, but the mount is locked: it came into a mount
    /// namespace owned by a less privileged user namespace (copied as the namespace was made,
    /// or propagated into it), where it cannot be unmounted on its own.
    LockedMount,
    /// EPERM: the caller lacks `CAP_SYS_ADMIN` in the user namespace that owns its mount
    /// namespace.
    NoCapSysAdmin,
    /// ENOENT: the target (or one of its components) does not exist, as the caller sees it.
    NoSuchPath,
}

impl ExplanationCode {
    /// The snake_case name written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidFlags => "invalid_flags",
            Self::UnmountAllLoopEnd => "unmount_all_loop_end",
            Self::UnmountedEarlier => "unmounted_earlier",
            Self::NotAMountPoint => "not_a_mount_point",
            Self::LockedMount => "locked_mount",
            Self::NoCapSysAdmin => "no_cap_sys_admin",
            Self::NoSuchPath => "no_such_path",
        }
    }
}

/// Why a failed unmount failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Which explanation.
    pub code: ExplanationCode,
    /// The explanation for people, naming what busyprobe found.
    pub sentence: String,
    /// The `id` of the event it relates to (the earlier successful unmount), if any.
    pub related_event: Option<u64>,
}
