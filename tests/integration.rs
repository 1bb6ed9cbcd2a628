//! Root integration tests: the real `busyprobe` binary with the real probes on this kernel.
//!
//! The test binary has two modes. With `BUSYPROBE_FIXTURE` set it is a fixture (see
//! `support/fixture.rs`): it runs the plan it was given and exits. Otherwise it runs every
//! trial with libtest-mimic; without root they are all reported as ignored, loudly (and
//! `cargo xtask test` fails on an ignored trial under root or in CI). With
//! `BUSYPROBE_PODBENCH` set it is the containerd node of `cargo xtask bench pods` (see
//! `podbench.rs`).

/// The trials of a module, each named once: `trials![f, g => || h(1)]` is a trial `f` that
/// calls `f()` and a trial `g` that calls the closure.
macro_rules! trials {
    (@run $name:ident) => {
        $name()
    };
    (@run $name:ident $run:expr) => {
        ($run)()
    };
    ($($name:ident $(=> $run:expr)?),* $(,)?) => {
        vec![$(
            libtest_mimic::Trial::test(stringify!($name), || {
                trials!(@run $name $($run)?);
                Ok(())
            })
        ),*]
    };
}

mod agent;
mod alive;
mod before_start;
mod binary;
mod clients;
mod comparison;
mod container;
mod containerd;
mod daemonset;
mod demo;
mod doctor;
mod explain;
mod holders;
mod podbench;
mod record;
mod recording;
mod releases;
mod scans;
mod support;
mod top;
mod transient;
mod watch;
mod who;

use libtest_mimic::Arguments;

use support::{fixture, holder};

fn main() {
    if let Some(actions) = std::env::var_os(holder::ENV) {
        holder::run(&actions);
    }
    if let Some(plan) = std::env::var_os(fixture::ENV) {
        fixture::run(&plan);
    }
    if let Some(dir) = std::env::var_os(transient::SCANNER_ENV) {
        transient::scanner(&dir);
    }
    if let Some(dir) = std::env::var_os(transient::RACE_ENV) {
        transient::race(&dir);
    }
    if let Some(dir) = std::env::var_os(releases::LET_GO_ENV) {
        releases::let_go(&dir);
    }
    if let Some(target) = std::env::var_os(support::containerd::UMOUNT_ENV) {
        support::containerd::run_unmounter(&target);
    }
    if let Some(spec) = std::env::var_os(podbench::ENV) {
        podbench::node(&spec);
    }
    if let Some(target) = std::env::var_os(podbench::CHURN_ENV) {
        podbench::churn(&target);
    }
    let args = Arguments::from_args();
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root {
        eprintln!(
            "busyprobe integration tests SKIPPED: they need root (they load eBPF programs and \
             mount tmpfs in private mount namespaces); run as root: cargo xtask test"
        );
    }
    let trials = [
        watch::trials(),
        explain::trials(),
        doctor::trials(),
        binary::trials(),
        before_start::trials(),
        alive::trials(),
        transient::trials(),
        releases::trials(),
        container::trials(),
        containerd::trials(),
        daemonset::trials(),
        demo::trials(),
        record::trials(),
        agent::trials(),
        recording::trials(),
        clients::trials(),
        who::trials(),
        top::trials(),
        holders::trials(),
        comparison::trials(),
        scans::trials(),
    ]
    .into_iter()
    .flatten()
    .map(|trial| trial.with_ignored_flag(!is_root))
    .collect();
    libtest_mimic::run(&args, trials).exit();
}
