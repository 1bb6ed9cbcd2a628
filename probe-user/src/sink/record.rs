//! A recording: JSON Lines in a file of mode 0600, written line by line (every line is
//! flushed, so a crash loses at most the line being written) and rotated by size at line
//! boundaries. Every file starts with the same `header` line, so each one stands alone.
//! `FILE.1` is the newest rotated file, up to `FILE.N`.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// Where and how to record.
#[derive(Clone, Debug)]
pub struct RecordPlan {
    /// The file being written.
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes.
    pub rotate_at: Option<u64>,
    /// Rotated files kept.
    pub keep: usize,
    /// The header line written first in every file (without its newline).
    pub header: Vec<u8>,
}

/// The file being written, which rotates itself.
pub struct RotatingFile {
    plan: RecordPlan,
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Starts a recording: an existing file is rotated away first (never overwritten). With
    /// `keep` 0 an existing file is refused: rotating it away would delete it.
    pub fn create(plan: RecordPlan) -> io::Result<Self> {
        if let Ok(meta) = fs::metadata(&plan.path) {
            // Rotating a directory away would rename it, and then record into its place.
            if !meta.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} exists and is not a regular file", plan.path.display()),
                ));
            }
            if plan.keep == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists, and with --keep 0 no old file is kept: starting would delete it; move it away first, or keep it with --keep 1 or more",
                        plan.path.display()
                    ),
                ));
            }
            shift_rotated(&plan.path, plan.keep)?;
        }
        let file = open_new(&plan.path)?;
        let mut me = Self {
            plan,
            file,
            written: 0,
        };
        me.write_header()?;
        Ok(me)
    }

    fn write_header(&mut self) -> io::Result<()> {
        self.file.write_all(&self.plan.header)?;
        self.file.write_all(b"\n")?;
        self.written = self.plan.header.len() as u64 + 1;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        shift_rotated(&self.plan.path, self.plan.keep)?;
        self.file = open_new(&self.plan.path)?;
        self.write_header()
    }
}

/// A new file of mode 0600 (created exclusively: the old one was moved away).
fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// `FILE.(k)` → `FILE.(k+1)` from the oldest kept down, `FILE` → `FILE.1`; what would be
/// `FILE.(keep+1)` is deleted. With `keep` 0 the file is simply removed.
fn shift_rotated(path: &Path, keep: usize) -> io::Result<()> {
    let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    if keep == 0 {
        return fs::remove_file(path);
    }
    match fs::remove_file(numbered(keep)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..keep).rev() {
        match fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(path, numbered(1))
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    /// Called after every line (by the JSON Lines sink): the place to rotate.
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self
            .plan
            .rotate_at
            .is_some_and(|limit| self.written >= limit)
        {
            self.rotate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn plan(dir: &Path, rotate_at: Option<u64>, keep: usize) -> RecordPlan {
        RecordPlan {
            path: dir.join("rec.jsonl"),
            rotate_at,
            keep,
            header: br#"{"v":1,"type":"header"}"#.to_vec(),
        }
    }

    fn line(f: &mut RotatingFile, text: &str) {
        f.write_all(text.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
        f.flush().unwrap();
    }

    #[test]
    fn rotates_at_line_boundaries_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::create(plan(dir.path(), Some(60), 2)).unwrap();
        for i in 0..10 {
            line(&mut f, &format!(r#"{{"n":{i},"pad":"xxxxxxxxxx"}}"#));
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["rec.jsonl", "rec.jsonl.1", "rec.jsonl.2"]);
        for name in &names {
            let path = dir.path().join(name);
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("{\"v\":1,\"type\":\"header\"}\n"),
                "{name}: {text}"
            );
            assert!(text.ends_with('\n'), "{name} ends with a whole line");
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600,
                "{name}"
            );
        }
        let newest_old = fs::read_to_string(dir.path().join("rec.jsonl.1")).unwrap();
        let current = fs::read_to_string(dir.path().join("rec.jsonl")).unwrap();
        assert!(
            newest_old.contains(r#""n":8"#) || current.contains(r#""n":9"#),
            "{newest_old}\n{current}"
        );
    }

    #[test]
    fn an_existing_recording_is_rotated_away_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("rec.jsonl"), "old\n").unwrap();
        let mut f = RotatingFile::create(plan(dir.path(), None, 3)).unwrap();
        line(&mut f, "new");
        assert_eq!(
            fs::read_to_string(dir.path().join("rec.jsonl.1")).unwrap(),
            "old\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("rec.jsonl")).unwrap(),
            "{\"v\":1,\"type\":\"header\"}\nnew\n"
        );
    }

    #[test]
    fn a_directory_is_refused_not_rotated_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(dir.path(), None, 3);
        p.path = dir.path().join("d");
        fs::create_dir(&p.path).unwrap();
        let Err(e) = RotatingFile::create(p.clone()) else {
            panic!("a directory must be refused");
        };
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(p.path.is_dir(), "left where it was");
        assert!(!dir.path().join("d.1").exists(), "not rotated");
    }

    #[test]
    fn keep_0_refuses_an_existing_recording_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.jsonl");
        fs::write(&path, "old\n").unwrap();
        let Err(e) = RotatingFile::create(plan(dir.path(), None, 0)) else {
            panic!("an existing recording with --keep 0 must be refused");
        };
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let why = e.to_string();
        assert!(why.contains(&path.display().to_string()), "{why}");
        assert!(why.contains("--keep 0"), "{why}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\n", "untouched");
        // Without an old file, --keep 0 records (and rotates by deleting).
        fs::remove_file(&path).unwrap();
        let mut f = RotatingFile::create(plan(dir.path(), None, 0)).unwrap();
        line(&mut f, "new");
        assert!(fs::read_to_string(&path).unwrap().ends_with("new\n"));
    }
}
