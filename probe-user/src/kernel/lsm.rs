//! The kernel's active LSMs (`/sys/kernel/security/lsm`). BPF LSM programs run only where `bpf`
//! is among them: a kernel built with `CONFIG_BPF_LSM` but booted without `bpf` in its LSM list
//! loads and attaches them, and they never fire. securityfs may not be mounted (a fresh machine
//! here has none): reading the list then mounts it where systemd would, and says so.

use std::{io::ErrorKind, path::Path};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

/// The list of active LSMs, comma-separated, in the kernel's order.
pub const LIST: &str = "/sys/kernel/security/lsm";
/// Where securityfs is mounted.
const SECURITYFS: &str = "/sys/kernel/security";

/// The active LSMs, mounting securityfs first when it is missing (root only).
pub fn active() -> Result<Vec<String>> {
    match std::fs::read_to_string(LIST) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            mount(
                Some("securityfs"),
                Path::new(SECURITYFS),
                Some("securityfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .with_context(|| {
                format!("{LIST} is missing and mounting securityfs at {SECURITYFS} failed")
            })?;
            tracing::info!("securityfs was not mounted: mounted it at {SECURITYFS} (left mounted)");
            let text = std::fs::read_to_string(LIST).with_context(|| format!("reading {LIST}"))?;
            Ok(parse(&text))
        }
        Err(e) => Err(e).with_context(|| format!("reading {LIST}")),
    }
}

/// The names in the list's text.
pub fn parse(list: &str) -> Vec<String> {
    list.trim()
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Why BPF LSM programs would not run with these active LSMs; `None` when `bpf` is one.
pub fn bpf_inactive(active: &[String]) -> Option<String> {
    if active.iter().any(|l| l == "bpf") {
        return None;
    }
    let list = active.join(",");
    Some(format!(
        "the bpf LSM is not active (the kernel's LSMs: {list}); boot with `lsm={list},bpf` to \
         enable it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_must_be_in_the_list() {
        let debian = parse("lockdown,capability,landlock,yama,apparmor,bpf\n");
        assert_eq!(debian.len(), 6);
        assert_eq!(bpf_inactive(&debian), None);
        let without = parse("lockdown,capability,apparmor");
        assert_eq!(
            bpf_inactive(&without).as_deref(),
            Some(
                "the bpf LSM is not active (the kernel's LSMs: lockdown,capability,apparmor); \
                 boot with `lsm=lockdown,capability,apparmor,bpf` to enable it"
            )
        );
    }
}
