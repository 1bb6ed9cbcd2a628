//! `cargo xtask vm-test`: busyprobe's root integration tests on other kernels, booted under
//! qemu with a busybox initramfs.
//!
//! - [`kernels`]: the matrix and its Debian packages (download and cache);
//! - [`modules`]: the kernel modules the tests need (`loop`, `ext4`), in load order;
//! - [`guest`]: what goes into the guest, and its `/init`;
//! - [`initramfs`]: the newc cpio writer;
//! - [`qemu`]: one boot under a timeout, its console streamed to a log;
//! - [`report`]: the guest's result lines and qemu's exit status, read into a verdict.
//!
//! - [`host`]: the same stages directly on this machine's kernel (no VM);
//! - [`summary`]: what is printed per kernel and at the end.
//!
//! [`powercut`] (`cargo xtask vm-powercut`) boots the same guests with a disk, to cut their
//! power while `busyprobe agent` records onto it.

mod guest;
mod host;
mod initramfs;
mod kernels;
mod modules;
pub mod powercut;
mod qemu;
mod report;
mod summary;

use std::{
    fs::{self, File},
    io::BufWriter,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::{build_ebpf::workspace_root, run::build_busyprobe};
use kernels::Kernel;
use qemu::{Accel, Boot};
use report::{GuestReport, Verdict};

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args)]
pub struct Options {
    /// Kernels to test: debian-6.1, debian-6.12, host, or all (repeatable).
    #[arg(long = "kernel", default_value = "all")]
    pub kernels: Vec<String>,
    /// CPU accelerator: tcg works everywhere; kvm needs a working /dev/kvm.
    #[arg(long, value_enum, default_value = "tcg")]
    pub accel: Accel,
    /// Kill a guest after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// The probes' mode for every busyprobe the tests start (`BUSYPROBE_MODE`): auto (the
    /// default: enhanced where BPF LSM is active, else fentry where the kernel allows it),
    /// tracepoint, fentry or enhanced. Logs are then named `<kernel>-<mode>.log`.
    #[arg(long, value_parser = ["auto", "tracepoint", "fentry", "enhanced"])]
    pub mode: Option<String>,
    /// Only boot, print `uname -r` and run `busyprobe doctor`; no integration tests.
    #[arg(long)]
    pub no_tests: bool,
    /// Print the guest's console as it arrives (it always goes to the log file).
    #[arg(long)]
    pub echo: bool,
    /// Arguments for the integration test binary (after `--`): a name filter, `--skip NAME`,
    /// `--exact`, `--test-threads N`.
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// Root integration trials the guests leave out (`--skip NAME`), each with why: printed with
/// every guest's run. The host row runs them.
const NOT_IN_GUESTS: &[(&str, &str)] = &[
    (
        "agent_metrics_reach_a_real_prometheus",
        "it runs Debian's prometheus server, which the guests do not have (the host's \
         `cargo xtask test` and the host row run it)",
    ),
    (
        "agent_replaces_a_stale_socket_and_opens_it_to_a_group",
        "it opens the socket to Debian's daemon group and connects as nobody; the guests \
         have no user database (the host's `cargo xtask test` and the host row run it)",
    ),
    (
        "a_pod_under_real_containerd_pins_the_nodes_volume",
        CONTAINERD,
    ),
    ("an_ebusy_names_the_holders_pod", CONTAINERD),
    ("a_deleted_containers_holder_is_still_named", CONTAINERD),
    ("a_runtime_without_cri_is_one_notice", CONTAINERD),
    (
        "an_unmount_from_inside_a_pod_names_the_callers_pod",
        CONTAINERD,
    ),
    ("a_cri_socket_that_cannot_answer_is_one_notice", CONTAINERD),
    (
        "who_pod_by_name_lists_the_pods_volume_and_its_holder",
        CONTAINERD,
    ),
    ("the_holders_shim_names_the_cri_socket", CONTAINERD),
    (
        "the_daemonsets_pod_names_the_holder_of_a_hosts_ebusy",
        CONTAINERD,
    ),
    (
        "the_daemonsets_pod_mounts_tracefs_when_the_node_has_none",
        CONTAINERD,
    ),
    (
        "the_daemonsets_pod_without_a_needed_capability_exits_naming_it",
        CONTAINERD,
    ),
];

/// Why the containerd trials (`tests/containerd.rs`, `tests/daemonset.rs`) stay on the host.
const CONTAINERD: &str = "it runs Debian's containerd, runc and umoci, which the guests do not \
                          have (the host's `cargo xtask test` and the host row run it)";

/// The plan a guest runs: `plan` with the trials of [`NOT_IN_GUESTS`] skipped, saying so.
fn for_guests(plan: &guest::Plan) -> guest::Plan {
    let mut plan = plan.clone();
    if let Some((_, args)) = &mut plan.tests {
        for (name, why) in NOT_IN_GUESTS {
            println!("xtask: vm: leaving out {name} in the guest: {why}");
            args.extend(["--skip".to_string(), (*name).to_string()]);
        }
    }
    plan
}

/// One kernel's outcome.
struct Outcome {
    kernel: Kernel,
    report: GuestReport,
    verdict: Verdict,
    /// Everything for this kernel: download (first time), packing, boot and tests.
    elapsed: Duration,
    /// qemu's own run time (none on the host).
    boot: Option<Duration>,
    log: PathBuf,
}

/// Builds everything, runs each kernel in turn, prints a summary; fails if any kernel failed.
pub fn vm_test(opts: &Options) -> Result<ExitCode> {
    let kernels = parse_kernels(&opts.kernels).map_err(anyhow::Error::msg)?;
    let busybox = if kernels.iter().any(|k| *k != Kernel::Host) {
        Some(qemu::ensure_host_tools()?)
    } else {
        None
    };
    let busyprobe = build_busyprobe(false)?;
    let tests = if opts.no_tests {
        None
    } else {
        Some((build_test_binary()?, opts.test_args.clone()))
    };
    let out_dir = workspace_root().join("target/vm-test");
    fs::create_dir_all(&out_dir)?;
    let plan = guest_plan(busyprobe, tests, opts.mode.clone())?;

    let mut outcomes = Vec::new();
    for kernel in kernels {
        println!("\nxtask: vm: ── {kernel} ──");
        let log = match &opts.mode {
            Some(mode) => out_dir.join(format!("{kernel}-{mode}.log")),
            None => out_dir.join(format!("{kernel}.log")),
        };
        let _ = fs::remove_file(&log); // never show an earlier run's log as this one's
        let started = Instant::now();
        let result = match kernel {
            Kernel::Host => host::run_on_host(&plan, &log),
            _ => run_in_vm(
                kernel,
                opts,
                &plan,
                busybox.as_deref().expect("checked"),
                &log,
            ),
        };
        // A kernel that could not even be tried is a row of the summary, not the end of it.
        let outcome = result.unwrap_or_else(|e| Outcome {
            kernel,
            report: GuestReport::default(),
            verdict: Verdict::NoReport(format!("not run: {e:#}")),
            elapsed: started.elapsed(),
            boot: None,
            log: log.clone(),
        });
        summary::print_outcome(&outcome);
        outcomes.push(outcome);
    }
    summary::print_summary(&outcomes);
    Ok(if outcomes.iter().all(|o| o.verdict == Verdict::Passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--kernel` values: names, or `all`; each kernel once, in the order given.
fn parse_kernels(values: &[String]) -> Result<Vec<Kernel>, String> {
    let mut kernels = Vec::new();
    for value in values {
        let more: Vec<Kernel> = if value == "all" {
            Kernel::ALL.to_vec()
        } else {
            vec![value.parse()?]
        };
        for k in more {
            if !kernels.contains(&k) {
                kernels.push(k);
            }
        }
    }
    Ok(kernels)
}

/// `cargo test -p probe-user --no-run --message-format=json`: the `integration` executable.
pub(crate) fn build_test_binary() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .current_dir(workspace_root())
        .args([
            "test",
            "-p",
            "probe-user",
            "--test",
            "integration",
            "--no-run",
        ])
        .args(["--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    ensure!(
        out.status.success(),
        "building the integration tests failed"
    );
    test_executable(&String::from_utf8_lossy(&out.stdout))
        .context("cargo printed no executable for the `integration` test target")
}

/// The executable of the `integration` test target in cargo's JSON messages.
fn test_executable(messages: &str) -> Option<PathBuf> {
    messages.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "integration"
            && v["profile"]["test"] == true)
            .then(|| v["executable"].as_str().map(PathBuf::from))?
    })
}

/// The guest plan: the binaries at their host paths, the files the test binary reads at its
/// compiled-in paths (the eBPF object, a recording fixture) and an empty `docs/` directory:
/// finding no committed `docs/comparison.md` there, the comparison test writes its text into
/// it (on the host it only compares, unless `BUSYPROBE_WRITE_COMPARISON=1`).
fn guest_plan(
    busyprobe: PathBuf,
    tests: Option<(PathBuf, Vec<String>)>,
    mode: Option<String>,
) -> Result<guest::Plan> {
    let root = workspace_root();
    let test_data = [
        root.join("target/bpfel-unknown-none/debug/probe-ebpf"),
        root.join("probe-user/src/recording/testdata"),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect();
    Ok(guest::Plan {
        busyprobe,
        tests,
        test_cwd: root.join("probe-user"),
        test_data,
        writable_dirs: vec![root.join("docs")],
        mode,
    })
}

/// Downloads the kernel (once), packs the initramfs, boots it.
fn run_in_vm(
    kernel: Kernel,
    opts: &Options,
    plan: &guest::Plan,
    busybox: &Path,
    log: &Path,
) -> Result<Outcome> {
    let started = Instant::now();
    let unpacked = kernels::ensure_kernel(kernel)?;
    let modules = modules::resolve(&unpacked.modules_dir(), modules::WANTED)?;
    let plan = &for_guests(plan);
    let (tree, missing) = guest::build_tree(plan, busybox, &modules)?;
    if !missing.is_empty() {
        println!(
            "xtask: vm: not on this host, so not in the guest either: {} (tests using them will fail or skip)",
            missing.join(", ")
        );
    }
    let initrd = log.with_extension("cpio");
    let size = tree.write_newc(BufWriter::new(File::create(&initrd)?))?;
    let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    println!(
        "xtask: vm: {} ({}), modules {}, initramfs {} MiB; booting ({:?}, {} CPUs, {} MiB, timeout {} s); console in {}",
        unpacked.package,
        unpacked.release,
        names.join(" "),
        size >> 20,
        opts.accel,
        opts.smp,
        opts.memory,
        opts.timeout,
        log.display()
    );
    let boot = Boot {
        kernel: unpacked.vmlinuz(),
        initrd,
        log: log.to_path_buf(),
        accel: opts.accel,
        smp: opts.smp,
        memory_mib: opts.memory,
        timeout: Duration::from_secs(opts.timeout),
        disk: None,
    };
    let result = boot.run(opts.echo)?;
    let verdict = report::verdict(&result.report, result.exit);
    Ok(Outcome {
        kernel,
        report: result.report,
        verdict,
        elapsed: started.elapsed(),
        boot: Some(result.elapsed),
        log: log.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_list_expands_all_and_dedups() {
        let k = |v: &[&str]| parse_kernels(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(k(&["all"]).unwrap(), Kernel::ALL);
        assert_eq!(
            k(&["host", "debian-6.1", "host"]).unwrap(),
            [Kernel::Host, Kernel::Debian61]
        );
        assert!(k(&["debian-7"]).is_err());
    }

    #[test]
    fn guests_skip_the_trials_they_cannot_run_and_those_trials_exist() {
        let plan = guest::Plan {
            busyprobe: "/w/busyprobe".into(),
            tests: Some(("/w/integ".into(), vec!["holder_".into()])),
            test_cwd: "/w/probe-user".into(),
            test_data: vec![],
            writable_dirs: vec![],
            mode: None,
        };
        let guests = for_guests(&plan);
        let (_, args) = guests.tests.unwrap();
        assert_eq!(
            args,
            [
                "holder_",
                "--skip",
                "agent_metrics_reach_a_real_prometheus",
                "--skip",
                "agent_replaces_a_stale_socket_and_opens_it_to_a_group",
                "--skip",
                "a_pod_under_real_containerd_pins_the_nodes_volume",
                "--skip",
                "an_ebusy_names_the_holders_pod",
                "--skip",
                "a_deleted_containers_holder_is_still_named",
                "--skip",
                "a_runtime_without_cri_is_one_notice",
                "--skip",
                "an_unmount_from_inside_a_pod_names_the_callers_pod",
                "--skip",
                "a_cri_socket_that_cannot_answer_is_one_notice",
                "--skip",
                "who_pod_by_name_lists_the_pods_volume_and_its_holder",
                "--skip",
                "the_holders_shim_names_the_cri_socket",
                "--skip",
                "the_daemonsets_pod_names_the_holder_of_a_hosts_ebusy",
                "--skip",
                "the_daemonsets_pod_mounts_tracefs_when_the_node_has_none",
                "--skip",
                "the_daemonsets_pod_without_a_needed_capability_exits_naming_it",
            ]
        );
        // A renamed trial would silently run (and fail) in the guests again.
        let trials: String = [
            "tests/agent.rs",
            "tests/clients.rs",
            "tests/containerd.rs",
            "tests/daemonset.rs",
        ]
        .iter()
        .map(|f| fs::read_to_string(workspace_root().join(f)).unwrap())
        .collect();
        for (name, _) in NOT_IN_GUESTS {
            assert!(trials.contains(&format!("        {name},\n")), "{name}");
        }
        assert!(for_guests(&guest::Plan {
            tests: None,
            ..plan
        })
        .tests
        .is_none());
    }

    #[test]
    fn finds_the_integration_executable_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"busyprobe"},"profile":{"test":false},"executable":"/t/debug/busyprobe"}
{"reason":"compiler-artifact","target":{"name":"busyprobe"},"profile":{"test":true},"executable":"/t/debug/deps/busyprobe-1"}
{"reason":"compiler-artifact","target":{"name":"integration"},"profile":{"test":true},"executable":"/t/debug/deps/integration-2"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executable(messages),
            Some(PathBuf::from("/t/debug/deps/integration-2"))
        );
        assert_eq!(test_executable("not json\n"), None);
    }
}
