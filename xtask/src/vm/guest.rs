//! What goes into the guest: busybox and its applets, the real Debian tools the integration
//! tests run (with their shared libraries), kernel modules, the busyprobe and test binaries at
//! their host paths (the test binary has them compiled in), and `/init`, the script that sets
//! the guest up, runs the stages and reports each result on the serial console.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context, Result};

use super::{initramfs::Tree, modules::Module, report::MARKER};

/// Tools the integration tests run, taken from the host when it has them (util-linux's
/// `unshare` and `mount` behave as the tests expect; busybox has no `mkfs.ext4` or `fuser`).
pub const HOST_TOOLS: &[&str] = &[
    "mount",
    "umount",
    "unshare",
    "nsenter",
    "losetup",
    "mkfs.ext4",
    "mkswap",
    "swapon",
    "swapoff",
    "fuser",
    "tmux",
];

/// Host files the tools read at run time, copied when present.
/// (tmux refuses to start without a UTF-8 locale.)
const HOST_DATA: &[&str] = &[
    "/etc/mke2fs.conf",
    "/lib/terminfo",
    "/usr/lib/locale/C.utf8",
];

/// Guest code the init script writes to the isa-debug-exit port: everything ran and passed.
pub const CODE_PASSED: u8 = 0;
/// Guest code: a stage ran and failed (tests or doctor).
pub const CODE_FAILED: u8 = 1;
/// Guest code: the guest could not be set up (a mount, a module, a missing binary).
pub const CODE_SETUP: u8 = 2;

/// What the guest runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `busyprobe` binary, placed at the same path in the guest.
    pub busyprobe: PathBuf,
    /// The integration test binary and its arguments (`None`: only `uname` and `doctor`).
    pub tests: Option<(PathBuf, Vec<String>)>,
    /// The directory the tests run in (cargo runs them in the package directory).
    pub test_cwd: PathBuf,
    /// Host files and directories the test binary reads at their compiled-in paths.
    pub test_data: Vec<PathBuf>,
    /// Directories the tests write into (created empty).
    pub writable_dirs: Vec<PathBuf>,
    /// `BUSYPROBE_MODE` for every busyprobe run (`None`: its default).
    pub mode: Option<String>,
}

/// Builds the whole guest tree. Returns it with the names of the host tools that were missing.
pub fn build_tree(
    plan: &Plan,
    busybox: &Path,
    modules: &[Module],
) -> Result<(Tree, Vec<&'static str>)> {
    let mut tree = Tree::new();
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "etc", "mnt"] {
        tree.dir(dir);
    }
    add_busybox(&mut tree, busybox)?;
    let mut missing = Vec::new();
    for tool in HOST_TOOLS {
        match find_on_path(tool) {
            Some(path) => add_program(&mut tree, &path)?,
            None => missing.push(*tool),
        }
    }
    for data in HOST_DATA {
        let path = Path::new(data);
        if path.exists() {
            add_host_path(&mut tree, path)?;
        }
    }
    tree.bytes(
        "/etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    tree.bytes("/etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n");
    for m in modules {
        tree.bytes(&module_path(&m.name), 0o644, m.bytes.clone());
    }
    add_program(&mut tree, &plan.busyprobe)?;
    if let Some((binary, _)) = &plan.tests {
        add_program(&mut tree, binary)?;
    }
    for data in &plan.test_data {
        add_host_path(&mut tree, data)?;
    }
    for dir in plan.writable_dirs.iter().chain([&plan.test_cwd]) {
        tree.dir(&dir.to_string_lossy());
    }
    tree.bytes("/init", 0o755, init_script(plan, modules));
    Ok((tree, missing))
}

fn module_path(name: &str) -> String {
    format!("/lib/modules/vm-test/{name}.ko")
}

/// `/bin/busybox` and a symlink per applet (`busybox --list-full` gives their paths).
fn add_busybox(tree: &mut Tree, busybox: &Path) -> Result<()> {
    add_libraries(tree, busybox)?;
    tree.host_file("/bin/busybox", busybox)?;
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    ensure!(out.status.success(), "busybox --list-full failed");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "bin/busybox" {
            tree.symlink(applet, "/bin/busybox");
        }
    }
    Ok(())
}

/// Finds `program` in the usual system directories, as its path with the directory
/// canonicalized (`/sbin/x` -> `/usr/sbin/x`) but the file name kept (`mkfs.ext4` stays
/// `mkfs.ext4`: mke2fs reads its name).
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .map(|p| {
            let dir = p.parent().and_then(|d| d.canonicalize().ok());
            match dir {
                Some(dir) => dir.join(program),
                None => p,
            }
        })
}

/// A program at its own path, with the shared libraries `ldd` names.
fn add_program(tree: &mut Tree, path: &Path) -> Result<()> {
    let real = path
        .canonicalize()
        .with_context(|| format!("{} does not exist", path.display()))?;
    tree.host_file(&path.to_string_lossy(), &real)?;
    add_libraries(tree, path)
}

fn add_libraries(tree: &mut Tree, program: &Path) -> Result<()> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd")?;
    for lib in libraries_from_ldd(&String::from_utf8_lossy(&out.stdout)) {
        if !tree.contains(&lib.to_string_lossy()) {
            let real = lib
                .canonicalize()
                .with_context(|| format!("ldd names {} which does not exist", lib.display()))?;
            tree.host_file(&lib.to_string_lossy(), &real)?;
        }
    }
    Ok(())
}

/// The absolute library paths in `ldd` output (`libc.so.6 => /lib/.../libc.so.6 (0x..)` and
/// the loader's `/lib64/ld-linux-x86-64.so.2 (0x..)`); the vDSO and "not a dynamic
/// executable" give none.
pub fn libraries_from_ldd(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A host file, or a directory with everything under it, at the same path.
fn add_host_path(tree: &mut Tree, path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("{}", path.display()))?;
    let guest = path.to_string_lossy();
    if meta.is_dir() {
        tree.dir(&guest);
        for entry in fs::read_dir(path)? {
            add_host_path(tree, &entry?.path())?;
        }
    } else if meta.file_type().is_symlink() {
        tree.symlink(&guest, &fs::read_link(path)?.to_string_lossy());
    } else {
        tree.host_file(&guest, path)?;
    }
    Ok(())
}

/// Quotes a word for `sh`: `'...'` with each `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The guest's `/init` (busybox `sh`). Every result line starts with [`MARKER`].
pub fn init_script(plan: &Plan, modules: &[Module]) -> String {
    let mut s = setup_script(plan, modules);
    let busyprobe = shell_quote(&plan.busyprobe.to_string_lossy());
    let _ = write!(
        s,
        r#"report "kernel $(uname -r)"
report "lsm $(cat /sys/kernel/security/lsm 2>/dev/null)"
report "stage doctor"
{busyprobe} doctor
report "doctor-exit $?"
"#
    );
    match &plan.tests {
        None => {
            let _ = writeln!(s, "finish {CODE_PASSED}");
        }
        Some((binary, args)) => {
            let mut command = shell_quote(&binary.to_string_lossy());
            for a in args {
                command.push(' ');
                command.push_str(&shell_quote(a));
            }
            let _ = write!(
                s,
                r#"report "stage tests"
cd {cwd} || finish {CODE_SETUP}
started=$(cut -d' ' -f1 /proc/uptime)
{command}
rc=$?
report "tests-exit $rc $started $(cut -d' ' -f1 /proc/uptime)"
if [ "$rc" = 0 ]; then finish {CODE_PASSED}; else finish {CODE_FAILED}; fi
"#,
                cwd = shell_quote(&plan.test_cwd.to_string_lossy()),
            );
        }
    }
    s
}

/// The start of every `/init`: the shell functions `report` (a result line), `finish CODE`
/// (exit qemu through isa-debug-exit) and `must CMD` (or finish with [`CODE_SETUP`]), the
/// pseudo filesystems, loopback and the kernel modules (`cargo xtask vm-powercut` goes on
/// from here with its own stages).
pub fn setup_script(plan: &Plan, modules: &[Module]) -> String {
    let mut s = String::new();
    let mode_export = plan.mode.as_deref().map_or(String::new(), |m| {
        format!("export BUSYPROBE_MODE={}\n", shell_quote(m))
    });
    let _ = write!(
        s,
        r#"#!/bin/sh
# Generated by `cargo xtask vm-test`: sets the guest up, runs each stage, reports on the
# serial console, then exits qemu through isa-debug-exit (code N -> qemu exit 2N+1).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux LANG=C.UTF-8 RUST_BACKTRACE=1
export BUSYPROBE_VM_TEST=1  # for tests that need to know they run in an (emulated) guest
{mode_export}report() {{ echo "{MARKER} $*"; }}
finish() {{
    report "exit $1"
    sleep 1  # let the console drain before qemu exits
    printf "\\$(printf %o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    echo "isa-debug-exit did not stop qemu; powering off"
    poweroff -f
}}
must() {{ "$@" || {{ report "setup-failed $*"; finish {CODE_SETUP}; }}; }}
must mount -t proc proc /proc
must mount -t sysfs sysfs /sys
must mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
must mount -t devpts devpts /dev/pts
must mount -t tmpfs tmpfs /dev/shm
must mount -t tmpfs -o mode=1777 tmpfs /tmp
must mount -t tmpfs tmpfs /run
must mount -t cgroup2 cgroup2 /sys/fs/cgroup
must mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
hostname vm-test
# Loopback up, as on any node: `busyprobe agent` serves its metrics on 127.0.0.1.
must ip link set lo up
"#
    );
    for m in modules {
        let _ = writeln!(s, "must insmod {}", module_path(&m.name));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_absolute_libraries() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007fa1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fa2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007fa3)\n";
        assert_eq!(
            libraries_from_ldd(out),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(libraries_from_ldd("\tnot a dynamic executable\n").is_empty());
        assert!(libraries_from_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    fn plan(tests: Option<(PathBuf, Vec<String>)>) -> Plan {
        Plan {
            busyprobe: "/w/target/debug/busyprobe".into(),
            tests,
            test_cwd: "/w/probe-user".into(),
            test_data: vec![],
            writable_dirs: vec![],
            mode: None,
        }
    }

    #[test]
    fn a_mode_is_exported_to_every_busyprobe_of_the_guest() {
        let mut with_mode = plan(None);
        with_mode.mode = Some("tracepoint".into());
        let init = init_script(&with_mode, &[]);
        assert!(
            init.contains("\nexport BUSYPROBE_MODE='tracepoint'\n"),
            "{init}"
        );
        assert!(!init_script(&plan(None), &[]).contains("BUSYPROBE_MODE"));
    }

    #[test]
    fn init_runs_doctor_then_tests_and_exits_by_code() {
        let modules = [Module {
            name: "loop".into(),
            bytes: vec![],
        }];
        let s = init_script(
            &plan(Some((
                "/w/integ".into(),
                vec!["holder_".into(), "--skip".into()],
            ))),
            &modules,
        );
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in {s}"));
        assert!(at("mount -t proc") < at("insmod /lib/modules/vm-test/loop.ko"));
        assert!(at("'/w/target/debug/busyprobe' doctor") < at("'/w/integ' 'holder_' '--skip'"));
        assert!(s.contains("cd '/w/probe-user'"));
        assert!(at("must ip link set lo up") < at("'/w/integ'"));
        assert!(s.contains("finish 0; else finish 1;"));
        assert!(s.starts_with("#!/bin/sh\n"));
    }

    #[test]
    fn without_tests_init_stops_after_doctor() {
        let s = init_script(&plan(None), &[]);
        assert!(!s.contains("stage tests"));
        assert!(s.trim_end().ends_with("finish 0"));
    }
}
