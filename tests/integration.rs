//! Root integration tests: the real `busyprobe` binary with the real probes on this kernel.
//!
//! The test binary has two modes. With `BUSYPROBE_FIXTURE` set it is a fixture (see
//! `support/fixture.rs`): it runs the plan it was given and exits. Otherwise it runs every
//! trial with libtest-mimic; without root they are all reported as ignored, loudly.

mod alive;
mod before_start;
mod binary;
mod comparison;
mod container;
mod demo;
mod doctor;
mod holders;
mod record;
mod releases;
mod scans;
mod support;
mod top;
mod transient;
mod watch;
mod who;

use libtest_mimic::{Arguments, Failed, Trial};

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
    let args = Arguments::from_args();
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root {
        eprintln!(
            "busyprobe integration tests SKIPPED: they need root (they load eBPF programs and \
             mount tmpfs in private mount namespaces); run as root: cargo xtask test"
        );
    }
    let trials = watch::TESTS
        .iter()
        .chain(doctor::TESTS.iter())
        .chain(binary::TESTS.iter())
        .chain(before_start::TESTS.iter())
        .chain(alive::TESTS.iter())
        .chain(transient::TESTS.iter())
        .chain(releases::TESTS.iter())
        .chain(container::TESTS.iter())
        .chain(demo::TESTS.iter())
        .chain(record::TESTS.iter())
        .chain(who::TESTS.iter())
        .chain(top::TESTS.iter())
        .map(|&(name, test)| {
            Trial::test(name, move || {
                test();
                Ok::<(), Failed>(())
            })
            .with_ignored_flag(!is_root)
        })
        .chain(
            holders::TESTS
                .iter()
                .chain(comparison::TESTS.iter())
                .chain(scans::TESTS.iter())
                .map(|&(name, test)| {
                    Trial::ignorable_test(name, move || Ok(test())).with_ignored_flag(!is_root)
                }),
        )
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
