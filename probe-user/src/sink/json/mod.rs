//! JSON Lines output, schema version 1 (`docs/json-schema.md` has the full contract).
//!
//! Every line is one object with `"v": 1` and `"type"`; consumers ignore unknown fields and
//! unknown types, since both may be added over time.
//! busyprobe's own readers (`report`, `replay`, the TUI) read the lines back into the same
//! structs ([`wire::Line`]), which write them again byte for byte.
//!
//! ## `umount`: one finished `umount`/`umount2` call
//! `id` (sequence number in this run), `ts` (RFC 3339, ns, UTC, at syscall entry), `pid`,
//! `tid` (host PID namespace), `comm`, `uid`, `gid`, `mntns` (inode of the caller's mount
//! namespace; 0 if unknown), `cgroup` (cgroup v2 path or `null`), `cgroup_id`, `target` (as
//! passed), `target_abs` (absolute: the target itself, or joined to the caller's working
//! directory; `null` when that could not be read), `flags`, `flag_names`, `ret` (0 or
//! `-errno`), `errno` (`"EBUSY"`..., `null` on success), `duration_ns`.
//!
//! ## `warning`: something to know that is not an unmount
//! `ts`, `warning` (its kind), the kind's fields, `message`. `alive-after-unmount`:
//! `umount_id`, `target`, `mount`, `holders`. `recording-lines-lost` (in a recording, the
//! first line after lines it could not write): `lines`, `cause` (errno name of the failed
//! write), `since`. `recording-failing` (to the agent's other outputs when its recording
//! starts losing lines): `cause`.
//!
//! ## `stats`: counters
//! `ts`, `events` (decoded), `drops` (object: `ringbuf_full`, `inflight_map_full`,
//! `path_truncated`, `path_unreadable`, `release_path_cut`), `decode_errors`, `final` (true on
//! the report at exit).
//!
//! ## Text encoding
//! Paths and names are bytes. A field holding them is a string; when the bytes are not valid
//! UTF-8 the string is lossy (U+FFFD) and a sibling `<field>_b64` holds the exact bytes in
//! standard base64 — the never-lossy rule. A path cut by the probe's buffer carries
//! `<field>_truncated: true`; one the probe could not read carries `<field>_unreadable: true`.

pub mod wire;

use std::{io, time::SystemTime};

use crate::{
    event::{UmountAttempt, Warning},
    sink::Sink,
    stats::Stats,
};

/// The `header` line that starts every recording file (without its newline).
pub fn header_line(host: &str, kernel: &str, probe_mode: &str, started: SystemTime) -> String {
    serde_json::to_string(&wire::HeaderLine::new(host, kernel, probe_mode, started))
        .expect("serialising plain data cannot fail")
}

/// The `who` object for `busyprobe who --json` (one line).
pub fn who_line(path: &[u8], attribution: &crate::model::Attribution) -> String {
    serde_json::to_string(&wire::WhoLine::new(path, attribution))
        .expect("serialising plain data cannot fail")
}

/// The schema version written in every line's `v`.
pub const SCHEMA_VERSION: u32 = 1;

/// Writes one JSON object per line to `W`, flushing each line (a reader on a pipe or a file
/// tail sees it at once; a crash loses at most the line being written).
pub struct JsonLines<W: io::Write> {
    out: W,
}

impl<W: io::Write> JsonLines<W> {
    /// A JSON Lines sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// One line in one write: serialising straight into an unbuffered file would issue a
    /// `write` per token (dozens per line), and a crash could leave any prefix of it.
    fn line(&mut self, value: &impl serde::Serialize) -> io::Result<()> {
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()
    }
}

impl<W: io::Write> Sink for JsonLines<W> {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.line(&wire::UmountLine::new(attempt))
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.line(&wire::StatsLine::new(ts, stats, last))
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.line(&wire::WarningLine::new(warning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{sample_attribution, Holder, HolderKind, QueuedFile, Seen};
    use std::time::UNIX_EPOCH;

    fn attempt(target: &[u8], abs: Option<&[u8]>) -> UmountAttempt {
        crate::event::sample_attempt(target, abs, -16, 2)
    }

    fn write(f: impl FnOnce(&mut JsonLines<&mut Vec<u8>>) -> io::Result<()>) -> String {
        let mut buf = Vec::new();
        f(&mut JsonLines::new(&mut buf)).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn umount_line_has_the_schema_fields_in_order() {
        let out = write(|s| s.umount(&attempt(b"/var/lib/m", Some(b"/var/lib/m"))));
        assert_eq!(
            out,
            concat!(
                r#"{"v":1,"type":"umount","id":42,"ts":"2026-11-23T10:01:02.123456789Z","#,
                r#""pid":1234,"tid":1235,"comm":"containerd","uid":0,"gid":0,"mntns":4026532001,"#,
                r#""cgroup":"/system.slice/containerd.service","cgroup_id":99,"#,
                r#""target":"/var/lib/m","target_abs":"/var/lib/m","flags":2,"flag_names":["MNT_DETACH"],"#,
                r#""ret":-16,"errno":"EBUSY","duration_ns":5120}"#,
                "\n"
            )
        );
    }

    /// A failure's explanation comes last, after every field of the v1 line before it, and
    /// reads back; a line without one (any older recording's) reads as none.
    #[test]
    fn an_explanation_is_the_last_field_of_a_failure() {
        let mut a = crate::event::sample_attempt(b"/run/m", Some(b"/run/m"), -22, 0);
        a.explanation = Some(crate::model::Explanation {
            code: crate::model::ExplanationCode::UnmountedEarlier,
            sentence: "nothing is mounted at /run/m any more".into(),
            related_event: Some(41),
        });
        let out = write(|s| s.umount(&a));
        let read = crate::recording::parse_line(out.trim_end().as_bytes()).expect("reads back");
        assert_eq!(serde_json::to_string(&read).unwrap(), out.trim_end());
        let Ok(wire::Line::Umount(old)) = crate::recording::parse_line(
            write(|s| s.umount(&attempt(b"/m", Some(b"/m"))))
                .trim_end()
                .as_bytes(),
        ) else {
            panic!("a line without an explanation (an older recording's) reads too");
        };
        assert_eq!(old.explanation, None);
        assert!(
            out.ends_with(concat!(
                r#""errno":"EINVAL","duration_ns":5120,"explanation":{"code":"unmounted_earlier","#,
                r#""sentence":"nothing is mounted at /run/m any more","related_event":41}}"#,
                "\n"
            )),
            "{out}"
        );
    }

    /// The caller's own recent opens are not in `accessors` (other processes only) but in
    /// `caller_accesses`, right after it; a line without any has no `caller_accesses` and
    /// reads back (as older recordings' lines do).
    #[test]
    fn the_callers_own_opens_are_written_apart() {
        use crate::model::{sample_attribution, Accessor};
        let open = |pid, comm: &[u8], fd, by_caller| Accessor {
            pid,
            comm: comm.to_vec(),
            fd,
            mount_id: 812,
            opened_ns_before: 1_200_000,
            by_caller,
        };
        let mut attribution = sample_attribution("/m", Vec::new());
        attribution.accessors = vec![
            open(1234, b"umount", 3, true),
            open(998, b"cat", 4, false),
            open(1234, b"sh", 0, true),
        ];
        let mut a = attempt(b"/m", Some(b"/m"));
        a.attribution = Some(Ok(attribution.clone()));
        let out = write(|s| s.umount(&a));
        assert!(
            out.contains(concat!(
                r#""accessors":[{"pid":998,"comm":"cat","fd":4,"mount_id":812,"opened_ns_before":1200000}],"#,
                r#""caller_accesses":[{"pid":1234,"comm":"umount","fd":3,"mount_id":812,"opened_ns_before":1200000},"#,
                r#"{"pid":1234,"comm":"sh","fd":0,"mount_id":812,"opened_ns_before":1200000}],"uninspectable":[]"#
            )),
            "{out}"
        );
        attribution.accessors.retain(|x| !x.by_caller);
        a.attribution = Some(Ok(attribution));
        let out = write(|s| s.umount(&a));
        assert!(!out.contains("caller_accesses"), "{out}");
        let Ok(wire::Line::Umount(read)) = crate::recording::parse_line(out.trim_end().as_bytes())
        else {
            panic!("a line without caller_accesses reads back: {out}");
        };
        assert!(read.caller_accesses.is_empty());
    }

    #[test]
    fn non_utf8_paths_carry_exact_bytes_in_b64() {
        let out = write(|s| s.umount(&attempt(b"mnt\xff", Some(b"/t/mnt\xff"))));
        assert!(
            out.contains(
                r#""target":"mnt\u{fffd}","target_b64":"bW50/w==","#
                    .replace("\\u{fffd}", "\u{fffd}")
                    .as_str()
            ),
            "{out}"
        );
        assert!(out.contains(r#""target_abs_b64":"L3QvbW50/w==""#), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["target"], "mnt\u{fffd}");
    }

    #[test]
    fn truncated_and_unknown_fields() {
        let mut a = attempt(b"mnt", None);
        a.call.target.truncated = true;
        a.call.ret = 0;
        a.cgroup = None;
        let out = write(|s| s.umount(&a));
        assert!(
            out.contains(r#""target":"mnt","target_truncated":true,"target_abs":null,"#),
            "{out}"
        );
        assert!(out.contains(r#""cgroup":null,"#), "{out}");
        assert!(out.contains(r#""ret":0,"errno":null,"#), "{out}");
    }

    #[test]
    fn stats_line_lists_every_drop_cause() {
        let stats = Stats {
            events: 7,
            drops: [3, 0, 1, 0, 0],
            decode_errors: 2,
        };
        let out = write(|s| s.stats(UNIX_EPOCH, &stats, true));
        assert_eq!(
            out,
            concat!(
                r#"{"v":1,"type":"stats","ts":"1970-01-01T00:00:00.000000000Z","events":7,"#,
                r#""drops":{"ringbuf_full":3,"inflight_map_full":0,"path_truncated":1,"path_unreadable":0,"release_path_cut":0},"#,
                r#""decode_errors":2,"final":true}"#,
                "\n"
            )
        );
    }

    /// Lines of every type, as the sinks write them, from attempts that exercise every
    /// optional field: non-UTF-8 names and paths, a cut target, holders of several kinds (a
    /// container, a copy held `via`, information only), accessors, uninspectable processes,
    /// an attribution error.
    fn sample_lines() -> Vec<Vec<u8>> {
        use crate::model::{Accessor, HolderProcess, Uninspectable};
        let mut in_pod = crate::container::from_cgroup_path(
            b"/kubepods.slice/kubepods-pod0f0e0d0c_0b0a_0908_0706_050403020100.slice/\
              cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
        );
        in_pod.as_mut().unwrap().k8s = Some(crate::container::PodNames {
            pod: "scanner-x7".into(),
            namespace: "security".into(),
            uid: "0f0e0d0c-0b0a-0908-0706-050403020100".into(),
            container: Some("scan".into()),
            image: Some("registry.local/scanner:1.2".into()),
        });
        let mut fd = Holder::new(HolderKind::Fd, 812, Seen::KernelScan);
        fd.process = Some(HolderProcess {
            pid: 999,
            comm: b"scan\xffner".to_vec(),
            mntns: Some(4026532001),
            container: in_pod.clone(),
        });
        fd.fd = Some(3);
        fd.path = Some(b"/m/\xfe\x1b".to_vec());
        fd.opened_ns_before = Some(1_800_000);
        let mut transient = Holder::new(HolderKind::Transient, 812, Seen::Traced);
        transient.closed_ns_after = Some(400_000);
        transient.note = Some("closed it after the failing call".into());
        let mut detached = Holder::new(HolderKind::Cwd, 812, Seen::KernelScan);
        detached.path = Some(b"/d".to_vec());
        detached.on_detached_mount("/m\u{e9}".as_bytes());
        let mut copy = Holder::new(HolderKind::MountCopy, 813, Seen::MountTable);
        copy.via = Some(HolderKind::Submount);
        copy.blamed = false;
        let listener = queued_listener();
        let mut attribution =
            sample_attribution("/m\u{e9}", vec![fd, transient, detached, copy, listener]);
        attribution.accessors.push(Accessor {
            pid: 998,
            comm: b"c\xffat".to_vec(),
            fd: 4,
            mount_id: 812,
            opened_ns_before: 40_000_000,
            by_caller: false,
        });
        attribution.accessors.push(Accessor {
            pid: 1234,
            comm: b"umount".to_vec(),
            fd: 3,
            mount_id: 812,
            opened_ns_before: 1_200_000,
            by_caller: true,
        });
        attribution.uninspectable.push(Uninspectable {
            pid: 7,
            comm: b"init".to_vec(),
            error: "EACCES reading /proc/7/fd".into(),
        });

        let mut plain = attempt(b"/var/lib/m", Some(b"/var/lib/m"));
        plain.call.ret = 0;
        let mut odd = attempt(b"mnt\xff", None);
        odd.call.comm = b"\xffcomm".to_vec();
        odd.call.target.truncated = true;
        odd.cgroup = Some(b"/a\xfe".to_vec());
        let mut held = attempt(b"/m\xc3\xa9", Some(b"/m\xc3\xa9"));
        held.attribution = Some(Ok(attribution.clone()));
        held.container = in_pod.map(|mut c| {
            c.k8s.as_mut().unwrap().container = None;
            c
        });
        let mut unresolved = attempt(b"/gone", Some(b"/gone"));
        unresolved.call.target.unreadable = true;
        unresolved.attribution = Some(Err("the caller's namespace was gone".into()));
        let warning = Warning::AliveAfterUnmount {
            umount_id: 4,
            ts: UNIX_EPOCH,
            target: b"/m\xff".to_vec(),
            mount: attribution.mount.clone(),
            holders: attribution.holders.clone(),
        };
        let stats = Stats {
            events: 7,
            drops: [3, 0, 1, 0, 2],
            decode_errors: 2,
        };
        let mut lines: Vec<Vec<u8>> = [plain, odd, held, unresolved]
            .iter()
            .map(|a| write(|s| s.umount(a)).into_bytes())
            .collect();
        lines.push(write(|s| s.warning(&warning)).into_bytes());
        lines.push(write(|s| s.stats(UNIX_EPOCH, &stats, false)).into_bytes());
        lines.push(header_line("node\u{2}7", "6.1.0", "fentry", UNIX_EPOCH).into_bytes());
        lines.push(who_line(b"/m\xff/sub", &attribution).into_bytes());
        for warning in [
            Warning::RecordingFailing {
                ts: UNIX_EPOCH,
                cause: "ENOSPC".into(),
            },
            Warning::RecordingLinesLost {
                ts: UNIX_EPOCH + std::time::Duration::from_secs(60),
                lines: 12,
                cause: "ENOSPC".into(),
                since: UNIX_EPOCH,
            },
        ] {
            lines.push(write(|s| s.warning(&warning)).into_bytes());
        }
        lines
    }

    /// A fanotify listener seen by the kernel scan with 7 unread events on the mount, the
    /// files of two named (one not UTF-8 and cut).
    fn queued_listener() -> Holder {
        let mut h = Holder::new(HolderKind::Fanotify, 812, Seen::KernelScan);
        h.fd = Some(5);
        h.queued_events = Some(7);
        h.queued_files = vec![
            QueuedFile {
                path: b"/m/a".to_vec(),
                cut: false,
            },
            QueuedFile {
                path: b"/m/\xff".to_vec(),
                cut: true,
            },
        ];
        h.path = Some(b"/m/a".to_vec());
        h
    }

    /// A listener's queue is a v1 addition: `queued_events` and `queued_files` after every
    /// field of a holder before it, each file's path as a path field is (`path_b64`), and
    /// absent on other holders.
    #[test]
    fn a_listeners_queued_files_follow_the_holders_fields() {
        let mut a = attempt(b"/m", Some(b"/m"));
        let mut other = Holder::new(HolderKind::Transient, 812, Seen::Traced);
        other.fd = Some(3);
        a.attribution = Some(Ok(sample_attribution("/m", vec![queued_listener(), other])));
        let out = write(|s| s.umount(&a));
        assert!(
            out.contains(concat!(
                r#""opened_ns_before":null,"closed_ns_after":null,"queued_events":7,"#,
                r#""queued_files":[{"path":"/m/a"},"#,
                r#"{"path":"/m/"#,
                "\u{fffd}",
                r#"","path_b64":"L20v/w==","path_cut":true}]},"#,
                r#"{"pid":null"#
            )),
            "{out}"
        );
        assert_eq!(out.matches("queued_").count(), 2, "{out}");
    }

    /// What the sinks write reads back into the typed model and writes out again byte for
    /// byte: every type, every optional field.
    #[test]
    fn every_line_written_reads_back_and_writes_the_same_bytes() {
        let mut kinds = Vec::new();
        for written in sample_lines() {
            let line = crate::recording::parse_line(&written)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&written)));
            kinds.push(std::mem::discriminant(&line));
            let mut again = serde_json::to_vec(&line).unwrap();
            if written.ends_with(b"\n") {
                again.push(b'\n');
            }
            assert_eq!(
                String::from_utf8_lossy(&again),
                String::from_utf8_lossy(&written)
            );
            assert_eq!(again, written);
        }
        kinds.dedup();
        assert_eq!(
            kinds.len(),
            6,
            "umount, warning, stats, header, who, the recording's warnings"
        );
    }

    /// Read back, names and paths that are not UTF-8 are their exact bytes again.
    #[test]
    fn lines_read_back_keep_exact_bytes() {
        let lines = sample_lines();
        let Ok(wire::Line::Umount(odd)) = crate::recording::parse_line(&lines[1]) else {
            panic!("an umount line");
        };
        assert_eq!(&*odd.target_bytes(), b"mnt\xff");
        assert_eq!(&*odd.comm_bytes(), b"\xffcomm");
        assert!(odd.target_truncated && !odd.target_unreadable);
        let Ok(wire::Line::Umount(held)) = crate::recording::parse_line(&lines[2]) else {
            panic!("an umount line");
        };
        let h = &held.holders()[0];
        assert_eq!(h.comm_bytes().as_deref(), Some(&b"scan\xffner"[..]));
        assert_eq!(h.path_bytes().as_deref(), Some(&b"/m/\xfe\x1b"[..]));
        assert_eq!(h.container.as_ref().unwrap().runtime, "containerd");
        let k8s = h.k8s.as_ref().expect("the holder's pod");
        assert_eq!(
            (
                k8s.pod_ref(),
                k8s.container.as_deref(),
                k8s.image.as_deref()
            ),
            (
                "security/scanner-x7".to_owned(),
                Some("scan"),
                Some("registry.local/scanner:1.2")
            )
        );
        let caller = held.k8s.as_ref().expect("the caller's pod");
        assert_eq!(
            (caller.pod.as_str(), caller.container.as_deref()),
            ("scanner-x7", None)
        );
        assert_eq!(
            held.container.as_ref().unwrap().id.as_deref(),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            &*held.accessors.as_ref().unwrap()[0].comm_bytes(),
            b"c\xffat"
        );
        let detached = &held.holders()[2];
        assert_eq!(
            detached.path_bytes().as_deref(),
            Some("/m\u{e9}/d".as_bytes())
        );
        assert!(detached.mount_detached);
        assert!(!held.holders()[0].mount_detached);
        let written = String::from_utf8_lossy(&lines[2]);
        assert!(
            written.contains(r#""closed_ns_after":null,"mount_detached":true},"#),
            "the addition is last, absent when false: {written}"
        );
        assert_eq!(written.matches("mount_detached").count(), 1, "{written}");
        assert_eq!(
            &*held.mount.as_ref().unwrap().mount_point_bytes(),
            "/m\u{e9}".as_bytes()
        );
        let Ok(wire::Line::Stats(stats)) = crate::recording::parse_line(&lines[5]) else {
            panic!("a stats line");
        };
        assert_eq!(stats.stats().drops, [3, 0, 1, 0, 2]);
    }

    /// Every line of the recording fixture that is well formed reads into the typed model
    /// and, written again, is the same bytes.
    #[test]
    fn the_fixture_recording_round_trips() {
        let text = include_bytes!("../../recording/testdata/incident.jsonl");
        let mut read = 0;
        for (number, bytes) in text.split(|&b| b == b'\n').enumerate() {
            match crate::recording::parse_line(bytes) {
                Ok(line) => {
                    assert_eq!(
                        String::from_utf8(serde_json::to_vec(&line).unwrap()).unwrap(),
                        std::str::from_utf8(bytes).unwrap(),
                        "line {}",
                        number + 1
                    );
                    read += 1;
                }
                // The fixture's damage: not JSON, schema 2, a torn last line.
                Err(_) => assert!([4, 7, 10].contains(&(number + 1)), "line {}", number + 1),
            }
        }
        assert_eq!(read, 7);
    }

    /// The recording's warnings, field by field (docs/json-schema.md).
    #[test]
    fn the_recording_warnings_have_their_fields_in_order() {
        let lines = sample_lines();
        let [failing, lost] = &lines[lines.len() - 2..] else {
            unreachable!()
        };
        assert_eq!(
            String::from_utf8_lossy(failing),
            concat!(
                r#"{"v":1,"type":"warning","ts":"1970-01-01T00:00:00.000000000Z","#,
                r#""warning":"recording-failing","cause":"ENOSPC","#,
                r#""message":"the recording cannot write (ENOSPC): it counts the lines it loses and says how many once it writes again"}"#,
                "\n"
            )
        );
        assert_eq!(
            String::from_utf8_lossy(lost),
            concat!(
                r#"{"v":1,"type":"warning","ts":"1970-01-01T00:01:00.000000000Z","#,
                r#""warning":"recording-lines-lost","lines":12,"cause":"ENOSPC","#,
                r#""since":"1970-01-01T00:00:00.000000000Z","#,
                r#""message":"12 lines could not be written to the recording (ENOSPC) since 1970-01-01T00:00:00.000000000Z"}"#,
                "\n"
            )
        );
        // A warning of a kind this build does not know is read, not refused.
        let unknown = br#"{"v":1,"type":"warning","ts":"x","warning":"from-the-future"}"#;
        assert_eq!(
            crate::recording::parse_line(unknown).unwrap(),
            wire::Line::Warning(Box::new(wire::WarningLine::Other))
        );
    }

    #[test]
    fn a_closed_output_is_an_error() {
        struct Closed;
        impl io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = JsonLines::new(Closed)
            .umount(&attempt(b"/m", None))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
