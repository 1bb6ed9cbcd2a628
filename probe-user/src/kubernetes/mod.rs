//! Kubernetes names for containers: which pod, namespace and container a container id is,
//! asked of the container runtime over the CRI API (the API the kubelet itself uses).
//!
//! - [`socket`]: where the runtime's CRI socket is (`--cri-socket`, the usual paths, or the
//!   `-address` of a holder's own containerd shim);
//! - [`cri`]: the client (gRPC over the Unix socket, each call under a deadline);
//! - [`directory`]: the cache the pipeline and `who` read: refreshed on a miss, containers
//!   that went away remembered for a while (a teardown often fails after the container is
//!   deleted), one notice when the runtime cannot be asked.
//!
//! The container id comes from the process's cgroup path ([`crate::container`]); this module
//! only names it.

pub mod cri;
pub mod directory;
pub mod socket;

pub use crate::container::PodNames;
pub use directory::PodDirectory;
