//! `busyprobe report FILE...`: Markdown or JSON, streamed to stdout.

use super::progress::Progress;
use std::{
    io::{self, IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{bail, Context, Result};

use crate::{
    cli::{ReportArgs, ReportFormat},
    recording::{
        files_in_order, markdown,
        report::{self, Incident, IncidentsByPod},
        LineProblem,
    },
};

/// Writes the report to stdout; problems with lines go to stderr.
pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    let files = files_in_order(&args.files);
    let mut out = io::stdout().lock();
    // Progress on the terminal only when the report goes elsewhere (a file, a pipe).
    let progress = !io::stdout().is_terminal();
    let written = write_report(
        &files,
        args.event,
        args.format,
        &mut out,
        progress,
        &mut |p| {
            eprintln!("busyprobe: warning: {p}");
        },
    )?;
    if let (Some(id), 0) = (args.event, written) {
        bail!("no failed attempt with id {id} in the recording");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the report of `files` to `out` (only the incident containing attempt `event`,
/// when given), with a line of `progress` on stderr while each pass reads (when it is a
/// terminal); tells `warn` of every skipped line; returns how many incidents were written.
pub fn write_report(
    files: &[PathBuf],
    event: Option<u64>,
    format: ReportFormat,
    out: &mut dyn Write,
    progress: bool,
    warn: &mut dyn FnMut(&LineProblem),
) -> Result<usize> {
    let mut first = Progress::on_stderr("reading the recording (1 of 2)", files, progress);
    let summarized = report::summarize(files, |n| first.add(n));
    first.finish();
    let (summary, problems) = summarized.context("reading the recording")?;
    problems.iter().for_each(&mut *warn);
    match format {
        ReportFormat::Markdown => {
            out.write_all(markdown::summary(&summary, files.len()).as_bytes())?
        }
        ReportFormat::Json => {
            write!(out, "{{\"v\":1,\"type\":\"report\",\"summary\":")?;
            serde_json::to_writer(&mut *out, &summary)?;
            let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
            write!(out, ",\"problems\":")?;
            serde_json::to_writer(&mut *out, &texts)?;
            write!(out, ",\"incidents\":[")?;
        }
    }
    let mut written = 0usize;
    let mut failed: Option<io::Error> = None;
    let mut by_pod = IncidentsByPod::default();
    let mut second = Progress::on_stderr("reading the recording (2 of 2)", files, progress);
    let grouped = report::incidents(
        files,
        |n| second.add(n),
        |inc: Incident| {
            if failed.is_some() || event.is_some_and(|id| !inc.contains(id)) {
                return;
            }
            written += 1;
            by_pod.add(written, &inc);
            failed = write_incident(out, format, written, &inc).err();
        },
    );
    second.finish();
    grouped.context("reading the recording")?;
    if let Some(e) = failed {
        return Err(e).context("writing the report");
    }
    match format {
        ReportFormat::Json => writeln!(out, "]}}")?,
        ReportFormat::Markdown => out.write_all(markdown::by_pod(&by_pod).as_bytes())?,
    }
    Ok(written)
}

fn write_incident(
    out: &mut dyn Write,
    format: ReportFormat,
    number: usize,
    inc: &Incident,
) -> io::Result<()> {
    match format {
        ReportFormat::Markdown => out.write_all(markdown::incident(number, inc).as_bytes()),
        ReportFormat::Json => {
            if number > 1 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, inc).map_err(io::Error::other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDING: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/recording/testdata/incident.jsonl"
    );
    const GOLDEN: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/recording/testdata/incident.md"
    );

    fn render(event: Option<u64>, format: ReportFormat) -> (String, Vec<String>, usize) {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let n = write_report(
            &[PathBuf::from(RECORDING)],
            event,
            format,
            &mut out,
            false,
            &mut |p| problems.push(p.to_string()),
        )
        .unwrap();
        (String::from_utf8(out).unwrap(), problems, n)
    }

    /// The Markdown of a fixed recording is exactly the golden file (set
    /// BUSYPROBE_UPDATE_GOLDEN=1 to rewrite it after a deliberate change).
    #[test]
    fn markdown_matches_the_golden_file() {
        let (markdown, problems, incidents) = render(None, ReportFormat::Markdown);
        if std::env::var_os("BUSYPROBE_UPDATE_GOLDEN").is_some() {
            std::fs::write(GOLDEN, &markdown).unwrap();
        }
        assert_eq!(markdown, std::fs::read_to_string(GOLDEN).unwrap());
        assert_eq!(incidents, 2);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].ends_with("incident.jsonl:4: not JSON: expected ident at line 1 column 2"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("incident.jsonl:7: schema version 2, which this busyprobe"),
            "{problems:?}"
        );
        assert!(
            problems[2].contains("incident.jsonl:10: torn last line"),
            "{problems:?}"
        );
    }

    /// `busyprobe report DIR` says which path is a directory rather than a bare `EISDIR`.
    #[test]
    fn a_directory_is_named_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_report(
            &[dir.path().to_path_buf()],
            None,
            ReportFormat::Markdown,
            &mut Vec::new(),
            false,
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "reading the recording: {}: is a directory, not a recording: name the \
                 recording's file (the FILE given to `busyprobe record --output`)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn event_selects_its_incident() {
        let (markdown, _, incidents) = render(Some(4), ReportFormat::Markdown);
        assert_eq!(incidents, 1);
        assert!(markdown.contains("## 1. /var/lib/containerd/tmpmounts/containerd-mount123: 3 failed attempt(s), then attempt 5 worked"));
        assert!(
            !markdown.contains("not\\_a\\_mount: 1 failed"),
            "{markdown}"
        );
        assert_eq!(render(Some(99), ReportFormat::Markdown).2, 0);
    }

    #[test]
    fn json_parses_and_has_the_same_content() {
        let (json, _, incidents) = render(None, ReportFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["type"], "report");
        assert_eq!(v["summary"]["attempts"], 5);
        assert_eq!(v["summary"]["failures_by_errno"]["EBUSY"], 3);
        assert_eq!(v["incidents"].as_array().unwrap().len(), incidents);
        let first = &v["incidents"][0];
        assert_eq!(first["resolved_by"], 5);
        assert_eq!(first["holders"][0][0]["comm"], "scanner");
        assert_eq!(
            first["holders"][0][1], 2,
            "the scanner was named by two attempts"
        );
        let problems: Vec<&str> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[1].ends_with(
                "incident.jsonl:7: schema version 2, which this busyprobe (schema 1) cannot \
                 read: skipped; read it with the busyprobe that wrote it"
            ),
            "{problems:?}"
        );
    }
}
