//! A container image built offline: busybox-static as the root filesystem, packed by `umoci`
//! into an OCI layout and tarred into an archive that `ctr images import` takes. No registry,
//! no network.
//!
//! It is built once per test run (the first trial that asks builds it, the others wait) and
//! kept in the integration tests' target temp dir under a name that carries a digest of the
//! busybox binary and of the recipe, so a later run reuses it until either changes.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use sha2::{Digest, Sha256};

use super::process::{self, tool};

/// The image's repository: `ctr images import --base-name` names the layout's `latest` tag
/// after it.
pub const REPOSITORY: &str = "busyprobe.test/busybox";
/// The image's full reference, as the CRI and `ctr` name it.
pub const IMAGE: &str = "busyprobe.test/busybox:latest";

/// The busybox applets the image links (the containers' commands use only these).
const APPLETS: [&str; 9] = [
    "sh", "sleep", "cat", "echo", "ls", "true", "mv", "mkdir", "test",
];
/// The image's default command: the pod sandbox ("pause") container runs it, and it must
/// outlive the pod (the runtime stops it with SIGKILL).
const COMMAND: [&str; 2] = ["/bin/sleep", "2147483647"];
/// Changes whenever the recipe below does, so that a cached archive is not reused.
const RECIPE: &str = "busybox-oci-v1";

/// The image archive (an OCI layout in a tar), built at the first call of the test run.
pub fn busybox_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(build)
}

fn build() -> PathBuf {
    let busybox = tool("busybox");
    let binary = std::fs::read(&busybox).expect("read busybox");
    assert!(
        !is_dynamic_elf(&binary),
        "{} is dynamically linked: the image needs busybox-static (apt-get install \
         busybox-static)",
        busybox.display()
    );
    let digest = Sha256::new()
        .chain_update(RECIPE)
        .chain_update(&binary)
        .finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let archive = cache.join(format!("{RECIPE}-{hex}.tar"));
    if archive.is_file() {
        return archive;
    }
    std::fs::create_dir_all(cache).expect("create the target temp dir");
    let work = tempfile::Builder::new()
        .prefix("busybox-oci-")
        .tempdir_in(cache)
        .expect("temp dir for the image");
    let stage = work.path().join("stage");
    let bin = stage.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("busybox"), &binary).unwrap();
    std::fs::set_permissions(
        bin.join("busybox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let layout = work.path().join("layout");
    let image = format!("{}:latest", layout.display());
    let umoci = tool("umoci");
    let mut config = vec!["config".to_owned(), "--image".to_owned(), image.clone()];
    for arg in COMMAND {
        config.extend(["--config.cmd".to_owned(), arg.to_owned()]);
    }
    let steps: [Vec<String>; 4] = [
        vec![
            "init".into(),
            "--layout".into(),
            layout.display().to_string(),
        ],
        vec!["new".into(), "--image".into(), image.clone()],
        vec![
            "insert".into(),
            "--image".into(),
            image.clone(),
            stage.display().to_string(),
            "/".into(),
        ],
        config,
    ];
    for step in steps {
        run(Command::new(&umoci).args(&step));
    }
    let partial = work.path().join("image.tar");
    run(Command::new(tool("tar"))
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&partial)
        .arg("."));
    // Renamed into place whole: a concurrent run sees the archive complete or not at all.
    std::fs::rename(&partial, &archive).expect("move the image archive into the cache");
    archive
}

/// Runs `cmd`, failing the test with its output unless it succeeds.
fn run(cmd: &mut Command) {
    let out = process::output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `elf` (a 64-bit little-endian ELF file) has a `PT_INTERP` program header: a
/// dynamically linked program, which would need a libc the image does not have.
fn is_dynamic_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) == PT_INTERP)
    })
}
