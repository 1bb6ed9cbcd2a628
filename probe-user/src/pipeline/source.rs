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

/// How long a wake-up of the ring buffer waits before the records are read, when the last
/// read found few ([`GATHER_BELOW`]): the records of a steady trickle are then read (and
/// written, and sent to clients) in one pass rather than one wake-up each: at 1,000 events/s,
/// at most 200 wake-ups instead of 1,000. An event reaches the sinks at most this much later.
/// A flood is read at once: a wait would only let the ring buffer fill.
pub const GATHER: Duration = Duration::from_millis(5);
/// Below this many records in the last read, the next wake-up waits [`GATHER`].
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
        // Cleared before the drain that follows: a record committed after this wakes the
        // ring again, and one committed before it is read by that drain.
        self.ring.readable_mut().await?.clear_ready();
        let trickle = std::mem::take(&mut self.read_since_woken) < GATHER_BELOW;
        if trickle {
            // From here the records are waiting, should this wait be cancelled (the pipeline
            // polls it in a `select!`): the next call returns at once.
            self.left_some = true;
            tokio::time::sleep(GATHER).await;
        }
        Ok(())
    }
}
