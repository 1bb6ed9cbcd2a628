//! `cargo xtask test`: every check CI runs, in order, with a summary at the end.

use std::{
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    build_ebpf::{self, workspace_root},
    image, manifests, module_cycles,
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
    step("module imports (no cycle)", &mut || {
        module_cycles::check(&root.join("probe-user/src")).map(|()| true)
    });
    step("k8s manifests (kubernetes-validate)", &mut || {
        manifests::validate(&root)
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
    // The DaemonSet's trials (tests/daemonset.rs) run this image under containerd: built
    // from the release binary (a no-op build when it is up to date; the image itself takes
    // about 2 s).
    step("image (cargo xtask image)", &mut || {
        image::build(false).map(|_| true)
    });
    let mut test_args = vec!["test", "--workspace"];
    if !opts.cargo_test_args.is_empty() {
        test_args.push("--");
        test_args.extend(opts.cargo_test_args.iter().map(String::as_str));
    }
    let mut counts = TestCounts::default();
    step("cargo test (unit + root integration)", &mut || {
        let (passed, c) = cargo_test(&root, &test_args)?;
        counts = c;
        Ok(passed)
    });
    let strict = ignored_fails(
        nix::unistd::geteuid().is_root(),
        std::env::var("CI").ok().as_deref(),
    );
    if strict {
        step("no test ignored or skipped", &mut || {
            Ok(match counts.ignored_verdict() {
                Some(why) => {
                    eprintln!("xtask: {why}");
                    false
                }
                None => true,
            })
        });
    }

    println!("\nxtask: summary");
    for o in &outcomes {
        let verdict = if o.passed { "ok  " } else { "FAIL" };
        println!("  {verdict}  {:<40} {:>6.1}s", o.step, o.took.as_secs_f64());
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    println!(
        "xtask: {} of {} steps ok; tests: {} passed, {} failed, {} ignored",
        outcomes.len() - failed,
        outcomes.len(),
        counts.passed,
        counts.failed,
        counts.ignored
    );
    if counts.ignored > 0 && !strict {
        println!(
            "xtask: {} tests were IGNORED (integration tests need root: see their SKIPPED line \
             above); as root or with CI=true that fails the run",
            counts.ignored
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether an ignored (skipped) test fails `cargo xtask test`: as root, where every test can
/// run, and in CI (`CI=true`), where a skip would pass unseen.
fn ignored_fails(is_root: bool, ci: Option<&str>) -> bool {
    is_root || ci.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Totals of every `test result:` line cargo printed, and the names of the ignored tests.
#[derive(Default, Clone)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
    ignored_names: Vec<String>,
}

impl TestCounts {
    /// Why the run fails when ignored tests fail it (see [`ignored_fails`]), if any was.
    fn ignored_verdict(&self) -> Option<String> {
        (self.ignored > 0).then(|| {
            format!(
                "{} tests were ignored or skipped, which fails the run as root or in CI: {}",
                self.ignored,
                if self.ignored_names.is_empty() {
                    "(see the output above)".to_owned()
                } else {
                    self.ignored_names.join(", ")
                }
            )
        })
    }

    /// Adds one line of libtest output: a summary (see [`TestCounts::add_result`]) or a test's
    /// own line, `test NAME ... ignored` (with libtest's `, reason` when it gave one).
    fn add_line(&mut self, line: &str) {
        if let Some((name, verdict)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        {
            if verdict.starts_with("ignored") {
                self.ignored_names.push(name.trim_end().to_owned());
            }
            return;
        }
        self.add_result(line);
    }

    /// Adds a libtest summary line such as
    /// `test result: ok. 42 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    fn add_result(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, echoing its output and adding up its result lines.
fn cargo_test(dir: &std::path::Path, args: &[&str]) -> Result<(bool, TestCounts)> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("cargo")
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut counts = TestCounts::default();
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        counts.add_line(&line);
    }
    Ok((child.wait()?.success(), counts))
}

fn cargo(dir: &std::path::Path, args: &[&str]) -> Result<bool> {
    let status = Command::new("cargo").current_dir(dir).args(args).status()?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::{ignored_fails, TestCounts};

    #[test]
    fn adds_up_libtest_result_lines() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 42 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.25s");
        c.add_line(
            "test result: FAILED. 3 passed; 2 failed; 14 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 14 tests");
        assert_eq!((c.passed, c.failed, c.ignored), (45, 2, 14));
    }

    #[test]
    fn an_ignored_test_fails_the_run_as_root_or_in_ci() {
        let mut c = TestCounts::default();
        c.add_line("test holder_fd ... ok");
        // libtest-mimic pads the names to one width.
        c.add_line("test holder_loop_device      ... ignored");
        c.add_line("test slow_one ... ignored, needs a GPU");
        c.add_line("test result: ok. 1 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out");
        assert_eq!(c.ignored, 2);
        let why = c.ignored_verdict().expect("ignored tests give a verdict");
        assert!(why.contains("holder_loop_device, slow_one"), "{why}");
        assert!(ignored_fails(true, None));
        assert!(ignored_fails(false, Some("true")));
        assert!(ignored_fails(false, Some("1")));
        assert!(!ignored_fails(false, None));
        assert!(!ignored_fails(false, Some("false")));
        let mut clean = TestCounts::default();
        clean.add_line("test holder_fd ... ok");
        clean
            .add_line("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!(clean.ignored_verdict(), None);
    }
}
