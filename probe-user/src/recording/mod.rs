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

use crate::sink::json::wire::Line;

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
/// skipped. An I/O error (a missing file, a directory) is an error naming the file.
pub fn for_each_line(
    files: &[PathBuf],
    mut each: impl FnMut(Line),
) -> io::Result<Vec<LineProblem>> {
    for_each_line_with_text(files, |_, line| each(line))
}

/// [`for_each_line`], with each line's text (its bytes as read, newline included) beside it.
pub fn for_each_line_with_text(
    files: &[PathBuf],
    mut each: impl FnMut(&[u8], Line),
) -> io::Result<Vec<LineProblem>> {
    let mut problems = Vec::new();
    for file in files {
        read_file(file, &mut each, &mut problems)?;
    }
    Ok(problems)
}

fn read_file(
    path: &Path,
    each: &mut impl FnMut(&[u8], Line),
    problems: &mut Vec<LineProblem>,
) -> io::Result<()> {
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
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        let (read, too_long) = read_line(&mut reader, &mut buf, MAX_LINE).map_err(named)?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        if number == 1 {
            if let Some(v) = unreadable_header(&buf) {
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
            problems.push(LineProblem {
                file: path.to_path_buf(),
                line: number,
                why: format!("longer than {} MiB: skipped", MAX_LINE >> 20),
            });
            continue;
        }
        let whole = buf.last() == Some(&b'\n');
        let problem = |why: String| LineProblem {
            file: path.to_path_buf(),
            line: number,
            why,
        };
        match parse_line(&buf) {
            Ok(line) => each(&buf, line),
            Err(_) if !whole => problems.push(problem(
                "torn last line (the recorder stopped while writing it): skipped".into(),
            )),
            Err(why) => problems.push(problem(why)),
        }
    }
}

/// Reads one line into `buf`, at most `max` bytes of it: a longer line is consumed to its end
/// without being kept. Returns the bytes consumed and whether the line was too long.
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<(usize, bool)> {
    let mut read = reader
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', buf)?;
    if buf.len() <= max || buf.last() == Some(&b'\n') {
        return Ok((read, false));
    }
    buf.clear();
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
    use crate::sink::json::wire::UmountLine;

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
