//! `cargo xtask test`: every check CI runs, in order, with a summary at the end.

use std::{
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    build_ebpf::{self, workspace_root},
    toolchain::{clean_command, Nightly, NIGHTLY},
};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for `cargo test` (after `--`), for example a test name filter.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

struct Outcome {
    step: &'static str,
    passed: bool,
    took: Duration,
}

/// Runs every step even after a failure, so one run shows everything that is wrong.
pub fn test(opts: &Options) -> Result<ExitCode> {
    let root = workspace_root();
    let mut outcomes = Vec::new();
    let mut step = |step: &'static str, f: &mut dyn FnMut() -> Result<bool>| {
        println!("\nxtask: ── {step} ──");
        let started = Instant::now();
        let passed = f().unwrap_or_else(|e| {
            eprintln!("xtask: {step}: {e:#}");
            false
        });
        outcomes.push(Outcome {
            step,
            passed,
            took: started.elapsed(),
        });
    };

    step("build eBPF object", &mut || {
        build_ebpf::build_ebpf(&build_ebpf::Options::default()).map(|_| true)
    });
    step("cargo fmt --check", &mut || {
        let workspace = cargo(&root, &["fmt", "--all", "--check"])?;
        let ebpf = cargo(&root.join("probe-ebpf"), &["fmt", "--check"])?;
        Ok(workspace && ebpf)
    });
    step("cargo clippy (user space)", &mut || {
        cargo(
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )
    });
    step("cargo clippy (eBPF)", &mut || {
        Nightly::detect()?.ensure_cargo_component("clippy", "clippy")?;
        let mut cmd = clean_command("cargo");
        cmd.current_dir(root.join("probe-ebpf"))
            .arg(format!("+{NIGHTLY}"))
            .args([
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .args(["--target-dir", "../target", "--", "-D", "warnings"]);
        Ok(cmd.status()?.success())
    });
    let mut test_args = vec!["test", "--workspace"];
    if !opts.cargo_test_args.is_empty() {
        test_args.push("--");
        test_args.extend(opts.cargo_test_args.iter().map(String::as_str));
    }
    step("cargo test (unit + root integration)", &mut || {
        cargo(&root, &test_args)
    });

    println!("\nxtask: summary");
    for o in &outcomes {
        let verdict = if o.passed { "ok  " } else { "FAIL" };
        println!("  {verdict}  {:<40} {:>6.1}s", o.step, o.took.as_secs_f64());
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cargo(dir: &std::path::Path, args: &[&str]) -> Result<bool> {
    let status = Command::new("cargo").current_dir(dir).args(args).status()?;
    Ok(status.success())
}
