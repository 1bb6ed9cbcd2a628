//! `busyprobe record -o FILE`: the event stream of `watch --json`, into a rotating recording.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::pipeline::probes::{block_on, stream, Output};
use crate::{
    cli::RecordArgs,
    kernel, loader,
    sink::{
        json::{header_line, JsonLines},
        record::{RecordPlan, RotatingFile},
        status::WithStatus,
    },
};

/// Records until a signal or `--duration`.
pub fn run(args: &RecordArgs) -> Result<ExitCode> {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = loader::resolve_mode("record", args.stream.mode)?;
    let header = header_line(
        &host,
        &kernel::release(),
        mode.mode.as_str(),
        std::time::SystemTime::now(),
    );
    let plan = RecordPlan {
        path: args.output.clone(),
        rotate_at: args.rotate,
        keep: args.keep,
        header: header.into_bytes(),
    };
    let file = RotatingFile::create(plan)
        .with_context(|| format!("creating the recording {}", args.output.display()))?;
    tracing::info!("recording to {}", args.output.display());
    let out = Output {
        sink: Box::new(WithStatus::new(
            JsonLines::new(file),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )),
        stop_after: args.duration.map(Into::into),
        stop_on: None,
        is_stdout: false,
        command: "record",
        mode,
    };
    block_on(stream(&args.stream, out))
}
