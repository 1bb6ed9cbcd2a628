//! (b)–(e): commands that name the processes holding a mount, each timed the same way.

use std::{
    collections::BTreeSet,
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    interrupt,
    report::{Measurement, Samples},
};

/// The baseline tools and the Debian packages that have them.
const BASELINES: [(&str, &str); 2] = [("fuser", "psmisc"), ("lsof", "lsof")];

/// Where the baseline tools are, or why they are not.
pub struct Baselines {
    fuser: Result<PathBuf, String>,
    lsof: Result<PathBuf, String>,
}

/// Finds `fuser` and `lsof`, installing them with apt-get when one is missing.
pub fn ensure_baselines_installed() -> Baselines {
    let [fuser, lsof] = find_or_install(&BASELINES);
    Baselines { fuser, lsof }
}

/// Finds each `(tool, Debian package)` in `$PATH`; when one is missing, installs all their
/// packages with one `apt-get install -y` and looks again. A tool still missing gets the
/// reason it is skipped, which is also printed.
pub fn find_or_install<const N: usize>(wanted: &[(&str, &str); N]) -> [Result<PathBuf, String>; N] {
    if wanted.iter().any(|(tool, _)| find_in_path(tool).is_none()) {
        let packages: Vec<&str> = wanted.iter().map(|(_, package)| *package).collect();
        println!(
            "xtask: bench: installing what is missing: apt-get install -y {}",
            packages.join(" ")
        );
        match Command::new("apt-get")
            .args(["install", "-y"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => println!("xtask: bench: apt-get failed ({status})"),
            Err(e) => println!("xtask: bench: could not run apt-get: {e}"),
        }
    }
    wanted.map(|(tool, package)| {
        find_in_path(tool).ok_or_else(|| {
            let reason =
                format!("skipped: no `{tool}`, and apt-get install {package} did not provide it");
            println!("xtask: bench: {reason}");
            reason
        })
    })
}

/// The first executable named `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// One command to time, and how to read the holders' pids from its output.
pub struct Timed {
    key: &'static str,
    label: String,
    program: Result<PathBuf, String>,
    args: Vec<OsString>,
    parse: fn(&Output) -> Result<Found>,
}

/// What one run of a command found.
#[derive(Debug)]
struct Found {
    pids: BTreeSet<u32>,
    /// What the command says it scanned, when it says.
    scanned: Option<String>,
}

/// Commands (b)–(e) for `mount`.
pub fn commands(busyprobe: &Path, mount: &Path, baselines: &Baselines) -> Vec<Timed> {
    let who = |scan: &str| Timed {
        key: if scan == "kernel" { "b" } else { "c" },
        label: format!("busyprobe who --scan {scan}"),
        program: Ok(busyprobe.to_path_buf()),
        args: vec![
            "who".into(),
            "--scan".into(),
            scan.into(),
            "--json".into(),
            mount.into(),
        ],
        parse: parse_who,
    };
    vec![
        who("kernel"),
        who("proc"),
        Timed {
            key: "d",
            label: "fuser -m".into(),
            program: baselines.fuser.clone(),
            args: vec!["-m".into(), mount.into()],
            parse: parse_fuser,
        },
        Timed {
            key: "e",
            label: "lsof".into(),
            program: baselines.lsof.clone(),
            args: vec![mount.into()],
            parse: parse_lsof,
        },
    ]
}

/// Runs every command once untimed, then `runs` timed rounds; each round starts with the next
/// command, so that no command always runs right after the same other one. A command that
/// fails once is reported as failed and not run again.
pub fn time_commands(commands: &[Timed], runs: usize) -> Result<Vec<Measurement>> {
    let mut results: Vec<Result<Samples, String>> = commands
        .iter()
        .map(|c| {
            c.program
                .as_ref()
                .map(|_| Samples::default())
                .map_err(Clone::clone)
        })
        .collect();
    for round in 0..=runs {
        for i in (0..commands.len()).map(|j| (j + round) % commands.len()) {
            let Ok(samples) = &mut results[i] else {
                continue;
            };
            match run_once(&commands[i]) {
                Ok((took, found)) if round > 0 => {
                    samples.times.push(took);
                    samples.found.push(found.pids);
                    samples.scanned = found.scanned;
                }
                Ok(_) => {}
                Err(e) => results[i] = Err(interrupt::failure_reason(&e)?),
            }
        }
    }
    Ok(commands
        .iter()
        .zip(results)
        .map(|(c, result)| Measurement {
            key: c.key,
            label: c.label.clone(),
            result,
        })
        .collect())
}

/// Runs a command once; returns how long it took and what it found.
fn run_once(timed: &Timed) -> Result<(Duration, Found)> {
    interrupt::check()?;
    let program = timed.program.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let output = Command::new(program)
        .args(&timed.args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let took = started.elapsed();
    let found = (timed.parse)(&output).with_context(|| format!("`{}`", timed.label))?;
    Ok((took, found))
}

/// Accepts exit status 0 (found) and 1 (found nothing), the convention of all four commands.
fn check_status(output: &Output) -> Result<()> {
    if matches!(output.status.code(), Some(0 | 1)) {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    bail!(
        "{}: {}",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    )
}

/// `busyprobe who --json`: the pids of the holders that are processes.
fn parse_who(output: &Output) -> Result<Found> {
    check_status(output)?;
    let who: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing the JSON output")?;
    let pids = holder_pids(&who);
    let scanned = format!(
        "{}: {} processes, {} fds",
        who["scan"].as_str().unwrap_or("?"),
        who["processes_scanned"],
        who["fds_scanned"]
    );
    Ok(Found {
        pids,
        scanned: Some(scanned),
    })
}

/// The distinct pids in the `holders` array of a `who` or `umount` JSON object.
pub fn holder_pids(object: &serde_json::Value) -> BTreeSet<u32> {
    object["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|holder| holder["pid"].as_u64())
        .filter_map(|pid| u32::try_from(pid).ok())
        .collect()
}

/// `fuser -m`: pids on stdout, each followed by letters saying how it holds the mount.
fn parse_fuser(output: &Output) -> Result<Found> {
    check_status(output)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pids = stdout
        .split_whitespace()
        .filter_map(|word| {
            let digits = word.trim_end_matches(|c: char| !c.is_ascii_digit());
            digits.parse().ok()
        })
        .collect();
    Ok(Found {
        pids,
        scanned: None,
    })
}

/// `lsof`: a header line, then one line per open file with the pid in the second column.
fn parse_lsof(output: &Output) -> Result<Found> {
    check_status(output)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pids = stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
        .collect();
    Ok(Found {
        pids,
        scanned: None,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn output(code: i32, stdout: &str) -> Output {
        Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"Cannot stat file /proc/1/fd/0: Permission denied\n".to_vec(),
        }
    }

    #[test]
    fn fuser_pids_lose_their_access_letters() {
        let found = parse_fuser(&output(0, " 23888 23890c 23892rce")).unwrap();
        assert_eq!(found.pids, BTreeSet::from([23888, 23890, 23892]));
    }

    #[test]
    fn lsof_pids_come_from_the_second_column() {
        let stdout = "COMMAND   PID USER   FD   TYPE DEVICE SIZE/OFF NODE NAME\n\
                      sleep   23888 root    0r   REG   0,40        0    2 /m/f\n\
                      bash    23890 root  cwd    DIR   0,40       60    1 /m\n\
                      bash    23890 root    3r   DIR   0,40       60    1 /m\n";
        let found = parse_lsof(&output(0, stdout)).unwrap();
        assert_eq!(found.pids, BTreeSet::from([23888, 23890]));
    }

    #[test]
    fn who_pids_skip_holders_that_are_not_processes() {
        let stdout = r#"{"type":"who","scan":"kernel-scan","processes_scanned":3,"fds_scanned":9,
            "holders":[{"pid":7,"kind":"fd"},{"pid":7,"kind":"cwd"},{"pid":null,"kind":"submount"}]}"#;
        let found = parse_who(&output(0, stdout)).unwrap();
        assert_eq!(found.pids, BTreeSet::from([7]));
        assert_eq!(found.scanned.unwrap(), "kernel-scan: 3 processes, 9 fds");
    }

    #[test]
    fn nothing_found_is_not_a_failure_but_an_error_status_is() {
        assert!(parse_fuser(&output(1, "")).unwrap().pids.is_empty());
        let error = parse_who(&output(2, "")).unwrap_err().to_string();
        assert!(error.contains("Permission denied"), "{error}");
    }
}
