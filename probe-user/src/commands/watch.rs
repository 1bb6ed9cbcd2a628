//! `busyprobe watch`: the live stream of unmount attempts.

use std::{
    io,
    os::unix::ffi::OsStrExt,
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    task::JoinSet,
};

use crate::{
    attribution::{
        live::{Finished, Live, TrackedMounts},
        opens::OpenMaps,
        transient::RecentReleases,
    },
    cli::{StreamArgs, WatchArgs},
    clock::BootClock,
    decode::{decode, KernelEvent},
    event::UmountAttempt,
    filter::AttemptFilter,
    loader::{self, DropCounters, LoadOptions, ModeDecision, Probes},
    sink::{json::JsonLines, text::TextLines, Sink},
    state::process::{CgroupPaths, ProcFs},
    stats::Stats,
};

/// Records decoded per turn of the event loop.
const DRAIN_BATCH: usize = 4096;

/// Runs `watch` on a single-threaded runtime.
pub fn run(args: WatchArgs) -> Result<ExitCode> {
    block_on(watch(args))
}

/// Runs a future on a single-threaded runtime (blocking work goes to its blocking pool).
pub fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

/// Decoded, enriched, filtered events on their way to a sink, with the counts and the
/// recent releases that complete EBUSY attributions.
struct Pipeline {
    clock: BootClock,
    proc: ProcFs,
    cgroups: CgroupPaths,
    filter: AttemptFilter,
    stats: Stats,
    next_id: u64,
    releases: RecentReleases,
}

impl Pipeline {
    /// Decodes every record waiting in the ring buffer: keeps releases, returns the attempts
    /// that pass the filter, in order.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Vec<UmountAttempt> {
        let mut out = Vec::new();
        while !self.drain_batch(ring, &mut out) {}
        out
    }

    /// Decodes at most [`DRAIN_BATCH`] records into `out`; true when the ring buffer is empty.
    /// The event loop drains in batches so that under a flood it still ticks its stats (and
    /// reports the losses) and hears signals.
    fn drain_batch(&mut self, ring: &mut RingBuf<MapData>, out: &mut Vec<UmountAttempt>) -> bool {
        for _ in 0..DRAIN_BATCH {
            let Some(record) = ring.next() else {
                return true;
            };
            let decoded = decode(&record);
            drop(record);
            match decoded {
                Ok(KernelEvent::Umount(call)) => {
                    self.stats.events += 1;
                    self.next_id += 1;
                    let ts = self.clock.to_wall(call.ts_boot_ns);
                    let attempt = self.proc.enrich(self.next_id, ts, call, &mut self.cgroups);
                    if self.filter.accepts(&attempt) {
                        out.push(attempt);
                    }
                }
                Ok(KernelEvent::Release(release)) => {
                    self.stats.events += 1;
                    self.releases.record(release);
                }
                Err(e) => {
                    self.stats.decode_errors += 1;
                    tracing::debug!("undecodable ring-buffer record: {e}");
                }
            }
        }
        false
    }

    fn report_stats(
        &mut self,
        drops: &DropCounters,
        sink: &mut dyn Sink,
        last: bool,
    ) -> io::Result<()> {
        match drops.read() {
            Ok(counts) => self.stats.drops = counts,
            Err(e) => tracing::warn!("{e:#}"),
        }
        sink.stats(SystemTime::now(), &self.stats, last)
    }
}

/// The attribution side of a watch: the jobs running on blocking threads.
struct Jobs {
    live: Option<Arc<Live>>,
    running: JoinSet<Finished>,
}

impl Jobs {
    /// Writes each attempt that needs no attribution at once; starts the attribution of each
    /// EBUSY, and the alive-after-unmount check of each success, on a blocking thread.
    fn dispatch(&mut self, attempts: Vec<UmountAttempt>, sink: &mut dyn Sink) -> io::Result<()> {
        for attempt in attempts {
            let Some(live) = &self.live else {
                sink.umount(&attempt)?;
                continue;
            };
            let live = Arc::clone(live);
            if Live::is_busy(&attempt) {
                live.learn_namespace(&attempt);
                self.running.spawn_blocking(move || live.attribute(attempt));
                continue;
            }
            sink.umount(&attempt)?;
            if Live::may_outlive(&attempt) {
                self.running
                    .spawn_blocking(move || live.check_outlived(&attempt));
            }
        }
        Ok(())
    }

    /// Writes what a finished job produced. An EBUSY attempt is completed with the releases
    /// seen so far (the ring buffer is drained first: a holder that let go before the scan
    /// ended is in it) and `unknown` if nothing explains it.
    fn finished(
        &mut self,
        done: Result<Finished, tokio::task::JoinError>,
        pipeline: &mut Pipeline,
        ring: &mut RingBuf<MapData>,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        match done.map_err(io::Error::other)? {
            Finished::Attempt(mut attempt) => {
                let more = pipeline.drain(ring);
                if let Some(Ok(attribution)) = &mut attempt.attribution {
                    pipeline.releases.complete(&attempt.call, attribution);
                }
                sink.umount(&attempt)?;
                self.dispatch(more, sink)
            }
            Finished::Warning(warning) => sink.warning(&warning),
            Finished::Nothing => Ok(()),
        }
    }

    /// Writes the last attempts and waits for every job still running.
    async fn finish(
        &mut self,
        pipeline: &mut Pipeline,
        ring: &mut RingBuf<MapData>,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        let last = pipeline.drain(ring);
        self.dispatch(last, sink)?;
        while let Some(done) = self.running.join_next().await {
            self.finished(done, pipeline, ring, sink)?;
        }
        Ok(())
    }
}

/// Where a stream's lines go and when it ends.
pub struct Output {
    /// The sink.
    pub sink: Box<dyn Sink>,
    /// Stop after this long (`record --duration`).
    pub stop_after: Option<Duration>,
    /// Stop when this is sent (or its sender dropped): the TUI's `q`.
    pub stop_on: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Whether the sink is stdout (then a reader going away ends the stream quietly).
    pub is_stdout: bool,
    /// Which command runs (for messages).
    pub command: &'static str,
    /// The probes' mode ([`loader::resolve_mode`]).
    pub mode: ModeDecision,
}

/// Loads the probes and streams every unmount attempt into `out` until a signal, the
/// duration, or the output's end.
pub async fn stream(args: &StreamArgs, mut out: Output) -> Result<ExitCode> {
    let track_releases = !args.no_holders;
    let mut probes = Probes::load(
        out.command,
        &LoadOptions {
            ring_buffer_size: args.ring_buffer_size,
            track_releases,
            open_times: !args.no_open_times,
            allow_list: args.path.is_some(),
            mode: out.mode.mode,
        },
    )?;
    probes.forward_logs();
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, while registered.
    let mut ring =
        unsafe { AsyncFd::register(probes.take_events()?) }.context("polling the ring buffer")?;
    let drops = probes.take_drop_counters()?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let prefix = args
        .path
        .as_ref()
        .map(|p| p.as_os_str().as_bytes().to_vec());
    let mut pipeline = Pipeline {
        clock: BootClock::now(),
        proc: ProcFs::default(),
        cgroups: CgroupPaths::default(),
        filter: AttemptFilter {
            only_failed: args.only_failed,
            path_prefix: prefix.clone(),
        },
        stats: Stats::default(),
        next_id: 0,
        releases: RecentReleases::default(),
    };
    let mut ticker = stats_ticker(args.stats_interval);
    let live = track_releases.then(|| {
        let tracked = probes
            .take_tracked_mounts()
            .map(|map| TrackedMounts::new(map, prefix));
        if let Err(e) = &tracked {
            tracing::warn!("release tracking is off: {e:#}");
        }
        let opens = probes
            .take_open_maps()
            .ok()
            .map(|(times, recent)| OpenMaps::new(times, recent));
        Live::start(tracked.ok(), opens)
    });
    let mut jobs = Jobs {
        live,
        running: JoinSet::new(),
    };
    let mut stdout_closed = std::pin::pin!(stdout_closed(out.is_stdout));
    let deadline = out.stop_after.map(|d| tokio::time::Instant::now() + d);
    let stop_on = out.stop_on.take();
    let mut stop = std::pin::pin!(async move {
        let asked = async {
            match stop_on {
                Some(asked) => {
                    let _ = asked.await;
                }
                None => std::future::pending().await,
            }
        };
        match deadline {
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = asked => {}
            },
            None => asked.await,
        }
    });
    let sink = out.sink.as_mut();
    tracing::info!(
        "probes attached ({}); watching every unmount on this host. Ctrl-C to stop.",
        out.mode
    );

    let outcome: io::Result<()> = async {
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    let mut attempts = Vec::new();
                    if pipeline.drain_batch(guard.get_inner_mut(), &mut attempts) {
                        guard.clear_ready();
                    }
                    jobs.dispatch(attempts, sink)?;
                }
                Some(done) = jobs.running.join_next(), if !jobs.running.is_empty() => {
                    jobs.finished(done, &mut pipeline, ring.get_mut(), sink)?;
                }
                _ = ticker.tick(), if args.stats_interval > 0 => {
                    pipeline.report_stats(&drops, sink, false)?;
                }
                () = stdout_closed.as_mut() => return Err(io::ErrorKind::BrokenPipe.into()),
                () = stop.as_mut() => return Ok(()),
                _ = sigterm.recv() => return Ok(()),
                _ = sigint.recv() => return Ok(()),
            }
        }
    }
    .await;
    let outcome = match outcome {
        Ok(()) => jobs
            .finish(&mut pipeline, ring.get_mut(), sink)
            .await
            .and_then(|()| pipeline.report_stats(&drops, sink, true)),
        Err(e) => Err(e),
    };
    drop(probes);
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader went away (`busyprobe watch | head -1`): that is how pipes end.
        Err(e) if out.is_stdout && e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("writing output"),
    }
}

async fn watch(args: WatchArgs) -> Result<ExitCode> {
    let stdout = io::stdout().lock();
    let sink: Box<dyn Sink> = if args.json {
        Box::new(JsonLines::new(stdout))
    } else {
        Box::new(TextLines::new(stdout))
    };
    let mode = loader::resolve_mode("watch", args.stream.mode)?;
    stream(
        &args.stream,
        Output {
            sink,
            stop_after: None,
            stop_on: None,
            is_stdout: true,
            command: "watch",
            mode,
        },
    )
    .await
}

/// Resolves when stdout is a pipe or socket whose reader went away (`busyprobe watch | head
/// -1` after `head` exits), so an idle watch ends then rather than at its next write. Never
/// resolves for outputs that cannot be polled (regular files).
async fn stdout_closed(is_stdout: bool) {
    if !is_stdout {
        return std::future::pending().await;
    }
    // SAFETY: the process's stdout stays open for the program's whole life.
    let registered = unsafe { AsyncFd::register_with_interest(io::stdout(), Interest::ERROR) };
    match registered {
        Ok(fd) => {
            let _ = fd.ready(Interest::ERROR).await;
        }
        Err(_) => std::future::pending().await,
    }
}

fn stats_ticker(secs: u64) -> tokio::time::Interval {
    let period = Duration::from_secs(secs.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}
