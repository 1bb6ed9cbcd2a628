//! Reading a child's output line by line without ever blocking the test forever.
//!
//! A background thread reads the pipe to its end (even when nobody takes the lines any more,
//! so the writer never blocks) and sends each line over a channel; the test waits on the
//! channel with a deadline. End of file closes the channel.

use std::{
    io::{BufRead, BufReader, Read},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// What waiting for the next line gave.
#[derive(Debug)]
pub enum Next {
    /// One line, without its line end (lossy UTF-8).
    Line(String),
    /// The deadline passed first.
    TimedOut,
    /// The writer closed the pipe (end of file).
    Closed,
}

/// Lines of one pipe, read on a background thread.
pub struct Lines {
    rx: Receiver<String>,
    reader: JoinHandle<()>,
}

impl Lines {
    /// Starts a thread that reads `pipe` to its end.
    pub fn spawn(pipe: impl Read + Send + 'static) -> Self {
        Self::spawn_with(pipe, |_| {})
    }

    /// Like [`Lines::spawn`], and also hands every line to `also` (on the reader thread)
    /// before queueing it.
    fn spawn_with(pipe: impl Read + Send + 'static, also: impl Fn(&str) + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_owned();
                        also(&line);
                        // Nobody listening any more is fine: keep draining the pipe.
                        let _ = tx.send(line);
                    }
                }
            }
        });
        Self { rx, reader }
    }

    /// Like [`Lines::spawn`], also appending every line to the returned shared text (kept for
    /// failure messages).
    pub fn spawn_collected(pipe: impl Read + Send + 'static) -> (Self, Arc<Mutex<String>>) {
        let text = Arc::new(Mutex::new(String::new()));
        let keep = Arc::clone(&text);
        let lines = Self::spawn_with(pipe, move |line| {
            let mut all = keep.lock().unwrap();
            all.push_str(line);
            all.push('\n');
        });
        (lines, text)
    }

    /// The next line, waiting at most until `deadline`.
    pub fn next_until(&self, deadline: Instant) -> Next {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => Next::Line(line),
            Err(RecvTimeoutError::Timeout) => Next::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    /// The next line of a child's stdout (these lines) within `timeout`; else fails the test
    /// saying it gave no `what`, with the child's stderr (`stderr`, from
    /// [`Lines::spawn_collected`], read to its end first when it closes within a second: a
    /// panic message is in it).
    pub fn expect_line(
        &self,
        timeout: Duration,
        what: &str,
        stderr: &(Lines, Arc<Mutex<String>>),
    ) -> String {
        match self.next_until(Instant::now() + timeout) {
            Next::Line(line) => line,
            other => {
                stderr.0.wait_eof(Instant::now() + Duration::from_secs(1));
                panic!(
                    "no {what} ({other:?}); stderr:\n{}",
                    stderr.1.lock().unwrap()
                )
            }
        }
    }

    /// Waits at most until `deadline` for the pipe's end of file to be read (every line has
    /// then been handed to `also`); returns whether it was.
    pub fn wait_eof(&self, deadline: Instant) -> bool {
        while !self.reader.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }
}
