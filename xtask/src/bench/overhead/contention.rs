//! The contended mount: a tmpfs of its own that, at the start of every session, gets one real
//! failed unmount (EBUSY: the benchmark holds a file on it open), seen by the tracer before
//! the benchmark lets go. Its `openat`+`close` loop then runs on a mount busyprobe has seen
//! contended.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use nix::{
    errno::Errno,
    mount::{umount2, MntFlags},
};

use crate::bench::scratch::Mount;

/// The contended tmpfs, unmounted when dropped.
pub struct Contended {
    mount: PathBuf,
    file: PathBuf,
    _tmpfs: Mount,
}

impl Contended {
    /// Mounts a small tmpfs at `mount` (an empty directory) with one file in it.
    pub fn mount(mount: &Path) -> Result<Self> {
        let tmpfs = Mount::tmpfs(mount, "size=1m")?;
        let file = mount.join("file");
        fs::write(&file, b"busyprobe bench\n")?;
        Ok(Self {
            mount: mount.into(),
            file,
            _tmpfs: tmpfs,
        })
    }

    /// The file the `openat`+`close` loop opens.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Makes one unmount fail for real: opens the file, calls `umount2` on the mount (an
    /// error unless it fails with EBUSY), waits with `seen` until the tracer has seen that,
    /// then closes the file. Returns when the failed call returned.
    pub fn fail_unmount_once(&self, seen: impl FnOnce(&Path) -> Result<()>) -> Result<Instant> {
        let held = File::open(&self.file)
            .with_context(|| format!("holding {} open", self.file.display()))?;
        let result = umount2(&self.mount, MntFlags::empty());
        let failed_at = Instant::now();
        match result {
            Err(Errno::EBUSY) => {}
            Ok(()) => bail!(
                "umount2 {} worked while a file was open",
                self.mount.display()
            ),
            Err(e) => bail!("umount2 {}: {e}, not EBUSY", self.mount.display()),
        }
        seen(&self.mount)?;
        drop(held);
        Ok(failed_at)
    }
}
