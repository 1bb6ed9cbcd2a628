//! Where the pipeline's raw records come from: the probes' ring buffer in production
//! ([`RingSource`]), byte records in tests.

use std::{future::Future, io, time::Duration};

use aya::maps::{MapData, RingBuf};
use probe_common::EventKind;
use tokio::io::unix::AsyncFd;

/// A source of raw kernel records, read in order.
pub trait RecordSource {
    /// Calls `each` with up to `max` waiting records, oldest first; true when none is left
    /// (then [`Self::ready`] waits for more).
    fn drain(&mut self, max: usize, each: &mut dyn FnMut(&[u8])) -> bool;

    /// Resolves when records may be waiting: at once if the last [`Self::drain`] left some.
    /// Cancel-safe (the pipeline polls it in a `select!`).
    fn ready(&mut self) -> impl Future<Output = io::Result<()>>;
}

/// How long the source rests after a wake-up that read a few records ([`GATHER_BELOW`] or
/// fewer, but some) before it waits for the ring buffer again: the records of a steady
/// trickle are then read (and written, and sent to clients) a few at a time rather than one
/// wake-up each: at 1,000 events/s, at most 50 wake-ups instead of 1,000 (the agent's CPU at
/// that rate: 1.9% of a core with 5 ms, 1.25% with 20 ms, `cargo xtask bench agent`, two
/// interleaved 60 s runs each). A record that comes after a quiet moment is read at once (an
/// EBUSY's attribution starts without delay); one that comes during a rest, at most this much
/// later. A flood is never rested on: a rest would only let the ring buffer fill.
pub const GATHER: Duration = Duration::from_millis(20);
/// The rest after a wake-up that read a release: releases come in floods during a busy window
/// (every close of a file on a tracked mount, 848 bytes each), and 20 ms of such a flood is
/// half the default ring buffer (`bench overhead`'s files workload on a contended tmpfs lost
/// 27,937 releases with 20 ms, none with 5 ms).
pub const GATHER_RELEASES: Duration = Duration::from_millis(5);
/// At most this many records read since the last wake-up make the next wait rest first.
pub const GATHER_BELOW: usize = 32;

/// How long to rest after a wake-up that read `read` records, `releases` of them releases.
fn rest_after(read: usize, releases: usize) -> Option<Duration> {
    match (read, releases) {
        (0, _) => None,
        (r, _) if r > GATHER_BELOW => None,
        (_, 0) => Some(GATHER),
        _ => Some(GATHER_RELEASES),
    }
}

/// The probes' `EVENTS` ring buffer, polled for readiness.
pub struct RingSource {
    ring: AsyncFd<RingBuf<MapData>>,
    left_some: bool,
    /// Records read since the last wake-up.
    read_since_woken: usize,
    /// Releases among them.
    releases_since_woken: usize,
}

impl RingSource {
    /// Registers the ring buffer with the runtime (it must run on one).
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, while registered.
        let ring = unsafe { AsyncFd::register(ring) }?;
        Ok(Self {
            ring,
            left_some: false,
            read_since_woken: 0,
            releases_since_woken: 0,
        })
    }
}

impl RecordSource for RingSource {
    fn drain(&mut self, max: usize, each: &mut dyn FnMut(&[u8])) -> bool {
        let ring = self.ring.get_mut();
        for _ in 0..max {
            let Some(record) = ring.next() else {
                self.left_some = false;
                return true;
            };
            if is_release(&record) {
                self.releases_since_woken += 1;
            }
            each(&record);
            self.read_since_woken += 1;
        }
        self.left_some = true;
        false
    }

    async fn ready(&mut self) -> io::Result<()> {
        if self.left_some {
            return Ok(());
        }
        // Taken first: should this wait be cancelled during the rest (the pipeline polls it
        // in a `select!`), the next one does not rest again.
        let read = std::mem::take(&mut self.read_since_woken);
        let releases = std::mem::take(&mut self.releases_since_woken);
        if let Some(rest) = rest_after(read, releases) {
            tokio::time::sleep(rest).await;
        }
        // Cleared before the drain that follows: a record committed after this wakes the
        // ring again, and one committed before it (during the rest too) is read by that drain.
        self.ring.readable_mut().await?.clear_ready();
        Ok(())
    }
}

/// Whether a raw record is a release (its kind tag; the decoder checks the rest).
fn is_release(record: &[u8]) -> bool {
    record.get(..4) == Some(&(EventKind::Release as u32).to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_rests_long_a_flood_never_and_releases_briefly() {
        assert_eq!(rest_after(0, 0), None, "nothing read: wait at once");
        assert_eq!(rest_after(5, 0), Some(GATHER));
        assert_eq!(rest_after(GATHER_BELOW, 0), Some(GATHER));
        assert_eq!(rest_after(GATHER_BELOW + 1, 0), None, "a flood");
        assert_eq!(rest_after(5, 1), Some(GATHER_RELEASES));
        assert_eq!(rest_after(500, 500), None);
    }

    #[test]
    fn a_release_is_told_by_its_kind_tag() {
        let release = (EventKind::Release as u32).to_ne_bytes();
        let umount = (EventKind::Umount as u32).to_ne_bytes();
        assert!(is_release(&[&release[..], &[0; 20]].concat()));
        assert!(!is_release(&[&umount[..], &[0; 20]].concat()));
        assert!(!is_release(&release[..2]), "too short to tell");
    }
}
