//! `cargo xtask run [-- ARGS]`: build everything, then run `busyprobe ARGS` as root.

use std::process::{Command, ExitCode};

use anyhow::{ensure, Context, Result};

use crate::build_ebpf::{self, workspace_root};

/// What `cargo xtask run` runs when given no arguments: the demo, an incident explained live.
const DEFAULT_ARGS: &[&str] = &["demo"];

/// Options of `cargo xtask run`.
#[derive(clap::Args)]
pub struct Options {
    /// Build and run the release profile.
    #[arg(long)]
    pub release: bool,
    /// Arguments for `busyprobe` (after `--`); none runs the demo (`demo`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Builds the eBPF object and the binary, then runs it.
pub fn run(opts: &Options) -> Result<ExitCode> {
    let binary = build_busyprobe(opts.release)?;
    let args: Vec<&str> = if opts.args.is_empty() {
        DEFAULT_ARGS.to_vec()
    } else {
        opts.args.iter().map(String::as_str).collect()
    };
    let needs_root = !matches!(
        args.first().copied(),
        Some("doctor" | "replay" | "report" | "--help" | "-h" | "--version" | "-V" | "help")
    );
    if needs_root && !nix::unistd::geteuid().is_root() {
        eprintln!(
            "xtask: busyprobe loads eBPF programs and needs root. Run it as root:\n    sudo {} {}",
            binary.display(),
            args.join(" ")
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("xtask: running {} {}", binary.display(), args.join(" "));
    let status = Command::new(&binary)
        .args(&args)
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Builds the eBPF object and the `busyprobe` binary for one profile; returns the binary.
pub fn build_busyprobe(release: bool) -> Result<std::path::PathBuf> {
    build_ebpf::build_ebpf(&build_ebpf::Options { release })?;
    let root = workspace_root();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .args(["build", "--package", "probe-user", "--bin", "busyprobe"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    ensure!(status.success(), "building busyprobe failed ({status})");
    let profile = if release { "release" } else { "debug" };
    Ok(root.join("target").join(profile).join("busyprobe"))
}
