//! The live TUI's sink: the stream's lines, in the typed wire model (so the screen shows
//! exactly what `watch --json` and recordings carry), sent over a channel to the screen.

use std::{io, sync::mpsc::Sender, time::SystemTime};

use crate::{
    event::{UmountAttempt, Warning},
    sink::{
        json::wire::{Line, StatsLine, UmountLine, WarningLine},
        Sink,
    },
    stats::Stats,
};

/// Sends each line of the wire model (no text in between) to the screen; fails with
/// `BrokenPipe` once the screen is gone, which ends the stream.
pub struct Feed {
    to_screen: Sender<Line>,
}

impl Feed {
    /// A sink sending to `to_screen`.
    pub fn new(to_screen: Sender<Line>) -> Self {
        Self { to_screen }
    }

    fn send(&mut self, line: Line) -> io::Result<()> {
        self.to_screen
            .send(line)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Sink for Feed {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.send(Line::Umount(Box::new(UmountLine::new(attempt))))
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.send(Line::Warning(Box::new(WarningLine::new(warning))))
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.send(Line::Stats(StatsLine::new(ts, stats, last)))
    }
}
