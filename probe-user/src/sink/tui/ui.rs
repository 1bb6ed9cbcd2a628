//! Drawing, and nothing else: pure functions of the [`App`] onto a frame.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap},
    Frame,
};

use super::app::{App, Mode};
use crate::{
    paths::escape_for_terminal,
    sink::{
        format,
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

/// The whole screen: the list (and the detail pane), the status bar, overlays.
pub fn draw(frame: &mut Frame, app: &App) {
    let [body, status] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    if app.detail {
        let [list, detail] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body);
        draw_list(frame, app, list);
        draw_detail(frame, app, detail);
    } else {
        draw_list(frame, app, body);
    }
    frame.render_widget(
        Paragraph::new(status_line(app)).style(Style::new().add_modifier(Modifier::REVERSED)),
        status,
    );
    if app.mode == Mode::Help {
        draw_help(frame);
    }
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
        lines.push(format!(
            "mount {} {} from {} ({})",
            m.id,
            text(&m.fstype),
            escape_for_terminal(&m.source_bytes()),
            text(&m.propagation)
        ));
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

/// The status bar: source, counts, losses, filters, keys.
pub fn status_line(app: &App) -> String {
    let (events, failures) = app.counts();
    let mut s = format!(" {}", app.source);
    if let Some(header) = &app.header {
        s.push_str(&format!(" ({header})"));
    }
    s.push_str(&format!(
        " | {events} events, {failures} failed | {}",
        losses(app)
    ));
    if app.only_failures {
        s.push_str(" | failures only");
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
    s.push_str(" | ? help  q quit");
    s
}

/// What the keys do.
pub const HELP: [&str; 8] = [
    "j / down     next event",
    "k / up       previous event",
    "Enter        open or close the details",
    "/            filter by command or path (Enter to keep)",
    "f            failures only, or everything",
    "p            pause or resume",
    "?            this help",
    "q / Esc      quit (Ctrl-C too)",
];

fn draw_help(frame: &mut Frame) {
    let area = frame.area();
    let help = Rect {
        x: area.width.saturating_sub(50) / 2,
        y: 2,
        width: area.width.min(50),
        height: 10.min(area.height),
    };
    frame.render_widget(Clear, help);
    let lines: Vec<Line> = HELP.iter().map(|l| Line::from(*l)).collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        help,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn main_screen_at_80x24() {
        let mut app = App::new(100, "live, tracepoint mode".into());
        app.push(attempt(1, "umount", "/mnt/ok", None));
        app.push(attempt(
            2,
            "containerd",
            "/var/lib/containerd/tmpmounts/m1",
            Some("EBUSY"),
        ));
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("main_80x24", lines.join("\n"));
        assert_eq!(lines[0], format!("┌ unmounts (2) {}┐", "─".repeat(64)));
        assert_eq!(
            lines[1],
            "│10:01:02.123 EBUSY  containerd[102] /var/lib/containerd/tmpmounts/m1          │"
        );
        assert_eq!(
            lines[2],
            "│10:01:02.123 ok     umount[101] /mnt/ok                                       │"
        );
        assert_eq!(
            lines[23],
            " live, tracepoint mode | 2 events, 1 failed | lost 0 | ? help  q quit"
        );
    }

    #[test]
    fn detail_pane_lists_the_holders() {
        let mut app = App::new(100, "replay".into());
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
            lines[1],
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
        app.push(attempt(1, "umount", "/a", None));
        app.start_filter();
        app.type_filter('x');
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("filter_80x24", lines.join("\n"));
        assert_eq!(lines[0], format!("┌ unmounts (0) {}┐", "─".repeat(64)));
        assert!(lines[23].contains("| filter: x |"), "{}", lines[23]);
        app.end_filter();
        app.toggle_help();
        let lines = screen(&app, 80, 24);
        insta::assert_snapshot!("help_80x24", lines.join("\n"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("f            failures only, or everything")),
            "{lines:#?}"
        );
    }

    #[test]
    fn the_status_bar_names_every_loss_and_the_recording() {
        let mut app = App::new(100, "replay of r.jsonl".into());
        app.push(line(HEADER));
        app.push(line(
            r#"{"v":1,"type":"stats","ts":"2026-11-23T10:01:03.000000000Z","events":9,"drops":{"ringbuf_full":2,"path_truncated":1},"decode_errors":0,"final":true}"#,
        ));
        assert_eq!(
            status_line(&app),
            " replay of r.jsonl (host node-7, kernel 6.8.0, tracepoint mode) | 0 events, 0 failed \
             | lost 2 | ringbuf_full 2, path_truncated 1 | ? help  q quit"
        );
        app.push(line(
            r#"{"v":1,"type":"lost","ts":"2026-11-23T10:01:04.000000000Z","lines":5,"cause":"slow_client","message":"5 lines lost here"}"#,
        ));
        assert!(
            status_line(&app).contains(
                "| lost 2 | ringbuf_full 2, path_truncated 1, lines not read in time 5 |"
            ),
            "{}",
            status_line(&app)
        );
    }

    #[test]
    fn a_long_history_shows_the_window_around_the_selection() {
        let mut app = App::new(1000, "live".into());
        for id in 0..300 {
            app.push(attempt(id, "umount", &format!("/mnt/{id}"), None));
        }
        for _ in 0..250 {
            app.next();
        }
        let lines = screen(&app, 80, 24);
        // Newest first: the 251st row is attempt 49, on the window's last row.
        assert!(lines[21].contains("umount[149] /mnt/49"), "{lines:#?}");
        assert!(lines[1].contains("umount[169] /mnt/69"), "{lines:#?}");
        assert_eq!(lines[0], format!("┌ unmounts (300) {}┐", "─".repeat(62)));
    }

    #[test]
    fn a_small_terminal_still_draws() {
        let mut app = App::new(100, "live".into());
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
