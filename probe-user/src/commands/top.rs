//! `busyprobe top`: the terminal UI, fed live by the probes or by a recording.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, IsTerminal, Read, Seek, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::ExitCode,
    sync::mpsc,
    thread,
};

use anyhow::{Context, Result};

use super::progress::Progress;
use crate::pipeline::probes::{block_on, stream, Output};
use crate::{
    cli::{ReplayArgs, TopArgs},
    loader,
    loader::OpenTimes,
    recording::{
        files_in_order, for_each_sketch, markdown, parse_line, whole_attempt, LineProblem, Sketched,
    },
    sink::{
        json::wire::Line,
        tui::{self, app::App, feed::Feed, term::TerminalGuard},
    },
};

/// Whether stdin and stdout are a terminal (where plain `busyprobe` shows `top`).
pub fn on_a_terminal() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// `busyprobe replay`: the screen over recordings, or over a live stream on stdin (`-`);
/// malformed lines listed after it closes.
pub fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    if args.files.len() == 1 && args.files[0].as_os_str() == "-" {
        let title = "replay of stdin".to_string();
        show_stream(io::stdin(), args.keep, "replay -", title, "stdin", false)?;
        return Ok(ExitCode::SUCCESS);
    }
    let files = files_in_order(&args.files);
    let names: Vec<String> = args
        .files
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or(p.as_os_str())
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    show_recording(&files, args.keep, format!("replay of {}", names.join(", ")))?;
    Ok(ExitCode::SUCCESS)
}

/// The screen's state, empty: at most `keep` events (and incidents), titled `source`; `r`
/// writes an incident's report as `busyprobe report` does.
fn screen(keep: usize, source: String) -> App {
    App::new(keep, source).with_renderer(markdown::incident)
}

/// The screen over the lines of `files` (in order), titled `source`; malformed lines are
/// listed on stderr once the terminal is back.
pub fn show_recording(files: &[PathBuf], keep: usize, source: String) -> Result<()> {
    let mut app = screen(keep, source);
    let mut progress = Progress::on_stderr("reading the recording", files, true);
    let read = read_recording(&mut app, files, keep, &mut progress);
    progress.finish();
    let problems = read.context("reading the recording")?;
    tui::show(TerminalGuard::new("replay")?, app, None)?;
    for problem in &problems {
        eprintln!("busyprobe: {problem}");
    }
    Ok(())
}

/// Reads the recording `files` into `app`, whose list keeps `keep` attempts, telling
/// `progress` of every line read; returns the lines skipped. Every attempt is grouped as it
/// is read, from its sketch (its whole line is read only when its incident takes something
/// from it); the newest `keep` are kept as text and listed once the recording is read.
fn read_recording(
    app: &mut App,
    files: &[PathBuf],
    keep: usize,
    progress: &mut Progress<impl Write>,
) -> std::io::Result<Vec<LineProblem>> {
    let mut newest: VecDeque<Vec<u8>> = VecDeque::with_capacity(keep.min(1 << 16));
    let problems = for_each_sketch(files, |text, line| {
        progress.add(text.len());
        match line {
            Sketched::Attempt(mut attempt) => {
                let whole = match app.needs_whole(&attempt) {
                    true => Some(whole_attempt(text)?),
                    false => None,
                };
                attempt.whole = whole.as_deref();
                app.group_sketch(&attempt);
            }
            Sketched::Line(line @ Line::Umount(_)) => app.group(line),
            Sketched::Line(line) => {
                app.group(line);
                return Ok(());
            }
        }
        // The oldest kept text's buffer takes the newest (no allocation once `keep` are kept).
        let mut kept = match newest.len() == keep.max(1) {
            true => newest.pop_front().unwrap_or_default(),
            false => Vec::new(),
        };
        kept.clear();
        kept.extend_from_slice(text);
        newest.push_back(kept);
        Ok(())
    })?;
    for text in newest {
        if let Ok(Line::Umount(attempt)) = parse_line(&text) {
            app.list_grouped(*attempt);
        }
    }
    Ok(problems)
}

/// The screen (of `command`, titled `title`) over JSON Lines arriving on `input` as they
/// come; it stays up after the stream ends, until the user quits. Malformed lines are listed
/// once the terminal is back, each after `source:`. A `live` stream moves the screen's time
/// on by the wall clock too.
fn show_stream(
    input: impl Read + Send + 'static,
    keep: usize,
    command: &str,
    title: String,
    source: &str,
    live: bool,
) -> Result<()> {
    let guard = TerminalGuard::new(command)?;
    let (to_screen, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        let input = io::BufReader::with_capacity(BATCH_BYTES, Batched::new(input));
        let problems = forward_lines(input, &to_screen);
        // Keep the channel open: the screen stays until `q`, not until the stream ends.
        (problems, to_screen)
    });
    let app = screen(keep, title);
    let app = if live { app.on_the_wall_clock() } else { app };
    tui::show(guard, app, Some(lines))?;
    if reader.is_finished() {
        if let Ok((problems, _)) = reader.join() {
            for problem in problems {
                eprintln!("busyprobe: {source}:{problem}");
            }
        }
    }
    Ok(())
}

/// Sends each well-formed line of `input` to the screen, in order; returns the malformed
/// ones as `LINE: why`. Stops at the end of the input or when the screen is gone.
fn forward_lines(input: impl io::BufRead, to_screen: &mpsc::Sender<Line>) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in input.split(b'\n').enumerate() {
        let Ok(line) = line else { break };
        match parse_line(&line) {
            Ok(line) => {
                if to_screen.send(line).is_err() {
                    break;
                }
            }
            Err(why) => problems.push(format!("{}: {why}", number + 1)),
        }
    }
    problems
}

/// How long the reader of a stream lets lines gather once it has read all there was: the
/// screen draws at most every 100 ms, and a line read as soon as it is written costs a
/// wake-up of its own (at 10,000 lines a second, more than parsing them).
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// The reader's buffer: more than [`BATCH_WAIT`] of lines at 10,000 a second.
const BATCH_BYTES: usize = 256 << 10;

/// A read shorter than this found a trickle (a few lines): the writer is slower than the
/// reader. A fast writer (a pipe of 64 KiB kept full) gives longer reads, and is never waited
/// on.
const TRICKLE_BYTES: usize = 4 << 10;

/// A stream read in batches: after a read that found a trickle (the reader caught up with a
/// slow writer), the next one waits [`BATCH_WAIT`] first.
struct Batched<R> {
    inner: R,
    caught_up: bool,
}

impl<R> Batched<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            caught_up: false,
        }
    }
}

impl<R: Read> Read for Batched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.caught_up {
            thread::sleep(BATCH_WAIT);
        }
        let read = self.inner.read(buf)?;
        self.caught_up = read < buf.len().min(TRICKLE_BYTES);
        Ok(read)
    }
}

/// `busyprobe top`: the screen over the live stream.
pub fn live(args: &TopArgs) -> Result<ExitCode> {
    if let Some(socket) = &args.connect {
        let input = super::connect::connect(socket)?.into_inner();
        let title = format!("live from the agent at {}", socket.display());
        let source = socket.display().to_string();
        show_stream(input, args.keep, "top --connect", title, &source, true)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mode = loader::resolve_mode("top", args.stream.mode)?;
    let guard = TerminalGuard::new("top")?;
    let tracking = if args.stream.no_holders {
        "holders off"
    } else {
        "holders on"
    };
    let app = screen(
        args.keep,
        format!("live, {} mode, {tracking}", mode.mode.as_str()),
    )
    .on_the_wall_clock();
    let (to_screen, lines) = mpsc::channel();
    // Messages (warnings, the probes' logs) would scribble over the screen: they are kept
    // and printed once the terminal is back.
    let messages = CapturedStderr::start()?;
    let (quit, stop_on) = tokio::sync::oneshot::channel();
    let screen = thread::spawn(move || {
        let shown = tui::show(guard, app, Some(lines));
        // The screen is closed (the terminal restored): the stream ends too. If it is
        // already over, nobody is listening: harmless.
        let _ = quit.send(());
        shown
    });
    let streamed = block_on(stream(
        &args.stream,
        Output {
            sink: Box::new(Feed::new(to_screen)),
            stop_after: None,
            stop_on: Some(stop_on),
            // The screen going away ends the stream quietly, as a closed pipe does `watch`.
            is_stdout: true,
            command: "top",
            mode,
            open_times: args.stream.open_times(OpenTimes::All),
            on_ready: None,
        },
    ));
    let shown = screen
        .join()
        .map_err(|_| anyhow::anyhow!("the screen thread panicked"))?;
    messages.replay()?;
    shown?;
    streamed
}

/// Stderr sent to a temporary file while the screen is up, then printed.
struct CapturedStderr {
    saved: OwnedFd,
    file: File,
}

impl CapturedStderr {
    fn start() -> Result<Self> {
        let file = tempfile::tempfile().context("creating a file for messages")?;
        // SAFETY: dup and dup2 on valid descriptors; the duplicate is owned from here on.
        let saved = unsafe {
            let fd = libc::dup(libc::STDERR_FILENO);
            if fd < 0 || libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO) < 0 {
                return Err(io::Error::last_os_error()).context("redirecting stderr");
            }
            OwnedFd::from_raw_fd(fd)
        };
        Ok(Self { saved, file })
    }

    fn replay(mut self) -> Result<()> {
        // SAFETY: dup2 of a descriptor we own onto stderr.
        if unsafe { libc::dup2(self.saved.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
            return Err(io::Error::last_os_error()).context("restoring stderr");
        }
        let mut text = Vec::new();
        self.file.rewind()?;
        self.file.read_to_end(&mut text)?;
        io::stderr().write_all(&text)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recording read as sketches groups as its lines pushed whole do (the live way):
    /// the same incidents (holders named late, a late failure, targets not UTF-8, more
    /// incidents than are kept), the same list, the same header; and a line grouped as a
    /// sketch whose whole line is malformed is reported.
    #[test]
    fn a_recording_read_as_sketches_groups_as_its_whole_lines_do() {
        use crate::sink::incidents::tests::attempt_at;
        let mut attempts = Vec::new();
        for round in 0..4u64 {
            let t = round * 100_000;
            let target = |name: &str| format!("/m/{name}{round}");
            let (a, b) = (target("a"), target("b\u{fffd}"));
            attempts.extend([
                attempt_at(t + 1, &a, t, true, &[("scanner", 9)]),
                attempt_at(t + 2, &b, t + 1, true, &[]),
                attempt_at(t + 3, &a, t + 2, true, &[("scanner", 9), ("backup", 10)]),
                attempt_at(t + 5, &a, t + 10, false, &[]),
                attempt_at(t + 4, &a, t + 5, true, &[("late", 11)]),
                attempt_at(t + 6, &b, t + 20, true, &[("sh", 12)]),
                attempt_at(t + 7, &target("c"), t + 30, false, &[]),
                attempt_at(t + 8, &a, t + 40, true, &[]),
            ]);
        }
        let mut text = String::new();
        for a in &attempts {
            text.push_str(&serde_json::to_string(a).unwrap());
            text.push('\n');
        }
        // A line whose grouped fields read well but whose whole is malformed, opening an
        // incident: reported, and grouped nowhere.
        let bad = attempt_at(999_999, "/m/bad", 999_999, true, &[]);
        let bad = serde_json::to_string(&bad)
            .unwrap()
            .replace("\"uid\":0", "\"uid\":\"x\"");
        text.push_str(&bad);
        text.push('\n');
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.jsonl");
        std::fs::write(&file, &text).unwrap();
        for keep in [3, 100] {
            let mut live = App::new(keep, "s".into());
            for a in &attempts {
                live.push(Line::Umount(Box::new(a.clone())));
            }
            let mut read = App::new(keep, "s".into());
            let mut progress = Progress::new("r", 1, Some(Vec::new()), std::time::Instant::now());
            let problems =
                read_recording(&mut read, std::slice::from_ref(&file), keep, &mut progress)
                    .unwrap();
            assert_eq!(
                progress.done(),
                text.len() as u64,
                "every line's bytes counted"
            );
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].line, attempts.len() + 1);
            assert_eq!(problems[0].why, parse_line(bad.as_bytes()).unwrap_err());
            let incidents = |app: &App| {
                app.visible_incidents()
                    .iter()
                    .map(|(n, inc)| format!("{n} {inc:?}"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(incidents(&read), incidents(&live), "keep {keep}");
            assert_eq!(read.incidents.len(), keep.min(12), "keep {keep}");
            let ids = |app: &App| app.visible().iter().map(|a| a.id).collect::<Vec<_>>();
            assert_eq!(ids(&read), ids(&live));
            assert_eq!(read.incidents.rate.last(10), live.incidents.rate.last(10));
        }
    }

    /// Every byte comes through; only a read that found less than it could take (and
    /// less than a trickle) makes the next one wait.
    #[test]
    fn a_batched_stream_waits_only_once_caught_up() {
        let mut fast = Batched::new(io::Cursor::new(vec![b'x'; 3 * TRICKLE_BYTES]));
        let mut buf = vec![0; 2 * TRICKLE_BYTES];
        assert_eq!(fast.read(&mut buf).unwrap(), 2 * TRICKLE_BYTES);
        assert!(!fast.caught_up);
        assert_eq!(fast.read(&mut buf).unwrap(), TRICKLE_BYTES);
        assert!(
            !fast.caught_up,
            "a read of a trickle or more is never waited after"
        );

        let mut input = Batched::new(io::Cursor::new(b"0123456789".to_vec()));
        let mut buf = [0; 4];
        let mut read = Vec::new();
        let mut waits = Vec::new();
        loop {
            let n = input.read(&mut buf).unwrap();
            read.extend_from_slice(&buf[..n]);
            waits.push(input.caught_up);
            if n == 0 {
                break;
            }
        }
        assert_eq!(read, b"0123456789");
        assert_eq!(waits, [false, false, true, true]);
    }
}
