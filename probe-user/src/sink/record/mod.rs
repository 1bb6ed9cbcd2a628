//! The recording (`record -o FILE`, `agent -o FILE`): the event stream as JSON Lines in a
//! [`RotatingFile`], which syncs and rotates itself ([`file`], [`sync`]).
//!
//! A line that cannot be written (the disk is full, an I/O error, a quota) does not end the
//! stream: [`Recording`] counts it as lost (the file is cut back to its last whole line),
//! says so once on stderr, and tries again with each following line. The first line it
//! writes again is a `recording-lines-lost` warning with the count and the cause, written
//! together with the event that follows it (both or neither), so the file says where its
//! gap is. [`Recording::losing`] tells the agent's other outputs ([`super::fanout`]).

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

/// The recording sink: every event as a JSON line into its file, losses counted.
pub struct Recording {
    file: RotatingFile,
    only_failed: bool,
    losing: Option<Losing>,
    on_lost: Option<OnLost>,
}

impl Recording {
    /// Records into `file`.
    pub fn new(file: RotatingFile) -> Self {
        Self {
            file,
            only_failed: false,
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

    /// Writes one event's line, after the `recording-lines-lost` warning when lines were
    /// lost (in one write: both or neither).
    fn write(&mut self, encode: impl FnOnce(&mut JsonLines<&mut Vec<u8>>) -> io::Result<()>) {
        let mut bytes = Vec::new();
        let mut lines = JsonLines::new(&mut bytes);
        if let Some(losing) = &self.losing {
            let warning = losing.lines_lost(SystemTime::now());
            lines
                .warning(&warning)
                .expect("writing into memory cannot fail");
        }
        encode(&mut lines).expect("writing into memory cannot fail");
        match self.file.write_line(&bytes) {
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
            Err(e) => self.lost(&e),
        }
    }

    /// One line was not written because of `error`.
    fn lost(&mut self, error: &io::Error) {
        let cause = cause_of(error);
        match &mut self.losing {
            Some(losing) => losing.lines += 1,
            None => {
                tracing::warn!(
                    "cannot write to the recording {}: {error}; counting the lines lost until it \
                     can be written again (said once)",
                    self.file.path().display()
                );
                self.losing = Some(Losing {
                    lines: 1,
                    cause: cause.clone(),
                    since: SystemTime::now(),
                });
            }
        }
        if let Some(on_lost) = &mut self.on_lost {
            on_lost(&cause);
        }
    }
}

/// A recording that ends while it loses lines says how many (nothing in the file can).
impl Drop for Recording {
    fn drop(&mut self) {
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
            self.write(|lines| lines.umount(attempt));
        }
        Ok(())
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.write(|lines| lines.warning(warning));
        Ok(())
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.write(|lines| lines.stats(ts, stats, last));
        Ok(())
    }

    fn wake_at(&self) -> Option<Instant> {
        self.file.wake_at()
    }

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        self.file.tick(now);
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
        let targets: Vec<_> = lines(dir.path())
            .iter()
            .map(|l| l["target"].clone())
            .collect();
        assert_eq!(targets, [serde_json::Value::Null, "/busy".into()]);
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
        rec.lost(&io::Error::from_raw_os_error(libc::ENOSPC));
        rec.lost(&io::Error::from_raw_os_error(libc::ENOSPC));
        let losing = rec.losing().unwrap().clone();
        assert_eq!((losing.lines, losing.cause.as_str()), (2, "ENOSPC"));
        assert_eq!(*counted.borrow(), ["ENOSPC", "ENOSPC"]);
        rec.umount(&sample_attempt(b"/busy", None, -16, 0)).unwrap();
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
