//! The configurations measured: no tracer, the agent as it starts by default, `busyprobe
//! watch --json` in three modes, and `opensnoop`. A [`super::session::Session`] runs one of
//! them beside the workloads.

use std::path::PathBuf;

use crate::bench::tools;

/// The configurations, by their place in [`configs`]: no tracer (the baseline)...
pub const BASELINE: usize = 0;
/// ... `busyprobe agent` with its defaults, no mount contended (a node's usual state) ...
pub const AGENT: usize = 1;
/// ... the same with one mount contended (an EBUSY on the contended tmpfs: its open probes
/// are attached) ...
pub const AGENT_CONTENDED: usize = 2;
/// ... `busyprobe watch --json`, its default mode ...
pub const WATCH: usize = 3;
/// ... with `--no-open-times` ...
pub const NO_OPEN_TIMES: usize = 4;
/// ... with `--no-holders` ...
pub const NO_HOLDERS: usize = 5;
/// ... and opensnoop.
pub const OPENSNOOP: usize = 6;
/// The busyprobe configurations.
pub const BUSYPROBE: [usize; 5] = [AGENT, AGENT_CONTENDED, WATCH, NO_OPEN_TIMES, NO_HOLDERS];

/// What runs beside the workloads.
pub enum Kind {
    /// Nothing: the baseline.
    Baseline,
    /// `busyprobe agent --no-socket --metrics 127.0.0.1:PORT`: the agent's defaults, less the
    /// socket (its default path may be taken by an agent that runs for good), recording
    /// nothing (no `-o`).
    Agent,
    /// `busyprobe watch --json --stats-interval 0` with these extra arguments.
    Watch(&'static [&'static str]),
    /// opensnoop, stdout to /dev/null.
    Opensnoop(PathBuf),
}

impl Kind {
    /// Whether busyprobe runs.
    pub fn is_busyprobe(&self) -> bool {
        matches!(self, Self::Agent | Self::Watch(_))
    }
}

/// One configuration.
pub struct Config {
    /// `(0)` to `(6)`.
    pub key: &'static str,
    /// Its column's heading, short.
    pub heading: String,
    /// What runs, as a command line.
    pub label: String,
    pub kind: Kind,
    /// Why it is not measured, when it is not.
    pub skipped: Option<String>,
    /// Whether a session starts with an EBUSY on the contended tmpfs (all but the agent with
    /// no mount contended).
    pub contends: bool,
}

impl Config {
    fn new(key: &'static str, heading: &str, label: &str, kind: Kind) -> Self {
        Self {
            key,
            heading: heading.into(),
            label: label.into(),
            kind,
            skipped: None,
            contends: true,
        }
    }
}

/// The seven configurations, in the order of the constants above; opensnoop's is skipped with
/// `opensnoop`'s error when it is missing.
pub fn configs(opensnoop: Result<(PathBuf, String), String>) -> Vec<Config> {
    let watch = |key, extra: &'static [&'static str]| {
        let words = ["watch"].iter().chain(extra).copied().collect::<Vec<_>>();
        let label = ["busyprobe watch --json"].iter().chain(extra).copied();
        let label = label.collect::<Vec<_>>().join(" ");
        Config::new(key, &words.join(" "), &label, Kind::Watch(extra))
    };
    let opensnoop = match opensnoop {
        Ok((path, package)) => Config::new(
            "(6)",
            "opensnoop",
            &format!("opensnoop ({package}, as it ships)"),
            Kind::Opensnoop(path),
        ),
        Err(reason) => Config {
            skipped: Some(reason),
            ..Config::new("(6)", "opensnoop", "opensnoop", Kind::Baseline)
        },
    };
    vec![
        Config::new("(0)", "no tracer", "no tracer (baseline)", Kind::Baseline),
        Config {
            contends: false,
            ..Config::new(
                "(1)",
                "agent",
                "busyprobe agent --no-socket --metrics 127.0.0.1:PORT (its defaults; no \
                 recording), no mount contended",
                Kind::Agent,
            )
        },
        Config::new(
            "(2)",
            "agent, 1 mount contended",
            "the same, after an EBUSY on the contended tmpfs (its opens timed from then on)",
            Kind::Agent,
        ),
        watch("(3)", &[]),
        watch("(4)", &["--no-open-times"]),
        watch("(5)", &["--no-holders"]),
        opensnoop,
    ]
}

/// Finds opensnoop: libbpf-tools' `opensnoop`, else bcc's `opensnoop-bpfcc`, installing
/// `libbpf-tools` (then `bpfcc-tools`) with apt-get when neither is there. Returns its path and
/// package, or why it is missing.
pub fn find_opensnoop() -> Result<(PathBuf, String), String> {
    let candidates = [
        ("opensnoop", "libbpf-tools"),
        ("opensnoop-bpfcc", "bpfcc-tools"),
    ];
    if let Some(found) = candidates
        .iter()
        .find_map(|(tool, package)| Some((tools::find_in_path(tool)?, package.to_string())))
    {
        return Ok(found);
    }
    let mut reasons = Vec::new();
    for (tool, package) in candidates {
        let [found] = tools::find_or_install(&[(tool, package)]);
        match found {
            Ok(path) => return Ok((path, package.to_string())),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_are_where_their_constants_say() {
        let configs = configs(Err("missing".into()));
        let keys: Vec<&str> = configs.iter().map(|c| c.key).collect();
        assert_eq!(keys, ["(0)", "(1)", "(2)", "(3)", "(4)", "(5)", "(6)"]);
        assert!(matches!(configs[BASELINE].kind, Kind::Baseline));
        assert!(matches!(configs[AGENT].kind, Kind::Agent));
        assert!(matches!(configs[AGENT_CONTENDED].kind, Kind::Agent));
        let contend: Vec<bool> = configs.iter().map(|c| c.contends).collect();
        assert_eq!(contend, [true, false, true, true, true, true, true]);
        assert!(matches!(configs[WATCH].kind, Kind::Watch([])));
        assert!(matches!(
            configs[NO_OPEN_TIMES].kind,
            Kind::Watch(["--no-open-times"])
        ));
        assert!(matches!(
            configs[NO_HOLDERS].kind,
            Kind::Watch(["--no-holders"])
        ));
        assert_eq!(configs[OPENSNOOP].skipped.as_deref(), Some("missing"));
        assert_eq!(configs[NO_HOLDERS].heading, "watch --no-holders");
        assert_eq!(
            configs[NO_HOLDERS].label,
            "busyprobe watch --json --no-holders"
        );
        assert!(BUSYPROBE.iter().all(|&c| configs[c].kind.is_busyprobe()));
    }
}
