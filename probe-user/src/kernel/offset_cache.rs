//! A cache of the resolved struct offsets: parsing the kernel's BTF takes ~120 ms, and the
//! answer only changes with the kernel. Kept in `/run/busyprobe` (a tmpfs: a reboot, the only
//! way to a new kernel, empties it), keyed by the kernel's release and build and the BTF
//! file's size and by what busyprobe asks of it.

use std::{
    fs,
    hash::{DefaultHasher, Hash, Hasher},
    io::Write as _,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::btf::{Resolved, GLOBALS};

/// Where cached offsets live.
pub const DIR: &str = "/run/busyprobe";

/// What a cache file holds.
#[derive(Serialize, Deserialize)]
struct Cached {
    values: Vec<(String, u32)>,
    failures: Vec<(String, String)>,
}

/// The cache key for this kernel, BTF file and busyprobe build.
pub fn key(btf_path: &Path) -> Option<String> {
    let uname = nix::sys::utsname::uname().ok()?;
    let size = fs::metadata(btf_path).ok()?.len();
    let mut h = DefaultHasher::new();
    uname.release().hash(&mut h);
    uname.version().hash(&mut h);
    size.hash(&mut h);
    for (name, spec) in GLOBALS {
        name.hash(&mut h);
        spec.describe().hash(&mut h);
    }
    Some(format!("offsets-{:016x}.json", h.finish()))
}

/// The cached answer under `dir`, when there is a complete one.
pub fn read(dir: &Path, key: &str) -> Option<Resolved> {
    let cached: Cached = serde_json::from_slice(&fs::read(dir.join(key)).ok()?).ok()?;
    let values = GLOBALS
        .iter()
        .map(|(name, _)| {
            let (_, v) = cached.values.iter().find(|(n, _)| n == name)?;
            Some((*name, *v))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Resolved {
        values,
        failures: cached.failures,
    })
}

/// Stores `resolved` under `dir` (created root-only); failures to write are only logged.
pub fn write(dir: &Path, key: &str, resolved: &Resolved) {
    let cached = Cached {
        values: resolved
            .values
            .iter()
            .map(|(n, v)| ((*n).to_string(), *v))
            .collect(),
        failures: resolved.failures.clone(),
    };
    let written = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| {
            let tmp: PathBuf = dir.join(format!("{key}.{}", std::process::id()));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&serde_json::to_vec(&cached)?)?;
            fs::rename(&tmp, dir.join(key))
        });
    if let Err(e) = written {
        tracing::debug!("not caching struct offsets in {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::OFFSET_UNKNOWN;

    #[test]
    fn round_trips_and_rejects_incomplete_caches() {
        let dir = tempfile::tempdir().unwrap();
        let mut resolved = Resolved::unknown();
        resolved.values[0].1 = 1840;
        resolved.failures.push(("x.y".into(), "missing".into()));
        write(dir.path(), "k.json", &resolved);
        let back = read(dir.path(), "k.json").expect("cached");
        assert_eq!(back.values, resolved.values);
        assert_eq!(back.failures, resolved.failures);
        assert_eq!(back.get(GLOBALS[1].0), OFFSET_UNKNOWN);
        fs::write(
            dir.path().join("bad.json"),
            br#"{"values":[["OFF_TASK_NSPROXY",1]],"failures":[]}"#,
        )
        .unwrap();
        assert!(
            read(dir.path(), "bad.json").is_none(),
            "a cache missing globals is ignored"
        );
        assert!(read(dir.path(), "none.json").is_none());
    }

    #[test]
    fn the_key_names_this_kernel() {
        let key = key(Path::new("/proc/self/status")).unwrap();
        assert!(
            key.starts_with("offsets-") && key.ends_with(".json"),
            "{key}"
        );
        assert_eq!(Some(key), super::key(Path::new("/proc/self/status")));
    }
}
