//! `busyprobe watch`: the live stream of unmount attempts, as text or JSON Lines on stdout.

use std::{io, process::ExitCode};

use anyhow::Result;

use crate::{
    cli::WatchArgs,
    loader,
    loader::OpenTimes,
    pipeline::probes::{block_on, stream, Output},
    sink::{json::JsonLines, text::TextLines, Sink},
};

/// Runs `watch` on a single-threaded runtime.
pub fn run(args: WatchArgs) -> Result<ExitCode> {
    if let Some(socket) = &args.connect {
        return super::connect::watch(socket, args.json, args.stream.only_failed);
    }
    let mode = loader::resolve_mode("watch", args.stream.mode)?;
    let stdout = io::stdout().lock();
    let sink: Box<dyn Sink> = if args.json {
        Box::new(JsonLines::new(stdout))
    } else {
        Box::new(TextLines::new(stdout))
    };
    let out = Output {
        sink,
        stop_after: None,
        stop_on: None,
        is_stdout: true,
        command: "watch",
        mode,
        open_times: args.stream.open_times(OpenTimes::All),
        on_ready: None,
    };
    block_on(stream(&args.stream, out))
}
