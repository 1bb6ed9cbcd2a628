//! Counts of what was seen and what was lost, reported as `stats` lines and at exit.

use probe_common::DropCause;

/// Totals since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events decoded from the ring buffer.
    pub events: u64,
    /// Losses counted by the kernel side, by [`DropCause`] index.
    pub drops: [u64; DropCause::COUNT as usize],
    /// Records that could not be decoded.
    pub decode_errors: u64,
}

impl Stats {
    /// `(cause name, count)` for every cause, in a fixed order.
    pub fn drops_by_cause(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropCause::ALL
            .iter()
            .map(|c| (c.as_str(), self.drops[*c as usize]))
    }

    /// Whole events lost (ring buffer or in-flight map full), as opposed to flagged paths.
    pub fn events_lost(&self) -> u64 {
        self.drops[DropCause::RingBufFull as usize]
            + self.drops[DropCause::InflightMapFull as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_cause_and_sums_lost_events() {
        let s = Stats {
            events: 3,
            drops: [2, 1, 5, 0, 4],
            decode_errors: 0,
        };
        let names: Vec<_> = s.drops_by_cause().collect();
        assert_eq!(
            names,
            [
                ("ringbuf_full", 2),
                ("inflight_map_full", 1),
                ("path_truncated", 5),
                ("path_unreadable", 0),
                ("release_path_cut", 4)
            ]
        );
        assert_eq!(s.events_lost(), 3);
    }
}
