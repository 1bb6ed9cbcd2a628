//! Ctrl-C and SIGTERM: noted, not fatal, so that the guards of the benchmark can still remove
//! what it made.
//!
//! The signals are blocked in every thread and taken by one thread with `sigwait`; the work
//! checks [`check`] between steps and unwinds with an error. Child processes start with an
//! empty signal mask (the standard library resets it), so a Ctrl-C at the terminal still
//! reaches the commands in the foreground process group.

use std::{
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
