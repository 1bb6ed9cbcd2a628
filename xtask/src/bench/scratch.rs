//! Scratch space for a benchmark: a temporary directory and the filesystems mounted in it
//! (tmpfs, or an ext4 on a loop device), removed when their guards are dropped.

use std::{
    env,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{self, Command},
};

use anyhow::{anyhow, ensure, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::tools::find_or_install;

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

    /// Makes an ext4 of `size_mib` MiB with room for `inodes` files in the sparse file `image`
    /// (inode tables and journal written at once: no lazy initialisation in the background
    /// later) and mounts it at `path` through a loop device, which is let go with the
    /// filesystem (`mount -o loop` sets autoclear). Installs e2fsprogs when `mkfs.ext4` is
    /// missing.
    pub fn ext4_image(path: &Path, image: &Path, size_mib: u64, inodes: u64) -> Result<Self> {
        let [mkfs, mount] = find_or_install(&[("mkfs.ext4", "e2fsprogs"), ("mount", "mount")]);
        let (mkfs, mount) = (
            mkfs.map_err(|e| anyhow!(e))?,
            mount.map_err(|e| anyhow!(e))?,
        );
        File::create(image)
            .and_then(|f| f.set_len(size_mib << 20))
            .with_context(|| format!("creating {}", image.display()))?;
        let inodes = inodes.to_string();
        let mkfs_args = ["-q", "-F", "-N", &inodes, "-E"];
        let lazy = "lazy_itable_init=0,lazy_journal_init=0";
        run(Command::new(mkfs).args(mkfs_args).arg(lazy).arg(image))?;
        let options = "loop";
        run(Command::new(mount)
            .args(["-t", "ext4", "-o", options])
            .arg(image)
            .arg(path))?;
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

/// Runs `command` to its end; an error, with what it said, unless it succeeded.
fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
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
