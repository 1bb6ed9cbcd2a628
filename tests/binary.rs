//! The binary is self-contained: a copy alone in an empty directory carries its probe object,
//! names it in `--version`, and loads it.

use libtest_mimic::Trial;
use std::process::Command;

use sha2::{Digest, Sha256};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![a_lone_copy_names_and_loads_its_embedded_probe_object,]
}

fn a_lone_copy_names_and_loads_its_embedded_probe_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("busyprobe");
    std::fs::copy(env!("CARGO_BIN_EXE_busyprobe"), &copy).expect("copy binary");

    let object = std::fs::read(env!("BUSYPROBE_EBPF_OBJECT"))
        .expect("read the probe object build.rs embedded");
    let digest: String = Sha256::digest(&object)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = crate::support::output_of_fresh_copy(Command::new(&copy).arg("--version"));
    assert!(out.status.success());
    let version = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        version.trim_end(),
        format!(
            "busyprobe {} (probe object: {} build, {} bytes, sha256 {digest})",
            env!("CARGO_PKG_VERSION"),
            env!("BUSYPROBE_EBPF_PROFILE"),
            object.len()
        )
    );

    let out = crate::support::output_of_fresh_copy(
        Command::new(&copy).arg("doctor").current_dir(dir.path()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ring buffer") && l.contains("  yes  ")),
        "the copy's embedded object did not load:\n{stdout}"
    );
}
