//! `busyprobe doctor`: what this kernel offers and which mode busyprobe will use. Every probe
//! kind is tried for real with a tiny program (loaded, then attached when that is harmless);
//! without root the table says what could not be checked.

use std::{fmt::Write as _, path::Path, process::ExitCode};

use anyhow::{Context, Result};
use aya::{
    programs::{BtfTracePoint, RawTracePoint},
    Btf, Ebpf,
};
use probe_common::{names::programs, DropCause, OFFSET_UNKNOWN};

use crate::{
    cli::DoctorArgs,
    kernel::{
        self,
        btf::{self, Resolved},
        lsm,
        privileges::Privileges,
        tracefs,
    },
    loader::{self, Mode, UMOUNT_TRACEPOINTS},
};

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Works.
    Yes,
    /// Does not work here.
    No,
    /// Could not be checked (for example without root).
    NotChecked,
    /// A fact, neither good nor bad.
    Info,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Yes => "yes",
            Verdict::No => "no",
            Verdict::NotChecked => "not checked",
            Verdict::Info => "-",
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug)]
struct Row {
    check: &'static str,
    verdict: Verdict,
    detail: String,
}

fn row(check: &'static str, verdict: Verdict, detail: impl Into<String>) -> Row {
    Row {
        check,
        verdict,
        detail: detail.into(),
    }
}

/// What the kernel side counts when it loses something, and what it cannot count.
fn losses_row() -> Row {
    let causes: Vec<&str> = DropCause::ALL.iter().map(|c| c.as_str()).collect();
    row(
        "losses",
        Verdict::Info,
        format!(
            "counted per cause by the running probes and shown in `stats` lines and the top \
             status bar: {}; not countable: evictions from the LRU open-times map (an evicted \
             fd's open time reads as unknown)",
            causes.join(", ")
        ),
    )
}

/// Prints the report; exits 0 whatever the kernel offers (it is a report, not a test).
pub fn run(_args: &DoctorArgs) -> Result<ExitCode> {
    let privileges = Privileges::current();
    let mut rows = vec![row("kernel", Verdict::Info, kernel::release()), btf_row()];
    let offsets = offsets_rows(&mut rows);
    let lsms = lsm_row(&privileges);
    rows.extend([tracefs_row(), privileges_row(&privileges), lsms.clone()]);
    let probes = probe_rows(&privileges, &offsets);
    let mode = mode_line(&probes, &lsms);
    rows.extend(probes);
    rows.push(losses_row());
    print!("{}", render(&rows));
    println!("\nmode: {mode}");
    Ok(ExitCode::SUCCESS)
}

fn btf_row() -> Row {
    match std::fs::metadata(btf::VMLINUX) {
        Ok(m) => row(
            "BTF",
            Verdict::Yes,
            format!("{} ({} KiB)", btf::VMLINUX, m.len() / 1024),
        ),
        Err(e) => row(
            "BTF",
            Verdict::No,
            format!("{}: {e}; struct offsets unknown", btf::VMLINUX),
        ),
    }
}

fn offsets_rows(rows: &mut Vec<Row>) -> Resolved {
    if btf::load(Path::new(btf::VMLINUX)).is_err() {
        rows.push(row(
            "struct offsets",
            Verdict::No,
            "no kernel BTF to read them from",
        ));
        return Resolved::unknown();
    }
    let resolved = loader::resolve_offsets().clone();
    let detail: Vec<String> = btf::GLOBALS
        .iter()
        .map(|(name, spec)| {
            let value = resolved.get(name);
            let shown = if value == OFFSET_UNKNOWN {
                "missing".to_string()
            } else {
                value.to_string()
            };
            format!("{}={shown}", spec.describe())
        })
        .collect();
    let verdict = if resolved.failures.is_empty() {
        Verdict::Yes
    } else {
        Verdict::No
    };
    rows.push(row("struct offsets", verdict, detail.join(" ")));
    resolved
}

fn tracefs_row() -> Row {
    match tracefs::find().or_else(tracefs::listed_in_mounts) {
        Some(path) => row(
            "tracefs",
            Verdict::Yes,
            format!("mounted at {}", path.display()),
        ),
        None => row(
            "tracefs",
            Verdict::No,
            format!(
                "not mounted; `busyprobe watch` mounts it at {} when it starts",
                tracefs::CANDIDATES[0]
            ),
        ),
    }
}

fn privileges_row(p: &Privileges) -> Row {
    let caps: Vec<String> = kernel::privileges::NEEDED
        .iter()
        .map(|c| format!("{c} {}", if p.effective.contains(c) { "yes" } else { "no" }))
        .collect();
    let verdict = if p.missing().is_empty() {
        Verdict::Yes
    } else {
        Verdict::No
    };
    row(
        "privileges",
        verdict,
        format!("euid {}; {}", p.euid, caps.join(", ")),
    )
}

/// The active LSMs: with root, securityfs is mounted when it is missing (as the enhanced
/// mode does); without, a missing list is not checked.
fn lsm_row(p: &Privileges) -> Row {
    let active = if p.missing().is_empty() {
        lsm::active().map_err(|e| format!("{e:#}"))
    } else {
        std::fs::read_to_string(lsm::LIST)
            .map(|text| lsm::parse(&text))
            .map_err(|_| "securityfs not mounted; run `sudo busyprobe doctor` to list them".into())
    };
    match active {
        Ok(list) => match lsm::bpf_inactive(&list) {
            None => row(
                "active LSMs",
                Verdict::Yes,
                format!("{} (bpf listed: security hooks run)", list.join(",")),
            ),
            Some(why) => row("active LSMs", Verdict::No, why),
        },
        Err(why) => row("active LSMs", Verdict::NotChecked, why),
    }
}

/// Loads the object and tries each probe kind; all rows "not checked" without privileges.
fn probe_rows(p: &Privileges, offsets: &Resolved) -> Vec<Row> {
    const KINDS: [&str; 7] = [
        "ring buffer",
        "tracepoint",
        "raw_tracepoint",
        "tp_btf",
        "fentry",
        "BPF LSM",
        "BPF iterator",
    ];
    if !p.missing().is_empty() {
        let why = "needs root (CAP_BPF, CAP_PERFMON): run `sudo busyprobe doctor`";
        return KINDS
            .iter()
            .map(|k| row(k, Verdict::NotChecked, why))
            .collect();
    }
    let mut ebpf = match loader::load_object(offsets) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let mut rows = vec![row(
                "ring buffer",
                Verdict::No,
                format!("loading the object failed: {}", first_line(&e)),
            )];
            rows.extend(
                KINDS[1..]
                    .iter()
                    .map(|k| row(k, Verdict::NotChecked, "the object did not load")),
            );
            return rows;
        }
    };
    let btf = Btf::from_sys_fs().ok();
    vec![
        row("ring buffer", Verdict::Yes, "BPF_MAP_TYPE_RINGBUF created"),
        outcome_row("tracepoint", try_tracepoint(&mut ebpf)),
        outcome_row("raw_tracepoint", try_raw_tracepoint(&mut ebpf)),
        outcome_row("tp_btf", with_btf(&btf, |b| try_tp_btf(&mut ebpf, b))),
        outcome_row("fentry", with_btf(&btf, |b| try_fentry(&mut ebpf, b))),
        outcome_row("BPF LSM", with_btf(&btf, |b| try_lsm(&mut ebpf, b))),
        outcome_row("BPF iterator", try_iterators()),
    ]
}

fn try_iterators() -> Result<String> {
    crate::attribution::kernel_scan::KernelScanner::load()?;
    Ok("task_file, task, task_vma load: holders are found by the kernel scan".into())
}

fn with_btf(btf: &Option<Btf>, f: impl FnOnce(&Btf) -> Result<String>) -> Result<String> {
    f(btf.as_ref().context("no kernel BTF")?)
}

fn outcome_row(check: &'static str, outcome: Result<String>) -> Row {
    match outcome {
        Ok(detail) => row(check, Verdict::Yes, detail),
        Err(e) => row(check, Verdict::No, first_line(&e)),
    }
}

/// The error's first line without aya's empty verifier log: the kernel's answer.
fn first_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let line = text.lines().next().unwrap_or_default();
    line.split(". Verifier output")
        .next()
        .unwrap_or(line)
        .to_string()
}

fn try_tracepoint(ebpf: &mut Ebpf) -> Result<String> {
    let umount = &UMOUNT_TRACEPOINTS[0];
    if tracefs::find().is_none() {
        let prog: &mut aya::programs::TracePoint = self::program(ebpf, umount.program)?;
        prog.load()?;
        return Ok(format!(
            "{} loads (attach not tried: tracefs not mounted)",
            umount.program
        ));
    }
    loader::attach(ebpf, umount)?;
    Ok(format!(
        "{}:{} loads and attaches",
        umount.category, umount.names[0]
    ))
}

/// The doctor program `name` as program type `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the object"))?;
    Ok(prog.try_into()?)
}

fn try_raw_tracepoint(ebpf: &mut Ebpf) -> Result<String> {
    let prog: &mut RawTracePoint = program(ebpf, programs::DOCTOR_RAW_TRACEPOINT)?;
    prog.load()?;
    prog.attach("sched_process_exit")?;
    Ok("sched_process_exit loads and attaches".into())
}

/// Loads the BTF-typed doctor program `$name` of type `$ty` at `$target` and attaches it.
macro_rules! try_btf_program {
    ($ebpf:expr, $btf:expr, $ty:ty, $name:expr, $target:literal) => {{
        let prog: &mut $ty = program($ebpf, $name)?;
        prog.load($target, $btf)?;
        prog.attach()?;
        Ok(concat!($target, " loads and attaches").to_string())
    }};
}

fn try_tp_btf(ebpf: &mut Ebpf, btf: &Btf) -> Result<String> {
    try_btf_program!(
        ebpf,
        btf,
        BtfTracePoint,
        programs::DOCTOR_TP_BTF,
        "sched_process_exit"
    )
}

/// fentry mode's own umount probe, so that the mode line says what `--mode auto` will run.
fn try_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<String> {
    let [umount, _] = loader::UMOUNT_FENTRY;
    loader::attach_traced(ebpf, btf, &umount)?;
    Ok(format!("{} loads and attaches", umount.function))
}

/// The enhanced mode's own security hooks, so that the mode line says what `--mode auto`
/// will run.
fn try_lsm(ebpf: &mut Ebpf, btf: &Btf) -> Result<String> {
    let hooks = [loader::UMOUNT_LSM, loader::OPEN_TIME_LSM];
    for hook in &hooks {
        loader::attach_hook(ebpf, btf, hook)?;
    }
    for traced in &loader::EVENT_FD_FENTRY {
        loader::attach_traced(ebpf, btf, traced)?;
    }
    Ok(format!(
        "{} and {} load and attach, and {} is traced (fanotify's event fds told apart)",
        hooks[0].hook,
        hooks[1].hook,
        loader::EVENT_FD_FENTRY[0].function
    ))
}

/// Which mode `watch` will run in (with the default `--mode auto`), from the probe rows and
/// the active LSMs.
fn mode_line(probes: &[Row], lsms: &Row) -> String {
    let works = |check: &str| {
        probes
            .iter()
            .any(|r| r.check == check && r.verdict == Verdict::Yes)
    };
    let checked = probes.iter().any(|r| r.verdict != Verdict::NotChecked);
    if !checked {
        return "not checked without root; on a kernel with tracepoints and a ring buffer, busyprobe uses tracepoint mode".into();
    }
    let hooks_run = lsms.verdict == Verdict::Yes;
    if works("fentry") && works("ring buffer") && works("BPF LSM") && hooks_run {
        format!(
            "{}: every umount/umount2 call is captured by BPF trampolines on the syscall wrappers, with the exact mount from the sb_umount security hook, and every open is timed by the file_open hook (--mode fentry or tracepoint to run without them)",
            Mode::Enhanced.as_str()
        )
    } else if works("fentry") && works("ring buffer") {
        let why = if hooks_run {
            "the BPF LSM programs are refused".to_string()
        } else {
            lsms.detail.clone()
        };
        format!(
            "{}: every umount/umount2 call is captured by BPF trampolines on the syscall wrappers (only the traced calls pay; --mode tracepoint uses syscall tracepoints instead); no security hooks: {why}",
            Mode::Fentry.as_str()
        )
    } else if works("tracepoint") && works("ring buffer") {
        format!(
            "{}: every umount/umount2 call is captured at syscall entry and exit; fentry is refused here, so no fentry mode",
            Mode::Tracepoint.as_str()
        )
    } else {
        "none: syscall tracepoints or the ring buffer are unavailable, busyprobe cannot capture unmounts on this kernel".into()
    }
}

/// The table: a column each for check, verdict and detail.
fn render(rows: &[Row]) -> String {
    let check_w = rows.iter().map(|r| r.check.len()).max().unwrap_or(0).max(5);
    let verdict_w = rows
        .iter()
        .map(|r| r.verdict.as_str().len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!("{:<check_w$}  {:<verdict_w$}  DETAIL\n", "CHECK", "RESULT");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<check_w$}  {:<verdict_w$}  {}",
            r.check,
            r.verdict.as_str(),
            r.detail
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_aligned_table() {
        let rows = [
            row("kernel", Verdict::Info, "6.18"),
            row("fentry", Verdict::No, "EPERM"),
        ];
        assert_eq!(
            render(&rows),
            "CHECK   RESULT  DETAIL\nkernel  -       6.18\nfentry  no      EPERM\n"
        );
    }

    #[test]
    fn mode_follows_the_probe_rows() {
        let yes = |c| row(c, Verdict::Yes, "");
        let no = |c| row(c, Verdict::No, "");
        let bpf_listed = yes("active LSMs");
        let tp_only = [
            yes("ring buffer"),
            yes("tracepoint"),
            no("fentry"),
            no("BPF LSM"),
        ];
        let line = mode_line(&tp_only, &bpf_listed);
        assert!(line.starts_with("tracepoint:") && line.contains("fentry is refused"));
        let all = [
            yes("ring buffer"),
            yes("tracepoint"),
            yes("fentry"),
            yes("BPF LSM"),
        ];
        let line = mode_line(&all, &bpf_listed);
        assert!(line.starts_with("enhanced:"), "{line}");
        let not_listed = row(
            "active LSMs",
            Verdict::No,
            "the bpf LSM is not active (...)",
        );
        let line = mode_line(&all, &not_listed);
        assert!(
            line.starts_with("fentry:")
                && line.ends_with("no security hooks: the bpf LSM is not active (...)"),
            "{line}"
        );
        let refused = [yes("ring buffer"), yes("fentry"), no("BPF LSM")];
        let line = mode_line(&refused, &bpf_listed);
        assert!(line.ends_with("the BPF LSM programs are refused"), "{line}");
        assert!(
            mode_line(&[no("ring buffer"), yes("tracepoint")], &bpf_listed).starts_with("none")
        );
        let unchecked = [row("tracepoint", Verdict::NotChecked, "")];
        assert!(mode_line(&unchecked, &bpf_listed).starts_with("not checked"));
    }

    #[test]
    fn without_privileges_nothing_is_loaded() {
        let p = Privileges {
            euid: 1000,
            effective: Default::default(),
        };
        let rows = probe_rows(&p, &Resolved::unknown());
        assert_eq!(rows.len(), 7);
        assert!(rows
            .iter()
            .all(|r| r.verdict == Verdict::NotChecked && r.detail.contains("needs root")));
    }
}
