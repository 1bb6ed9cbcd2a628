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
pub fn ensure_mounted() -> Result<Tracefs> {
    if let Some(path) = find() {
        return Ok(Tracefs::Mounted(path));
    }
    let target = Path::new(CANDIDATES[0]);
    mount(
        Some("nodev"),
        target,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| {
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
