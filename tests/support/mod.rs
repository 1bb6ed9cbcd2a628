//! Helpers of the root integration tests (`tests/watch.rs`, `tests/holders.rs`).
//!
//! - [`fixture`]: the test binary re-executed as an incident in a private mount namespace;
//! - [`holder`]: the test binary re-executed as a helper process that holds a mount;
//! - [`incident`]: the parent's side of it (start, report, the watcher's lines for its pid);
//! - [`watcher`]: the `busyprobe watch --json` process under test;
//! - [`contract`]: checks of the JSON Lines contract;
//! - [`lines`]: reading pipes with deadlines.

pub mod contract;
pub mod fixture;
pub mod holder;
pub mod incident;
pub mod lines;
pub mod watcher;

/// Decodes a `*_b64` field: standard base64 with padding (RFC 4648 §4).
pub fn decode_b64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
