//! Failures per second over the last minutes, for the header's sparkline: one counter per
//! second of the stream's time, in a ring (constant time per failure, constant memory).

use std::collections::VecDeque;

/// How many seconds are counted (the sparkline shows the newest that fit).
pub const SECONDS: usize = 300;

/// Failures counted by the second they happened in.
#[derive(Debug, Default)]
pub struct FailureRate {
    /// Counts, oldest first; the last is the second `newest`.
    buckets: VecDeque<u64>,
    /// The newest second counted (seconds since the epoch).
    newest: u64,
}

impl FailureRate {
    /// Moves the newest second to `ns` (ns since the epoch) if it is later: the seconds in
    /// between count no failure. Earlier times change nothing.
    pub fn advance_to(&mut self, ns: u64) {
        let second = ns / 1_000_000_000;
        if self.buckets.is_empty() {
            self.newest = second;
            self.buckets.push_back(0);
            return;
        }
        let gap = second.saturating_sub(self.newest);
        for _ in 0..gap.min(SECONDS as u64) {
            self.buckets.push_back(0);
        }
        while self.buckets.len() > SECONDS {
            self.buckets.pop_front();
        }
        self.newest = self.newest.max(second);
    }

    /// Counts a failure at `ns` (ns since the epoch); one older than the window is dropped.
    pub fn failure(&mut self, ns: u64) {
        self.advance_to(ns);
        let back = self.newest.saturating_sub(ns / 1_000_000_000) as usize;
        let len = self.buckets.len();
        if back < len {
            self.buckets[len - 1 - back] += 1;
        }
    }

    /// The last `n` seconds' counts, oldest first (fewer when fewer were seen).
    pub fn last(&self, n: usize) -> Vec<u64> {
        let skip = self.buckets.len().saturating_sub(n);
        self.buckets.iter().skip(skip).copied().collect()
    }

    /// Failures in the newest second.
    pub fn now(&self) -> u64 {
        self.buckets.back().copied().unwrap_or(0)
    }

    /// The most failures in one second of the window.
    pub fn peak(&self) -> u64 {
        self.buckets.iter().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn failures_are_counted_per_second_within_the_window() {
        let mut rate = FailureRate::default();
        rate.failure(100 * S);
        rate.failure(100 * S + 5);
        rate.failure(102 * S);
        assert_eq!(rate.last(10), [2, 0, 1]);
        rate.failure(101 * S + 7);
        assert_eq!(rate.last(2), [1, 1], "a late failure counts in its second");
        rate.advance_to(104 * S);
        assert_eq!((rate.now(), rate.peak()), (0, 2));
        rate.failure(10 * S);
        assert_eq!(
            rate.last(10),
            [2, 1, 1, 0, 0],
            "older than the window: dropped"
        );
        rate.advance_to(10_000 * S);
        assert_eq!(rate.last(SECONDS + 10).len(), SECONDS, "bounded");
        assert_eq!(rate.peak(), 0);
    }
}
