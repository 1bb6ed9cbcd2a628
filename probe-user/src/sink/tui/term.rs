//! The terminal, restored on every way out: a guard's `Drop`, and a panic hook that restores
//! it before the panic message is printed (so the message is readable).

use std::io::{self, IsTerminal};

use anyhow::{bail, Result};
use ratatui::{
    backend::CrosstermBackend,
    crossterm::{
        execute,
        terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
    },
    Terminal,
};

/// The terminal in raw mode on the alternate screen, until dropped.
pub struct TerminalGuard {
    /// The ratatui terminal.
    pub terminal: Terminal<CrosstermBackend<io::Stdout>>,
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

impl TerminalGuard {
    /// Takes over the terminal; refuses without one, pointing to `watch`.
    pub fn new(command: &str) -> Result<Self> {
        // Keys come from stdin, or from /dev/tty when stdin carries a stream (`replay -`).
        let keys = io::stdin().is_terminal() || std::fs::File::open("/dev/tty").is_ok();
        if !io::stdout().is_terminal() || !keys {
            bail!(
                "`busyprobe {command}` is a full-screen view and needs a terminal; \
                 for a stream use `busyprobe watch` (or `busyprobe report FILE` for a recording)"
            );
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen)?;
        Ok(Self {
            terminal: Terminal::new(CrosstermBackend::new(io::stdout()))?,
        })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
