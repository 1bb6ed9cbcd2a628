//! The report as GitHub-flavoured Markdown: paths and names escaped so that nothing in a
//! recording can break the layout; long lists folded into `<details>`.

use std::fmt::Write as _;

use super::report::{Incident, IncidentsByPod, Summary};
use crate::{
    paths::escape_for_terminal,
    sink::{format, json::wire::HolderWire},
};

/// Text safe in Markdown prose and table cells (never at a line start): control characters
/// escaped, the characters that format inline (`` ` * _ [ ] < > # ~ \ ``) backslashed, `|`
/// escaped for tables.
pub fn md(s: &str) -> String {
    md_bytes(s.as_bytes())
}

/// [`md`] of bytes (a path or name, exact).
fn md_bytes(bytes: &[u8]) -> String {
    md_visible(&escape_for_terminal(bytes))
}

/// Text already safe for a terminal (from [`format`](mod@format)) made safe in Markdown: the characters
/// that format inline backslashed.
fn md_visible(visible: &str) -> String {
    let mut out = String::with_capacity(visible.len());
    for c in visible.chars() {
        if "\\`*_[]<>#|~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The report's top: where it was recorded and the counts.
pub fn summary(s: &Summary, files: usize) -> String {
    let mut out = String::from("# busyprobe report\n\n");
    if let Some(h) = &s.header {
        let _ = writeln!(
            out,
            "Host {}, kernel {}, probe mode {}, busyprobe {}; recording started {}.",
            md(&h.host),
            md(&h.kernel),
            md(&h.probe_mode),
            md(&h.busyprobe),
            md(&h.started)
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
    if s.lines_not_recorded > 0 {
        let _ = writeln!(
            out,
            "- **{} lines could not be written to the recording** (a full disk or an I/O error: \
             its `recording-lines-lost` warnings say when): the counts here are short by as many",
            s.lines_not_recorded
        );
    }
    if s.events_lost > 0 {
        let _ = writeln!(
            out,
            "- **the probes lost {} events** (ring buffer or in-flight map full, from the \
             `stats` lines): the counts here are short by as many",
            s.events_lost
        );
    }
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
    table(
        &mut out,
        "Pods whose processes held the mounts",
        "pod",
        &Summary::top(&s.failures_by_holder_pod, 10),
    );
    table(
        &mut out,
        "Pods whose unmounts failed",
        "pod",
        &Summary::top(&s.failures_by_caller_pod, 10),
    );
    out
}

fn table(out: &mut String, title: &str, what: &str, rows: &[(&[u8], u64)]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n### {title}\n\n| {what} | times |\n| --- | --- |");
    for (k, n) in rows {
        let _ = writeln!(out, "| {} | {n} |", md_bytes(k));
    }
}

/// The incidents grouped by pod (none when no pod was named): which incidents each pod's
/// processes held the mount in, and which its own unmounts failed in.
pub fn by_pod(pods: &IncidentsByPod) -> String {
    if pods.pods.is_empty() {
        return String::new();
    }
    let numbers = |n: &[usize]| {
        if n.is_empty() {
            "-".to_owned()
        } else {
            n.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut out = String::from(
        "\n## Incidents by pod\n\n| pod | held the mount in incidents | its unmount failed in incidents |\n| --- | --- | --- |\n",
    );
    for (pod, (held, called)) in &pods.pods {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            md(pod),
            numbers(held),
            numbers(called)
        );
    }
    out
}

/// One incident: the first failure, the mount, the holders, the timeline.
pub fn incident(number: usize, inc: &Incident) -> String {
    let f = &inc.first;
    let failed = inc.failures;
    let outcome = match inc.resolved_by {
        Some(id) => format!("then attempt {id} worked"),
        None => "never worked in this recording".into(),
    };
    let mut out = format!(
        "\n## {number}. {}: {failed} failed attempt(s), {outcome}\n\n",
        md_bytes(&f.target_bytes())
    );
    let caller = format::process(&f.comm_bytes(), f.pid);
    let caller = match format::workload(f.container.as_ref(), f.k8s.as_ref(), " ") {
        Some(w) => format!("{caller} ({w})"),
        None => caller,
    };
    let _ = writeln!(
        out,
        "First failure: attempt {} at {} by {} (uid {}, mount namespace {}): {} (`ret` {}, flags {}).",
        f.id,
        md(&f.ts),
        md_visible(&caller),
        f.uid,
        f.mntns,
        md(f.result()),
        f.ret,
        md(&serde_json::to_string(&f.flag_names).unwrap_or_default())
    );
    if let Some(e) = &f.explanation {
        let _ = writeln!(out, "\n{}", md_visible(&format::explanation(e)));
    }
    if let Some(m) = &f.mount {
        let _ = writeln!(
            out,
            "\nMount {}: {} from {} at {} ({}).",
            m.id,
            md(&m.fstype),
            md_bytes(&m.source_bytes()),
            md_bytes(&m.mount_point_bytes()),
            md(&m.propagation)
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
    out.push_str("\n| kind | process | pod | path | seen | detail | attempts |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for (h, n) in &inc.holders {
        let cell = |text: Option<String>| text.map_or("-".into(), |t| md_visible(&t));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {n} |",
            md(&h.kind),
            cell(format::holder_process(h)),
            cell(format::workload(h.container.as_ref(), h.k8s.as_ref(), " ")),
            cell(format::holder_path(h)),
            md(&h.seen),
            cell(detail(h)),
        );
    }
}

/// When the holder opened and let go of the file, and its note.
fn detail(h: &HolderWire) -> Option<String> {
    let detail: Vec<String> = format::holder_timing(h)
        .into_iter()
        .chain(format::holder_note(h))
        .collect();
    (!detail.is_empty()).then(|| detail.join("; "))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::json::wire::UmountLine;

    /// An incident that began with an explained failure says why, under its first failure.
    #[test]
    fn an_incident_says_why_its_first_failure_failed() {
        let mut a = crate::event::sample_attempt(b"/run/m", Some(b"/run/m"), -22, 0);
        a.explanation = Some(crate::model::Explanation {
            code: crate::model::ExplanationCode::UnmountedEarlier,
            sentence: "nothing is mounted at /run/m any more: containerd[77] unmounted it".into(),
            related_event: Some(41),
        });
        let first = UmountLine::new(&a);
        let inc = Incident::new(&first);
        let text = incident(1, &inc);
        assert!(
            text.contains(
                "\nwhy: nothing is mounted at /run/m any more: containerd\\[77\\] unmounted it\n"
            ),
            "{text}"
        );
    }
}
