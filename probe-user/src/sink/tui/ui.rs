//! Drawing, and nothing else: pure functions of the [`App`] onto a frame.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Sparkline, Wrap},
    Frame,
};

use super::{
    app::{App, Mode, View},
    incidents::State,
};
use crate::{
    paths::escape_for_terminal,
    sink::{
        format,
        incidents::{ts_ns, Incident},
        json::wire::{AccessorWire, HolderWire, UmountLine},
    },
};

/// Terminal-safe text.
fn text(s: &str) -> String {
    escape_for_terminal(s.as_bytes())
}

/// A number, or `-` when the line has none.
fn or_dash(n: Option<impl ToString>) -> String {
    n.map_or("-".into(), |n| n.to_string())
}

/// The whole screen: the header, the view (incidents, one incident, or the attempts and
/// their detail pane), the status bar, overlays.
pub fn draw(frame: &mut Frame, app: &App) {
    // A terminal too small for the header and a few rows leaves the header out.
    let header_height = if frame.area().height >= 12 { 3 } else { 0 };
    let [header, body, status] = Layout::vertical([
        Constraint::Length(header_height),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, app, header);
    match app.view {
        View::Incidents => draw_incidents(frame, app, body),
        View::Incident(_) => draw_incident(frame, app, body),
        View::Attempts if app.detail => {
            let [list, detail] =
                Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(body);
            draw_list(frame, app, list);
            draw_detail(frame, app, detail);
        }
        View::Attempts => draw_list(frame, app, body),
    }
    frame.render_widget(
        Paragraph::new(status_line(app)).style(Style::new().add_modifier(Modifier::REVERSED)),
        status,
    );
    if app.mode == Mode::Help {
        draw_help(frame);
    }
}

/// The header's first line: where the events come from.
pub fn source_line(app: &App) -> String {
    match &app.header {
        Some(header) => format!(" {} ({header})", app.source),
        None => format!(" {}", app.source),
    }
}

/// The header's second line: is it getting worse (incidents failing, mounts left mounted
/// after failing, events lost).
pub fn trend_line(app: &App) -> String {
    let (failing, gave_up) = app.incidents.counts();
    format!(
        " {} incidents: {failing} failing, {gave_up} gave up (still mounted) | {}",
        app.incidents.len(),
        losses(app)
    )
}

/// The header: source, trend, and failures per second over the last minutes.
fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let [source, trend, graph] = Layout::vertical([Constraint::Length(1); 3]).areas(area);
    frame.render_widget(Paragraph::new(source_line(app)), source);
    frame.render_widget(Paragraph::new(trend_line(app)), trend);
    let rate = &app.incidents.rate;
    let label = format!(" failures/s {:>4} (peak {}) ", rate.now(), rate.peak());
    let [label_area, spark] =
        Layout::horizontal([Constraint::Length(label.len() as u16), Constraint::Min(0)])
            .areas(graph);
    frame.render_widget(Paragraph::new(label), label_area);
    let data = rate.last(usize::from(spark.width));
    frame.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::new().fg(Color::Red)),
        spark,
    );
}

/// `HH:MM:SS` of a time in ns since the epoch.
fn clock(ns: u64) -> String {
    let s = ns / 1_000_000_000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A held path, shortened to `…/rest` when it lies under the incident's target.
fn held_path(h: &HolderWire, inc: &Incident) -> Option<String> {
    let path = format::holder_path(h)?;
    let target = escape_for_terminal(&inc.target_bytes());
    Some(match path.strip_prefix(target.trim_end_matches('/')) {
        Some(rest) if rest.starts_with('/') => format!("…{rest}"),
        _ => path,
    })
}

/// A holder in a few words: kind, process (its pod when known), the file.
fn holder_summary(h: &HolderWire, inc: &Incident) -> String {
    let mut parts = vec![format::holder_kind(h)];
    parts.extend(format::holder_process(h));
    if let Some(k) = &h.k8s {
        parts.push(format!("pod {}", text(&k.pod_ref())));
    }
    parts.extend(held_path(h, inc));
    parts.join(" ")
}

/// One incident row, two lines: state, failures, first and last failure, target; then the
/// main holder (kind, process, its pod when known, the file) and how many more, or for a
/// failure without holders its errno and why.
pub fn incident_row(inc: &Incident, state: State) -> [String; 2] {
    let first = format!(
        "{:<9} {:>5} {}-{} {}",
        state.as_str(),
        inc.failures,
        clock(inc.first_ns),
        clock(inc.last_failure_ns),
        escape_for_terminal(&inc.target_bytes())
    );
    let second = match inc.main_holder() {
        Some((h, _)) => {
            let mut line = format!("  held by {}", holder_summary(h, inc));
            if inc.holders.len() > 1 {
                line.push_str(&format!(" +{} more", inc.holders.len() - 1));
            }
            line
        }
        None => {
            let why = inc.first.explanation.as_ref().map(format::explanation);
            format!("  {} {}", text(inc.first.result()), why.unwrap_or_default())
        }
    };
    [first, second]
}

fn draw_incidents(frame: &mut Frame, app: &App, area: Rect) {
    let rows = app.visible_incidents();
    let selected = app.incident_row(&rows);
    // Two lines a row.
    let height = usize::from(area.height.saturating_sub(2) / 2).max(1);
    let first = selected.saturating_sub(height - 1);
    if app.incidents.is_empty() {
        let none = Paragraph::new(" no unmount has failed yet (a: every attempt)").block(
            Block::default()
                .borders(Borders::ALL)
                .title(" incidents (0) "),
        );
        frame.render_widget(none, area);
        return;
    }
    let items: Vec<ListItem> = rows
        .iter()
        .skip(first)
        .take(height)
        .map(|(_, inc)| {
            let state = app.incidents.state(inc);
            let style = match state {
                State::Failing => Style::new().fg(Color::Red),
                State::GaveUp => Style::new().fg(Color::Yellow),
                State::Unmounted => Style::new(),
            };
            ListItem::new(incident_row(inc, state).map(Line::from).to_vec()).style(style)
        })
        .collect();
    let title = format!(" incidents ({}, by {}) ", rows.len(), app.sort.as_str());
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title(title))
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state =
        ListState::default().with_selected((!rows.is_empty()).then_some(selected - first));
    frame.render_stateful_widget(list, area, &mut state);
}

/// The lines of one incident: where it stands, its first failure, the mount, its holders
/// with how many attempts named each, the retry timeline.
pub fn incident_lines(inc: &Incident, state: State, now_ns: u64) -> Vec<String> {
    let f = &inc.first;
    let mut lines = vec![format!(
        "{}: {} failed attempt(s), the first at {}, the last {} later",
        state.as_str(),
        inc.failures,
        text(&f.ts),
        format::duration(inc.last_failure_ns.saturating_sub(inc.first_ns))
    )];
    lines.push(match inc.resolved_by {
        Some(id) => format!(
            "attempt {id} worked, {} after the first failure",
            format::duration(inc.last_attempt_ns.saturating_sub(inc.first_ns))
        ),
        None => format!(
            "no attempt worked: still mounted (the last attempt {} ago)",
            format::duration(now_ns.saturating_sub(inc.last_attempt_ns))
        ),
    });
    let mut caller = format!(
        "first failure: attempt {} by {}: {}",
        f.id,
        format::process(&f.comm_bytes(), f.pid),
        text(f.result())
    );
    if let Some(w) = format::workload(f.container.as_ref(), f.k8s.as_ref(), " ") {
        caller.push_str(&format!("  ({w})"));
    }
    lines.push(caller);
    lines.extend(f.explanation.as_ref().map(format::explanation));
    if let Some(m) = &inc.mount {
        lines.push(mount_line(m));
    }
    if inc.holders.is_empty() {
        lines.push("no holders recorded (a failure other than EBUSY, or holders off)".into());
    } else {
        lines.push("holders (attempts that named each):".into());
    }
    for (h, n) in &inc.holders {
        let mut line = format!("{n:>5}  {:<10}", format::holder_kind(h));
        for part in format::holder_process(h)
            .into_iter()
            .chain(format::holder_path(h))
            .chain(format::workload(h.container.as_ref(), h.k8s.as_ref(), " "))
            .chain(format::holder_timing(h))
        {
            line.push_str("  ");
            line.push_str(&part);
        }
        lines.push(line);
    }
    lines.push(format!("retry timeline: {}", timeline(inc)));
    lines
}

/// The attempts of an incident, each with its time since the first failure: the first 3
/// and the last 4 when there are more than 8 (and how many are left out between); only the
/// first 3 when the incident kept no more of its timeline.
fn timeline(inc: &Incident) -> String {
    let step = |(id, ts, result): &(u64, String, String)| {
        let after = ts_ns(ts).saturating_sub(inc.first_ns);
        format!("#{id} {} +{}", text(result), format::duration(after))
    };
    let all = &inc.timeline;
    if all.len() <= 8 && inc.more_attempts == 0 {
        return all.iter().map(step).collect::<Vec<_>>().join(", ");
    }
    let head = all.iter().take(3).map(step);
    let left_out = all.len().saturating_sub(3) as u64 + inc.more_attempts;
    let steps: Vec<String> = if inc.more_attempts > 0 {
        head.chain([format!("… {left_out} more")]).collect()
    } else {
        head.chain([format!("… {} more …", left_out - 4)])
            .chain(all[all.len() - 4..].iter().map(step))
            .collect()
    };
    steps.join(", ")
}

fn draw_incident(frame: &mut Frame, app: &App, area: Rect) {
    let (title, lines) = match app.current_incident() {
        Some((_, inc)) => (
            format!(" incident: {} ", escape_for_terminal(&inc.target_bytes())),
            incident_lines(inc, app.incidents.state(inc), app.incidents.now_ns()),
        ),
        None => (" incident ".into(), vec!["no longer kept (--keep)".into()]),
    };
    let body: Vec<Line> = lines.into_iter().map(Line::from).collect();
    frame.render_widget(
        Paragraph::new(body)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

/// `mount ID FSTYPE from SOURCE (PROPAGATION)`.
fn mount_line(m: &crate::sink::json::wire::MountWire) -> String {
    format!(
        "mount {} {} from {} ({})",
        m.id,
        text(&m.fstype),
        escape_for_terminal(&m.source_bytes()),
        text(&m.propagation)
    )
}

/// One row: time, result, caller, target, holders.
pub fn row(e: &UmountLine) -> String {
    let ts = text(e.ts.get(11..23).unwrap_or(""));
    let holders = e
        .holders
        .as_ref()
        .map_or(String::new(), |h| format!("  {} holder(s)", h.len()));
    format!(
        "{ts} {:<6} {} {}{holders}",
        text(e.result()),
        format::process(&e.comm_bytes(), e.pid),
        escape_for_terminal(&e.target_bytes())
    )
}

fn draw_list(frame: &mut Frame, app: &App, area: Rect) {
    let visible = app.visible();
    // Only the rows that fit are formatted (the history may hold thousands): a window that
    // keeps the selection in view.
    let rows = usize::from(area.height.saturating_sub(2)).max(1);
    let first = app.selected.saturating_sub(rows - 1);
    let items: Vec<ListItem> = visible
        .iter()
        .skip(first)
        .take(rows)
        .map(|e| {
            let style = if e.failed() {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            ListItem::new(row(e)).style(style)
        })
        .collect();
    let title = format!(" unmounts ({}) ", visible.len());
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title(title))
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state =
        ListState::default().with_selected((!visible.is_empty()).then_some(app.selected - first));
    frame.render_stateful_widget(list, area, &mut state);
}

/// The detail of one event: the call, the mount, each holder.
pub fn detail_lines(e: &UmountLine) -> Vec<String> {
    let mut caller = format!(
        "caller {} uid {} mntns {}",
        format::process(&e.comm_bytes(), e.pid),
        e.uid,
        e.mntns
    );
    if let Some(w) = format::workload(e.container.as_ref(), e.k8s.as_ref(), " ") {
        caller.push_str(&format!("  {w}"));
    }
    let mut lines = vec![
        format!("attempt {} at {}", e.id, text(&e.ts)),
        caller,
        format!(
            "target {}  result {} ({})",
            escape_for_terminal(&e.target_bytes()),
            text(e.result()),
            e.ret
        ),
    ];
    lines.extend(e.explanation.as_ref().map(format::explanation));
    if let Some(m) = &e.mount {
        lines.push(mount_line(m));
    }
    for h in e.holders() {
        let mut line = format!("  {:<10}", text(&h.kind));
        for part in format::holder_process(h)
            .into_iter()
            .chain(format::holder_path(h))
        {
            line.push(' ');
            line.push_str(&part);
        }
        for t in format::holder_timing(h) {
            line.push_str(&format!("  {t}"));
        }
        lines.push(line);
        lines.push(holder_context(h));
    }
    context_lines(
        &mut lines,
        "recently (let go before the call; context, not holders):",
        e.accessors.iter().flatten(),
    );
    context_lines(
        &mut lines,
        "the caller itself, before the call (umount(8) opens its target to check it):",
        &e.caller_accesses,
    );
    lines
}

/// `heading`, then one line per recent open in `opens` (nothing when there is none).
fn context_lines<'a>(
    lines: &mut Vec<String>,
    heading: &str,
    opens: impl IntoIterator<Item = &'a AccessorWire>,
) {
    for (i, a) in opens.into_iter().enumerate() {
        if i == 0 {
            lines.push(heading.into());
        }
        lines.push(format!(
            "  {} fd {}  {}",
            format::process(&a.comm_bytes(), a.pid),
            a.fd,
            format::opened_before(a.opened_ns_before)
        ));
    }
}

/// A holder's second line: its namespace, container, how it was seen, and any note.
fn holder_context(h: &HolderWire) -> String {
    let mut line = format!(
        "{:13}mntns {}  seen {}",
        "",
        or_dash(h.mntns),
        text(&h.seen)
    );
    if let Some(via) = &h.via {
        line.push_str(&format!(" via {}", text(via)));
    }
    if let Some(w) = format::workload(h.container.as_ref(), h.k8s.as_ref(), " ") {
        line.push_str(&format!("  {w}"));
    }
    if let Some(note) = format::holder_note(h) {
        line.push_str(&format!("  ({note})"));
    }
    line
}

fn draw_detail(frame: &mut Frame, app: &App, area: Rect) {
    let lines = app
        .current()
        .map(detail_lines)
        .unwrap_or_else(|| vec!["no event selected".into()]);
    let body: Vec<Line> = lines.into_iter().map(Line::from).collect();
    frame.render_widget(
        Paragraph::new(body)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" detail ")),
        area,
    );
}

/// Events lost, then every drop counter that is not zero and the lines this screen did not
/// get (never hidden).
fn losses(app: &App) -> String {
    let mut causes: Vec<String> = probe_common::DropCause::ALL
        .iter()
        .zip(app.stats.drops)
        .filter(|(_, n)| *n > 0)
        .map(|(cause, n)| format!("{} {n}", cause.as_str()))
        .collect();
    if app.lines_lost > 0 {
        causes.push(format!("lines not read in time {}", app.lines_lost));
    }
    let lost = app.stats.events_lost();
    if causes.is_empty() {
        format!("lost {lost}")
    } else {
        format!("lost {lost} | {}", causes.join(", "))
    }
}

/// The status bar: the view's counts, filters, what the last action did, keys.
pub fn status_line(app: &App) -> String {
    let mut s = match app.view {
        View::Attempts => {
            let (events, failures) = app.counts();
            format!(" attempts: {events} events, {failures} failed")
        }
        View::Incidents | View::Incident(_) => format!(
            " {} attempts in {} incidents | sort: {}",
            app.counts().0,
            app.incidents.len(),
            app.sort.as_str()
        ),
    };
    if app.only_failures {
        s.push_str(match app.view {
            View::Attempts => " | failures only",
            View::Incidents | View::Incident(_) => " | unresolved only",
        });
    }
    if !app.filter.is_empty() || app.mode == Mode::Filter {
        s.push_str(&format!(
            " | filter: {}",
            escape_for_terminal(app.filter.as_bytes())
        ));
    }
    if app.paused {
        s.push_str(" | PAUSED");
    }
    if let Some(message) = &app.message {
        s.push_str(&format!(" | {}", text(message)));
    }
    s.push_str(" | ? help  q quit");
    s
}

/// What the keys do.
pub const HELP: [&str; 17] = [
    "j / down     next row",
    "k / up       previous row",
    "Enter        open an incident (back: Enter or Esc);",
    "             attempts: open or close the details",
    "a / Tab      attempts (every unmount), or incidents",
    "s            sort incidents: last failure, failures,",
    "             target",
    "y            copy the incident's `who` command (OSC 52)",
    "Y            copy the incident's JSON (OSC 52)",
    "r            write the incident's Markdown report to",
    "             ./busyprobe-incident-ID.md",
    "/            filter by command or path (Enter to keep)",
    "f            failures only (attempts); unresolved",
    "             only (incidents: failing, gave up)",
    "p            pause or resume",
    "?            this help",
    "q / Esc      quit (Ctrl-C too)",
];

fn draw_help(frame: &mut Frame) {
    let area = frame.area();
    let help = Rect {
        x: area.width.saturating_sub(58) / 2,
        y: 1.min(area.height),
        width: area.width.min(58),
        height: (HELP.len() as u16 + 2).min(area.height.saturating_sub(1)),
    };
    frame.render_widget(Clear, help);
    let lines: Vec<Line> = HELP.iter().map(|l| Line::from(*l)).collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        help,
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sink::incidents::tests::attempt_at;
    use crate::sink::json::wire::Line;
    use crate::sink::tui::app::tests::{attempt, line, umount_line, HEADER};
    use ratatui::{backend::TestBackend, Terminal};

    fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn attempts_screen_at_80x24() {
        let mut app = App::new(100, "live, tracepoint mode".into());
        app.view = View::Attempts;
        app.push(attempt(1, "umount", "/mnt/ok", None));
        app.push(attempt(
            2,
            "containerd",
            "/var/lib/containerd/tmpmounts/m1",
            Some("EBUSY"),
        ));
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("attempts_80x24", lines.join("\n"));
        assert_eq!(lines[0], " live, tracepoint mode");
        assert_eq!(lines[3], format!("┌ unmounts (2) {}┐", "─".repeat(64)));
        assert_eq!(
            lines[4],
            "│10:01:02.123 EBUSY  containerd[102] /var/lib/containerd/tmpmounts/m1          │"
        );
        assert_eq!(
            lines[5],
            "│10:01:02.123 ok     umount[101] /mnt/ok                                       │"
        );
        assert_eq!(lines[23], " attempts: 2 events, 1 failed | ? help  q quit");
    }

    #[test]
    fn detail_pane_lists_the_holders() {
        let mut app = App::new(100, "replay".into());
        app.view = View::Attempts;
        let mut e = umount_line(7, "containerd", "/var/lib/m", Some("EBUSY"));
        e.holders = Some(vec![serde_json::from_str(
            r#"{"pid":999,"comm":"scanner","kind":"transient","path":"/var/lib/m/etc/passwd","fd":null,
                "mntns":4026532001,"container":{"runtime":"containerd","id":"0123456789abcdef0123","pod_uid":null},
                "seen":"traced","mount_id":812,"via":null,"blamed":true,"note":null,
                "opened_ns_before":1800000,"closed_ns_after":400000}"#,
        )
        .unwrap()]);
        e.accessors = Some(vec![serde_json::from_str(
            r#"{"pid":998,"comm":"cat","fd":3,"mount_id":812,"opened_ns_before":40000000}"#,
        )
        .unwrap()]);
        app.push(Line::Umount(Box::new(e)));
        app.toggle_detail();
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("detail_80x24", lines.join("\n"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("  cat[998] fd 3  opened 40.0ms before the call")),
            "the recent accessor: {lines:#?}"
        );
        assert_eq!(
            lines[4],
            "│10:01:02.123 EBUSY  containerd[107] /var/lib/m  1 holder(s)                   │"
        );
        let holder = lines
            .iter()
            .position(|l| l.contains("transient  scanner[999]"))
            .expect("the holder's line");
        assert_eq!(
            lines[holder],
            "│  transient  scanner[999] /var/lib/m/etc/passwd  opened 1.8ms before the call │"
        );
        assert_eq!(
            lines[holder + 1],
            format!("│closed 400.0µs after it{}│", " ".repeat(55)),
            "long lines wrap"
        );
        assert_eq!(
            lines[holder + 2],
            format!(
                "│{:13}mntns 4026532001  seen traced  container containerd 0123456789ab{}│",
                "", " "
            )
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("attempt 7 at 2026-11-23T10:01:02.123456789Z")),
            "{lines:#?}"
        );
    }

    /// The caller's own recent opens are listed apart from other processes', under a heading
    /// that says whose they are.
    #[test]
    fn detail_pane_tells_the_callers_own_opens_apart() {
        let mut app = App::new(100, "replay".into());
        app.view = View::Attempts;
        let mut e = umount_line(9, "umount", "/var/lib/m", Some("EBUSY"));
        let open = |pid: u32, comm: &str, fd: u32, ns: u64| {
            serde_json::from_str::<AccessorWire>(&format!(
                r#"{{"pid":{pid},"comm":"{comm}","fd":{fd},"mount_id":812,"opened_ns_before":{ns}}}"#
            ))
            .unwrap()
        };
        e.accessors = Some(vec![open(998, "cat", 3, 40_000_000)]);
        e.caller_accesses = vec![open(109, "umount", 3, 1_200_000)];
        app.push(Line::Umount(Box::new(e)));
        app.toggle_detail();
        let lines = screen(&app, 100, 24);
        let text: Vec<&str> = lines.iter().map(|l| l.trim_matches(['│', ' '])).collect();
        let heading = text
            .iter()
            .position(|l| l.starts_with("the caller itself, before the call"))
            .unwrap_or_else(|| panic!("the caller's heading: {lines:#?}"));
        assert_eq!(
            text[heading - 2..=heading + 1],
            [
                "recently (let go before the call; context, not holders):",
                "cat[998] fd 3  opened 40.0ms before the call",
                "the caller itself, before the call (umount(8) opens its target to check it):",
                "umount[109] fd 3  opened 1.2ms before the call",
            ]
        );
    }

    /// A holder and a caller in named pods: the detail pane says which pod, not only the
    /// container id.
    #[test]
    fn detail_pane_names_the_pods() {
        let mut app = App::new(100, "replay".into());
        app.view = View::Attempts;
        let mut e = umount_line(8, "containerd", "/var/lib/m", Some("EBUSY"));
        let pod =
            r#""k8s":{"pod":"scanner-x7","namespace":"security","uid":"u","container":"scan"}"#;
        e.holders = Some(vec![serde_json::from_str(&format!(
            r#"{{"pid":999,"comm":"scanner","kind":"fd","path":"/var/lib/m/f","fd":3,
                "mntns":4026532001,"container":{{"runtime":"containerd","id":"0123456789abcdef0123","pod_uid":"u"}},
                {pod},"seen":"kernel-scan","mount_id":812,"via":null,"blamed":true,"note":null,
                "opened_ns_before":null,"closed_ns_after":null}}"#
        ))
        .unwrap()]);
        e.k8s = serde_json::from_str(
            r#"{"pod":"teardown-1","namespace":"jobs","uid":"v","container":null}"#,
        )
        .unwrap();
        app.push(Line::Umount(Box::new(e)));
        app.toggle_detail();
        let lines = screen(&app, 100, 24).join("\n");
        assert!(
            lines.contains("caller containerd[108] uid 0 mntns 4026531840  pod jobs/teardown-1 container (sandbox)"),
            "{lines}"
        );
        assert!(
            lines.contains("seen kernel-scan  pod security/scanner-x7 container scan"),
            "{lines}"
        );
        assert!(!lines.contains("0123456789ab"), "{lines}");
    }

    /// A failure other than EBUSY: the detail pane says why, under the call.
    #[test]
    fn detail_pane_says_why_a_failure_failed() {
        let mut app = App::new(100, "replay".into());
        app.view = View::Attempts;
        let mut e = umount_line(9, "kata-agent", "/run/kata/m", Some("EINVAL"));
        e.explanation = serde_json::from_str(
            r#"{"code":"unmounted_earlier","sentence":"nothing is mounted at /run/kata/m any more: containerd[77] unmounted it 1.20s earlier (event 8)","related_event":8}"#,
        )
        .unwrap();
        app.push(Line::Umount(Box::new(e)));
        app.toggle_detail();
        let lines = screen(&app, 100, 24).join("\n");
        assert!(
            lines.contains("why: nothing is mounted at /run/kata/m any more: containerd[77]"),
            "{lines}"
        );
    }

    #[test]
    fn filter_and_help_show_in_place() {
        let mut app = App::new(100, "live".into());
        app.view = View::Attempts;
        app.push(attempt(1, "umount", "/a", None));
        app.start_filter();
        app.type_filter('x');
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("filter_80x24", lines.join("\n"));
        assert_eq!(lines[3], format!("┌ unmounts (0) {}┐", "─".repeat(64)));
        assert!(lines[23].contains("| filter: x |"), "{}", lines[23]);
        app.end_filter();
        app.toggle_help();
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("help_80x24", lines.join("\n"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("f            failures only (attempts); unresolved")),
            "{lines:#?}"
        );
    }

    #[test]
    fn the_header_names_every_loss_and_the_recording() {
        let mut app = App::new(100, "replay of r.jsonl".into());
        app.view = View::Attempts;
        app.push(line(HEADER));
        app.push(line(
            r#"{"v":1,"type":"stats","ts":"2026-11-23T10:01:03.000000000Z","events":9,"drops":{"ringbuf_full":2,"path_truncated":1},"decode_errors":0,"final":true}"#,
        ));
        assert_eq!(
            source_line(&app),
            " replay of r.jsonl (host node-7, kernel 6.8.0, tracepoint mode)"
        );
        assert_eq!(
            trend_line(&app),
            " 0 incidents: 0 failing, 0 gave up (still mounted) | lost 2 | ringbuf_full 2, \
             path_truncated 1"
        );
        app.push(line(
            r#"{"v":1,"type":"lost","ts":"2026-11-23T10:01:04.000000000Z","lines":5,"cause":"slow_client","message":"5 lines lost here"}"#,
        ));
        assert!(
            trend_line(&app)
                .ends_with("| lost 2 | ringbuf_full 2, path_truncated 1, lines not read in time 5"),
            "{}",
            trend_line(&app)
        );
    }

    #[test]
    fn a_long_history_shows_the_window_around_the_selection() {
        let mut app = App::new(1000, "live".into());
        app.view = View::Attempts;
        for id in 0..300 {
            app.push(attempt(id, "umount", &format!("/mnt/{id}"), None));
        }
        for _ in 0..250 {
            app.next();
        }
        let lines = screen(&app, 80, 24);
        // Newest first: the 251st row is attempt 49, on the window's last row.
        assert!(lines[21].contains("umount[149] /mnt/49"), "{lines:#?}");
        assert!(lines[4].contains("umount[166] /mnt/66"), "{lines:#?}");
        assert_eq!(lines[3], format!("┌ unmounts (300) {}┐", "─".repeat(62)));
    }

    /// Three incidents: a pod volume whose unmount was given up (held by postgres), an image
    /// layer that containerd retried 50 times while a scanner pod held it (then it worked),
    /// and a mount failing now.
    pub(crate) fn incidents_app() -> App {
        let mut app = App::new(100, "replay of incident.jsonl".into());
        app.push(line(HEADER));
        let mut push = |a: UmountLine| app.push(Line::Umount(Box::new(a)));
        let volume = "/var/lib/kubelet/pods/u/volumes/v";
        for i in 0..3 {
            push(attempt_at(
                1 + i,
                volume,
                i * 1000,
                true,
                &[("postgres", 40)],
            ));
        }
        let layer = "/var/lib/containerd/tmpmounts/m1";
        for i in 0..50 {
            let holders: &[(&str, u32)] = if i == 49 {
                &[("scanner", 999), ("cat", 998)]
            } else {
                &[("scanner", 999)]
            };
            let mut a = attempt_at(10 + i, layer, 40_000 + i * 50, true, holders);
            for h in a.holders.iter_mut().flatten() {
                if h.pid == Some(999) {
                    h.k8s = serde_json::from_str(
                        r#"{"pod":"scanner-x7","namespace":"security","uid":"u","container":"scan"}"#,
                    )
                    .unwrap();
                }
            }
            push(a);
        }
        push(attempt_at(60, layer, 42_600, false, &[]));
        push(attempt_at(61, "/mnt/data", 44_000, true, &[("bash", 77)]));
        push(attempt_at(62, "/mnt/data", 45_000, true, &[("bash", 77)]));
        app
    }

    #[test]
    fn incidents_screen_at_80x24() {
        let app = incidents_app();
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("incidents_80x24", lines.join("\n"));
        assert_eq!(
            lines[1],
            " 3 incidents: 1 failing, 1 gave up (still mounted) | lost 0"
        );
        assert!(
            lines[2].starts_with(" failures/s    1 (peak 20) "),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[3],
            format!("┌ incidents (3, by last failure) {}┐", "─".repeat(46))
        );
        let rows: Vec<&str> = lines[4..10]
            .iter()
            .map(|l| l.trim_matches(['│', ' ']))
            .collect();
        assert_eq!(
            rows,
            [
                "failing       2 11:07:24-11:07:25 /mnt/data",
                "held by fd bash[77] …/f",
                "unmounted    50 11:07:20-11:07:22 /var/lib/containerd/tmpmounts/m1",
                "held by fd scanner[999] pod security/scanner-x7 …/f +1 more",
                "gave up       3 11:06:40-11:06:42 /var/lib/kubelet/pods/u/volumes/v",
                "held by fd postgres[40] …/f",
            ]
        );
        assert_eq!(
            lines[23],
            " 56 attempts in 3 incidents | sort: last failure | ? help  q quit"
        );
    }

    #[test]
    fn incident_screen_at_80x24() {
        let mut app = incidents_app();
        app.cycle_sort();
        app.previous();
        app.previous();
        app.open_incident();
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("incident_80x24", lines.join("\n"));
        let (_, inc) = app.current_incident().unwrap();
        let text = incident_lines(inc, State::Unmounted, 0);
        assert_eq!(text[1], "attempt 60 worked, 2.60s after the first failure");
        assert_eq!(
            text[5],
            "   50  fd          scanner[999]  /var/lib/containerd/tmpmounts/m1/f  pod \
             security/scanner-x7 container scan"
        );
        assert_eq!(
            text[7],
            "retry timeline: #10 EBUSY +0ns, #11 EBUSY +50.0ms, #12 EBUSY +100.0ms, … 44 more …, \
             #57 EBUSY +2.35s, #58 EBUSY +2.40s, #59 EBUSY +2.45s, #60 ok +2.60s"
        );
    }

    #[test]
    fn a_narrow_terminal_shows_the_incidents() {
        let app = incidents_app();
        let lines = screen(&app, 60, 20);
        insta::assert_snapshot!("incidents_60x20", lines.join("\n"));
        assert!(lines[5].contains("held by fd bash[77] …/f"), "{lines:#?}");
    }

    #[test]
    fn help_over_the_incidents() {
        let mut app = incidents_app();
        app.toggle_help();
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("help_incidents_80x24", lines.join("\n"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("y            copy the incident's `who` command (OSC 52)")),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_small_terminal_still_draws() {
        let mut app = App::new(100, "live".into());
        app.view = View::Attempts;
        app.push(attempt(
            1,
            "umount",
            "/a/very/long/path/that/does/not/fit/in/a/small/terminal",
            None,
        ));
        app.toggle_detail();
        let lines = screen(&app, 20, 5);
        insta::assert_snapshot!("small_20x5", lines.join("\n"));
    }

    #[test]
    fn control_characters_in_paths_never_reach_the_terminal() {
        let e = umount_line(1, "evil", "/mnt/\u{1b}]0;pwned\u{7}", Some("EBUSY"));
        assert!(!row(&e).chars().any(|c| c.is_control()), "{}", row(&e));
    }
}
