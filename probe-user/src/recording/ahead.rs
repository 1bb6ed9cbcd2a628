//! Reading a recording ahead: one thread reads the files and sketches their lines (most of
//! the work of reading a long recording: JSON), in batches of about [`BATCH_BYTES`], while
//! the caller's thread takes each batch's lines in order (grouping them, for `replay`). On
//! two cores this halves the time to read a recording of a million attempts.

use std::{
    io,
    ops::Range,
    path::PathBuf,
    sync::mpsc::{self, Receiver, SyncSender},
    thread,
};

use super::{parse_sketch, read_file, why_skipped, LineProblem, Lines, Sketched};
use crate::sink::{incidents::DetachedSketch, json::wire::Line};

/// The text a batch holds before it is handed over.
pub(super) const BATCH_BYTES: usize = 1 << 20;
/// Batches read ahead of the caller, at most (the memory: about this many [`BATCH_BYTES`]).
const BATCHES_AHEAD: usize = 4;

/// A line as the reading thread read it.
enum Read {
    /// An `umount` line, sketched.
    Attempt(DetachedSketch),
    /// Any other line, whole.
    Line(Line),
}

/// What a batch holds, in the order it was read.
enum Item {
    /// A line: where its text is in the batch, its file (an index) and number, what was read.
    Line(Range<usize>, usize, usize, Read),
    /// A line skipped.
    Problem(LineProblem),
}

/// Lines read ahead, with their texts one after another.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    items: Vec<Item>,
}

/// The reading thread's side: fills batches and hands each over when full.
struct Filling {
    batch: Batch,
    to_caller: SyncSender<Batch>,
    /// Batches the caller is done with, to fill again.
    returned: Receiver<Batch>,
}

impl Filling {
    /// Hands the batch over (when it has anything) and takes an empty one.
    fn hand_over(&mut self) {
        if self.batch.items.is_empty() {
            return;
        }
        let mut next = self.returned.try_recv().unwrap_or_default();
        next.text.clear();
        next.items.clear();
        // The caller gone (it stopped early) leaves nothing to read for.
        let _ = self
            .to_caller
            .send(std::mem::replace(&mut self.batch, next));
    }
}

impl Lines for Filling {
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.batch.text
    }

    fn line(&mut self, start: usize, file: usize, number: usize) -> Result<(), String> {
        let read = match parse_sketch(&self.batch.text[start..]) {
            Ok(Sketched::Attempt(sketch)) => Ok(Read::Attempt(sketch.detach(&self.batch.text))),
            Ok(Sketched::Line(line)) => Ok(Read::Line(line)),
            Err(why) => Err(why),
        };
        let read = read.inspect_err(|_| self.batch.text.truncate(start))?;
        let end = self.batch.text.len();
        self.batch
            .items
            .push(Item::Line(start..end, file, number, read));
        if end >= BATCH_BYTES {
            self.hand_over();
        }
        Ok(())
    }

    fn problem(&mut self, problem: LineProblem) {
        self.batch.items.push(Item::Problem(problem));
    }
}

/// Calls `each` with every well-formed line of `files` in order, its text beside it (newline
/// included): an `umount` line of schema 1 as a sketch (`parse_sketch`), any other as
/// `parse_line` reads it, read ahead on another thread. Returns the lines skipped, in order:
/// as `for_each_line_with_text` does, and those `each` found malformed after all (their
/// whole parse, `whole_attempt`, failed: `each` said why). An I/O error is an error naming
/// the file, once the lines before it were handed to `each`.
pub fn for_each_sketch(
    files: &[PathBuf],
    mut each: impl FnMut(&[u8], Sketched<'_>) -> Result<(), String>,
) -> io::Result<Vec<LineProblem>> {
    let (to_caller, batches) = mpsc::sync_channel(BATCHES_AHEAD);
    let (to_reader, returned) = mpsc::channel();
    thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut filling = Filling {
                batch: Batch::default(),
                to_caller,
                returned,
            };
            let read = files
                .iter()
                .enumerate()
                .try_for_each(|(i, file)| read_file(file, i, &mut filling));
            filling.hand_over();
            read
        });
        let mut problems = Vec::new();
        for mut batch in batches {
            take_batch(&mut batch, files, &mut each, &mut problems);
            // The reader gone (an error) leaves nothing to return to.
            let _ = to_reader.send(batch);
        }
        match reader.join() {
            Ok(read) => read.map(|()| problems),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Hands `each` the lines of `batch` in order (leaving it empty), and keeps its problems
/// with theirs.
fn take_batch(
    batch: &mut Batch,
    files: &[PathBuf],
    each: &mut impl FnMut(&[u8], Sketched<'_>) -> Result<(), String>,
    problems: &mut Vec<LineProblem>,
) {
    let Batch { text, items } = batch;
    for item in items.drain(..) {
        match item {
            Item::Problem(problem) => problems.push(problem),
            Item::Line(range, file, number, read) => {
                let line = &text[range];
                let answer = match read {
                    Read::Attempt(sketch) => each(line, Sketched::Attempt(sketch.attach(text))),
                    Read::Line(whole) => each(line, Sketched::Line(whole)),
                };
                if let Err(why) = answer {
                    problems.push(LineProblem {
                        file: files[file].clone(),
                        line: number,
                        why: why_skipped(why, line.last() == Some(&b'\n')),
                    });
                }
            }
        }
    }
}
