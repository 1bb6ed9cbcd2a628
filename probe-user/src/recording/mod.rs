//! Reading recordings back (`report`): JSON Lines files, possibly rotated, possibly cut by a
//! crash, possibly corrupt or from a newer busyprobe. Lines are streamed one at a time; a torn
//! last line is skipped with a warning, a malformed line is reported with its file and line
//! number and skipped; nothing panics.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::sink::{
    incidents::AttemptSketch,
    json::wire::{Line, UmountLine},
};

mod ahead;
pub mod markdown;
pub mod report;

/// The highest schema version this build knows.
pub const KNOWN_SCHEMA: u64 = 1;

/// The longest line read: a real line is a few KiB, so a longer one is damage (or hostile)
/// and is skipped without being held in memory.
pub const MAX_LINE: usize = 16 << 20;

/// A problem with one line, reported and skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineProblem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub why: String,
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.why)
    }
}

/// The files of a recording in the order they were written: for each path given, its rotated
/// predecessors (`FILE.N` .. `FILE.1`) first when they exist, then the file itself.
pub fn files_in_order(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in paths {
        let mut older: Vec<PathBuf> = (1..)
            .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
            .take_while(|p| p.exists())
            .collect();
        older.reverse();
        for p in older.into_iter().chain(std::iter::once(path.clone())) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Calls `each` with every well-formed line of `files`, in order; returns the lines that were
/// skipped. An I/O error (a missing file, a directory) is an error naming the file. (The
/// tests' way: the commands read each line's text too, for their progress.)
#[cfg(test)]
pub fn for_each_line(
    files: &[PathBuf],
    mut each: impl FnMut(Line),
) -> io::Result<Vec<LineProblem>> {
    for_each_line_with_text(files, |_, line| each(line))
}

/// Calls `each` with every well-formed line of `files`, in order, its text (its bytes as
/// read, newline included) beside it; returns the lines that were skipped. An I/O error (a
/// missing file, a directory) is an error naming the file.
pub fn for_each_line_with_text(
    files: &[PathBuf],
    mut each: impl FnMut(&[u8], Line),
) -> io::Result<Vec<LineProblem>> {
    for_each_text(files, |text| {
        each(text, parse_line(text)?);
        Ok(())
    })
}

pub use ahead::for_each_sketch;

/// A line as grouping reads it: an attempt's sketch, or any other line whole.
pub enum Sketched<'a> {
    /// An `umount` line, sketched.
    Attempt(AttemptSketch<'a>),
    /// Any other line (or an `umount` line only the whole parse could read).
    Line(Line),
}

/// Calls `each` with the text of every line of `files` that is not too long, in order;
/// returns the lines it was given and found malformed, and those too long.
fn for_each_text(
    files: &[PathBuf],
    each: impl FnMut(&[u8]) -> Result<(), String>,
) -> io::Result<Vec<LineProblem>> {
    let mut lines = OneByOne {
        buf: Vec::new(),
        each,
        problems: Vec::new(),
    };
    for (i, file) in files.iter().enumerate() {
        read_file(file, i, &mut lines)?;
    }
    Ok(lines.problems)
}

/// Where [`read_file`] puts what it reads.
trait Lines {
    /// The buffer the next line is appended to.
    fn buffer(&mut self) -> &mut Vec<u8>;
    /// The line appended to the buffer at `start..` (newline included), line `number` of
    /// file `file` (an index into the files read); an error says what is wrong with it.
    fn line(&mut self, start: usize, file: usize, number: usize) -> Result<(), String>;
    /// A line skipped.
    fn problem(&mut self, problem: LineProblem);
}

/// Each line handed to a function as it is read.
struct OneByOne<F> {
    buf: Vec<u8>,
    each: F,
    problems: Vec<LineProblem>,
}

impl<F: FnMut(&[u8]) -> Result<(), String>> Lines for OneByOne<F> {
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn line(&mut self, start: usize, _: usize, _: usize) -> Result<(), String> {
        let answer = (self.each)(&self.buf[start..]);
        self.buf.truncate(start);
        answer
    }

    fn problem(&mut self, problem: LineProblem) {
        self.problems.push(problem);
    }
}

/// Reads the lines of file `path`, file number `index` of those read, into `lines`.
fn read_file(path: &Path, index: usize, lines: &mut impl Lines) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(named)?;
    if file.metadata().map_err(named)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!(
                "{}: is a directory, not a recording: name the recording's file (the FILE \
                 given to `busyprobe record --output`)",
                path.display()
            ),
        ));
    }
    let mut reader = BufReader::with_capacity(READ_BYTES, file);
    let mut number = 0;
    loop {
        let buf = lines.buffer();
        let start = buf.len();
        let (read, too_long) = read_line(&mut reader, buf, MAX_LINE).map_err(named)?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        if number == 1 {
            if let Some(v) = unreadable_header(&buf[start..]) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: recorded with schema version {v}; this busyprobe reads schema \
                         {KNOWN_SCHEMA}: read it with the busyprobe that wrote it",
                        path.display()
                    ),
                ));
            }
        }
        if too_long {
            lines.problem(LineProblem {
                file: path.to_path_buf(),
                line: number,
                why: format!("longer than {} MiB: skipped", MAX_LINE >> 20),
            });
            continue;
        }
        let ended = buf.last() == Some(&b'\n');
        if let Err(why) = lines.line(start, index, number) {
            lines.problem(LineProblem {
                file: path.to_path_buf(),
                line: number,
                why: why_skipped(why, ended),
            });
        }
    }
}

/// Why a malformed line is skipped: `why`, or, for a last line without its newline, that
/// the recorder stopped while writing it.
fn why_skipped(why: String, ended: bool) -> String {
    match ended {
        true => why,
        false => "torn last line (the recorder stopped while writing it): skipped".into(),
    }
}

/// The reading buffer's size.
const READ_BYTES: usize = 256 << 10;

/// Appends one line to `buf`, at most `max` bytes of it: a longer line is consumed to its
/// end without being kept. Returns the bytes consumed and whether the line was too long.
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<(usize, bool)> {
    let start = buf.len();
    let mut read = reader
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', buf)?;
    if buf.len() - start <= max || buf.last() == Some(&b'\n') {
        return Ok((read, false));
    }
    buf.truncate(start);
    loop {
        let available = reader.fill_buf()?;
        let (used, ended) = match available.iter().position(|b| *b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), available.is_empty()),
        };
        reader.consume(used);
        read += used;
        if ended {
            return Ok((read, true));
        }
    }
}

/// One line: a JSON object with a `type` and schema version [`KNOWN_SCHEMA`] (fields and types
/// may be added within a version; another version cannot be read safely), read into the
/// typed model. A line of a known type that lacks a field or has one of the wrong type is
/// malformed.
pub fn parse_line(bytes: &[u8]) -> Result<Line, String> {
    if let Some(line) = parse_well_formed(bytes) {
        return Ok(line);
    }
    let (text, value) = parse_any_version(bytes)?;
    match value.get("v").and_then(Value::as_u64) {
        // Read again from the text, typed: through the `Value`, objects would lose their order.
        Some(KNOWN_SCHEMA) => serde_json::from_str(text).map_err(|e| {
            let kind = value.get("type").and_then(Value::as_str).unwrap_or("?");
            format!("not a well-formed {kind} line: {e}")
        }),
        Some(v) => Err(format!(
            "schema version {v}, which this busyprobe (schema {KNOWN_SCHEMA}) cannot read: skipped; \
             read it with the busyprobe that wrote it"
        )),
        None => Err("no schema version (\"v\"): not a busyprobe line".into()),
    }
}

/// A line as [`for_each_sketch`] reads it: an `umount` line of schema [`KNOWN_SCHEMA`] as a
/// sketch when its grouped fields read well (the others are checked as JSON only), anything
/// else as [`parse_line`] reads it.
pub fn parse_sketch(bytes: &[u8]) -> Result<Sketched<'_>, String> {
    let sketch = std::str::from_utf8(bytes).ok().and_then(|text| {
        AttemptSketch::from_text(text.trim_end_matches(['\n', '\r']), KNOWN_SCHEMA)
    });
    match sketch {
        Some(sketch) => Ok(Sketched::Attempt(sketch)),
        None => parse_line(bytes).map(Sketched::Line),
    }
}

/// The whole line of an attempt read as a sketch, or why it is malformed.
pub fn whole_attempt(bytes: &[u8]) -> Result<Box<UmountLine>, String> {
    match parse_line(bytes)? {
        Line::Umount(attempt) => Ok(attempt),
        _ => Err("not an umount line".into()),
    }
}

/// The envelope of a line: its schema version and type, every other field skipped unread.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    v: Option<u64>,
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// The fast way to [`parse_line`]'s answer for a well-formed line of schema
/// [`KNOWN_SCHEMA`]: its envelope, then its type's struct straight from the text (no
/// `Value`, and no buffering of the fields that a tagged enum does); `None` for anything
/// else, which the slow way reads again to say what is wrong. At 10,000 lines a second,
/// parsing is most of what `replay -` does.
fn parse_well_formed(bytes: &[u8]) -> Option<Line> {
    let text = std::str::from_utf8(bytes)
        .ok()?
        .trim_end_matches(['\n', '\r']);
    let envelope: Envelope = serde_json::from_str(text).ok()?;
    if envelope.v != Some(KNOWN_SCHEMA) {
        return None;
    }
    match envelope.kind?.as_ref() {
        "umount" => serde_json::from_str(text).ok().map(Line::Umount),
        "stats" => serde_json::from_str(text).ok().map(Line::Stats),
        _ => serde_json::from_str(text).ok(),
    }
}

/// A recording's first line, when it is a header of a schema version this build cannot read:
/// the whole file is from another busyprobe, an error rather than a skipped line.
fn unreadable_header(first: &[u8]) -> Option<u64> {
    let (_, value) = parse_any_version(first).ok()?;
    let v = value.get("v").and_then(Value::as_u64)?;
    (value.get("type").and_then(Value::as_str) == Some("header") && v != KNOWN_SCHEMA).then_some(v)
}

/// The line's text (without its newline) and its JSON, an object with a `"type"`.
fn parse_any_version(bytes: &[u8]) -> Result<(&str, Value), String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| "not UTF-8 (a recording is JSON)".to_string())?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err("empty line".into());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !value.get("type").is_some_and(Value::is_string) {
        return Err("not a busyprobe line (no \"type\")".into());
    }
    Ok((text, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::incidents::AttemptSketch;

    /// A whole `umount` line (with its newline) of attempt `id`, as `watch --json` writes it.
    fn umount_line(id: u64) -> String {
        let mut a = crate::event::sample_attempt(b"/m", Some(b"/m"), -16, 0);
        a.id = id;
        format!("{}\n", serde_json::to_string(&UmountLine::new(&a)).unwrap())
    }

    fn id(line: &Line) -> Option<u64> {
        match line {
            Line::Umount(u) => Some(u.id),
            _ => None,
        }
    }

    #[test]
    fn an_absurdly_long_line_is_skipped_without_being_kept() {
        let mut input = io::Cursor::new(b"short\n0123456789abcdef\nnext\n0123456789".to_vec());
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            buf.clear();
            let (read, too_long) = read_line(&mut input, &mut buf, 8).unwrap();
            if read == 0 {
                break;
            }
            lines.push((String::from_utf8(buf.clone()).unwrap(), too_long, read));
        }
        assert_eq!(
            lines,
            [
                ("short\n".to_string(), false, 6),
                (String::new(), true, 17),
                ("next\n".to_string(), false, 5),
                (String::new(), true, 10),
            ]
        );
    }

    #[test]
    fn a_line_over_the_limit_is_a_problem_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut text = umount_line(1).into_bytes();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        text.push(b'\n');
        text.extend(umount_line(2).into_bytes());
        std::fs::write(&path, text).unwrap();
        let mut ids = Vec::new();
        let problems = for_each_line(&[path], |l| ids.extend(id(&l))).unwrap();
        assert_eq!(ids, [1, 2]);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].line, problems[0].why.as_str()),
            (2, "longer than 16 MiB: skipped")
        );
    }

    #[test]
    fn parses_objects_with_a_type_and_schema_1_only() {
        let with_new_field = umount_line(3).replacen("{", "{\"new\":[1,{}],", 1);
        assert_eq!(id(&parse_line(with_new_field.as_bytes()).unwrap()), Some(3));
        assert_eq!(
            parse_line(b"{\"v\":1,\"type\":\"future-thing\",\"x\":1}").unwrap(),
            Line::Other,
            "an unknown type is read, and ignored by every reader"
        );
        assert_eq!(
            parse_line(b"{\"v\":1,\"type\":\"umount\",\"id\":1}").unwrap_err(),
            "not a well-formed umount line: missing field `ts`"
        );
        assert_eq!(
            parse_line(
                umount_line(1)
                    .replace("\"pid\":1234", "\"pid\":\"x\"")
                    .as_bytes()
            )
            .unwrap_err(),
            "not a well-formed umount line: invalid type: string \"x\", expected u32"
        );
        assert_eq!(
            parse_line(b"{\"v\":9,\"type\":\"future\",\"x\":1}").unwrap_err(),
            "schema version 9, which this busyprobe (schema 1) cannot read: skipped; read it \
             with the busyprobe that wrote it"
        );
        assert_eq!(
            parse_line(b"{\"type\":\"umount\"}").unwrap_err(),
            "no schema version (\"v\"): not a busyprobe line"
        );
        assert_eq!(
            parse_line(b"[1,2]").unwrap_err(),
            "not a busyprobe line (no \"type\")"
        );
        assert!(parse_line(b"{\"v\":1,\"type\":")
            .unwrap_err()
            .starts_with("not JSON"));
        assert_eq!(
            parse_line(b"\xff\xfe").unwrap_err(),
            "not UTF-8 (a recording is JSON)"
        );
        assert_eq!(parse_line(b"\n").unwrap_err(), "empty line");
    }

    /// The fast way reads what the slow way reads, and leaves everything else to it.
    #[test]
    fn the_fast_way_agrees_with_the_slow_one() {
        let slow = |text: &str| {
            let (text, _) = parse_any_version(text.as_bytes()).unwrap();
            serde_json::from_str::<Line>(text).unwrap()
        };
        let stats = serde_json::to_string(&crate::sink::json::wire::StatsLine::new(
            std::time::SystemTime::now(),
            &crate::stats::Stats::default(),
            true,
        ))
        .unwrap();
        let header = r#"{"v":1,"type":"header","x":1}"#;
        let lost = serde_json::to_string(&crate::sink::json::wire::LostLine::slow_client(
            std::time::SystemTime::now(),
            4,
        ))
        .unwrap();
        for text in [umount_line(7).as_str(), &stats, &lost] {
            assert_eq!(
                parse_well_formed(text.as_bytes()),
                Some(slow(text)),
                "{text}"
            );
        }
        for text in [
            header,
            r#"{"v":2,"type":"umount"}"#,
            r#"{"v":1.0,"type":"stats"}"#,
            r#"{"v":1,"type":7}"#,
            r#"{"v":1}"#,
            "{\"v\":1,\"type\":",
        ] {
            assert_eq!(parse_well_formed(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn a_file_from_another_schema_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.jsonl");
        std::fs::write(
            &file,
            b"{\"v\":2,\"type\":\"header\"}\n{\"v\":2,\"type\":\"umount\"}\n",
        )
        .unwrap();
        let err = for_each_line(std::slice::from_ref(&file), |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            format!(
                "{}: recorded with schema version 2; this busyprobe reads schema 1: read it \
                 with the busyprobe that wrote it",
                file.display()
            )
        );
    }

    #[test]
    fn skips_torn_and_malformed_lines_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.jsonl");
        let header =
            crate::sink::json::header_line("h", "6.1", "tracepoint", std::time::UNIX_EPOCH);
        let text = format!("{header}\ngarbage\n{}{{\"v\":1,\"ty", umount_line(1));
        std::fs::write(&file, text).unwrap();
        let mut seen = Vec::new();
        let problems = for_each_line(std::slice::from_ref(&file), |l| {
            seen.push(match l {
                Line::Header(_) => "header",
                Line::Umount(_) => "umount",
                _ => "other",
            })
        })
        .unwrap();
        assert_eq!(seen, ["header", "umount"]);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].why.starts_with("not JSON"), "{}", problems[0]);
        assert_eq!(problems[1].line, 4);
        assert!(
            problems[1].why.starts_with("torn last line"),
            "{}",
            problems[1]
        );
        assert!(problems[1].to_string().contains("r.jsonl:4: torn"));
    }

    #[test]
    fn rotated_files_come_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.jsonl");
        for name in ["r.jsonl", "r.jsonl.1", "r.jsonl.2"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let order: Vec<String> = files_in_order(&[file])
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(order, ["r.jsonl.2", "r.jsonl.1", "r.jsonl"]);
    }

    #[test]
    fn missing_files_are_errors() {
        let err = for_each_line(&[PathBuf::from("/no/such/recording")], |_| {}).unwrap_err();
        assert!(err.to_string().contains("/no/such/recording"), "{err}");
    }

    #[test]
    fn a_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = for_each_line(&[dir.path().to_path_buf()], |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
        assert_eq!(
            err.to_string(),
            format!(
                "{}: is a directory, not a recording: name the recording's file (the FILE \
                 given to `busyprobe record --output`)",
                dir.path().display()
            )
        );
    }

    /// Attempts with every kind of field a sketch reads: text and not UTF-8, with escapes,
    /// holders that are processes or not, with and without a path, a mount or not.
    fn varied_attempts() -> Vec<UmountLine> {
        use crate::model::{sample_attribution, sample_process_holder, Holder, HolderKind, Seen};
        let mut out = Vec::new();
        for (n, target) in [&b"/m"[..], b"/m\xff\xfe", b"/a \"q\"\\b\n\t"]
            .into_iter()
            .enumerate()
        {
            let mut a = crate::event::sample_attempt(target, Some(target), -16, 0);
            a.id = 10 * n as u64;
            out.push(UmountLine::new(&a));
            let mut fd = sample_process_holder(HolderKind::Fd, 812, 7, b"scanner", None);
            fd.path = Some([target, b"/f\xff \"x\""].concat());
            let cwd = sample_process_holder(HolderKind::Cwd, 812, 8, b"sh", None);
            let kernel = Holder::new(HolderKind::Submount, 812, Seen::KernelScan);
            a.id += 1;
            a.attribution = Some(Ok(sample_attribution("/m", vec![fd, cwd, kernel])));
            out.push(UmountLine::new(&a));
            a.id += 1;
            a.call.ret = 0;
            a.attribution = None;
            out.push(UmountLine::new(&a));
        }
        out
    }

    /// A sketch reads what the whole line says, and crosses threads intact.
    #[test]
    fn a_sketch_reads_what_the_whole_line_says() {
        for line in varied_attempts() {
            let text = serde_json::to_string(&line).unwrap();
            let Ok(Sketched::Attempt(sketch)) = parse_sketch(text.as_bytes()) else {
                panic!("not sketched: {text}");
            };
            let mut whole = AttemptSketch::of(&line);
            whole.whole = None;
            assert_eq!(sketch, whole, "{text}");
            assert_eq!(
                sketch.detach(text.as_bytes()).attach(text.as_bytes()),
                whole
            );
        }
        assert!(
            varied_attempts()
                .iter()
                .any(|l| l.target_b64.is_some() && l.holders().len() == 3),
            "the cases include a target not UTF-8, with holders"
        );
    }

    /// Read ahead in batches, over files and batch boundaries: every line in order, each
    /// problem at its place, with its file and number.
    #[test]
    fn lines_read_ahead_come_in_order_with_their_problems() {
        let dir = tempfile::tempdir().unwrap();
        let (older, newer) = (dir.path().join("r.jsonl.1"), dir.path().join("r.jsonl"));
        let (mut text, mut last) = (String::new(), 0);
        while text.len() < 3 * super::ahead::BATCH_BYTES {
            last += 1;
            text.push_str(&umount_line(last));
            if last == 3000 {
                text.push_str("garbage\n");
            }
        }
        std::fs::write(&older, &text).unwrap();
        std::fs::write(&newer, format!("{}{{\"v\":1", umount_line(last + 1))).unwrap();
        let mut ids = Vec::new();
        let problems = for_each_sketch(&[older.clone(), newer.clone()], |text, line| {
            let Sketched::Attempt(a) = line else {
                panic!("not sketched")
            };
            assert_eq!(whole_attempt(text).map(|w| w.id), Ok(a.id), "its own text");
            ids.push(a.id);
            Ok(())
        })
        .unwrap();
        assert_eq!(ids, (1..=last + 1).collect::<Vec<_>>());
        let places: Vec<(PathBuf, usize)> =
            problems.iter().map(|p| (p.file.clone(), p.line)).collect();
        assert_eq!(places, [(older, 3001), (newer.clone(), 2)]);
        assert!(
            problems[1].why.starts_with("torn last line"),
            "{}",
            problems[1]
        );
        // A line `each` finds malformed is reported at its place too.
        let problems = for_each_sketch(std::slice::from_ref(&newer), |_, _| Err("no".into()));
        assert_eq!(problems.unwrap()[0].line, 1);
    }

    /// An I/O error while reading ahead (a file missing) is the caller's error, naming the
    /// file, once the lines before it were handed over.
    #[test]
    fn reading_ahead_stops_at_an_unreadable_file_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (good, missing) = (dir.path().join("r.jsonl"), dir.path().join("gone.jsonl"));
        std::fs::write(&good, umount_line(1) + &umount_line(2)).unwrap();
        let mut ids = Vec::new();
        let err = for_each_sketch(&[good, missing.clone()], |_, line| {
            if let Sketched::Attempt(a) = line {
                ids.push(a.id);
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(ids, [1, 2]);
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().starts_with(&missing.display().to_string()),
            "{err}"
        );
    }

    /// 10,000 generated corrupt recordings: never a panic, every bad line reported.
    #[test]
    fn corrupt_recordings_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = crate::event::sample_attempt(b"/m", Some(b"/m"), -16, 0);
        let holder = crate::model::Holder::new(
            crate::model::HolderKind::Fd,
            812,
            crate::model::Seen::KernelScan,
        );
        a.attribution = Some(Ok(crate::model::sample_attribution("/m", vec![holder])));
        let good = format!("{}\n", serde_json::to_string(&UmountLine::new(&a)).unwrap());
        let good = good.as_bytes();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..10_000 {
            let mut bytes = good.repeat(3);
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = (next() & 0xff) as u8;
            }
            bytes.truncate(bytes.len() - (next() as usize % 20));
            let file = dir.path().join(format!("c{}", case % 8));
            std::fs::write(&file, &bytes).unwrap();
            let mut lines = 0;
            let problems = for_each_line(std::slice::from_ref(&file), |_| lines += 1).unwrap();
            // Read as sketches, each attempt's whole line read too: the same answers.
            let mut sketched = 0;
            let same = for_each_sketch(std::slice::from_ref(&file), |text, line| {
                if let Sketched::Attempt(_) = line {
                    whole_attempt(text)?;
                }
                sketched += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!((sketched, &same), (lines, &problems), "case {case}");
            // Lines as read_until sees them: every newline ends one, and a tail without one.
            let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
            let total = newlines + usize::from(bytes.last().is_some_and(|&b| b != b'\n'));
            assert_eq!(
                lines + problems.len(),
                total,
                "case {case}: every line is read or reported"
            );
            assert!(problems.iter().all(|p| !p.why.is_empty()));
        }
    }
}
