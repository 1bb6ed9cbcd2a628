//! Developer tasks for busyprobe: `cargo xtask build-ebpf | run | test | image | bench | vm-test |
//! vm-powercut`.
//!
//! The eBPF programs need a nightly toolchain with `rust-src` and `bpf-linker`; this crate
//! installs both when they are missing (see [`toolchain`]) so that a fresh machine needs
//! nothing but `cargo xtask ...`.

mod bench;
mod build_ebpf;
mod image;
mod manifests;
mod module_cycles;
mod run;
mod test;
mod toolchain;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// busyprobe's build, run and test tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object (installs rust-src and bpf-linker first when missing).
    BuildEbpf(build_ebpf::Options),
    /// Build everything and run `busyprobe` (as root) with the given arguments.
    Run(run::Options),
    /// Everything CI checks: fmt, clippy, unit tests and the root integration tests.
    Test(test::Options),
    /// Build the release binary and an OCI image of it offline (umoci), for
    /// `deploy/kubernetes/`: target/image/.
    Image(image::Options),
    /// Benchmarks against baselines measured in the same run (as root); none named lists them.
    Bench(bench::Options),
    /// The root integration tests on other kernels (Debian 6.1, 6.12) booted under qemu.
    VmTest(vm::Options),
    /// Cut a guest's power while `busyprobe agent` records to its disk, boot it again and
    /// check the recording (by hand: slow under emulation; not part of `test`).
    VmPowercut(vm::powercut::Options),
    /// Internal: a process of `bench`'s workload that holds open files until killed.
    #[command(name = "__bench-holder", hide = true)]
    BenchHolder(bench::HolderOptions),
    /// Internal: one timed loop of `bench overhead`'s workloads; prints its elapsed time.
    #[command(name = "__bench-loop", hide = true)]
    BenchLoop(bench::LoopOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::BuildEbpf(opts) => build_ebpf::build_ebpf(&opts).map(|_| ExitCode::SUCCESS),
        Task::Run(opts) => run::run(&opts),
        Task::Test(opts) => test::test(&opts),
        Task::Image(opts) => image::image(&opts),
        Task::Bench(opts) => bench::bench(&opts),
        Task::VmTest(opts) => vm::vm_test(&opts),
        Task::VmPowercut(opts) => vm::powercut::vm_powercut(&opts),
        Task::BenchHolder(opts) => bench::holder(&opts),
        Task::BenchLoop(opts) => bench::bench_loop(&opts),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Flattened option structs share one namespace: two fields with one name (`rate` in two
    /// benchmarks' options) make every `cargo xtask bench` panic at start.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
