//! The terminal, restored on every way out: a guard's `Drop`, and a panic hook that restores
//! it before the panic message is printed (so the message is readable).

use std::{
    io::{self, IsTerminal},
    sync::atomic::{AtomicBool, Ordering},
};

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
    /// Takes over the terminal; refuses without one, pointing to `watch`. A hangup of the
    /// terminal (a closed ssh session or tmux window) is noted for [`hung_up`].
    pub fn new(command: &str) -> Result<Self> {
        watch_for_hangup()?;
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

/// Set by SIGHUP: the terminal is gone.
static HUNG_UP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: nix::libc::c_int) {
    HUNG_UP.store(true, Ordering::Relaxed);
}

/// Catches SIGHUP: without it a view whose screen no longer changes would never write to the
/// closed terminal, never get an error, and keep its probes attached forever.
fn watch_for_hangup() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_hangup),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGHUP, &action) }?;
    Ok(())
}

/// Whether the terminal hung up (SIGHUP) since the view started.
pub fn hung_up() -> bool {
    HUNG_UP.load(Ordering::Relaxed)
}

/// What waiting on the terminal gave.
pub enum Input {
    /// Bytes to read (a key, a resize report).
    Ready,
    /// Nothing within the wait.
    Idle,
    /// The terminal is gone.
    HungUp,
}

/// Waits up to `timeout` for input on the terminal the keys come from (stdin, or /dev/tty when
/// stdin carries a stream).
pub fn wait_for_input(timeout: std::time::Duration) -> Result<Input> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    if hung_up() {
        return Ok(Input::HungUp);
    }
    let tty;
    let stdin = io::stdin();
    let fd = if stdin.is_terminal() {
        stdin.as_fd()
    } else {
        tty = std::fs::File::open("/dev/tty")?;
        tty.as_fd()
    };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(0) => Ok(Input::Idle),
        Ok(_) => {
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            Ok(
                if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
                {
                    Input::HungUp
                } else {
                    Input::Ready
                },
            )
        }
        Err(nix::errno::Errno::EINTR) if hung_up() => Ok(Input::HungUp),
        Err(nix::errno::Errno::EINTR) => Ok(Input::Idle),
        Err(e) => Err(e.into()),
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
