//! Where the pipeline's raw records come from: the probes' ring buffer in production
//! ([`RingSource`]), byte records in tests.

use std::{future::Future, io, time::Duration};

use aya::maps::{MapData, RingBuf};
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
/// interleaved 60 s runs each). A record that
/// comes after a quiet moment is read at once (an EBUSY's attribution starts without delay);
/// one that comes during a rest, at most this much later. A flood is never rested on: a
/// rest would only let the ring buffer fill.
pub const GATHER: Duration = Duration::from_millis(20);
/// At most this many records read since the last wake-up make the next wait rest first.
pub const GATHER_BELOW: usize = 32;

/// The probes' `EVENTS` ring buffer, polled for readiness.
pub struct RingSource {
    ring: AsyncFd<RingBuf<MapData>>,
    left_some: bool,
    /// Records read since the last wake-up.
    read_since_woken: usize,
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
        if (1..=GATHER_BELOW).contains(&read) {
            tokio::time::sleep(GATHER).await;
        }
        // Cleared before the drain that follows: a record committed after this wakes the
        // ring again, and one committed before it (during the rest too) is read by that drain.
        self.ring.readable_mut().await?.clear_ready();
        Ok(())
    }
}
