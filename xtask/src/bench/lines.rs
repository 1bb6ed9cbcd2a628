//! Lines from a child's pipe, read on a thread and stamped with the instant they were read.

use std::{
    io::{BufRead, BufReader, Read},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::interrupt;

/// How often a wait for a line looks for an interruption.
const POLL: Duration = Duration::from_millis(100);

/// One line (without its newline) and when it was read.
pub struct Line {
    /// When the read that completed the line returned.
    pub at: Instant,
    /// The line, lossily decoded.
    pub text: String,
}

/// Lines of a pipe, read by a thread that ends at end of file.
pub struct Lines {
    rx: Receiver<Line>,
}

impl Lines {
    /// Starts reading `reader` on a new thread named `name`.
    pub fn spawn(name: &str, reader: impl Read + Send + 'static) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut reader = BufReader::new(reader);
                let mut buf = Vec::new();
                while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    let at = Instant::now();
                    let text = String::from_utf8_lossy(&buf).trim_end().to_string();
                    buf.clear();
                    if tx.send(Line { at, text }).is_err() {
                        break;
                    }
                }
            })
            .with_context(|| format!("starting the {name} thread"))?;
        Ok(Self { rx })
    }

    /// The next line, `None` at `deadline`; an error at end of file or on an interruption.
    pub fn next_before(&self, deadline: Instant) -> Result<Option<Line>> {
        loop {
            interrupt::check()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.rx.recv_timeout(left.min(POLL)) {
                Ok(line) => return Ok(Some(line)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("the pipe was closed"),
            }
        }
    }

    /// Every line already read, without waiting.
    pub fn drain(&self) -> Vec<Line> {
        self.rx.try_iter().collect()
    }
}
