//! tracefs: syscall tracepoints are attached through it, and a fresh machine may not have it
//! mounted. busyprobe mounts it (and says so) rather than failing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

/// Where tracefs is looked for, in aya's order.
pub const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// How tracefs was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracefs {
    /// Already mounted here.
    Mounted(PathBuf),
    /// busyprobe mounted it here just now.
    MountedByUs(PathBuf),
}

/// The first mounted tracefs (a non-empty candidate directory, as aya checks).
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| is_populated(p))
        .map(Path::to_path_buf)
}

/// A tracefs mount point listed in `/proc/self/mounts` (readable without privileges, unlike
/// the tracefs directory itself).
pub fn listed_in_mounts() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(dir))
    })
}

fn is_populated(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// Finds tracefs or mounts it at `/sys/kernel/tracing`.
///
/// Two busyprobes starting together on a fresh machine may both find it missing: the kernel
/// refuses the second mount of tracefs on the same mount point with EBUSY, and then the
/// first one's mount is there to use.
pub fn ensure_mounted() -> Result<Tracefs> {
    ensure_with(find, mount_tracefs)
}

fn mount_tracefs(target: &Path) -> nix::Result<()> {
    mount(
        Some("nodev"),
        target,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
}

/// [`ensure_mounted`] with its look-up and its mount given.
fn ensure_with(
    find: impl Fn() -> Option<PathBuf>,
    mount: impl FnOnce(&Path) -> nix::Result<()>,
) -> Result<Tracefs> {
    if let Some(path) = find() {
        return Ok(Tracefs::Mounted(path));
    }
    let target = Path::new(CANDIDATES[0]);
    let mounted = mount(target);
    if mounted == Err(nix::errno::Errno::EBUSY) {
        if let Some(path) = find() {
            return Ok(Tracefs::Mounted(path));
        }
    }
    mounted.with_context(|| {
        format!(
            "tracefs is not mounted and mounting it at {} failed; mount it by hand \
                 (`mount -t tracefs nodev {}`) or check that the kernel has CONFIG_TRACING",
            target.display(),
            target.display()
        )
    })?;
    tracing::info!(
        "tracefs was not mounted: mounted it at {} (left mounted)",
        target.display()
    );
    Ok(Tracefs::MountedByUs(target.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use nix::errno::Errno;

    use super::*;

    #[test]
    fn a_mount_refused_because_another_busyprobe_just_mounted_it_uses_that_mount() {
        // Missing at first; the concurrent busyprobe's mount is there after ours is refused.
        let looks = Cell::new(0);
        let find = || {
            looks.set(looks.get() + 1);
            (looks.get() > 1).then(|| PathBuf::from(CANDIDATES[0]))
        };
        let got = ensure_with(find, |_| Err(Errno::EBUSY)).unwrap();
        assert_eq!(got, Tracefs::Mounted(PathBuf::from(CANDIDATES[0])));
        assert_eq!(looks.get(), 2);
    }

    #[test]
    fn a_refused_mount_with_nothing_mounted_is_an_error_saying_how_to_mount_it() {
        let err = ensure_with(|| None, |_| Err(Errno::EBUSY)).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("mount -t tracefs nodev /sys/kernel/tracing") && text.contains("EBUSY"),
            "{text}"
        );
        let err = ensure_with(|| None, |_| Err(Errno::EPERM)).unwrap_err();
        assert!(format!("{err:#}").contains("EPERM"), "{err:#}");
    }

    #[test]
    fn a_missing_tracefs_is_mounted_at_the_first_candidate() {
        let mut at = None;
        let got = ensure_with(
            || None,
            |p| {
                at = Some(p.to_path_buf());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, Tracefs::MountedByUs(PathBuf::from(CANDIDATES[0])));
        assert_eq!(at, Some(PathBuf::from(CANDIDATES[0])));
    }
}
