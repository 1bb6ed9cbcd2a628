//! The event pipeline, the one path every live event takes:
//!
//! ```text
//! RecordSource ─► decode ─► Context ─► Explainer ─► AttemptFilter ─► Jobs (Attributor) ─► Sink
//!  ring buffer     decode.rs  context.rs  explain/    filter.rs       jobs.rs, live.rs
//!                  └─ releases ─► RecentReleases (transient.rs) ─► completes each EBUSY ─┘
//! ```
//!
//! A [`Pipeline`] takes any [`RecordSource`] (the probes' ring buffer, or byte records in a
//! test), any [`Attributor`] and any [`Sink`]; [`probes::stream`] builds one on the loaded
//! probes for `watch`, `top` and `record`. An EBUSY is written once its attribution is done:
//! the ring buffer is drained again first, so that a holder that let go while the scan ran is
//! named as a transient holder (see [`Pipeline::run`]).

pub mod contention;
pub mod context;
pub mod jobs;
pub mod live;
pub mod opens;
pub mod pass;
pub mod probes;
pub mod source;
pub mod tracked;
pub mod transient;

use std::{future::Future, io, pin::pin, sync::Arc, time::Duration, time::SystemTime};

use probe_common::DropCause;
use tokio::task::JoinError;

use self::{
    context::Context,
    jobs::{Attributor, Finished, Jobs},
    source::RecordSource,
    transient::RecentReleases,
};
use crate::{
    decode::{decode, DecodeError, KernelEvent},
    event::UmountAttempt,
    explain::Explainer,
    filter::AttemptFilter,
    sink::Sink,
    state::mount_cache::MountCache,
    stats::Stats,
};

/// Records decoded per turn of the event loop: under a flood the loop still ticks its stats
/// (and reports the losses) and hears signals between batches.
const DRAIN_BATCH: usize = 4096;

/// The kernel side's loss counters, by [`DropCause`] index.
pub trait LossCounters {
    /// The totals since the probes were loaded.
    fn read(&self) -> anyhow::Result<[u64; DropCause::COUNT as usize]>;
}

/// Why a pipeline's run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Asked to (a signal, a deadline, the TUI's `q`): the last events are written, the jobs
    /// still running waited for, and the final stats written.
    Asked,
    /// The output is gone (a closed pipe, a closed screen): nothing more is written.
    OutputGone,
}

/// One run of the event pipeline into a sink.
pub struct Pipeline<'s> {
    context: Context,
    explainer: Explainer,
    filter: AttemptFilter,
    stats: Stats,
    releases: RecentReleases,
    jobs: Jobs,
    losses: Option<Box<dyn LossCounters>>,
    stats_every: Option<Duration>,
    sink: &'s mut dyn Sink,
}

impl<'s> Pipeline<'s> {
    /// A pipeline that gives each attempt `context`, keeps those `filter` accepts, has
    /// `attributor` attribute them (none: every attempt is written as it comes) and writes
    /// them to `sink`.
    pub fn new(
        context: Context,
        filter: AttemptFilter,
        attributor: Option<Arc<dyn Attributor>>,
        sink: &'s mut dyn Sink,
    ) -> Self {
        Self {
            context,
            explainer: Explainer::default(),
            filter,
            stats: Stats::default(),
            releases: RecentReleases::default(),
            jobs: Jobs::new(attributor),
            losses: None,
            stats_every: None,
            sink,
        }
    }

    /// Explains failures with what the mount-table cache `mounts` knew was mounted where.
    pub fn with_mounts(mut self, mounts: Option<Arc<MountCache>>) -> Self {
        self.explainer = Explainer::new(mounts);
        self
    }

    /// Reports the kernel side's losses from `counters` in every stats line.
    pub fn with_losses(mut self, counters: Box<dyn LossCounters>) -> Self {
        self.losses = Some(counters);
        self
    }

    /// Writes a stats line every `period` (besides the last one).
    pub fn with_stats_every(mut self, period: Option<Duration>) -> Self {
        self.stats_every = period;
        self
    }

    /// Runs until `stop` resolves or the sink fails (an `Err` of kind `BrokenPipe` when the
    /// output went away). On [`Stop::Asked`] the events still in the source are written, the
    /// running jobs finished and the final stats line written. Meanwhile the sink is ticked
    /// whenever it asks to be ([`Sink::wake_at`]: a recording's fsync is due), events or not,
    /// and flushed at the end of each turn of its loop ([`Sink::flush`]).
    pub async fn run(
        mut self,
        source: &mut impl RecordSource,
        stop: impl Future<Output = Stop>,
    ) -> io::Result<()> {
        let mut stop = pin!(stop);
        let mut ticker = stats_ticker(self.stats_every);
        let why = loop {
            // A sink that waits for time (a recording's fsync) is woken then.
            let wake = self.sink.wake_at();
            let woken = tokio::time::sleep_until(tokio::time::Instant::from_std(
                wake.unwrap_or_else(std::time::Instant::now),
            ));
            tokio::select! {
                ready = source.ready() => {
                    ready?;
                    let (attempts, _) = self.drain_batch(source);
                    self.jobs.dispatch(attempts, self.sink)?;
                }
                Some(done) = self.jobs.next_finished(), if !self.jobs.is_idle() => {
                    self.finished(done, source)?;
                }
                _ = ticker.tick(), if self.stats_every.is_some() => self.write_stats(false)?,
                () = woken, if wake.is_some() => self.sink.tick(std::time::Instant::now())?,
                why = stop.as_mut() => break why,
            }
            // What this turn wrote is written out together (the recording's one write).
            self.sink.flush()?;
        };
        match why {
            Stop::Asked => {
                self.finish(source).await?;
                self.write_stats(true)?;
                self.sink.flush()
            }
            Stop::OutputGone => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Decodes at most [`DRAIN_BATCH`] records: keeps the releases, returns the attempts that
    /// pass the filter, in order, and whether the source is empty.
    fn drain_batch(&mut self, source: &mut impl RecordSource) -> (Vec<UmountAttempt>, bool) {
        let mut decoded = Vec::new();
        // Records are only decoded while the source holds them (a ring buffer slot is freed as
        // soon as it is read); reading /proc for context comes after.
        let empty = source.drain(DRAIN_BATCH, &mut |record| decoded.push(decode(record)));
        let attempts = decoded
            .into_iter()
            .filter_map(|event| self.take(event))
            .collect();
        (attempts, empty)
    }

    /// Every attempt waiting in the source, in order (its releases kept).
    fn drain_all(&mut self, source: &mut impl RecordSource) -> Vec<UmountAttempt> {
        let mut all = Vec::new();
        loop {
            let (attempts, empty) = self.drain_batch(source);
            all.extend(attempts);
            if empty {
                return all;
            }
        }
    }

    /// One decoded record: an attempt is explained (a failure) or remembered (a success) and
    /// returned if it passes the filter; a release is kept for the EBUSYs it may complete; an
    /// undecodable record is counted.
    fn take(&mut self, decoded: Result<KernelEvent, DecodeError>) -> Option<UmountAttempt> {
        match decoded {
            Ok(KernelEvent::Umount(call)) => {
                self.stats.events += 1;
                let mut attempt = self.context.attempt(call);
                let facts = self.context.caller_facts(&attempt);
                self.explainer.observe(&mut attempt, &facts);
                self.filter.accepts(&attempt).then_some(attempt)
            }
            Ok(KernelEvent::Release(release)) => {
                self.stats.events += 1;
                self.releases.record(release);
                None
            }
            Err(e) => {
                self.stats.decode_errors += 1;
                tracing::debug!("undecodable ring-buffer record: {e}");
                None
            }
        }
    }

    /// Writes what a pass produced. Its EBUSY attempts are completed with the releases seen
    /// so far (the source is drained first: a holder that let go before the scan ended is in
    /// it) and `unknown` if nothing explains one; the attempts drained join the next pass.
    fn finished(
        &mut self,
        done: Result<Finished, JoinError>,
        source: &mut impl RecordSource,
    ) -> io::Result<()> {
        let done = done.map_err(io::Error::other)?;
        let more = self.drain_all(source);
        for mut attempt in done.attempts {
            if let Some(Ok(attribution)) = &mut attempt.attribution {
                self.releases.complete(&attempt.call, attribution);
                self.context.name_holders_from_cache(attribution);
                attribution.mark_caller(attempt.call.pid);
            }
            self.sink.umount(&attempt)?;
        }
        for warning in &done.warnings {
            self.sink.warning(warning)?;
        }
        self.jobs.dispatch(more, self.sink)
    }

    /// Writes the last attempts and waits for every job still running.
    async fn finish(&mut self, source: &mut impl RecordSource) -> io::Result<()> {
        let last = self.drain_all(source);
        self.jobs.dispatch(last, self.sink)?;
        while let Some(done) = self.jobs.next_finished().await {
            self.finished(done, source)?;
        }
        Ok(())
    }

    /// Writes a stats line with the kernel side's losses read now.
    fn write_stats(&mut self, last: bool) -> io::Result<()> {
        if let Some(losses) = &self.losses {
            match losses.read() {
                Ok(counts) => self.stats.drops = counts,
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
        self.sink.stats(SystemTime::now(), &self.stats, last)
    }
}

/// A ticker for periodic stats (its first tick one period from now; without a period it is
/// never polled).
fn stats_ticker(period: Option<Duration>) -> tokio::time::Interval {
    let period = period.unwrap_or(Duration::from_secs(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{Arc, Mutex},
    };

    use tokio::sync::{oneshot, Notify};

    use super::*;
    use crate::{
        clock::BootClock,
        decode::tests::{bytes_of, release_event, umount_record},
        event::Warning,
        model::{sample_attribution, sample_process_holder, HolderKind},
        sink::json::JsonLines,
        state::process::ProcFs,
    };

    /// Byte records, as a test script feeds them. `announce` wakes the pipeline as a ring
    /// buffer's epoll would; `slip_in` adds a record without waking it (a record the kernel
    /// wrote while the pipeline was busy elsewhere: only a drain finds it).
    #[derive(Clone, Default)]
    struct Scripted {
        records: Arc<Mutex<VecDeque<Vec<u8>>>>,
        wake: Arc<Notify>,
    }

    impl Scripted {
        fn announce(&self, record: Vec<u8>) {
            self.slip_in(record);
            self.wake.notify_one();
        }

        fn slip_in(&self, record: Vec<u8>) {
            self.records.lock().unwrap().push_back(record);
        }
    }

    impl RecordSource for Scripted {
        fn drain(&mut self, max: usize, each: &mut dyn FnMut(&[u8])) -> bool {
            let mut records = self.records.lock().unwrap();
            for _ in 0..max {
                let Some(record) = records.pop_front() else {
                    return true;
                };
                each(&record);
            }
            records.is_empty()
        }

        async fn ready(&mut self) -> io::Result<()> {
            self.wake.notified().await;
            Ok(())
        }
    }

    /// The attribution engine's stand-in: it finds one fd holder, and while it "scans" the
    /// kernel reports another process letting go of a file on the mount (slipped into the
    /// source, not announced).
    struct ScannerStandIn {
        source: Scripted,
        mount_point: &'static str,
        release: Vec<u8>,
        learned: Mutex<Vec<u64>>,
    }

    impl Attributor for ScannerStandIn {
        fn learn_namespace(&self, attempt: &UmountAttempt) {
            self.learned.lock().unwrap().push(attempt.id);
        }

        fn attribute(&self, mut attempts: Vec<UmountAttempt>) -> Vec<UmountAttempt> {
            self.source.slip_in(self.release.clone());
            for attempt in &mut attempts {
                let mut fd =
                    sample_process_holder(HolderKind::Fd, 812, 777, b"sleep", Some(4026531840));
                fd.fd = Some(3);
                fd.path = Some(format!("{}/data", self.mount_point).into_bytes());
                attempt.attribution = Some(Ok(sample_attribution(self.mount_point, vec![fd])));
            }
            attempts
        }

        fn check_outlived(&self, _attempts: &[UmountAttempt]) -> Vec<Warning> {
            Vec::new()
        }
    }

    /// A buffer the test and the sink share.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for SharedBuf {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().write(bytes)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs a pipeline to its end on a runtime of its own; `never` fails the test when it
    /// has not ended in 60 s (a deadline for a broken pipeline, not a synchronisation: a pass
    /// takes milliseconds).
    fn run_with_deadline(run: impl Future<Output = io::Result<()>>, never: &str) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), run)
                    .await
                    .expect(never)
            })
            .unwrap();
    }

    /// Runs a pipeline over `source` with `attributor` until the first line, then stops it;
    /// returns every line written, parsed.
    fn run_until_first_line(
        mut source: Scripted,
        attributor: Arc<dyn Attributor>,
    ) -> Vec<serde_json::Value> {
        let out = SharedBuf::default();
        let (stop, stopped) = oneshot::channel();
        let mut sink = StopAfterLines {
            lines: JsonLines::new(out.clone()),
            left: 1,
            stop: Some(stop),
        };
        let context = Context::new(
            BootClock::booted_at_ns(0),
            ProcFs::at("/nonexistent/busyprobe-test"),
            std::sync::Arc::new(crate::kubernetes::PodDirectory::off()),
        );
        let pipeline = Pipeline::new(
            context,
            AttemptFilter::default(),
            Some(attributor),
            &mut sink,
        );
        let run = pipeline.run(&mut source, async {
            let _ = stopped.await;
            Stop::Asked
        });
        run_with_deadline(run, "the pipeline never wrote the attempt");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn an_ebusy_round_trip_names_the_scanned_holder_and_the_one_that_let_go_during_the_scan() {
        let source = Scripted::default();
        // umount("/mnt/x") by pid 1234 failed with EBUSY at boot time 42 ns, taking 5120 ns.
        source.announce(umount_record(1234, b"/mnt/x", -16, 0));
        // Pid 4321 closes fd 4, /etc/passwd on mount 812, 10 µs after boot: after the call.
        let release = bytes_of(&release_event(4321, 4, 812, 10_000, &[b"passwd", b"etc"]));
        let scanner = Arc::new(ScannerStandIn {
            source: source.clone(),
            mount_point: "/mnt/x",
            release,
            learned: Mutex::new(Vec::new()),
        });
        let lines = run_until_first_line(source, scanner.clone());

        assert_eq!(
            *scanner.learned.lock().unwrap(),
            [1],
            "learned before the job"
        );
        let [umount, stats] = &lines[..] else {
            panic!("want an umount line and the last stats line: {lines:#?}");
        };
        assert_eq!(umount["type"], "umount");
        assert_eq!(
            (&umount["id"], &umount["pid"], &umount["tid"]),
            (&1.into(), &1234.into(), &1235.into())
        );
        assert_eq!(umount["target"], "/mnt/x");
        assert_eq!(umount["errno"], "EBUSY");
        let holders = umount["holders"].as_array().expect("holders");
        let summary: Vec<_> = holders
            .iter()
            .map(|h| {
                (
                    h["kind"].as_str().unwrap(),
                    h["pid"].as_u64().unwrap(),
                    h["fd"].as_i64().unwrap(),
                    h["path"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("fd", 777, 3, "/mnt/x/data"),
                ("transient", 4321, 4, "/mnt/x/etc/passwd"),
            ],
            "{umount}"
        );
        // Closed at 10 000 ns, the call ended at 42 + 5120.
        assert_eq!(holders[1]["closed_ns_after"], 10_000 - 42 - 5120);
        assert_eq!(holders[1]["seen"], "traced");
        assert_eq!(stats["type"], "stats");
        assert_eq!(stats["final"], true);
        assert_eq!(stats["events"], 2, "the umount and the release");
    }

    /// JSON Lines into a shared buffer; the `n`th `umount` line asks the pipeline to stop.
    /// Writes JSON lines, and asks the pipeline to stop after `left` umount lines.
    struct StopAfterLines {
        lines: JsonLines<SharedBuf>,
        left: usize,
        stop: Option<oneshot::Sender<()>>,
    }

    impl Sink for StopAfterLines {
        fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
            self.lines.umount(attempt)?;
            self.left -= 1;
            if self.left == 0 {
                if let Some(stop) = self.stop.take() {
                    let _ = stop.send(());
                }
            }
            Ok(())
        }

        fn warning(&mut self, warning: &Warning) -> io::Result<()> {
            self.lines.warning(warning)
        }

        fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
            self.lines.stats(ts, stats, last)
        }
    }

    /// Above the kernel's `PID_MAX_LIMIT`: no process has it (its facts are unknown).
    const NO_SUCH_PID: u32 = 4_194_305;

    /// A success, then the same process's EINVAL on the same target (an unmount-all loop's
    /// end): the second line says so and names the first, through the whole pipeline.
    #[test]
    fn an_einval_after_the_same_callers_success_is_explained_in_the_stream() {
        let mut source = Scripted::default();
        source.slip_in(umount_record(NO_SUCH_PID, b"/mnt/x", 0, 0));
        source.announce(umount_record(NO_SUCH_PID, b"/mnt/x", -22, 0));
        let out = SharedBuf::default();
        let (stop, stopped) = oneshot::channel();
        let mut sink = StopAfterLines {
            lines: JsonLines::new(out.clone()),
            left: 2,
            stop: Some(stop),
        };
        let context = Context::new(
            BootClock::booted_at_ns(0),
            ProcFs::at("/nonexistent/busyprobe-test"),
            std::sync::Arc::new(crate::kubernetes::PodDirectory::off()),
        );
        let pipeline = Pipeline::new(context, AttemptFilter::default(), None, &mut sink);
        let run = pipeline.run(&mut source, async {
            let _ = stopped.await;
            Stop::Asked
        });
        run_with_deadline(run, "the pipeline never wrote both attempts");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines[0]["errno"], serde_json::Value::Null, "{text}");
        assert!(lines[0].get("explanation").is_none(), "{text}");
        let why = &lines[1]["explanation"];
        assert_eq!(why["code"], "unmount_all_loop_end", "{text}");
        assert_eq!(why["related_event"], lines[0]["id"], "{text}");
    }

    /// Asks to be woken 20 ms after it is made; its tick asks the pipeline to stop.
    struct WakeMe {
        at: std::time::Instant,
        ticked: Option<std::time::Instant>,
        stop: Option<oneshot::Sender<()>>,
    }

    impl Sink for WakeMe {
        fn umount(&mut self, _: &UmountAttempt) -> io::Result<()> {
            Ok(())
        }
        fn warning(&mut self, _: &Warning) -> io::Result<()> {
            Ok(())
        }
        fn stats(&mut self, _: SystemTime, _: &Stats, _: bool) -> io::Result<()> {
            Ok(())
        }
        fn wake_at(&self) -> Option<std::time::Instant> {
            self.ticked.is_none().then_some(self.at)
        }
        fn tick(&mut self, now: std::time::Instant) -> io::Result<()> {
            self.ticked = Some(now);
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            Ok(())
        }
    }

    /// A quiet stream still ticks a sink that asks for it (a recording's last lines are
    /// synced though no event comes), at the time it asked for.
    #[test]
    fn a_sink_is_ticked_when_it_asks_without_any_event() {
        let (stop, stopped) = oneshot::channel();
        let at = std::time::Instant::now() + Duration::from_millis(20);
        let mut sink = WakeMe {
            at,
            ticked: None,
            stop: Some(stop),
        };
        let context = Context::new(
            BootClock::booted_at_ns(0),
            ProcFs::at("/nonexistent/busyprobe-test"),
            std::sync::Arc::new(crate::kubernetes::PodDirectory::off()),
        );
        let pipeline = Pipeline::new(context, AttemptFilter::default(), None, &mut sink);
        let mut source = Scripted::default();
        let run = pipeline.run(&mut source, async {
            let _ = stopped.await;
            Stop::Asked
        });
        run_with_deadline(run, "the sink was never ticked");
        assert!(sink.ticked.unwrap() >= at, "not before it asked");
    }
}
