//! The storm's workload: `mounts` tmpfs mounts under a temporary directory, each held by one
//! process (an open file on it), among `processes` processes that each hold `fds` open files.
//! Dropping it kills the processes, unmounts the tmpfs mounts and removes the directory.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Result;

use super::super::{
    scratch::{Mount, TempDir},
    workload::{holder_args, write_fillers, ProcessGroup},
};

/// The shape of the storm's workload.
pub struct Shape {
    /// Held mounts.
    pub mounts: usize,
    /// Processes in all (one holder per mount among them).
    pub processes: usize,
    /// Open files per process.
    pub fds: usize,
}

/// A running workload; the fields drop in order: processes, mounts, directory.
pub struct Mounts {
    _processes: ProcessGroup,
    _tmpfs: Vec<Mount>,
    dir: TempDir,
    /// The mount points, in order.
    pub points: Vec<PathBuf>,
    /// The pid of the process holding each mount, in the same order.
    pub holders: Vec<u32>,
}

impl Mounts {
    /// Mounts the tmpfs mounts and starts the processes; returns once each holds its files.
    pub fn set_up(shape: &Shape) -> Result<Self> {
        let dir = TempDir::create()?;
        let fillers = dir.path.join("files");
        write_fillers(&fillers)?;
        let mut tmpfs = Vec::with_capacity(shape.mounts);
        let mut points = Vec::with_capacity(shape.mounts);
        for k in 0..shape.mounts {
            let point = dir.path.join(format!("m{k}"));
            std::fs::create_dir(&point)?;
            tmpfs.push(Mount::tmpfs(&point, "size=1m")?);
            std::fs::write(point.join("held"), b"held\n")?;
            points.push(point);
        }
        println!(
            "xtask: bench storm: {} tmpfs mounts under {}; starting {} processes with {} open \
             files each, one holder per mount among them",
            shape.mounts,
            dir.path.display(),
            shape.processes.max(shape.mounts),
            shape.fds
        );
        let started = Instant::now();
        let commands = commands(shape, &fillers, &points);
        let (processes, pids) = ProcessGroup::spawn(&commands)?;
        println!(
            "xtask: bench storm: {} processes ready in {:.1} s",
            pids.len(),
            started.elapsed().as_secs_f64()
        );
        let holders = pids[..shape.mounts].to_vec();
        Ok(Self {
            _processes: processes,
            _tmpfs: tmpfs,
            dir,
            points,
            holders,
        })
    }

    /// The temporary directory every mount point is in.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }
}

/// The holders' command lines first (process `k` holds `m{k}/held`), then the others'.
fn commands(shape: &Shape, fillers: &Path, points: &[PathBuf]) -> Vec<Vec<std::ffi::OsString>> {
    let holders = points
        .iter()
        .map(|point| holder_args(shape.fds, fillers, &[point.join("held")], None));
    let others = (points.len()..shape.processes.max(points.len()))
        .map(|_| holder_args(shape.fds, fillers, &[], None));
    holders.chain(others).collect()
}
