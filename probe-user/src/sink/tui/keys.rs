//! What each key does: a pure mapping from a key press to a verb on the [`App`].

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{App, Mode, View};

/// Applies one key press to the app.
pub fn handle(app: &mut App, key: KeyEvent) {
    if key.kind == KeyEventKind::Release {
        return;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.quit = true;
        return;
    }
    match app.mode {
        Mode::Filter => filter_key(app, key.code),
        Mode::Help => app.toggle_help(),
        Mode::List => match app.view {
            View::Attempts => list_key(app, key.code),
            View::Incidents => incidents_key(app, key.code),
            View::Incident(_) => incident_key(app, key.code),
        },
    }
}

/// The keys every view shares; false when `code` is not one of them.
fn common_key(app: &mut App, code: KeyCode) -> bool {
    match code {
        KeyCode::Char('q') => app.quit = true,
        KeyCode::Char('j') | KeyCode::Down => app.next(),
        KeyCode::Char('k') | KeyCode::Up => app.previous(),
        KeyCode::Char('a') | KeyCode::Tab => app.toggle_attempts(),
        KeyCode::Char('/') => app.start_filter(),
        KeyCode::Char('p') => app.toggle_pause(),
        KeyCode::Char('?') => app.toggle_help(),
        _ => return false,
    }
    true
}

/// The keys of an incident: the list's, or the one open.
fn incident_actions(app: &mut App, code: KeyCode) {
    match code {
        KeyCode::Char('y') => app.copy_who(),
        KeyCode::Char('Y') => app.copy_json(),
        KeyCode::Char('r') => app.write_report(),
        _ => {}
    }
}

fn incidents_key(app: &mut App, code: KeyCode) {
    if common_key(app, code) {
        return;
    }
    match code {
        KeyCode::Esc => app.quit = true,
        KeyCode::Enter => app.open_incident(),
        KeyCode::Char('s') => app.cycle_sort(),
        _ => incident_actions(app, code),
    }
}

fn incident_key(app: &mut App, code: KeyCode) {
    match code {
        KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => app.close_incident(),
        KeyCode::Char('j') | KeyCode::Down | KeyCode::Char('k') | KeyCode::Up => {
            // The next or previous incident, opened.
            app.close_incident();
            common_key(app, code);
            app.open_incident();
        }
        _ if common_key(app, code) => {}
        _ => incident_actions(app, code),
    }
}

fn filter_key(app: &mut App, code: KeyCode) {
    match code {
        KeyCode::Enter => app.end_filter(),
        KeyCode::Esc => {
            app.filter.clear();
            app.end_filter();
        }
        KeyCode::Backspace => app.erase_filter(),
        KeyCode::Char(c) => app.type_filter(c),
        _ => {}
    }
}

fn list_key(app: &mut App, code: KeyCode) {
    if common_key(app, code) {
        return;
    }
    match code {
        KeyCode::Esc => app.quit = true,
        KeyCode::Enter => app.toggle_detail(),
        KeyCode::Char('f') => app.toggle_failures(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::tui::app::tests::attempt;

    fn press(app: &mut App, code: KeyCode) {
        handle(app, KeyEvent::new(code, KeyModifiers::NONE));
    }

    #[test]
    fn keys_drive_the_verbs() {
        let mut app = App::new(10, "test".into());
        (1..=3).for_each(|i| app.push(attempt(i, "umount", "/m", (i == 1).then_some("EBUSY"))));
        assert_eq!(app.view, View::Incidents, "incidents first");
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(app.view, View::Attempts);
        press(&mut app, KeyCode::Char('j'));
        press(&mut app, KeyCode::Down);
        assert_eq!(app.selected, 2);
        press(&mut app, KeyCode::Up);
        assert_eq!(app.selected, 1);
        press(&mut app, KeyCode::Enter);
        assert!(app.detail);
        press(&mut app, KeyCode::Char('f'));
        assert_eq!(app.visible().len(), 1);
        press(&mut app, KeyCode::Char('?'));
        assert_eq!(app.mode, Mode::Help);
        press(&mut app, KeyCode::Char('q'));
        assert!(!app.quit, "any key closes the help first");
        assert_eq!(app.mode, Mode::List);
        press(&mut app, KeyCode::Char('q'));
        assert!(app.quit);
    }

    #[test]
    fn typing_a_filter_does_not_trigger_list_keys() {
        let mut app = App::new(10, "test".into());
        press(&mut app, KeyCode::Char('/'));
        for c in "qfp".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Backspace);
        assert_eq!(
            (app.filter.as_str(), app.quit, app.paused, app.only_failures),
            ("qf", false, false, false)
        );
        press(&mut app, KeyCode::Esc);
        assert_eq!((app.filter.as_str(), app.mode), ("", Mode::List));
        handle(
            &mut app,
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
        );
        assert!(app.quit);
    }

    /// The incidents' keys: sort, open and close, the actions, the raw list and back.
    #[test]
    fn incident_keys_drive_the_verbs() {
        use crate::sink::tui::{actions::Action, incidents::Sort, ui::tests::incidents_app};
        let mut app = incidents_app().with_renderer(crate::recording::markdown::incident);
        let target = |app: &App| app.current_incident().unwrap().1.target.clone();
        assert_eq!(target(&app), "/mnt/data", "the latest failure first");
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(app.sort, Sort::Failures);
        assert_eq!(
            target(&app),
            "/mnt/data",
            "the selection stays on its incident"
        );
        press(&mut app, KeyCode::Char('k'));
        press(&mut app, KeyCode::Char('k'));
        press(&mut app, KeyCode::Char('k'));
        assert_eq!(
            target(&app),
            "/var/lib/containerd/tmpmounts/m1",
            "the most failures"
        );
        press(&mut app, KeyCode::Enter);
        assert!(matches!(app.view, View::Incident(_)));
        press(&mut app, KeyCode::Char('y'));
        assert_eq!(
            app.action.take(),
            Some(Action::Copy {
                what: "the who command".into(),
                text: "busyprobe who '/var/lib/containerd/tmpmounts/m1'".into()
            })
        );
        press(&mut app, KeyCode::Char('Y'));
        let Some(Action::Copy { text, .. }) = app.action.take() else {
            panic!("Y copies")
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (json["resolved_by"].as_u64(), json["first"]["id"].as_u64()),
            (Some(60), Some(10))
        );
        press(&mut app, KeyCode::Char('r'));
        let Some(Action::Write { path, text }) = app.action.take() else {
            panic!("r writes")
        };
        assert_eq!(path.to_str(), Some("busyprobe-incident-10.md"));
        assert!(
            text.contains("## 1. /var/lib/containerd/tmpmounts/m1: 50 failed attempt(s), then attempt 60 worked"),
            "{text}"
        );
        press(&mut app, KeyCode::Char('j'));
        assert!(
            matches!(app.view, View::Incident(_)),
            "j opens the next incident"
        );
        assert_eq!(target(&app), "/var/lib/kubelet/pods/u/volumes/v");
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.view, View::Incidents);
        assert!(!app.quit, "Esc closes the incident");
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.view, View::Attempts);
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(app.view, View::Incidents);
        press(&mut app, KeyCode::Esc);
        assert!(app.quit);
    }
}
