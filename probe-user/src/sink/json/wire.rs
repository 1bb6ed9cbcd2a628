//! The JSON wire structs: field names and order are the schema-v1 contract. The same structs
//! are written (`Serialize`, by the sinks) and read back (`Deserialize`, by `report`, `replay`
//! and the TUI): one line of the stream is a [`Line`], tagged by its `"type"`.
//!
//! Read back, fields this build does not know are ignored (serde's default), and so are
//! lines of a type it does not know ([`Line::Other`]); the schema version is checked before
//! (`recording::parse_line`). Names from a fixed set (holder kinds, how a holder was seen) are
//! strings ([`Name`]), so that a value added within schema 1 does not make a line unreadable.

use std::{borrow::Cow, fmt, time::SystemTime};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde::{
    de::{MapAccess, Visitor},
    ser::SerializeMap,
    Deserialize, Deserializer, Serialize, Serializer,
};

use super::SCHEMA_VERSION;
use crate::{
    container::Container,
    event::{UmountAttempt, Warning},
    model::{
        Accessor, Attribution, Explanation, Holder, HolderProcess, MountSummary, QueuedFile,
        Uninspectable,
    },
    stats::Stats,
};

/// A name from a fixed set (`"fd"`, `"traced"`, `"umount"`...): borrowed when written, owned
/// when read back.
pub type Name = Cow<'static, str>;

/// Bytes as a JSON string plus, when not UTF-8, their exact base64 (`<field>_b64`).
struct TextBytes {
    text: String,
    b64: Option<String>,
}

impl TextBytes {
    fn new(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self {
                text: s.to_owned(),
                b64: None,
            },
            Err(_) => Self {
                text: String::from_utf8_lossy(bytes).into_owned(),
                b64: Some(STANDARD.encode(bytes)),
            },
        }
    }

    fn split(bytes: &[u8]) -> (String, Option<String>) {
        let t = Self::new(bytes);
        (t.text, t.b64)
    }

    fn split_opt(bytes: Option<&[u8]>) -> (Option<String>, Option<String>) {
        bytes.map_or((None, None), |b| {
            let (text, b64) = Self::split(b);
            (Some(text), b64)
        })
    }

    /// The exact bytes of a field read back: its `_b64` sibling when there is one (and it
    /// decodes), else the string itself.
    fn exact<'a>(text: &'a str, b64: Option<&str>) -> Cow<'a, [u8]> {
        match b64.and_then(|b| STANDARD.decode(b).ok()) {
            Some(bytes) => Cow::Owned(bytes),
            None => Cow::Borrowed(text.as_bytes()),
        }
    }
}

/// The exact bytes of a text field read back with its `_b64` sibling (see [`Line`]'s
/// encoding rule): the sibling's bytes when there is one and it decodes, else the text's.
pub fn exact_bytes<'a>(text: &'a str, b64: Option<&str>) -> Cow<'a, [u8]> {
    TextBytes::exact(text, b64)
}

/// RFC 3339 with nanoseconds, UTC.
fn rfc3339(ts: SystemTime) -> String {
    humantime::format_rfc3339_nanos(ts).to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `"type"` of each line (written first by the structs, read by [`Line`]).
fn header_type() -> Name {
    Cow::Borrowed("header")
}
fn umount_type() -> Name {
    Cow::Borrowed("umount")
}
fn warning_type() -> Name {
    Cow::Borrowed("warning")
}
fn stats_type() -> Name {
    Cow::Borrowed("stats")
}
fn lost_type() -> Name {
    Cow::Borrowed("lost")
}
fn who_type() -> Name {
    Cow::Borrowed("who")
}

/// One line of the stream, read back by its `"type"`: each type of `docs/json-schema.md`
/// that a stream carries (`report` is the output of `busyprobe report`, not a line of a
/// stream: it reads as [`Line::Other`]).
///
/// Read from the line's text, not through a `serde_json::Value`: a `Value`'s objects are
/// sorted by key, and `drops` must keep its order to be written back the same.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// `header`: the first line of every recording file.
    Header(HeaderLine),
    /// `umount`: one finished call.
    Umount(Box<UmountLine>),
    /// `warning`: something to know that is not an unmount.
    Warning(Box<WarningLine>),
    /// `stats`: the counters.
    Stats(StatsLine),
    /// `who`: the answer of `busyprobe who --json`.
    Who(Box<WhoLine>),
    /// `lost`: lines this reader of the stream did not get.
    Lost(LostLine),
    /// A type this build does not know (types may be added within a schema version).
    #[serde(other)]
    Other,
}

/// A line serialises as its type's struct: exactly the bytes the sinks write. A line of a
/// type this build does not know cannot be written (its fields were not kept).
impl Serialize for Line {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Line::Header(l) => l.serialize(s),
            Line::Umount(l) => l.serialize(s),
            Line::Warning(l) => l.serialize(s),
            Line::Stats(l) => l.serialize(s),
            Line::Who(l) => l.serialize(s),
            Line::Lost(l) => l.serialize(s),
            Line::Other => Err(serde::ser::Error::custom(
                "a line of a type this build does not know was read without its fields: it \
                 cannot be written",
            )),
        }
    }
}

/// `{"type":"umount"}`: one finished call (`docs/json-schema.md` has every field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UmountLine {
    v: u32,
    // The tag: [`Line`] reads it to choose the struct.
    #[serde(rename = "type", skip_deserializing, default = "umount_type")]
    kind: Name,
    /// Sequence number in this run, from 1.
    pub id: u64,
    /// RFC 3339 UTC with nanoseconds: when the call entered the kernel.
    pub ts: String,
    /// Process id, host PID namespace.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The caller's command name (lossy when not UTF-8).
    pub comm: String,
    /// `comm`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm_b64: Option<String>,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Inode of the caller's mount namespace; 0 if unknown.
    pub mntns: u64,
    /// The caller's cgroup v2 path, if it could be read.
    pub cgroup: Option<String>,
    /// `cgroup`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_b64: Option<String>,
    /// The caller's cgroup v2 id.
    pub cgroup_id: u64,
    /// The caller's container, when its cgroup paths name one (a schema v1 addition; absent
    /// for host processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerWire>,
    /// The caller's pod, when the runtime named its container (a schema v1 addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8sWire>,
    /// The target exactly as passed (lossy when not UTF-8).
    pub target: String,
    /// `target`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_b64: Option<String>,
    /// The probe's buffer cut the target.
    #[serde(default, skip_serializing_if = "is_false")]
    pub target_truncated: bool,
    /// The probe could not read the target.
    #[serde(default, skip_serializing_if = "is_false")]
    pub target_unreadable: bool,
    /// The absolute target, when the caller's working directory could be read.
    pub target_abs: Option<String>,
    /// `target_abs`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_abs_b64: Option<String>,
    /// Flags as passed.
    pub flags: u32,
    /// Their names.
    pub flag_names: Vec<String>,
    /// 0 or `-errno`.
    pub ret: i64,
    /// `"EBUSY"`...; none on success.
    pub errno: Option<String>,
    /// Time in the kernel.
    pub duration_ns: u64,
    /// The mount the `sb_umount` security hook saw the call unmount (a schema v1 addition:
    /// enhanced mode only, for calls that got as far as the busy check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooked_mount: Option<HookedMountWire>,
    /// The mount the target resolved to (EBUSY with holders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<MountWire>,
    /// What holds it, blamed holders first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<HolderWire>>,
    /// Recent accessors: context, not holders; other processes than the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accessors: Option<Vec<AccessorWire>>,
    /// The caller's own recent opens on the mount, let go before the call (`umount(8)` checks
    /// its target so): context about the caller (a schema v1 addition, absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caller_accesses: Vec<AccessorWire>,
    /// Processes that could not be inspected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uninspectable: Option<Vec<UninspectableWire>>,
    /// Why there is no attribution, instead of the four above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution_error: Option<String>,
    /// Why a failure other than EBUSY failed (a schema v1 addition: absent on successes,
    /// EBUSYs, failures busyprobe cannot explain, and in older recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationWire>,
}

/// `hooked_mount`: a mount as the kernel named it to the `sb_umount` security hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookedMountWire {
    /// The mount id.
    pub id: u64,
    /// Inode of the mount namespace it was in; 0 when unknown.
    pub mntns: u64,
}

impl UmountLine {
    /// The line for one attempt.
    pub fn new(a: &UmountAttempt) -> Self {
        let c = &a.call;
        let (comm, comm_b64) = TextBytes::split(&c.comm);
        let (cgroup, cgroup_b64) = TextBytes::split_opt(a.cgroup.as_deref());
        let (target, target_b64) = TextBytes::split(&c.target.bytes);
        let (target_abs, target_abs_b64) = TextBytes::split_opt(a.target_abs.as_deref());
        Self {
            v: SCHEMA_VERSION,
            kind: umount_type(),
            id: a.id,
            ts: rfc3339(a.ts),
            pid: c.pid,
            tid: c.tid,
            comm,
            comm_b64,
            uid: c.uid,
            gid: c.gid,
            mntns: c.mntns,
            cgroup,
            cgroup_b64,
            cgroup_id: c.cgroup_id,
            container: a.container.as_ref().map(ContainerWire::new),
            k8s: K8sWire::of(a.container.as_ref()),
            target,
            target_b64,
            target_truncated: c.target.truncated,
            target_unreadable: c.target.unreadable,
            target_abs,
            target_abs_b64,
            flags: c.flags,
            flag_names: c.flag_names(),
            ret: c.ret,
            errno: c.errno_name(),
            duration_ns: c.duration_ns,
            hooked_mount: c.hooked.map(|m| HookedMountWire {
                id: m.id,
                mntns: m.mntns,
            }),
            mount: None,
            holders: None,
            accessors: None,
            caller_accesses: Vec::new(),
            uninspectable: None,
            attribution_error: None,
            explanation: a.explanation.as_ref().map(ExplanationWire::new),
        }
        .with_attribution(a.attribution.as_ref())
    }

    fn with_attribution(mut self, attribution: Option<&Result<Attribution, String>>) -> Self {
        match attribution {
            Some(Ok(a)) => {
                self.mount = Some(MountWire::new(&a.mount));
                self.holders = Some(a.holders.iter().map(HolderWire::new).collect());
                let (caller, others): (Vec<_>, Vec<_>) =
                    a.accessors.iter().partition(|x| x.by_caller);
                self.accessors = Some(others.into_iter().map(AccessorWire::new).collect());
                self.caller_accesses = caller.into_iter().map(AccessorWire::new).collect();
                self.uninspectable =
                    Some(a.uninspectable.iter().map(UninspectableWire::new).collect());
            }
            Some(Err(e)) => self.attribution_error = Some(e.clone()),
            None => {}
        }
        self
    }

    /// The caller's command name, exact.
    pub fn comm_bytes(&self) -> Cow<'_, [u8]> {
        TextBytes::exact(&self.comm, self.comm_b64.as_deref())
    }

    /// The target as passed, exact.
    pub fn target_bytes(&self) -> Cow<'_, [u8]> {
        TextBytes::exact(&self.target, self.target_b64.as_deref())
    }

    /// The absolute target, exact, when known.
    pub fn target_abs_bytes(&self) -> Option<Cow<'_, [u8]>> {
        let abs = self.target_abs.as_deref()?;
        Some(TextBytes::exact(abs, self.target_abs_b64.as_deref()))
    }

    /// Whether the call failed.
    pub fn failed(&self) -> bool {
        self.errno.is_some()
    }

    /// The errno's name, or `ok`.
    pub fn result(&self) -> &str {
        self.errno.as_deref().unwrap_or("ok")
    }

    /// The holders named, none when there was no attribution.
    pub fn holders(&self) -> &[HolderWire] {
        self.holders.as_deref().unwrap_or_default()
    }
}

/// The `explanation` object of a failed `umount` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplanationWire {
    /// Which explanation: a stable snake_case code (`unmounted_earlier`, ...).
    pub code: String,
    /// The explanation for people.
    pub sentence: String,
    /// The `id` of the `umount` line it relates to (the earlier successful unmount), or null.
    pub related_event: Option<u64>,
}

impl ExplanationWire {
    /// The object for an explanation.
    pub fn new(e: &Explanation) -> Self {
        Self {
            code: e.code.as_str().to_string(),
            sentence: e.sentence.clone(),
            related_event: e.related_event,
        }
    }
}

/// The `mount` object: the mount an EBUSY (or `who`) was about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountWire {
    /// Mount id, as in mountinfo.
    pub id: u64,
    /// The namespace whose table it was found in.
    pub mntns: u64,
    /// Where it is mounted.
    pub mount_point: String,
    /// `mount_point`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_point_b64: Option<String>,
    /// The filesystem directory mounted there.
    pub root: String,
    /// `root`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_b64: Option<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// `source`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_b64: Option<String>,
    /// `major:minor` of the superblock.
    pub dev: String,
    /// Propagation (`shared:N`..., or `private`).
    pub propagation: String,
}

impl MountWire {
    /// The object for a mount.
    pub fn new(m: &MountSummary) -> Self {
        let e = &m.entry;
        let (mount_point, mount_point_b64) = TextBytes::split(&e.mount_point);
        let (root, root_b64) = TextBytes::split(&e.root);
        let (source, source_b64) = TextBytes::split(&e.source);
        Self {
            id: m.id,
            mntns: m.mntns,
            mount_point,
            mount_point_b64,
            root,
            root_b64,
            fstype: e.fstype.clone(),
            source,
            source_b64,
            dev: format!("{}:{}", e.major, e.minor),
            propagation: e.propagation.describe(),
        }
    }

    /// The mount point, exact.
    pub fn mount_point_bytes(&self) -> Cow<'_, [u8]> {
        TextBytes::exact(&self.mount_point, self.mount_point_b64.as_deref())
    }

    /// The source, exact.
    pub fn source_bytes(&self) -> Cow<'_, [u8]> {
        TextBytes::exact(&self.source, self.source_b64.as_deref())
    }
}

/// One element of `holders`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HolderWire {
    /// The process, for holders that are processes.
    pub pid: Option<u32>,
    /// Its command name (lossy when not UTF-8).
    pub comm: Option<String>,
    /// `comm`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm_b64: Option<String>,
    /// `fd`, `cwd`, ... `unknown`.
    pub kind: Name,
    /// The held file or directory, the submount's mount point, the backing file.
    pub path: Option<String>,
    /// `path`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    /// The descriptor, for `fd` (and the listener's for `fanotify`).
    pub fd: Option<i32>,
    /// The process's mount namespace.
    pub mntns: Option<u64>,
    /// The process's container, when its cgroup path names one.
    pub container: Option<ContainerWire>,
    /// The process's pod, when the runtime named its container (a schema v1 addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8sWire>,
    /// `kernel-scan`, `proc-scan`, `mount-table`, `traced`.
    pub seen: Name,
    /// The mount held: the target, a submount or a copy.
    pub mount_id: u64,
    /// For `mount-copy`: how the copy is held (`transient`: let go after the call).
    pub via: Option<Name>,
    /// False for information only.
    pub blamed: bool,
    /// A sentence for the human.
    pub note: Option<String>,
    /// How long before the failing call the file was opened, when the open was traced.
    pub opened_ns_before: Option<u64>,
    /// For `fd`: why `opened_ns_before` is not known (`raced_an_unmount`, `not_timed`);
    /// absent when it is known (a schema v1 addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_time_unknown: Option<Name>,
    /// For `fd` and `transient`: true when the fd is a fanotify event fd, which the kernel
    /// opened for one of the process's events (told apart in enhanced mode only); absent
    /// otherwise (a schema v1 addition).
    #[serde(default, skip_serializing_if = "is_false")]
    pub event_fd: bool,
    /// For an event fd opened after the failing call returned: how long after (its event,
    /// queued before, held the mount at the busy check); absent otherwise (a schema v1
    /// addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_ns_after: Option<u64>,
    /// How long after the failing call it was let go.
    pub closed_ns_after: Option<u64>,
    /// The mount held had been detached (lazily unmounted) by the scan: `path` is the old
    /// mount point joined with the path within it (a schema v1 addition, absent otherwise).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mount_detached: bool,
    /// The holder is the failing call's own process (a schema v1 addition, absent otherwise).
    #[serde(default, skip_serializing_if = "is_false")]
    pub by_caller: bool,
    /// For `fanotify` when its queue was seen: its unread events on the mount; absent
    /// otherwise (a schema v1 addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_events: Option<u32>,
    /// For `fanotify` when its queue was seen: the files of its first unread events on the
    /// mount, in queue order (at most 4; `queued_events` minus their number are not named);
    /// absent when none were named (a schema v1 addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued_files: Vec<QueuedFileWire>,
}

/// One element of a holder's `queued_files`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedFileWire {
    /// The file's absolute path.
    pub path: String,
    /// `path`'s exact bytes when not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    /// True when the probe could not walk the whole path (deeper than 12 components, which
    /// `path` then starts with `/…` for, or a name over 63 bytes, cut); absent otherwise.
    #[serde(default, skip_serializing_if = "is_false")]
    pub path_cut: bool,
}

impl QueuedFileWire {
    fn new(f: &QueuedFile) -> Self {
        let (path, path_b64) = TextBytes::split(&f.path);
        Self {
            path,
            path_b64,
            path_cut: f.cut,
        }
    }

    /// The path, exact.
    pub fn path_bytes(&self) -> Cow<'_, [u8]> {
        TextBytes::exact(&self.path, self.path_b64.as_deref())
    }
}

impl HolderWire {
    /// The object for a holder.
    pub fn new(h: &Holder) -> Self {
        let p: Option<&HolderProcess> = h.process.as_ref();
        let (comm, comm_b64) = TextBytes::split_opt(p.map(|p| p.comm.as_slice()));
        let (path, path_b64) = TextBytes::split_opt(h.path.as_deref());
        Self {
            pid: p.map(|p| p.pid),
            comm,
            comm_b64,
            kind: Cow::Borrowed(h.kind.as_str()),
            path,
            path_b64,
            fd: h.fd,
            mntns: p.and_then(|p| p.mntns),
            container: p.and_then(|p| p.container.as_ref()).map(ContainerWire::new),
            k8s: K8sWire::of(p.and_then(|p| p.container.as_ref())),
            seen: Cow::Borrowed(h.seen.as_str()),
            mount_id: h.mount_id,
            via: h.via.map(|v| Cow::Borrowed(v.as_str())),
            blamed: h.blamed,
            note: h.note.clone(),
            opened_ns_before: h.opened_ns_before,
            open_time_unknown: h.open_time_unknown.map(|u| Cow::Borrowed(u.as_str())),
            event_fd: h.event_fd,
            opened_ns_after: h.opened_ns_after,
            closed_ns_after: h.closed_ns_after,
            queued_events: h.queued_events,
            queued_files: h.queued_files.iter().map(QueuedFileWire::new).collect(),
            mount_detached: h.mount_detached,
            by_caller: h.by_caller,
        }
    }

    /// The process's command name, exact.
    pub fn comm_bytes(&self) -> Option<Cow<'_, [u8]>> {
        let comm = self.comm.as_deref()?;
        Some(TextBytes::exact(comm, self.comm_b64.as_deref()))
    }

    /// The held path, exact.
    pub fn path_bytes(&self) -> Option<Cow<'_, [u8]>> {
        let path = self.path.as_deref()?;
        Some(TextBytes::exact(path, self.path_b64.as_deref()))
    }
}

/// A holder's `container`: `{runtime, id, pod_uid}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerWire {
    /// `docker`, `containerd`, `crio`, `podman`, `kubernetes`.
    pub runtime: Name,
    /// The full container id, when the cgroup path names one.
    pub id: Option<String>,
    /// The Kubernetes pod UID.
    pub pod_uid: Option<String>,
}

impl ContainerWire {
    /// The object for a container.
    pub fn new(c: &Container) -> Self {
        Self {
            runtime: Cow::Borrowed(c.runtime.as_str()),
            id: c.id.clone(),
            pod_uid: c.pod_uid.clone(),
        }
    }
}

/// A caller's or holder's `k8s`: the pod and container the runtime says a container is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sWire {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's UID.
    pub uid: String,
    /// The container's name; null for the pod's sandbox (pause) container.
    pub container: Option<String>,
    /// The container's image, as the kubelet asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl K8sWire {
    /// The object for a container's pod names, if it has them.
    pub fn of(c: Option<&Container>) -> Option<Self> {
        let n = c?.k8s.as_ref()?;
        Some(Self {
            pod: n.pod.clone(),
            namespace: n.namespace.clone(),
            uid: n.uid.clone(),
            container: n.container.clone(),
            image: n.image.clone(),
        })
    }

    /// `namespace/pod`, how operators name a pod.
    pub fn pod_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

/// One element of `accessors`: a process that opened a file on the mount shortly before the
/// call and no longer held it (context, not a holder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessorWire {
    /// Process id.
    pub pid: u32,
    /// Its command name at the open (lossy when not UTF-8).
    pub comm: String,
    /// `comm`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm_b64: Option<String>,
    /// The fd it got.
    pub fd: u32,
    /// The mount (the target or a counted copy).
    pub mount_id: u64,
    /// How long before the call it opened the file.
    pub opened_ns_before: u64,
}

impl AccessorWire {
    /// The object for an accessor.
    pub fn new(a: &Accessor) -> Self {
        let (comm, comm_b64) = TextBytes::split(&a.comm);
        Self {
            pid: a.pid,
            comm,
            comm_b64,
            fd: a.fd,
            mount_id: a.mount_id,
            opened_ns_before: a.opened_ns_before,
        }
    }

    /// Its command name, exact.
    pub fn comm_bytes(&self) -> Cow<'_, [u8]> {
        TextBytes::exact(&self.comm, self.comm_b64.as_deref())
    }
}

/// `{"type":"header"}`: the first line of every recording file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeaderLine {
    v: u32,
    // The tag: [`Line`] reads it to choose the struct.
    #[serde(rename = "type", skip_deserializing, default = "header_type")]
    kind: Name,
    /// The version of busyprobe that recorded.
    pub busyprobe: Name,
    /// Host name.
    pub host: String,
    /// Kernel release.
    pub kernel: String,
    /// `tracepoint` or `fentry`.
    pub probe_mode: String,
    /// RFC 3339: when the recording started.
    pub started: String,
}

impl HeaderLine {
    /// The header for a recording started at `started`.
    pub fn new(host: &str, kernel: &str, probe_mode: &str, started: SystemTime) -> Self {
        Self {
            v: SCHEMA_VERSION,
            kind: header_type(),
            busyprobe: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
            host: host.to_owned(),
            kernel: kernel.to_owned(),
            probe_mode: probe_mode.to_owned(),
            started: rfc3339(started),
        }
    }
}

/// `{"type":"warning"}`, by its `warning` name. A name this build does not know reads as
/// [`WarningLine::Other`] (names may be added within schema 1, each with its own fields).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "warning", rename_all = "kebab-case")]
pub enum WarningLine {
    /// `alive-after-unmount`.
    AliveAfterUnmount(Box<AliveAfterUnmountLine>),
    /// `recording-failing`.
    RecordingFailing(RecordingFailingLine),
    /// `recording-lines-lost`.
    RecordingLinesLost(RecordingLinesLostLine),
    /// A warning this build does not know.
    #[serde(other)]
    Other,
}

/// A warning serialises as its struct: exactly the bytes the sinks write.
impl Serialize for WarningLine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WarningLine::AliveAfterUnmount(l) => l.serialize(s),
            WarningLine::RecordingFailing(l) => l.serialize(s),
            WarningLine::RecordingLinesLost(l) => l.serialize(s),
            WarningLine::Other => Err(serde::ser::Error::custom(
                "a warning this build does not know was read without its fields: it cannot be \
                 written",
            )),
        }
    }
}

impl WarningLine {
    /// The line for a warning.
    pub fn new(w: &Warning) -> Self {
        match w {
            Warning::AliveAfterUnmount {
                umount_id,
                ts,
                target,
                mount,
                holders,
            } => Self::AliveAfterUnmount(Box::new(AliveAfterUnmountLine::new(
                *umount_id, *ts, target, mount, holders,
            ))),
            Warning::RecordingFailing { ts, cause } => {
                Self::RecordingFailing(RecordingFailingLine {
                    v: SCHEMA_VERSION,
                    kind: warning_type(),
                    ts: rfc3339(*ts),
                    warning: recording_failing(),
                    message: format!(
                        "the recording cannot write ({cause}): it counts the lines it loses \
                         and says how many once it writes again"
                    ),
                    cause: cause.clone(),
                })
            }
            Warning::RecordingLinesLost {
                ts,
                lines,
                cause,
                since,
            } => Self::RecordingLinesLost(RecordingLinesLostLine {
                v: SCHEMA_VERSION,
                kind: warning_type(),
                ts: rfc3339(*ts),
                warning: recording_lines_lost(),
                lines: *lines,
                message: format!(
                    "{lines} lines could not be written to the recording ({cause}) since {}",
                    rfc3339(*since)
                ),
                cause: cause.clone(),
                since: rfc3339(*since),
            }),
        }
    }
}

/// The `warning` of each kind (written by the structs, read by [`WarningLine`]).
fn alive_after_unmount() -> Name {
    Cow::Borrowed("alive-after-unmount")
}
fn recording_failing() -> Name {
    Cow::Borrowed("recording-failing")
}
fn recording_lines_lost() -> Name {
    Cow::Borrowed("recording-lines-lost")
}

/// `"warning":"alive-after-unmount"`: an unmount succeeded but the filesystem lives on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AliveAfterUnmountLine {
    v: u32,
    // The tag: [`Line`] reads it to choose the struct.
    #[serde(rename = "type", skip_deserializing, default = "warning_type")]
    kind: Name,
    /// When it was found.
    pub ts: String,
    // The kind: [`WarningLine`] reads it to choose the struct.
    #[serde(skip_deserializing, default = "alive_after_unmount")]
    warning: Name,
    /// The successful attempt's `id`.
    pub umount_id: u64,
    /// Its target (lossy when not UTF-8).
    pub target: String,
    /// `target`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_b64: Option<String>,
    /// The mount that was removed.
    pub mount: MountWire,
    /// What keeps the filesystem alive.
    pub holders: Vec<HolderWire>,
    /// A sentence for the human.
    pub message: String,
}

impl AliveAfterUnmountLine {
    fn new(
        umount_id: u64,
        ts: SystemTime,
        target: &[u8],
        mount: &MountSummary,
        holders: &[Holder],
    ) -> Self {
        let (target, target_b64) = TextBytes::split(target);
        Self {
            v: SCHEMA_VERSION,
            kind: warning_type(),
            ts: rfc3339(ts),
            warning: alive_after_unmount(),
            umount_id,
            message: format!(
                "unmount {umount_id} succeeded but the filesystem is still in use ({} holders)",
                holders.len()
            ),
            target,
            target_b64,
            mount: MountWire::new(mount),
            holders: holders.iter().map(HolderWire::new).collect(),
        }
    }

    /// The target, exact.
    pub fn target_bytes(&self) -> Cow<'_, [u8]> {
        TextBytes::exact(&self.target, self.target_b64.as_deref())
    }
}

/// `"warning":"recording-failing"`: the recording cannot write and counts the lines it loses
/// (sent to the agent's other outputs, never in the recording itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingFailingLine {
    v: u32,
    #[serde(rename = "type", skip_deserializing, default = "warning_type")]
    kind: Name,
    /// When the first line was lost.
    pub ts: String,
    #[serde(skip_deserializing, default = "recording_failing")]
    warning: Name,
    /// The errno name of the failed write (`ENOSPC`, `EIO`, ...).
    pub cause: String,
    /// A sentence for the human.
    pub message: String,
}

/// `"warning":"recording-lines-lost"`: the recording writes again after losing `lines`
/// lines; the first line written after the gap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingLinesLostLine {
    v: u32,
    #[serde(rename = "type", skip_deserializing, default = "warning_type")]
    kind: Name,
    /// When the recording could write again.
    pub ts: String,
    #[serde(skip_deserializing, default = "recording_lines_lost")]
    warning: Name,
    /// Lines not written.
    pub lines: u64,
    /// Why the first of them was lost: an errno name.
    pub cause: String,
    /// When the first of them was lost.
    pub since: String,
    /// A sentence for the human.
    pub message: String,
}

/// `{"type":"who"}`: the answer of `busyprobe who --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhoLine {
    v: u32,
    // The tag: [`Line`] reads it to choose the struct.
    #[serde(rename = "type", skip_deserializing, default = "who_type")]
    kind: Name,
    /// The path asked about (lossy when not UTF-8).
    pub path: String,
    /// `path`'s exact bytes when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    /// False when `path` is inside the mount, not its root.
    pub is_mount_point: bool,
    /// The mount.
    pub mount: MountWire,
    /// What holds it.
    pub holders: Vec<HolderWire>,
    /// Processes that could not be inspected.
    pub uninspectable: Vec<UninspectableWire>,
    /// `kernel-scan` or `proc-scan`.
    pub scan: Name,
    /// Processes looked at.
    pub processes_scanned: usize,
    /// Descriptors looked at.
    pub fds_scanned: usize,
    /// Mount namespaces looked at.
    pub mount_namespaces: usize,
}

impl WhoLine {
    /// The object for one answer.
    pub fn new(path: &[u8], a: &Attribution) -> Self {
        let (text, path_b64) = TextBytes::split(path);
        Self {
            v: SCHEMA_VERSION,
            kind: who_type(),
            path: text,
            path_b64,
            is_mount_point: a.is_mount_point,
            mount: MountWire::new(&a.mount),
            holders: a.holders.iter().map(HolderWire::new).collect(),
            uninspectable: a.uninspectable.iter().map(UninspectableWire::new).collect(),
            scan: Cow::Borrowed(a.coverage.method.as_str()),
            processes_scanned: a.coverage.processes,
            fds_scanned: a.coverage.fds,
            mount_namespaces: a.coverage.namespaces,
        }
    }
}

/// One element of `uninspectable`: a process the scan could not look into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UninspectableWire {
    /// Its pid.
    pub pid: u32,
    /// Its command name (lossy).
    pub comm: String,
    /// What failed.
    pub error: String,
}

impl UninspectableWire {
    fn new(u: &Uninspectable) -> Self {
        Self {
            pid: u.pid,
            comm: String::from_utf8_lossy(&u.comm).into_owned(),
            error: u.error.clone(),
        }
    }
}

/// `{"type":"stats"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsLine {
    v: u32,
    // The tag: [`Line`] reads it to choose the struct.
    #[serde(rename = "type", skip_deserializing, default = "stats_type")]
    kind: Name,
    /// When the counters were read.
    pub ts: String,
    /// Kernel events decoded since start.
    pub events: u64,
    /// Losses by cause.
    pub drops: Drops,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// True on the last line before exit.
    #[serde(rename = "final")]
    pub last: bool,
}

impl StatsLine {
    /// The line for the counters at `ts`.
    pub fn new(ts: SystemTime, stats: &Stats, last: bool) -> Self {
        Self {
            v: SCHEMA_VERSION,
            kind: stats_type(),
            ts: rfc3339(ts),
            events: stats.events,
            drops: Drops(
                stats
                    .drops_by_cause()
                    .map(|(cause, count)| (Cow::Borrowed(cause), count))
                    .collect(),
            ),
            decode_errors: stats.decode_errors,
            last,
        }
    }

    /// The counters again (a cause this build does not know is left out; one it knows that
    /// the line lacks counts 0).
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            events: self.events,
            decode_errors: self.decode_errors,
            ..Stats::default()
        };
        for cause in probe_common::DropCause::ALL {
            stats.drops[cause as usize] = self
                .drops
                .0
                .iter()
                .find(|(name, _)| name == cause.as_str())
                .map_or(0, |(_, count)| *count);
        }
        stats
    }
}

/// `{"type":"lost"}`: lines of the stream that this reader did not get, written in their
/// place: a live client of the agent that read too slowly (`cause` `slow_client`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostLine {
    v: u32,
    // The tag: [`Line`] reads it to choose the struct.
    #[serde(rename = "type", skip_deserializing, default = "lost_type")]
    kind: Name,
    /// When the first line lost was written.
    pub ts: String,
    /// How many lines were lost here.
    pub lines: u64,
    /// Why (`slow_client`).
    pub cause: Name,
    /// A sentence for the human.
    pub message: String,
}

impl LostLine {
    /// `slow_client`: the lines a client did not read fast enough, the first at `since`.
    pub fn slow_client(since: SystemTime, lines: u64) -> Self {
        Self {
            v: SCHEMA_VERSION,
            kind: lost_type(),
            ts: rfc3339(since),
            lines,
            cause: Cow::Borrowed("slow_client"),
            message: format!(
                "{lines} lines lost here: this client read more slowly than the agent wrote \
                 (the agent and its other readers did not wait)"
            ),
        }
    }
}

/// Drop counts as an object, `(cause, count)` in the order written (cause order); read back,
/// causes this build does not know are kept, in their place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drops(pub Vec<(Name, u64)>);

impl Serialize for Drops {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (cause, count) in &self.0 {
            map.serialize_entry(cause, count)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Drops {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Drops;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of drop counts")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Drops, A::Error> {
                let mut drops = Vec::new();
                while let Some((cause, count)) = map.next_entry::<String, u64>()? {
                    drops.push((Cow::Owned(cause), count));
                }
                Ok(Drops(drops))
            }
        }
        d.deserialize_map(InOrder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 test vectors, through the path encoder.
    #[test]
    fn base64_is_rfc4648_standard() {
        let vectors: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (bytes, want) in vectors {
            assert_eq!(STANDARD.encode(bytes), want);
        }
        let t = TextBytes::new(b"\xfffoobar");
        assert_eq!(t.b64.as_deref(), Some("/2Zvb2Jhcg=="));
        assert!(TextBytes::new(b"foobar").b64.is_none());
    }

    #[test]
    fn timestamps_keep_nanoseconds() {
        let ts = std::time::UNIX_EPOCH + std::time::Duration::new(1, 5);
        assert_eq!(rfc3339(ts), "1970-01-01T00:00:01.000000005Z");
        assert_eq!(
            rfc3339(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
    }
}
