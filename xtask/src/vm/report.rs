//! Reading a guest run: the result lines the init script prints on the serial console, the
//! test binary's own lines, and qemu's exit status, combined into one verdict.

use std::fmt;

/// The prefix of every result line the guest's init prints.
pub const MARKER: &str = "@@vm-test@@";

/// Test totals and names, from the libtest(-mimic) lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestCounts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that ignored themselves or were ignored.
    pub ignored: u64,
    /// Tests left out by the name filter.
    pub filtered: u64,
    /// Names of the failed tests.
    pub failed_names: Vec<String>,
    /// Names of the ignored tests, with the reason when one was given.
    pub ignored_names: Vec<String>,
    /// The first lines of each failed test's message (`---- NAME ----` blocks), by name.
    pub messages: Vec<(String, Vec<String>)>,
}

/// Lines kept of each failure message.
const MESSAGE_LINES: usize = 3;

/// Everything the guest reported, read line by line from its console.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GuestReport {
    /// `uname -r` in the guest.
    pub kernel: Option<String>,
    /// The active LSMs (`/sys/kernel/security/lsm`).
    pub lsm: Option<String>,
    /// The lines `busyprobe doctor` printed.
    pub doctor: Vec<String>,
    /// Its exit status.
    pub doctor_exit: Option<i32>,
    /// The test binary's exit status.
    pub tests_exit: Option<i32>,
    /// Seconds the test binary ran (guest uptime difference).
    pub tests_seconds: Option<f64>,
    /// Test totals (only once the binary printed its `test result:` line).
    pub tests: Option<TestCounts>,
    /// The code the guest said it would write to isa-debug-exit.
    pub exit: Option<u8>,
    /// A setup step that failed.
    pub setup_failed: Option<String>,
    stage: Stage,
    names: TestCounts,
    in_message: bool,
    in_failures: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    Setup,
    Doctor,
    Tests,
}

impl GuestReport {
    /// Takes one console line (with or without its `\r`).
    pub fn feed(&mut self, line: &str) {
        let line = strip_ansi(line.trim_end_matches(['\r', '\n']));
        let line = line.as_str();
        if let Some(rest) = line.strip_prefix(MARKER) {
            self.result_line(rest.trim());
            return;
        }
        match self.stage {
            Stage::Doctor => self.doctor.push(line.to_owned()),
            Stage::Tests => self.test_line(line),
            Stage::Setup => {}
        }
    }

    fn result_line(&mut self, rest: &str) {
        let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let first_int = || value.split_whitespace().next()?.parse::<i32>().ok();
        match key {
            "kernel" => self.kernel = Some(value.to_owned()),
            "lsm" => self.lsm = Some(value.to_owned()),
            "stage" if value == "doctor" => self.stage = Stage::Doctor,
            "stage" if value == "tests" => self.stage = Stage::Tests,
            "doctor-exit" => {
                self.doctor_exit = first_int();
                self.stage = Stage::Setup;
            }
            "tests-exit" => {
                self.tests_exit = first_int();
                let times: Vec<f64> = value
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|t| t.parse().ok())
                    .collect();
                if let [start, end] = times[..] {
                    self.tests_seconds = Some(end - start);
                }
                self.stage = Stage::Setup;
            }
            "setup-failed" => self.setup_failed = Some(value.to_owned()),
            "exit" => self.exit = value.trim().parse().ok(),
            _ => {}
        }
    }

    fn failed(&mut self, name: &str) {
        if !self.names.failed_names.iter().any(|n| n == name) {
            self.names.failed_names.push(name.to_owned());
        }
    }

    /// `test NAME ... ok|FAILED|ignored[, reason]` and `test result: ...`, and the
    /// `failures:` section (each failure's message, then the list of names).
    fn test_line(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" ----"))
        {
            self.names.messages.push((name.to_owned(), Vec::new()));
            self.in_message = true;
            return;
        }
        if line == "failures:" {
            self.in_message = false;
            self.in_failures = true;
            return;
        }
        if let (true, Some((_, message))) = (self.in_message, self.names.messages.last_mut()) {
            if message.len() < MESSAGE_LINES && !line.is_empty() && !is_kernel_line(line) {
                message.push(line.to_owned());
            }
            return;
        }
        // The closing list, `    NAME` per failed test: the one source that holds even when a
        // test's own output split its `test NAME ... ` line from its verdict.
        if let Some(name) = line.strip_prefix("    ").filter(|_| self.in_failures) {
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                self.failed(name);
            }
            return;
        }
        if let Some(summary) = line.strip_prefix("test result: ") {
            let mut counts = std::mem::take(&mut self.names);
            for part in summary.split(';') {
                let part = part.replace("filtered out", "filtered");
                let mut words = part.split_whitespace().rev();
                let (Some(label), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse() else { continue };
                match label {
                    "passed" => counts.passed = n,
                    "failed" => counts.failed = n,
                    "ignored" => counts.ignored = n,
                    "filtered" => counts.filtered = n,
                    _ => {}
                }
            }
            self.tests = Some(counts);
            return;
        }
        let Some((name, outcome)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        else {
            return;
        };
        let (name, outcome) = (name.trim(), outcome.trim());
        if outcome.starts_with("FAILED") {
            self.failed(name);
        } else if let Some(reason) = outcome.strip_prefix("ignored") {
            let reason = reason.trim_start_matches([',', ' ']);
            self.names.ignored_names.push(if reason.is_empty() {
                name.to_owned()
            } else {
                format!("{name} ({reason})")
            });
        }
    }
}

/// A kernel message on the console: `[   41.123456] text`.
fn is_kernel_line(line: &str) -> bool {
    line.strip_prefix('[')
        .and_then(|l| l.split_once(']'))
        .is_some_and(|(t, _)| t.trim().parse::<f64>().is_ok())
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`): the test binary colours its
/// verdicts when its output is a terminal, as the guest's serial console is.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// How qemu ended, read from its exit status alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuExit {
    /// The guest wrote code N to isa-debug-exit (qemu exits 2N+1).
    Code(u8),
    /// qemu exited 0: the guest powered off or rebooted (a panic with `panic=-1` and
    /// `-no-reboot`) without writing a code.
    PoweredOff,
    /// Our timeout killed it.
    TimedOut,
    /// Any other status: qemu failed (bad options, no kernel) or was killed by a signal.
    Other(Option<i32>),
}

/// Reads qemu's exit status (`None`: killed by a signal).
pub fn interpret_exit(status: Option<i32>, timed_out: bool) -> QemuExit {
    match status {
        _ if timed_out => QemuExit::TimedOut,
        Some(0) => QemuExit::PoweredOff,
        Some(n) if n > 0 && n % 2 == 1 && n < 512 => QemuExit::Code(((n - 1) / 2) as u8),
        other => QemuExit::Other(other),
    }
}

/// The outcome of one guest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The guest reported code 0 on the console and through the exit port, and every stage
    /// that ran passed.
    Passed,
    /// The guest reported a failure (the reason says which stage).
    Failed(String),
    /// The guest never reported (it died, hung, or qemu failed): the reason says how.
    NoReport(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Passed => f.write_str("passed"),
            Verdict::Failed(why) => write!(f, "FAILED: {why}"),
            Verdict::NoReport(why) => write!(f, "NO REPORT: {why}"),
        }
    }
}

/// Combines the console report and the exit status. qemu itself also exits 1 on its own
/// errors, which reads as guest code 0: so a pass needs the console's `exit 0` line too.
pub fn verdict(report: &GuestReport, exit: QemuExit) -> Verdict {
    match (exit, report.exit) {
        (QemuExit::TimedOut, _) => Verdict::NoReport("timed out (qemu killed)".into()),
        (QemuExit::PoweredOff, _) => {
            Verdict::NoReport("the guest powered off or panicked before reporting".into())
        }
        (QemuExit::Other(Some(n)), _) => Verdict::NoReport(format!("qemu exited {n}")),
        (QemuExit::Other(None), _) => {
            Verdict::NoReport("qemu was killed by a signal (it aborts when KVM fails)".into())
        }
        (QemuExit::Code(0), None) => Verdict::NoReport(
            "qemu exited 1 and the guest printed no result: qemu failed on its own (see the log)"
                .into(),
        ),
        (QemuExit::Code(port), None) => Verdict::NoReport(format!(
            "exit port says {port} but the console printed no result"
        )),
        (QemuExit::Code(port), Some(console)) if port != console => {
            Verdict::NoReport(format!("exit port says {port}, console says {console}"))
        }
        (QemuExit::Code(_), Some(_)) => {
            if let Some(step) = &report.setup_failed {
                return Verdict::Failed(format!("guest set-up failed: {step}"));
            }
            let mut failed = Vec::new();
            if report.doctor_exit != Some(0) {
                failed.push(format!("doctor exited {:?}", report.doctor_exit));
            }
            if report.tests_exit.is_some_and(|c| c != 0) {
                failed.push(format!("tests exited {:?}", report.tests_exit));
            }
            if report.exit != Some(0) && failed.is_empty() {
                failed.push(format!("guest code {:?}", report.exit));
            }
            if failed.is_empty() {
                Verdict::Passed
            } else {
                Verdict::Failed(failed.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &str) -> GuestReport {
        let mut r = GuestReport::default();
        for line in lines.lines() {
            r.feed(line);
        }
        r
    }

    const RUN: &str = "[    1.2] Run /init as init process\r
@@vm-test@@ kernel 6.1.0-56-amd64\r
@@vm-test@@ lsm lockdown,capability,landlock,yama,apparmor,bpf\r
@@vm-test@@ stage doctor\r
fentry           yes  loads\r
@@vm-test@@ doctor-exit 0\r
@@vm-test@@ stage tests\r
running 3 tests\r
test holder_fd ... ok\r
test top_live ... FAILED\r
test holder_swap_file ... ignored, swapon was refused\r
[   40.1] loop0: detected capacity change\r
\r
failures:\r
\r
---- top_live ----\r
test panicked: no row\r
screen:\r
[   41.0] random kernel line\r
line 3\r
line 4\r
\r
failures:\r
    top_live\r
\r
test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 40 filtered out; finished in 20.5s\r
@@vm-test@@ tests-exit 101 10.25 40.75\r
@@vm-test@@ exit 1\r
";

    #[test]
    fn reads_every_result_line() {
        let r = feed(RUN);
        assert_eq!(r.kernel.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(r.doctor, ["fentry           yes  loads"]);
        assert_eq!(r.doctor_exit, Some(0));
        assert_eq!(r.tests_exit, Some(101));
        assert_eq!(r.tests_seconds, Some(30.5));
        assert_eq!(r.exit, Some(1));
        let t = r.tests.clone().unwrap();
        assert_eq!((t.passed, t.failed, t.ignored, t.filtered), (1, 1, 1, 40));
        assert_eq!(t.failed_names, ["top_live"]);
        assert_eq!(t.ignored_names, ["holder_swap_file (swapon was refused)"]);
        assert_eq!(
            verdict(&r, QemuExit::Code(1)),
            Verdict::Failed("tests exited Some(101)".into())
        );
    }

    #[test]
    fn coloured_verdicts_are_read() {
        let r = feed("@@vm-test@@ stage tests\n\
                      test top_live          ... \x1b[31mFAILED\x1b[0m\n\
                      test holder_fd ... \x1b[32mok\x1b[0m\n\
                      test result: \x1b[31mFAILED\x1b[0m. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n");
        let t = r.tests.unwrap();
        assert_eq!((t.passed, t.failed), (1, 1));
        assert_eq!(t.failed_names, ["top_live"]);
        assert_eq!(strip_ansi("a\x1b[1;31mb\x1b[0mc"), "abc");
        assert!(is_kernel_line(
            "[   41.123456] loop0: detected capacity change"
        ));
        assert!(!is_kernel_line("[1, 2]"));
    }

    #[test]
    fn failed_names_come_from_the_closing_list_too() {
        // One test thread: the test's own stderr lands between its name and its verdict.
        let r = feed("@@vm-test@@ stage tests\n\
                      test race ... Open scanner race: 9 EBUSY\n\
                      FAILED\n\
                      \n\
                      failures:\n\
                      \n\
                      ---- race ----\n\
                      test panicked: too few failures\n\
                      \n\
                      failures:\n    race\n\n\
                      test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n");
        let t = r.tests.unwrap();
        assert_eq!(t.failed_names, ["race"]);
        assert_eq!(t.messages[0].1, ["test panicked: too few failures"]);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(interpret_exit(Some(1), false), QemuExit::Code(0));
        assert_eq!(interpret_exit(Some(3), false), QemuExit::Code(1));
        assert_eq!(interpret_exit(Some(5), false), QemuExit::Code(2));
        assert_eq!(interpret_exit(Some(0), false), QemuExit::PoweredOff);
        assert_eq!(interpret_exit(Some(2), false), QemuExit::Other(Some(2)));
        assert_eq!(interpret_exit(None, false), QemuExit::Other(None));
        assert_eq!(interpret_exit(Some(1), true), QemuExit::TimedOut);
    }

    #[test]
    fn a_clean_poweroff_is_never_a_pass() {
        let r = feed("@@vm-test@@ doctor-exit 0\n@@vm-test@@ exit 0\n");
        assert!(matches!(
            verdict(&r, QemuExit::PoweredOff),
            Verdict::NoReport(_)
        ));
        assert_eq!(verdict(&r, QemuExit::Code(0)), Verdict::Passed);
    }

    #[test]
    fn qemu_failing_on_its_own_is_not_a_pass() {
        // qemu exits 1 on a bad option: that reads as code 0, but the console said nothing.
        let r = feed("qemu-system-x86_64: -foo: invalid option\n");
        assert!(matches!(
            verdict(&r, QemuExit::Code(0)),
            Verdict::NoReport(_)
        ));
    }

    #[test]
    fn console_and_port_must_agree() {
        let r = feed("@@vm-test@@ doctor-exit 0\n@@vm-test@@ exit 2\n");
        assert!(matches!(
            verdict(&r, QemuExit::Code(0)),
            Verdict::NoReport(_)
        ));
    }

    #[test]
    fn a_failed_setup_step_is_named() {
        let r = feed(
            "@@vm-test@@ setup-failed insmod /lib/modules/vm-test/loop.ko\n@@vm-test@@ exit 2\n",
        );
        assert_eq!(
            verdict(&r, QemuExit::Code(2)),
            Verdict::Failed("guest set-up failed: insmod /lib/modules/vm-test/loop.ko".into())
        );
    }

    #[test]
    fn a_failing_doctor_fails_the_run() {
        let r = feed("@@vm-test@@ doctor-exit 1\n@@vm-test@@ exit 0\n");
        assert_eq!(
            verdict(&r, QemuExit::Code(0)),
            Verdict::Failed("doctor exited Some(1)".into())
        );
    }
}
