//! A one-line status on stderr while recording to a file (`busyprobe record`), refreshed at
//! every `stats` tick when stderr is a terminal: what was recorded and what was lost.

use std::{
    io::{self, Write as _},
    time::{Instant, SystemTime},
};

use crate::{
    event::{UmountAttempt, Warning},
    sink::Sink,
    stats::Stats,
};

/// Wraps a sink, counting attempts and failures on their way through.
pub struct WithStatus<S: Sink> {
    inner: S,
    attempts: u64,
    failures: u64,
    show: bool,
}

impl<S: Sink> WithStatus<S> {
    /// `show`: whether to print the status (stderr is a terminal).
    pub fn new(inner: S, show: bool) -> Self {
        Self {
            inner,
            attempts: 0,
            failures: 0,
            show,
        }
    }
}

/// The status text: attempts recorded, failures among them, events lost.
pub fn status_line(attempts: u64, failures: u64, stats: &Stats) -> String {
    let lost = stats.events_lost();
    let lost = if lost == 0 {
        "none lost".to_string()
    } else {
        format!("{lost} LOST")
    };
    format!("recording: {attempts} unmount attempts, {failures} failed; {lost}")
}

impl<S: Sink> Sink for WithStatus<S> {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.attempts += 1;
        self.failures += u64::from(attempt.call.failed());
        self.inner.umount(attempt)
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.inner.warning(warning)
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.inner.stats(ts, stats, last)?;
        if self.show {
            let end = if last { "\n" } else { "" };
            // The status is a courtesy: a failure to show it never stops the recording.
            let _ = write!(
                io::stderr(),
                "\r\x1b[2K{}{end}",
                status_line(self.attempts, self.failures, stats)
            );
        }
        Ok(())
    }

    fn wake_at(&self) -> Option<Instant> {
        self.inner.wake_at()
    }

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        self.inner.tick(now)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_was_recorded_and_lost() {
        let quiet = Stats::default();
        assert_eq!(
            status_line(12, 3, &quiet),
            "recording: 12 unmount attempts, 3 failed; none lost"
        );
        let lossy = Stats {
            events: 5,
            drops: [2, 1, 0, 0, 0],
            decode_errors: 0,
        };
        assert_eq!(
            status_line(5, 0, &lossy),
            "recording: 5 unmount attempts, 0 failed; 3 LOST"
        );
    }

    #[test]
    fn counts_what_passes_through() {
        let mut buf = Vec::new();
        {
            let mut sink = WithStatus::new(crate::sink::json::JsonLines::new(&mut buf), false);
            sink.umount(&crate::event::sample_attempt(b"/m", Some(b"/m"), -16, 0))
                .unwrap();
            sink.umount(&crate::event::sample_attempt(b"/m", Some(b"/m"), 0, 0))
                .unwrap();
            assert_eq!((sink.attempts, sink.failures), (2, 1));
        }
        assert_eq!(
            buf.iter().filter(|&&b| b == b'\n').count(),
            2,
            "both lines written"
        );
    }
}
