//! `busyprobe agent`: the node daemon. One set of probes (the same [`stream`] as `watch`,
//! `top` and `record`) feeds a recording (`-o`) and Prometheus metrics (`--metrics`) at once,
//! through one [`FanOut`] sink, until SIGTERM or SIGINT. A recording that cannot write (a
//! full disk) loses lines, counted and marked in it, and never stops the metrics.
//!
//! Start-up checks everything that can be refused before anything is created: the metrics
//! address is bound first (a port in use creates no recording), then the recording is
//! created, then the probes are loaded. Under systemd (`Type=notify`), `READY=1` is sent once
//! they are attached and `STOPPING=1` when the stream ends.

use std::{net::SocketAddr, path::Path, process::ExitCode};

use anyhow::{bail, Context as _, Result};
use sd_notify::NotifyState;

use super::record::open_recording;
use crate::{
    cli::AgentArgs,
    kernel,
    loader::{self, ModeDecision},
    pipeline::probes::{block_on, stream, Output},
    sink::{
        fanout::FanOut,
        metrics::{http, About, Metrics},
        record::Recording,
        Sink,
    },
};

/// Runs the agent until a signal.
pub fn run(args: &AgentArgs) -> Result<ExitCode> {
    if args.output.is_none() && args.no_metrics {
        bail!("nothing to do: give -o FILE to record, or leave the metrics on");
    }
    let mode = loader::resolve_mode("agent", args.stream.mode)?;
    let listener = match args.no_metrics {
        true => None,
        false => Some(bind(args.metrics)?),
    };
    let metrics = listener.is_some().then(|| {
        Metrics::new(About {
            version: env!("CARGO_PKG_VERSION").into(),
            probe_mode: mode.mode.as_str().into(),
            kernel: kernel::release(),
        })
    });
    let recording = match &args.output {
        Some(path) => Some(recording(path, args, &mode, metrics.as_ref())?),
        None => None,
    };
    let registry = metrics.as_ref().map(Metrics::registry);
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    sinks.extend(metrics.map(|m| Box::new(m) as Box<dyn Sink>));
    let mut fan_out = FanOut::new(sinks);
    if let Some(recording) = recording {
        fan_out = fan_out.with_recording(recording);
    }
    // The filter runs before every sink: the metrics need the successful unmounts too.
    let mut stream_args = args.stream.clone();
    stream_args.only_failed = false;
    let out = Output {
        sink: Box::new(fan_out),
        stop_after: None,
        stop_on: None,
        is_stdout: false,
        command: "agent",
        mode,
        on_ready: Some(Box::new(ready)),
    };
    block_on(async move {
        let server = match (listener, registry) {
            (Some(listener), Some(registry)) => {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .context("serving metrics on the async runtime")?;
                tracing::info!(
                    "serving metrics on http://{}{}",
                    args.metrics,
                    http::METRICS_PATH
                );
                Some(tokio::spawn(http::serve(listener, registry)))
            }
            _ => None,
        };
        let streamed = stream(&stream_args, out).await;
        notify(&[NotifyState::Stopping]);
        if let Some(server) = server {
            server.abort();
        }
        streamed
    })
}

/// The recording at `path` (`-o`): failures only with `--only-failed`; the lines it loses
/// are counted in the metrics, when they are served.
fn recording(
    path: &Path,
    args: &AgentArgs,
    mode: &ModeDecision,
    metrics: Option<&Metrics>,
) -> Result<Recording> {
    let mut recording = Recording::new(open_recording(path, &args.rotation, mode)?)
        .failures_only(args.stream.only_failed);
    if let Some(metrics) = metrics {
        let lost = metrics.lines_lost();
        recording = recording.on_lost(Box::new(move |cause| lost.add(cause)));
    }
    Ok(recording)
}

/// The metrics address, bound now (before anything else is created), non-blocking for tokio.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("serving metrics on {addr} (--metrics)"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("serving metrics on {addr}"))?;
    Ok(listener)
}

/// The probes are attached: tells systemd, when it runs us with `Type=notify`.
fn ready() {
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("probes attached; recording and serving metrics as configured"),
    ]);
}

/// Sends `state` to systemd's notify socket (nothing happens without `NOTIFY_SOCKET`).
fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("telling systemd ({state:?}): {e}");
    }
}
