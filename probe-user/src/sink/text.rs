//! Human-readable output: one line per unmount attempt, safe for a terminal.
//!
//! ```text
//! 19:22:01.123456  EBUSY  containerd[1234] uid=0 mntns=4026532001  /tmp/x/mnt  5.1µs
//! 19:22:01.180211  ok     umount[1240] uid=0 mntns=4026531840  /tmp/x/mnt  [MNT_DETACH]  31.0µs
//! ```
//! Counters go to stderr: a warning whenever events were lost, a summary at exit.

use std::{io, time::SystemTime};

use crate::{
    event::{UmountAttempt, Warning},
    model::{Accessor, Holder},
    paths::escape_for_terminal,
    sink::{
        format,
        json::wire::{AccessorWire, HolderWire},
        Sink,
    },
    stats::Stats,
};

/// Writes human-readable lines to `W`.
pub struct TextLines<W: io::Write> {
    out: W,
    reported_drops: Stats,
}

impl<W: io::Write> TextLines<W> {
    /// A text sink writing attempts to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            reported_drops: Stats::default(),
        }
    }
}

/// One attempt as a line (without the newline).
pub fn format_attempt(a: &UmountAttempt) -> String {
    let c = &a.call;
    let result = c.errno_name().unwrap_or_else(|| "ok".into());
    let mut line = format!(
        "{}  {result:<6} {} uid={} mntns={}  {}",
        clock_time(a.ts),
        format::process(&c.comm, c.pid),
        c.uid,
        c.mntns,
        describe_target(a)
    );
    let flags = c.flag_names();
    if !flags.is_empty() {
        line.push_str(&format!("  [{}]", flags.join("|")));
    }
    line.push_str(&format!("  {}", format::duration(c.duration_ns)));
    match &a.attribution {
        Some(Ok(attribution)) => {
            for holder in &attribution.holders {
                line.push_str("\n    ");
                line.push_str(&format_holder(holder));
            }
            for accessor in &attribution.accessors {
                line.push_str("\n    ");
                line.push_str(&format_accessor(accessor));
            }
        }
        Some(Err(e)) => line.push_str(&format!(
            "\n    holders unknown: {}",
            escape_for_terminal(e.as_bytes())
        )),
        None => {}
    }
    line
}

/// One holder on one line (the wording of [`format::holder_line`]).
pub fn format_holder(h: &Holder) -> String {
    format::holder_line(&HolderWire::new(h))
}

/// A recent accessor on one line: not a holder, context.
pub fn format_accessor(a: &Accessor) -> String {
    format::accessor_line(&AccessorWire::new(a))
}

fn describe_target(a: &UmountAttempt) -> String {
    let t = &a.call.target;
    if t.unreadable {
        return "<target unreadable>".into();
    }
    let mut s = escape_for_terminal(&t.bytes);
    if t.truncated {
        s.push_str("…(truncated)");
    }
    match &a.target_abs {
        Some(abs) if *abs != t.bytes => s.push_str(&format!(" (= {})", escape_for_terminal(abs))),
        None if !t.bytes.starts_with(b"/") => s.push_str(" (cwd unknown)"),
        _ => {}
    }
    s
}

/// `HH:MM:SS.micros` in UTC.
fn clock_time(ts: SystemTime) -> String {
    let full = humantime::format_rfc3339_micros(ts).to_string();
    full.get(11..26).unwrap_or(&full).to_string()
}

impl<W: io::Write> Sink for TextLines<W> {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        writeln!(self.out, "{}", format_attempt(attempt))?;
        self.out.flush()
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        match warning {
            Warning::AliveAfterUnmount {
                umount_id,
                target,
                holders,
                ..
            } => {
                writeln!(
                    self.out,
                    "warning: unmount {umount_id} of {} succeeded but the filesystem is still in use:",
                    escape_for_terminal(target)
                )?;
                for h in holders {
                    writeln!(self.out, "    {}", format_holder(h))?;
                }
            }
            Warning::RecordingFailing { cause, .. } => writeln!(
                self.out,
                "warning: the recording cannot write ({cause}); it counts the lines it loses"
            )?,
            Warning::RecordingLinesLost { lines, cause, .. } => writeln!(
                self.out,
                "warning: the recording writes again after losing {lines} lines ({cause})"
            )?,
        }
        self.out.flush()
    }

    fn stats(&mut self, _ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        let previous = std::mem::replace(&mut self.reported_drops, stats.clone());
        let new_losses: Vec<String> = stats
            .drops_by_cause()
            .zip(previous.drops_by_cause())
            .filter(|((_, now), (_, before))| now > before)
            .map(|((cause, now), (_, before))| format!("{cause} +{}", now - before))
            .collect();
        if !new_losses.is_empty() {
            tracing::warn!("kernel side reported losses: {}", new_losses.join(", "));
        }
        if stats.decode_errors > previous.decode_errors {
            tracing::warn!(
                "{} ring-buffer records could not be decoded",
                stats.decode_errors - previous.decode_errors
            );
        }
        if last {
            tracing::info!(
                "{} kernel events seen (unmount attempts and releases), {} lost, {} undecodable",
                stats.events,
                stats.events_lost(),
                stats.decode_errors
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(target: &[u8], abs: Option<&[u8]>, ret: i64, flags: u32) -> UmountAttempt {
        crate::event::sample_attempt(target, abs, ret, flags)
    }

    #[test]
    fn formats_a_failure() {
        assert_eq!(
            format_attempt(&attempt(b"/tmp/x/mnt", Some(b"/tmp/x/mnt"), -16, 0)),
            "10:01:02.123456  EBUSY  containerd[1234] uid=0 mntns=4026532001  /tmp/x/mnt  5.1µs"
        );
    }

    #[test]
    fn formats_a_lazy_success_with_a_relative_target() {
        assert_eq!(
            format_attempt(&attempt(b"mnt", Some(b"/tmp/x/mnt"), 0, 2)),
            "10:01:02.123456  ok     containerd[1234] uid=0 mntns=4026532001  mnt (= /tmp/x/mnt)  [MNT_DETACH]  5.1µs"
        );
        assert!(format_attempt(&attempt(b"mnt", None, 0, 0)).contains("mnt (cwd unknown)"));
    }

    #[test]
    fn never_writes_control_bytes() {
        let line = format_attempt(&attempt(b"/tmp/\x1b]0;pwned\x07\xff", None, -22, 0));
        assert!(!line.bytes().any(|b| b < 0x20 || b == 0x7f), "{line:?}");
        assert!(line.contains("\\u{1b}]0;pwned\\u{7}\\xff"), "{line}");
    }

    #[test]
    fn marks_truncated_and_unreadable_targets() {
        let mut a = attempt(b"/very/long", None, -36, 0);
        a.call.target.truncated = true;
        assert!(format_attempt(&a).contains("/very/long…(truncated)"));
        a.call.target.unreadable = true;
        assert!(format_attempt(&a).contains("<target unreadable>"));
    }
}
