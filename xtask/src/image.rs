//! `cargo xtask image`: the release binary as an OCI image, built offline with Debian's
//! `umoci` (no registry, no network, no distro base).
//!
//! The root filesystem holds `/usr/bin/busyprobe` and the shared libraries `ldd` lists for it
//! (copied to the same paths), plus empty mount points for the runtime. Nothing else: the
//! agent looks up no user or group (only `--socket-group` would, which the DaemonSet does not
//! use), writes no temporary file, and writes only to its recording directory and
//! `/run/busyprobe` (its socket and the cache of kernel offsets), both host paths in
//! `deploy/kubernetes/busyprobe.yaml`, whose root filesystem is read-only.
//!
//! Out: the OCI layout in `target/image/oci/` and an `oci-archive` tar beside it,
//! `target/image/busyprobe-VERSION.oci.tar`, that `ctr -n k8s.io images import` loads as
//! [`reference`] (the index names it with containerd's `io.containerd.image.name`).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{build_ebpf::workspace_root, run};

/// The image's name; its tag is the workspace version ([`VERSION`]).
pub const NAME: &str = "localhost/busyprobe";

/// The version of busyprobe, the image's tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the binary is in the image (its entrypoint).
pub const BINARY: &str = "/usr/bin/busyprobe";

/// The image's default arguments: the node agent as `deploy/kubernetes/busyprobe.yaml` and
/// `dist/busyprobe-agent.service` run it (a test checks that the DaemonSet passes these).
pub const AGENT_ARGS: [&str; 11] = [
    "agent",
    "-o",
    "/var/lib/busyprobe/unmounts.jsonl",
    "--rotate",
    "100M",
    "--keep",
    "5",
    "--metrics",
    "127.0.0.1:10057",
    "--socket",
    "/run/busyprobe/agent.sock",
];

/// Empty directories the image carries as mount points: the runtime's `/proc`, `/sys`,
/// `/dev` and `/etc` files, and the DaemonSet's host paths (a read-only root filesystem
/// cannot get them created later by every runtime).
const MOUNT_POINTS: [&str; 7] = [
    "proc",
    "sys",
    "dev",
    "etc",
    "run/busyprobe",
    "var/lib/busyprobe",
    "run/containerd",
];

/// Options of `cargo xtask image`.
#[derive(clap::Args)]
#[command(after_help = "\
Builds the release binary, then an OCI image of it with umoci (Debian package `umoci`), \
offline: no registry, no base image. The root filesystem holds /usr/bin/busyprobe and the \
shared libraries ldd lists for it. Entrypoint /usr/bin/busyprobe, default arguments the agent's \
as deploy/kubernetes/busyprobe.yaml runs it.

Writes target/image/oci/ (the OCI layout) and target/image/busyprobe-VERSION.oci.tar (an \
oci-archive), named localhost/busyprobe:VERSION, and prints its size. On a node:
    ctr -n k8s.io images import busyprobe-VERSION.oci.tar
    kubectl apply -f deploy/kubernetes/busyprobe.yaml")]
pub struct Options {
    /// Print the umoci commands as they run.
    #[arg(long)]
    pub verbose: bool,
}

/// The image reference the archive imports as, `localhost/busyprobe:VERSION`.
pub fn reference() -> String {
    format!("{NAME}:{VERSION}")
}

/// Where the image goes: `target/image/` of the workspace.
fn out_dir() -> PathBuf {
    workspace_root().join("target").join("image")
}

/// The archive [`build`] writes: `target/image/busyprobe-VERSION.oci.tar` (the DaemonSet's
/// trials in `tests/daemonset.rs` import it).
pub fn archive() -> PathBuf {
    out_dir().join(format!("busyprobe-{VERSION}.oci.tar"))
}

/// `cargo xtask image`: [`build`].
pub fn image(opts: &Options) -> Result<ExitCode> {
    build(opts.verbose)?;
    Ok(ExitCode::SUCCESS)
}

/// Builds the release binary (a no-op when it is up to date) and the image from it; prints
/// where it went and its size; returns the [`archive`]. About 2 s once the binary is built.
pub fn build(verbose: bool) -> Result<PathBuf> {
    require_umoci()?;
    let binary = run::build_busyprobe(true)?;
    let out = out_dir();
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let rootfs = out.join("rootfs");
    let libs = shared_libraries(&binary)?;
    fill_rootfs(&rootfs, &binary, &libs)?;
    let layout = out.join("oci");
    build_layout(&layout, &rootfs, verbose)?;
    name_for_containerd(&layout)?;
    let archive = archive();
    write_archive(&layout, &archive)?;
    let unpacked = dir_size(&rootfs)?;
    fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    let packed = fs::metadata(&archive)?.len();
    println!(
        "xtask: image {} (linux/amd64): {} as an archive (gzip layers), {} unpacked\n  \
         layout:  {}\n  archive: {}\n  import:  ctr -n k8s.io images import {}",
        reference(),
        mib(packed),
        mib(unpacked),
        layout.display(),
        archive.display(),
        archive.display()
    );
    Ok(archive)
}

/// Fails with the package to install when `umoci` does not run.
fn require_umoci() -> Result<()> {
    match Command::new("umoci").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "`umoci --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!(
            "umoci is needed to build the image and cannot be run ({e}): install Debian's \
             `umoci` package (apt-get install --no-install-recommends umoci)"
        ),
    }
}

/// The shared libraries `ldd` lists for `binary`, as absolute paths (the vDSO, which has no
/// file, left out). A static binary needs none.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (Debian package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("statically linked")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&text)
}

/// The library paths in `ldd`'s output; a library it could not find is an error.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                ensure!(
                    !rest.starts_with("not found"),
                    "ldd cannot find {}",
                    name.trim()
                );
                rest.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        // `linux-vdso.so.1 (0x...)`: in the kernel, no file.
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Lays out the image's root filesystem at `rootfs`: the binary at [`BINARY`], each library
/// at its own path (its contents: a symlink is copied as the file it points to), and the
/// [`MOUNT_POINTS`].
fn fill_rootfs(rootfs: &Path, binary: &Path, libs: &[PathBuf]) -> Result<()> {
    let in_image = copy_into(rootfs, binary, Path::new(BINARY))?;
    strip(&in_image)?;
    for lib in libs {
        copy_into(rootfs, lib, lib)?;
    }
    for dir in MOUNT_POINTS {
        fs::create_dir_all(rootfs.join(dir))
            .with_context(|| format!("creating {}", rootfs.join(dir).display()))?;
    }
    Ok(())
}

/// Removes the symbol table from the image's copy of the binary (binutils' `strip`): 1.7 of
/// its 8.3 MB. The embedded eBPF object is data and stays whole; a panic still names its
/// source line, only a backtrace loses the function names.
fn strip(binary: &Path) -> Result<()> {
    let status = Command::new("strip")
        .arg(binary)
        .status()
        .context("running strip (Debian package binutils)")?;
    ensure!(
        status.success(),
        "strip {} failed ({status})",
        binary.display()
    );
    Ok(())
}

/// Copies `from` to `rootfs` + the absolute path `to`, mode 0755 (binaries and libraries);
/// returns the copy's path.
fn copy_into(rootfs: &Path, from: &Path, to: &Path) -> Result<PathBuf> {
    let dest = rootfs.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(from, &dest)
        .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
    Ok(dest)
}

/// Makes the OCI layout at `layout`: a new image tagged [`VERSION`], `rootfs` as its one
/// layer, the entrypoint, arguments and labels, then unreferenced blobs removed.
fn build_layout(layout: &Path, rootfs: &Path, verbose: bool) -> Result<()> {
    let image = format!("{}:{VERSION}", layout.display());
    umoci(verbose, &["init", "--layout", &layout.to_string_lossy()])?;
    umoci(verbose, &["new", "--image", &image])?;
    let mut insert = vec!["insert", "--image", &image];
    if !nix::unistd::geteuid().is_root() {
        // Files owned by the caller become root's in the layer.
        insert.push("--rootless");
    }
    let rootfs = rootfs.to_string_lossy();
    insert.extend(["--history.created_by", "cargo xtask image", &rootfs, "/"]);
    umoci(verbose, &insert)?;
    let config = config_args(&image);
    umoci(
        verbose,
        &config.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    umoci(verbose, &["gc", "--layout", &layout.to_string_lossy()])
}

/// `umoci config`'s arguments for `image`: entrypoint, default arguments, user, labels.
fn config_args(image: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "config",
        "--image",
        image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.user",
        "0:0",
        "--config.workingdir",
        "/",
        "--config.entrypoint",
        BINARY,
        "--config.label",
        "org.opencontainers.image.title=busyprobe",
        "--config.label",
        "org.opencontainers.image.source=https://github.com/busyprobe/busyprobe",
        "--history.created_by",
        "cargo xtask image (entrypoint, arguments)",
    ]
    .map(str::to_owned)
    .into();
    args.push("--config.label".into());
    args.push(format!("org.opencontainers.image.version={VERSION}"));
    for arg in AGENT_ARGS {
        args.push("--config.cmd".into());
        args.push(arg.into());
    }
    args
}

/// Runs `umoci ARGS`, failing with its output.
fn umoci(verbose: bool, args: &[&str]) -> Result<()> {
    if verbose {
        println!("xtask: umoci {}", args.join(" "));
    }
    let out = Command::new("umoci")
        .args(args)
        .output()
        .context("running umoci")?;
    ensure!(
        out.status.success(),
        "umoci {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Adds containerd's image name annotation (`io.containerd.image.name`, [`reference`]) to the
/// layout's index: `ctr images import` names the image by it. umoci writes only the OCI one
/// (`org.opencontainers.image.ref.name`, the tag alone), which `ctr` would prefix with
/// `import-DATE`.
fn name_for_containerd(layout: &Path) -> Result<()> {
    let path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    add_image_name(&mut index, &reference())?;
    fs::write(&path, serde_json::to_vec(&index)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Annotates every manifest of `index` (an OCI image index) with `name`.
fn add_image_name(index: &mut Value, name: &str) -> Result<()> {
    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .context("the index lists no manifests")?;
    ensure!(!manifests.is_empty(), "the index lists no manifests");
    for manifest in manifests {
        let annotations = manifest
            .as_object_mut()
            .context("a manifest descriptor is not an object")?
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        annotations
            .as_object_mut()
            .context("annotations are not an object")?
            .insert("io.containerd.image.name".into(), Value::from(name));
    }
    Ok(())
}

/// Writes the layout as an `oci-archive`: a tar of `oci-layout`, `index.json` and `blobs/`,
/// sorted, owned by root.
fn write_archive(layout: &Path, archive: &Path) -> Result<()> {
    let status = Command::new("tar")
        .arg("-C")
        .arg(layout)
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg("-cf")
        .arg(archive)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .context("running tar")?;
    ensure!(status.success(), "tar failed ({status})");
    Ok(())
}

/// The bytes of the regular files under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += dir_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// `n` bytes in MiB, one decimal.
fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\
\tlinux-vdso.so.1 (0x00007ffd3b9f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f4f965c9000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f4f964e9000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f4f95c1e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f4f965fc000)
";

    #[test]
    fn ldd_gives_every_library_with_a_file_and_the_loader() {
        let libs = parse_ldd(LDD).unwrap();
        let libs: Vec<&str> = libs.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_is_an_error() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.1"), "{err}");
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn the_index_names_the_image_for_containerd() {
        let mut index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:00",
                "size": 1,
                "annotations": {"org.opencontainers.image.ref.name": "0.1.0"}
            }]
        });
        add_image_name(&mut index, "localhost/busyprobe:0.1.0").unwrap();
        let annotations = &index["manifests"][0]["annotations"];
        assert_eq!(
            annotations["io.containerd.image.name"],
            "localhost/busyprobe:0.1.0"
        );
        assert_eq!(annotations["org.opencontainers.image.ref.name"], "0.1.0");
        let mut empty = serde_json::json!({"schemaVersion": 2, "manifests": []});
        assert!(add_image_name(&mut empty, "x").is_err());
    }

    #[test]
    fn the_rootfs_holds_the_binary_libraries_and_mount_points_only() {
        let dir = tempfile::tempdir().unwrap();
        // A real ELF file, as `strip` needs one.
        let bin = std::env::current_exe().unwrap();
        let lib = dir.path().join("libc.so.6");
        fs::write(&lib, b"lib").unwrap();
        let rootfs = dir.path().join("rootfs");
        // A library is laid at its own absolute path: here, the temp dir's.
        fill_rootfs(&rootfs, &bin, std::slice::from_ref(&lib)).unwrap();
        let stripped = fs::metadata(rootfs.join("usr/bin/busyprobe"))
            .unwrap()
            .len();
        let whole = fs::metadata(&bin).unwrap().len();
        assert!(stripped > 0 && stripped < whole, "{stripped} of {whole}");
        let lib_in = rootfs.join(lib.strip_prefix("/").unwrap());
        assert_eq!(fs::read(&lib_in).unwrap(), b"lib");
        let mode = fs::metadata(rootfs.join("usr/bin/busyprobe"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(rootfs.join("var/lib/busyprobe").is_dir());
        assert_eq!(fs::read_dir(rootfs.join("etc")).unwrap().count(), 0);
        // Two files, nothing else: their bytes are all there is.
        assert_eq!(dir_size(&rootfs).unwrap(), stripped + 3);
    }

    #[test]
    fn the_config_runs_the_agent_from_the_binary() {
        let args = config_args("oci:0.1.0");
        let joined = args.join(" ");
        assert!(joined.contains("--config.entrypoint /usr/bin/busyprobe"));
        let cmd: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--config.cmd")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(cmd, AGENT_ARGS);
    }
}
