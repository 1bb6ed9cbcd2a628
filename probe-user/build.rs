//! Finds the eBPF object built by `cargo xtask build-ebpf` and hands its path and digest to
//! the crate, which embeds it: `busyprobe` is one self-contained file.

use std::{env, fs, path::PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ebpf_target = manifest.join("../target/bpfel-unknown-none");
    let profile = env::var("PROFILE").unwrap_or_else(|_| "debug".into());
    let other = if profile == "release" {
        "debug"
    } else {
        "release"
    };
    println!("cargo:rerun-if-env-changed=BUSYPROBE_EBPF_OBJECT");

    let (object, object_profile) = match env::var_os("BUSYPROBE_EBPF_OBJECT") {
        Some(path) => (PathBuf::from(path), "custom".to_string()),
        None => {
            let wanted = ebpf_target.join(&profile).join("probe-ebpf");
            let fallback = ebpf_target.join(other).join("probe-ebpf");
            // Watch both, so that building the missing one triggers a rebuild.
            println!("cargo:rerun-if-changed={}", wanted.display());
            println!("cargo:rerun-if-changed={}", fallback.display());
            if wanted.is_file() {
                (wanted, profile.clone())
            } else if fallback.is_file() {
                println!(
                    "cargo:warning=embedding the {other} eBPF object; run `cargo xtask build-ebpf{}` for the {profile} one",
                    if profile == "release" { " --release" } else { "" }
                );
                (fallback, other.to_string())
            } else {
                panic!(
                    "\n\nThe eBPF object is missing ({}).\nBuild it first with `cargo xtask build-ebpf` \
                     (it installs the nightly rust-src and bpf-linker it needs), or use \
                     `cargo xtask run` / `cargo xtask test`, which build it for you.\n",
                    wanted.display()
                );
            }
        }
    };
    let bytes = fs::read(&object).unwrap_or_else(|e| panic!("reading {}: {e}", object.display()));
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=BUSYPROBE_EBPF_OBJECT={}", object.display());
    println!("cargo:rustc-env=BUSYPROBE_EBPF_PROFILE={object_profile}");
    println!("cargo:rustc-env=BUSYPROBE_EBPF_SHA256={hex}");
    println!("cargo:rustc-env=BUSYPROBE_EBPF_BYTES={}", bytes.len());
}
