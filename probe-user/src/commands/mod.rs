//! One module per subcommand.

mod agent;
mod connect;
mod demo;
mod doctor;
mod progress;
mod record;
mod report;
mod shell_help;
mod top;
mod watch;
mod who;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command, StreamArgs, TopArgs, WatchArgs, KEEP_ON_SCREEN};

/// Runs the chosen subcommand; with none, `top` on a terminal and `watch` otherwise (defaults).
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Watch(args)) => watch::run(args),
        Some(Command::Top(args)) => top::live(&args),
        Some(Command::Replay(args)) => top::replay(&args),
        Some(Command::Doctor(args)) => doctor::run(&args),
        Some(Command::Who(args)) => Ok(who::run(&args)),
        Some(Command::Demo) => demo::run(),
        Some(Command::Completions { shell }) => shell_help::completions(shell),
        Some(Command::Man) => shell_help::man(),
        Some(Command::DemoIncident { dir }) => demo::incident(&dir),
        Some(Command::DemoHelper { role, file }) => demo::helper(&role, &file),
        // On a terminal, the live view; piped or redirected, the stream.
        None if top::on_a_terminal() => top::live(&TopArgs {
            keep: KEEP_ON_SCREEN,
            connect: None,
            stream: StreamArgs::default(),
        }),
        None => watch::run(WatchArgs {
            json: false,
            connect: None,
            stream: StreamArgs::default(),
        }),
        Some(Command::Record(args)) => record::run(&args),
        Some(Command::Agent(args)) => agent::run(&args),
        Some(Command::Report(args)) => report::run(&args),
    }
}
