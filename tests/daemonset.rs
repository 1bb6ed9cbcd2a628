//! The DaemonSet's pod under a real containerd: the image `cargo xtask image` builds
//! (`target/image/busyprobe-VERSION.oci.tar`), imported into the fixture's containerd (see
//! `support/containerd.rs`) and run through the CRI with exactly the privileges
//! `deploy/kubernetes/busyprobe.yaml` gives it. The test reads them from the manifest (the
//! container's capabilities to add and drop, `hostPID`, `hostNetwork`, the user, `privileged`,
//! `allowPrivilegeEscalation`, `readOnlyRootFilesystem`, the seccomp and AppArmor profiles, the
//! resources, the volumes and their mounts, the arguments) and turns them into the
//! RunPodSandbox and CreateContainer requests the kubelet would send, so the two cannot drift.
//!
//! What must change for the test, and only that (asserted):
//! - the host paths it writes: `/run/busyprobe` (the socket, the offsets cache) and
//!   `/var/lib/busyprobe` (the recording) become directories in the fixture's temporary
//!   directory (another agent, or a test run beside this one, may use the real ones);
//! - the CRI socket is the fixture's containerd's, bound where the manifest puts it;
//! - `--metrics`: a free loopback port instead of 10057 (host network: the port is the host's,
//!   where another trial's agent may be serving).
//!
//! BTF (`/sys/kernel/btf`) and tracefs (`/sys/kernel/tracing`) are the host's, as they are.

use std::{
    collections::HashMap,
    os::unix::{fs::FileTypeExt, net::UnixStream},
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, Instant},
};

use cri_api::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, ContainerMetadata, ContainerState,
    ImageSpec, Int64Value, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
    SecurityProfile,
};
use libtest_mimic::Trial;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    agent::free_addr,
    support::{
        containerd::{Containerd, Pod},
        fixture::Plan,
        incident::Fixture,
        lines::{Lines, Next},
        process,
        watcher::{ATTACH_TIMEOUT, LINE_TIMEOUT},
    },
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        the_daemonsets_pod_names_the_holder_of_a_hosts_ebusy,
        the_daemonsets_pod_mounts_tracefs_when_the_node_has_none,
        the_daemonsets_pod_without_a_needed_capability_exits_naming_it,
    ]
}

/// The DaemonSet's manifest.
const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/busyprobe.yaml"
);
/// The image archive `cargo xtask image` writes (`cargo xtask test` builds it before the
/// integration tests).
const ARCHIVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/image/busyprobe-",
    env!("CARGO_PKG_VERSION"),
    ".oci.tar"
);
/// The image's reference once imported (`xtask/src/image.rs`).
const IMAGE: &str = concat!("localhost/busyprobe:", env!("CARGO_PKG_VERSION"));
/// How long a container may take to exit after it started, or after StopContainer.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The grace period StopContainer gives (the manifest's `terminationGracePeriodSeconds` is
/// 30; the agent exits well within a second of SIGTERM).
const STOP_GRACE_S: i64 = 30;

/// The paths the kubelet's default `procMount` masks in a container that is not privileged
/// (Kubernetes' `pkg/securitycontext/util.go`); the kubelet sends them in every
/// CreateContainer, and containerd applies what it is sent.
const MASKED_PATHS: [&str; 10] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
/// The paths the kubelet's default `procMount` makes read-only, sent the same way.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The agent's pod as `deploy/kubernetes/busyprobe.yaml` describes it: everything of its one
/// container and pod spec that the CRI requests carry.
struct AgentPod {
    /// The pod's name as the DaemonSet controller makes it (`NAME-` and a suffix; the
    /// DaemonSet's name), and its namespace (the DaemonSet's).
    pod_name: String,
    namespace: String,
    /// The pod template's `hostPID`, `hostNetwork`.
    host_pid: bool,
    host_network: bool,
    /// The container's name, image and arguments (no `command`: the image's entrypoint).
    name: String,
    image: String,
    args: Vec<String>,
    /// `securityContext`.
    run_as_user: i64,
    run_as_group: i64,
    privileged: bool,
    allow_privilege_escalation: bool,
    read_only_root: bool,
    seccomp: ProfileType,
    apparmor: ProfileType,
    /// `capabilities.add` and `.drop`, as the manifest spells them (`BPF`, `ALL`).
    add: Vec<String>,
    drop: Vec<String>,
    /// `resources`: the CPU request in millicores, the CPU and memory limits.
    cpu_request_milli: i64,
    cpu_limit_milli: i64,
    memory_limit: i64,
    /// Each `volumeMounts` entry with its volume's `hostPath`.
    mounts: Vec<HostMount>,
}

/// One `volumeMounts` entry and its `hostPath` volume.
#[derive(Clone, Debug)]
struct HostMount {
    name: String,
    host_path: String,
    /// The `hostPath` type (`Directory`, `Socket`, `DirectoryOrCreate`, ...).
    host_type: String,
    container_path: String,
    read_only: bool,
    propagation: MountPropagation,
}

/// `v[key]`, which must be there.
fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    match &v[key] {
        Value::Null => panic!("the manifest has no {key} in {v}"),
        found => found,
    }
}

fn string(v: &Value, key: &str) -> String {
    field(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in the manifest"))
        .to_owned()
}

fn boolean(v: &Value, key: &str) -> bool {
    field(v, key)
        .as_bool()
        .unwrap_or_else(|| panic!("{key} is not a boolean in the manifest"))
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    field(v, key)
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not a list in the manifest"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// A Kubernetes CPU quantity (`50m`, `1`) in millicores.
fn millicores(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse().expect("millicores"),
        None => q.parse::<i64>().expect("cores") * 1000,
    }
}

/// A Kubernetes memory quantity with a binary suffix (`64Mi`, `1Gi`) in bytes.
fn bytes(q: &str) -> i64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: i64 = n.parse().expect("a number of bytes");
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("memory unit {other:?}: add it here"),
    }
}

/// A `seccompProfile` / `appArmorProfile` type.
fn profile(v: &Value, key: &str) -> ProfileType {
    match string(field(v, key), "type").as_str() {
        "RuntimeDefault" => ProfileType::RuntimeDefault,
        "Unconfined" => ProfileType::Unconfined,
        other => panic!("{key} type {other}: add it here"),
    }
}

impl AgentPod {
    /// Reads it from [`MANIFEST`]: its DaemonSet's one container.
    fn from_manifest() -> Self {
        let text = std::fs::read_to_string(MANIFEST).unwrap_or_else(|e| panic!("{MANIFEST}: {e}"));
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).expect("valid YAML"))
            .collect();
        let ds = docs
            .iter()
            .find(|d| d["kind"] == "DaemonSet")
            .expect("a DaemonSet in the manifest");
        let pod = &ds["spec"]["template"]["spec"];
        let meta = field(ds, "metadata");
        let containers = field(pod, "containers").as_array().unwrap();
        assert_eq!(containers.len(), 1, "one container in the DaemonSet's pod");
        let c = &containers[0];
        assert!(
            c["command"].is_null(),
            "the container runs the image's entrypoint"
        );
        let sc = field(c, "securityContext");
        let caps = field(sc, "capabilities");
        let volumes: HashMap<String, &Value> = field(pod, "volumes")
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (string(v, "name"), v))
            .collect();
        let mounts = field(c, "volumeMounts")
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let name = string(m, "name");
                let volume = volumes
                    .get(&name)
                    .unwrap_or_else(|| panic!("no volume {name}"));
                let host = field(volume, "hostPath");
                HostMount {
                    host_path: string(host, "path"),
                    host_type: string(host, "type"),
                    container_path: string(m, "mountPath"),
                    read_only: m["readOnly"].as_bool().unwrap_or(false),
                    // The kubelet's mapping of `mountPropagation` (unset: private).
                    propagation: match m["mountPropagation"].as_str() {
                        None | Some("None") => MountPropagation::PropagationPrivate,
                        Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
                        Some("Bidirectional") => MountPropagation::PropagationBidirectional,
                        Some(other) => panic!("mountPropagation {other}"),
                    },
                    name,
                }
            })
            .collect();
        let resources = field(c, "resources");
        Self {
            pod_name: format!("{}-n0d3", string(meta, "name")),
            namespace: string(meta, "namespace"),
            host_pid: boolean(pod, "hostPID"),
            host_network: boolean(pod, "hostNetwork"),
            name: string(c, "name"),
            image: string(c, "image"),
            args: strings(c, "args"),
            run_as_user: field(sc, "runAsUser").as_i64().unwrap(),
            run_as_group: field(sc, "runAsGroup").as_i64().unwrap(),
            privileged: boolean(sc, "privileged"),
            allow_privilege_escalation: boolean(sc, "allowPrivilegeEscalation"),
            read_only_root: boolean(sc, "readOnlyRootFilesystem"),
            seccomp: profile(sc, "seccompProfile"),
            apparmor: profile(sc, "appArmorProfile"),
            add: strings(caps, "add"),
            drop: strings(caps, "drop"),
            cpu_request_milli: millicores(&string(field(resources, "requests"), "cpu")),
            cpu_limit_milli: millicores(&string(field(resources, "limits"), "cpu")),
            memory_limit: bytes(&string(field(resources, "limits"), "memory")),
            mounts,
        }
    }

    /// RunPodSandbox for the pod (uid `uid`) on `node`, with [`AgentPod::namespaces`].
    fn run_pod(&self, node: &Containerd, uid: &str) -> Pod {
        node.run_pod_with(&self.pod_name, &self.namespace, uid, self.namespaces())
    }

    /// The pod's namespaces as the kubelet asks for them: the node's network and PID
    /// namespaces for `hostNetwork` and `hostPID`, IPC the pod's (no `hostIPC`).
    fn namespaces(&self) -> NamespaceOption {
        NamespaceOption {
            network: if self.host_network {
                NamespaceMode::Node
            } else {
                NamespaceMode::Pod
            } as i32,
            pid: if self.host_pid {
                NamespaceMode::Node
            } else {
                NamespaceMode::Container
            } as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    /// The container's CreateContainer config as the kubelet makes it from the manifest:
    /// attempt `attempt` (its log `NAME/ATTEMPT.log`), `args` (the manifest's, changed only
    /// where the caller must), `add` as the capabilities added, `mounts` (the manifest's,
    /// mapped onto the fixture's node by [`map_host_paths`]).
    fn container_config(
        &self,
        pod: &Pod,
        attempt: u32,
        args: &[String],
        add: &[String],
        mounts: &[HostMount],
    ) -> ContainerConfig {
        let profile = |t: ProfileType| {
            Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: String::new(),
            })
        };
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: self.name.clone(),
                attempt,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                user_specified_image: self.image.clone(),
                ..Default::default()
            }),
            args: args.to_vec(),
            mounts: mounts
                .iter()
                .map(|m| Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.read_only,
                    propagation: m.propagation as i32,
                    ..Default::default()
                })
                .collect(),
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), self.name.clone()),
                ("io.kubernetes.pod.name".into(), self.pod_name.clone()),
                ("io.kubernetes.pod.namespace".into(), self.namespace.clone()),
                ("io.kubernetes.pod.uid".into(), pod.uid.clone()),
            ]),
            log_path: format!("{}/{attempt}.log", self.name),
            linux: Some(LinuxContainerConfig {
                // The kubelet's conversion: shares = request millicores * 1024 / 1000, quota =
                // limit millicores * period / 1000. The pod's cgroup parent is the fixture's
                // (`besteffort`; a Burstable pod would be under `burstable`).
                resources: Some(LinuxContainerResources {
                    cpu_shares: self.cpu_request_milli * 1024 / 1000,
                    cpu_period: 100_000,
                    cpu_quota: self.cpu_limit_milli * 100_000 / 1000,
                    memory_limit_in_bytes: self.memory_limit,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(Capability {
                        add_capabilities: add.to_vec(),
                        drop_capabilities: self.drop.clone(),
                        add_ambient_capabilities: Vec::new(),
                    }),
                    privileged: self.privileged,
                    namespace_options: Some(self.namespaces()),
                    run_as_user: Some(Int64Value {
                        value: self.run_as_user,
                    }),
                    run_as_group: Some(Int64Value {
                        value: self.run_as_group,
                    }),
                    readonly_rootfs: self.read_only_root,
                    no_new_privs: !self.allow_privilege_escalation,
                    masked_paths: MASKED_PATHS.map(String::from).into(),
                    readonly_paths: READONLY_PATHS.map(String::from).into(),
                    seccomp: profile(self.seccomp),
                    apparmor: profile(self.apparmor),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

/// The host directories the test gives the agent instead of the node's own.
struct Dirs {
    /// For `/run/busyprobe`: the clients' socket and the offsets cache.
    run: PathBuf,
    /// For `/var/lib/busyprobe`: the recording.
    recording: PathBuf,
}

/// The manifest's mounts with their host paths mapped onto the fixture's node, each checked
/// (or made) as the kubelet does for its `hostPath` type:
/// - `/sys/kernel/btf`, `/sys/kernel/tracing`: as they are (the host's BTF and tracefs,
///   read-only; the fixture's node namespace is a copy of the host's mounts);
/// - `/run/containerd/containerd.sock`: the fixture's containerd socket;
/// - `/run/busyprobe`, `/var/lib/busyprobe`: [`Dirs`] in the fixture's temporary directory,
///   so that the test reads what the agent writes there and nothing else on the host is used.
///
/// A host path the manifest gains fails the test until it is mapped here.
fn map_host_paths(node: &Containerd, mounts: &[HostMount], dirs: &Dirs) -> Vec<HostMount> {
    mounts
        .iter()
        .map(|m| {
            let host = match m.host_path.as_str() {
                "/sys/kernel/btf" | "/sys/kernel/tracing" => PathBuf::from(&m.host_path),
                "/run/containerd/containerd.sock" => node.socket().to_owned(),
                "/run/busyprobe" => dirs.run.clone(),
                "/var/lib/busyprobe" => dirs.recording.clone(),
                other => panic!(
                    "the manifest mounts host path {other} (volume {}): map it in \
                     tests/daemonset.rs",
                    m.name
                ),
            };
            let seen = node.node_path(&host);
            match m.host_type.as_str() {
                "Directory" => assert!(seen.is_dir(), "{} is no directory", host.display()),
                "Socket" => assert!(
                    std::fs::metadata(&seen).is_ok_and(|md| md.file_type().is_socket()),
                    "{} is no socket",
                    host.display()
                ),
                "DirectoryOrCreate" => std::fs::create_dir_all(&seen).unwrap(),
                other => panic!("hostPath type {other}: add it here"),
            }
            HostMount {
                host_path: host.display().to_string(),
                ..m.clone()
            }
        })
        .collect()
}

/// The manifest's arguments with `--metrics` on `metrics` instead (host network: the port is
/// the host's, where another trial's agent may serve 10057); asserts that the rest is the
/// manifest's.
fn agent_args(manifest: &AgentPod, metrics: &str) -> Vec<String> {
    let at = manifest
        .args
        .iter()
        .position(|a| a == "--metrics")
        .expect("--metrics in the manifest's args");
    let mut args = manifest.args.clone();
    args[at + 1] = metrics.to_owned();
    assert_eq!(args.len(), manifest.args.len());
    let changed: Vec<usize> = (0..args.len())
        .filter(|&i| args[i] != manifest.args[i])
        .collect();
    assert!(changed.iter().all(|&i| i == at + 1), "{args:?}");
    args
}

/// A containerd with the busyprobe image imported; fails naming `cargo xtask image` when the
/// archive is missing.
fn node_with_image(manifest: &AgentPod) -> Containerd {
    assert!(
        Path::new(ARCHIVE).is_file(),
        "{ARCHIVE} is missing: build it with `cargo xtask image` (`cargo xtask test` does \
         before the integration tests)"
    );
    assert_eq!(
        manifest.image, IMAGE,
        "the manifest runs the image `cargo xtask image` builds"
    );
    let node = Containerd::start();
    node.ctr(&["images", "import", ARCHIVE]);
    let images = node.ctr(&["images", "ls", "-q"]);
    assert!(
        images.lines().any(|l| l == IMAGE),
        "{IMAGE} after the import:\n{images}"
    );
    node
}

/// The messages of a CRI container log (`TIMESTAMP STREAM TAG MESSAGE` lines), joined.
fn log_messages(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until container `id` has exited (at most [`EXIT_TIMEOUT`]); its exit code.
fn wait_exited(node: &Containerd, id: &str, log: &Path) -> i32 {
    process::poll(EXIT_TIMEOUT, || {
        let status = node.container_status(id);
        (status.state == ContainerState::ContainerExited as i32).then_some(status.exit_code)
    })
    .unwrap_or_else(|| {
        node.fail(&format!(
            "container {id} still runs after {EXIT_TIMEOUT:?}; its log:\n{}",
            log_messages(log)
        ))
    })
}

/// The capability numbers of `names` as the manifest spells them (`BPF`) as a mask.
fn cap_mask(names: &[String]) -> u64 {
    names
        .iter()
        .map(|n| {
            let cap = caps::Capability::from_str(&format!("CAP_{n}"))
                .unwrap_or_else(|e| panic!("capability {n}: {e}"));
            1u64 << cap.index()
        })
        .fold(0, |a, b| a | b)
}

/// The value of `key:` in `/proc/PID/status`.
fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The image runs as the DaemonSet's pod (every privilege and mount from the manifest; the
/// container's process checked to have exactly the manifest's capabilities, seccomp and no new
/// privileges, a read-only root, the host's PID namespace); once its probes are attached, a
/// process on the host, outside the container, holds a file on a tmpfs whose unmount then
/// fails with EBUSY. The agent's live stream (its socket, reached from the host through the
/// mapped `/run/busyprobe`) names that process, its exact pid and the file, and its recording
/// (the mapped `/var/lib/busyprobe`) holds the same line; StopContainer (SIGTERM) ends it with
/// status 0 and the final counters.
fn the_daemonsets_pod_names_the_holder_of_a_hosts_ebusy() {
    names_a_hosts_ebusy(
        "the_daemonsets_pod_names_the_holder_of_a_hosts_ebusy",
        "d4e5f6a7-b8c9-4d0e-8f1a-2b3c4d5e6f70",
        Tracefs::OnTheNode,
    );
}

/// The same on a node without tracefs (the fixture's node namespace unmounts it; its
/// `/sys/kernel/tracing` is then sysfs's empty directory, which the manifest's `Directory`
/// hostPath accepts): the agent mounts tracefs over its read-only bind of that directory, in
/// its own mount namespace (CAP_SYS_ADMIN, under the runtime's seccomp profile), says so, and
/// names the holder; the node still has no tracefs.
fn the_daemonsets_pod_mounts_tracefs_when_the_node_has_none() {
    names_a_hosts_ebusy(
        "the_daemonsets_pod_mounts_tracefs_when_the_node_has_none",
        "f6a7b8c9-d0e1-4f2a-8b3c-4d5e6f7a8b92",
        Tracefs::NotOnTheNode,
    );
}

/// Whether the node has tracefs mounted when the agent starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracefs {
    OnTheNode,
    NotOnTheNode,
}

/// Whether `mountinfo` (a `/proc/PID/mountinfo`) lists a tracefs at `/sys/kernel/tracing`.
fn has_tracefs(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        l.split(' ').nth(4) == Some("/sys/kernel/tracing")
            && l.split_once(" - ")
                .is_some_and(|(_, r)| r.starts_with("tracefs "))
    })
}

/// The trials of [`the_daemonsets_pod_names_the_holder_of_a_hosts_ebusy`]: `trial` names it in
/// its output, `uid` is its pod's.
fn names_a_hosts_ebusy(trial: &str, uid: &str, tracefs: Tracefs) {
    let started = Instant::now();
    let manifest = AgentPod::from_manifest();
    let node = node_with_image(&manifest);
    let node_mountinfo = || std::fs::read_to_string(format!("/proc/{}/mountinfo", node.pid()));
    if tracefs == Tracefs::NotOnTheNode {
        // The fixture's unmounter: `umount2` in the node's mount namespace (a copy of the
        // host's, private: the host keeps its tracefs).
        let mut unmounter = node.unmounter(Path::new("/sys/kernel/tracing"));
        assert_eq!(unmounter.umount(), 0, "umount2 of the node's tracefs");
        assert!(
            !has_tracefs(&node_mountinfo().unwrap()),
            "the node's tracefs is gone"
        );
    }
    let dirs = Dirs {
        run: node.volume_dir().join("run"),
        recording: node.volume_dir().join("recording"),
    };
    let mounts = map_host_paths(&node, &manifest.mounts, &dirs);
    let metrics = free_addr().to_string();
    let args = agent_args(&manifest, &metrics);
    let pod = manifest.run_pod(&node, uid);
    let config = manifest.container_config(&pod, 0, &args, &manifest.add, &mounts);
    let log = pod.log_directory().join(&config.log_path);
    let id = node.create_container_with(&pod, config);
    node.start_container(&id);
    let attached = process::poll(ATTACH_TIMEOUT, || {
        if node.container_status(&id).state == ContainerState::ContainerExited as i32 {
            node.fail(&format!(
                "the agent's container exited at start; its log:\n{}",
                log_messages(&log)
            ));
        }
        log_messages(&log).contains("probes attached").then_some(())
    });
    if attached.is_none() {
        node.fail(&format!(
            "the agent never said its probes are attached; its log:\n{}",
            log_messages(&log)
        ));
    }
    eprintln!(
        "{trial}: attached {:.1?} after the start",
        started.elapsed()
    );

    // The container's process (host PID: the CRI's pid is the host's) has exactly the
    // manifest's privileges.
    let pid = node.container_pid(&id);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(argv[0], "/usr/bin/busyprobe", "the image's entrypoint");
    assert_eq!(argv[1..], args[..], "the manifest's arguments");
    let mask = format!("{:016x}", cap_mask(&manifest.add));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(pid, set), mask, "{set}: {:?}", manifest.add);
    }
    assert_eq!(status_field(pid, "CapAmb"), format!("{:016x}", 0));
    // hostPID and hostNetwork: the test's own PID and network namespaces (the node's mount
    // namespace is the fixture's; its PID and network namespaces are the host's).
    for (ns, host) in [("pid", manifest.host_pid), ("net", manifest.host_network)] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_eq!(
            theirs == ours,
            host,
            "{ns} namespace {theirs:?}, the host's {ours:?}"
        );
    }
    assert_eq!(
        status_field(pid, "NoNewPrivs"),
        "1",
        "allowPrivilegeEscalation"
    );
    assert_eq!(
        status_field(pid, "Seccomp"),
        "2",
        "the runtime's seccomp filter"
    );
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some("0")
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("the container's root in its mountinfo");
    assert!(
        root.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "readOnlyRootFilesystem: {root}"
    );
    // tracefs: the node's, bound; or, without one on the node, the agent's own over the bind
    // (only in the container's mount namespace).
    let mounted_it = "tracefs was not mounted: mounted it at /sys/kernel/tracing";
    let said = log_messages(&log);
    match tracefs {
        Tracefs::OnTheNode => assert!(!said.contains(mounted_it), "{said}"),
        Tracefs::NotOnTheNode => {
            assert!(said.contains(mounted_it), "{said}");
            assert!(has_tracefs(&mountinfo), "{mountinfo}");
            assert!(
                !has_tracefs(&node_mountinfo().unwrap()),
                "the node has none still"
            );
        }
    }
    for m in &mounts {
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(m.container_path.as_str()))
            .unwrap_or_else(|| panic!("no {} in the container:\n{mountinfo}", m.container_path));
        let ro = line
            .split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro");
        assert_eq!(ro, m.read_only, "{}: {line}", m.container_path);
    }

    // A client of the agent's socket, from the host: the header first.
    let socket = dirs.run.join("agent.sock");
    let stream = UnixStream::connect(&socket)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    let lines = Lines::spawn(stream);
    let next = |what: &str| match lines.next_until(Instant::now() + LINE_TIMEOUT) {
        Next::Line(line) => line,
        other => node.fail(&format!(
            "no {what} from the agent's socket ({other:?}); its log:\n{}",
            log_messages(&log)
        )),
    };
    let header_raw = next("header");
    let header: Value = serde_json::from_str(&header_raw).unwrap();
    assert_eq!(header["type"], "header", "{header}");

    // The EBUSY, on the host: the fixture (the test binary in a private mount namespace of its
    // own, outside the container) mounts a tmpfs, holds a file on it and fails to unmount it;
    // it lives (holding the file) until dropped.
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().canonicalize().unwrap();
    let mnt = tmp_path.join("m");
    let held = mnt.join("held");
    let fixture = Fixture::run(&Plan::new().tmpfs(&mnt).hold(&held).umount2(&mnt, 0));
    let errnos: Vec<i32> = fixture.report.calls.iter().map(|c| c.errno).collect();
    assert_eq!(errnos, [libc::EBUSY], "the fixture's umount2");
    let (raw, line) = loop {
        let raw = next("the fixture's umount line");
        let line: Value = serde_json::from_str(&raw).unwrap();
        if line["type"] == "umount" && line["pid"] == fixture.pid() {
            break (raw, line);
        }
    };
    assert_eq!(line["errno"], "EBUSY", "{line}");
    assert_eq!(line["target"], mnt.to_str().unwrap(), "{line}");
    assert_eq!(line["mntns"], fixture.mntns, "{line}");
    assert_eq!(
        line["container"],
        Value::Null,
        "the caller is the host's: {line}"
    );
    let holders = line["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 1, "one holder: {line}");
    let holder = &holders[0];
    assert_eq!(holder["kind"], "fd", "{line}");
    assert_eq!(holder["pid"], fixture.pid(), "{line}");
    assert_eq!(holder["comm"], fixture.comm.as_str(), "{line}");
    assert_eq!(holder["path"], held.to_str().unwrap(), "{line}");
    // The recording (the mapped /var/lib/busyprobe) has the same line, byte for byte.
    let recording = dirs.recording.join("unmounts.jsonl");
    let recorded = process::poll(LINE_TIMEOUT, || {
        let text = std::fs::read_to_string(&recording).ok()?;
        text.lines().any(|l| l == raw).then_some(text)
    })
    .unwrap_or_else(|| panic!("{} never held the line {raw}", recording.display()));
    let first = recorded.lines().next().unwrap_or_default();
    assert_eq!(first, header_raw, "the recording's header is the stream's");
    drop(fixture);

    // The kubelet's stop: SIGTERM, then the grace period.
    node.stop_container(&id, STOP_GRACE_S);
    let code = wait_exited(&node, &id, &log);
    assert_eq!(code, 0, "exit status; its log:\n{}", log_messages(&log));
    let recorded = std::fs::read_to_string(dirs.recording.join("unmounts.jsonl")).unwrap();
    assert!(
        recorded.ends_with("\"final\":true}\n"),
        "the recording ends with the final counters:\n{recorded}\nthe agent's log:\n{}",
        log_messages(&log)
    );
    // The stream ended with the agent.
    assert!(
        lines.wait_eof(Instant::now() + LINE_TIMEOUT),
        "the agent's stream did not end"
    );
    eprintln!("{trial}: {:.1?}", started.elapsed());
}

/// The same pod with one of the manifest's capabilities left out, each in turn (a container
/// each, attempts 0 to 4 of the pod's one container, as the kubelet's restarts would number
/// them): the agent exits with status 1 at start, and its log (the CRI's) names exactly the
/// capability that is missing.
fn the_daemonsets_pod_without_a_needed_capability_exits_naming_it() {
    const UID: &str = "e5f6a7b8-c9d0-4e1f-9a2b-3c4d5e6f7a81";
    let started = Instant::now();
    let manifest = AgentPod::from_manifest();
    assert_eq!(manifest.drop, ["ALL"], "every other capability is dropped");
    let node = node_with_image(&manifest);
    let dirs = Dirs {
        run: node.volume_dir().join("run"),
        recording: node.volume_dir().join("recording"),
    };
    let mounts = map_host_paths(&node, &manifest.mounts, &dirs);
    let pod = manifest.run_pod(&node, UID);
    for (attempt, missing) in manifest.add.iter().enumerate() {
        let add: Vec<String> = manifest
            .add
            .iter()
            .filter(|c| *c != missing)
            .cloned()
            .collect();
        let args = agent_args(&manifest, &free_addr().to_string());
        let config = manifest.container_config(&pod, attempt as u32, &args, &add, &mounts);
        let log = pod.log_directory().join(&config.log_path);
        let id = node.create_container_with(&pod, config);
        node.start_container(&id);
        let code = wait_exited(&node, &id, &log);
        let said = log_messages(&log);
        assert_eq!(
            code, 1,
            "exit status without CAP_{missing}; its log:\n{said}"
        );
        let wanted = format!("runs as root but without the capabilities CAP_{missing} (");
        assert!(
            said.contains(&wanted),
            "the log names CAP_{missing} alone ({wanted:?}):\n{said}"
        );
    }
    eprintln!(
        "the_daemonsets_pod_without_a_needed_capability_exits_naming_it: {} containers, {:.1?}",
        manifest.add.len(),
        started.elapsed()
    );
}
