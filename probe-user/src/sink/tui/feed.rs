//! The live TUI's sink: the stream's lines, in the JSON Lines wire format (so the screen shows
//! exactly what `watch --json` and recordings carry), sent over a channel to the screen.

use std::{io, sync::mpsc::Sender, time::SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::{
    event::{UmountAttempt, Warning},
    sink::{json::wire, Sink},
    stats::Stats,
};

/// Turns each line of the wire format into a JSON value (no text in between) and sends it to
/// the screen; fails with `BrokenPipe` once the screen is gone, which ends the stream.
pub struct Feed {
    to_screen: Sender<Value>,
}

impl Feed {
    /// A sink sending to `to_screen`.
    pub fn new(to_screen: Sender<Value>) -> Self {
        Self { to_screen }
    }

    fn send(&mut self, line: impl Serialize) -> io::Result<()> {
        let value = serde_json::to_value(line).map_err(io::Error::other)?;
        self.to_screen
            .send(value)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Sink for Feed {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.send(wire::UmountLine::new(attempt))
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.send(wire::WarningLine::new(warning))
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.send(wire::StatsLine::new(ts, stats, last))
    }
}
