//! `busyprobe`: who is holding the mount that `umount` says is busy?
//!
//! Events flow one way: kernel probes → ring buffer → [`pipeline`] ([`decode`], process
//! context, [`filter`], attribution by the [`attribution`] engine on blocking threads,
//! transient holders from traced releases) → [`sink`] (human lines, JSON Lines, the `top`
//! view, a recording). The answers are [`model`] data; [`commands`] only build a pipeline
//! and choose its sink. See `docs/architecture.md`.

mod attribution;
mod cli;
mod clock;
mod commands;
mod container;
mod decode;
mod event;
mod explain;
mod filter;
mod kernel;
mod kubernetes;
mod loader;
mod model;
mod paths;
mod pipeline;
mod recording;
mod sink;
mod state;
mod stats;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("busyprobe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Diagnostics go to stderr; `RUST_LOG` overrides the level. eBPF-side aya-log records
/// arrive through the `log` crate and are forwarded to `tracing` by the subscriber.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "busyprobe=info,warn",
        1 => "busyprobe=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
}
