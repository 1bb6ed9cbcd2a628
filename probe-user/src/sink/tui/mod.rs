//! The terminal UI (`busyprobe top`): incidents first (one row per target whose unmount
//! failed, with its main holder; Enter opens its holders, retry timeline and mount), under a
//! header that says whether it is getting worse (failures per second, mounts left mounted
//! after failing, events lost); a key switches to every unmount attempt as a live list,
//! newest first, with the holders of each failure in a detail pane. It draws the same lines (the typed wire
//! model, `sink::json::wire::Line`) that `watch --json` prints and recordings hold, so `top --replay FILE` shows a recording the
//! way it looked live.
//!
//! `app` is the state and its verbs, `incidents` groups attempts as they come (by
//! `sink/incidents/`'s rule), `rate` counts failures per second, `keys` maps key presses
//! onto the verbs, `ui` draws (pure, snapshot-tested), `actions` does what a verb asks outside
//! the screen (clipboard, files), `term` owns the terminal, `feed` is the live stream's sink.

pub mod actions;
pub mod app;
pub mod feed;
pub mod incidents;
pub mod keys;
pub mod rate;
pub mod term;
pub mod ui;

use std::{
    sync::mpsc::{Receiver, TryRecvError},
    time::Duration,
};

use anyhow::Result;
use ratatui::crossterm::event::{self, Event};

use crate::sink::json::wire::Line;
use app::App;
use term::TerminalGuard;

/// How often the screen looks for new lines when no key is pressed.
const TICK: Duration = Duration::from_millis(100);

/// Shows `app` until the user quits or, live, until the stream ends (the sender is dropped).
/// The terminal is restored before this returns, whatever happens.
///
/// One frame per pass: a pass takes every line waiting (a burst of any size), draws once, then
/// waits for a key or [`TICK`]; so the frame rate is capped by input and the tick, never by
/// the event rate.
pub fn show(mut guard: TerminalGuard, mut app: App, lines: Option<Receiver<Line>>) -> Result<()> {
    loop {
        if let Some(lines) = &lines {
            if !take_waiting(&mut app, lines) {
                return Ok(());
            }
        }
        app.tick(std::time::SystemTime::now());
        if let Some(action) = app.action.take() {
            app.message = Some(actions::perform(action, guard.terminal.backend_mut()));
        }
        guard.terminal.draw(|frame| ui::draw(frame, &app))?;
        // Wait on the terminal ourselves: crossterm's own wait spins forever on a terminal
        // that hung up (seen: a closed tmux window left `top` at 100% CPU, probes attached).
        match term::wait_for_input(TICK)? {
            term::Input::HungUp => return Ok(()),
            // crossterm reads every byte waiting and hands out one event at a time: take all
            // it holds, or keys typed together would wait for the next input.
            term::Input::Ready => {
                while event::poll(Duration::ZERO)? {
                    if let Event::Key(key) = event::read()? {
                        keys::handle(&mut app, key);
                    }
                }
            }
            term::Input::Idle => {}
        }
        if app.quit || term::hung_up() {
            return Ok(());
        }
    }
}

/// Takes every line waiting on `lines` into `app`, drawing nothing; false once the stream has
/// ended (its sender dropped).
fn take_waiting(app: &mut App, lines: &Receiver<Line>) -> bool {
    loop {
        match lines.try_recv() {
            Ok(line) => app.push(line),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::{backend::TestBackend, Terminal};

    /// A burst of 100,000 events between two frames is taken in one pass and drawn in one
    /// frame, and the history stays at its bound.
    #[test]
    fn a_burst_is_one_frame_and_memory_stays_bounded() {
        let (tx, rx) = std::sync::mpsc::channel();
        for id in 0..100_000u64 {
            tx.send(app::tests::attempt(id, "umount", "/mnt", Some("EBUSY")))
                .unwrap();
        }
        let mut app = App::new(1000, "live".into());
        assert!(take_waiting(&mut app, &rx), "the stream goes on");
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty, "all taken");
        assert_eq!(app.visible().len(), 1000, "bounded by --keep");
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let frame = terminal.draw(|f| ui::draw(f, &app)).unwrap();
        assert_eq!(frame.count, 0, "one frame for the whole burst");
        assert!(
            terminal
                .backend()
                .buffer()
                .content()
                .iter()
                .any(|c| c.symbol() == "E"),
            "the burst is on screen"
        );
        drop(tx);
        assert!(!take_waiting(&mut app, &rx), "the stream ended");
    }

    /// 100,000 failures on 20,000 targets (interleaved, each failing five times) keep
    /// `--keep` incidents, and the incidents screen draws them in one frame.
    #[test]
    fn a_burst_on_many_targets_keeps_the_incidents_bounded() {
        let (tx, rx) = std::sync::mpsc::channel();
        for id in 0..100_000u64 {
            let target = format!("/mnt/{}", id % 20_000);
            tx.send(app::tests::attempt(id, "umount", &target, Some("EBUSY")))
                .unwrap();
        }
        let mut app = App::new(10_000, "live".into());
        assert!(take_waiting(&mut app, &rx));
        assert_eq!(app.incidents.len(), 10_000, "bounded by --keep");
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| ui::draw(f, &app)).unwrap();
        let top = terminal.backend().buffer().content()[4 * 80..5 * 80]
            .iter()
            .map(|c| c.symbol())
            .collect::<String>();
        assert!(top.contains("failing       1 "), "{top}");
    }
}
