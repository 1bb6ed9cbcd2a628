//! A small memo of recent answers, each trusted for a while: a flood of identical failures
//! (a loop calling `umount2` on the same path thousands of times a second) costs one look at
//! `/proc` or the mount tables per key and period, not one per call. Bounded: it starts over
//! when full.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Answers by key, each kept for `ttl`, at most `max` of them.
#[derive(Debug)]
pub struct Memo<K, V> {
    ttl: Duration,
    max: usize,
    answers: HashMap<K, (Instant, V)>,
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    /// A memo that trusts an answer for `ttl` and keeps at most `max`.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
            answers: HashMap::new(),
        }
    }

    /// The answer for `key`: remembered if it is younger than the period at `now`, else
    /// `find`'s, remembered from `now`.
    pub fn get_or(&mut self, key: K, now: Instant, find: impl FnOnce() -> V) -> V {
        if let Some((at, v)) = self.answers.get(&key) {
            if now.saturating_duration_since(*at) < self.ttl {
                return v.clone();
            }
        }
        if self.answers.len() >= self.max {
            self.answers.clear();
        }
        let v = find();
        self.answers.insert(key, (now, v.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_reused_for_its_period_then_found_again() {
        let mut memo = Memo::new(Duration::from_secs(1), 10);
        let t0 = Instant::now();
        let mut asked = 0;
        let mut ask = |memo: &mut Memo<u32, u32>, at| {
            memo.get_or(7, at, || {
                asked += 1;
                asked
            })
        };
        assert_eq!(ask(&mut memo, t0), 1);
        assert_eq!(ask(&mut memo, t0 + Duration::from_millis(999)), 1, "reused");
        assert_eq!(
            ask(&mut memo, t0 + Duration::from_secs(1)),
            2,
            "asked again"
        );
    }

    #[test]
    fn a_full_memo_starts_over() {
        let mut memo = Memo::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        memo.get_or(1, now, || 1);
        memo.get_or(2, now, || 2);
        memo.get_or(3, now, || 3);
        assert_eq!(memo.answers.len(), 1);
        assert_eq!(memo.get_or(1, now, || 10), 10, "forgotten");
    }
}
