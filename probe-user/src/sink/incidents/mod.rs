//! Incidents: the failed attempts on one target (its exact bytes) up to the attempt that
//! worked. The one place of that rule, for `busyprobe report` (`recording/report.rs`, over a
//! whole recording) and the `top` view (`sink/tui/incidents.rs`, live):
//! - a failure on a target with no open incident opens one;
//! - every later attempt on that target joins it;
//! - the first one that works ends it: a later failure on the same target (mounted anew)
//!   opens a new incident;
//! - a failure that arrives after the attempt that ended its incident, though it was made
//!   before it (a stream writes a failure once its holders are known, and a success at
//!   once), is *late*: it belongs to the incident that ended. A stream's incidents are
//!   therefore handed out ([`Grouping`]) only [`LATE_WINDOW_NS`] after they ended.
//!
//! Each incident is bounded (its timeline and its holders), and filing an attempt costs a few
//! hash lookups, so a stream of any length is grouped in constant time per attempt. Attempts
//! are filed as sketches ([`AttemptSketch`]): what the rule reads of them, and the whole line
//! only where an incident keeps something of it.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    time::UNIX_EPOCH,
};

use serde::Serialize;

use super::json::wire::{HolderWire, MountWire, UmountLine};

pub mod sketch;
pub use sketch::{AttemptSketch, DetachedSketch};

/// Most attempts an incident's timeline lists (the rest are counted).
pub const MAX_TIMELINE: usize = 100;
/// Most distinct holders an incident lists.
pub const MAX_HOLDERS: usize = 100;

/// An incident: failed attempts on one target, up to the one that worked.
#[derive(Clone, Debug, Serialize)]
pub struct Incident {
    /// The target (lossy when not UTF-8: `first` has its exact bytes).
    pub target: String,
    /// The first failed attempt (the whole line).
    pub first: UmountLine,
    /// Every attempt: `(id, ts, errno or "ok")`, at most [`MAX_TIMELINE`].
    pub timeline: Vec<(u64, String, String)>,
    /// Attempts not listed in `timeline`.
    pub more_attempts: u64,
    /// Distinct holders seen over the failed attempts (by kind, pid and exact path), with
    /// how many attempts named each.
    pub holders: Vec<(HolderWire, u64)>,
    /// The attempt that worked, if any.
    pub resolved_by: Option<u64>,
    /// Failed attempts (all of them, listed in `timeline` or not).
    #[serde(skip)]
    pub failures: u64,
    /// When the first failure entered the kernel, in ns since the epoch (0 when its `ts`
    /// could not be read).
    #[serde(skip)]
    pub first_ns: u64,
    /// When the last failure entered the kernel (ns since the epoch).
    #[serde(skip)]
    pub last_failure_ns: u64,
    /// When the last attempt, failed or not, entered the kernel (ns since the epoch).
    #[serde(skip)]
    pub last_attempt_ns: u64,
    /// The mount the first attempt that named one resolved to (EBUSYs with holders).
    #[serde(skip)]
    pub mount: Option<MountWire>,
}

/// An attempt's `ts` in ns since the epoch; 0 when it cannot be read.
pub fn ts_ns(ts: &str) -> u64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Incident {
    /// The incident `first` (a failure) opens.
    pub fn new(first: &UmountLine) -> Self {
        let sketch = AttemptSketch::of(first);
        let ns = sketch.ts_ns;
        let mut me = Self {
            target: first.target.clone(),
            first: first.clone(),
            timeline: Vec::new(),
            more_attempts: 0,
            holders: Vec::new(),
            resolved_by: None,
            failures: 0,
            first_ns: ns,
            last_failure_ns: ns,
            last_attempt_ns: ns,
            mount: None,
        };
        me.add(&sketch);
        me
    }

    /// Whether filing `a` takes anything from its whole line: a holder not listed yet (while
    /// there is room for one), or its mount when the incident knows none yet.
    pub fn needs_whole(&self, a: &AttemptSketch) -> bool {
        (self.mount.is_none() && a.has_mount)
            || (self.holders.len() < MAX_HOLDERS
                && a.holders
                    .iter()
                    .any(|k| !self.holders.iter().any(|(seen, _)| k.is(seen))))
    }

    /// Files one more attempt on the target (what [`Incident::needs_whole`] asks of its
    /// whole line is left out when `a` lacks it).
    pub fn add(&mut self, a: &AttemptSketch) {
        if self.timeline.len() < MAX_TIMELINE {
            self.timeline
                .push((a.id, a.ts.clone().into_owned(), a.result().to_owned()));
        } else {
            self.more_attempts += 1;
        }
        let whole_holders = a.whole.map(UmountLine::holders).unwrap_or_default();
        for (k, whole) in a
            .holders
            .iter()
            .enumerate()
            .map(|(i, k)| (k, whole_holders.get(i)))
        {
            match self.holders.iter().position(|(seen, _)| k.is(seen)) {
                Some(i) => self.holders[i].1 += 1,
                None if self.holders.len() < MAX_HOLDERS => {
                    self.holders.extend(whole.map(|h| (h.clone(), 1)));
                }
                None => {}
            }
        }
        if self.mount.is_none() {
            if let Some(whole) = a.whole {
                self.mount.clone_from(&whole.mount);
            }
        }
        let ns = a.ts_ns;
        self.last_attempt_ns = self.last_attempt_ns.max(ns);
        if a.failed() {
            self.failures += 1;
            self.last_failure_ns = self.last_failure_ns.max(ns);
        } else {
            self.resolved_by = Some(a.id);
        }
    }

    /// Whether attempt `id` is part of this incident.
    pub fn contains(&self, id: u64) -> bool {
        self.timeline.iter().any(|(i, _, _)| *i == id)
    }

    /// The target's exact bytes.
    pub fn target_bytes(&self) -> Cow<'_, [u8]> {
        self.first.target_bytes()
    }

    /// The main holder: the one most attempts named, blamed holders before information-only
    /// ones (the first seen on a tie), with that count.
    pub fn main_holder(&self) -> Option<&(HolderWire, u64)> {
        // `max_by_key` keeps the last of equals: walk backwards to keep the first.
        self.holders
            .iter()
            .rev()
            .max_by_key(|(h, n)| (h.blamed, *n))
    }
}

/// The open incidents by target: where each attempt goes by the rule above. `H` is what the
/// caller keeps of an open incident: the incident itself (`report`), or where it keeps it.
#[derive(Debug)]
pub struct OpenByTarget<H> {
    open: ByTarget<H>,
    /// The id and time of the attempt that ended the last incident of each target (at most
    /// [`MAX_ENDED`] targets: beyond, a late failure opens a new incident).
    ended_by: ByTarget<(u64, u64)>,
}

/// A map by target (each attempt looks its target up a few times: a fast hash; the targets
/// are the recording's own, not chosen to collide).
type ByTarget<V> = HashMap<Vec<u8>, V, foldhash::fast::RandomState>;

/// Most targets whose last incident's end is remembered, to tell late failures.
pub const MAX_ENDED: usize = 10_000;

impl<H> Default for OpenByTarget<H> {
    fn default() -> Self {
        Self {
            open: ByTarget::default(),
            ended_by: ByTarget::default(),
        }
    }
}

/// Where an attempt goes, before it is filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// It worked and no incident is open on its target.
    Outside,
    /// It failed and no incident is open on its target: it opens one.
    Opens,
    /// It failed on the target of an open incident.
    Joins,
    /// It worked: it ends the open incident.
    Ends,
    /// It failed before the attempt (this id) that ended its target's last incident.
    Late(u64),
}

/// What an attempt will do to the incidents ([`OpenByTarget::peek`]).
#[derive(Debug)]
pub enum Peek<'a, H> {
    /// Nothing.
    Outside,
    /// It opens an incident.
    Opens,
    /// It joins this open incident.
    Joins(&'a H),
    /// It ends this open incident.
    Ends(&'a H),
    /// It is late for the incident ended by attempt this id.
    Late(u64),
}

/// What an attempt did to the incidents.
#[derive(Debug)]
pub enum Filed<'a, H> {
    /// Nothing: it worked and no incident was open on its target.
    Outside,
    /// It failed and opened an incident (the caller's `H`, just made, is kept for it).
    Opened,
    /// It failed again on the target of an open incident.
    Joined(&'a mut H),
    /// It worked and ended the open incident, which is no longer open.
    Ended(H),
    /// It failed before the attempt (this id) that ended its target's last incident, but
    /// arrived after it: it belongs to that incident.
    Late(u64),
}

impl<H> OpenByTarget<H> {
    /// Where `attempt` goes: the rule of this module, in one place.
    fn place(&self, attempt: &AttemptSketch) -> Place {
        let target = attempt.target.as_ref();
        if !attempt.failed() {
            return if self.open.contains_key(target) {
                Place::Ends
            } else {
                Place::Outside
            };
        }
        // Made before the end (by id and by time: ids start again with each run of a
        // recorder, and a replay may read several runs).
        if let Some(&(ended_by, at)) = self.ended_by.get(target) {
            if attempt.id < ended_by && attempt.ts_ns <= at {
                return Place::Late(ended_by);
            }
        }
        if self.open.contains_key(target) {
            Place::Joins
        } else {
            Place::Opens
        }
    }

    /// What filing `attempt` would do, without filing it.
    pub fn peek(&self, attempt: &AttemptSketch) -> Peek<'_, H> {
        let open = || &self.open[attempt.target.as_ref()];
        match self.place(attempt) {
            Place::Outside => Peek::Outside,
            Place::Opens => Peek::Opens,
            Place::Joins => Peek::Joins(open()),
            Place::Ends => Peek::Ends(open()),
            Place::Late(id) => Peek::Late(id),
        }
    }

    /// Files `attempt`: `open` makes the `H` of an incident it opens (none: the incident
    /// cannot be opened, and the attempt is left out).
    pub fn file(
        &mut self,
        attempt: &AttemptSketch,
        open: impl FnOnce() -> Option<H>,
    ) -> Filed<'_, H> {
        let target = attempt.target.as_ref();
        match self.place(attempt) {
            Place::Outside => Filed::Outside,
            Place::Ends => {
                let h = self
                    .open
                    .remove(target)
                    .expect("placed by its open incident");
                let end = (attempt.id, attempt.ts_ns);
                if let Some(known) = self.ended_by.get_mut(target) {
                    *known = end;
                } else if self.ended_by.len() < MAX_ENDED {
                    self.ended_by.insert(target.to_vec(), end);
                }
                Filed::Ended(h)
            }
            Place::Late(id) => Filed::Late(id),
            Place::Joins => Filed::Joined(self.open.get_mut(target).expect("placed by it")),
            Place::Opens => match open() {
                Some(h) => {
                    self.open.insert(target.to_vec(), h);
                    Filed::Opened
                }
                None => Filed::Outside,
            },
        }
    }

    /// Opens an incident on `attempt`'s target kept as `h`, whatever was open there (the
    /// report's way with a late failure).
    pub fn open_anew(&mut self, attempt: &AttemptSketch, h: H) {
        self.open.insert(attempt.target.to_vec(), h);
    }

    /// Forgets the incident on `target`: the open one if `is_it` says it is the one kept
    /// there, and the end of the last one if attempt `ended_by` ended it.
    pub fn forget(&mut self, target: &[u8], is_it: impl FnOnce(&H) -> bool, ended_by: Option<u64>) {
        if self.open.get(target).is_some_and(is_it) {
            self.open.remove(target);
        }
        if ended_by.is_some() && self.ended_by.get(target).map(|(id, _)| *id) == ended_by {
            self.ended_by.remove(target);
        }
    }

    /// The incidents still open, in no order.
    pub fn into_open(self) -> impl Iterator<Item = H> {
        self.open.into_values()
    }
}

/// How long (of the stream's time) after the attempt that ended an incident a late failure
/// of it is still looked for: an EBUSY waits for its attribution pass, seconds at most.
pub const LATE_WINDOW_NS: u64 = 10_000_000_000;

/// The incidents of a stream read once (`busyprobe report`), each handed out when it is
/// over: [`LATE_WINDOW_NS`] of the stream's time after it ended (so that a late failure
/// joins it), or at the end of the stream. Memory: the open incidents, and those ended
/// within the window.
#[derive(Default)]
pub struct Grouping {
    open: OpenByTarget<Incident>,
    /// Ended incidents not yet handed out, in the order they ended.
    ended: VecDeque<Incident>,
}

impl Grouping {
    /// Files `attempt`; hands `over` every incident over by its time, in the order they ended.
    pub fn add(&mut self, attempt: &AttemptSketch, mut over: impl FnMut(Incident)) {
        let new = || attempt.whole.map(Incident::new);
        match self.open.file(attempt, new) {
            Filed::Joined(inc) => inc.add(attempt),
            Filed::Ended(mut inc) => {
                inc.add(attempt);
                self.ended.push_back(inc);
            }
            Filed::Late(id) => match self.ended_by(id) {
                Some(inc) => inc.add(attempt),
                // Later than the window: an incident of its own.
                None => {
                    if let Some(inc) = new() {
                        self.open.open_anew(attempt, inc);
                    }
                }
            },
            Filed::Opened | Filed::Outside => {}
        }
        let now = attempt.ts_ns;
        while let Some(inc) = self
            .ended
            .pop_front_if(|inc| inc.last_attempt_ns.saturating_add(LATE_WINDOW_NS) < now)
        {
            over(inc);
        }
    }

    /// The ended incident not handed out yet that attempt `id` ended.
    fn ended_by(&mut self, id: u64) -> Option<&mut Incident> {
        self.ended
            .iter_mut()
            .rev()
            .find(|inc| inc.resolved_by == Some(id))
    }

    /// The stream has ended: hands `over` the ended incidents not handed out yet, in the
    /// order they ended, then the open ones by their first attempt.
    pub fn finish(self, over: impl FnMut(Incident)) {
        let mut open: Vec<Incident> = self.open.into_open().collect();
        open.sort_by_key(|i| i.first.id);
        self.ended.into_iter().chain(open).for_each(over);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An attempt `id` on `target` at 10:00:00 + `at_ms`, failed with EBUSY or not, held by
    /// `holders` (`(comm, pid)`, each holding `target/f` by an fd).
    pub(crate) fn attempt_at(
        id: u64,
        target: &str,
        at_ms: u64,
        failed: bool,
        holders: &[(&str, u32)],
    ) -> UmountLine {
        let ret = if failed { -16 } else { 0 };
        let mut a =
            crate::event::sample_attempt(target.as_bytes(), Some(target.as_bytes()), ret, 0);
        a.id = id;
        a.ts = UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_000 + at_ms);
        if !holders.is_empty() {
            let holders = holders
                .iter()
                .map(|(comm, pid)| {
                    let mut h = crate::model::sample_process_holder(
                        crate::model::HolderKind::Fd,
                        1,
                        *pid,
                        comm.as_bytes(),
                        None,
                    );
                    h.path = Some(format!("{target}/f").into_bytes());
                    h
                })
                .collect();
            a.attribution = Some(Ok(crate::model::sample_attribution(target, holders)));
        }
        UmountLine::new(&a)
    }

    /// Files every attempt; returns the incidents, ended ones first in the order they ended,
    /// then the open ones by their first attempt.
    fn group(attempts: &[UmountLine]) -> Vec<Incident> {
        let mut grouping = Grouping::default();
        let mut over = Vec::new();
        for a in attempts {
            grouping.add(&AttemptSketch::of(a), |inc| over.push(inc));
        }
        grouping.finish(|inc| over.push(inc));
        over
    }

    /// An incident is handed out once no late failure can come: the window after its end.
    #[test]
    fn an_ended_incident_is_handed_out_after_the_window() {
        let mut grouping = Grouping::default();
        let mut over = Vec::new();
        grouping.add(
            &AttemptSketch::of(&attempt_at(1, "/m", 0, true, &[])),
            |i| over.push(i.first.id),
        );
        grouping.add(
            &AttemptSketch::of(&attempt_at(2, "/m", 10, false, &[])),
            |i| over.push(i.first.id),
        );
        grouping.add(
            &AttemptSketch::of(&attempt_at(3, "/n", 5_000, true, &[])),
            |i| over.push(i.first.id),
        );
        assert!(over.is_empty(), "within the window");
        grouping.add(
            &AttemptSketch::of(&attempt_at(4, "/n", 10_011, true, &[])),
            |i| over.push(i.first.id),
        );
        assert_eq!(over, [1]);
        grouping.finish(|i| over.push(i.first.id));
        assert_eq!(over, [1, 3]);
    }

    #[test]
    fn the_retries_of_one_target_are_one_incident() {
        let attempts: Vec<UmountLine> = (1..=50)
            .map(|id| attempt_at(id, "/m", id * 50, true, &[("scanner", 9)]))
            .chain([attempt_at(51, "/m", 2600, false, &[])])
            .collect();
        let incidents = group(&attempts);
        assert_eq!(incidents.len(), 1);
        let inc = &incidents[0];
        assert_eq!((inc.failures, inc.resolved_by), (50, Some(51)));
        assert_eq!(inc.holders.len(), 1, "one holder, named 50 times");
        assert_eq!(inc.main_holder().unwrap().1, 50);
        assert_eq!(inc.last_attempt_ns - inc.first_ns, 2_550_000_000);
        assert_eq!(inc.last_failure_ns - inc.first_ns, 2_450_000_000);
    }

    #[test]
    fn two_targets_interleaved_are_two_incidents() {
        let attempts = [
            attempt_at(1, "/a", 0, true, &[("x", 1)]),
            attempt_at(2, "/b", 1, true, &[("y", 2)]),
            attempt_at(3, "/a", 2, true, &[("x", 1)]),
            attempt_at(4, "/b", 3, false, &[]),
            attempt_at(5, "/a", 4, true, &[("z", 3)]),
        ];
        let incidents = group(&attempts);
        let got: Vec<(&str, u64, Option<u64>)> = incidents
            .iter()
            .map(|i| (i.target.as_str(), i.failures, i.resolved_by))
            .collect();
        assert_eq!(got, [("/b", 1, Some(4)), ("/a", 3, None)]);
        assert_eq!(incidents[1].holders.len(), 2);
        assert_eq!(incidents[1].main_holder().unwrap().0.pid, Some(1));
    }

    #[test]
    fn a_target_failing_again_after_it_was_unmounted_is_a_new_incident() {
        let attempts = [
            attempt_at(1, "/m", 0, true, &[]),
            attempt_at(2, "/m", 1, false, &[]),
            attempt_at(3, "/m", 2, false, &[]),
            attempt_at(4, "/m", 3, true, &[]),
        ];
        let incidents = group(&attempts);
        let got: Vec<(u64, u64, Option<u64>)> = incidents
            .iter()
            .map(|i| (i.first.id, i.failures, i.resolved_by))
            .collect();
        assert_eq!(got, [(1, 1, Some(2)), (4, 1, None)]);
    }

    /// A stream writes a failure once its holders are known, and a success at once: the
    /// failure before the success arrives after it, and still belongs to its incident.
    #[test]
    fn a_failure_arriving_after_the_success_that_followed_it_is_late() {
        let attempts = [
            attempt_at(1, "/m", 0, true, &[("x", 1)]),
            attempt_at(3, "/m", 100, false, &[]),
            attempt_at(2, "/m", 50, true, &[("scanner", 2)]),
            attempt_at(4, "/m", 200, true, &[]),
        ];
        let incidents = group(&attempts);
        let got: Vec<(u64, u64, Option<u64>, usize)> = incidents
            .iter()
            .map(|i| (i.first.id, i.failures, i.resolved_by, i.holders.len()))
            .collect();
        assert_eq!(got, [(1, 2, Some(3), 2), (4, 1, None, 0)]);
    }

    #[test]
    fn forgetting_checks_which_incident_is_open() {
        let mut open: OpenByTarget<u64> = OpenByTarget::default();
        let line = attempt_at(1, "/m", 0, true, &[]);
        let a = AttemptSketch::of(&line);
        assert!(matches!(open.file(&a, || Some(7)), Filed::Opened));
        open.forget(b"/m", |h| *h == 6, None);
        assert!(matches!(open.file(&a, || Some(8)), Filed::Joined(7)));
        open.forget(b"/m", |h| *h == 7, None);
        assert!(matches!(open.file(&a, || Some(8)), Filed::Opened));
        assert!(matches!(open.file(&a, || Some(9)), Filed::Joined(8)));
    }
}
