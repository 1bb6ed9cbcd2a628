//! What `vm-test` prints: each kernel's outcome as it ends (doctor's probe-kind rows, test
//! counts, failed tests with the start of their messages, the log's tail on failure), then one
//! table for all kernels.

use super::{qemu, report::Verdict, Outcome};

/// Doctor rows about probe kinds, and its mode line.
pub fn probe_kind_lines(doctor: &[String]) -> Vec<&str> {
    const KINDS: [&str; 8] = [
        "ring buffer",
        "tracepoint",
        "raw_tracepoint",
        "tp_btf",
        "fentry",
        "BPF LSM",
        "BPF iterator",
        "mode:",
    ];
    doctor
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| {
            KINDS
                .iter()
                .any(|k| l.strip_prefix(k).is_some_and(|r| r.starts_with(' ')))
        })
        .collect()
}

/// One kernel's outcome, printed when it ends.
pub fn print_outcome(o: &Outcome) {
    let r = &o.report;
    let boot = o
        .boot
        .map(|b| format!(" (qemu {:.1} s)", b.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "xtask: vm: {}: kernel {}, {} in {:.1} s{boot}",
        o.kernel,
        r.kernel.as_deref().unwrap_or("?"),
        o.verdict,
        o.elapsed.as_secs_f64()
    );
    for line in probe_kind_lines(&r.doctor) {
        println!("    {line}");
    }
    if let Some(t) = &r.tests {
        println!(
            "  tests: {} passed, {} failed, {} ignored, {} filtered out, in {:.1} s",
            t.passed,
            t.failed,
            t.ignored,
            t.filtered,
            r.tests_seconds.unwrap_or(0.0)
        );
        for name in &t.failed_names {
            println!("    FAILED  {name}");
            let message = t.messages.iter().find(|(n, _)| n == name);
            for line in message.map(|(_, m)| m.as_slice()).unwrap_or_default() {
                println!("            {}", message_line(line));
            }
        }
        for name in &t.ignored_names {
            println!("    ignored {name}");
        }
    }
    if o.verdict != Verdict::Passed && o.log.is_file() {
        println!(
            "xtask: vm: last lines of {}:\n{}",
            o.log.display(),
            qemu::tail(&o.log, 40)
        );
    }
}

/// Characters printed of each line of a failed test's message: enough for a whole JSON line
/// with its holders (the evidence a failure needs once the guest's log is gone, as in CI).
const MESSAGE_LINE_CHARS: usize = 4000;

/// A line of a failed test's message, cut at [`MESSAGE_LINE_CHARS`] (marked when cut).
fn message_line(line: &str) -> String {
    let mut out: String = line.chars().take(MESSAGE_LINE_CHARS).collect();
    if out.len() < line.len() {
        out.push_str(" [...]");
    }
    out
}

/// The table of every kernel.
pub fn print_summary(outcomes: &[Outcome]) {
    println!("\nxtask: vm-test summary");
    println!(
        "  {:<12} {:<24} {:>7} {:>7} {:>7} {:>9}  verdict",
        "kernel", "release", "passed", "failed", "ignored", "wall s"
    );
    for o in outcomes {
        let t = o.report.tests.clone().unwrap_or_default();
        let counts = if o.report.tests.is_some() {
            [t.passed, t.failed, t.ignored].map(|n| n.to_string())
        } else {
            ["-".into(), "-".into(), "-".into()]
        };
        println!(
            "  {:<12} {:<24} {:>7} {:>7} {:>7} {:>9.1}  {}",
            o.kernel.name(),
            o.report.kernel.as_deref().unwrap_or("?"),
            counts[0],
            counts[1],
            counts[2],
            o.elapsed.as_secs_f64(),
            o.verdict
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_line_keeps_a_whole_json_line_and_marks_a_cut() {
        let json = format!("{{\"holders\":[{}]}}", "x".repeat(1500));
        assert_eq!(message_line(&json), json);
        let long = "é".repeat(MESSAGE_LINE_CHARS + 1);
        let cut = message_line(&long);
        assert!(cut.ends_with(" [...]"));
        assert_eq!(cut.chars().count(), MESSAGE_LINE_CHARS + 6);
    }

    #[test]
    fn picks_the_probe_kind_rows_of_doctor() {
        let doctor: Vec<String> = [
            "CHECK           RESULT       DETAIL",
            "tracefs         yes          mounted at /sys/kernel/tracing",
            "tracepoint      yes          syscalls:sys_enter_umount loads and attaches",
            "fentry          yes          __x64_sys_umount loads",
            "BPF LSM         yes          sb_umount loads",
            "",
            "mode: enhanced",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            probe_kind_lines(&doctor),
            [
                "tracepoint      yes          syscalls:sys_enter_umount loads and attaches",
                "fentry          yes          __x64_sys_umount loads",
                "BPF LSM         yes          sb_umount loads",
                "mode: enhanced"
            ]
        );
    }
}
