//! Finding or installing what the eBPF build needs: the nightly toolchain's `rust-src` and a
//! `bpf-linker` built against the nightly's own LLVM (Debian has no LLVM new enough, and no
//! prebuilt bpf-linker can be downloaded here).

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

/// The bpf-linker release known to work with aya-ebpf 0.2 and LLVM 21-23.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The nightly toolchain used for the eBPF crate (never a dated one: that would be a download).
pub const NIGHTLY: &str = "nightly";

/// Facts about the installed nightly toolchain.
pub struct Nightly {
    /// `rustc +nightly --print sysroot`.
    pub sysroot: PathBuf,
    /// LLVM major version, from `rustc +nightly -vV`.
    pub llvm_major: u32,
    /// The `release:` line of `rustc +nightly -vV` (for example `1.97.0-nightly`).
    pub release: String,
    /// The `commit-hash:` line, shortened: it names the exact toolchain in cache keys.
    pub commit: String,
}

/// A `Command` for a rustup-managed tool with the outer cargo's toolchain choice removed,
/// so that `+nightly` and the eBPF crate's own settings take effect.
pub fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Nightly {
    /// Reads the nightly toolchain's facts; fails with advice when it is not installed.
    pub fn detect() -> Result<Self> {
        let vv = output_of(clean_command("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))
            .context("the nightly toolchain is needed for the eBPF crate: run `rustup toolchain install nightly --profile minimal`")?;
        let field = |name: &str| {
            vv.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .with_context(|| format!("`rustc +nightly -vV` printed no `{name}` line"))
        };
        let llvm = field("LLVM version:")?;
        let llvm_major = llvm
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("cannot read the LLVM major version from {llvm:?}"))?;
        let commit: String = field("commit-hash:")?.chars().take(12).collect();
        let sysroot =
            output_of(clean_command("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
        Ok(Self {
            sysroot: PathBuf::from(sysroot.trim()),
            llvm_major,
            release: field("release:")?,
            commit,
        })
    }

    /// Adds `rust-src` to the nightly toolchain when its sources are missing.
    pub fn ensure_rust_src(&self) -> Result<()> {
        if self
            .sysroot
            .join("lib/rustlib/src/rust/library/core")
            .is_dir()
        {
            return Ok(());
        }
        println!("xtask: the nightly toolchain has no rust-src (needed for -Z build-std=core); adding it (about 80 MB)");
        let status = clean_command("rustup")
            .args(["component", "add", "rust-src", "--toolchain", NIGHTLY])
            .status()
            .context("running rustup")?;
        ensure!(
            status.success(),
            "`rustup component add rust-src --toolchain {NIGHTLY}` failed ({status})"
        );
        Ok(())
    }

    /// Adds a rustup component (`clippy`, `rustfmt`) to the nightly toolchain when
    /// `cargo +nightly <subcommand> --version` does not run.
    pub fn ensure_cargo_component(&self, component: &str, subcommand: &str) -> Result<()> {
        let works = clean_command("cargo")
            .args([&format!("+{NIGHTLY}"), subcommand, "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if works {
            return Ok(());
        }
        println!("xtask: the nightly toolchain has no {component}; adding it");
        let status = clean_command("rustup")
            .args(["component", "add", component, "--toolchain", NIGHTLY])
            .status()
            .context("running rustup")?;
        ensure!(
            status.success(),
            "`rustup component add {component} --toolchain {NIGHTLY}` failed ({status})"
        );
        Ok(())
    }

    /// The ELF shared library of the toolchain's LLVM (`libLLVM.so.<ver>-rust-<rustc>`), not
    /// the linker script `libLLVM-<major>-rust-<ver>.so` beside it.
    fn llvm_shared_library(&self) -> Result<PathBuf> {
        let lib = self.sysroot.join("lib");
        let mut candidates = Vec::new();
        for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.starts_with("libLLVM.so.") && is_elf(&path) {
                candidates.push(path);
            }
        }
        match candidates.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("no libLLVM.so.* ELF library in {}", lib.display()),
            many => bail!("several LLVM libraries in {}: {many:?}", lib.display()),
        }
    }
}

fn is_elf(path: &Path) -> bool {
    fs::read(path)
        .map(|b| b.starts_with(b"\x7fELF"))
        .unwrap_or(false)
}

/// Where busyprobe's build tooling keeps what it builds outside the repo:
/// `$BUSYPROBE_CACHE_DIR`, else `$XDG_CACHE_HOME/busyprobe`, else `~/.cache/busyprobe`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("BUSYPROBE_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("busyprobe"));
    }
    let home = env::var_os("HOME")
        .context("neither BUSYPROBE_CACHE_DIR, XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/busyprobe"))
}

fn linker_runs(linker: &Path) -> bool {
    Command::new(linker)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Returns a directory holding a working `bpf-linker`, to put first on PATH.
///
/// Order: the cache entry for this exact nightly (built against its LLVM), then one on PATH,
/// then a fresh build into the cache.
pub fn ensure_bpf_linker(nightly: &Nightly) -> Result<PathBuf> {
    let prefix = cache_dir()?.join("bpf-linker").join(format!(
        "{BPF_LINKER_VERSION}-llvm{}-{}",
        nightly.llvm_major, nightly.commit
    ));
    let cached = prefix.join("bin/bpf-linker");
    if linker_runs(&cached) {
        return Ok(prefix.join("bin"));
    }
    if let Some(dir) = on_path("bpf-linker") {
        if linker_runs(&dir.join("bpf-linker")) {
            return Ok(dir);
        }
    }
    build_bpf_linker(nightly, &prefix)?;
    ensure!(
        linker_runs(&cached),
        "the bpf-linker just built at {} does not run",
        cached.display()
    );
    Ok(prefix.join("bin"))
}

fn on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).find(|dir| dir.join(program).is_file())
}

/// Builds bpf-linker against the nightly's LLVM: `PREFIX/llvm/lib` gets `libLLVM.so` (for the
/// build) and the library's own SONAME (which the binary asks for at run time through its
/// rpath), both symlinks to the toolchain's ELF library.
fn build_bpf_linker(nightly: &Nightly, prefix: &Path) -> Result<()> {
    let llvm = nightly.llvm_shared_library()?;
    let lib_dir = prefix.join("llvm/lib");
    fs::create_dir_all(&lib_dir).with_context(|| format!("creating {}", lib_dir.display()))?;
    let soname = llvm.file_name().context("LLVM library has no file name")?;
    for link in [OsString::from("libLLVM.so"), soname.to_os_string()] {
        let link = lib_dir.join(link);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), llvm.display()))?;
    }
    println!(
        "xtask: no working bpf-linker found; building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {}) into {} (about a minute)",
        llvm.display(),
        nightly.llvm_major,
        prefix.display()
    );
    let status = clean_command("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{}", nightly.llvm_major),
        ])
        .arg("--root")
        .arg(prefix)
        .env("LLVM_PREFIX", prefix.join("llvm"))
        .status()
        .context("running cargo install bpf-linker")?;
    ensure!(status.success(), "building bpf-linker failed ({status})");
    Ok(())
}
