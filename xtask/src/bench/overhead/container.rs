//! The container-like root: a directory laid out as a container runtime lays out an image and
//! a container's writable layer. The benchmark prepares it ([`ContainerRoot::prepare`]); a
//! loop child that runs "in the container" mounts it as an overlay in a mount namespace of its
//! own and chroots into it ([`enter`]), so that the overlay dies with the child.
//!
//! Layout, under one directory: `lower/` (the image: [`FILE`] and the directory of
//! [`FILES_DIR`]), `rw/upper` and `rw/work` (the writable layer, on an ext4 of its own: see
//! [`ContainerRoot::prepare`]) and `merged/` (where the child mounts the overlay).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{ensure, Context, Result};
use nix::{
    mount::{mount, MsFlags},
    unistd::{chdir, chroot},
};

use crate::bench::scratch::Mount;

/// The file the `openat`+`close` loop opens, inside the container's root.
pub const FILE: &str = "/file";
/// Where the files workload makes its tree, inside the container's root (its parent is in the
/// image, so the first file written copies it up, as a container's first write would).
pub const FILES_DIR: &str = "/data/files";
/// The writable layer's ext4: this much per small file (a 4 KiB block, an inode, a
/// directory entry, with room to spare), plus the journal and a margin.
const EXT4_KIB_PER_FILE: u64 = 8;
const EXT4_MARGIN_MIB: u64 = 64;

/// The directories of the layout.
pub struct Layout(PathBuf);

impl Layout {
    /// The layout under `dir`.
    pub fn at(dir: &Path) -> Self {
        Self(dir.into())
    }

    /// The directory that holds it.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    fn lower(&self) -> PathBuf {
        self.0.join("lower")
    }

    fn rw(&self) -> PathBuf {
        self.0.join("rw")
    }

    fn upper(&self) -> PathBuf {
        self.0.join("rw/upper")
    }

    fn work(&self) -> PathBuf {
        self.0.join("rw/work")
    }

    fn merged(&self) -> PathBuf {
        self.0.join("merged")
    }

    /// The overlay's mount options; `index=off` as containerd mounts its snapshots.
    fn overlay_options(&self) -> Result<String> {
        let dirs = [self.lower(), self.upper(), self.work()];
        for dir in &dirs {
            let text = dir.to_str().context("a layer's path is not UTF-8")?;
            ensure!(
                !text.contains([',', ':']),
                "{text}: an overlay option cannot hold ',' or ':'"
            );
        }
        let [lower, upper, work] = dirs.map(|d| d.display().to_string());
        Ok(format!(
            "lowerdir={lower},upperdir={upper},workdir={work},index=off"
        ))
    }
}

/// The layout made by the benchmark, with the ext4 under its writable layer (unmounted when
/// dropped; the directories and the image go with the benchmark's temporary directory).
pub struct ContainerRoot {
    pub layout: Layout,
    _rw: Mount,
    /// Where the writable layer is, for the notes.
    pub upper_on: String,
}

impl ContainerRoot {
    /// Makes the layout under `dir` (a new directory): the image holds [`FILE`] and the parent
    /// of [`FILES_DIR`]; the writable layer is on an ext4 with room for `files` small files,
    /// on a loop device over a sparse file in `dir`. A node's container storage is a disk
    /// filesystem, and the scratch directory's may be unfit: an overlay (refused as an upper
    /// layer), or a filesystem slow to create files (the root ext4 of the machine this was
    /// written on took 0.36 ms a file, an ext4 on a loop device there 6 µs), whose time
    /// would hide the tracer's.
    pub fn prepare(dir: &Path, files: u64) -> Result<Self> {
        let layout = Layout::at(dir);
        let image = layout.lower();
        fs::create_dir_all(image.join(in_root(FILES_DIR).parent().context("FILES_DIR")?))?;
        fs::write(image.join(in_root(FILE)), b"busyprobe bench\n")?;
        for d in [layout.rw(), layout.merged()] {
            fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let size_mib = (files * EXT4_KIB_PER_FILE).div_ceil(1024) + EXT4_MARGIN_MIB;
        let disk = dir.join("rw.ext4");
        let rw = Mount::ext4_image(&layout.rw(), &disk, size_mib, files + files / 8 + 1024)?;
        for d in [layout.upper(), layout.work()] {
            fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Self {
            layout,
            _rw: rw,
            upper_on: format!(
                "an ext4 of its own ({size_mib} MiB, on a loop device over a sparse file in the \
                 scratch directory)"
            ),
        })
    }
}

/// In a loop child already in a mount namespace of its own: mounts the overlay of the layout
/// in `dir` on its `merged/`, chroots there and goes to `/`.
pub fn enter(dir: &Path) -> Result<()> {
    let layout = Layout::at(dir);
    let merged = layout.merged();
    let options = layout.overlay_options()?;
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .with_context(|| format!("mounting an overlay on {} ({options})", merged.display()))?;
    chroot(&merged).with_context(|| format!("chroot {}", merged.display()))?;
    chdir("/").context("chdir /")
}

/// A path inside the container's root, relative, to join to a layer.
fn in_root(path: &str) -> &Path {
    Path::new(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_name_the_three_layers() {
        let layout = Layout::at(Path::new("/tmp/b.1/container"));
        assert_eq!(
            layout.overlay_options().unwrap(),
            "lowerdir=/tmp/b.1/container/lower,upperdir=/tmp/b.1/container/rw/upper,\
             workdir=/tmp/b.1/container/rw/work,index=off"
        );
        assert!(Layout::at(Path::new("/tmp/a,b")).overlay_options().is_err());
    }
}
