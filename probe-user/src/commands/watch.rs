//! `busyprobe watch`: the live stream of unmount attempts.

use std::{
    io,
    os::unix::ffi::OsStrExt,
    process::ExitCode,
    sync::{Arc, Mutex},
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
    attribution::{self, kernel_scan::KernelScanner, target::Viewpoint, Scanner},
    cli::WatchArgs,
    clock::BootClock,
    decode::{decode, KernelEvent},
    event::UmountAttempt,
    filter::AttemptFilter,
    loader::{DropCounters, LoadOptions, Probes, MODE_TRACEPOINT},
    sink::{json::JsonLines, text::TextLines, Sink},
    state::process::ProcFs,
    stats::Stats,
};

/// Runs `watch` on a single-threaded runtime.
pub fn run(args: WatchArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(watch(args))
}

/// Decoded, enriched, filtered events on their way to a sink, with the counts.
struct Pipeline {
    clock: BootClock,
    proc: ProcFs,
    filter: AttemptFilter,
    stats: Stats,
    next_id: u64,
}

impl Pipeline {
    /// Decodes every record waiting in the ring buffer; returns the attempts that pass the
    /// filter, in order.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Vec<UmountAttempt> {
        let mut out = Vec::new();
        while let Some(record) = ring.next() {
            let decoded = decode(&record);
            drop(record);
            match decoded {
                Ok(KernelEvent::Umount(call)) => {
                    self.stats.events += 1;
                    self.next_id += 1;
                    let ts = self.clock.to_wall(call.ts_boot_ns);
                    let attempt = self.proc.enrich(self.next_id, ts, call);
                    if self.filter.accepts(&attempt) {
                        out.push(attempt);
                    }
                }
                Err(e) => {
                    self.stats.decode_errors += 1;
                    tracing::debug!("undecodable ring-buffer record: {e}");
                }
            }
        }
        out
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

async fn watch(args: WatchArgs) -> Result<ExitCode> {
    let mut probes = Probes::load(
        "watch",
        &LoadOptions {
            ring_buffer_size: args.ring_buffer_size,
        },
    )?;
    probes.forward_logs();
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, while registered.
    let mut ring =
        unsafe { AsyncFd::register(probes.take_events()?) }.context("polling the ring buffer")?;
    let drops = probes.take_drop_counters()?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let stdout = io::stdout().lock();
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(JsonLines::new(stdout))
    } else {
        Box::new(TextLines::new(stdout))
    };
    let mut pipeline = Pipeline {
        clock: BootClock::now(),
        proc: ProcFs::default(),
        filter: AttemptFilter {
            only_failed: args.only_failed,
            path_prefix: args
                .path
                .as_ref()
                .map(|p| p.as_os_str().as_bytes().to_vec()),
        },
        stats: Stats::default(),
        next_id: 0,
    };
    let mut ticker = stats_ticker(args.stats_interval);
    let mut attributing: JoinSet<UmountAttempt> = JoinSet::new();
    let scanner = Arc::new(Mutex::new(load_scanner(args.no_holders)));
    let mut stdout_closed = std::pin::pin!(stdout_closed());
    tracing::info!(
        "probes attached ({MODE_TRACEPOINT} mode); watching every unmount on this host. Ctrl-C to stop."
    );

    let outcome: io::Result<()> = async {
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    let attempts = pipeline.drain(guard.get_inner_mut());
                    guard.clear_ready();
                    dispatch(attempts, &scanner, &mut attributing, sink.as_mut())?;
                }
                Some(done) = attributing.join_next(), if !attributing.is_empty() => {
                    sink.umount(&done.map_err(io::Error::other)?)?;
                }
                _ = ticker.tick(), if args.stats_interval > 0 => {
                    pipeline.report_stats(&drops, sink.as_mut(), false)?;
                }
                () = stdout_closed.as_mut() => return Err(io::ErrorKind::BrokenPipe.into()),
                _ = sigterm.recv() => return Ok(()),
                _ = sigint.recv() => return Ok(()),
            }
        }
    }
    .await;
    let outcome = match outcome {
        Ok(()) => {
            let last = pipeline.drain(ring.get_mut());
            finish(last, &scanner, &mut attributing, sink.as_mut())
                .await
                .and_then(|()| pipeline.report_stats(&drops, sink.as_mut(), true))
        }
        Err(e) => Err(e),
    };
    drop(probes);
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader went away (`busyprobe watch | head -1`): that is how pipes end.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("writing output"),
    }
}

/// Writes attempts that need no attribution at once; starts attribution of each EBUSY on a
/// blocking thread, so a scan never holds up the events behind it.
fn dispatch(
    attempts: Vec<UmountAttempt>,
    scanner: &SharedScanner,
    attributing: &mut JoinSet<UmountAttempt>,
    sink: &mut dyn Sink,
) -> io::Result<()> {
    for attempt in attempts {
        let wanted = scanner.lock().map(|s| s.is_some()).unwrap_or(false);
        if wanted && attempt.call.ret == -i64::from(libc::EBUSY) {
            let scanner = Arc::clone(scanner);
            attributing.spawn_blocking(move || with_attribution(attempt, &scanner));
        } else {
            sink.umount(&attempt)?;
        }
    }
    Ok(())
}

/// Writes the last attempts and waits for every attribution still running.
async fn finish(
    attempts: Vec<UmountAttempt>,
    scanner: &SharedScanner,
    attributing: &mut JoinSet<UmountAttempt>,
    sink: &mut dyn Sink,
) -> io::Result<()> {
    dispatch(attempts, scanner, attributing, sink)?;
    while let Some(done) = attributing.join_next().await {
        sink.umount(&done.map_err(io::Error::other)?)?;
    }
    Ok(())
}

/// How EBUSY holders are looked for: `None` with `--no-holders`, else the kernel scanner
/// when it loads (`Kernel`) or the /proc walk (`Proc`). Scans run one at a time.
type SharedScanner = Arc<Mutex<Option<ScanMode>>>;

/// The scan used for EBUSY attribution.
enum ScanMode {
    /// BPF iterators.
    Kernel(KernelScanner),
    /// A /proc walk.
    Proc,
}

fn load_scanner(no_holders: bool) -> Option<ScanMode> {
    if no_holders {
        return None;
    }
    Some(match KernelScanner::load() {
        Ok(k) => ScanMode::Kernel(k),
        Err(e) => {
            tracing::warn!(
                "kernel holder scan unavailable ({e:#}); EBUSY holders come from a /proc walk"
            );
            ScanMode::Proc
        }
    })
}

/// The attempt with who holds its mount (or why that is unknown).
fn with_attribution(mut attempt: UmountAttempt, scanner: &SharedScanner) -> UmountAttempt {
    let call = &attempt.call;
    let result = if call.target.truncated || call.target.unreadable {
        Err("the probe could not read the whole target path".to_string())
    } else {
        Viewpoint::of_caller(call.pid, call.tid, call.mntns)
            .and_then(|view| {
                let mut guard = scanner
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a holder scan panicked"))?;
                let mut scan = match guard.as_mut() {
                    Some(ScanMode::Kernel(k)) => Scanner::Kernel(k),
                    _ => Scanner::Proc,
                };
                attribution::attribute(view, &call.target.bytes, &mut scan)
            })
            .map(|mut a| {
                a.add_unknown_if_unexplained();
                a
            })
            .map_err(|e| format!("{e:#}"))
    };
    attempt.attribution = Some(result);
    attempt
}

/// Resolves when stdout is a pipe or socket whose reader went away (`busyprobe watch | head
/// -1` after `head` exits), so an idle watch ends then rather than at its next write. Never
/// resolves for outputs that cannot be polled (regular files).
async fn stdout_closed() {
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
