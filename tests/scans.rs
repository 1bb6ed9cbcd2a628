//! The kernel scan (BPF iterators) and the `/proc` walk must give the same answer on the same
//! incident: the fixture runs `busyprobe who --json --scan kernel` and `--scan proc` while the
//! holders hold, and every holder (kind, pid, path, fd, via, blamed, mount) must match.

use std::collections::BTreeSet;

use libtest_mimic::Trial;
use serde_json::Value;

use crate::{
    holders::{self, Propagation, Scene},
    support::{fixture::Report, incident::Fixture},
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![kernel_and_proc_scans_agree]
}

/// `busyprobe who TARGET --json --scan SCAN`.
fn who_with(scene: &Scene, scan: &str) -> Vec<String> {
    let target = scene.target.to_str().expect("UTF-8 temp path");
    [
        env!("CARGO_BIN_EXE_busyprobe"),
        "who",
        target,
        "--json",
        "--scan",
        scan,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The JSON answer of the `who` run with `--scan scan`.
fn answer(report: &Report, scan: &str) -> Value {
    let run = report
        .runs
        .iter()
        .find(|r| {
            r.argv
                .windows(2)
                .any(|w| w[0] == b"--scan" && w[1] == scan.as_bytes())
        })
        .unwrap_or_else(|| panic!("no `who --scan {scan}` run: {:?}", report.runs));
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "who --scan {scan}: no JSON ({e}): {}",
            String::from_utf8_lossy(&run.stderr)
        )
    })
}

/// What identifies a holder, whatever scan found it.
fn identities(who: &Value) -> BTreeSet<String> {
    let holders = who["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {who}"));
    holders
        .iter()
        .map(|h| {
            let fields = ["kind", "pid", "path", "fd", "via", "blamed", "mount_id"];
            fields.map(|f| format!("{f}={}", h[f])).join(" ")
        })
        .collect()
}

fn kernel_and_proc_scans_agree() {
    let scenes = [
        holders::fd_scene(false),
        holders::fd_scene(true),
        holders::cwd_scene(),
        holders::root_scene(),
        holders::exe_scene(),
        holders::mmap_scene(),
        holders::copy_scene(Propagation::Slave),
        holders::pidns_scene(),
        holders::fanotify_scene(),
    ];
    for scene in &scenes {
        let extra = [who_with(scene, "kernel"), who_with(scene, "proc")];
        let fixture = Fixture::run(&scene.full_plan(&extra));
        let (kernel, proc) = (
            answer(&fixture.report, "kernel"),
            answer(&fixture.report, "proc"),
        );
        assert_eq!(kernel["scan"], "kernel-scan", "{}: {kernel}", scene.title);
        assert_eq!(proc["scan"], "proc-scan", "{}: {proc}", scene.title);
        let (k, p) = (identities(&kernel), identities(&proc));
        assert!(
            !k.is_empty(),
            "{}: the kernel scan found nothing: {kernel}",
            scene.title
        );
        assert_eq!(k, p, "{}: kernel scan vs /proc walk", scene.title);
    }
}
