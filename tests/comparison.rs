//! busyprobe against `fuser -vm` on the same real incidents: each fixture runs both inside its
//! mount namespace, then `umount2`. The test checks busyprobe's answer (as in
//! `tests/holders.rs`) and describes what each tool found, in words (no pids, no temporary
//! paths), so that the document only changes when a result does. That text must be
//! `docs/comparison.md`: the test rewrites the file only when asked ([`WRITE_ENV`]) or when
//! there is none (a vm-test guest); otherwise it writes its text under `target/tmp` and fails
//! if the committed document says something else.

use std::{fmt::Write as _, path::Path};

use libtest_mimic::Trial;
use serde_json::Value;

use crate::{
    holders::{self, run_of, Propagation, Scene},
    support::{contract::errno_name, fixture::Report, incident::Fixture, process::tool},
};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![comparison_with_fuser]
}

/// The committed document.
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/comparison.md");
/// Where a run's text goes when the committed document is only compared with it.
const RUN_DOC: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/comparison.md");
/// Environment variable: `1` rewrites [`DOC`] with this run's text.
const WRITE_ENV: &str = "BUSYPROBE_WRITE_COMPARISON";

fn comparison_with_fuser() {
    let fuser = tool("fuser");
    // fuser's own answer has varied once in a full parallel run (the mmap holder missed, while
    // busyprobe's, checked in `compare`, did not): the table must come out the same in one of
    // a few runs.
    let mut last = String::new();
    for run in 1..=FUSER_RUNS {
        let rows: Vec<Row> = scenes()
            .iter()
            .map(|scene| compare(scene, &fuser))
            .collect();
        match publish(&render(&rows)) {
            Ok(()) => return,
            Err(why) => {
                eprintln!("comparison run {run} of {FUSER_RUNS}: {why}");
                last = why;
            }
        }
    }
    panic!("{last}");
}

/// The incidents compared, each in a new temporary directory.
fn scenes() -> [holders::Scene; 7] {
    [
        holders::fd_scene(false),
        holders::cwd_scene(),
        holders::mmap_scene(),
        holders::submount_scene(),
        holders::copy_scene(Propagation::Unchanged),
        holders::fanotify_scene(),
        holders::copy_scene(Propagation::Private),
    ]
}

/// How many times the comparison may run before a difference from [`DOC`] fails it.
const FUSER_RUNS: usize = 3;

/// Writes `text` to [`DOC`] when asked to or when there is none; else to [`RUN_DOC`], and
/// the committed [`DOC`] must be the same text (else why not, with the difference).
fn publish(text: &str) -> Result<(), String> {
    let doc = Path::new(DOC);
    if std::env::var_os(WRITE_ENV).is_some_and(|v| v == "1") || !doc.exists() {
        std::fs::write(doc, text).expect("write docs/comparison.md");
        eprintln!("wrote {}", doc.display());
        return Ok(());
    }
    std::fs::write(RUN_DOC, text).unwrap_or_else(|e| panic!("write {RUN_DOC}: {e}"));
    let committed = std::fs::read_to_string(doc).expect("read docs/comparison.md");
    let (old, new): (Vec<&str>, Vec<&str>) = (committed.lines().collect(), text.lines().collect());
    let diff: String = old
        .iter()
        .filter(|l| !new.contains(l))
        .map(|l| format!("\n- {l}"))
        .chain(
            new.iter()
                .filter(|l| !old.contains(l))
                .map(|l| format!("\n+ {l}")),
        )
        .collect();
    if committed == text {
        return Ok(());
    }
    Err(format!(
        "docs/comparison.md is not what this run found (its text is in {RUN_DOC}); if the \
         change is right, rewrite it with {WRITE_ENV}=1 cargo test -p probe-user --test \
         integration comparison_with_fuser{diff}"
    ))
}

/// One line of the table.
struct Row {
    title: &'static str,
    kernel: String,
    busy: bool,
    fuser: String,
    busyprobe: String,
    fuser_found_holder: bool,
}

/// Runs one scene with `fuser -vm` and `who`, checks `who`, describes both.
fn compare(scene: &Scene, fuser: &Path) -> Row {
    let target = scene.target.to_str().expect("UTF-8 temp path").to_owned();
    let fuser = vec![
        fuser.to_str().expect("UTF-8 fuser path").to_owned(),
        "-vm".to_owned(),
        target,
    ];
    let fixture = Fixture::run(&scene.full_plan(&[fuser]));
    let report = &fixture.report;
    let expected = (scene.expect)(report);
    let (_, who) = holders::check_who(scene, report, &expected);
    let errno = report.calls[0].errno;
    let want = if scene.busy { libc::EBUSY } else { 0 };
    assert_eq!(errno, want, "{}: the unmount's errno", scene.title);
    let found = fuser_found(report);
    Row {
        title: scene.title,
        kernel: if scene.busy {
            errno_name(errno)
        } else {
            "succeeded".to_owned()
        },
        busy: scene.busy,
        fuser_found_holder: found.iter().any(|f| f == HOLDER),
        fuser: list_or_nothing(found),
        busyprobe: list_or_nothing(busyprobe_found(report, &who)),
    }
}

const HOLDER: &str = "holder process";

/// The role of process `pid` in the fixture, in words.
fn role(report: &Report, pid: u64) -> &'static str {
    if report.helpers.iter().any(|h| u64::from(h.pid) == pid) {
        HOLDER
    } else if report.helpers.iter().any(|h| u64::from(h.spawned) == pid) {
        "the helper's wrapper"
    } else if u64::from(report.pid) == pid {
        "the umount caller"
    } else {
        "another process"
    }
}

/// What `fuser -vm` printed on stdout (pids, and `kernel` for the mount itself), in words.
fn fuser_found(report: &Report) -> Vec<String> {
    let run = run_of(report, "-vm");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let mut found: Vec<String> = stdout
        .split_whitespace()
        .map(|word| match word.parse::<u64>() {
            Ok(pid) => role(report, pid).to_owned(),
            Err(_) if word == "kernel" => "kernel (the mount point)".to_owned(),
            Err(_) => format!("unparsed {word:?}"),
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// busyprobe's holders, in words: kind, how (for copies), and who.
fn busyprobe_found(report: &Report, who: &Value) -> Vec<String> {
    let holders = who["holders"].as_array().expect("holders");
    let mut found: Vec<String> = holders
        .iter()
        .map(|h| {
            let kind = h["kind"].as_str().unwrap_or("?");
            let via = h["via"]
                .as_str()
                .map(|v| format!(" via {v}"))
                .unwrap_or_default();
            let whom = match h["pid"].as_u64() {
                Some(pid) => role(report, pid),
                None => "no process",
            };
            let blamed = if h["blamed"] == true {
                ""
            } else {
                ", not blamed"
            };
            format!("`{kind}`{via} ({whom}{blamed})")
        })
        .collect();
    found.sort();
    found
}

fn list_or_nothing(items: Vec<String>) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join("; ")
    }
}

fn render(rows: &[Row]) -> String {
    let mut s = String::from(
        "# busyprobe and `fuser -vm` on the same incidents\n\n\
         Generated by the root integration test `comparison_with_fuser`, which fails when this\n\
         file is not what it found: do not edit. To rewrite it, run as root\n\
         `BUSYPROBE_WRITE_COMPARISON=1 cargo test -p probe-user --test integration comparison_with_fuser`.\n\n\
         Each incident is built for real in a private mount namespace (tests/holders.rs):\n\
         something holds the tmpfs mounted there, both `fuser -vm MOUNT` and\n\
         `busyprobe who MOUNT --json` run inside that namespace while it holds, then the\n\
         fixture calls `umount2` and the kernel answers. \"holder process\" is the helper\n\
         process that holds the mount; `kernel` in fuser's output only says that the path is\n\
         a mount point. The last incident is a control: a copy in a private namespace, which\n\
         cannot make the unmount fail.\n\n\
         | incident | umount2 | `fuser -vm` found | `busyprobe who` found |\n\
         | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r.title, r.kernel, r.fuser, r.busyprobe
        );
    }
    let name = |r: &&Row| r.title.split(':').next().unwrap_or(r.title);
    let busy: Vec<&Row> = rows.iter().filter(|r| r.busy).collect();
    let missed: Vec<&str> = busy
        .iter()
        .filter(|r| !r.fuser_found_holder)
        .map(name)
        .collect();
    let _ = write!(
        s,
        "\nOf the {} incidents where the kernel said EBUSY, `fuser -vm` named the holder \
         process in {}",
        busy.len(),
        busy.len() - missed.len()
    );
    if missed.is_empty() {
        s.push_str(".\n");
    } else {
        let _ = writeln!(
            s,
            "; it found nothing that holds the mount in: {}.",
            missed.join(", ")
        );
    }
    let unblocking: Vec<&str> = rows
        .iter()
        .filter(|r| !r.busy && r.fuser_found_holder)
        .map(|r| name(&r))
        .collect();
    if !unblocking.is_empty() {
        let _ = writeln!(
            s,
            "Where the unmount succeeded ({}), `fuser -vm` still named the holder process as \
             using the mount; busyprobe reported it as not blamed.",
            unblocking.join(", ")
        );
    }
    s
}
