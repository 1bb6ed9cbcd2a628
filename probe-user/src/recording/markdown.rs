//! The report as GitHub-flavoured Markdown: paths and names escaped so that nothing in a
//! recording can break the layout; long lists folded into `<details>`.

use std::fmt::Write as _;

use serde_json::Value;

use super::report::{Incident, Summary};
use crate::paths::escape_for_terminal;

/// Text safe in Markdown prose and table cells (never at a line start): control characters
/// escaped, the characters that format inline (`` ` * _ [ ] < > # ~ \ ``) backslashed, `|`
/// escaped for tables.
pub fn md(s: &str) -> String {
    let visible = escape_for_terminal(s.as_bytes());
    let mut out = String::with_capacity(visible.len());
    for c in visible.chars() {
        if "\\`*_[]<>#|~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn field(v: &Value) -> String {
    match v {
        Value::String(s) => md(s),
        Value::Null => "-".into(),
        other => md(&other.to_string()),
    }
}

/// The report's top: where it was recorded and the counts.
pub fn summary(s: &Summary, files: usize) -> String {
    let mut out = String::from("# busyprobe report\n\n");
    if let Some(h) = &s.header {
        let _ = writeln!(
            out,
            "Host {}, kernel {}, probe mode {}, busyprobe {}; recording started {}.",
            field(&h["host"]),
            field(&h["kernel"]),
            field(&h["probe_mode"]),
            field(&h["busyprobe"]),
            field(&h["started"])
        );
    } else {
        out.push_str(
            "The recording has no header line (it was cut or is not from `busyprobe record`).\n",
        );
    }
    let failures: u64 = s.failures_by_errno.values().sum();
    let by_errno: Vec<String> = s
        .failures_by_errno
        .iter()
        .map(|(e, n)| format!("{} {n}", md(e)))
        .collect();
    let _ = writeln!(
        out,
        "\n## Summary\n\n- {} unmount attempts in {files} file(s), from {} to {}\n- {failures} failed: {}",
        s.attempts,
        s.first_ts.as_deref().map_or("-".into(), md),
        s.last_ts.as_deref().map_or("-".into(), md),
        if by_errno.is_empty() { "none".into() } else { by_errno.join(", ") }
    );
    table(
        &mut out,
        "Mounts that failed most",
        "target",
        &Summary::top(&s.failures_by_target, 10),
    );
    table(
        &mut out,
        "Holders seen most",
        "comm",
        &Summary::top(&s.holders_by_comm, 10),
    );
    out
}

fn table(out: &mut String, title: &str, what: &str, rows: &[(String, u64)]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n### {title}\n\n| {what} | times |\n| --- | --- |");
    for (k, n) in rows {
        let _ = writeln!(out, "| {} | {n} |", md(k));
    }
}

/// One incident: the first failure, the mount, the holders, the timeline.
pub fn incident(number: usize, inc: &Incident) -> String {
    let f = &inc.first;
    let failed =
        inc.timeline.iter().filter(|(_, _, r)| r != "ok").count() as u64 + inc.more_attempts;
    let outcome = match inc.resolved_by {
        Some(id) => format!("then attempt {id} worked"),
        None => "never worked in this recording".into(),
    };
    let mut out = format!(
        "\n## {number}. {}: {failed} failed attempt(s), {outcome}\n\n",
        md(&inc.target)
    );
    let _ = writeln!(
        out,
        "First failure: attempt {} at {} by {}\\[{}\\] (uid {}, mount namespace {}): {} (`ret` {}, flags {}).",
        field(&f["id"]),
        field(&f["ts"]),
        field(&f["comm"]),
        field(&f["pid"]),
        field(&f["uid"]),
        field(&f["mntns"]),
        field(&f["errno"]),
        field(&f["ret"]),
        field(&f["flag_names"])
    );
    let m = &f["mount"];
    if m.is_object() {
        let _ = writeln!(
            out,
            "\nMount {}: {} from {} at {} ({}).",
            field(&m["id"]),
            field(&m["fstype"]),
            field(&m["source"]),
            field(&m["mount_point"]),
            field(&m["propagation"])
        );
    }
    holders(&mut out, inc);
    timeline(&mut out, inc);
    out
}

fn holders(out: &mut String, inc: &Incident) {
    if inc.holders.is_empty() {
        out.push_str(
            "\nNo holders were recorded (a failure other than EBUSY, or `--no-holders`).\n",
        );
        return;
    }
    out.push_str("\n| kind | process | path | seen | detail | attempts |\n| --- | --- | --- | --- | --- | --- |\n");
    for (h, n) in &inc.holders {
        let process = if h["pid"].is_null() {
            "-".into()
        } else {
            format!("{}\\[{}\\]", field(&h["comm"]), field(&h["pid"]))
        };
        let mut detail = Vec::new();
        if let Some(ns) = h["opened_ns_before"].as_u64() {
            detail.push(format!("opened {} ms before", ns as f64 / 1e6));
        }
        if let Some(ns) = h["closed_ns_after"].as_u64() {
            detail.push(format!("closed {} ms after", ns as f64 / 1e6));
        }
        if let Some(note) = h["note"].as_str() {
            detail.push(md(note));
        }
        let _ = writeln!(
            out,
            "| {} | {process} | {} | {} | {} | {n} |",
            field(&h["kind"]),
            field(&h["path"]),
            field(&h["seen"]),
            if detail.is_empty() {
                "-".into()
            } else {
                detail.join("; ")
            }
        );
    }
}

fn timeline(out: &mut String, inc: &Incident) {
    let folded = inc.timeline.len() > 5;
    if folded {
        let _ = writeln!(
            out,
            "\n<details><summary>Retry timeline ({} attempts)</summary>",
            inc.timeline.len() as u64 + inc.more_attempts
        );
    }
    out.push_str("\n| attempt | time | result |\n| --- | --- | --- |\n");
    for (id, ts, result) in &inc.timeline {
        let _ = writeln!(out, "| {id} | {} | {} |", md(ts), md(result));
    }
    if inc.more_attempts > 0 {
        let _ = writeln!(out, "| … | | {} more |", inc.more_attempts);
    }
    if folded {
        out.push_str("\n</details>\n");
    }
}
