//! Ctrl-C and SIGTERM: noted, not fatal, so that the guards of the benchmark can still remove
//! what it made.
//!
//! The signals are blocked in every thread and taken by one thread with `sigwait`; the work
//! checks [`check`] between steps and unwinds with an error. A child inherits the mask across
//! `exec` (the standard library does not reset it): commands that must see SIGTERM or a
//! Ctrl-C at the terminal are started through [`unblock_in_child`].

use std::{
    io,
    os::unix::process::CommandExt,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};

/// Set once SIGINT, SIGTERM or SIGHUP has arrived.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Blocks SIGINT, SIGTERM and SIGHUP and starts the thread that waits for them. Call it before
/// any other thread starts, so that every thread inherits the mask.
pub fn install() -> Result<()> {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set.thread_block()
        .context("blocking SIGINT, SIGTERM and SIGHUP")?;
    thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            if let Ok(signal) = set.wait() {
                eprintln!("\nxtask: bench: {signal} received; stopping and cleaning up");
                INTERRUPTED.store(true, Ordering::SeqCst);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Makes `command`'s process start with no signal blocked, so that it stops on SIGTERM (a
/// tracer's clean exit prints its final counters) and on a Ctrl-C at the terminal.
pub fn unblock_in_child(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs between fork and exec; it only calls pthread_sigmask, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            SigSet::all()
                .thread_unblock()
                .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
        })
    }
}

/// An error once the benchmark has been interrupted.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// The reason to show for a measurement that failed with `error`; an interruption stays an
/// error, so that the benchmark stops.
pub fn failure_reason(error: &anyhow::Error) -> Result<String> {
    check()?;
    Ok(format!("failed: {error:#}"))
}
