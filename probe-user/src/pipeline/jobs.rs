//! The attribution side of the pipeline: EBUSYs are attributed, and successful unmounts
//! checked for a filesystem that lives on, in passes of an [`Attributor`] on a blocking
//! thread, so the event stream never waits for a scan. The pipeline completes what comes back.
//!
//! One pass runs at a time and answers every EBUSY that was waiting when it started, with one
//! scan for all their mounts (a storm of failures costs a scan per pass, not per failure), then
//! checks every successful unmount that was waiting. An EBUSY decoded while a pass runs waits
//! for the next one: a scan that started before a call entered could miss a holder that opened
//! its file just before the call, so it is never reused for it.

use std::{io, sync::Arc};

use tokio::task::{JoinError, JoinSet};

use crate::{
    event::{UmountAttempt, Warning},
    sink::Sink,
};

/// Attempts of each kind that may wait for the next pass. Beyond this an EBUSY is written at
/// once with its holders unknown (and why), and a successful unmount goes unchecked (said in
/// the log), so that memory stays bounded however far the scans fall behind.
pub const MAX_WAITING: usize = 4096;

/// What a pass gives back to the pipeline.
#[derive(Default)]
pub struct Finished {
    /// Its EBUSY attempts, in the order they came, each with its holders (the pipeline adds
    /// the transient ones).
    pub attempts: Vec<UmountAttempt>,
    /// Warnings about successful unmounts whose filesystem lives on.
    pub warnings: Vec<Warning>,
}

/// Finds who holds a mount: the attribution engine in production ([`super::live::Live`]), a
/// stand-in in tests. Every method but [`Self::learn_namespace`] may block (it runs on a
/// blocking thread).
pub trait Attributor: Send + Sync + 'static {
    /// Called on the event loop as an EBUSY is decoded, before its pass starts: a cheap chance
    /// to remember what may be gone by the time the pass runs (the caller's mount table).
    fn learn_namespace(&self, attempt: &UmountAttempt);
    /// One pass: the EBUSY attempts, in order, each with who holds its mount now (or why that
    /// is unknown). Every call among them entered before the pass started.
    fn attribute(&self, attempts: Vec<UmountAttempt>) -> Vec<UmountAttempt>;
    /// A warning for each successful unmount among `attempts` whose filesystem is still in use.
    fn check_outlived(&self, attempts: &[UmountAttempt]) -> Vec<Warning>;
}

/// Whether a successful attempt should be checked for a filesystem that lives on.
fn may_outlive(attempt: &UmountAttempt) -> bool {
    !attempt.call.failed() && attempt.target_abs.is_some()
}

/// The jobs of one pipeline: its attributor (none with `--no-holders`), what waits for the
/// next pass, and the pass running (at most one).
pub struct Jobs {
    attributor: Option<Arc<dyn Attributor>>,
    running: JoinSet<Finished>,
    /// The EBUSYs for the next pass, in order.
    waiting: Vec<UmountAttempt>,
    /// The successful unmounts for the next pass to check.
    unmounted: Vec<UmountAttempt>,
}

impl Jobs {
    /// Jobs run by `attributor`; without one, every attempt is written as it comes.
    pub fn new(attributor: Option<Arc<dyn Attributor>>) -> Self {
        Self {
            attributor,
            running: JoinSet::new(),
            waiting: Vec::new(),
            unmounted: Vec::new(),
        }
    }

    /// Whether no pass is running.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// The running pass's result (pending forever while none runs: guard with
    /// [`Self::is_idle`]). The next pass starts at the next [`Self::dispatch`], so that the
    /// attempts the pipeline drains meanwhile join it.
    pub async fn next_finished(&mut self) -> Option<Result<Finished, JoinError>> {
        self.running.join_next().await
    }

    /// Writes each attempt that needs no attribution at once; queues each EBUSY, and each
    /// success to check for a filesystem that lives on, for the next pass, and starts it if
    /// none runs.
    pub fn dispatch(
        &mut self,
        attempts: Vec<UmountAttempt>,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        for attempt in attempts {
            let Some(attributor) = self.attributor.clone() else {
                sink.umount(&attempt)?;
                continue;
            };
            // An EBUSY is written once it is attributed.
            if attempt.call.failed_with(libc::EBUSY) {
                self.wait_for_pass(attempt, attributor.as_ref(), sink)?;
                continue;
            }
            sink.umount(&attempt)?;
            if may_outlive(&attempt) {
                self.check_in_pass(attempt);
            }
        }
        self.start_pass();
        Ok(())
    }

    /// Queues an EBUSY for the next pass, or writes it unattributed when [`MAX_WAITING`]
    /// already wait.
    fn wait_for_pass(
        &mut self,
        mut attempt: UmountAttempt,
        attributor: &dyn Attributor,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        if self.waiting.len() >= MAX_WAITING {
            attempt.attribution = Some(Err(format!(
                "not attributed: busyprobe fell behind ({MAX_WAITING} EBUSYs were already \
                 waiting for a holder scan)"
            )));
            return sink.umount(&attempt);
        }
        attributor.learn_namespace(&attempt);
        self.waiting.push(attempt);
        Ok(())
    }

    /// Queues a successful unmount for the next pass's check, unless [`MAX_WAITING`] already
    /// wait.
    fn check_in_pass(&mut self, attempt: UmountAttempt) {
        if self.unmounted.len() >= MAX_WAITING {
            tracing::warn!(
                "unmount {}: not checked for a filesystem that lives on: {MAX_WAITING} \
                 successful unmounts were already waiting for a scan",
                attempt.id
            );
            return;
        }
        self.unmounted.push(attempt);
    }

    /// Starts a pass over everything waiting, unless one runs or nothing waits.
    fn start_pass(&mut self) {
        if !self.running.is_empty() || (self.waiting.is_empty() && self.unmounted.is_empty()) {
            return;
        }
        let Some(attributor) = self.attributor.clone() else {
            return;
        };
        let ebusy = std::mem::take(&mut self.waiting);
        let unmounted = std::mem::take(&mut self.unmounted);
        self.running
            .spawn_blocking(move || run_pass(attributor.as_ref(), ebusy, &unmounted));
    }
}

/// One pass: the EBUSYs first (their lines wait for it), then the successes' checks.
fn run_pass(
    attributor: &dyn Attributor,
    ebusy: Vec<UmountAttempt>,
    unmounted: &[UmountAttempt],
) -> Finished {
    let attempts = if ebusy.is_empty() {
        ebusy
    } else {
        attributor.attribute(ebusy)
    };
    let warnings = if unmounted.is_empty() {
        Vec::new()
    } else {
        attributor.check_outlived(unmounted)
    };
    Finished { attempts, warnings }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{mpsc, Mutex},
        time::SystemTime,
    };

    use super::*;
    use crate::{event::sample_attempt, stats::Stats};

    /// A stand-in whose passes note the ids they answer, say they started, and end only when
    /// the test lets them.
    struct Gated {
        passes: Mutex<Vec<Vec<u64>>>,
        checked: Mutex<Vec<Vec<u64>>>,
        started: Mutex<mpsc::Sender<()>>,
        go: Mutex<mpsc::Receiver<()>>,
    }

    impl Attributor for Gated {
        fn learn_namespace(&self, _attempt: &UmountAttempt) {}

        fn attribute(&self, mut attempts: Vec<UmountAttempt>) -> Vec<UmountAttempt> {
            self.passes
                .lock()
                .unwrap()
                .push(attempts.iter().map(|a| a.id).collect());
            self.started.lock().unwrap().send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
            for a in &mut attempts {
                a.attribution = Some(Err(format!("pass answer for {}", a.id)));
            }
            attempts
        }

        fn check_outlived(&self, attempts: &[UmountAttempt]) -> Vec<Warning> {
            self.checked
                .lock()
                .unwrap()
                .push(attempts.iter().map(|a| a.id).collect());
            Vec::new()
        }
    }

    /// The ids and answers of the attempts written at once.
    #[derive(Default)]
    struct Written(Vec<(u64, Option<Result<(), String>>)>);

    impl Sink for Written {
        fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
            let answer = attempt.attribution.as_ref().map(|r| r.as_ref().map(|_| ()));
            self.0
                .push((attempt.id, answer.map(|r| r.map_err(Clone::clone))));
            Ok(())
        }

        fn warning(&mut self, _warning: &Warning) -> io::Result<()> {
            Ok(())
        }

        fn stats(&mut self, _ts: SystemTime, _stats: &Stats, _last: bool) -> io::Result<()> {
            Ok(())
        }
    }

    fn ebusy(id: u64) -> UmountAttempt {
        let mut a = sample_attempt(b"/mnt/x", Some(b"/mnt/x"), -i64::from(libc::EBUSY), 0);
        a.id = id;
        a
    }

    fn success(id: u64) -> UmountAttempt {
        let mut a = sample_attempt(b"/mnt/x", Some(b"/mnt/x"), 0, 0);
        a.id = id;
        a
    }

    /// Jobs on a gated stand-in: the jobs, the stand-in, "a pass started", "end the pass".
    fn gated() -> (Jobs, Arc<Gated>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let gated = Arc::new(Gated {
            passes: Mutex::default(),
            checked: Mutex::default(),
            started: Mutex::new(started_tx),
            go: Mutex::new(go_rx),
        });
        let jobs = Jobs::new(Some(gated.clone() as Arc<dyn Attributor>));
        (jobs, gated, started, go)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    /// The ids of the EBUSYs the next finished pass answered.
    async fn next_pass(jobs: &mut Jobs) -> Vec<u64> {
        let done = jobs.next_finished().await.expect("a pass").expect("joined");
        done.attempts.iter().map(|a| a.id).collect()
    }

    #[test]
    fn ebusys_queued_while_a_pass_runs_are_answered_together_by_the_next_pass() {
        let (mut jobs, gated, started, go) = gated();
        let mut sink = Written::default();
        runtime().block_on(async {
            jobs.dispatch(vec![ebusy(1)], &mut sink).unwrap();
            started.recv().unwrap();
            // Calls 2 and 3 entered while pass 1 scans: it must not answer them.
            jobs.dispatch(vec![ebusy(2)], &mut sink).unwrap();
            jobs.dispatch(vec![ebusy(3)], &mut sink).unwrap();
            assert_eq!(
                *gated.passes.lock().unwrap(),
                [vec![1]],
                "no second pass yet"
            );
            go.send(()).unwrap();
            assert_eq!(next_pass(&mut jobs).await, [1]);
            assert!(
                jobs.is_idle(),
                "the next pass waits for the pipeline's dispatch"
            );
            // The pipeline drains the source, then dispatches what it found (here: call 4).
            jobs.dispatch(vec![ebusy(4)], &mut sink).unwrap();
            started.recv().unwrap();
            go.send(()).unwrap();
            assert_eq!(next_pass(&mut jobs).await, [2, 3, 4]);
            assert!(jobs.is_idle());
        });
        assert_eq!(*gated.passes.lock().unwrap(), [vec![1], vec![2, 3, 4]]);
        assert!(
            sink.0.is_empty(),
            "nothing written unattributed: {:?}",
            sink.0
        );
    }

    #[test]
    fn beyond_the_waiting_limit_an_ebusy_is_written_at_once_saying_why_it_has_no_holders() {
        let (mut jobs, gated, started, go) = gated();
        let mut sink = Written::default();
        let last = MAX_WAITING as u64 + 2;
        runtime().block_on(async {
            jobs.dispatch(vec![ebusy(1)], &mut sink).unwrap();
            started.recv().unwrap();
            jobs.dispatch((2..=last).map(ebusy).collect(), &mut sink)
                .unwrap();
            go.send(()).unwrap();
            assert_eq!(next_pass(&mut jobs).await, [1]);
            jobs.dispatch(Vec::new(), &mut sink).unwrap();
            started.recv().unwrap();
            go.send(()).unwrap();
            let second = next_pass(&mut jobs).await;
            assert_eq!(second, (2..last).collect::<Vec<_>>());
        });
        assert_eq!(gated.passes.lock().unwrap().len(), 2);
        let [(id, Some(Err(why)))] = &sink.0[..] else {
            panic!("want one unattributed line: {:?}", sink.0);
        };
        assert_eq!(*id, last);
        assert!(why.contains("fell behind"), "{why}");
    }

    #[test]
    fn successes_are_written_at_once_and_checked_together_by_the_next_pass() {
        let (mut jobs, gated, started, go) = gated();
        let mut sink = Written::default();
        runtime().block_on(async {
            jobs.dispatch(vec![ebusy(1)], &mut sink).unwrap();
            started.recv().unwrap();
            jobs.dispatch(vec![success(2), success(3)], &mut sink)
                .unwrap();
            go.send(()).unwrap();
            assert_eq!(next_pass(&mut jobs).await, [1]);
            jobs.dispatch(Vec::new(), &mut sink).unwrap();
            assert_eq!(next_pass(&mut jobs).await, [] as [u64; 0]);
            assert!(jobs.is_idle());
        });
        assert_eq!(*gated.passes.lock().unwrap(), [vec![1]]);
        assert_eq!(*gated.checked.lock().unwrap(), [vec![2, 3]]);
        assert_eq!(
            sink.0,
            [(2, None), (3, None)],
            "successes are written as they come"
        );
    }
}
