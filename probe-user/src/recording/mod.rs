//! Reading recordings back (`report`): JSON Lines files, possibly rotated, possibly cut by a
//! crash, possibly corrupt or from a newer busyprobe. Lines are streamed one at a time; a torn
//! last line is skipped with a warning, a malformed line is reported with its file and line
//! number and skipped; nothing panics.

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use serde_json::Value;

pub mod markdown;
pub mod report;

/// The highest schema version this build knows.
pub const KNOWN_SCHEMA: u64 = 1;

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

/// Calls `each` with every well-formed JSON object of `files`, in order; returns the lines
/// that were skipped. An I/O error (a missing file) is an error.
pub fn for_each_line(
    files: &[PathBuf],
    mut each: impl FnMut(&Value),
) -> io::Result<Vec<LineProblem>> {
    let mut problems = Vec::new();
    for file in files {
        read_file(file, &mut each, &mut problems)?;
    }
    Ok(problems)
}

fn read_file(
    path: &Path,
    each: &mut impl FnMut(&Value),
    problems: &mut Vec<LineProblem>,
) -> io::Result<()> {
    let mut reader = BufReader::new(
        File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
    );
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        number += 1;
        let whole = buf.last() == Some(&b'\n');
        let problem = |why: String| LineProblem {
            file: path.to_path_buf(),
            line: number,
            why,
        };
        match parse_line(&buf) {
            Ok(value) => each(&value),
            Err(_) if !whole => problems.push(problem(
                "torn last line (the recorder stopped while writing it): skipped".into(),
            )),
            Err(why) => problems.push(problem(why)),
        }
    }
}

/// One line: a JSON object with a `type`; a newer `v` is read as far as it is understood.
pub fn parse_line(bytes: &[u8]) -> Result<Value, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| "not UTF-8 (a recording is JSON)".to_string())?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err("empty line".into());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !value.is_object() || !value["type"].is_string() {
        return Err("not a busyprobe line (no \"type\")".into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects_with_a_type_only() {
        assert!(parse_line(b"{\"v\":1,\"type\":\"umount\"}\n").is_ok());
        assert!(
            parse_line(b"{\"v\":9,\"type\":\"future\",\"x\":1}").is_ok(),
            "newer lines are read"
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

    #[test]
    fn skips_torn_and_malformed_lines_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.jsonl");
        std::fs::write(&file, "{\"v\":1,\"type\":\"header\"}\ngarbage\n{\"v\":1,\"type\":\"umount\",\"id\":1}\n{\"v\":1,\"ty").unwrap();
        let mut seen = Vec::new();
        let problems = for_each_line(std::slice::from_ref(&file), |v| {
            seen.push(v["type"].as_str().unwrap().to_owned())
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

    /// 10,000 generated corrupt recordings: never a panic, every bad line reported.
    #[test]
    fn corrupt_recordings_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"{\"v\":1,\"type\":\"umount\",\"id\":1,\"target\":\"/m\",\"ret\":-16,\"errno\":\"EBUSY\",\"holders\":[{\"pid\":1,\"kind\":\"fd\"}]}\n";
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
