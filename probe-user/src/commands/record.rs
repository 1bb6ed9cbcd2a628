//! `busyprobe record -o FILE`: the event stream of `watch --json`, into a rotating recording
//! that syncs itself (`--fsync`) and outlives a full disk (lines it cannot write are counted,
//! and marked in it once it writes again: [`Recording`]).

use std::{path::Path, process::ExitCode};

use anyhow::{Context, Result};

use crate::pipeline::probes::{block_on, stream, Output};
use crate::{
    cli::{RecordArgs, RotationArgs},
    kernel,
    loader::OpenTimes,
    loader::{self, ModeDecision},
    sink::{
        json::header_line,
        record::{RecordPlan, Recording, RotatingFile, SyncEvery},
        status::WithStatus,
    },
};

/// Records until a signal or `--duration`.
pub fn run(args: &RecordArgs) -> Result<ExitCode> {
    let mode = loader::resolve_mode("record", args.stream.mode)?;
    let file = open_recording(&args.output, &args.rotation, stream_header(&mode))?;
    let out = Output {
        sink: Box::new(WithStatus::new(
            Recording::new(file),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )),
        stop_after: args.duration.map(Into::into),
        stop_on: None,
        is_stdout: false,
        command: "record",
        mode,
        open_times: args.stream.open_times(OpenTimes::All),
        on_ready: None,
    };
    block_on(stream(&args.stream, out))
}

/// Starts the recording at `path` (`record -o`, `agent -o`) with `header` (a
/// [`stream_header`]) in each file; an existing file is rotated away as `rotation` says.
pub(super) fn open_recording(
    path: &Path,
    rotation: &RotationArgs,
    header: String,
) -> Result<RotatingFile> {
    let plan = RecordPlan {
        path: path.to_path_buf(),
        rotate_at: rotation.rotate,
        keep: rotation.keep,
        header: header.into_bytes(),
        sync: rotation.fsync.0.map_or(SyncEvery::Off, SyncEvery::Interval),
    };
    let file = RotatingFile::create(plan)
        .with_context(|| format!("creating the recording {}", path.display()))?;
    tracing::info!("recording to {}", path.display());
    Ok(file)
}

/// The `header` line of a stream starting now (a recording's, the agent's clients'): this
/// host, kernel and probe `mode`.
pub(super) fn stream_header(mode: &ModeDecision) -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    header_line(
        &host,
        &kernel::release(),
        mode.mode.as_str(),
        std::time::SystemTime::now(),
    )
}
