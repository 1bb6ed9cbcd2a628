//! `busyprobe agent`: the node daemon. One set of probes (the same [`stream`] as `watch`,
//! `top` and `record`) feeds a recording (`-o`), Prometheus metrics (`--metrics`) and live
//! clients on a Unix socket (`--socket`) at once, through one [`FanOut`] sink, until SIGTERM
//! or SIGINT. A recording that cannot write (a full disk) loses lines, counted and marked in
//! it, and never stops the metrics or the clients.
//!
//! Start-up checks everything that can be refused before anything is created: the metrics
//! address is bound first (a port in use creates no recording), then the socket, then the
//! recording is created, then the probes are loaded. Under systemd (`Type=notify`),
//! `READY=1` is sent once they are attached and `STOPPING=1` when the stream ends.

use std::{net::SocketAddr, os::unix::fs::DirBuilderExt, path::Path, process::ExitCode, sync::Arc};

use anyhow::{bail, Context as _, Result};
use prometheus_client::registry::Registry;
use sd_notify::NotifyState;
use tokio::{sync::oneshot, task::JoinHandle};

use super::record::{open_recording, stream_header};
use crate::{
    cli::{AgentArgs, DEFAULT_SOCKET},
    kernel, loader,
    loader::ModeDecision,
    loader::OpenTimes,
    pipeline::probes::{block_on, stream, Output},
    sink::{
        clients::{socket::ClientSocket, ClientCounts, Hub, ToClients},
        fanout::FanOut,
        metrics::{http, About, Metrics},
        record::Recording,
        Sink,
    },
};

/// Runs the agent until a signal.
pub fn run(args: &AgentArgs) -> Result<ExitCode> {
    if args.output.is_none() && args.no_metrics && args.no_socket {
        bail!("nothing to do: give -o FILE to record, or leave the metrics or the socket on");
    }
    let mode = loader::resolve_mode("agent", args.stream.mode)?;
    let listener = match args.no_metrics {
        true => None,
        false => Some(bind(args.metrics)?),
    };
    let socket = match args.no_socket {
        true => None,
        false => Some(bind_socket(args)?),
    };
    // One header for the recording and the clients: they see the same lines.
    let header = stream_header(&mode);
    let counts = ClientCounts::default();
    let hub = socket.as_ref().map(|_| Hub::new(&header, counts.clone()));
    let mut metrics = listener
        .is_some()
        .then(|| metrics(&mode, args.metrics_holder_names));
    if let (Some(metrics), Some(_)) = (&mut metrics, &hub) {
        metrics.count_clients(&counts);
    }
    let recording = match &args.output {
        Some(path) => Some(recording(path, args, header, metrics.as_ref())?),
        None => None,
    };
    let registry = metrics.as_ref().map(Metrics::registry);
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    sinks.extend(
        hub.clone()
            .map(|hub| Box::new(ToClients::new(hub)) as Box<dyn Sink>),
    );
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
        open_times: args.stream.open_times(OpenTimes::Contended),
        on_ready: Some(Box::new(ready)),
    };
    if let (Some(listener), Some(registry)) = (listener, registry) {
        tracing::info!(
            "serving metrics on http://{}{}",
            args.metrics,
            http::METRICS_PATH
        );
        serve_metrics(listener, registry)?;
    }
    block_on(async move {
        let clients = socket
            .zip(hub)
            .map(|(socket, hub)| serve_clients(socket, hub));
        let streamed = stream(&stream_args, out).await;
        notify(&[NotifyState::Stopping]);
        if let Some((stop, served)) = clients {
            let _ = stop.send(());
            served.await.context("serving clients")??;
        }
        streamed
    })
}

/// The recording at `path` (`-o`) with `header`: failures only with `--only-failed`; the
/// lines it loses are counted in the metrics, when they are served.
fn recording(
    path: &Path,
    args: &AgentArgs,
    header: String,
    metrics: Option<&Metrics>,
) -> Result<Recording> {
    let mut recording = Recording::new(open_recording(path, &args.rotation, header)?)
        .failures_only(args.stream.only_failed);
    if let Some(metrics) = metrics {
        let lost = metrics.lines_lost();
        recording = recording.on_lost(Box::new(move |cause| lost.add(cause)));
    }
    Ok(recording)
}

/// The clients' socket (`--socket`); the default's directory is created when missing.
fn bind_socket(args: &AgentArgs) -> Result<ClientSocket> {
    let runtime_dir = Path::new(DEFAULT_SOCKET).parent();
    if let Some(dir) =
        runtime_dir.filter(|d| args.socket == Path::new(DEFAULT_SOCKET) && !d.exists())
    {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating {} for the socket", dir.display()))?;
    }
    ClientSocket::bind(&args.socket, args.socket_group.as_deref())
}

/// Serves the metrics on a thread and runtime of their own, until the process exits: a
/// scrape never waits behind the stream's work (the registry's metrics are atomics the
/// stream updates).
fn serve_metrics(listener: std::net::TcpListener, registry: Arc<Registry>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the metrics' runtime")?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => http::serve(listener, registry).await,
                    Err(e) => tracing::error!("serving metrics: {e}"),
                }
            })
        })
        .context("starting the metrics' thread")?;
    Ok(())
}

/// The metrics of the agent's stream.
fn metrics(mode: &ModeDecision, holder_names: usize) -> Metrics {
    let about = About {
        version: env!("CARGO_PKG_VERSION").into(),
        probe_mode: mode.mode.as_str().into(),
        kernel: kernel::release(),
    };
    Metrics::new(about, holder_names)
}

/// Serves the live clients until told to stop: the stop, and the task to wait for.
fn serve_clients(
    socket: ClientSocket,
    hub: Arc<Hub>,
) -> (oneshot::Sender<()>, JoinHandle<Result<()>>) {
    tracing::info!("serving live clients on {}", socket.path().display());
    let (stop, stopped) = oneshot::channel();
    (stop, tokio::spawn(socket.serve(hub, stopped)))
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
