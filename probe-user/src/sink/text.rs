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
    model::Holder,
    paths::escape_for_terminal,
    sink::{
        format,
        json::wire::{HolderWire, Line, UmountLine, WarningLine},
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
    format_umount(&UmountLine::new(a))
}

/// One attempt as a line (without the newline), from its JSON line (`watch --connect`): the
/// same words as [`format_attempt`].
pub fn format_umount(u: &UmountLine) -> String {
    let mut line = format!(
        "{}  {:<6} {} uid={} mntns={}",
        clock_time(&u.ts),
        u.result(),
        format::process(&u.comm_bytes(), u.pid),
        u.uid,
        u.mntns,
    );
    if let Some(w) = format::workload(u.container.as_ref(), u.k8s.as_ref(), "=") {
        line.push_str(&format!(" {w}"));
    }
    line.push_str(&format!("  {}", describe_target(u)));
    if !u.flag_names.is_empty() {
        line.push_str(&format!("  [{}]", u.flag_names.join("|")));
    }
    line.push_str(&format!("  {}", format::duration(u.duration_ns)));
    for holder in u.holders() {
        line.push_str("\n    ");
        line.push_str(&format::holder_line(holder));
    }
    for accessor in u.accessors.as_deref().unwrap_or_default() {
        line.push_str("\n    ");
        line.push_str(&format::accessor_line(accessor));
    }
    for access in &u.caller_accesses {
        line.push_str("\n    ");
        line.push_str(&format::caller_access_line(access));
    }
    if let Some(e) = &u.attribution_error {
        line.push_str(&format!(
            "\n    holders unknown: {}",
            escape_for_terminal(e.as_bytes())
        ));
    }
    if let Some(e) = &u.explanation {
        line.push_str(&format!("\n    {}", format::explanation(e)));
    }
    line
}

/// One holder on one line (the wording of [`format::holder_line`]).
pub fn format_holder(h: &Holder) -> String {
    format::holder_line(&HolderWire::new(h))
}

fn describe_target(u: &UmountLine) -> String {
    if u.target_unreadable {
        return "<target unreadable>".into();
    }
    let target = u.target_bytes();
    let mut s = escape_for_terminal(&target);
    if u.target_truncated {
        s.push_str("…(truncated)");
    }
    match u.target_abs_bytes() {
        Some(abs) if abs != target => s.push_str(&format!(" (= {})", escape_for_terminal(&abs))),
        None if !target.starts_with(b"/") => s.push_str(" (cwd unknown)"),
        _ => {}
    }
    s
}

/// `HH:MM:SS.micros` (UTC) of an RFC 3339 time.
fn clock_time(ts: &str) -> &str {
    ts.get(11..26).unwrap_or(ts)
}

impl<W: io::Write> TextLines<W> {
    /// One line of a JSON Lines stream (`watch --connect`), in the words of the sink:
    /// attempts and warnings on the output; counters, the stream's header and lines lost on
    /// stderr.
    pub fn line(&mut self, line: &Line) -> io::Result<()> {
        match line {
            Line::Umount(u) => {
                writeln!(self.out, "{}", format_umount(u))?;
                self.out.flush()
            }
            Line::Warning(w) => self.warning_line(w),
            Line::Stats(s) => {
                self.counters(&s.stats(), s.last);
                Ok(())
            }
            Line::Header(h) => {
                tracing::info!(
                    "busyprobe {} on {} (kernel {}, {} mode)",
                    h.busyprobe,
                    escape_for_terminal(h.host.as_bytes()),
                    escape_for_terminal(h.kernel.as_bytes()),
                    escape_for_terminal(h.probe_mode.as_bytes())
                );
                Ok(())
            }
            Line::Lost(l) => {
                tracing::warn!("{}", escape_for_terminal(l.message.as_bytes()));
                Ok(())
            }
            Line::Who(_) | Line::Other => Ok(()),
        }
    }

    fn warning_line(&mut self, w: &WarningLine) -> io::Result<()> {
        match w {
            WarningLine::AliveAfterUnmount(w) => {
                writeln!(
                    self.out,
                    "warning: unmount {} of {} succeeded but the filesystem is still in use:",
                    w.umount_id,
                    escape_for_terminal(&w.target_bytes())
                )?;
                for h in &w.holders {
                    writeln!(self.out, "    {}", format::holder_line(h))?;
                }
            }
            WarningLine::RecordingFailing(w) => writeln!(
                self.out,
                "warning: {}",
                escape_for_terminal(w.message.as_bytes())
            )?,
            WarningLine::RecordingLinesLost(w) => writeln!(
                self.out,
                "warning: {}",
                escape_for_terminal(w.message.as_bytes())
            )?,
            WarningLine::Other => return Ok(()),
        }
        self.out.flush()
    }

    /// Says new losses on stderr, and the totals on the last counters.
    fn counters(&mut self, stats: &Stats, last: bool) {
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
    }
}

impl<W: io::Write> Sink for TextLines<W> {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        writeln!(self.out, "{}", format_attempt(attempt))?;
        self.out.flush()
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.warning_line(&WarningLine::new(warning))
    }

    fn stats(&mut self, _ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.counters(stats, last);
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
    fn says_why_a_failure_other_than_ebusy_failed() {
        let mut a = attempt(b"/run/m", Some(b"/run/m"), -22, 0);
        a.explanation = Some(crate::model::Explanation {
            code: crate::model::ExplanationCode::UnmountAllLoopEnd,
            sentence: "end of an unmount-all loop: containerd[1234]\x1b unmounted /run/m".into(),
            related_event: Some(41),
        });
        let line = format_attempt(&a);
        assert!(
            line.ends_with(
                "\n    why: end of an unmount-all loop: containerd[1234]\\u{1b} unmounted /run/m"
            ),
            "{line}"
        );
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
