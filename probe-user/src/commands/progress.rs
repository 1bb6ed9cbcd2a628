//! A progress line on stderr while a long recording is read (`replay`, `report`): drawn only on
//! a terminal, only once the reading has taken [`SHOW_AFTER`], redrawn at most every
//! [`EVERY`], and erased when the reading is done. A gigabyte takes seconds.

use std::{
    io::{self, IsTerminal, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

/// Reading that ends sooner shows no progress at all.
const SHOW_AFTER: Duration = Duration::from_millis(500);
/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);
/// The clock is read once every so many lines.
const LINES_PER_LOOK: u32 = 1024;

/// How far the reading has got, and where it is shown.
pub struct Progress<W: Write> {
    what: String,
    total: u64,
    done: u64,
    started: Instant,
    /// When (since `started`) the line may be drawn next.
    next_draw: Duration,
    lines: u32,
    /// Where the line goes; none: nowhere (not a terminal).
    out: Option<W>,
    drawn: bool,
}

impl Progress<io::Stderr> {
    /// Progress of reading `files` (their sizes now), called `what`, on stderr when it is a
    /// terminal and `shown` (a caller writing to the same terminal says no).
    pub fn on_stderr(what: &str, files: &[PathBuf], shown: bool) -> Self {
        let total = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let out = (shown && io::stderr().is_terminal()).then(io::stderr);
        Self::new(what, total, out, Instant::now())
    }
}

impl<W: Write> Progress<W> {
    /// Progress of reading `total` bytes, called `what`, shown on `out`, from `started`.
    pub fn new(what: &str, total: u64, out: Option<W>, started: Instant) -> Self {
        Self {
            what: what.to_owned(),
            total,
            done: 0,
            started,
            next_draw: SHOW_AFTER,
            lines: 0,
            out,
            drawn: false,
        }
    }

    /// A line of `bytes` was read (the clock is read once every [`LINES_PER_LOOK`] lines).
    pub fn add(&mut self, bytes: usize) {
        self.done += bytes as u64;
        self.lines = self.lines.wrapping_add(1);
        if self.out.is_some() && self.lines.is_multiple_of(LINES_PER_LOOK) {
            self.draw_at(Instant::now());
        }
    }

    /// Bytes read so far.
    #[cfg(test)]
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Draws the line if it is time at `now`.
    fn draw_at(&mut self, now: Instant) {
        if now.duration_since(self.started) < self.next_draw || self.total == 0 {
            return;
        }
        self.next_draw = now.duration_since(self.started) + EVERY;
        let line = self.line();
        if let Some(out) = &mut self.out {
            // A terminal that cannot be written to loses only the progress line.
            let _ = write!(out, "\r{line}\x1b[K").and_then(|()| out.flush());
            self.drawn = true;
        }
    }

    /// `busyprobe: reading the recording: 41% (412 of 1008 MB)`.
    fn line(&self) -> String {
        let mb = |bytes: u64| bytes as f64 / 1e6;
        format!(
            "busyprobe: {}: {}% ({:.0} of {:.0} MB)",
            self.what,
            (self.done.min(self.total) * 100)
                .checked_div(self.total)
                .unwrap_or(0),
            mb(self.done.min(self.total)),
            mb(self.total)
        )
    }

    /// The reading is done: the line, if drawn, is erased.
    pub fn finish(mut self) {
        if let (true, Some(out)) = (self.drawn, &mut self.out) {
            let _ = write!(out, "\r\x1b[K").and_then(|()| out.flush());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing before half a second; then the line, at most every quarter second; erased at
    /// the end.
    #[test]
    fn the_line_comes_late_seldom_and_goes() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut p = Progress::new(
            "reading the recording",
            1_008_000_000,
            Some(Vec::new()),
            start,
        );
        p.done = 412_000_000;
        p.draw_at(ms(400));
        assert!(p.out.as_ref().unwrap().is_empty(), "too early");
        p.draw_at(ms(600));
        p.done = 500_000_000;
        p.draw_at(ms(700));
        let drawn = String::from_utf8(p.out.clone().unwrap()).unwrap();
        assert_eq!(
            drawn, "\rbusyprobe: reading the recording: 40% (412 of 1008 MB)\x1b[K",
            "once: the next is due at 850 ms"
        );
        p.draw_at(ms(900));
        let out = p.out.clone().unwrap();
        assert!(String::from_utf8_lossy(&out).ends_with("49% (500 of 1008 MB)\x1b[K"));
        let mut erased = Vec::new();
        let mut p2 = Progress::new("r", 10, Some(&mut erased), start);
        p2.draw_at(ms(600));
        p2.finish();
        assert!(String::from_utf8(erased).unwrap().ends_with("\r\x1b[K"));
    }

    /// A short read, or no terminal, draws nothing and erases nothing.
    #[test]
    fn a_quick_read_or_no_terminal_shows_nothing() {
        let mut out = Vec::new();
        let mut p = Progress::new("r", 10, Some(&mut out), Instant::now());
        p.add(10);
        p.finish();
        assert!(out.is_empty());
        let mut none: Progress<Vec<u8>> = Progress::new("r", 10, None, Instant::now());
        none.draw_at(Instant::now() + Duration::from_secs(5));
        assert!(!none.drawn);
    }
}
