//! The `top` view's incidents, kept as attempts arrive: grouped by the rule of
//! `sink/incidents/` (a few hash lookups per attempt), at most `--keep` of them (the oldest
//! go first), with the failures per second for the header. Time is the stream's: the
//! newest time its lines carry (or the wall clock, live), so a replay looks as it did live.

use std::{cmp::Reverse, collections::VecDeque};

use super::rate::FailureRate;
use crate::sink::incidents::{AttemptSketch, Filed, Incident, OpenByTarget, Peek};

/// An incident whose target saw no attempt for this long (and never worked) is taken as
/// given up: the target is still mounted after failing, a leak.
pub const GIVE_UP_AFTER_NS: u64 = 30_000_000_000;

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Its unmount still fails: the last attempt failed, less than [`GIVE_UP_AFTER_NS`] ago.
    Failing,
    /// An attempt worked at last.
    Unmounted,
    /// No attempt for [`GIVE_UP_AFTER_NS`] and none worked: still mounted.
    GaveUp,
}

impl State {
    /// The state in a word or two.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Failing => "failing",
            State::Unmounted => "unmounted",
            State::GaveUp => "gave up",
        }
    }
}

/// The order of the incident rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// The latest failure first (the default).
    LastFailure,
    /// The most failures first.
    Failures,
    /// By target.
    Target,
}

impl Sort {
    /// The next order (`s`).
    pub fn next(self) -> Self {
        match self {
            Sort::LastFailure => Sort::Failures,
            Sort::Failures => Sort::Target,
            Sort::Target => Sort::LastFailure,
        }
    }

    /// The order in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::LastFailure => "last failure",
            Sort::Failures => "failures",
            Sort::Target => "target",
        }
    }
}

/// The incidents kept, each numbered from 0 in the order it opened.
pub struct Incidents {
    /// Oldest first; the first is number `first`.
    kept: VecDeque<Incident>,
    /// The number of `kept[0]`.
    first: u64,
    /// The open incidents' numbers by target.
    open: OpenByTarget<u64>,
    /// Most incidents kept.
    capacity: usize,
    /// Failures per second.
    pub rate: FailureRate,
    /// The stream's newest time, ns since the epoch.
    now_ns: u64,
}

impl Incidents {
    /// None yet; at most `capacity` kept.
    pub fn new(capacity: usize) -> Self {
        Self {
            kept: VecDeque::new(),
            first: 0,
            open: OpenByTarget::default(),
            capacity: capacity.max(1),
            rate: FailureRate::default(),
            now_ns: 0,
        }
    }

    /// Files one attempt (constant time: one lookup, and at most one incident dropped). An
    /// incident opens only with the attempt's whole line (see [`AttemptSketch::whole`]).
    pub fn add(&mut self, a: &AttemptSketch) {
        let next = self.first + self.kept.len() as u64;
        let first = self.first;
        let mut opened = false;
        match self.open.file(a, || a.whole.map(|_| next)) {
            Filed::Outside => {}
            Filed::Opened => opened = true,
            Filed::Joined(number) if *number >= first => {
                self.kept[(*number - first) as usize].add(a);
            }
            // Its incident was dropped (more than `--keep` since): this one opens anew.
            Filed::Joined(number) => {
                if a.whole.is_some() {
                    *number = next;
                    opened = true;
                }
            }
            Filed::Ended(number) => {
                if let Some(inc) = self.kept_mut(number) {
                    inc.add(a);
                }
            }
            Filed::Late(ended_by) => {
                if let Some(i) = self.ended_by(ended_by) {
                    self.kept[i].add(a);
                }
            }
        }
        if let (true, Some(whole)) = (opened, a.whole) {
            self.kept.push_back(Incident::new(whole));
            if self.kept.len() > self.capacity {
                self.drop_oldest();
            }
        }
        if a.failed() {
            self.rate.failure(a.ts_ns);
        }
        self.saw_time(a.ts_ns);
    }

    /// Whether filing `a` takes anything from its whole line.
    pub fn needs_whole(&self, a: &AttemptSketch) -> bool {
        match self.open.peek(a) {
            Peek::Outside => false,
            Peek::Opens => true,
            Peek::Joins(number) => self.get(*number).is_none_or(|inc| inc.needs_whole(a)),
            Peek::Ends(number) => self.get(*number).is_some_and(|inc| inc.needs_whole(a)),
            Peek::Late(ended_by) => self
                .ended_by(ended_by)
                .is_some_and(|i| self.kept[i].needs_whole(a)),
        }
    }

    /// Incident `number`, while it is kept.
    fn kept_mut(&mut self, number: u64) -> Option<&mut Incident> {
        let i = number.checked_sub(self.first)?;
        self.kept.get_mut(i as usize)
    }

    /// Where in `kept` the incident that attempt `id` ended is: among the newest, found from
    /// the newest.
    fn ended_by(&self, id: u64) -> Option<usize> {
        self.kept
            .iter()
            .rposition(|inc| inc.resolved_by == Some(id))
    }

    fn drop_oldest(&mut self) {
        if let Some(gone) = self.kept.pop_front() {
            let number = self.first;
            self.open
                .forget(&gone.target_bytes(), |n| *n == number, gone.resolved_by);
            self.first += 1;
        }
    }

    /// The stream got as far as `ns` (ns since the epoch): a `stats` line, or the wall clock.
    pub fn saw_time(&mut self, ns: u64) {
        if ns > self.now_ns {
            self.now_ns = ns;
            self.rate.advance_to(ns);
        }
    }

    /// The stream's newest time (ns since the epoch; 0 before any).
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Where `inc` stands now.
    pub fn state(&self, inc: &Incident) -> State {
        if inc.resolved_by.is_some() {
            State::Unmounted
        } else if self.now_ns.saturating_sub(inc.last_attempt_ns) >= GIVE_UP_AFTER_NS {
            State::GaveUp
        } else {
            State::Failing
        }
    }

    /// Incidents kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Incident `number`, while it is kept.
    pub fn get(&self, number: u64) -> Option<&Incident> {
        self.kept.get(number.checked_sub(self.first)? as usize)
    }

    /// (failing, gave up: still mounted after failing) among the kept incidents.
    pub fn counts(&self) -> (usize, usize) {
        self.kept
            .iter()
            .fold((0, 0), |(f, g), inc| match self.state(inc) {
                State::Failing => (f + 1, g),
                State::GaveUp => (f, g + 1),
                State::Unmounted => (f, g),
            })
    }

    /// The incidents `keep` accepts, as `(number, incident)`, in `sort`'s order (the newest
    /// first among equals).
    pub fn sorted(&self, sort: Sort, keep: impl Fn(&Incident) -> bool) -> Vec<(u64, &Incident)> {
        let mut rows: Vec<(u64, &Incident)> = (self.first..)
            .zip(&self.kept)
            .filter(|(_, inc)| keep(inc))
            .collect();
        // Drawn every frame, over up to `--keep` rows: an unstable sort (no buffer), each
        // tie broken by the number, newest first.
        match sort {
            Sort::LastFailure => {
                rows.sort_unstable_by_key(|(n, i)| (Reverse(i.last_failure_ns), Reverse(*n)))
            }
            Sort::Failures => {
                rows.sort_unstable_by_key(|(n, i)| (Reverse(i.failures), Reverse(*n)))
            }
            Sort::Target => rows.sort_unstable_by(|(m, a), (n, b)| {
                a.target_bytes().cmp(&b.target_bytes()).then(n.cmp(m))
            }),
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::incidents::tests::attempt_at;

    #[test]
    fn incidents_are_kept_bounded_and_their_state_follows_the_stream() {
        let mut incidents = Incidents::new(2);
        incidents.add(&AttemptSketch::of(&attempt_at(1, "/a", 0, true, &[])));
        incidents.add(&AttemptSketch::of(&attempt_at(2, "/b", 10, true, &[])));
        incidents.add(&AttemptSketch::of(&attempt_at(3, "/b", 20, false, &[])));
        let a = incidents.get(0).unwrap();
        assert_eq!(incidents.state(a), State::Failing);
        assert_eq!(incidents.state(incidents.get(1).unwrap()), State::Unmounted);
        incidents.saw_time(incidents.now_ns() + GIVE_UP_AFTER_NS);
        assert_eq!(incidents.state(incidents.get(0).unwrap()), State::GaveUp);
        assert_eq!(incidents.counts(), (0, 1));
        // A third incident drops the oldest (/a, still open): /a failing again opens anew.
        incidents.add(&AttemptSketch::of(&attempt_at(4, "/c", 40_000, true, &[])));
        assert!(incidents.get(0).is_none());
        incidents.add(&AttemptSketch::of(&attempt_at(5, "/a", 40_010, true, &[])));
        assert_eq!(incidents.len(), 2);
        let targets: Vec<&str> = incidents
            .sorted(Sort::Target, |_| true)
            .iter()
            .map(|(_, i)| i.target.as_str())
            .collect();
        assert_eq!(targets, ["/a", "/c"]);
        assert_eq!(incidents.get(3).unwrap().failures, 1);
        assert_eq!(
            incidents.rate.last(1),
            [2],
            "two failures in the newest second"
        );
    }

    #[test]
    fn sorts_by_failures_last_failure_and_target() {
        let mut incidents = Incidents::new(10);
        for (id, target, at) in [(1, "/b", 0), (2, "/a", 1), (3, "/b", 2), (4, "/c", 3)] {
            incidents.add(&AttemptSketch::of(&attempt_at(id, target, at, true, &[])));
        }
        let order = |sort| -> Vec<String> {
            incidents
                .sorted(sort, |_| true)
                .iter()
                .map(|(_, i)| i.target.clone())
                .collect()
        };
        assert_eq!(order(Sort::LastFailure), ["/c", "/b", "/a"]);
        assert_eq!(order(Sort::Failures), ["/b", "/c", "/a"]);
        assert_eq!(order(Sort::Target), ["/a", "/b", "/c"]);
        assert_eq!(Sort::LastFailure.next().next().next(), Sort::LastFailure);
    }

    /// 100,000 attempts on 100,000 targets (none ever works) keep `--keep` incidents.
    #[test]
    fn a_flood_of_targets_keeps_memory_bounded() {
        let mut incidents = Incidents::new(1000);
        for id in 0..100_000u64 {
            incidents.add(&AttemptSketch::of(&attempt_at(
                id,
                &format!("/m/{id}"),
                id,
                true,
                &[],
            )));
        }
        assert_eq!(incidents.len(), 1000);
        assert_eq!(incidents.open.into_open().count(), 1000, "the open map too");
    }
}
