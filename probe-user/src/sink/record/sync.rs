//! When a recording is synced to disk (`--fsync INTERVAL`): at most once per interval, and
//! only when lines were written since the last sync. Pure timing, no I/O: the file asks
//! [`SyncSchedule::wrote`] after each line whether to sync now, and [`SyncSchedule::due`]
//! when lines are waiting (the pipeline wakes it then, so a quiet stream is synced too).

use std::time::{Duration, Instant};

/// How often a recording may be synced (`--fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncEvery {
    /// At most once per this interval (`0`: after every line).
    Interval(Duration),
    /// Never periodically (`off`): the kernel writes the lines back when it chooses; the
    /// file is still synced when it rotates and at exit.
    Off,
}

/// The sync timing of one recording.
#[derive(Clone, Debug)]
pub struct SyncSchedule {
    every: SyncEvery,
    /// The last sync (or the start).
    last: Instant,
    /// Lines were written since the last sync.
    pending: bool,
}

impl SyncSchedule {
    /// A schedule starting at `now` with nothing written.
    pub fn new(every: SyncEvery, now: Instant) -> Self {
        Self {
            every,
            last: now,
            pending: false,
        }
    }

    /// A line was written at `now`: whether to sync now (an interval has passed since the
    /// last sync). Otherwise it waits for [`SyncSchedule::due`].
    pub fn wrote(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.due().is_some_and(|due| now >= due)
    }

    /// When the lines written since the last sync are to be synced; `None` when nothing is
    /// waiting (or with [`SyncEvery::Off`]).
    pub fn due(&self) -> Option<Instant> {
        match self.every {
            SyncEvery::Interval(every) if self.pending => Some(self.last + every),
            _ => None,
        }
    }

    /// Whether lines were written since the last sync (what a final sync at exit needs).
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// The file was synced at `now`.
    pub fn synced(&mut self, now: Instant) {
        self.last = now;
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn syncs_at_most_once_per_interval_and_only_after_writes() {
        let t0 = Instant::now();
        let mut s = SyncSchedule::new(SyncEvery::Interval(SECOND), t0);
        assert_eq!(s.due(), None, "nothing written, nothing due");
        // A line 100 ms in: within the interval of the start, so it waits until t0 + 1 s.
        assert!(!s.wrote(t0 + SECOND / 10));
        assert_eq!(s.due(), Some(t0 + SECOND));
        assert!(!s.wrote(t0 + SECOND / 2), "still within the interval");
        assert_eq!(s.due(), Some(t0 + SECOND), "the first waiting line sets it");
        // A line after the interval syncs at once.
        assert!(s.wrote(t0 + SECOND + SECOND / 10));
        s.synced(t0 + SECOND + SECOND / 10);
        assert_eq!(s.due(), None);
        assert!(!s.is_pending());
        // The next line waits a whole interval from that sync, not from its own time.
        assert!(!s.wrote(t0 + SECOND * 2));
        assert_eq!(s.due(), Some(t0 + SECOND * 2 + SECOND / 10));
        assert!(s.is_pending());
    }

    #[test]
    fn zero_syncs_every_line_and_off_never() {
        let t0 = Instant::now();
        let mut every_line = SyncSchedule::new(SyncEvery::Interval(Duration::ZERO), t0);
        assert!(every_line.wrote(t0));
        every_line.synced(t0);
        assert!(every_line.wrote(t0), "even at the same instant");

        let mut off = SyncSchedule::new(SyncEvery::Off, t0);
        assert!(!off.wrote(t0 + SECOND * 3600));
        assert_eq!(off.due(), None, "never woken for it");
        assert!(off.is_pending(), "the exit sync still knows");
    }
}
