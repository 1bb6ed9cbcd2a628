//! What is measured: each workload where it runs (a [`Measure`], a row of the table), and the
//! [`Job`] that runs it once in a loop child.

use std::path::PathBuf;

use anyhow::Result;

use super::{
    container, loops, loops::Workload, place::Place, results::Heading, scene::Scene,
    OverheadOptions,
};

/// `getppid` runs this many times as many iterations as the `openat`+`close` loops: it is
/// an order of magnitude cheaper.
pub const GETPPID_FACTOR: u64 = 10;

/// A workload in a place: a row of the table, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// `openat`+`close` of a file on the root filesystem, in busyprobe's namespace: its root
    /// mount, never tracked.
    RootFs,
    /// The same file from a child mount namespace: through a copy of the root mount, tracked.
    ChildNamespace,
    /// A file of the image, in the container-like root (overlay).
    Container,
    /// A file on a tmpfs the benchmark mounted: tracked.
    Tmpfs,
    /// A file on the contended tmpfs: tracked, and seen contended by busyprobe.
    Contended,
    /// `getppid`: no file at all.
    Getppid,
    /// The file-heavy workload on a tmpfs, in busyprobe's namespace.
    Files,
    /// The file-heavy workload in the container-like root (its writable layer).
    ContainerFiles,
}

impl Measure {
    /// Every measure, in the order of the rows.
    pub const ALL: [Self; 8] = [
        Self::RootFs,
        Self::ChildNamespace,
        Self::Container,
        Self::Tmpfs,
        Self::Contended,
        Self::Getppid,
        Self::Files,
        Self::ContainerFiles,
    ];

    /// Its row in the table.
    pub fn row(self) -> usize {
        self as usize
    }

    /// Its row heading; `files` is how many small files the file-heavy workload makes.
    pub fn heading(self, files: &str) -> Heading {
        let label = match self {
            Self::RootFs => "openat+close, root fs, busyprobe's namespace (untracked)".into(),
            Self::ChildNamespace => "openat+close, root fs, child mount namespace".into(),
            Self::Container => "openat+close, container-like namespace (overlay)".into(),
            Self::Tmpfs => "openat+close, tmpfs (tracked)".into(),
            Self::Contended => "openat+close, contended tmpfs".into(),
            Self::Getppid => "getppid".into(),
            Self::Files => format!("{files} small files + walk, tmpfs"),
            Self::ContainerFiles => format!("{files} small files + walk, container-like"),
        };
        let per_op = !matches!(self, Self::Files | Self::ContainerFiles);
        Heading { label, per_op }
    }
}

/// A measure with its workload's arguments.
pub struct Job {
    pub heading: Heading,
    workload: Workload,
    place: Place,
    /// The file to open, or the directory to make the files in (as the place sees it).
    path: Option<PathBuf>,
    count: u64,
}

impl Job {
    /// Runs it once: ns per operation, or seconds for the whole workload.
    pub fn run(&self) -> Result<f64> {
        let path = self.path.as_deref();
        let (elapsed, ops) = loops::run_child(self.workload, &self.place, path, self.count)?;
        Ok(if self.heading.per_op {
            elapsed.as_nanos() as f64 / ops as f64
        } else {
            elapsed.as_secs_f64()
        })
    }
}

/// One job per measure, in the order of [`Measure::ALL`].
pub fn jobs(opts: &OverheadOptions, scene: &Scene) -> Vec<Job> {
    let files_label = super::thousands(opts.files);
    let container = Place::Container(scene.container.layout.dir().into());
    Measure::ALL
        .iter()
        .map(|&measure| {
            let open = |place: Place, path: PathBuf| (Workload::OpenClose, place, Some(path));
            let (workload, place, path) = match measure {
                Measure::RootFs => open(Place::Home, scene.root_file.clone()),
                Measure::ChildNamespace => open(Place::ChildNamespace, scene.root_file.clone()),
                Measure::Container => open(container.clone(), container::FILE.into()),
                Measure::Tmpfs => open(Place::Home, scene.tmpfs_file.clone()),
                Measure::Contended => open(Place::Home, scene.contended.file().into()),
                Measure::Getppid => (Workload::Getppid, Place::Home, None),
                Measure::Files => (Workload::Files, Place::Home, Some(scene.files_dir.clone())),
                Measure::ContainerFiles => (
                    Workload::Files,
                    container.clone(),
                    Some(container::FILES_DIR.into()),
                ),
            };
            let count = match workload {
                Workload::OpenClose => opts.iterations,
                Workload::Getppid => opts.iterations * GETPPID_FACTOR,
                Workload::Files => opts.files,
            };
            Job {
                heading: measure.heading(&files_label),
                workload,
                place,
                path,
                count,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_order_of_all() {
        for (row, measure) in Measure::ALL.iter().enumerate() {
            assert_eq!(measure.row(), row);
        }
        assert!(Measure::Files
            .heading("20,000")
            .label
            .starts_with("20,000 small files"));
        assert!(!Measure::ContainerFiles.heading("1").per_op);
        assert!(Measure::Getppid.heading("1").per_op);
    }
}
