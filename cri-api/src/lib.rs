//! The Kubernetes Container Runtime Interface, `runtime.v1`: messages and the
//! `RuntimeService` / `ImageService` clients, generated at build time from
//! `proto/api.proto` (kubernetes/cri-api at 7d8ade91836419c9dd49d059bda1fe4a7dc283f5, the copy
//! the `k8s-cri` 0.11 crate ships).
//!
//! Why not depend on `k8s-cri` itself: its build script needs a `protoc` on the machine, and
//! busyprobe must build on a fresh machine with cargo alone. This crate compiles the same
//! protos with the same generator (`tonic-prost-build` 0.14) and a vendored protoc.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `runtime.v1`: what the kubelet speaks to containerd, CRI-O and cri-dockerd.
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
