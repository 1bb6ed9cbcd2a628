//! The storm itself: failing `umount2` calls on held mounts, paced at a fixed rate per mount,
//! from a few threads (each owns some of the mounts and calls them in turn).

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    mount::{umount2, MntFlags},
};

/// Threads making the calls (at most; never more than the mounts).
const THREADS: usize = 4;

/// What the storm did.
#[derive(Debug, Default)]
pub struct Calls {
    /// Calls that failed with EBUSY, per mount (in the order of the mount points).
    pub ebusy: Vec<u64>,
    /// Calls with any other outcome (a mount nobody held, an error): each is a fault of the
    /// workload.
    pub other: u64,
}

impl Calls {
    /// EBUSY calls in all.
    pub fn total(&self) -> u64 {
        self.ebusy.iter().sum()
    }
}

/// A storm on `points`: each fails `per_sec` times a second for `duration`, or until `stop`.
pub struct Storm<'a> {
    /// The held mount points.
    pub points: &'a [PathBuf],
    /// Failing calls per second on each.
    pub per_sec: u32,
    /// How long it lasts.
    pub duration: Duration,
}

impl Storm<'_> {
    /// Runs the storm on this many threads and returns what the calls did; `stop` ends it
    /// early (an interruption).
    pub fn run(&self, stop: &AtomicBool) -> Calls {
        let ebusy: Vec<AtomicU64> = self.points.iter().map(|_| AtomicU64::new(0)).collect();
        let other = AtomicU64::new(0);
        let threads = THREADS.min(self.points.len()).max(1);
        let started = Instant::now();
        thread::scope(|scope| {
            for first in 0..threads {
                let mine: Vec<usize> = (first..self.points.len()).step_by(threads).collect();
                let (ebusy, other) = (&ebusy, &other);
                scope.spawn(move || self.one_thread(&mine, started, stop, ebusy, other));
            }
        });
        Calls {
            ebusy: ebusy.into_iter().map(AtomicU64::into_inner).collect(),
            other: other.into_inner(),
        }
    }

    /// Calls `mine` in turn, each due at its moment of the pace; counts the outcomes.
    fn one_thread(
        &self,
        mine: &[usize],
        started: Instant,
        stop: &AtomicBool,
        ebusy: &[AtomicU64],
        other: &AtomicU64,
    ) {
        let per_sec = u64::from(self.per_sec) * mine.len() as u64;
        for n in 0u64.. {
            let due = started + Duration::from_nanos(n * 1_000_000_000 / per_sec.max(1));
            if due >= started + self.duration || stop.load(Ordering::Relaxed) {
                return;
            }
            if let Some(early) = due.checked_duration_since(Instant::now()) {
                thread::sleep(early);
            }
            let k = mine[n as usize % mine.len()];
            match umount2(&self.points[k], MntFlags::empty()) {
                Err(Errno::EBUSY) => ebusy[k].fetch_add(1, Ordering::Relaxed),
                _ => other.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}
