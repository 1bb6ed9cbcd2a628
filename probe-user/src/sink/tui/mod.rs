//! The terminal UI (`busyprobe top`): every unmount attempt as a live list, newest first, with
//! the holders of each failure in a detail pane. It draws the same JSON Lines objects that
//! `watch --json` prints and recordings hold, so `top --replay FILE` shows a recording the
//! way it looked live.
//!
//! `app` is the state and its verbs, `keys` maps key presses onto them, `ui` draws (pure,
//! snapshot-tested), `term` owns the terminal, `feed` is the live stream's sink.

pub mod app;
pub mod feed;
pub mod keys;
pub mod term;
pub mod ui;

use std::{
    sync::mpsc::{Receiver, TryRecvError},
    time::Duration,
};

use anyhow::Result;
use ratatui::crossterm::event::{self, Event};
use serde_json::Value;

use app::App;
use term::TerminalGuard;

/// How often the screen looks for new lines when no key is pressed.
const TICK: Duration = Duration::from_millis(100);

/// Shows `app` until the user quits or, live, until the stream ends (the sender is dropped).
/// The terminal is restored before this returns, whatever happens.
pub fn show(mut guard: TerminalGuard, mut app: App, lines: Option<Receiver<Value>>) -> Result<()> {
    loop {
        if let Some(lines) = &lines {
            loop {
                match lines.try_recv() {
                    Ok(line) => app.push(line),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
        }
        guard.terminal.draw(|frame| ui::draw(frame, &app))?;
        if event::poll(TICK)? {
            if let Event::Key(key) = event::read()? {
                keys::handle(&mut app, key);
            }
        }
        if app.quit {
            return Ok(());
        }
    }
}
