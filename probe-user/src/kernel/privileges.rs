//! Whether this process may load and attach eBPF programs, and what is missing if not.

use std::collections::HashSet;

use anyhow::{bail, Result};
use caps::{CapSet, Capability};

/// Capabilities busyprobe's probes need: loading programs (BPF), attaching tracepoints
/// (PERFMON), mounting tracefs (SYS_ADMIN), reading other processes' mount tables, working
/// directories, roots and fds (SYS_PTRACE: without it every holder is silently missed), and
/// reaching a holder's files under directories its owner alone may search
/// (DAC_READ_SEARCH). The DaemonSet in deploy/kubernetes grants exactly these.
pub const NEEDED: [Capability; 5] = [
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_READ_SEARCH,
];

/// This process's privileges.
#[derive(Clone, Debug)]
pub struct Privileges {
    /// Effective uid.
    pub euid: u32,
    /// Effective capabilities (empty if they could not be read).
    pub effective: HashSet<Capability>,
}

impl Privileges {
    /// Reads the current process's privileges.
    pub fn current() -> Self {
        Self {
            euid: nix::unistd::geteuid().as_raw(),
            effective: caps::read(None, CapSet::Effective).unwrap_or_default(),
        }
    }

    /// The needed capabilities this process lacks.
    pub fn missing(&self) -> Vec<Capability> {
        NEEDED
            .iter()
            .copied()
            .filter(|c| !self.effective.contains(c))
            .collect()
    }

    /// Fails with an explanation when the probes cannot be loaded; `what` names the command.
    pub fn require_probes(&self, what: &str) -> Result<()> {
        let missing = self.missing();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
        if self.euid != 0 {
            bail!(
                "`busyprobe {what}` loads eBPF programs into the kernel and needs root \
                 (or the capabilities CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE and \
                 CAP_DAC_READ_SEARCH); this process \
                 runs as uid {} and lacks {}.\nRun it as root, for example: sudo busyprobe {what}\n\
                 (`busyprobe doctor` works without root and shows what this kernel supports.)",
                self.euid,
                names.join(", ")
            );
        }
        bail!(
            "`busyprobe {what}` runs as root but without the capabilities {} (a container or a \
             capability bounding set removed them). Grant them, for example \
             `--cap-add BPF --cap-add PERFMON --cap-add SYS_ADMIN --cap-add SYS_PTRACE \
             --cap-add DAC_READ_SEARCH` (deploy/kubernetes/busyprobe.yaml grants exactly these).",
            names.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_what_is_missing_for_a_normal_user() {
        let p = Privileges {
            euid: 1000,
            effective: HashSet::new(),
        };
        assert_eq!(p.missing(), NEEDED.to_vec());
        let msg = p.require_probes("watch").unwrap_err().to_string();
        assert!(msg.contains("needs root"), "{msg}");
        assert!(msg.contains("uid 1000"), "{msg}");
        assert!(msg.contains("CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN"), "{msg}");
        assert!(msg.contains("sudo busyprobe watch"), "{msg}");
    }

    #[test]
    fn root_without_capabilities_is_told_which() {
        let p = Privileges {
            euid: 0,
            effective: [Capability::CAP_SYS_ADMIN].into_iter().collect(),
        };
        let msg = p.require_probes("watch").unwrap_err().to_string();
        assert!(
            msg.contains("CAP_BPF, CAP_PERFMON") && !msg.contains("CAP_SYS_ADMIN,"),
            "{msg}"
        );
    }

    #[test]
    fn all_capabilities_pass() {
        let p = Privileges {
            euid: 0,
            effective: NEEDED.into_iter().collect(),
        };
        assert!(p.require_probes("watch").is_ok());
    }
}
