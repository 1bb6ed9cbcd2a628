//! The scratch space of `bench overhead`, under a temporary directory: a file on the root
//! filesystem, a tmpfs with a file and room for the small files, the contended tmpfs, and the
//! container-like root's layers. Dropping it unmounts what it mounted, then removes the
//! directory (on errors and Ctrl-C too: the benchmark unwinds).

use std::{fs, path::PathBuf};

use anyhow::Result;

use super::{
    container::ContainerRoot,
    contention::Contended,
    mounts::{fs_type, mount_id},
};
use crate::bench::scratch::{Mount, TempDir};

/// tmpfs space per small file (each takes at least a page), plus a margin.
const KIB_PER_FILE: u64 = 8;
const TMPFS_MARGIN_KIB: u64 = 16 << 10;

/// Everything the workloads use. The mounts are declared before the directory: dropped first.
pub struct Scene {
    pub container: ContainerRoot,
    pub contended: Contended,
    _tmpfs: Mount,
    dir: TempDir,
    /// On the root filesystem.
    pub root_file: PathBuf,
    /// On the tmpfs.
    pub tmpfs_file: PathBuf,
    /// Where the small files go on the tmpfs.
    pub files_dir: PathBuf,
}

impl Scene {
    /// Makes it, with room for `files` small files on each filesystem that needs it.
    pub fn set_up(files: u64) -> Result<Self> {
        let dir = TempDir::create()?;
        let root_file = dir.path.join("file");
        fs::write(&root_file, b"busyprobe bench\n")?;
        let [mount, contended, container] =
            ["mnt", "contended", "container"].map(|d| dir.path.join(d));
        for d in [&mount, &contended, &container] {
            fs::create_dir(d)?;
        }
        let size = files * KIB_PER_FILE + TMPFS_MARGIN_KIB;
        let tmpfs = Mount::tmpfs(&mount, &format!("size={size}k"))?;
        let tmpfs_file = mount.join("file");
        fs::write(&tmpfs_file, b"busyprobe bench\n")?;
        let contended = Contended::mount(&contended)?;
        let container = ContainerRoot::prepare(&container, files)?;
        eprintln!(
            "xtask: bench: files at {} (root filesystem), {} (tmpfs), {} (contended tmpfs), \
             and the container-like root's layers in {}",
            root_file.display(),
            tmpfs_file.display(),
            contended.file().display(),
            container.layout.dir().display()
        );
        Ok(Self {
            container,
            contended,
            _tmpfs: tmpfs,
            dir,
            root_file,
            tmpfs_file,
            files_dir: mount.join("files"),
        })
    }

    /// Notes for the table: which filesystems the places use, and warnings when a file is not
    /// on the mount it should be on.
    pub fn notes(&self) -> Result<Vec<String>> {
        let root = mount_id("/".as_ref())?;
        let mut notes = vec![format!(
            "filesystems: / is {}; the scratch directory ({}) is {}; the container-like \
             root is an overlay whose lower layer (the image) is in the scratch directory and \
             whose upper and work directories are on {}",
            fs_type("/".as_ref())?,
            self.dir.path.display(),
            fs_type(&self.dir.path)?,
            self.container.upper_on
        )];
        if mount_id(&self.root_file)? != root {
            notes.push(format!(
                "WARNING: {} is not on this namespace's root mount {root}: busyprobe may \
                 track it",
                self.root_file.display()
            ));
        }
        for file in [&self.tmpfs_file, self.contended.file()] {
            if mount_id(file)? == root {
                notes.push(format!(
                    "WARNING: {} is on the root mount: busyprobe does not track it",
                    file.display()
                ));
            }
        }
        Ok(notes)
    }
}
