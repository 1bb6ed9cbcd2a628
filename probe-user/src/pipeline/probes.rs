//! The pipeline on the loaded probes: what `watch`, `top` and `record` run. Loads the probes,
//! hands their ring buffer, maps and loss counters to a [`Pipeline`], and runs it until a
//! signal, the duration, the user's `q` or the output's end.

use std::{io, os::unix::ffi::OsStrExt, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use probe_common::DropCause;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use super::{
    contention::Contention, context::Context, jobs::Attributor, live::Live, opens::OpenMaps,
    source::RingSource, tracked::TrackedMounts, LossCounters, Pipeline, Stop,
};
use crate::{
    cli::StreamArgs,
    clock::BootClock,
    filter::AttemptFilter,
    kubernetes::{socket::Sockets, PodDirectory},
    loader::{DropCounters, LoadOptions, ModeDecision, OpenTimes, Probes},
    sink::Sink,
    state::process::ProcFs,
};

/// Runs a future on a single-threaded runtime (blocking work goes to its blocking pool).
pub fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
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
    /// The probes' mode ([`crate::loader::resolve_mode`]).
    pub mode: ModeDecision,
    /// Where opens are timed (`--open-times`, with the command's default).
    pub open_times: OpenTimes,
    /// Called once the probes are attached, before the first event is read (the agent tells
    /// systemd it is ready).
    pub on_ready: Option<Box<dyn FnOnce()>>,
}

impl LossCounters for DropCounters {
    fn read(&self) -> Result<[u64; DropCause::COUNT as usize]> {
        DropCounters::read(self)
    }
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
            open_times: out.open_times,
            allow_list: args.path.is_some(),
            mode: out.mode.mode,
        },
    )?;
    probes.forward_logs();
    let mut source = RingSource::new(probes.take_events()?).context("polling the ring buffer")?;
    let losses = probes.take_drop_counters()?;
    let stop = stop_signal(&mut out)?;
    let prefix = args
        .path
        .as_ref()
        .map(|p| p.as_os_str().as_bytes().to_vec());
    let pods = Arc::new(PodDirectory::new(Sockets::from_arg(
        args.cri_socket.as_deref(),
    )));
    pods.prefetch();
    let live = track_releases
        .then(|| live_attributor(&mut probes, prefix.clone(), out.open_times, pods.clone()));
    let mounts = live.as_ref().map(|l| l.mounts());
    let attributor = live.map(|l| l as Arc<dyn Attributor>);
    let filter = AttemptFilter {
        only_failed: args.only_failed,
        path_prefix: prefix,
    };
    let stats_every = (args.stats_interval > 0).then(|| Duration::from_secs(args.stats_interval));
    let pipeline = Pipeline::new(
        Context::new(BootClock::now(), ProcFs::default(), pods),
        filter,
        attributor,
        out.sink.as_mut(),
    )
    .with_mounts(mounts)
    .with_losses(Box::new(losses))
    .with_stats_every(stats_every);
    tracing::info!(
        "probes attached ({}); {}; watching every unmount on this host. Ctrl-C to stop.",
        out.mode,
        out.open_times
    );
    give_back_loading_memory();
    if let Some(ready) = out.on_ready.take() {
        ready();
    }
    let outcome = pipeline.run(&mut source, stop).await;
    drop(probes);
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader went away (`busyprobe watch | head -1`): that is how pipes end.
        Err(e) if out.is_stdout && e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("writing output"),
    }
}

/// Returns the heap that loading the probes and the scanner used to the system: parsing the
/// kernel's BTF (twice: aya's copy and the iterators') and the probe object takes tens of MB,
/// all free once they are loaded, which the allocator would otherwise keep resident for the
/// process's whole life.
fn give_back_loading_memory() {
    // SAFETY: malloc_trim only releases free memory of the allocator; it is always safe to call.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The attribution engine with the probes' release tracking and open-time maps (and, with
/// `--open-times contended`, the contended mounts and the switch of the open probes), naming
/// pods from `pods`.
fn live_attributor(
    probes: &mut Probes,
    prefix: Option<Vec<u8>>,
    open_times: OpenTimes,
    pods: Arc<PodDirectory>,
) -> Arc<Live> {
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
    let contention = (open_times == OpenTimes::Contended)
        .then(|| contention(probes))
        .flatten();
    Live::start(tracked.ok(), opens, contention, pods)
}

/// The contended mounts, or `None` (said) when their map cannot be had.
fn contention(probes: &mut Probes) -> Option<Arc<Contention>> {
    match probes.take_contended_mounts() {
        Ok(map) => Some(Arc::new(Contention::new(map, probes.open_switch()))),
        Err(e) => {
            tracing::warn!("open times are off: {e:#}");
            None
        }
    }
}

/// What ends a stream: SIGINT or SIGTERM, the duration, the output's `stop_on`, or (for
/// stdout) its reader going away.
fn stop_signal(out: &mut Output) -> Result<impl std::future::Future<Output = Stop>> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let deadline = out.stop_after.map(|d| tokio::time::Instant::now() + d);
    let stop_on = out.stop_on.take();
    let is_stdout = out.is_stdout;
    Ok(async move {
        let asked = async {
            match stop_on {
                Some(asked) => {
                    let _ = asked.await;
                }
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stdout_closed(is_stdout) => Stop::OutputGone,
            () = asked => Stop::Asked,
            () = deadline => Stop::Asked,
            _ = sigterm.recv() => Stop::Asked,
            _ = sigint.recv() => Stop::Asked,
        }
    })
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
