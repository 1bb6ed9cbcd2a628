//! The recording (`record -o FILE`, `agent -o FILE`): the event stream as JSON Lines in a
//! [`RotatingFile`], which syncs and rotates itself ([`file`](mod@file), [`sync`]).
//!
//! A line that cannot be written (the disk is full, an I/O error, a quota) does not end the
//! stream: [`Recording`] counts it as lost (the file is cut back to its last whole line),
//! says so once on stderr, and tries again with each following batch of lines (lines are
//! kept back until the end of the event loop's turn and written together). The first line it
//! writes again is a `recording-lines-lost` warning with the count and the cause, written
//! together with the lines that follow it (all or none), so the file says where its gap is. [`Recording::losing`] tells the agent's other outputs ([`super::fanout`]).

pub mod file;
pub mod sync;

use std::{io, time::Instant, time::SystemTime};

pub use file::{RecordPlan, RotatingFile};
pub use sync::SyncEvery;

use crate::{
    event::{errno_name, UmountAttempt, Warning},
    sink::{json::JsonLines, Sink},
    stats::Stats,
};

/// The lines a recording has lost since it last wrote one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Losing {
    /// Lines not written.
    pub lines: u64,
    /// Why the first was lost: an errno name (`ENOSPC`).
    pub cause: String,
    /// When the first was lost.
    pub since: SystemTime,
}

impl Losing {
    /// The warning that ends the gap, written at `ts`.
    pub fn lines_lost(&self, ts: SystemTime) -> Warning {
        Warning::RecordingLinesLost {
            ts,
            lines: self.lines,
            cause: self.cause.clone(),
            since: self.since,
        }
    }
}

/// Counts a lost line under its cause (the agent's `busyprobe_recording_lines_lost_total`).
pub type OnLost = Box<dyn FnMut(&str)>;

/// Lines kept back beyond this many bytes are written at once, not at the end of the turn.
const KEEP_BACK_BYTES: usize = 256 * 1024;

/// The recording sink: every event as a JSON line into its file, losses counted.
///
/// Lines are kept back until the end of the event loop's turn ([`Sink::flush`]) and written
/// in one `pwrite`: under a flood, one write for thousands of lines instead of one each
/// (a write per line was the agent's largest cost). Writing them is all or nothing: a batch
/// the disk cannot take is cut off whole, and each of its lines counted lost.
pub struct Recording {
    file: RotatingFile,
    only_failed: bool,
    /// Whole lines not written yet.
    kept: Vec<u8>,
    kept_lines: u64,
    losing: Option<Losing>,
    on_lost: Option<OnLost>,
}

impl Recording {
    /// Records into `file`.
    pub fn new(file: RotatingFile) -> Self {
        Self {
            file,
            only_failed: false,
            kept: Vec::new(),
            kept_lines: 0,
            losing: None,
            on_lost: None,
        }
    }

    /// Records only the failed attempts (warnings and stats all): `agent --only-failed`
    /// narrows the recording, not the metrics.
    pub fn failures_only(mut self, only: bool) -> Self {
        self.only_failed = only;
        self
    }

    /// Calls `on_lost` with the cause of each line lost.
    pub fn on_lost(mut self, on_lost: OnLost) -> Self {
        self.on_lost = Some(on_lost);
        self
    }

    /// What has been lost since the last line written; `None` while lines are written.
    pub fn losing(&self) -> Option<&Losing> {
        self.losing.as_ref()
    }

    /// Keeps one event's line back for the next [`Recording::write_kept`].
    fn keep(&mut self, encode: impl FnOnce(&mut JsonLines<&mut Vec<u8>>) -> io::Result<()>) {
        encode(&mut JsonLines::new(&mut self.kept)).expect("writing into memory cannot fail");
        self.kept_lines += 1;
        // A file rotates at a line boundary once it reaches its size: the lines that make it
        // reach it are written now, so that the next ones go to the next file.
        if self.kept.len() >= KEEP_BACK_BYTES || self.file.would_reach_rotation(self.kept.len()) {
            self.write_kept();
        }
    }

    /// Writes the lines kept back, after the `recording-lines-lost` warning when lines were
    /// lost (in one write: all or none).
    fn write_kept(&mut self) {
        if self.kept_lines == 0 {
            return;
        }
        let lines = std::mem::take(&mut self.kept_lines);
        let written = match &self.losing {
            None => self.file.write_line(&self.kept),
            Some(losing) => {
                let mut bytes = Vec::with_capacity(self.kept.len() + 256);
                JsonLines::new(&mut bytes)
                    .warning(&losing.lines_lost(SystemTime::now()))
                    .expect("writing into memory cannot fail");
                bytes.extend_from_slice(&self.kept);
                self.file.write_line(&bytes)
            }
        };
        self.kept.clear();
        match written {
            Ok(()) => {
                if let Some(lost) = self.losing.take() {
                    tracing::warn!(
                        "the recording {} is written again: {} lines were lost ({}); a \
                         recording-lines-lost warning in it marks the gap",
                        self.file.path().display(),
                        lost.lines,
                        lost.cause
                    );
                }
            }
            Err(e) => self.lost(&e, lines),
        }
    }

    /// `lines` were not written because of `error`.
    fn lost(&mut self, error: &io::Error, lines: u64) {
        let cause = cause_of(error);
        match &mut self.losing {
            Some(losing) => losing.lines += lines,
            None => {
                tracing::warn!(
                    "cannot write to the recording {}: {error}; counting the lines lost until it \
                     can be written again (said once)",
                    self.file.path().display()
                );
                self.losing = Some(Losing {
                    lines,
                    cause: cause.clone(),
                    since: SystemTime::now(),
                });
            }
        }
        if let Some(on_lost) = &mut self.on_lost {
            (0..lines).for_each(|_| on_lost(&cause));
        }
    }
}

/// A recording that ends while it loses lines says how many (nothing in the file can).
impl Drop for Recording {
    fn drop(&mut self) {
        self.write_kept();
        if let Some(losing) = &self.losing {
            tracing::warn!(
                "the recording {} ends with {} lines lost ({}) that it could not mark in it",
                self.file.path().display(),
                losing.lines,
                losing.cause
            );
        }
    }
}

/// The errno name of a write's error (`ENOSPC`); the error kind for one without an errno.
fn cause_of(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(errno) => errno_name(-i64::from(errno)).unwrap_or_else(|| errno.to_string()),
        None => format!("{:?}", error.kind()),
    }
}

/// Never fails: a line that cannot be written is counted ([`Recording::losing`]).
impl Sink for Recording {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        if !self.only_failed || attempt.call.failed() {
            self.keep(|lines| lines.umount(attempt));
        }
        Ok(())
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.keep(|lines| lines.warning(warning));
        Ok(())
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.keep(|lines| lines.stats(ts, stats, last));
        Ok(())
    }

    fn wake_at(&self) -> Option<Instant> {
        self.file.wake_at()
    }

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        self.file.tick(now);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_kept();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, fs, path::Path, rc::Rc};

    use super::*;
    use crate::event::sample_attempt;

    fn recording(dir: &Path) -> Recording {
        Recording::new(
            RotatingFile::create(RecordPlan {
                path: dir.join("rec.jsonl"),
                rotate_at: None,
                keep: 1,
                header: br#"{"v":1,"type":"header"}"#.to_vec(),
                sync: SyncEvery::Off,
            })
            .unwrap(),
        )
    }

    fn lines(dir: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(dir.join("rec.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn failed_attempts_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = recording(dir.path()).failures_only(true);
        rec.umount(&sample_attempt(b"/ok", None, 0, 0)).unwrap();
        rec.umount(&sample_attempt(b"/busy", None, -16, 0)).unwrap();
        rec.flush().unwrap();
        let targets: Vec<_> = lines(dir.path())
            .iter()
            .map(|l| l["target"].clone())
            .collect();
        assert_eq!(targets, [serde_json::Value::Null, "/busy".into()]);
    }

    /// Lines wait for the end of the turn, and are then written together.
    #[test]
    fn lines_are_kept_back_until_the_turn_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = recording(dir.path());
        for target in [&b"/a"[..], b"/b", b"/c"] {
            rec.umount(&sample_attempt(target, None, -16, 0)).unwrap();
        }
        assert_eq!(lines(dir.path()).len(), 1, "the header only");
        rec.flush().unwrap();
        let targets: Vec<_> = lines(dir.path())
            .iter()
            .map(|l| l["target"].clone())
            .collect();
        assert_eq!(
            targets,
            [
                serde_json::Value::Null,
                "/a".into(),
                "/b".into(),
                "/c".into()
            ]
        );
        rec.umount(&sample_attempt(b"/d", None, -16, 0)).unwrap();
        drop(rec);
        assert_eq!(lines(dir.path())[4]["target"], "/d", "written at the end");
    }

    /// A file that reaches its rotation size within a turn rotates at that line, as it does
    /// line by line: the turn's lines are not all kept for one file.
    #[test]
    fn a_rotation_due_within_a_turn_happens_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let plan = RecordPlan {
            path: dir.path().join("rec.jsonl"),
            rotate_at: Some(1200),
            keep: 10,
            header: br#"{"v":1,"type":"header"}"#.to_vec(),
            sync: SyncEvery::Off,
        };
        let mut rec = Recording::new(RotatingFile::create(plan).unwrap());
        for _ in 0..12 {
            rec.umount(&sample_attempt(b"/busy", None, -16, 0)).unwrap();
        }
        rec.flush().unwrap();
        drop(rec);
        let files = fs::read_dir(dir.path()).unwrap().count();
        let line = fs::read_to_string(dir.path().join("rec.jsonl.1")).unwrap();
        let per_file = line.lines().count() - 1;
        assert!(per_file >= 1, "{line}");
        assert!(
            files >= 12 / per_file,
            "{files} files of {per_file} lines each for 12 lines"
        );
        assert!(
            line.len() < 1200 + line.lines().nth(1).unwrap().len() + 1,
            "{}",
            line.len()
        );
    }

    /// Lines lost to a full disk are counted (and each handed to `on_lost`); the first line
    /// written again follows a `recording-lines-lost` warning with their number.
    #[test]
    fn lost_lines_are_counted_and_the_gap_is_marked_when_writing_works_again() {
        let dir = tempfile::tempdir().unwrap();
        let counted = Rc::new(RefCell::new(Vec::new()));
        let into = counted.clone();
        let mut rec = recording(dir.path()).on_lost(Box::new(move |cause| {
            into.borrow_mut().push(cause.to_owned())
        }));
        let path = dir.path().join("rec.jsonl");
        // Two lines lost to a full disk (the file's own handling of a failed write is
        // tested in `file`; the agent's root test fills a real tmpfs).
        rec.lost(&io::Error::from_raw_os_error(libc::ENOSPC), 1);
        rec.lost(&io::Error::from_raw_os_error(libc::ENOSPC), 1);
        let losing = rec.losing().unwrap().clone();
        assert_eq!((losing.lines, losing.cause.as_str()), (2, "ENOSPC"));
        assert_eq!(*counted.borrow(), ["ENOSPC", "ENOSPC"]);
        rec.umount(&sample_attempt(b"/busy", None, -16, 0)).unwrap();
        assert_eq!(rec.losing().map(|l| l.lines), Some(2), "kept back");
        rec.flush().unwrap();
        assert_eq!(rec.losing(), None, "written again");
        let written = lines(dir.path());
        assert_eq!(written.len(), 3, "{written:?}");
        assert_eq!(written[1]["type"], "warning");
        assert_eq!(written[1]["warning"], "recording-lines-lost");
        assert_eq!(written[1]["lines"], 2);
        assert_eq!(written[1]["cause"], "ENOSPC");
        assert_eq!(written[2]["target"], "/busy");
        assert!(fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }
}
