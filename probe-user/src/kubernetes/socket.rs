//! Where a node's CRI sockets are.
//!
//! By hand (`--cri-socket`), or found: the paths runtimes listen on by default, and —
//! robust wherever a distribution moved them — the `-address` of a container's own
//! containerd shim, the parent of every process in the container
//! (`containerd-shim-runc-v2 -namespace k8s.io -id … -address /run/containerd/containerd.sock`).
//! A shim's address is a path in the shim's mount namespace: it is reached through
//! `/proc/SHIM/root`, so busyprobe finds it from inside a container too.

use std::{
    fs,
    os::unix::{ffi::OsStrExt, fs::FileTypeExt},
    path::{Path, PathBuf},
};

/// The CRI sockets runtimes listen on by default.
pub const WELL_KNOWN: &[&str] = &[
    // containerd (its CRI plugin serves on the main socket)
    "/run/containerd/containerd.sock",
    // k3s and RKE2's embedded containerd
    "/run/k3s/containerd/containerd.sock",
    // CRI-O
    "/var/run/crio/crio.sock",
    // cri-dockerd (Docker Engine behind the CRI)
    "/run/cri-dockerd.sock",
];

/// How the directory finds sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sockets {
    /// Only this one (`--cri-socket`).
    Given(PathBuf),
    /// The well-known paths under `root` (`/` on the host) and the holders' shims.
    Found {
        /// Where the host's filesystem is (`/`; tests use a directory).
        root: PathBuf,
    },
    /// None: no CRI (`--cri-socket none`).
    Off,
}

impl Sockets {
    /// From `--cri-socket`: a path, `none`, or not given (found).
    pub fn from_arg(arg: Option<&Path>) -> Self {
        match arg {
            Some(p) if p.as_os_str() == "none" => Sockets::Off,
            Some(p) => Sockets::Given(p.to_owned()),
            None => Sockets::Found { root: "/".into() },
        }
    }

    /// The sockets to ask at start: the given one, or the well-known ones that exist.
    pub fn initial(&self) -> Vec<PathBuf> {
        match self {
            Sockets::Given(p) => vec![p.clone()],
            Sockets::Found { root } => WELL_KNOWN
                .iter()
                .map(|p| root.join(p.trim_start_matches('/')))
                .filter(|p| is_socket(p))
                .collect(),
            Sockets::Off => Vec::new(),
        }
    }

    /// Whether sockets may be found beyond the initial ones (from shims).
    pub fn searches_shims(&self) -> bool {
        matches!(self, Sockets::Found { .. })
    }
}

/// Whether `path` is a Unix socket.
pub fn is_socket(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Most parents walked from a process to its shim.
const MAX_ANCESTORS: usize = 64;

/// The CRI socket of the containerd that runs `pid`'s container: the `-address` of the
/// nearest `containerd-shim*` ancestor, as reachable from here (through its
/// `/proc/SHIM/root`). `proc` is `/proc`.
pub fn of_shim_above(proc: &Path, pid: u32) -> Option<PathBuf> {
    let mut at = pid;
    for _ in 0..MAX_ANCESTORS {
        let stat = fs::read(proc.join(format!("{at}/stat"))).ok()?;
        let (comm, ppid) = comm_and_ppid(&stat)?;
        if comm.starts_with(b"containerd-shim") {
            let cmdline = fs::read(proc.join(format!("{at}/cmdline"))).ok()?;
            let address = address_arg(&cmdline)?;
            let reachable = proc.join(at.to_string()).join("root").join(
                Path::new(std::ffi::OsStr::from_bytes(address))
                    .strip_prefix("/")
                    .ok()?,
            );
            return Some(reachable);
        }
        if ppid <= 1 {
            return None;
        }
        at = ppid;
    }
    None
}

/// `comm` and the parent pid from `/proc/PID/stat` (`pid (comm) state ppid …`; the comm may
/// hold spaces and parentheses, so the last `)` ends it).
fn comm_and_ppid(stat: &[u8]) -> Option<(&[u8], u32)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = stat.get(open + 1..close)?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

/// The value after `-address` (or `--address`, `-address=…`) in a NUL-separated command line.
fn address_arg(cmdline: &[u8]) -> Option<&[u8]> {
    let mut args = cmdline.split(|&b| b == 0);
    while let Some(arg) = args.next() {
        if arg == b"-address" || arg == b"--address" {
            return args.next().filter(|a| a.starts_with(b"/"));
        }
        for prefix in [&b"-address="[..], b"--address="] {
            if let Some(value) = arg.strip_prefix(prefix) {
                return Some(value).filter(|a| a.starts_with(b"/"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc` look-alike: shim 100 (parent 1), the container's init 200 below it, a
    /// process 300 below that.
    fn proc_tree(shim_cmdline: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let entries: [(u32, &str, u32); 3] = [
            (100, "containerd-shim", 1),
            (200, "sh", 100),
            (300, "sleep (x) y", 200),
        ];
        for (pid, comm, ppid) in entries {
            let p = dir.path().join(pid.to_string());
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("stat"), format!("{pid} ({comm}) S {ppid} {pid} 0 0")).unwrap();
            fs::write(p.join("cmdline"), b"x\0").unwrap();
        }
        fs::write(dir.path().join("100/cmdline"), shim_cmdline).unwrap();
        dir
    }

    #[test]
    fn the_shim_above_a_process_names_its_socket() {
        let cmdline = b"/usr/bin/containerd-shim-runc-v2\0-namespace\0k8s.io\0-id\0abc\0-address\0/run/k3s/containerd/containerd.sock\0";
        let proc = proc_tree(cmdline);
        let want = proc
            .path()
            .join("100/root/run/k3s/containerd/containerd.sock");
        assert_eq!(of_shim_above(proc.path(), 300), Some(want.clone()));
        assert_eq!(of_shim_above(proc.path(), 100), Some(want));
    }

    #[test]
    fn no_shim_no_socket() {
        let proc = proc_tree(b"/usr/bin/containerd-shim-runc-v2\0-namespace\0k8s.io\0");
        assert_eq!(of_shim_above(proc.path(), 300), None, "no -address");
        assert_eq!(of_shim_above(proc.path(), 999), None, "no such process");
        fs::write(proc.path().join("100/stat"), "100 (bash) S 1 1 0 0").unwrap();
        assert_eq!(of_shim_above(proc.path(), 300), None, "no shim above");
    }

    #[test]
    fn address_forms() {
        assert_eq!(
            address_arg(b"shim\0-address=/a.sock\0"),
            Some(&b"/a.sock"[..])
        );
        assert_eq!(
            address_arg(b"shim\0--address\0/b.sock\0"),
            Some(&b"/b.sock"[..])
        );
        assert_eq!(address_arg(b"shim\0-address\0relative\0"), None);
        assert_eq!(address_arg(b"shim\0-address"), None);
    }

    #[test]
    fn comm_with_spaces_and_parentheses() {
        assert_eq!(
            comm_and_ppid(b"300 (a) b (c)) S 42 1 1"),
            Some((&b"a) b (c)"[..], 42))
        );
        assert_eq!(comm_and_ppid(b"garbage"), None);
    }

    #[test]
    fn arguments() {
        assert_eq!(Sockets::from_arg(Some(Path::new("none"))), Sockets::Off);
        assert_eq!(
            Sockets::from_arg(Some(Path::new("/x.sock"))),
            Sockets::Given("/x.sock".into())
        );
        assert!(Sockets::from_arg(None).searches_shims());
        assert!(Sockets::Off.initial().is_empty());
    }

    #[test]
    fn well_known_sockets_that_exist() {
        let root = tempfile::tempdir().unwrap();
        let sock = root.path().join("run/k3s/containerd/containerd.sock");
        fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        fs::create_dir_all(root.path().join("run/containerd")).unwrap();
        fs::write(root.path().join("run/containerd/containerd.sock"), b"").unwrap();
        let found = Sockets::Found {
            root: root.path().to_owned(),
        };
        assert_eq!(found.initial(), vec![sock], "a plain file is no socket");
    }
}
