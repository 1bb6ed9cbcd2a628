//! The live TUI's sink: the stream's lines, in the JSON Lines wire format (so the screen shows
//! exactly what `watch --json` and recordings carry), sent over a channel to the screen.

use std::{io, sync::mpsc::Sender, time::SystemTime};

use serde_json::Value;

use crate::{
    event::{UmountAttempt, Warning},
    sink::{json::JsonLines, Sink},
    stats::Stats,
};

/// Serialises each line and sends it to the screen; fails with `BrokenPipe` once the screen
/// is gone, which ends the stream.
pub struct Feed {
    lines: JsonLines<Vec<u8>>,
    to_screen: Sender<Value>,
}

impl Feed {
    /// A sink sending to `to_screen`.
    pub fn new(to_screen: Sender<Value>) -> Self {
        Self {
            lines: JsonLines::new(Vec::new()),
            to_screen,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let buf = std::mem::take(self.lines.get_mut());
        for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let value = serde_json::from_slice(line).map_err(io::Error::other)?;
            self.to_screen
                .send(value)
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        }
        Ok(())
    }
}

impl Sink for Feed {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.lines.umount(attempt)?;
        self.send()
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.lines.warning(warning)?;
        self.send()
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.lines.stats(ts, stats, last)?;
        self.send()
    }
}
