//! Where unmount attempts and stats go: human-readable lines, JSON Lines, the `top` view, a
//! recording, Prometheus metrics, the agent's live clients, or several of them at once
//! ([`fanout`]).

pub mod clients;
pub mod fanout;
pub mod format;
pub mod incidents;
pub mod json;
pub mod metrics;
pub mod record;
pub mod status;
pub mod text;
pub mod tui;

use std::{
    io,
    time::{Instant, SystemTime},
};

use crate::{
    event::{UmountAttempt, Warning},
    stats::Stats,
};

/// A consumer of the event stream. An `Err` from a write means the output is gone (for
/// example a closed pipe) and the stream should end.
pub trait Sink {
    /// One unmount attempt.
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()>;
    /// A warning (for example a filesystem alive after its unmount).
    fn warning(&mut self, warning: &Warning) -> io::Result<()>;
    /// Periodic counters; `last` on the final report before exit.
    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()>;
    /// When this sink wants [`Sink::tick`] called (a recording whose last lines wait for
    /// their fsync); `None`, the default: never. Asked again after every event.
    fn wake_at(&self) -> Option<Instant> {
        None
    }
    /// Work that was due at [`Sink::wake_at`]; the default has none.
    fn tick(&mut self, _now: Instant) -> io::Result<()> {
        Ok(())
    }
    /// The end of a turn of the event loop: lines a sink kept back to write together (the
    /// recording's) are written now. The default keeps nothing back.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
