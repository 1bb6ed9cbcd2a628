//! A real containerd 1.6 (Debian's, with runc), started by the test and driven through its CRI
//! plugin the way the kubelet drives it.
//!
//! [`Containerd`] is a guard. [`Containerd::start`] makes a temporary directory, writes a
//! config (CRI on, its sandbox ("pause") image the local busybox image of [`super::oci`],
//! `restrict_oom_score_adj`, runc's state and the CNI directories inside the temporary
//! directory), starts `containerd --config --root --state --address` there, waits until its
//! CRI answers, and imports the image with `ctr images import`. Pods and containers are then
//! made over the CRI socket with the `cri-api` crate (a blocking wrapper over tonic):
//! [`Containerd::run_pod`] (host network, pod metadata and the kubelet's labels, cgroup parent
//! `/kubepods/besteffort/pod<uid>`), [`Containerd::create_container`] and the other calls.
//!
//! ## The node's mount namespace
//! containerd runs inside `unshare -m --propagation shared`: a mount namespace of its own
//! whose mounts are all shared, as a real node's are under systemd (this machine's `/` is
//! private). That namespace is "the node": the volumes the test mounts there
//! ([`Containerd::mount_tmpfs`]) reach a container that mounts them with `HostToContainer`
//! propagation as rslave copies, and an unmount there ([`Unmounter`], the test binary
//! re-executed into it) fails with EBUSY while a container holds its copy — the incident of
//! `UnmountVolume.TearDown ... target is busy`. Every mount containerd and the test make
//! (overlay root filesystems, the sandbox's `/dev/shm`, the volumes) lives only in that
//! namespace and goes away with its last process; the host's mount table is never touched.
//!
//! ## Cleaning up
//! Dropping the guard, even when the trial failed: stops and removes the pods still there
//! (through the CRI; containers started with `ctr` through `ctr`), stops containerd (SIGTERM,
//! then SIGKILL), SIGKILLs every shim started for this socket (`containerd-shim-runc-v2 ...
//! -address <ours>`: shims outlive containerd) and every process left in the pods' cgroups,
//! removes the shims' sockets in `/run/containerd/s` (containerd 1.6 puts them there whatever
//! its `--state`), the pods' cgroups in every hierarchy, and the temporary directory. With no
//! process left in the node's namespace, its mounts are gone. containerd itself also dies with
//! the test's thread (`PR_SET_PDEATHSIG`). A test process killed outright leaves the shims
//! and containers running: the next run's first [`Containerd::start`] finds them (shims for a
//! socket of ours that no containerd serves) and cleans up after them (`reap_orphans`).

use std::{
    collections::HashMap,
    ffi::OsStr,
    future::Future,
    io::{BufRead, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cri_api::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata,
    ContainerStatusRequest, CreateContainerRequest, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    VersionRequest,
};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{
    lines::{Lines, Next},
    oci,
    process::{self, tool, Reaped},
};

/// How long containerd may take to answer on its socket after it starts (about 0.1 s here).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The deadline of one CRI call or `ctr` command (starting a container takes about 0.2 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each step of the clean-up may wait (a process to die, a cgroup to empty).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The containerd namespace the CRI plugin works in.
const NAMESPACE: &str = "k8s.io";
/// Where containerd 1.6 puts its shims' sockets, whatever its `--state`.
const SHIM_SOCKETS: &str = "/run/containerd/s";
/// Environment variable that turns the test binary into an [`Unmounter`]; its value is the
/// target.
pub const UMOUNT_ENV: &str = "BUSYPROBE_UNMOUNTER";
/// The [`Unmounter`]'s mount namespace (`/proc/PID/ns/mnt`).
const UMOUNT_NS_ENV: &str = "BUSYPROBE_UNMOUNTER_MNTNS";

/// Whether containerd's CRI plugin is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cri {
    /// On (the default, as on a Kubernetes node).
    On,
    /// Disabled (`disabled_plugins = ["io.containerd.grpc.v1.cri"]`): containerd answers on
    /// its socket, but not the CRI's `runtime.v1` services.
    Off,
}

/// A running containerd with its own root, state, socket and config in a temporary
/// directory, in a mount namespace of its own (the node's); everything cleaned up on drop.
pub struct Containerd {
    /// `unshare -m --propagation shared containerd ...` (unshare execs containerd: one pid).
    process: Option<Reaped>,
    /// Everything containerd wrote to stderr (its log), for failure messages.
    log: Arc<Mutex<String>>,
    socket: PathBuf,
    cri: Option<CriClient>,
    /// Pods run (removed or not): their cgroups are removed on drop.
    pods: Mutex<Vec<PodRecord>>,
    /// Containers started with `ctr`, deleted on drop.
    ctr_containers: Mutex<Vec<String>>,
    /// Dropped last (after [`Drop::drop`] has stopped everything that used it).
    dir: tempfile::TempDir,
}

/// A pod the guard ran: its sandbox id, its uid (its cgroup), whether it is removed.
struct PodRecord {
    sandbox: Option<String>,
    uid: String,
}

/// A pod sandbox made through the CRI.
pub struct Pod {
    /// The sandbox id the runtime gave it.
    pub id: String,
    /// The pod's UID (its metadata's `uid`).
    pub uid: String,
    /// The config it ran with; CreateContainer takes it again, as the kubelet sends it.
    config: PodSandboxConfig,
}

impl Pod {
    /// The directory its containers' logs go to (the CRI's `log_directory`; a container's
    /// `log_path` is relative to it).
    pub fn log_directory(&self) -> &Path {
        Path::new(&self.config.log_directory)
    }
}

/// A host directory mounted into a container.
pub struct Volume<'a> {
    /// The directory, a path in the node's mount namespace.
    pub host: &'a Path,
    /// Where the container sees it.
    pub container: &'a str,
    /// `PropagationHostToContainer` is rslave (what makes the node's unmount fail).
    pub propagation: MountPropagation,
}

impl Containerd {
    /// A containerd with its CRI plugin, the busybox image imported.
    pub fn start() -> Self {
        Self::start_with(Cri::On)
    }

    /// A containerd with its CRI plugin on or off, the busybox image imported.
    pub fn start_with(cri: Cri) -> Self {
        reap_orphans();
        let dir = tempfile::Builder::new()
            .prefix("busyprobe-ctrd-")
            .tempdir()
            .expect("temp dir for containerd");
        let root = dir.path().canonicalize().unwrap();
        for sub in [
            "root", "state", "runc", "cni/bin", "cni/conf", "opt", "pods", "vol",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let socket = root.join("containerd.sock");
        let config = root.join("config.toml");
        std::fs::write(&config, config_toml(&root, &socket, cri)).unwrap();
        let archive = oci::busybox_archive();

        let mut child = process::spawn(
            Command::new(tool("unshare"))
                .args(["-m", "--propagation", "shared", "--"])
                .arg(tool("containerd"))
                .arg("--config")
                .arg(&config)
                .arg("--root")
                .arg(root.join("root"))
                .arg("--state")
                .arg(root.join("state"))
                .arg("--address")
                .arg(&socket)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let (_lines, log) = Lines::spawn_collected(child.stderr.take().unwrap());
        let mut containerd = Self {
            process: Some(child),
            log,
            socket,
            cri: None,
            pods: Mutex::default(),
            ctr_containers: Mutex::default(),
            dir,
        };
        containerd.wait_ready(cri);
        containerd.ctr(&[
            OsStr::new("images"),
            OsStr::new("import"),
            OsStr::new("--base-name"),
            OsStr::new(oci::REPOSITORY),
            archive.as_os_str(),
        ]);
        containerd
    }

    /// Waits until containerd serves its socket and, with the CRI on, until the CRI answers
    /// `Version` (it says "not initialized" for a moment after the socket appears).
    fn wait_ready(&mut self, cri: Cri) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no socket yet");
        loop {
            if let Some(status) = self.process.as_mut().unwrap().try_wait().unwrap() {
                self.fail(&format!("containerd exited at start ({status})"));
            }
            if self.socket.exists() {
                match cri {
                    Cri::Off => return,
                    Cri::On => match CriClient::connect(&self.socket).and_then(|client| {
                        client.call("Version", |mut c| async move {
                            c.version(VersionRequest {
                                version: "v1".into(),
                            })
                            .await
                        })?;
                        Ok(client)
                    }) {
                        Ok(client) => {
                            self.cri = Some(client);
                            return;
                        }
                        Err(e) => last = e,
                    },
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "containerd did not answer within {START_TIMEOUT:?}: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The socket containerd serves (its CRI too).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's pid, which is in the node's mount namespace.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().unwrap().id()
    }

    /// A directory made for volumes, in the temporary directory (the same path in the node's
    /// namespace and on the host).
    pub fn volume_dir(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join("vol")
    }

    /// The node's mount namespace (`/proc/<containerd>/ns/mnt`).
    pub fn node_namespace(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.pid()))
    }

    /// `path` (absolute, in the node's mount namespace) as the host reaches it: through
    /// containerd's root, whose walk crosses the node's mounts.
    pub fn node_path(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.pid())).join(path.strip_prefix("/").unwrap())
    }

    /// `program` run in the node's mount namespace (`nsenter --mount=...`: it execs, so the
    /// child's pid is the program's).
    pub fn in_node(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(tool("nsenter"));
        cmd.arg(format!("--mount={}", self.node_namespace().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Mounts a fresh tmpfs on `dir` in the node's mount namespace (shared, as every mount
    /// there); it goes away with the namespace.
    pub fn mount_tmpfs(&self, dir: &Path) {
        let out = process::output(
            self.in_node(tool("mount"))
                .args(["-t", "tmpfs", "busyprobe-volume"])
                .arg(dir),
        );
        assert!(
            out.status.success(),
            "mount a tmpfs on {} in the node: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Everything containerd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Panics with `msg` and containerd's last log lines.
    pub fn fail(&self, msg: &str) -> ! {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!("{msg}\n--- containerd log (last 40 lines) ---\n{tail}")
    }

    fn cri(&self) -> &CriClient {
        self.cri
            .as_ref()
            .unwrap_or_else(|| self.fail("this containerd runs without its CRI plugin"))
    }

    /// `ctr -a <socket> -n k8s.io ARGS`, which must succeed; its stdout.
    pub fn ctr<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = process::output(self.ctr_command().args(args));
        if !out.status.success() {
            self.fail(&format!(
                "ctr {:?}: {}\n{}",
                args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ctr_command(&self) -> Command {
        let mut cmd = Command::new(tool("ctr"));
        cmd.arg("-a")
            .arg(&self.socket)
            .args(["-n", NAMESPACE, "--timeout", "30s"]);
        cmd
    }

    /// RunPodSandbox as the kubelet sends it for a host-network pod of the BestEffort class:
    /// metadata, the kubelet's labels and annotations, a log directory, no hostname (the
    /// kubelet sets none with host network), cgroup parent `/kubepods/besteffort/pod<uid>`
    /// (the cgroupfs driver's layout), the network namespace the node's, PID per container.
    pub fn run_pod(&self, name: &str, namespace: &str, uid: &str) -> Pod {
        self.run_pod_with(name, namespace, uid, namespaces())
    }

    /// [`Containerd::run_pod`] with the pod's namespaces `namespace_options` (a `hostPID` pod:
    /// pid `NODE`).
    pub fn run_pod_with(
        &self,
        name: &str,
        namespace: &str,
        uid: &str,
        namespace_options: NamespaceOption,
    ) -> Pod {
        let log_directory = self
            .dir
            .path()
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&log_directory).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            log_directory: log_directory.display().to_string(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), name.into()),
                ("io.kubernetes.pod.namespace".into(), namespace.into()),
                ("io.kubernetes.pod.uid".into(), uid.into()),
            ]),
            annotations: HashMap::from([
                ("kubernetes.io/config.source".into(), "api".into()),
                (
                    "kubernetes.io/config.seen".into(),
                    "2026-12-07T00:00:00Z".into(),
                ),
            ]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.pods.lock().unwrap().push(PodRecord {
            sandbox: None,
            uid: uid.into(),
        });
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .cri()
            .call("RunPodSandbox", |mut c| async move {
                c.run_pod_sandbox(request).await
            })
            .unwrap_or_else(|e| self.fail(&e))
            .pod_sandbox_id;
        if let Some(record) = self.pods.lock().unwrap().iter_mut().find(|p| p.uid == uid) {
            record.sandbox = Some(id.clone());
        }
        Pod {
            id,
            uid: uid.into(),
            config,
        }
    }

    /// CreateContainer in `pod` as the kubelet sends it: metadata `name`, the busybox image,
    /// `command`, the volumes, the kubelet's labels and annotations, a log path, BestEffort
    /// resources; returns the container id.
    pub fn create_container(
        &self,
        pod: &Pod,
        name: &str,
        command: &[&str],
        volumes: &[Volume],
    ) -> String {
        let meta = pod.config.metadata.as_ref().unwrap();
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: oci::IMAGE.into(),
                user_specified_image: oci::IMAGE.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: vec![KeyValue {
                key: "KUBERNETES_SERVICE_HOST".into(),
                value: "10.96.0.1".into(),
            }],
            mounts: volumes
                .iter()
                .map(|v| Mount {
                    container_path: v.container.into(),
                    host_path: v.host.display().to_string(),
                    propagation: v.propagation as i32,
                    ..Default::default()
                })
                .collect(),
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), name.into()),
                ("io.kubernetes.pod.name".into(), meta.name.clone()),
                ("io.kubernetes.pod.namespace".into(), meta.namespace.clone()),
                ("io.kubernetes.pod.uid".into(), meta.uid.clone()),
            ]),
            annotations: HashMap::from([
                ("io.kubernetes.container.hash".into(), "6f3b7a1c".into()),
                ("io.kubernetes.container.restartCount".into(), "0".into()),
                (
                    "io.kubernetes.container.terminationMessagePath".into(),
                    "/dev/termination-log".into(),
                ),
                (
                    "io.kubernetes.container.terminationMessagePolicy".into(),
                    "File".into(),
                ),
                (
                    "io.kubernetes.pod.terminationGracePeriod".into(),
                    "30".into(),
                ),
            ]),
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_shares: 2,
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        self.create_container_with(pod, config)
    }

    /// CreateContainer in `pod` with `config` made whole by the caller (the directory of its
    /// log path is made first); returns the container id.
    pub fn create_container_with(&self, pod: &Pod, config: ContainerConfig) -> String {
        let log = Path::new(&pod.config.log_directory).join(&config.log_path);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        self.cri()
            .call("CreateContainer", |mut c| async move {
                c.create_container(request).await
            })
            .unwrap_or_else(|e| self.fail(&e))
            .container_id
    }

    /// ContainerStatus, not verbose (state, exit code, log path).
    pub fn container_status(&self, id: &str) -> cri_api::v1::ContainerStatus {
        let request = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.cri()
            .call("ContainerStatus", |mut c| async move {
                c.container_status(request).await
            })
            .unwrap_or_else(|e| self.fail(&e))
            .status
            .unwrap_or_else(|| self.fail(&format!("no status for container {id}")))
    }

    /// StartContainer.
    pub fn start_container(&self, id: &str) {
        let request = StartContainerRequest {
            container_id: id.into(),
        };
        self.cri()
            .call("StartContainer", |mut c| async move {
                c.start_container(request).await
            })
            .unwrap_or_else(|e| self.fail(&e));
    }

    /// The host pid of a running container's first process, from ContainerStatus's verbose
    /// info (`info.pid`, what `crictl inspect` shows).
    pub fn container_pid(&self, id: &str) -> u32 {
        let request = ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        };
        let answer = self
            .cri()
            .call("ContainerStatus", |mut c| async move {
                c.container_status(request).await
            })
            .unwrap_or_else(|e| self.fail(&e));
        let info: Value = answer
            .info
            .get("info")
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_else(|| self.fail(&format!("no verbose info: {:?}", answer.info)));
        info["pid"]
            .as_u64()
            .filter(|&pid| pid > 0)
            .unwrap_or_else(|| self.fail(&format!("no pid in the verbose info: {info}")))
            as u32
    }

    /// StopContainer with a grace period of `timeout_s` seconds (0: SIGKILL at once).
    pub fn stop_container(&self, id: &str, timeout_s: i64) {
        let request = StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_s,
        };
        self.cri()
            .call("StopContainer", |mut c| async move {
                c.stop_container(request).await
            })
            .unwrap_or_else(|e| self.fail(&e));
    }

    /// RemoveContainer.
    pub fn remove_container(&self, id: &str) {
        let request = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.cri()
            .call("RemoveContainer", |mut c| async move {
                c.remove_container(request).await
            })
            .unwrap_or_else(|e| self.fail(&e));
    }

    /// StopPodSandbox (its containers are stopped with it).
    pub fn stop_pod(&self, pod: &Pod) {
        stop_pod(self.cri(), &pod.id).unwrap_or_else(|e| self.fail(&e));
    }

    /// RemovePodSandbox (its containers are removed with it).
    pub fn remove_pod(&self, pod: &Pod) {
        remove_pod(self.cri(), &pod.id).unwrap_or_else(|e| self.fail(&e));
        if let Some(record) = self
            .pods
            .lock()
            .unwrap()
            .iter_mut()
            .find(|p| p.sandbox.as_deref() == Some(&pod.id))
        {
            record.sandbox = None;
        }
    }

    /// Runs container `id` with `ctr run` (no CRI): the busybox image, `command`, `volume`
    /// bind-mounted rslave on `/vol`, in the cgroup a kubelet with the cgroupfs driver would
    /// give a container of pod `pod_uid` (`/kubepods/besteffort/pod<uid>/<id>`), no I/O;
    /// returns the host pid of its process.
    pub fn ctr_run(&self, id: &str, pod_uid: &str, volume: &Path, command: &[&str]) -> u32 {
        self.pods.lock().unwrap().push(PodRecord {
            sandbox: None,
            uid: pod_uid.into(),
        });
        self.ctr_containers.lock().unwrap().push(id.into());
        let mount = format!(
            "type=bind,src={},dst=/vol,options=rbind:rslave",
            volume.display()
        );
        let cgroup = format!("/kubepods/besteffort/pod{pod_uid}/{id}");
        let mut args = vec![
            "run",
            "-d",
            "--null-io",
            "--cgroup",
            &cgroup,
            "--mount",
            &mount,
            oci::IMAGE,
            id,
        ];
        args.extend_from_slice(command);
        self.ctr(&args);
        let tasks = self.ctr(&["tasks", "ls"]);
        tasks
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.first() == Some(&id))
                    .then(|| fields.get(1)?.parse().ok())
                    .flatten()
            })
            .unwrap_or_else(|| self.fail(&format!("no task {id} in `ctr tasks ls`:\n{tasks}")))
    }

    /// Starts an [`Unmounter`] of `target` in the node's mount namespace.
    pub fn unmounter(&self, target: &Path) -> Unmounter {
        Unmounter::start(self.pid(), target)
    }

    /// Starts an [`Unmounter`] of `target` (a path in the container) in the mount namespace
    /// of `pid`, a container's process; see [`Unmounter::join_cgroups_of`] to make it one of
    /// the container's processes.
    pub fn unmounter_in(&self, pid: u32, target: &Path) -> Unmounter {
        Unmounter::start(pid, target)
    }

    /// The clean-up of [`Drop`], step by step; each step goes on whatever the previous gave.
    fn clean_up(&mut self) {
        let pods: Vec<PodRecord> = std::mem::take(&mut *self.pods.lock().unwrap());
        if let Some(cri) = &self.cri {
            for sandbox in pods.iter().filter_map(|p| p.sandbox.as_deref()) {
                if let Err(e) = stop_pod(cri, sandbox).and_then(|()| remove_pod(cri, sandbox)) {
                    eprintln!("containerd clean-up: pod {sandbox}: {e}");
                }
            }
        }
        for id in std::mem::take(&mut *self.ctr_containers.lock().unwrap()) {
            for args in [
                &["tasks", "delete", "--force", &id][..],
                &["containers", "delete", &id],
            ] {
                let _ = process::try_output(self.ctr_command().args(args));
            }
        }
        self.cri = None;
        if let Some(mut containerd) = self.process.take() {
            let pid = Pid::from_raw(containerd.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            if process::poll(CLEANUP_TIMEOUT, || containerd.try_wait().ok().flatten()).is_none() {
                eprintln!("containerd clean-up: containerd ignored SIGTERM; killed");
            }
            drop(containerd);
        }
        // Whatever is left: shims for our socket, and processes in our pods' cgroups.
        let shims = shims_of(&self.socket);
        let mut left: Vec<u32> = shims.iter().map(|s| s.pid).collect();
        for pod in &pods {
            left.extend(cgroup_pids(&pod.uid));
        }
        for &pid in &left {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if !left.is_empty() {
            eprintln!(
                "containerd clean-up: killed {} processes left over",
                left.len()
            );
        }
        let gone = process::poll(CLEANUP_TIMEOUT, || {
            left.iter().all(|pid| !is_alive(*pid)).then_some(())
        });
        if gone.is_none() {
            eprintln!("containerd clean-up: processes still alive: {left:?}");
        }
        for shim in &shims {
            let _ = std::fs::remove_file(shim.socket());
        }
        for pod in &pods {
            remove_pod_cgroups(&pod.uid);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// The namespaces of a host-network pod as the kubelet asks for them: the node's network,
/// a PID namespace per container, IPC shared in the pod.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn stop_pod(cri: &CriClient, sandbox: &str) -> Result<(), String> {
    let request = StopPodSandboxRequest {
        pod_sandbox_id: sandbox.into(),
    };
    cri.call("StopPodSandbox", |mut c| async move {
        c.stop_pod_sandbox(request).await
    })
    .map(drop)
}

fn remove_pod(cri: &CriClient, sandbox: &str) -> Result<(), String> {
    let request = RemovePodSandboxRequest {
        pod_sandbox_id: sandbox.into(),
    };
    cri.call("RemovePodSandbox", |mut c| async move {
        c.remove_pod_sandbox(request).await
    })
    .map(drop)
}

/// containerd's config: everything it writes inside `root` (its own root and state, runc's
/// state, the CNI directories, `opt`), the snapshotters that cannot work here left out, and
/// the CRI plugin set up as a host-network node without CNI needs it.
fn config_toml(root: &Path, socket: &Path, cri: Cri) -> String {
    let root = root.display();
    let mut disabled = vec![
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.zfs",
    ];
    if cri == Cri::Off {
        disabled.push("io.containerd.grpc.v1.cri");
    }
    let disabled = disabled
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let runc = tool("runc");
    format!(
        r#"# Written by busyprobe's tests (tests/support/containerd.rs).
version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = [{disabled}]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # The pod sandbox ("pause") image: the local busybox image, whose command sleeps.
  sandbox_image = "{image}"
  # Root here lacks CAP_SYS_RESOURCE: runc could not lower a container's oom_score_adj
  # (the failure reads only "can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    # No CNI: host-network pods need none (the runtime says NetworkReady=false).
    bin_dir = "{root}/cni/bin"
    conf_dir = "{root}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{root}/runc"
        SystemdCgroup = false
"#,
        socket = socket.display(),
        image = oci::IMAGE,
        runc = runc.display(),
    )
}

/// A blocking CRI client: the `cri-api` crate's `RuntimeServiceClient` over the Unix socket,
/// each call run on a runtime of its own under [`CALL_TIMEOUT`].
struct CriClient {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl CriClient {
    fn connect(socket: &Path) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let path = socket.to_owned();
        let endpoint = Endpoint::from_static("http://cri.invalid");
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }));
        let channel = runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, connect).await })
            .map_err(|_| format!("connecting to {}: timed out", socket.display()))?
            .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
        Ok(Self {
            runtime,
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// Runs `call` on a clone of the client; `what` names it in errors.
    fn call<T, F>(
        &self,
        what: &str,
        call: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> Result<T, String>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let future = call(self.client.clone());
        match self
            .runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, future).await })
        {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(format!(
                "CRI {what}: {:?}: {}",
                status.code(),
                status.message()
            )),
            Err(_) => Err(format!("CRI {what}: no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

/// A process that unmounts a target with `umount2` when asked, in the mount namespace of
/// another process (the node's: containerd's; or a container's), and lives (so busyprobe can
/// look at it) until dropped: the test binary re-executed with [`UMOUNT_ENV`] and
/// [`UMOUNT_NS_ENV`] set (see [`run_unmounter`]), which enters the namespace itself.
pub struct Unmounter {
    child: Reaped,
    stdin: ChildStdin,
    stdout: Lines,
}

impl Unmounter {
    /// Starts one for `target` in the mount namespace of process `pid`.
    fn start(pid: u32, target: &Path) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = process::spawn(
            Command::new(exe)
                .env(UMOUNT_ENV, target)
                .env(UMOUNT_NS_ENV, format!("/proc/{pid}/ns/mnt"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let stdin = child.stdin.take().unwrap();
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let unmounter = Self {
            child,
            stdin,
            stdout,
        };
        match unmounter.answer() {
            line if line == "ready" => unmounter,
            line => panic!("the unmounter said {line:?}"),
        }
    }

    /// Its pid (the caller busyprobe reports).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Moves it into the cgroups of process `pid` (a container's), in every hierarchy, as
    /// `crictl exec` / `kubectl exec` put the processes they start in a container.
    pub fn join_cgroups_of(&self, pid: u32) {
        join_cgroups(self.pid(), pid);
    }

    /// Calls `umount2(target, 0)` once; the errno it gave (0 when it worked).
    pub fn umount(&mut self) -> i32 {
        writeln!(self.stdin, "umount").expect("ask the unmounter");
        let line = self.answer();
        line.strip_prefix("errno ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the unmounter said {line:?}"))
    }

    fn answer(&self) -> String {
        match self
            .stdout
            .next_until(Instant::now() + process::OUTPUT_TIMEOUT)
        {
            Next::Line(line) => line,
            other => panic!("no answer from the unmounter: {other:?}"),
        }
    }
}

/// Moves process `pid` into the cgroups of process `of` (a container's), in every hierarchy.
pub fn join_cgroups(pid: u32, of: u32) {
    let cgroups = std::fs::read_to_string(format!("/proc/{of}/cgroup")).unwrap();
    let mounts = cgroup_mounts();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        let Some((mount, _)) = mounts.iter().find(|(_, options)| {
            if wanted.is_empty() {
                options.is_empty() // the v2 hierarchy
            } else {
                wanted.iter().all(|w| options.iter().any(|o| o == w))
            }
        }) else {
            continue;
        };
        let procs = mount
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
    }
}

/// Every cgroup hierarchy mounted on this host: its mount point and its super options (the
/// controllers and `name=...` of v1; none for v2).
fn cgroup_mounts() -> Vec<(PathBuf, Vec<String>)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or_default();
            let options = match fstype {
                "cgroup" => options
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("relatime"))
                    .map(str::to_owned)
                    .collect(),
                "cgroup2" => Vec::new(),
                _ => return None,
            };
            Some((PathBuf::from(mount_point), options))
        })
        .collect()
}

/// The [`Unmounter`]'s side (single-threaded: called first thing in `main`): enters the mount
/// namespace named by [`UMOUNT_NS_ENV`], says `ready`, then for each line on stdin calls
/// `umount2(target, 0)` and answers `errno N`; exits at end of file.
pub fn run_unmounter(target: &OsStr) -> ! {
    let namespace = std::env::var_os(UMOUNT_NS_ENV).expect("the unmounter's namespace");
    let namespace = std::fs::File::open(&namespace).expect("open the mount namespace");
    nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNS).expect("setns(CLONE_NEWNS)");
    let target = std::ffi::CString::new(target.as_bytes()).expect("target without NUL");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        // SAFETY: a NUL-terminated path, flags 0.
        let ret = unsafe { libc::umount2(target.as_ptr(), 0) };
        let errno = if ret == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        };
        let _ = writeln!(out, "errno {errno}");
        let _ = out.flush();
    }
    std::process::exit(0)
}

/// A `containerd-shim-runc-v2` process started for one containerd socket.
struct Shim {
    pid: u32,
    address: String,
    namespace: String,
    id: String,
}

impl Shim {
    /// Its socket: containerd 1.6 names it `sha256(<address>/<namespace>/<id>)` in
    /// [`SHIM_SOCKETS`] (`shim.SocketAddress`).
    fn socket(&self) -> PathBuf {
        let digest = Sha256::digest(format!("{}/{}/{}", self.address, self.namespace, self.id));
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Path::new(SHIM_SOCKETS).join(hex)
    }
}

/// A process of this host: its pid, its parent's, its arguments.
struct Proc {
    pid: u32,
    ppid: u32,
    args: Vec<String>,
}

impl Proc {
    /// The file name of its program.
    fn program(&self) -> &str {
        self.args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    /// The argument after `flag`.
    fn flag(&self, flag: &str) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    }

    /// It as a shim (`containerd-shim-runc-v2 -namespace NS -id ID -address SOCKET`).
    fn as_shim(&self) -> Option<Shim> {
        self.program()
            .starts_with("containerd-shim")
            .then_some(())?;
        Some(Shim {
            pid: self.pid,
            address: self.flag("-address")?.to_owned(),
            namespace: self.flag("-namespace").unwrap_or_default().to_owned(),
            id: self.flag("-id").unwrap_or_default().to_owned(),
        })
    }
}

/// Every process of this host (those that vanish while listed left out).
fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Proc { pid, ppid, args })
        })
        .collect()
}

/// Every shim whose `-address` is `socket`.
fn shims_of(socket: &Path) -> Vec<Shim> {
    let socket = socket.display().to_string();
    processes()
        .iter()
        .filter_map(Proc::as_shim)
        .filter(|shim| shim.address == socket)
        .collect()
}

/// Cleans up after earlier test runs killed outright (their guards never dropped), once per
/// run: shims whose `-address` is in a temp dir of ours (`busyprobe-ctrd-*`) that no running
/// containerd serves. Their containers (the shims' children) and the shims are killed (the
/// node's namespace and its mounts go with them), then their sockets, the containers' pod
/// cgroups and the temp dirs are removed. Shims of a containerd still running (this run's
/// other trials, or anyone else's) are left alone.
fn reap_orphans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(tmp) = std::env::temp_dir().canonicalize() else {
            return;
        };
        let ours = tmp.join("busyprobe-ctrd-").display().to_string();
        let procs = processes();
        let served: Vec<&str> = procs
            .iter()
            .filter(|p| p.program() == "containerd")
            .filter_map(|p| p.flag("--address"))
            .collect();
        let orphans: Vec<Shim> = procs
            .iter()
            .filter_map(Proc::as_shim)
            .filter(|s| s.address.starts_with(&ours) && !served.contains(&s.address.as_str()))
            .collect();
        if orphans.is_empty() {
            return;
        }
        let mut doomed: Vec<u32> = Vec::new();
        let mut uids: Vec<String> = Vec::new();
        for shim in &orphans {
            for child in procs.iter().filter(|p| p.ppid == shim.pid) {
                doomed.push(child.pid);
                uids.extend(pod_uid_of(child.pid));
            }
            doomed.push(shim.pid);
        }
        eprintln!(
            "containerd: killing {} processes left by an earlier run (shims for {:?})",
            doomed.len(),
            orphans
                .iter()
                .map(|s| s.address.as_str())
                .collect::<Vec<_>>()
        );
        for &pid in &doomed {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = process::poll(CLEANUP_TIMEOUT, || {
            doomed.iter().all(|pid| !is_alive(*pid)).then_some(())
        });
        uids.sort();
        uids.dedup();
        for uid in &uids {
            remove_pod_cgroups(uid);
        }
        for shim in &orphans {
            let _ = std::fs::remove_file(shim.socket());
            if let Some(dir) = Path::new(&shim.address).parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    });
}

/// The uid of the pod whose cgroup (`.../kubepods/besteffort/pod<uid>/...`) `pid` is in.
fn pod_uid_of(pid: u32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroups.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        let parts: Vec<&str> = path.split('/').collect();
        parts.windows(2).find_map(|w| {
            (w[0] == "besteffort")
                .then(|| w[1].strip_prefix("pod"))
                .flatten()
                .map(str::to_owned)
        })
    })
}

/// Whether `pid` still runs (a zombie counts as gone).
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The cgroup directories of pod `uid` (`kubepods/besteffort/pod<uid>`) in every hierarchy
/// mounted under `/sys/fs/cgroup` (cgroup v1's, and v2's when it is there).
fn pod_cgroups(uid: &str) -> Vec<PathBuf> {
    let rel = format!("kubepods/besteffort/pod{uid}");
    let mut bases = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        bases.extend(entries.flatten().map(|e| e.path()));
    }
    bases
        .into_iter()
        .map(|base| base.join(&rel))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Every pid in pod `uid`'s cgroups.
fn cgroup_pids(uid: &str) -> Vec<u32> {
    fn walk(dir: &Path, pids: &mut Vec<u32>) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
        }
        for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if sub.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&sub.path(), pids);
            }
        }
    }
    let mut pids = Vec::new();
    for dir in pod_cgroups(uid) {
        walk(&dir, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes pod `uid`'s cgroups (children first) in every hierarchy, then `kubepods/besteffort`
/// and `kubepods` where they are left empty (as the kubelet would have made them).
fn remove_pod_cgroups(uid: &str) {
    fn remove(dir: &Path) {
        for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if sub.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&sub.path());
            }
        }
        let removed = process::poll(CLEANUP_TIMEOUT, || match std::fs::remove_dir(dir) {
            Ok(()) => Some(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(()),
            Err(_) => None,
        });
        if removed.is_none() {
            eprintln!("containerd clean-up: could not remove {}", dir.display());
        }
    }
    for dir in pod_cgroups(uid) {
        remove(&dir);
        // Other pods (another trial's, another runtime's) may still use them: an rmdir of a
        // cgroup with children fails, which is fine.
        let besteffort = dir.parent().unwrap();
        let _ = std::fs::remove_dir(besteffort);
        let _ = std::fs::remove_dir(besteffort.parent().unwrap());
    }
}
