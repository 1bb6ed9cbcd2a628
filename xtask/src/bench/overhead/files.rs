//! The file-heavy workload: many small files written and read back, then the tree walked as
//! `find DIR -type f` walks it with a `stat` of every entry; timed as a whole.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

/// Files per directory.
const FILES_PER_DIR: u64 = 200;
/// Size of each file.
const SMALL_FILE: usize = 512;

/// Creates `dir`, then `count` files of [`SMALL_FILE`] bytes in subdirectories of
/// [`FILES_PER_DIR`], reads each back and checks its size, then walks the tree ([`walk`]) and
/// checks it found them all; times all of that, then removes `dir` untimed.
pub fn small_files(dir: &Path, count: u64) -> Result<Duration> {
    let started = Instant::now();
    write_tree(dir, count)?;
    read_tree(dir, count)?;
    let found = walk(dir)?;
    ensure!(found == count, "the walk found {found} files of {count}");
    let elapsed = started.elapsed();
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(elapsed)
}

/// The path of file `i` under `dir`.
fn file(dir: &Path, i: u64) -> PathBuf {
    dir.join(format!("d{}", i / FILES_PER_DIR))
        .join(format!("f{i}"))
}

/// Creates `dir` and writes the files, each directory before its first file.
fn write_tree(dir: &Path, count: u64) -> Result<()> {
    let content = vec![b'x'; SMALL_FILE];
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    for i in 0..count {
        if i % FILES_PER_DIR == 0 {
            fs::create_dir(dir.join(format!("d{}", i / FILES_PER_DIR)))?;
        }
        fs::write(file(dir, i), &content).with_context(|| format!("writing file {i}"))?;
    }
    Ok(())
}

/// Reads every file back and checks its size.
fn read_tree(dir: &Path, count: u64) -> Result<()> {
    for i in 0..count {
        let read = fs::read(file(dir, i)).with_context(|| format!("reading file {i}"))?;
        ensure!(
            read.len() == SMALL_FILE,
            "file {i} has {} bytes",
            read.len()
        );
    }
    Ok(())
}

/// Lists every directory under `dir` and `stat`s every entry (relative to its directory, as
/// `find` does); returns how many regular files there are.
fn walk(dir: &Path) -> Result<u64> {
    let mut files = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let kind = entry.metadata()?.file_type();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files += 1;
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_finds_every_file_written() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("files");
        write_tree(&tree, 450).unwrap();
        read_tree(&tree, 450).unwrap();
        assert_eq!(walk(&tree).unwrap(), 450);
        small_files(&dir.path().join("again"), 201).unwrap();
        assert!(!dir.path().join("again").exists());
    }
}
