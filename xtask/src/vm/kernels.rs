//! The kernel matrix and its Debian packages: names resolved at run time with `apt-cache`,
//! downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into a cache outside the
//! repo (`<cache>/vm/kernels/<package>/`, see [`crate::toolchain::cache_dir`]).

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
};

use anyhow::{bail, ensure, Context, Result};

use crate::toolchain::cache_dir;

/// One entry of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Debian 12's default kernel (6.1), from `linux-image-amd64`.
    Debian61,
    /// Debian 12's backported 6.12 kernel, from `linux-image-6.12-amd64`.
    Debian612,
    /// The host's own kernel: no VM, the test binary runs here directly.
    Host,
}

impl Kernel {
    /// Every kernel, in the order `--kernel all` runs them.
    pub const ALL: [Kernel; 3] = [Kernel::Debian61, Kernel::Debian612, Kernel::Host];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Debian61 => "debian-6.1",
            Kernel::Debian612 => "debian-6.12",
            Kernel::Host => "host",
        }
    }

    /// The Debian meta-package whose dependency names the current versioned image package.
    pub fn meta_package(self) -> Option<&'static str> {
        match self {
            Kernel::Debian61 => Some("linux-image-amd64"),
            Kernel::Debian612 => Some("linux-image-6.12-amd64"),
            Kernel::Host => None,
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Kernel::ALL.iter().map(|k| k.name()).collect();
                format!("unknown kernel {s:?}; known: {}, all", names.join(", "))
            })
    }
}

/// A Debian kernel unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The versioned package, for example `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// The kernel release (`uname -r` in the guest), for example `6.1.0-56-amd64`.
    pub release: String,
    /// Where the package was unpacked (holds `boot/` and `lib/modules/`).
    pub root: PathBuf,
}

impl Unpacked {
    /// The bootable image, `boot/vmlinuz-<release>`.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// `lib/modules/<release>`.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The versioned image package that `apt-cache depends <meta>` names, for example
/// `linux-image-6.1.0-56-amd64` from `  Depends: linux-image-6.1.0-56-amd64`. Alternatives
/// (`|Depends:`) and virtual packages (`<...>`) are skipped.
pub fn image_package_from_depends(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        (name.starts_with("linux-image-") && !name.contains(['<', ' '])).then(|| name.to_owned())
    })
}

/// The kernel release inside an image package name: `linux-image-6.1.0-56-amd64` ->
/// `6.1.0-56-amd64` (the package's `boot/vmlinuz-*` suffix).
pub fn release_of_package(package: &str) -> Option<&str> {
    package
        .strip_prefix("linux-image-")
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// Resolves, downloads (once) and unpacks (once) a Debian kernel; says what it does.
pub fn ensure_kernel(kernel: Kernel) -> Result<Unpacked> {
    let meta = kernel
        .meta_package()
        .with_context(|| format!("{kernel} is not a Debian package"))?;
    let package = resolve(meta)?;
    let release = release_of_package(&package)
        .with_context(|| format!("cannot read a kernel release from {package:?}"))?
        .to_owned();
    let dir = cache_dir()?.join("vm/kernels").join(&package);
    let unpacked = Unpacked {
        package: package.clone(),
        release,
        root: dir.join("root"),
    };
    let done = dir.join(".unpacked");
    if done.is_file() && unpacked.vmlinuz().is_file() {
        return Ok(unpacked);
    }
    println!(
        "xtask: vm: {kernel}: downloading {package} into {}",
        dir.display()
    );
    download_and_unpack(&package, &dir, &unpacked.root)?;
    ensure!(
        unpacked.vmlinuz().is_file(),
        "{package} has no {}",
        unpacked.vmlinuz().display()
    );
    fs::write(&done, b"")?;
    Ok(unpacked)
}

/// `apt-cache depends META`, running `apt-get update` once first when the lists know nothing.
fn resolve(meta: &str) -> Result<String> {
    if let Some(p) = image_package_from_depends(&apt_cache_depends(meta)?) {
        return Ok(p);
    }
    ensure!(
        nix::unistd::geteuid().is_root(),
        "`apt-cache depends {meta}` names no image package: run `apt-get update` as root"
    );
    println!("xtask: vm: apt-cache does not know {meta}; running apt-get update");
    let status = Command::new("apt-get").args(["update", "-q"]).status()?;
    ensure!(status.success(), "apt-get update failed ({status})");
    image_package_from_depends(&apt_cache_depends(meta)?)
        .with_context(|| format!("`apt-cache depends {meta}` names no linux-image package"))
}

fn apt_cache_depends(meta: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", meta])
        .output()
        .context("running apt-cache (a Debian system is needed for vm-test)")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `apt-get download` into `dir`, `dpkg-deb -x` into `root`, then deletes the `.deb`.
fn download_and_unpack(package: &str, dir: &Path, root: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(dir)
        .status()
        .context("running apt-get download")?;
    ensure!(
        status.success(),
        "apt-get download {package} failed ({status})"
    );
    let deb = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let _ = fs::remove_dir_all(root);
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    fs::remove_file(&deb)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_versioned_package_from_apt_cache_depends() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            image_package_from_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let out = "linux-image-6.12-amd64\n  Depends: linux-image-6.12.117+deb12-amd64\n";
        assert_eq!(
            image_package_from_depends(out).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64")
        );
    }

    #[test]
    fn skips_virtual_packages_and_other_dependencies() {
        let out = "linux-image-x\n  Depends: <linux-image-virtual>\n  Depends: firmware-x\n  Recommends: linux-image-6.1.0-1-amd64\n |Depends: linux-image-6.1.0-2-amd64\n";
        assert_eq!(image_package_from_depends(out), None);
        assert_eq!(image_package_from_depends(""), None);
    }

    #[test]
    fn release_is_the_package_name_without_its_prefix() {
        assert_eq!(
            release_of_package("linux-image-6.12.117+deb12-amd64"),
            Some("6.12.117+deb12-amd64")
        );
        assert_eq!(release_of_package("linux-image-amd64"), None);
    }

    #[test]
    fn kernel_names_round_trip() {
        for k in Kernel::ALL {
            assert_eq!(k.name().parse::<Kernel>(), Ok(k));
        }
        assert!("debian-5.10".parse::<Kernel>().is_err());
    }
}
