//! The TUI's state and the verbs a user has over it. No terminal here: every verb is tested
//! on its own (one that must reach outside the screen leaves an [`Action`] for the loop).

use std::{collections::VecDeque, path::PathBuf, time::SystemTime};

use super::{
    actions::{shell_word, Action},
    incidents::{Incidents, Sort, State},
};
use crate::{
    paths::escape_for_terminal,
    sink::{
        incidents::{ts_ns, AttemptSketch, Incident},
        json::wire::{Line, UmountLine},
    },
    stats::Stats,
};

/// Which screen the body shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// One row per incident (the default).
    Incidents,
    /// One incident, by its number: holders, retry timeline, mount.
    Incident(u64),
    /// Every unmount attempt, newest first, with a detail pane.
    Attempts,
}

/// Renders incident `number` as Markdown (`busyprobe report`'s renderer, which the command
/// hands over: the screen does not depend on the report).
pub type Renderer = fn(usize, &Incident) -> String;

/// Which overlay or input mode is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No overlay: the view's keys.
    List,
    /// Typing a filter after `/`.
    Filter,
    /// The help screen.
    Help,
}

/// Everything the screen shows.
pub struct App {
    /// Events, newest first (the `umount` lines, as recorded).
    events: VecDeque<UmountLine>,
    /// Most events kept.
    capacity: usize,
    /// Failed attempts among `events`.
    failures: usize,
    /// Index into the visible events.
    pub selected: usize,
    /// Whether the detail pane is open.
    pub detail: bool,
    /// Show only failures.
    pub only_failures: bool,
    /// Text that comm or target must contain.
    pub filter: String,
    /// Whether new events are held back.
    pub paused: bool,
    /// Events held back while paused, oldest first: at most `capacity` (more could not be
    /// shown once resumed), the oldest dropped first.
    held: VecDeque<UmountLine>,
    /// The input mode.
    pub mode: Mode,
    /// Counters for the header (events lost).
    pub stats: Stats,
    /// Lines of the stream this screen did not get (`lost` lines: it read too slowly from
    /// the agent).
    pub lines_lost: u64,
    /// Where the events come from (`live, tracepoint mode, holders on`, `replay of FILE`).
    pub source: String,
    /// A recording's header facts (host, kernel, probe mode), once its `header` line is read.
    pub header: Option<String>,
    /// Set when the user asked to quit.
    pub quit: bool,
    /// The attempts grouped into incidents.
    pub incidents: Incidents,
    /// The screen shown.
    pub view: View,
    /// The order of the incident rows.
    pub sort: Sort,
    /// The selected incident (its number); the first row when none or gone.
    chosen: Option<u64>,
    /// Whether the wall clock moves the stream's time on (live: an incident whose target saw
    /// no attempt for a while is given up even if no line comes).
    wall_clock: bool,
    /// The Markdown renderer for `r`.
    renderer: Option<Renderer>,
    /// What the loop must do next outside the screen.
    pub action: Option<Action>,
    /// What the last action did, for the status bar.
    pub message: Option<String>,
}

impl App {
    /// An empty screen keeping at most `capacity` events.
    pub fn new(capacity: usize, source: String) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            selected: 0,
            failures: 0,
            detail: false,
            only_failures: false,
            filter: String::new(),
            paused: false,
            held: VecDeque::new(),
            mode: Mode::List,
            stats: Stats::default(),
            lines_lost: 0,
            source,
            header: None,
            quit: false,
            incidents: Incidents::new(capacity),
            view: View::Incidents,
            sort: Sort::LastFailure,
            chosen: None,
            wall_clock: false,
            renderer: None,
            action: None,
            message: None,
        }
    }

    /// The same, with `r` writing an incident's report with `renderer`.
    pub fn with_renderer(mut self, renderer: Renderer) -> Self {
        self.renderer = Some(renderer);
        self
    }

    /// The same, with the wall clock moving the stream's time (live sources).
    pub fn on_the_wall_clock(mut self) -> Self {
        self.wall_clock = true;
        self
    }

    /// The time is `now` (called every pass of the loop): live, incidents left alone long
    /// enough are given up.
    pub fn tick(&mut self, now: SystemTime) {
        if self.wall_clock {
            let ns = now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            self.incidents.saw_time(ns);
        }
    }

    /// Takes one line of the stream: `umount` lines are listed, `stats` update the bar.
    pub fn push(&mut self, line: Line) {
        match line {
            Line::Umount(attempt) if self.paused => self.hold(*attempt),
            Line::Umount(attempt) => self.list(*attempt),
            Line::Stats(stats) => {
                self.incidents.saw_time(ts_ns(&stats.ts));
                self.stats = stats.stats();
            }
            Line::Header(h) => {
                self.header = Some(format!(
                    "host {}, kernel {}, {} mode",
                    escape_for_terminal(h.host.as_bytes()),
                    escape_for_terminal(h.kernel.as_bytes()),
                    escape_for_terminal(h.probe_mode.as_bytes())
                ));
            }
            Line::Lost(lost) => self.lines_lost += lost.lines,
            Line::Warning(_) | Line::Who(_) | Line::Other => {}
        }
    }

    /// Keeps an event for when the pause ends: the newest `capacity` of them.
    fn list(&mut self, attempt: UmountLine) {
        self.incidents.add(&AttemptSketch::of(&attempt));
        self.list_grouped(attempt);
    }

    fn hold(&mut self, attempt: UmountLine) {
        self.held.push_back(attempt);
        if self.held.len() > self.capacity {
            self.held.pop_front();
        }
    }

    /// Takes one line of a recording read ahead of the screen: an attempt is only grouped
    /// into its incident (the caller lists the newest afterwards with
    /// [`App::list_grouped`]: listing every one would keep each line `capacity` lines long,
    /// and free it cold); any other line as [`App::push`] takes it.
    pub fn group(&mut self, line: Line) {
        match line {
            Line::Umount(attempt) if !self.paused => {
                self.incidents.add(&AttemptSketch::of(&attempt));
            }
            line => self.push(line),
        }
    }

    /// [`App::group`] of an attempt read as a sketch: with its whole line when
    /// [`App::needs_whole`] says so.
    pub fn group_sketch(&mut self, attempt: &AttemptSketch) {
        self.incidents.add(attempt);
    }

    /// Whether grouping `attempt` takes anything from its whole line (an incident it opens,
    /// a holder or a mount its incident does not know yet).
    pub fn needs_whole(&self, attempt: &AttemptSketch) -> bool {
        self.incidents.needs_whole(attempt)
    }

    /// Lists an attempt that [`App::group`] grouped already.
    pub fn list_grouped(&mut self, attempt: UmountLine) {
        self.failures += usize::from(attempt.failed());
        self.events.push_front(attempt);
        while self.events.len() > self.capacity {
            if let Some(gone) = self.events.pop_back() {
                self.failures -= usize::from(gone.failed());
            }
        }
        // Keep the selection on the same event as new ones arrive on top (constant time: a
        // burst must not cost a pass over the history per event).
        if self.selected > 0 && self.shows(&self.events[0], &self.filter.to_lowercase()) {
            self.selected = (self.selected + 1).min(self.events.len() - 1);
        }
    }

    /// Whether `e` passes the failure toggle and the filter (`needle`: the filter lowercased,
    /// once per pass rather than once per event).
    fn shows(&self, e: &UmountLine, needle: &str) -> bool {
        (!self.only_failures || e.failed())
            && (needle.is_empty()
                || [&e.comm, &e.target]
                    .iter()
                    .any(|s| s.to_lowercase().contains(needle)))
    }

    /// The events shown, newest first.
    pub fn visible(&self) -> Vec<&UmountLine> {
        let needle = self.filter.to_lowercase();
        self.events
            .iter()
            .filter(|e| self.shows(e, &needle))
            .collect()
    }

    /// The selected event.
    pub fn current(&self) -> Option<&UmountLine> {
        self.visible().get(self.selected).copied()
    }

    /// Counts for the status bar: (events listed, failures among them); kept as events come
    /// and go, not counted per frame.
    pub fn counts(&self) -> (usize, usize) {
        (self.events.len(), self.failures)
    }

    /// Down one row (an event, or an incident).
    pub fn next(&mut self) {
        if self.view == View::Attempts {
            let last = self.visible().len().saturating_sub(1);
            self.selected = (self.selected + 1).min(last);
        } else {
            self.move_incident(1);
        }
    }

    /// Up one row.
    pub fn previous(&mut self) {
        if self.view == View::Attempts {
            self.selected = self.selected.saturating_sub(1);
        } else {
            self.move_incident(-1);
        }
    }

    /// The incidents shown (filtered; with `f` the unresolved only: still failing, or given
    /// up and still mounted), as `(number, incident)`, in the chosen order.
    pub fn visible_incidents(&self) -> Vec<(u64, &Incident)> {
        let needle = self.filter.to_lowercase();
        self.incidents.sorted(self.sort, |inc| {
            (!self.only_failures || self.incidents.state(inc) != State::Unmounted)
                && (needle.is_empty()
                    || inc.target.to_lowercase().contains(&needle)
                    || inc.first.comm.to_lowercase().contains(&needle)
                    || inc.holders.iter().any(|(h, _)| {
                        h.comm
                            .as_ref()
                            .is_some_and(|c| c.to_lowercase().contains(&needle))
                    }))
        })
    }

    /// The row of the selected incident among `rows` (the first when it is not there).
    pub fn incident_row(&self, rows: &[(u64, &Incident)]) -> usize {
        self.chosen
            .and_then(|n| rows.iter().position(|(number, _)| *number == n))
            .unwrap_or(0)
    }

    /// The selected incident: the one open, or the selected row's.
    pub fn current_incident(&self) -> Option<(u64, &Incident)> {
        if let View::Incident(n) = self.view {
            return self.incidents.get(n).map(|inc| (n, inc));
        }
        let rows = self.visible_incidents();
        rows.get(self.incident_row(&rows)).copied()
    }

    fn move_incident(&mut self, by: isize) {
        let rows = self.visible_incidents();
        if rows.is_empty() {
            return;
        }
        let at = self.incident_row(&rows).saturating_add_signed(by);
        self.chosen = Some(rows[at.min(rows.len() - 1)].0);
    }

    /// Open the selected incident.
    pub fn open_incident(&mut self) {
        if let Some((n, _)) = self.current_incident() {
            self.chosen = Some(n);
            self.view = View::Incident(n);
        }
    }

    /// Back to the incident rows.
    pub fn close_incident(&mut self) {
        self.view = View::Incidents;
    }

    /// Switch between the incidents and the raw list of attempts.
    pub fn toggle_attempts(&mut self) {
        self.view = match self.view {
            View::Attempts => View::Incidents,
            View::Incidents | View::Incident(_) => View::Attempts,
        };
    }

    /// Sort the incidents by the next order (last failure, failures, target); the selected
    /// incident stays selected.
    pub fn cycle_sort(&mut self) {
        self.chosen = self.current_incident().map(|(n, _)| n);
        self.sort = self.sort.next();
    }

    /// Copy the selected incident's `busyprobe who` command (its mount point when known).
    pub fn copy_who(&mut self) {
        self.copy("the who command", |inc| {
            let path = match &inc.mount {
                Some(m) => m.mount_point_bytes().into_owned(),
                None => inc
                    .first
                    .target_abs_bytes()
                    .unwrap_or(inc.first.target_bytes())
                    .into_owned(),
            };
            let path = shell_word(&String::from_utf8_lossy(&path));
            Some(format!("busyprobe who {path}"))
        });
    }

    /// Copy the selected incident as one line of JSON (as `busyprobe report --format json`
    /// writes each).
    pub fn copy_json(&mut self) {
        self.copy("the incident's JSON", |inc| serde_json::to_string(inc).ok());
    }

    /// Copy `text` of the selected incident, named `what` in the status bar.
    fn copy(&mut self, what: &str, text: impl FnOnce(&Incident) -> Option<String>) {
        if let Some(text) = self.current_incident().and_then(|(_, inc)| text(inc)) {
            self.action = Some(Action::Copy {
                what: what.into(),
                text,
            });
        }
    }

    /// Write the selected incident's Markdown report to `busyprobe-incident-ID.md` (ID: its
    /// first attempt) in the current directory.
    pub fn write_report(&mut self) {
        let Some((_, inc)) = self.current_incident() else {
            return;
        };
        let Some(render) = self.renderer else {
            self.message = Some("reports are not available here".into());
            return;
        };
        self.action = Some(Action::Write {
            path: PathBuf::from(format!("busyprobe-incident-{}.md", inc.first.id)),
            text: format!("# busyprobe: one incident\n{}", render(1, inc)),
        });
    }

    /// Open or close the detail pane.
    pub fn toggle_detail(&mut self) {
        self.detail = !self.detail;
    }

    /// Show only failures (attempts) and unresolved incidents, or everything.
    pub fn toggle_failures(&mut self) {
        self.only_failures = !self.only_failures;
        self.selected = 0;
    }

    /// Hold back new events, or release them.
    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            for line in std::mem::take(&mut self.held) {
                self.list(line);
            }
        }
    }

    /// Start typing a filter.
    pub fn start_filter(&mut self) {
        self.mode = Mode::Filter;
        self.filter.clear();
    }

    /// One character of the filter.
    pub fn type_filter(&mut self, c: char) {
        self.filter.push(c);
        self.selected = 0;
    }

    /// Remove the last character of the filter.
    pub fn erase_filter(&mut self) {
        self.filter.pop();
    }

    /// Stop typing (the filter stays).
    pub fn end_filter(&mut self) {
        self.mode = Mode::List;
    }

    /// Open or close the help.
    pub fn toggle_help(&mut self) {
        self.mode = if self.mode == Mode::Help {
            Mode::List
        } else {
            Mode::Help
        };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A recording's header line.
    pub(crate) const HEADER: &str = r#"{"v":1,"type":"header","busyprobe":"0.1.0","host":"node-7","kernel":"6.8.0","probe_mode":"tracepoint","started":"2026-11-23T10:00:00.000000000Z"}"#;

    /// An `umount` line for tests: attempt `id` by `comm[100 + id]`, at 10:01:02.123456789.
    pub(crate) fn umount_line(
        id: u64,
        comm: &str,
        target: &str,
        errno: Option<&str>,
    ) -> UmountLine {
        let ret = if errno.is_some() { -16 } else { 0 };
        let mut a =
            crate::event::sample_attempt(target.as_bytes(), Some(target.as_bytes()), ret, 0);
        a.id = id;
        a.call.pid = 100 + id as u32;
        a.call.comm = comm.as_bytes().to_vec();
        a.call.mntns = 4026531840;
        let mut line = UmountLine::new(&a);
        line.errno = errno.map(str::to_owned);
        line
    }

    /// [`umount_line`] as a line of the stream.
    pub(crate) fn attempt(id: u64, comm: &str, target: &str, errno: Option<&str>) -> Line {
        Line::Umount(Box::new(umount_line(id, comm, target, errno)))
    }

    /// A line of the stream from its JSON.
    pub(crate) fn line(json: &str) -> Line {
        serde_json::from_str(json).unwrap()
    }

    /// A recording grouped first and its newest attempts listed after is the screen that
    /// pushing every line makes.
    #[test]
    fn grouping_then_listing_the_newest_is_pushing_every_line() {
        let lines: Vec<UmountLine> = (1..=50)
            .map(|i| {
                let target = format!("/mnt/{}", i % 7);
                umount_line(i, "kubelet", &target, (i % 3 != 0).then_some("EBUSY"))
            })
            .collect();
        let mut pushed = App::new(10, "test".into());
        let mut grouped = App::new(10, "test".into());
        for line in &lines {
            pushed.push(Line::Umount(Box::new(line.clone())));
            grouped.group(Line::Umount(Box::new(line.clone())));
        }
        for line in &lines[40..] {
            grouped.list_grouped(line.clone());
        }
        let ids = |app: &App| app.visible().iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&grouped), ids(&pushed));
        assert_eq!(grouped.counts(), pushed.counts());
        let incidents = |app: &App| {
            app.visible_incidents()
                .iter()
                .map(|(n, i)| (*n, i.failures, i.resolved_by))
                .collect::<Vec<_>>()
        };
        assert_eq!(incidents(&grouped), incidents(&pushed));
    }

    #[test]
    fn newest_first_bounded_and_filterable() {
        let mut app = App::new(3, "test".into());
        for i in 1..=4 {
            app.push(attempt(
                i,
                if i % 2 == 0 { "containerd" } else { "umount" },
                "/mnt/x",
                (i % 2 == 0).then_some("EBUSY"),
            ));
        }
        let ids: Vec<u64> = app.visible().iter().map(|e| e.id).collect();
        assert_eq!(ids, [4, 3, 2], "newest first, at most 3");
        app.toggle_failures();
        assert_eq!(app.visible().len(), 2);
        app.toggle_failures();
        app.start_filter();
        "CONTAINERD".chars().for_each(|c| app.type_filter(c));
        app.end_filter();
        assert_eq!(app.visible().len(), 2, "case-insensitive filter on comm");
        assert_eq!(app.mode, Mode::List);
        assert_eq!(app.counts(), (3, 2));
    }

    #[test]
    fn f_keeps_the_unresolved_incidents_only() {
        let mut app = App::new(10, "test".into());
        app.push(attempt(1, "containerd", "/mnt/a", Some("EBUSY")));
        app.push(attempt(2, "containerd", "/mnt/b", Some("EBUSY")));
        app.push(attempt(3, "containerd", "/mnt/b", None));
        let targets = |app: &App| {
            let mut t: Vec<String> = app
                .visible_incidents()
                .iter()
                .map(|(_, i)| i.target.clone())
                .collect();
            t.sort();
            t
        };
        assert_eq!(targets(&app), ["/mnt/a", "/mnt/b"]);
        app.toggle_failures();
        assert_eq!(targets(&app), ["/mnt/a"], "/mnt/b was unmounted at last");
        app.toggle_failures();
        assert_eq!(targets(&app), ["/mnt/a", "/mnt/b"]);
    }

    #[test]
    fn selection_moves_and_follows_its_event() {
        let mut app = App::new(10, "test".into());
        app.toggle_attempts();
        (1..=3).for_each(|i| app.push(attempt(i, "umount", "/m", None)));
        app.next();
        app.next();
        app.next();
        assert_eq!(app.selected, 2, "stops at the last");
        app.previous();
        assert_eq!(app.current().unwrap().id, 2);
        app.push(attempt(4, "umount", "/m", None));
        assert_eq!(app.current().unwrap().id, 2, "still the same event");
    }

    #[test]
    fn a_burst_of_100k_events_keeps_memory_bounded_and_the_selection() {
        let mut app = App::new(1000, "test".into());
        app.toggle_attempts();
        app.push(attempt(0, "umount", "/m", Some("EBUSY")));
        app.push(attempt(1, "umount", "/m", None));
        app.next();
        assert_eq!(app.current().unwrap().id, 0);
        for i in 2..100_002 {
            app.push(attempt(i, "umount", "/m", None));
            if i == 500 {
                assert_eq!(app.current().unwrap().id, 0, "followed while it is kept");
            }
        }
        assert_eq!(app.visible().len(), 1000, "at most --keep events");
        assert_eq!(app.visible()[0].id, 100_001);
        assert_eq!(
            app.current().unwrap().id,
            99_002,
            "the oldest kept once its event went"
        );
    }

    #[test]
    fn pause_holds_events_back() {
        let mut app = App::new(10, "test".into());
        app.toggle_pause();
        app.push(attempt(1, "umount", "/m", None));
        assert!(app.visible().is_empty());
        app.toggle_pause();
        assert_eq!(app.visible().len(), 1);
    }

    /// A long pause keeps no more than the screen could show once it ends: the newest
    /// `--keep` events.
    #[test]
    fn a_pause_holds_at_most_keep_events() {
        let mut app = App::new(100, "test".into());
        app.push(attempt(0, "umount", "/m", Some("EBUSY")));
        app.toggle_pause();
        for i in 1..=10_000 {
            app.push(attempt(i, "umount", "/m", None));
            assert!(app.held.len() <= 100, "held {} at {i}", app.held.len());
        }
        assert_eq!(app.visible().len(), 1, "nothing new shown while paused");
        app.toggle_pause();
        let ids: Vec<u64> = app.visible().iter().map(|e| e.id).collect();
        assert_eq!(ids, (9_901..=10_000).rev().collect::<Vec<u64>>());
        assert_eq!(app.counts(), (100, 0), "the failure went with its event");
        assert!(app.held.is_empty());
    }

    #[test]
    fn stats_lines_fill_the_counters() {
        let mut app = App::new(10, "test".into());
        app.push(line(
            r#"{"v":1,"type":"stats","ts":"2026-11-23T10:01:03.000000000Z","events":7,"drops":{"ringbuf_full":2},"decode_errors":1,"final":false}"#,
        ));
        assert_eq!(
            (
                app.stats.events,
                app.stats.drops[0],
                app.stats.decode_errors
            ),
            (7, 2, 1)
        );
        app.push(line(HEADER));
        assert_eq!(
            app.header.as_deref(),
            Some("host node-7, kernel 6.8.0, tracepoint mode")
        );
        app.toggle_help();
        assert_eq!(app.mode, Mode::Help);
        app.toggle_help();
        assert_eq!(app.mode, Mode::List);
    }
}
