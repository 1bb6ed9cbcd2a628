//! `cargo xtask build-ebpf`: builds `probe-ebpf` for `bpfel-unknown-none`.

use std::{
    env,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{ensure, Context, Result};

use crate::toolchain::{self, clean_command, Nightly, NIGHTLY};

/// Options of `cargo xtask build-ebpf`.
#[derive(clap::Args, Clone, Copy, Default)]
pub struct Options {
    /// Build the release profile (the object embedded by `cargo build --release`).
    #[arg(long)]
    pub release: bool,
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Builds the eBPF object and returns its path.
pub fn build_ebpf(opts: &Options) -> Result<PathBuf> {
    let started = Instant::now();
    let nightly = Nightly::detect()?;
    nightly.ensure_rust_src()?;
    let linker_dir = toolchain::ensure_bpf_linker(&nightly)?;

    let root = workspace_root();
    let profile = if opts.release { "release" } else { "debug" };
    let mut path = env::split_paths(&env::var_os("PATH").unwrap_or_default()).collect::<Vec<_>>();
    path.insert(0, linker_dir.clone());

    let mut cmd = clean_command("cargo");
    cmd.current_dir(root.join("probe-ebpf"))
        .arg(format!("+{NIGHTLY}"))
        .args([
            "build",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(root.join("target"))
        .env("PATH", env::join_paths(path)?)
        // BTF in the object: aya-log and bpf_loop callbacks need func_info.
        .env(
            "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
            "-C debuginfo=2 -C link-arg=--btf",
        );
    if opts.release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo +nightly build for probe-ebpf")?;
    ensure!(status.success(), "building probe-ebpf failed ({status})");

    let object = root
        .join("target/bpfel-unknown-none")
        .join(profile)
        .join("probe-ebpf");
    ensure!(
        object.is_file(),
        "the build said ok but {} is missing",
        object.display()
    );
    println!(
        "xtask: eBPF object ({profile}, nightly {} LLVM {}, bpf-linker from {}) at {} in {:.1}s",
        nightly.release,
        nightly.llvm_major,
        linker_dir.display(),
        object.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(object)
}
