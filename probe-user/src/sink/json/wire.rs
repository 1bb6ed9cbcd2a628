//! The JSON wire structs: field names and order are the schema-v1 contract.

use std::time::SystemTime;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde::{ser::SerializeMap, Serialize, Serializer};

use super::SCHEMA_VERSION;
use crate::{
    container::Container,
    event::{UmountAttempt, Warning},
    model::{Accessor, Attribution, Holder, HolderProcess, MountSummary, Uninspectable},
    stats::Stats,
};

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
}

/// RFC 3339 with nanoseconds, UTC.
fn rfc3339(ts: SystemTime) -> String {
    humantime::format_rfc3339_nanos(ts).to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `{"type":"umount"}`.
#[derive(Serialize)]
pub struct UmountLine {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    ts: String,
    pid: u32,
    tid: u32,
    comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm_b64: Option<String>,
    uid: u32,
    gid: u32,
    mntns: u64,
    cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_b64: Option<String>,
    cgroup_id: u64,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_b64: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    target_truncated: bool,
    #[serde(skip_serializing_if = "is_false")]
    target_unreadable: bool,
    target_abs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_abs_b64: Option<String>,
    flags: u32,
    flag_names: Vec<String>,
    ret: i64,
    errno: Option<String>,
    duration_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mount: Option<MountWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holders: Option<Vec<HolderWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accessors: Option<Vec<AccessorWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uninspectable: Option<Vec<UninspectableWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attribution_error: Option<String>,
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
            kind: "umount",
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
            mount: None,
            holders: None,
            accessors: None,
            uninspectable: None,
            attribution_error: None,
        }
        .with_attribution(a.attribution.as_ref())
    }

    fn with_attribution(mut self, attribution: Option<&Result<Attribution, String>>) -> Self {
        match attribution {
            Some(Ok(a)) => {
                self.mount = Some(MountWire::new(&a.mount));
                self.holders = Some(a.holders.iter().map(HolderWire::new).collect());
                self.accessors = Some(a.accessors.iter().map(AccessorWire::new).collect());
                self.uninspectable =
                    Some(a.uninspectable.iter().map(UninspectableWire::new).collect());
            }
            Some(Err(e)) => self.attribution_error = Some(e.clone()),
            None => {}
        }
        self
    }
}

/// The `mount` object: the mount an EBUSY (or `who`) was about.
#[derive(Serialize)]
pub struct MountWire {
    id: u64,
    mntns: u64,
    mount_point: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mount_point_b64: Option<String>,
    root: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_b64: Option<String>,
    fstype: String,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_b64: Option<String>,
    dev: String,
    propagation: String,
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
}

/// One element of `holders`.
#[derive(Serialize)]
pub struct HolderWire {
    pid: Option<u32>,
    comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm_b64: Option<String>,
    kind: &'static str,
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    fd: Option<i32>,
    mntns: Option<u64>,
    container: Option<Container>,
    seen: &'static str,
    mount_id: u64,
    via: Option<&'static str>,
    blamed: bool,
    note: Option<String>,
    opened_ns_before: Option<u64>,
    closed_ns_after: Option<u64>,
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
            kind: h.kind.as_str(),
            path,
            path_b64,
            fd: h.fd,
            mntns: p.and_then(|p| p.mntns),
            container: p.and_then(|p| p.container.clone()),
            seen: h.seen.as_str(),
            mount_id: h.mount_id,
            via: h.via.map(|v| v.as_str()),
            blamed: h.blamed,
            note: h.note.clone(),
            opened_ns_before: h.opened_ns_before,
            closed_ns_after: h.closed_ns_after,
        }
    }
}

/// One element of `accessors`: a process that opened a file on the mount shortly before the
/// call and no longer held it (context, not a holder).
#[derive(Serialize)]
pub struct AccessorWire {
    pid: u32,
    comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm_b64: Option<String>,
    fd: u32,
    mount_id: u64,
    opened_ns_before: u64,
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
}

/// `{"type":"header"}`: the first line of every recording file.
#[derive(Serialize)]
pub struct HeaderLine<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    busyprobe: &'static str,
    host: &'a str,
    kernel: &'a str,
    probe_mode: &'a str,
    started: String,
}

impl<'a> HeaderLine<'a> {
    /// The header for a recording started at `started`.
    pub fn new(host: &'a str, kernel: &'a str, probe_mode: &'a str, started: SystemTime) -> Self {
        Self {
            v: SCHEMA_VERSION,
            kind: "header",
            busyprobe: env!("CARGO_PKG_VERSION"),
            host,
            kernel,
            probe_mode,
            started: rfc3339(started),
        }
    }
}

/// `{"type":"warning"}`.
#[derive(Serialize)]
pub struct WarningLine {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    ts: String,
    warning: &'static str,
    umount_id: u64,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_b64: Option<String>,
    mount: MountWire,
    holders: Vec<HolderWire>,
    message: String,
}

impl WarningLine {
    /// The line for a warning.
    pub fn new(w: &Warning) -> Self {
        let Warning::AliveAfterUnmount {
            umount_id,
            ts,
            target,
            mount,
            holders,
        } = w;
        let (target, target_b64) = TextBytes::split(target);
        Self {
            v: SCHEMA_VERSION,
            kind: "warning",
            ts: rfc3339(*ts),
            warning: "alive-after-unmount",
            umount_id: *umount_id,
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
}

/// `{"type":"who"}`: the answer of `busyprobe who --json`.
#[derive(Serialize)]
pub struct WhoLine {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    is_mount_point: bool,
    mount: MountWire,
    holders: Vec<HolderWire>,
    uninspectable: Vec<UninspectableWire>,
    scan: &'static str,
    processes_scanned: usize,
    fds_scanned: usize,
    mount_namespaces: usize,
}

impl WhoLine {
    /// The object for one answer.
    pub fn new(path: &[u8], a: &Attribution) -> Self {
        let (text, path_b64) = TextBytes::split(path);
        Self {
            v: SCHEMA_VERSION,
            kind: "who",
            path: text,
            path_b64,
            is_mount_point: a.is_mount_point,
            mount: MountWire::new(&a.mount),
            holders: a.holders.iter().map(HolderWire::new).collect(),
            uninspectable: a.uninspectable.iter().map(UninspectableWire::new).collect(),
            scan: a.coverage.method.as_str(),
            processes_scanned: a.coverage.processes,
            fds_scanned: a.coverage.fds,
            mount_namespaces: a.coverage.namespaces,
        }
    }
}

/// One element of `uninspectable`: a process the scan could not look into.
#[derive(Serialize)]
pub struct UninspectableWire {
    pid: u32,
    comm: String,
    error: String,
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
#[derive(Serialize)]
pub struct StatsLine<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    ts: String,
    events: u64,
    drops: Drops<'a>,
    decode_errors: u64,
    #[serde(rename = "final")]
    last: bool,
}

impl<'a> StatsLine<'a> {
    /// The line for the counters at `ts`.
    pub fn new(ts: SystemTime, stats: &'a Stats, last: bool) -> Self {
        Self {
            v: SCHEMA_VERSION,
            kind: "stats",
            ts: rfc3339(ts),
            events: stats.events,
            drops: Drops(stats),
            decode_errors: stats.decode_errors,
            last,
        }
    }
}

/// Drop counts as an object in cause order.
struct Drops<'a>(&'a Stats);

impl Serialize for Drops<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (cause, count) in self.0.drops_by_cause() {
            map.serialize_entry(cause, &count)?;
        }
        map.end()
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
