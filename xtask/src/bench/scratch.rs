//! Scratch space for a benchmark: a temporary directory and the filesystems mounted in it,
//! removed when their guards are dropped.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process,
};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A filesystem mounted for the benchmark; detached when dropped.
pub struct Mount {
    path: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs with `options` (such as `size=4m`) at `path`.
    pub fn tmpfs(path: &Path, options: &str) -> Result<Self> {
        mount(
            Some("busyprobe-bench"),
            path,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(options),
        )
        .with_context(|| format!("mounting a tmpfs at {}", path.display()))?;
        Ok(Self { path: path.into() })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
            eprintln!("xtask: bench: unmounting {}: {e}", self.path.display());
        }
    }
}

/// A directory under the system's temporary directory; removed with its contents when dropped.
pub struct TempDir {
    /// The directory.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates `busyprobe-bench.PID` in the temporary directory, replacing a stale one.
    pub fn create() -> Result<Self> {
        let path = env::temp_dir().join(format!("busyprobe-bench.{}", process::id()));
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        }
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("xtask: bench: removing {}: {e}", self.path.display());
        }
    }
}
