//! Container context from a process's cgroup v2 path (the `0::` line of `/proc/PID/cgroup`).
//!
//! Runtimes name their cgroups after the container, so the path alone says which container a
//! process runs in. Recognised layouts (`<id>` is always exactly 64 lowercase hex characters):
//!
//! | Runtime | Layout |
//! |---|---|
//! | Docker, systemd driver | `…/docker-<id>.scope` (usually `/system.slice/…`) |
//! | Docker, cgroupfs driver | `/docker/<id>` |
//! | containerd via CRI, systemd driver | `…/cri-containerd-<id>.scope` |
//! | containerd via nerdctl, systemd driver | `/system.slice/nerdctl-<id>.scope` |
//! | CRI-O, systemd / cgroupfs | `…/crio-<id>.scope` / `…/crio-<id>` (e.g. `/crio/crio-<id>`) |
//! | Podman, systemd / cgroupfs | `…/libpod-<id>.scope` / `/libpod_parent/libpod-<id>` |
//! | Podman `--cgroups=split` (quadlet) | `…/<unit>.service/libpod-payload-<id>` |
//! | Kubernetes pod, systemd driver | `…kubepods[-<qos>]-pod<uid_with_underscores>.slice` |
//! | Kubernetes pod, cgroupfs driver | `/kubepods[/<qos>]/pod<uid>` |
//! | Kubernetes container, cgroupfs | `/kubepods[/<qos>]/pod<uid>/<id>` (runtime unknown) |
//!
//! `<qos>` is `burstable` or `besteffort`; Guaranteed pods sit directly under `kubepods`. A
//! container inside a pod carries the pod's UID; a pod's own cgroup without a container below
//! it is reported as [`Runtime::Kubernetes`] with no id.
//!
//! Not recognised, on purpose: containerd's plain cgroupfs layout `/<namespace>/<id>` (e.g.
//! `/default/<id>`, indistinguishable from any other cgroup named by a hash), and
//! `containerd-<id>.scope`, which no runtime creates.
//!
//! Decisions worth knowing:
//! - **Conmon is not the container.** CRI-O's `crio-conmon-<id>[.scope]`, Podman's
//!   `libpod-conmon-<id>.scope`, Podman's `conmon` / `runtime` cgroups and old Podman's
//!   `libpod-<id>/conmon` hold the monitor, which runs outside the container: they are not
//!   recognised, so conmon gets the context around it (the pod for CRI-O's default
//!   `conmon_cgroup = "pod"`, nothing under `system.slice`).
//! - **Innermost wins.** Paths nest (a sub-cgroup such as `init.scope` or Podman's `container`
//!   below a container, Docker in Docker, a kind node's pods inside its Docker container): the
//!   deepest recognised container or pod is reported, and a pod UID is kept only when the pod
//!   encloses that container.
//! - **Bytes, not strings.** Components are matched one by one; one that is not UTF-8 matches
//!   no layout but does not stop the others from matching.
//! - **Static pods** have a 32-hex-character UID (a hash, not a UUID); it is accepted and
//!   reported as it is.

/// Which runtime's cgroup layout the id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Docker (`docker-<id>.scope`, `/docker/<id>`).
    Docker,
    /// containerd, through its CRI plugin (`cri-containerd-<id>.scope`) or nerdctl.
    Containerd,
    /// CRI-O (`crio-<id>.scope`, `crio-<id>`).
    Crio,
    /// Podman (`libpod-<id>.scope`, `libpod-<id>`, `libpod-payload-<id>`).
    Podman,
    /// A Kubernetes pod whose runtime the path does not name (cgroupfs driver, or the pod's
    /// own cgroup).
    Kubernetes,
}

impl Runtime {
    /// The name written in JSON (`container.runtime`) and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
            Runtime::Kubernetes => "kubernetes",
        }
    }
}

/// What a cgroup path says about the container a process runs in, and what the runtime
/// says its Kubernetes names are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    /// The runtime whose layout matched.
    pub runtime: Runtime,
    /// Full container id (64 hex chars) when the layout names one.
    pub id: Option<String>,
    /// Kubernetes pod UID (dashed form, 8-4-4-4-12) for kubepods slices; static pods' UIDs
    /// are 32 hex characters without dashes and are kept as they are.
    pub pod_uid: Option<String>,
    /// The pod and container names, when the runtime's CRI named this container id
    /// ([`crate::kubernetes`] fills it in; the cgroup path never does).
    pub k8s: Option<PodNames>,
}

/// A container's Kubernetes names, as the runtime knows them from the kubelet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
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

/// Parses the container context from a cgroup v2 path; `None` for host processes.
///
/// `path` is the path of the `0::` line, without the `0::` and without a trailing newline.
/// See the module documentation for the layouts and how nesting and conmon are treated.
pub fn from_cgroup_path(path: &[u8]) -> Option<Container> {
    let names: Vec<&str> = components(path).collect();
    (0..names.len())
        .filter_map(|i| classify(&names[..i], names[i], names.get(i + 1).copied()))
        .fold(Scan::default(), Scan::enter)
        .finish()
}

/// Stands in for a component that is not UTF-8: no layout matches it.
const NOT_UTF8: &str = "\u{fffd}";

/// The non-empty components of `path`, root first.
fn components(path: &[u8]) -> impl Iterator<Item = &str> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| std::str::from_utf8(c).unwrap_or(NOT_UTF8))
}

/// What one path component names.
enum Found<'a> {
    /// A Kubernetes pod's cgroup, with the pod UID.
    Pod(String),
    /// A container's cgroup.
    Container(Runtime, &'a str),
}

/// The context accumulated walking from the root towards the process's cgroup.
#[derive(Default)]
struct Scan<'a> {
    pod_uid: Option<String>,
    container: Option<(Runtime, &'a str)>,
}

impl<'a> Scan<'a> {
    /// One level deeper. A pod below a container replaces it (the container is the outer
    /// one); a container below a pod keeps the pod's UID.
    fn enter(self, found: Found<'a>) -> Self {
        match found {
            Found::Pod(uid) => Scan {
                pod_uid: Some(uid),
                container: None,
            },
            Found::Container(runtime, id) => Scan {
                container: Some((runtime, id)),
                ..self
            },
        }
    }

    fn finish(self) -> Option<Container> {
        let (runtime, id) = match self.container {
            Some((runtime, id)) => (runtime, Some(id.to_owned())),
            None => (Runtime::Kubernetes, None),
        };
        (id.is_some() || self.pod_uid.is_some()).then_some(Container {
            runtime,
            id,
            pod_uid: self.pod_uid,
            k8s: None,
        })
    }
}

/// What `name` (below `ancestors`, above `child`) names, if anything.
fn classify<'a>(ancestors: &[&str], name: &'a str, child: Option<&str>) -> Option<Found<'a>> {
    pod_uid(ancestors, name)
        .map(Found::Pod)
        .or_else(|| prefixed_container(name, child).map(|(rt, id)| Found::Container(rt, id)))
        .or_else(|| bare_container(ancestors, name).map(|(rt, id)| Found::Container(rt, id)))
}

/// A runtime that names its container cgroups `<prefix>-<id>`.
struct Prefixed {
    prefix: &'static str,
    runtime: Runtime,
    /// Whether the name also appears without `.scope` (the runtime's cgroupfs layout); the
    /// systemd layout is always `<prefix>-<id>.scope`.
    cgroupfs: bool,
}

const PREFIXED: &[Prefixed] = &[
    Prefixed {
        prefix: "docker",
        runtime: Runtime::Docker,
        cgroupfs: false,
    },
    Prefixed {
        prefix: "cri-containerd",
        runtime: Runtime::Containerd,
        cgroupfs: false,
    },
    Prefixed {
        prefix: "nerdctl",
        runtime: Runtime::Containerd,
        cgroupfs: false,
    },
    Prefixed {
        prefix: "crio",
        runtime: Runtime::Crio,
        cgroupfs: true,
    },
    Prefixed {
        prefix: "libpod",
        runtime: Runtime::Podman,
        cgroupfs: true,
    },
    Prefixed {
        prefix: "libpod-payload",
        runtime: Runtime::Podman,
        cgroupfs: true,
    },
];

/// `<prefix>-<id>.scope` for every runtime, or `<prefix>-<id>` for those with a cgroupfs
/// layout. Conmon's names (`crio-conmon-<id>`...) fail the id check. Old Podman put conmon
/// in a `conmon` child of the container's cgroupfs cgroup: that cgroup is conmon's, not the
/// container's.
fn prefixed_container<'a>(name: &'a str, child: Option<&str>) -> Option<(Runtime, &'a str)> {
    let (stem, scope) = match name.strip_suffix(".scope") {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    if !scope && child == Some("conmon") {
        return None;
    }
    PREFIXED
        .iter()
        .filter(|p| scope || p.cgroupfs)
        .find_map(|p| prefixed_id(stem, p.prefix).map(|id| (p.runtime, id)))
}

/// The id in `<prefix>-<id>`.
fn prefixed_id<'a>(stem: &'a str, prefix: &str) -> Option<&'a str> {
    let id = stem.strip_prefix(prefix)?.strip_prefix('-')?;
    is_container_id(id).then_some(id)
}

/// A bare `<id>` directly below `docker` (Docker's cgroupfs driver) or below a Kubernetes pod
/// (kubelet's cgroupfs driver, any runtime).
fn bare_container<'a>(ancestors: &[&str], name: &'a str) -> Option<(Runtime, &'a str)> {
    if !is_container_id(name) {
        return None;
    }
    match ancestors.split_last()? {
        (&"docker", _) => Some((Runtime::Docker, name)),
        (parent, above) => cgroupfs_pod_uid(above, parent).map(|_| (Runtime::Kubernetes, name)),
    }
}

/// The pod UID if `name` is a pod's cgroup in either driver's layout.
fn pod_uid(ancestors: &[&str], name: &str) -> Option<String> {
    match name.strip_suffix(".slice") {
        Some(stem) => systemd_pod_uid(stem),
        None => cgroupfs_pod_uid(ancestors, name),
    }
}

/// `…kubepods[-<qos>]-pod<uid>.slice`: systemd spells the slice's ancestry in its name, one
/// dash per level, so the UID's dashes are written as underscores.
fn systemd_pod_uid(stem: &str) -> Option<String> {
    let segments: Vec<&str> = stem.split('-').collect();
    let (name, parents) = segments.split_last()?;
    let uid = pod_segment(parents, name)?.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// `/kubepods[/<qos>]/pod<uid>`.
fn cgroupfs_pod_uid(ancestors: &[&str], name: &str) -> Option<String> {
    let uid = pod_segment(ancestors, name)?;
    is_pod_uid(uid).then(|| uid.to_owned())
}

/// The `<uid>` of `pod<uid>` when its parents end with `kubepods` or `kubepods`, `<qos>`
/// (path components or slice-name segments alike).
fn pod_segment<'a>(parents: &[&str], name: &'a str) -> Option<&'a str> {
    let parents = match parents.split_last() {
        Some((&("burstable" | "besteffort"), above)) => above,
        _ => parents,
    };
    let uid = name.strip_prefix("pod")?;
    (parents.last() == Some(&"kubepods")).then_some(uid)
}

/// A full container id: exactly 64 lowercase hex characters.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

/// A UUID in lowercase 8-4-4-4-12 form, or a static pod's 32-hex-character hash.
fn is_pod_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let shaped = lengths == [8, 4, 4, 4, 12] || lengths == [32];
    shaped && groups.iter().all(|g| is_lower_hex(g))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f6b3bd7c0e2a9185b4f0c6d2e7a8b9c1d2e3f405162738495a6b7c8d9e0f1a2";
    const ID2: &str = "9d8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877665544";
    const UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";
    const UID_: &str = "0a1b2c3d_4e5f_4a6b_8c7d_0e1f2a3b4c5d";
    const STATIC_UID: &str = "3c9f7e0d21a84b56c7d8e9f0a1b2c3d4";

    fn ctr(runtime: Runtime, id: &str) -> Option<Container> {
        Some(Container {
            runtime,
            id: Some(id.to_owned()),
            pod_uid: None,
            k8s: None,
        })
    }

    fn in_pod(runtime: Runtime, id: &str, uid: &str) -> Option<Container> {
        Some(Container {
            runtime,
            id: Some(id.to_owned()),
            pod_uid: Some(uid.to_owned()),
            k8s: None,
        })
    }

    fn pod_only(uid: &str) -> Option<Container> {
        Some(Container {
            runtime: Runtime::Kubernetes,
            id: None,
            pod_uid: Some(uid.to_owned()),
            k8s: None,
        })
    }

    fn check(cases: &[(&str, String, Option<Container>)]) {
        for (what, path, want) in cases {
            let got = from_cgroup_path(path.as_bytes());
            assert_eq!(&got, want, "{what}: {path}");
        }
    }

    #[test]
    fn standalone_runtimes() {
        use Runtime::*;
        check(&[
            (
                "docker systemd",
                format!("/system.slice/docker-{ID}.scope"),
                ctr(Docker, ID),
            ),
            (
                "docker rootless systemd",
                format!("/user.slice/user-1000.slice/user@1000.service/docker-{ID}.scope"),
                ctr(Docker, ID),
            ),
            ("docker cgroupfs", format!("/docker/{ID}"), ctr(Docker, ID)),
            (
                "nerdctl systemd",
                format!("/system.slice/nerdctl-{ID}.scope"),
                ctr(Containerd, ID),
            ),
            (
                "crio systemd",
                format!("/system.slice/crio-{ID}.scope"),
                ctr(Crio, ID),
            ),
            ("crio cgroupfs", format!("/crio/crio-{ID}"), ctr(Crio, ID)),
            (
                "podman systemd",
                format!("/machine.slice/libpod-{ID}.scope"),
                ctr(Podman, ID),
            ),
            (
                "podman pod systemd",
                format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope"),
                ctr(Podman, ID),
            ),
            (
                "podman rootless systemd",
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                ctr(Podman, ID),
            ),
            (
                "podman cgroupfs",
                format!("/libpod_parent/libpod-{ID}"),
                ctr(Podman, ID),
            ),
            (
                "podman split (quadlet)",
                format!("/system.slice/nginx.service/libpod-payload-{ID}"),
                ctr(Podman, ID),
            ),
        ]);
    }

    #[test]
    fn kubernetes_systemd_driver() {
        use Runtime::*;
        let burstable =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
        );
        let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice");
        check(&[
            (
                "containerd burstable",
                format!("{burstable}/cri-containerd-{ID}.scope"),
                in_pod(Containerd, ID, UID),
            ),
            (
                "crio besteffort",
                format!("{besteffort}/crio-{ID}.scope"),
                in_pod(Crio, ID, UID),
            ),
            (
                "docker guaranteed",
                format!("{guaranteed}/docker-{ID}.scope"),
                in_pod(Docker, ID, UID),
            ),
            ("pod slice only", burstable.clone(), pod_only(UID)),
            ("guaranteed pod slice only", guaranteed, pod_only(UID)),
            (
                "static pod",
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{ID}.scope"),
                in_pod(Containerd, ID, STATIC_UID),
            ),
            (
                "kind node: cgroup root /kubelet",
                format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                in_pod(Containerd, ID, UID),
            ),
            ("qos slice is no pod", "/kubepods.slice/kubepods-burstable.slice".into(), None),
            ("kubepods slice", "/kubepods.slice".into(), None),
        ]);
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        use Runtime::*;
        check(&[
            (
                "burstable",
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                in_pod(Kubernetes, ID, UID),
            ),
            (
                "besteffort",
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                in_pod(Kubernetes, ID, UID),
            ),
            (
                "guaranteed",
                format!("/kubepods/pod{UID}/{ID}"),
                in_pod(Kubernetes, ID, UID),
            ),
            (
                "crio names itself",
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                in_pod(Crio, ID, UID),
            ),
            (
                "pod only",
                format!("/kubepods/burstable/pod{UID}"),
                pod_only(UID),
            ),
            (
                "underscored uid is systemd's spelling",
                format!("/kubepods/burstable/pod{UID_}/{ID}"),
                None,
            ),
            (
                "pod outside kubepods",
                format!("/other/pod{UID}/{ID}"),
                None,
            ),
        ]);
    }

    /// k3s and RKE2 run containerd with the kubelet's cgroupfs driver by default (the systemd
    /// driver where asked), also rootless and inside a Docker container (k3d); cri-dockerd
    /// puts Docker's containers in the pod's cgroup.
    #[test]
    fn k3s_rke2_and_cri_dockerd_roots() {
        use Runtime::*;
        check(&[
            (
                "k3s / RKE2, cgroupfs driver",
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                in_pod(Kubernetes, ID, UID),
            ),
            (
                "k3s / RKE2, systemd driver",
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                in_pod(Containerd, ID, UID),
            ),
            (
                "k3s rootless",
                format!("/user.slice/user-1000.slice/user@1000.service/k3s-rootless.service/kubepods/burstable/pod{UID}/{ID}"),
                in_pod(Kubernetes, ID, UID),
            ),
            (
                "k3d: k3s inside a Docker container",
                format!("/system.slice/docker-{ID2}.scope/kubepods/besteffort/pod{UID}/{ID}"),
                in_pod(Kubernetes, ID, UID),
            ),
            (
                "k3d: the k3s server process itself",
                format!("/system.slice/docker-{ID2}.scope/k3s"),
                ctr(Docker, ID2),
            ),
            (
                "cri-dockerd, systemd driver",
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"),
                in_pod(Docker, ID, UID),
            ),
            (
                "cri-dockerd, cgroupfs driver",
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                in_pod(Kubernetes, ID, UID),
            ),
            ("k3s agent", "/system.slice/k3s-agent.service".into(), None),
            ("rke2 server", "/system.slice/rke2-server.service".into(), None),
        ]);
    }

    #[test]
    fn nested_innermost_wins() {
        use Runtime::*;
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        check(&[
            (
                "init.scope below a container",
                format!("{pod}/cri-containerd-{ID}.scope/init.scope"),
                in_pod(Containerd, ID, UID),
            ),
            (
                "podman's container sub-cgroup",
                format!("/machine.slice/libpod-{ID}.scope/container"),
                ctr(Podman, ID),
            ),
            (
                "docker in docker, systemd",
                format!("/system.slice/docker-{ID}.scope/system.slice/docker-{ID2}.scope"),
                ctr(Docker, ID2),
            ),
            (
                "docker in docker, cgroupfs",
                format!("/docker/{ID}/docker/{ID2}"),
                ctr(Docker, ID2),
            ),
            (
                "docker in a pod keeps the pod",
                format!("{pod}/cri-containerd-{ID}.scope/docker/{ID2}"),
                in_pod(Docker, ID2, UID),
            ),
            (
                "kind: pod inside a docker container",
                format!("/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                in_pod(Containerd, ID, UID),
            ),
            (
                "kind: pod-level cgroup inside a docker container",
                format!("/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice"),
                pod_only(UID),
            ),
        ]);
    }

    #[test]
    fn conmon_is_not_the_container() {
        use Runtime::*;
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        check(&[
            (
                "crio conmon in the pod",
                format!("{pod}/crio-conmon-{ID}.scope"),
                pod_only(UID),
            ),
            (
                "crio conmon in system.slice",
                format!("/system.slice/crio-conmon-{ID}.scope"),
                None,
            ),
            (
                "crio conmon, cgroupfs",
                format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
                pod_only(UID),
            ),
            (
                "podman conmon, systemd",
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                None,
            ),
            (
                "podman conmon, old cgroupfs",
                format!("/libpod_parent/libpod-{ID}/conmon"),
                None,
            ),
            (
                "podman conmon, cgroupfs",
                "/libpod_parent/conmon".into(),
                None,
            ),
            (
                "podman split conmon",
                "/system.slice/nginx.service/runtime".into(),
                None,
            ),
            (
                "conmon of a nested runtime stays in the outer container",
                format!("/system.slice/docker-{ID2}.scope/system.slice/crio-conmon-{ID}.scope"),
                ctr(Docker, ID2),
            ),
        ]);
    }

    #[test]
    fn malformed_ids_are_not_containers() {
        let short = &ID[..63];
        let upper = ID.to_uppercase();
        let non_hex = format!("{}g", &ID[..63]);
        let long = format!("{ID}0");
        let mut cases = Vec::new();
        for (what, id) in [
            ("63 chars", short),
            ("uppercase", upper.as_str()),
            ("non-hex", non_hex.as_str()),
            ("65 chars", long.as_str()),
        ] {
            cases.push((what, format!("/system.slice/docker-{id}.scope"), None));
            cases.push((what, format!("/docker/{id}"), None));
            cases.push((what, format!("/crio/crio-{id}"), None));
            cases.push((what, format!("/kubepods/pod{UID}/{id}"), pod_only(UID)));
        }
        check(&cases);
    }

    #[test]
    fn malformed_layouts_are_not_containers() {
        check(&[
            (
                "docker without .scope",
                format!("/system.slice/docker-{ID}"),
                None,
            ),
            (
                "containerd-<id>.scope is no real layout",
                format!("/system.slice/containerd-{ID}.scope"),
                None,
            ),
            (
                "containerd cgroupfs is ambiguous",
                format!("/default/{ID}"),
                None,
            ),
            ("bare id at the root", format!("/{ID}"), None),
            (
                "other suffix",
                format!("/system.slice/docker-{ID}.mount"),
                None,
            ),
            (
                "missing dash",
                format!("/system.slice/docker{ID}.scope"),
                None,
            ),
            (
                "uppercase pod uid",
                format!("/kubepods/pod{}/{ID}", UID.to_uppercase()),
                None,
            ),
            (
                "short pod uid",
                format!("/kubepods/pod{}", &UID[..35]),
                None,
            ),
        ]);
    }

    #[test]
    fn host_paths() {
        check(&[
            ("empty", String::new(), None),
            ("root", "/".into(), None),
            ("init", "/init.scope".into(), None),
            (
                "containerd",
                "/system.slice/containerd.service".into(),
                None,
            ),
            ("docker daemon", "/system.slice/docker.service".into(), None),
            ("docker socket", "/system.slice/docker.socket".into(), None),
            (
                "user session",
                "/user.slice/user-1000.slice/session-3.scope".into(),
                None,
            ),
            (
                "user manager",
                "/user.slice/user-1000.slice/user@1000.service/init.scope".into(),
                None,
            ),
            ("kubelet", "/system.slice/kubelet.service".into(), None),
        ]);
    }

    #[test]
    fn bytes_that_are_not_utf8() {
        let mut path = b"/user.slice/\xff\xfe.slice/".to_vec();
        path.extend_from_slice(format!("docker-{ID}.scope").as_bytes());
        assert_eq!(from_cgroup_path(&path), ctr(Runtime::Docker, ID));

        let mut path = format!("/system.slice/docker-{ID}.scope/").into_bytes();
        path.extend_from_slice(b"\xff");
        assert_eq!(from_cgroup_path(&path), ctr(Runtime::Docker, ID));

        let mut path = b"/system.slice/docker-".to_vec();
        path.extend_from_slice(&ID.as_bytes()[..63]);
        path.extend_from_slice(b"\xff.scope");
        assert_eq!(from_cgroup_path(&path), None);
    }

    #[test]
    fn serialises_runtime_lowercase() {
        let c = in_pod(Runtime::Containerd, ID, UID).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["runtime"], "containerd");
        assert_eq!(json["id"], ID);
        assert_eq!(json["pod_uid"], UID);
        assert_eq!(serde_json::to_value(Runtime::Crio).unwrap(), "crio");
        for runtime in [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::Crio,
            Runtime::Podman,
            Runtime::Kubernetes,
        ] {
            assert_eq!(serde_json::to_value(runtime).unwrap(), runtime.as_str());
        }
    }
}
