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

pub use directory::PodDirectory;

/// A container's Kubernetes names, as the runtime knows them from the kubelet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNames {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's UID.
    pub uid: String,
    /// The container's name in the pod; `None` for the pod's sandbox ("pause") container.
    pub container: Option<String>,
    /// The image the container runs, as the kubelet asked for it.
    pub image: Option<String>,
}

impl PodNames {
    /// `namespace/pod`, how operators name a pod.
    pub fn pod_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}
