//! Helpers of the root integration tests (`tests/watch.rs`, `tests/holders.rs`).
//!
//! - [`containerd`]: a real containerd started by the test, driven through its CRI; [`oci`]: the
//!   busybox image it runs, built offline;
//! - [`fixture`]: the test binary re-executed as an incident in a private mount namespace;
//! - [`holder`]: the test binary re-executed as a helper process that holds a mount;
//! - [`incident`]: the parent's side of it (start, report, the watcher's lines for its pid);
//! - [`watcher`]: the `busyprobe watch --json` process under test;
//! - [`contract`]: checks of the JSON Lines contract;
//! - [`lines`]: reading pipes with deadlines;
//! - [`process`]: children that die with the test, commands with deadlines, external tools.

pub mod containerd;
pub mod contract;
pub mod fixture;
pub mod holder;
pub mod incident;
pub mod lines;
pub mod oci;
pub mod process;
pub mod watcher;

/// Decodes a `*_b64` field: standard base64 with padding (RFC 4648 §4).
pub fn decode_b64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Runs `cmd` to completion, retrying while its program is "text file busy": a binary copied
/// just now may still be open for writing in a child another test thread is forking.
pub fn output_of_fresh_copy(cmd: &mut std::process::Command) -> std::process::Output {
    for _ in 0..50 {
        match process::try_output(cmd) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.expect("run the copied binary"),
        }
    }
    panic!("the copied binary stayed busy (ETXTBSY)")
}

/// Moves this (single-threaded) process into a private mount namespace (see
/// [`enter_private_mount_namespace`]) and mounts a fresh tmpfs on `mnt` there.
pub fn tmpfs_in_private_namespace(mnt: &std::path::Path) {
    enter_private_mount_namespace();
    nix::mount::mount(
        Some("tmpfs"),
        mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a tmpfs");
}

/// Moves this (single-threaded) process into a mount namespace of its own whose `/` is
/// recursively private: every mount it makes vanishes with it, whatever happens.
pub fn enter_private_mount_namespace() {
    use nix::{
        mount::{mount, MsFlags},
        sched::{unshare, CloneFlags},
    };
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / recursively private");
}
