//! The recording file: JSON Lines in a file of mode 0600, appended a whole line at a time,
//! synced to disk on a schedule ([`super::sync`], `--fsync`), and rotated by size at line
//! boundaries. Every file starts with the same `header` line, so each one stands alone.
//! `FILE.1` is the newest rotated file, up to `FILE.N`.
//!
//! A line that cannot be written whole (ENOSPC, EIO, a quota) is cut off again
//! (`ftruncate` back to the end of the last whole line), so the file never holds a torn line
//! that later lines would follow; the caller decides what losing it means.
//!
//! Durability: lines are `fdatasync`ed at most every interval while lines are written (the
//! caller wakes [`RotatingFile::tick`] at [`RotatingFile::wake_at`] for the last ones), and
//! at exit (drop). A rotation syncs the old file before the renames, and the directory after
//! the renames and the new file's creation, so that a crash leaves a whole rotated set.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Instant,
};

use super::sync::{SyncEvery, SyncSchedule};

/// Where and how to record.
#[derive(Clone, Debug)]
pub struct RecordPlan {
    /// The file being written.
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes.
    pub rotate_at: Option<u64>,
    /// Rotated files kept.
    pub keep: usize,
    /// The header line written first in every file (without its newline).
    pub header: Vec<u8>,
    /// How often the file is synced to disk.
    pub sync: SyncEvery,
}

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rotation {
    /// Not due.
    No,
    /// The file reached its size: the next line goes to a new file.
    Due,
    /// The old files were renamed, but the new file could not be created yet.
    Shifted,
}

/// How many syncs a file had (reported at exit with `-v`, and checked by the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SyncCounts {
    /// `fdatasync`s of the recording file.
    file: u64,
    /// `fsync`s of its directory.
    dir: u64,
}

/// The file being written, which rotates and syncs itself.
pub struct RotatingFile {
    plan: RecordPlan,
    file: File,
    /// Where the whole lines end: the next line goes there.
    end: u64,
    /// The current file has no header yet (writing it failed, or it was just created).
    header_pending: bool,
    /// The file may hold bytes after `end` (cutting a failed line off failed too).
    torn: bool,
    rotation: Rotation,
    schedule: SyncSchedule,
    /// A sync failed; said once until one works again.
    sync_failing: bool,
    syncs: SyncCounts,
}

impl RotatingFile {
    /// Starts a recording: an existing file is rotated away first (never overwritten). With
    /// `keep` 0 an existing file is refused: rotating it away would delete it.
    pub fn create(plan: RecordPlan) -> io::Result<Self> {
        Self::create_at(plan, Instant::now())
    }

    /// [`RotatingFile::create`] with its sync schedule starting at `now`.
    fn create_at(plan: RecordPlan, now: Instant) -> io::Result<Self> {
        if let Ok(meta) = fs::metadata(&plan.path) {
            // Rotating a directory away would rename it, and then record into its place.
            if !meta.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} exists and is not a regular file", plan.path.display()),
                ));
            }
            if plan.keep == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists, and with --keep 0 no old file is kept: starting would delete it; move it away first, or keep it with --keep 1 or more",
                        plan.path.display()
                    ),
                ));
            }
            shift_rotated(&plan.path, plan.keep)?;
        }
        let file = open_new(&plan.path)?;
        let schedule = SyncSchedule::new(plan.sync, now);
        let mut me = Self {
            plan,
            file,
            end: 0,
            header_pending: true,
            torn: false,
            rotation: Rotation::No,
            schedule,
            sync_failing: false,
            syncs: SyncCounts::default(),
        };
        me.write_header()?;
        me.sync_dir();
        Ok(me)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.plan.path
    }

    /// Appends one or more whole lines (`line` ends with a newline). When they cannot all be
    /// written the file is cut back to where they started and the error returned: nothing of
    /// them stays. A rotation that is due happens first.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_line_with(line, Instant::now(), |file, bytes, at| {
            file.write_all_at(bytes, at)
        })
    }

    /// [`RotatingFile::write_line`] at `now`, writing through `write` (the tests make it fail
    /// part-way).
    fn write_line_with(
        &mut self,
        line: &[u8],
        now: Instant,
        write: impl FnOnce(&File, &[u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        self.prepare()?;
        if let Err(e) = write(&self.file, line, self.end) {
            self.cut_back();
            return Err(e);
        }
        self.end += line.len() as u64;
        if self.schedule.wrote(now) {
            self.sync(now);
        }
        if self.rotation == Rotation::No && self.plan.rotate_at.is_some_and(|at| self.end >= at) {
            self.rotation = Rotation::Due;
        }
        Ok(())
    }

    /// Whether `more` bytes written now would make the file reach its rotation size.
    pub fn would_reach_rotation(&self, more: usize) -> bool {
        self.plan
            .rotate_at
            .is_some_and(|at| self.end + more as u64 >= at)
    }

    /// When lines written since the last sync are due to be synced ([`RotatingFile::tick`]).
    pub fn wake_at(&self) -> Option<Instant> {
        self.schedule.due()
    }

    /// Syncs the file if a sync is due at `now`.
    pub fn tick(&mut self, now: Instant) {
        if self.schedule.due().is_some_and(|due| now >= due) {
            self.sync(now);
        }
    }

    /// Before a line: the file is whole again, rotated when due, and has its header.
    fn prepare(&mut self) -> io::Result<()> {
        if self.torn {
            self.file.set_len(self.end)?;
            self.torn = false;
        }
        if self.rotation != Rotation::No {
            self.rotate()?;
        }
        if self.header_pending {
            self.write_header()?;
        }
        Ok(())
    }

    fn write_header(&mut self) -> io::Result<()> {
        let mut header = self.plan.header.clone();
        header.push(b'\n');
        if let Err(e) = self.file.write_all_at(&header, 0) {
            self.cut_back();
            return Err(e);
        }
        self.end = header.len() as u64;
        self.header_pending = false;
        Ok(())
    }

    /// Cuts off what a failed write left after the last whole line.
    fn cut_back(&mut self) {
        if let Err(e) = self.file.set_len(self.end) {
            tracing::warn!(
                "cutting a partly written line off {}: {e} (tried again before the next line)",
                self.plan.path.display()
            );
            self.torn = true;
        }
    }

    /// Syncs the old file, renames the set, creates the new file and syncs the directory. A
    /// failure leaves the rotation due (from the step that failed) for the next line.
    fn rotate(&mut self) -> io::Result<()> {
        if self.rotation == Rotation::Due {
            // The old file's lines reach the disk before it is renamed away.
            self.sync(Instant::now());
            shift_rotated(&self.plan.path, self.plan.keep)?;
            self.rotation = Rotation::Shifted;
        }
        self.file = open_new(&self.plan.path)?;
        self.end = 0;
        self.header_pending = true;
        self.rotation = Rotation::No;
        // One directory sync after the renames and the creation records all of them.
        self.sync_dir();
        Ok(())
    }

    /// `fdatasync`s the file now (a failure is said once until a sync works again: it cannot
    /// be undone, and the lines stay written for the kernel to retry).
    fn sync(&mut self, now: Instant) {
        match self.file.sync_data() {
            Ok(()) => {
                self.syncs.file += 1;
                if self.sync_failing {
                    self.sync_failing = false;
                    tracing::info!("syncing {} works again", self.plan.path.display());
                }
            }
            Err(e) if !self.sync_failing => {
                self.sync_failing = true;
                tracing::warn!(
                    "syncing {} to disk: {e} (lines written may not survive a crash; said once \
                     until a sync works again)",
                    self.plan.path.display()
                );
            }
            Err(_) => {}
        }
        self.schedule.synced(now);
    }

    /// `fsync`s the recording's directory, so that its names survive a crash.
    fn sync_dir(&mut self) {
        let dir = match self.plan.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        match File::open(dir).and_then(|d| d.sync_all()) {
            Ok(()) => self.syncs.dir += 1,
            Err(e) => tracing::warn!("syncing the directory {}: {e}", dir.display()),
        }
    }
}

/// The last lines reach the disk at exit.
impl Drop for RotatingFile {
    fn drop(&mut self) {
        if self.schedule.is_pending() {
            self.sync(Instant::now());
        }
        tracing::debug!(
            "{}: synced {} times, its directory {} times",
            self.plan.path.display(),
            self.syncs.file,
            self.syncs.dir
        );
    }
}

/// A new file of mode 0600 (created exclusively: the old one was moved away).
fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// `FILE.(k)` → `FILE.(k+1)` from the oldest kept down, `FILE` → `FILE.1`; what would be
/// `FILE.(keep+1)` is deleted. With `keep` 0 the file is simply removed.
fn shift_rotated(path: &Path, keep: usize) -> io::Result<()> {
    let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    if keep == 0 {
        return fs::remove_file(path);
    }
    match fs::remove_file(numbered(keep)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..keep).rev() {
        match fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{os::unix::fs::PermissionsExt, time::Duration};

    fn plan(dir: &Path, rotate_at: Option<u64>, keep: usize) -> RecordPlan {
        RecordPlan {
            path: dir.join("rec.jsonl"),
            rotate_at,
            keep,
            header: br#"{"v":1,"type":"header"}"#.to_vec(),
            sync: SyncEvery::Interval(SECOND),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn line(f: &mut RotatingFile, text: &str) {
        f.write_line(format!("{text}\n").as_bytes()).unwrap();
    }

    #[test]
    fn rotates_at_line_boundaries_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::create(plan(dir.path(), Some(60), 2)).unwrap();
        for i in 0..10 {
            line(&mut f, &format!(r#"{{"n":{i},"pad":"xxxxxxxxxx"}}"#));
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["rec.jsonl", "rec.jsonl.1", "rec.jsonl.2"]);
        for name in &names {
            let path = dir.path().join(name);
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("{\"v\":1,\"type\":\"header\"}\n"),
                "{name}: {text}"
            );
            assert!(text.ends_with('\n'), "{name} ends with a whole line");
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600,
                "{name}"
            );
        }
        let newest_old = fs::read_to_string(dir.path().join("rec.jsonl.1")).unwrap();
        let current = fs::read_to_string(dir.path().join("rec.jsonl")).unwrap();
        assert!(
            newest_old.contains(r#""n":8"#) || current.contains(r#""n":9"#),
            "{newest_old}\n{current}"
        );
    }

    #[test]
    fn an_existing_recording_is_rotated_away_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("rec.jsonl"), "old\n").unwrap();
        let mut f = RotatingFile::create(plan(dir.path(), None, 3)).unwrap();
        line(&mut f, "new");
        assert_eq!(
            fs::read_to_string(dir.path().join("rec.jsonl.1")).unwrap(),
            "old\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("rec.jsonl")).unwrap(),
            "{\"v\":1,\"type\":\"header\"}\nnew\n"
        );
    }

    #[test]
    fn a_directory_is_refused_not_rotated_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(dir.path(), None, 3);
        p.path = dir.path().join("d");
        fs::create_dir(&p.path).unwrap();
        let Err(e) = RotatingFile::create(p.clone()) else {
            panic!("a directory must be refused");
        };
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(p.path.is_dir(), "left where it was");
        assert!(!dir.path().join("d.1").exists(), "not rotated");
    }

    #[test]
    fn keep_0_refuses_an_existing_recording_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.jsonl");
        fs::write(&path, "old\n").unwrap();
        let Err(e) = RotatingFile::create(plan(dir.path(), None, 0)) else {
            panic!("an existing recording with --keep 0 must be refused");
        };
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let why = e.to_string();
        assert!(why.contains(&path.display().to_string()), "{why}");
        assert!(why.contains("--keep 0"), "{why}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\n", "untouched");
        // Without an old file, --keep 0 records (and rotates by deleting).
        fs::remove_file(&path).unwrap();
        let mut f = RotatingFile::create(plan(dir.path(), None, 0)).unwrap();
        line(&mut f, "new");
        assert!(fs::read_to_string(&path).unwrap().ends_with("new\n"));
    }
}

#[cfg(test)]
mod durability_tests {
    use super::*;
    use std::time::Duration;

    const SECOND: Duration = Duration::from_secs(1);
    const HEADER: &str = "{\"v\":1,\"type\":\"header\"}\n";

    fn plan(dir: &Path, rotate_at: Option<u64>, sync: SyncEvery) -> RecordPlan {
        RecordPlan {
            path: dir.join("rec.jsonl"),
            rotate_at,
            keep: 2,
            header: HEADER.trim_end().as_bytes().to_vec(),
            sync,
        }
    }

    fn write_at(f: &mut RotatingFile, text: &str, now: Instant) {
        f.write_line_with(text.as_bytes(), now, |file, bytes, at| {
            file.write_all_at(bytes, at)
        })
        .unwrap();
    }

    #[test]
    fn lines_are_synced_at_most_once_per_interval_and_the_last_ones_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut f =
            RotatingFile::create_at(plan(dir.path(), None, SyncEvery::Interval(SECOND)), t0)
                .unwrap();
        assert_eq!(
            f.syncs,
            SyncCounts { file: 0, dir: 1 },
            "the new name is synced"
        );
        assert_eq!(f.wake_at(), None, "nothing written yet");
        write_at(&mut f, "a\n", ms(100));
        assert_eq!(f.syncs.file, 0, "within the first interval: waits");
        assert_eq!(f.wake_at(), Some(ms(1000)));
        f.tick(ms(999));
        assert_eq!(f.syncs.file, 0, "not due yet");
        f.tick(ms(1000));
        assert_eq!(f.syncs.file, 1, "due: synced without another line");
        assert_eq!(f.wake_at(), None);
        write_at(&mut f, "b\n", ms(1500));
        assert_eq!(f.syncs.file, 1, "half an interval after the last sync");
        write_at(&mut f, "c\n", ms(2100));
        assert_eq!(f.syncs.file, 2, "an interval later: from the write path");
        assert_eq!(f.wake_at(), None);
        let path = f.path().to_path_buf();
        drop(f);
        assert_eq!(
            fs::read_to_string(path).unwrap(),
            format!("{HEADER}a\nb\nc\n")
        );
    }

    #[test]
    fn a_rotation_syncs_the_old_file_first_and_the_directory_after() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        // `off`: no sync from the schedule, so every sync counted is the rotation's.
        let mut f =
            RotatingFile::create_at(plan(dir.path(), Some(30), SyncEvery::Off), t0).unwrap();
        assert_eq!(f.syncs, SyncCounts { file: 0, dir: 1 });
        write_at(&mut f, "first line, over 30 bytes with the header\n", t0);
        assert_eq!(
            f.syncs,
            SyncCounts { file: 0, dir: 1 },
            "rotates before the next line"
        );
        write_at(&mut f, "second\n", t0);
        assert_eq!(f.syncs, SyncCounts { file: 1, dir: 2 });
        assert_eq!(
            fs::read_to_string(dir.path().join("rec.jsonl.1")).unwrap(),
            format!("{HEADER}first line, over 30 bytes with the header\n")
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("rec.jsonl")).unwrap(),
            format!("{HEADER}second\n")
        );
        drop(f);
        // `off` still syncs the lines at exit.
    }

    #[test]
    fn a_partly_written_line_is_cut_off_and_the_next_one_follows_the_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut f = RotatingFile::create_at(plan(dir.path(), None, SyncEvery::Off), t0).unwrap();
        write_at(&mut f, "whole\n", t0);
        // The disk fills half-way through the next line: its first half is in the file.
        let failed = f.write_line_with(b"{\"torn\":\"line\"}\n", t0, |file, bytes, at| {
            file.write_all_at(&bytes[..7], at)?;
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        });
        assert_eq!(failed.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        let path = dir.path().join("rec.jsonl");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{HEADER}whole\n"),
            "cut back to the last whole line"
        );
        write_at(&mut f, "next\n", t0);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{HEADER}whole\nnext\n")
        );
    }
}
