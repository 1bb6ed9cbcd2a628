//! Pods under a real containerd (Debian's 1.6 with runc, its CRI plugin driven as the kubelet
//! drives it; see `support/containerd.rs`): a container holds a file on a volume it mounts
//! with `HostToContainer` propagation, the node's unmount of that volume fails with EBUSY,
//! and `busyprobe watch --cri-socket` names the holder's pod, namespace and container.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use cri_api::v1::MountPropagation;
use libtest_mimic::Trial;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{
    containerd::{Containerd, Cri, Pod, Volume},
    oci,
    process::{self, OUTPUT_TIMEOUT},
    watcher::{lines_text, Watcher},
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        a_pod_under_real_containerd_pins_the_nodes_volume,
        an_ebusy_names_the_holders_pod,
        a_deleted_containers_holder_is_still_named,
        a_runtime_without_cri_is_one_notice,
        an_unmount_from_inside_a_pod_names_the_callers_pod,
        a_cri_socket_that_cannot_answer_is_one_notice,
        who_pod_by_name_lists_the_pods_volume_and_its_holder,
        the_holders_shim_names_the_cri_socket,
    ]
}

/// The holding container's command: it opens a file on the volume's tmpfs (fd 3, kept by
/// `sleep`, which the shell execs: one process), then says so with a file the test waits for
/// (written under another name and renamed, so that it is never seen half written).
const HOLD: &str = "exec 3>/vol/m/held && echo ready >/vol/m/.ready && mv /vol/m/.ready \
                    /vol/m/ready && exec sleep 2147483647";

/// A pod whose container holds a file on a tmpfs of the node's, set up by [`holding_pod`]
/// (`podbench.rs` uses it too).
pub struct Holding {
    pub pod: Pod,
    /// The container's id (CRI).
    pub container: String,
    /// The host pid of its process, which holds the file.
    pub pid: u32,
    /// The tmpfs, as the node mounts it (the unmounter's target).
    pub mount: PathBuf,
}

/// On `node`: a tmpfs on `<volume dir>/m`, then pod `namespace/name` (uid `uid`) with a
/// container `scanner` that mounts the volume directory on `/vol` with `HostToContainer`
/// (rslave) propagation and runs [`HOLD`]; returns once the container said it holds the file.
pub fn holding_pod(node: &Containerd, name: &str, namespace: &str, uid: &str) -> Holding {
    let volume = node.volume_dir();
    let mount = volume.join("m");
    std::fs::create_dir(&mount).unwrap();
    node.mount_tmpfs(&mount);
    let pod = node.run_pod(name, namespace, uid);
    let container = node.create_container(
        &pod,
        "scanner",
        &["/bin/sh", "-c", HOLD],
        &[Volume {
            host: &volume,
            container: "/vol",
            propagation: MountPropagation::PropagationHostToContainer,
        }],
    );
    node.start_container(&container);
    wait_ready(node, &mount);
    let pid = node.container_pid(&container);
    Holding {
        pod,
        container,
        pid,
        mount,
    }
}

/// Waits until the container's `ready` file is on the node's tmpfs at `mount`.
fn wait_ready(node: &Containerd, mount: &Path) {
    let ready = node.node_path(&mount.join("ready"));
    if process::poll(OUTPUT_TIMEOUT, || {
        std::fs::read_to_string(&ready)
            .ok()
            .filter(|s| s == "ready\n")
    })
    .is_none()
    {
        node.fail(&format!("the container never wrote {}", ready.display()));
    }
}

/// `busyprobe watch --json --cri-socket <node's socket>`.
fn watch(node: &Containerd) -> Watcher {
    Watcher::start(&[OsStr::new("--cri-socket"), node.socket().as_os_str()])
}

/// The holder of `line` with pid `pid`; fails with the line when there is none.
fn holder_of(line: &Value, pid: u32) -> &Value {
    line["holders"]
        .as_array()
        .and_then(|holders| holders.iter().find(|h| h["pid"] == pid))
        .unwrap_or_else(|| panic!("no holder with pid {pid}: {line}"))
}

/// The fixture itself, without busyprobe: the pod runs under cgroup parent
/// `/kubepods/besteffort/pod<uid>`, its process (the pid the CRI gives) holds the file on the
/// volume's tmpfs through its rslave copy, and the node's `umount2` of the tmpfs fails with
/// EBUSY because of it.
fn a_pod_under_real_containerd_pins_the_nodes_volume() {
    const UID: &str = "0b3f6c1e-5a7d-4e2b-9c8f-1d2e3f4a5b6c";
    let node = Containerd::start();
    let held = holding_pod(&node, "smoke", "default", UID);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", held.pid)).unwrap();
    let expected = format!(
        "/kubepods/besteffort/pod{}/{}",
        held.pod.uid, held.container
    );
    assert!(
        cgroups
            .lines()
            .any(|l| l.ends_with(&format!(":{expected}"))),
        "the container's process is not in {expected}:\n{cgroups}"
    );
    let fd = std::fs::read_link(format!("/proc/{}/fd/3", held.pid)).unwrap();
    assert_eq!(fd, Path::new("/vol/m/held"), "the container's fd 3");
    let mut unmounter = node.unmounter(&held.mount);
    assert_eq!(
        unmounter.umount(),
        libc::EBUSY,
        "the node's umount2 of the volume while the container holds it"
    );
    node.stop_pod(&held.pod);
    node.remove_pod(&held.pod);
    // The holder is gone: the copy in the container went with it, and the unmount works.
    assert_eq!(unmounter.umount(), 0, "the node's umount2 after the pod");
}

/// The node's unmount of a volume fails because a container holds it: the EBUSY line names
/// the holder (the container's process, its exact host pid) with its container id and its
/// pod's name, namespace and uid and the container's name and image, from the CRI. The caller
/// (the node's unmounter) is in no container.
fn an_ebusy_names_the_holders_pod() {
    const UID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let node = Containerd::start();
    let held = holding_pod(&node, "scanner-x7", "demo", UID);
    let watcher = watch(&node);
    let mut unmounter = node.unmounter(&held.mount);
    assert_eq!(unmounter.umount(), libc::EBUSY, "the node's umount2");
    let line = watcher.umount_lines_of(unmounter.pid(), 1).remove(0);
    assert_eq!(line["errno"], "EBUSY", "{line}");
    // The scan finds the container's fd through its copy of the tmpfs, in its own mount
    // namespace: a slave of the node's, which receives the unmount.
    let holder = holder_of(&line, held.pid);
    assert_eq!(holder["kind"], "mount-copy", "{line}");
    assert_eq!(holder["via"], "fd", "{line}");
    assert_eq!(holder["fd"], 3, "{line}");
    assert_eq!(holder["path"], "/vol/m/held", "{line}");
    assert_eq!(holder["container"]["id"], held.container.as_str(), "{line}");
    assert_eq!(holder["container"]["pod_uid"], UID, "{line}");
    let k8s = &holder["k8s"];
    assert_eq!(k8s["pod"], "scanner-x7", "{line}");
    assert_eq!(k8s["namespace"], "demo", "{line}");
    assert_eq!(k8s["uid"], UID, "{line}");
    assert_eq!(k8s["container"], "scanner", "{line}");
    assert_eq!(k8s["image"], oci::IMAGE, "{line}");
    assert_eq!(
        line["container"],
        Value::Null,
        "the caller is in no container: {line}"
    );
    assert_eq!(line["k8s"], Value::Null, "the caller is in no pod: {line}");
}

/// The container that held the volume is stopped and removed (its pod too) right after the
/// node's unmount failed: the holder, the container's process, is still named with its pod
/// (busyprobe remembers containers that went away).
fn a_deleted_containers_holder_is_still_named() {
    const UID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let node = Containerd::start();
    let held = holding_pod(&node, "scanner-x7", "demo", UID);
    let watcher = watch(&node);
    let mut unmounter = node.unmounter(&held.mount);
    assert_eq!(unmounter.umount(), libc::EBUSY, "the node's umount2");
    node.stop_container(&held.container, 0);
    node.remove_container(&held.container);
    node.stop_pod(&held.pod);
    node.remove_pod(&held.pod);
    let line = watcher.umount_lines_of(unmounter.pid(), 1).remove(0);
    assert_eq!(line["errno"], "EBUSY", "{line}");
    // Whichever way it was seen: by the scan (it still held the file) or, the scan having
    // come after its death, from release tracking (it exited): a `mount-copy` holder via
    // `transient`, its copy known from the mount tables busyprobe remembers (the container's
    // namespace died with it; `releases.rs` forces that order without containerd). In
    // every run here that printed it (2026-12-07, 10 of 10) it was the scan's `mount-copy` holder: the stop
    // through the CRI takes longer than the pass takes to start its scan. Its names were
    // known from the watcher's listing at start (the container ran before the watcher
    // started), so they hold whether the pass's own listing came before the removal or, on
    // a slow machine, after it (then the directory's memory of gone containers names it).
    // Seen from its exit release after the shim reaped it (its cgroups unreadable by then),
    // its container is that of its copy's namespace, read as busyprobe found the namespace.
    let holder = holder_of(&line, held.pid);
    eprintln!(
        "a_deleted_containers_holder_is_still_named: the holder was seen as {} via {}, {}",
        holder["kind"], holder["via"], holder["seen"]
    );
    assert_eq!(holder["container"]["id"], held.container.as_str(), "{line}");
    let k8s = &holder["k8s"];
    assert_eq!(k8s["pod"], "scanner-x7", "{line}");
    assert_eq!(k8s["namespace"], "demo", "{line}");
    assert_eq!(k8s["uid"], UID, "{line}");
    assert_eq!(k8s["container"], "scanner", "{line}");
}

/// containerd without its CRI plugin, asked with `--cri-socket`: two EBUSYs caused by a
/// container (run with `ctr`, in a kubelet-style cgroup) are reported at once with the
/// container id and pod uid from the cgroup path and no pod names, and the watcher says
/// exactly once that the runtime does not speak CRI runtime.v1.
fn a_runtime_without_cri_is_one_notice() {
    const UID: &str = "9b2d1c4e-6f3a-4b5c-8d7e-0a1b2c3d4e5f";
    // A container id as the CRI makes them: 64 lowercase hex digits.
    const ID: &str = "c0ffee00d15ea5e0000000000000000000000000000000000000000000000017";
    let node = Containerd::start_with(Cri::Off);
    let (mount, pid) = ctr_holder(&node, ID, UID);
    let mut watcher = watch(&node);
    let mut unmounter = node.unmounter(&mount);
    for attempt in 1..=2 {
        assert_eq!(unmounter.umount(), libc::EBUSY, "umount2 #{attempt}");
        let line = watcher.umount_lines_of(unmounter.pid(), 1).remove(0);
        assert_cgroup_ids_only(&line, pid, ID, UID);
    }
    let notice = one_notice(&mut watcher, "does not speak CRI runtime.v1");
    assert!(
        notice.contains(node.socket().to_str().unwrap()),
        "the notice names the socket: {notice}"
    );
}

/// On `node`: a tmpfs on `<volume dir>/m` and container `id` run with `ctr` (no CRI) in pod
/// `uid`'s cgroup, holding a file on it through its rslave copy of the volume directory;
/// returns the tmpfs and the container's host pid once it holds the file.
fn ctr_holder(node: &Containerd, id: &str, uid: &str) -> (PathBuf, u32) {
    let volume = node.volume_dir();
    let mount = volume.join("m");
    std::fs::create_dir(&mount).unwrap();
    node.mount_tmpfs(&mount);
    let pid = node.ctr_run(id, uid, &volume, &["/bin/sh", "-c", HOLD]);
    wait_ready(node, &mount);
    (mount, pid)
}

/// `line` is an EBUSY whose holder `pid` carries container `id` and pod `uid` from its cgroup
/// path, and no pod names.
fn assert_cgroup_ids_only(line: &Value, pid: u32, id: &str, uid: &str) {
    assert_eq!(line["errno"], "EBUSY", "{line}");
    let holder = holder_of(line, pid);
    assert_eq!(holder["container"]["id"], id, "{line}");
    assert_eq!(holder["container"]["pod_uid"], uid, "{line}");
    assert_eq!(holder["k8s"], Value::Null, "{line}");
}

/// Stops `watcher` (SIGTERM: it must exit 0) and returns the one line of its stderr that
/// contains `words`; fails when there are none or several.
fn one_notice(watcher: &mut Watcher, words: &str) -> String {
    let ended = watcher.stop(Signal::SIGTERM);
    assert!(
        ended.status.success(),
        "watch: {} (lines after: {})",
        ended.status,
        lines_text(&ended.rest)
    );
    let stderr = watcher.stderr();
    let notices: Vec<&str> = stderr.lines().filter(|l| l.contains(words)).collect();
    assert_eq!(
        notices.len(),
        1,
        "one notice with {words:?}, not {}:\n{stderr}",
        notices.len()
    );
    notices[0].to_owned()
}

/// The unmount is made from inside a pod (as a CSI node plugin unmounts): a process that
/// entered the container's mount namespace and joined its cgroups (as `crictl exec` puts
/// one there) unmounts the container's copy of the volume, which the container's own process
/// holds. The umount line names the caller's container and pod, and the holder's.
fn an_unmount_from_inside_a_pod_names_the_callers_pod() {
    const UID: &str = "e4eaaaf2-d142-11e1-b3e4-080027620cdd";
    let node = Containerd::start();
    let held = holding_pod(&node, "csi-node-q4", "kube-system", UID);
    let watcher = watch(&node);
    let mut unmounter = node.unmounter_in(held.pid, Path::new("/vol/m"));
    unmounter.join_cgroups_of(held.pid);
    assert_eq!(unmounter.umount(), libc::EBUSY, "umount2 in the container");
    let line = watcher.umount_lines_of(unmounter.pid(), 1).remove(0);
    assert_eq!(line["errno"], "EBUSY", "{line}");
    assert_eq!(line["target"], "/vol/m", "{line}");
    assert_eq!(line["container"]["id"], held.container.as_str(), "{line}");
    assert_eq!(line["container"]["pod_uid"], UID, "{line}");
    let k8s = &line["k8s"];
    assert_eq!(k8s["pod"], "csi-node-q4", "{line}");
    assert_eq!(k8s["namespace"], "kube-system", "{line}");
    assert_eq!(k8s["uid"], UID, "{line}");
    assert_eq!(k8s["container"], "scanner", "{line}");
    assert_eq!(k8s["image"], oci::IMAGE, "{line}");
    let holder = holder_of(&line, held.pid);
    assert_eq!(holder["container"]["id"], held.container.as_str(), "{line}");
    assert_eq!(holder["k8s"]["pod"], "csi-node-q4", "{line}");
}

/// `--cri-socket` names a socket that accepts connections and never answers, or a file that
/// is no socket (two watchers, one each, on the same failures): both EBUSYs are reported with
/// the cgroup's container id (the first after the CRI deadline at most, the second without
/// asking again), and each watcher says exactly once why it has no pod names.
fn a_cri_socket_that_cannot_answer_is_one_notice() {
    const UID: &str = "5d8f6b2a-1c3e-4f7a-9b0d-2e4c6a8b0d1f";
    const ID: &str = "5ca1ab1e00000000000000000000000000000000000000000000000000000042";
    let node = Containerd::start_with(Cri::Off);
    let (mount, pid) = ctr_holder(&node, ID, UID);
    let sockets = tempfile::tempdir().expect("temp dir");
    let silent = sockets.path().join("silent.sock");
    // Bound and listening, never accepted: connections complete in the backlog and then
    // nothing is ever said on them.
    let _listener = std::os::unix::net::UnixListener::bind(&silent).expect("bind");
    let not_a_socket = sockets.path().join("file.sock");
    std::fs::write(&not_a_socket, "").unwrap();
    let mut silent_watcher = Watcher::start(&[OsStr::new("--cri-socket"), silent.as_os_str()]);
    let mut file_watcher = Watcher::start(&[OsStr::new("--cri-socket"), not_a_socket.as_os_str()]);
    let mut unmounter = node.unmounter(&mount);
    for attempt in 1..=2 {
        assert_eq!(unmounter.umount(), libc::EBUSY, "umount2 #{attempt}");
        let asked = std::time::Instant::now();
        for watcher in [&silent_watcher, &file_watcher] {
            let line = watcher.umount_lines_of(unmounter.pid(), 1).remove(0);
            assert_cgroup_ids_only(&line, pid, ID, UID);
        }
        eprintln!(
            "a_cri_socket_that_cannot_answer_is_one_notice: EBUSY #{attempt} written by both \
             watchers within {:?}",
            asked.elapsed()
        );
    }
    let silent_notice = one_notice(&mut silent_watcher, "did not answer within");
    assert!(
        silent_notice.contains(silent.to_str().unwrap()),
        "the notice names the socket: {silent_notice}"
    );
    let file_notice = one_notice(&mut file_watcher, "is not a socket");
    assert!(
        file_notice.contains(not_a_socket.to_str().unwrap()),
        "the notice names the path: {file_notice}"
    );
}

/// `who --pod NAMESPACE/NAME` on the node: the name is resolved to the pod's UID by the real
/// CRI, the kubelet's directory of that UID holds the volume (here the kubelet root's
/// `pods/UID` is a link to the node's volume directory), and the volume is answered for with
/// its holder, the container's process, named with its pod.
fn who_pod_by_name_lists_the_pods_volume_and_its_holder() {
    const UID: &str = "5b1e2d3c-8a9f-4e7d-b6c5-a4f3e2d1c0b9";
    let node = Containerd::start();
    let held = holding_pod(&node, "web-0", "shop", UID);
    let kubelet = tempfile::tempdir().unwrap();
    std::fs::create_dir(kubelet.path().join("pods")).unwrap();
    std::os::unix::fs::symlink(node.volume_dir(), kubelet.path().join("pods").join(UID)).unwrap();
    let out = process::output(
        node.in_node(env!("CARGO_BIN_EXE_busyprobe"))
            .args(["who", "--json", "--pod", "shop/web-0", "--kubelet-root"])
            .arg(kubelet.path())
            .arg("--cri-socket")
            .arg(node.socket()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "held: {stdout}\n{stderr}");
    let answers: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 1, "one volume: {stdout}");
    let who = &answers[0];
    assert_eq!(
        who["mount"]["mount_point"],
        held.mount.to_str().unwrap(),
        "{who}"
    );
    let holder = holder_of(who, held.pid);
    assert_eq!(holder["kind"], "mount-copy", "{who}");
    assert_eq!(holder["k8s"]["pod"], "web-0", "{who}");
    assert_eq!(holder["k8s"]["namespace"], "shop", "{who}");
    assert_eq!(holder["k8s"]["container"], "scanner", "{who}");
}

/// No `--cri-socket`, and no runtime at the well-known paths: the holder's own
/// `containerd-shim-runc-v2` (its parent) names the socket with `-address`, and busyprobe asks
/// it there (through the shim's `/proc/PID/root`).
fn the_holders_shim_names_the_cri_socket() {
    const UID: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let node = Containerd::start();
    let held = holding_pod(&node, "found-1", "discovery", UID);
    let watcher = Watcher::start::<&str>(&[]);
    let mut unmounter = node.unmounter(&held.mount);
    assert_eq!(unmounter.umount(), libc::EBUSY, "the node's umount2");
    let line = watcher.umount_lines_of(unmounter.pid(), 1).remove(0);
    let holder = holder_of(&line, held.pid);
    assert_eq!(holder["k8s"]["pod"], "found-1", "{line}");
    assert_eq!(holder["k8s"]["namespace"], "discovery", "{line}");
    let said = process::poll(OUTPUT_TIMEOUT, || {
        let stderr = watcher.stderr();
        stderr
            .lines()
            .any(|l| l.contains("pod names: found the CRI socket") && l.contains("/root/"))
            .then_some(())
    });
    assert!(
        said.is_some(),
        "the log says where the socket was found (through the shim's root):\n{}",
        watcher.stderr()
    );
}
