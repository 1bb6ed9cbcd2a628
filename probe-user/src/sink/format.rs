//! The words every human-facing output shares (the text sink, the TUI, the Markdown report):
//! durations, a process as `comm[pid]`, a holder's parts and when it opened or let go of the
//! file ("opened 1.8ms before the call", "closed 400.0µs after it"), why a failure failed. Each is written here
//! once; the outputs lay the parts out their own way (a line, a pane, a table).
//!
//! Everything returned is safe for a terminal (`paths::escape_for_terminal`): names and paths
//! come from the holder's exact bytes (`_b64` when the wire carried one).

use super::json::wire::{AccessorWire, ContainerWire, ExplanationWire, HolderWire, K8sWire};
use crate::paths::escape_for_terminal;

/// A duration for people: `999ns`, `1.5µs`, `2.5ms`, `3.00s` ([`crate::clock::for_people`]).
pub fn duration(ns: u64) -> String {
    crate::clock::for_people(ns)
}

/// `opened 1.8ms before the call`: when a holder (or an accessor) opened its file.
pub fn opened_before(ns: u64) -> String {
    format!("opened {} before the call", duration(ns))
}

/// `event fd opened 1.8ms after the call, for an event queued before it`: a fanotify listener's
/// event fd opened after the failing call returned; its queued event held the mount at the
/// busy check.
pub fn event_fd_opened_after(ns: u64) -> String {
    format!(
        "event fd opened {} after the call, for an event queued before it",
        duration(ns)
    )
}

/// `closed 400.0µs after it`: when a holder let go, after the failing call returned.
pub fn closed_after(ns: u64) -> String {
    format!("closed {} after it", duration(ns))
}

/// `why: end of an unmount-all loop: ...`: why a failure other than EBUSY failed.
pub fn explanation(e: &ExplanationWire) -> String {
    format!("why: {}", escape_for_terminal(e.sentence.as_bytes()))
}

/// A process: `comm[pid]`.
pub fn process(comm: &[u8], pid: u32) -> String {
    format!("{}[{pid}]", escape_for_terminal(comm))
}

/// A holder's kind, with how a copy is held: `fd`, `mount-copy (cwd)`.
pub fn holder_kind(h: &HolderWire) -> String {
    let kind = escape_for_terminal(h.kind.as_bytes());
    match &h.via {
        Some(via) => format!("{kind} ({})", escape_for_terminal(via.as_bytes())),
        None => kind,
    }
}

/// The holder's process, for holders that are processes: `umount[1234] (the caller)`
/// when it is the failing call's own.
pub fn holder_process(h: &HolderWire) -> Option<String> {
    let p = process(&h.comm_bytes()?, h.pid?);
    Some(match h.by_caller {
        true => format!("{p} (the caller)"),
        false => p,
    })
}

/// The held path; on a mount detached since, `/mnt/x/f (mount detached since)`: the path
/// it had.
pub fn holder_path(h: &HolderWire) -> Option<String> {
    let path = escape_for_terminal(&h.path_bytes()?);
    Some(match h.mount_detached {
        true => format!("{path} (mount detached since)"),
        false => path,
    })
}

/// When the holder opened the file and when it let go, as far as they were traced.
pub fn holder_timing(h: &HolderWire) -> Vec<String> {
    let opened = match (h.opened_ns_before, h.opened_ns_after) {
        (Some(ns), _) if h.event_fd => Some(format!("event fd {}", opened_before(ns))),
        (Some(ns), _) => Some(opened_before(ns)),
        (None, Some(ns)) => Some(event_fd_opened_after(ns)),
        (None, None) => None,
    };
    let closed = h.closed_ns_after.map(closed_after);
    opened.into_iter().chain(closed).collect()
}

/// The holder's note, and for a fanotify listener the files of its queued events
/// ([`queued_files`]).
pub fn holder_note(h: &HolderWire) -> Option<String> {
    let note = h.note.as_ref().map(|n| escape_for_terminal(n.as_bytes()));
    match (note, queued_files(h)) {
        (Some(note), Some(files)) => Some(format!("{note}; {files}")),
        (note, files) => note.or(files),
    }
}

/// `queued events: 7 — /mnt/x/a, /mnt/x/b, /mnt/x/c, /mnt/x/d and 3 more`: a fanotify
/// listener's unread events on the mount, by the files of the first (a path the probe could
/// not walk whole is marked `(cut)`); `None` when no file was named.
pub fn queued_files(h: &HolderWire) -> Option<String> {
    if h.queued_files.is_empty() {
        return None;
    }
    let named = h.queued_files.len();
    let count = h.queued_events.map_or(named, |n| (n as usize).max(named));
    let files: Vec<String> = h
        .queued_files
        .iter()
        .map(|f| {
            let path = escape_for_terminal(&f.path_bytes());
            if f.path_cut {
                format!("{path} (cut)")
            } else {
                path
            }
        })
        .collect();
    let mut line = format!("queued events: {count} — {}", files.join(", "));
    if count > named {
        line.push_str(&format!(" and {} more", count - named));
    }
    Some(line)
}

/// `containerd 0123456789ab pod <uid>`: runtime, short id, pod.
pub fn container(c: &ContainerWire) -> String {
    let mut s = escape_for_terminal(c.runtime.as_bytes());
    if let Some(id) = &c.id {
        s.push(' ');
        s.push_str(&escape_for_terminal(id.get(..12).unwrap_or(id).as_bytes()));
    }
    if let Some(pod) = &c.pod_uid {
        s.push_str(" pod ");
        s.push_str(&escape_for_terminal(pod.as_bytes()));
    }
    s
}

/// `pod=NS/POD container=NAME` (`sep` `=`) or `pod NS/POD container NAME` (`sep` ` `): the
/// pod and container a process runs in, as Kubernetes names them; a sandbox's own process
/// (pause) has `container=(sandbox)`.
pub fn pod(k: &K8sWire, sep: &str) -> String {
    let container = k.container.as_deref().unwrap_or("(sandbox)");
    format!(
        "pod{sep}{} container{sep}{}",
        escape_for_terminal(k.pod_ref().as_bytes()),
        escape_for_terminal(container.as_bytes())
    )
}

/// Where a process runs, in words: its pod when named, else its container (runtime, short
/// id, pod UID); `sep` as in [`pod`].
pub fn workload(c: Option<&ContainerWire>, k: Option<&K8sWire>, sep: &str) -> Option<String> {
    match (k, c) {
        (Some(k), _) => Some(pod(k, sep)),
        (None, Some(c)) => Some(format!("container{sep}{}", container(c))),
        (None, None) => None,
    }
}

/// One holder on one line: kind, process, fd, path, namespace, container, timing, note.
pub fn holder_line(h: &HolderWire) -> String {
    let kind = holder_kind(h);
    let mut line = format!("{}{kind:<10}", if h.blamed { "" } else { "(info) " });
    if let Some(p) = holder_process(h) {
        line.push_str(&format!(" {p}"));
    }
    if let Some(fd) = h.fd {
        line.push_str(&format!(" fd {fd}"));
    }
    if let Some(path) = holder_path(h) {
        line.push_str(&format!("  {path}"));
    }
    if let Some(ns) = h.mntns {
        line.push_str(&format!("  mntns={ns}"));
    }
    if let Some(w) = workload(h.container.as_ref(), h.k8s.as_ref(), "=") {
        line.push_str(&format!("  {w}"));
    }
    for t in holder_timing(h) {
        line.push_str(&format!("  {t}"));
    }
    if let Some(note) = holder_note(h) {
        line.push_str(&format!("  ({note})"));
    }
    line
}

/// A recent accessor on one line: not a holder, context.
pub fn accessor_line(a: &AccessorWire) -> String {
    context_line("", a)
}

/// One of the caller's own recent opens on one line (`umount(8)` opens its target before it
/// calls `umount2`): context about the caller, told apart from other processes'.
pub fn caller_access_line(a: &AccessorWire) -> String {
    context_line("the caller itself ", a)
}

/// `(context) {subject}opened a file here 40.0ms before the call and had let go: cat[998] fd 3`.
fn context_line(subject: &str, a: &AccessorWire) -> String {
    format!(
        "(context) {subject}opened a file here {} before the call and had let go: {} fd {}",
        duration(a.opened_ns_before),
        process(&a.comm_bytes(), a.pid),
        a.fd
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        container::{Container, Runtime},
        model::{Holder, HolderKind, HolderProcess, Seen},
    };

    #[test]
    fn durations_are_human() {
        assert_eq!(duration(999), "999ns");
        assert_eq!(duration(1_500), "1.5µs");
        assert_eq!(duration(2_500_000), "2.5ms");
        assert_eq!(duration(3_000_000_000), "3.00s");
        assert_eq!(opened_before(1_800_000), "opened 1.8ms before the call");
        assert_eq!(closed_after(400_000), "closed 400.0µs after it");
    }

    #[test]
    fn a_holder_that_is_the_caller_says_so() {
        let mut h = transient();
        h.by_caller = true;
        let line = holder_line(&HolderWire::new(&h));
        assert!(
            line.starts_with("transient  scan\\xffner[999] (the caller) fd 3"),
            "{line}"
        );
    }

    #[test]
    fn an_event_fd_says_it_is_one_and_when_it_was_opened() {
        let mut h = transient();
        h.event_fd = true;
        assert_eq!(
            holder_timing(&HolderWire::new(&h)),
            [
                "event fd opened 1.8ms before the call",
                "closed 400.0µs after it"
            ]
        );
        h.opened_ns_before = None;
        h.opened_ns_after = Some(250_000);
        assert_eq!(
            holder_timing(&HolderWire::new(&h))[0],
            "event fd opened 250.0µs after the call, for an event queued before it"
        );
    }

    fn transient() -> Holder {
        let mut h = Holder::new(HolderKind::Transient, 812, Seen::Traced);
        h.process = Some(HolderProcess {
            pid: 999,
            comm: b"scan\xffner".to_vec(),
            mntns: Some(4026532001),
            container: Some(Container {
                runtime: Runtime::Containerd,
                id: Some("0123456789abcdef0123".into()),
                pod_uid: Some("c0ffee".into()),
                k8s: None,
            }),
        });
        h.fd = Some(3);
        h.path = Some(b"/m/etc/\x1b[31m".to_vec());
        h.opened_ns_before = Some(1_800_000);
        h.closed_ns_after = Some(400_000);
        h.note = Some("closed it after the failing call".into());
        h
    }

    #[test]
    fn a_named_pod_is_shown_instead_of_the_container_id() {
        let mut h = transient();
        let c = h.process.as_mut().unwrap().container.as_mut().unwrap();
        c.k8s = Some(crate::container::PodNames {
            pod: "scanner-x7".into(),
            namespace: "security".into(),
            uid: "c0ffee".into(),
            container: Some("scan\u{1b}".into()),
            image: None,
        });
        let line = holder_line(&HolderWire::new(&h));
        assert!(
            line.contains("  pod=security/scanner-x7 container=scan\\u{1b}  opened"),
            "{line}"
        );
        assert!(!line.contains("0123456789ab"), "{line}");
        // The sandbox's own process (pause) has no container name.
        let c = h.process.as_mut().unwrap().container.as_mut().unwrap();
        c.k8s.as_mut().unwrap().container = None;
        let w = HolderWire::new(&h);
        assert_eq!(
            workload(w.container.as_ref(), w.k8s.as_ref(), " ").as_deref(),
            Some("pod security/scanner-x7 container (sandbox)")
        );
    }

    #[test]
    fn a_holder_line_names_everything_in_one_wording() {
        assert_eq!(
            holder_line(&HolderWire::new(&transient())),
            "transient  scan\\xffner[999] fd 3  /m/etc/\\u{1b}[31m  mntns=4026532001  \
             container=containerd 0123456789ab pod c0ffee  opened 1.8ms before the call  \
             closed 400.0µs after it  (closed it after the failing call)"
        );
        let mut copy = Holder::new(HolderKind::MountCopy, 9, Seen::MountTable);
        copy.via = Some(HolderKind::Submount);
        copy.blamed = false;
        assert_eq!(
            holder_line(&HolderWire::new(&copy)),
            "(info) mount-copy (submount)"
        );
    }

    /// Read back from JSON, a holder whose names are not UTF-8 is written from its exact
    /// bytes, as the text sink writes it live.
    #[test]
    fn a_holder_read_back_formats_as_it_did_live() {
        let live = HolderWire::new(&transient());
        let read: HolderWire =
            serde_json::from_str(&serde_json::to_string(&live).unwrap()).unwrap();
        assert!(read.comm_b64.is_some());
        assert_eq!(holder_line(&read), holder_line(&live));
    }

    /// A listener found by the kernel scan with 7 unread events on the mount, 4 named.
    fn listener(named: &[&[u8]], queued_events: u32) -> Holder {
        let mut h = Holder::new(HolderKind::Fanotify, 812, Seen::KernelScan);
        h.process = Some(HolderProcess {
            pid: 77,
            comm: b"av".to_vec(),
            mntns: None,
            container: None,
        });
        h.fd = Some(5);
        h.note = Some("its queue holds 7 unread events on files opened through this mount".into());
        h.queued_events = Some(queued_events);
        h.queued_files = named
            .iter()
            .map(|p| crate::model::QueuedFile {
                path: p.to_vec(),
                cut: false,
            })
            .collect();
        h.path = h.queued_files.first().map(|f| f.path.clone());
        h
    }

    #[test]
    fn a_listeners_queued_files_are_named_with_the_count_of_the_rest() {
        let h = listener(&[b"/mnt/x/a", b"/mnt/x/b", b"/mnt/x/c", b"/mnt/x/d"], 7);
        assert_eq!(
            holder_line(&HolderWire::new(&h)),
            "fanotify   av[77] fd 5  /mnt/x/a  (its queue holds 7 unread events on files opened \
             through this mount; queued events: 7 — /mnt/x/a, /mnt/x/b, /mnt/x/c, /mnt/x/d and \
             3 more)"
        );
        // All named: no rest; a cut path is marked, one not UTF-8 escaped from its bytes.
        let mut h = listener(&[b"/m/\xff\x1b", b"/m/\xe2\x80\xa6/deep"], 2);
        h.queued_files[1].cut = true;
        let read: HolderWire =
            serde_json::from_str(&serde_json::to_string(&HolderWire::new(&h)).unwrap()).unwrap();
        assert_eq!(
            queued_files(&read).as_deref(),
            Some("queued events: 2 — /m/\\xff\\u{1b}, /m/…/deep (cut)")
        );
        // No file named (a /proc scan's suspect; an older recording): the note alone.
        let mut h = listener(&[], 7);
        h.queued_events = None;
        assert_eq!(queued_files(&HolderWire::new(&h)), None);
        assert_eq!(
            holder_note(&HolderWire::new(&h)).as_deref(),
            h.note.as_deref()
        );
    }

    fn accessor(pid: u32, comm: &[u8], fd: u32, ns: u64, by_caller: bool) -> AccessorWire {
        AccessorWire::new(&crate::model::Accessor {
            pid,
            comm: comm.to_vec(),
            fd,
            mount_id: 812,
            opened_ns_before: ns,
            by_caller,
        })
    }

    /// A holder of a mount detached since is named by the path it had, and said so.
    #[test]
    fn a_holder_of_a_detached_mount_says_so() {
        let mut h = Holder::new(HolderKind::Fd, 812, Seen::KernelScan);
        h.process = Some(HolderProcess {
            pid: 999,
            comm: b"app".to_vec(),
            mntns: Some(4026532001),
            container: None,
        });
        h.fd = Some(3);
        h.path = Some(b"/f".to_vec());
        h.on_detached_mount(b"/mnt/x");
        assert_eq!(
            holder_line(&HolderWire::new(&h)),
            "fd         app[999] fd 3  /mnt/x/f (mount detached since)  mntns=4026532001"
        );
    }

    #[test]
    fn an_accessor_is_context() {
        assert_eq!(
            accessor_line(&accessor(998, b"cat", 3, 40_000_000, false)),
            "(context) opened a file here 40.0ms before the call and had let go: cat[998] fd 3"
        );
    }

    #[test]
    fn the_callers_own_access_is_the_callers() {
        assert_eq!(
            caller_access_line(&accessor(901, b"umount", 3, 1_200_000, true)),
            "(context) the caller itself opened a file here 1.2ms before the call and had let go: umount[901] fd 3"
        );
    }
}
