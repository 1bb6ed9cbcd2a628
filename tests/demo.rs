//! `busyprobe demo` runs end to end and names the holders it built: the process holding
//! `etc/passwd` and the scanner reading `etc/hosts`; it leaves nothing behind.

use libtest_mimic::Trial;
use std::process::Command;

use crate::support::process;

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![demo_names_the_holders_it_built,]
}

/// The holder line printed under the EBUSY line at `index` of `lines`.
fn holder_under<'a>(lines: &[&'a str], ebusy: usize) -> &'a str {
    lines.get(ebusy + 1).copied().unwrap_or_default()
}

fn demo_names_the_holders_it_built() {
    let out = process::output(Command::new(env!("CARGO_BIN_EXE_busyprobe")).arg("demo"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let ebusy: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("  EBUSY  "))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ebusy.len(), 2, "two failed unmounts:\n{stdout}");
    for (index, file) in ebusy.iter().zip(["/etc/passwd", "/etc/hosts"]) {
        let holder = holder_under(&lines, *index);
        let kind = holder.split_whitespace().next().unwrap_or_default();
        assert!(
            kind == "fd" || kind == "transient",
            "a holder line under the EBUSY: {holder:?}\n{stdout}"
        );
        assert!(
            holder.contains(" busyprobe[") && holder.ends_with_path(file),
            "{holder:?}\n{stdout}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("  ok     ")),
        "the last unmount works:\n{stdout}"
    );
    let layer = stdout
        .split_whitespace()
        .find(|w| w.contains("/busyprobe-demo."))
        .expect("the demo names its directory");
    let dir = &layer[..layer
        .find("/tmpmounts")
        .expect("the layer is under tmpmounts")];
    assert!(!std::path::Path::new(dir).exists(), "{dir} was removed");
}

/// Whether a holder line names a path ending in `file`.
trait EndsWithPath {
    fn ends_with_path(&self, file: &str) -> bool;
}

impl EndsWithPath for &str {
    fn ends_with_path(&self, file: &str) -> bool {
        self.split_whitespace().any(|w| w.ends_with(file))
    }
}
