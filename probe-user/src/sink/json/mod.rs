//! JSON Lines output, schema version 1 (`docs/json-schema.md` has the full contract).
//!
//! Every line is one object with `"v": 1` and `"type"`; consumers ignore unknown fields and
//! unknown types, since both may be added over time.
//!
//! ## `umount`: one finished `umount`/`umount2` call
//! `id` (sequence number in this run), `ts` (RFC 3339, ns, UTC, at syscall entry), `pid`,
//! `tid` (host PID namespace), `comm`, `uid`, `gid`, `mntns` (inode of the caller's mount
//! namespace; 0 if unknown), `cgroup` (cgroup v2 path or `null`), `cgroup_id`, `target` (as
//! passed), `target_abs` (absolute: the target itself, or joined to the caller's working
//! directory; `null` when that could not be read), `flags`, `flag_names`, `ret` (0 or
//! `-errno`), `errno` (`"EBUSY"`..., `null` on success), `duration_ns`.
//!
//! ## `stats`: counters
//! `ts`, `events` (decoded), `drops` (object: `ringbuf_full`, `inflight_map_full`,
//! `path_truncated`, `path_unreadable`), `decode_errors`, `final` (true on the report at exit).
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
