//! `busyprobe doctor`: what this kernel offers and which mode busyprobe will use.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::DoctorArgs;

/// Prints the report.
pub fn run(_args: &DoctorArgs) -> Result<ExitCode> {
    anyhow::bail!("doctor: not written yet")
}
