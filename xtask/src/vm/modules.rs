//! Kernel modules for the guest: finds each wanted module in an unpacked kernel, adds its
//! dependencies (the `depends=` entry of its `.modinfo` ELF section), and returns them in load
//! order, decompressed (`.ko.xz` through `xz -dc`), ready for `insmod`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

/// Modules the integration tests need when the kernel has them as modules: loop devices,
/// ext4 (the swap-file test formats an image) and the crc32c it looks up through the crypto
/// API (no `modprobe` in the guest loads it on demand).
pub const WANTED: &[&str] = &["loop", "crc32c_generic", "ext4"];

/// A module ready for the guest.
#[derive(Debug, Clone)]
pub struct Module {
    /// Its name, `-` written as `_` (as the kernel names it).
    pub name: String,
    /// Its uncompressed `.ko` bytes.
    pub bytes: Vec<u8>,
}

/// Finds `wanted` and their dependencies under `modules_dir`, in load order. Modules built
/// into the kernel (its `modules.builtin`) are left out; any other missing module is an error.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    let index = index(modules_dir)?;
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin"))
        .map(|text| builtin_names(&text))
        .unwrap_or_default();
    let wanted: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !builtin.contains(&canonical(w)))
        .collect();
    let mut loaded = BTreeMap::new();
    let deps = |name: &str| -> Result<Vec<String>> {
        let path = index
            .get(name)
            .with_context(|| format!("module {name} not found under {}", modules_dir.display()))?;
        let bytes = read_module(path)?;
        let deps = modinfo(&bytes)?
            .into_iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| v.split(',').map(canonical).collect::<Vec<_>>())
            .filter(|d| !d.is_empty() && !builtin.contains(d))
            .collect();
        loaded.insert(name.to_owned(), bytes);
        Ok(deps)
    };
    let order = load_order(&wanted, deps)?;
    Ok(order
        .into_iter()
        .map(|name| {
            let bytes = loaded.remove(&name).expect("read while ordering");
            Module { name, bytes }
        })
        .collect())
}

/// The module names in a `modules.builtin` file (`kernel/drivers/block/loop.ko` -> `loop`).
pub fn builtin_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.trim().rsplit('/').next()?.strip_suffix(".ko"))
        .map(canonical)
        .collect()
}

/// The kernel's spelling of a module name: `crc32c-generic` -> `crc32c_generic`.
pub fn canonical(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// Dependencies first, each module once; fails on a cycle.
pub fn load_order(
    wanted: &[&str],
    mut deps_of: impl FnMut(&str) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        deps_of: &mut dyn FnMut(&str) -> Result<Vec<String>>,
        visiting: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if order.iter().any(|n| n == name) {
            return Ok(());
        }
        ensure!(
            visiting.insert(name.to_owned()),
            "module dependency cycle through {name}"
        );
        for dep in deps_of(name)? {
            visit(&dep, deps_of, visiting, order)?;
        }
        visiting.remove(name);
        order.push(name.to_owned());
        Ok(())
    }
    let mut order = Vec::new();
    let mut visiting = BTreeSet::new();
    for name in wanted {
        visit(&canonical(name), &mut deps_of, &mut visiting, &mut order)?;
    }
    Ok(order)
}

/// Every `*.ko` / `*.ko.xz` under `dir`, by canonical name.
fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(stem) = file
                .strip_suffix(".ko")
                .or_else(|| file.strip_suffix(".ko.xz"))
            {
                found.insert(canonical(stem), path.clone());
            }
        }
    }
    Ok(found)
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context("running xz (apt-get install xz-utils)")?;
        ensure!(
            out.status.success(),
            "xz -dc {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(out.stdout)
    } else {
        fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The `key=value` strings of an ELF64 little-endian object's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    ensure!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not an ELF64 little-endian object"
    );
    let bad = || anyhow::anyhow!("truncated ELF header");
    let shoff = u64_at(0x28).ok_or_else(bad)?;
    let shentsize = usize::from(u16_at(0x3a).ok_or_else(bad)?);
    let shnum = usize::from(u16_at(0x3c).ok_or_else(bad)?);
    let shstrndx = usize::from(u16_at(0x3e).ok_or_else(bad)?);
    // Section header: name u32 @0, offset u64 @0x18, size u64 @0x20.
    let section = |i: usize| -> Option<(usize, &[u8])> {
        let h = shoff + i * shentsize;
        let name = u32::from_le_bytes(elf.get(h..h + 4)?.try_into().ok()?) as usize;
        let (off, size) = (u64_at(h + 0x18)?, u64_at(h + 0x20)?);
        Some((name, elf.get(off..off.checked_add(size)?)?))
    };
    let (_, names) = section(shstrndx).ok_or_else(bad)?;
    for i in 0..shnum {
        let Some((name_off, data)) = section(i) else {
            continue;
        };
        let name = names.get(name_off..).unwrap_or_default();
        if name.starts_with(b".modinfo\0") {
            return Ok(data
                .split(|&b| b == 0)
                .filter_map(|s| {
                    let s = String::from_utf8_lossy(s);
                    let (k, v) = s.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect());
        }
    }
    bail!("no .modinfo section")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object: a null section, `.modinfo`, `.shstrtab`.
    fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo);
        let strtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let shoff = elf.len();
        let header = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        elf.extend(header(0, 0, 0));
        elf.extend(header(1, modinfo_off, modinfo.len()));
        elf.extend(header(10, strtab_off, shstrtab.len()));
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let elf = elf_with_modinfo(b"license=GPL\0depends=mbcache,jbd2,crc16\0name=ext4\0\0\0");
        let info = modinfo(&elf).unwrap();
        assert!(info.contains(&("depends".into(), "mbcache,jbd2,crc16".into())));
        assert!(info.contains(&("name".into(), "ext4".into())));
        assert!(modinfo(b"\x7fELF\x01\x01").is_err());
        assert!(modinfo(&elf_with_modinfo(b"")).unwrap().is_empty());
    }

    #[test]
    fn orders_dependencies_first_and_once() {
        let graph: BTreeMap<&str, &[&str]> = [
            ("ext4", &["mbcache", "jbd2", "crc16"][..]),
            ("jbd2", &[][..]),
            ("mbcache", &[][..]),
            ("crc16", &[][..]),
            ("loop", &[][..]),
        ]
        .into();
        let order = load_order(&["loop", "ext4", "jbd2"], |n| {
            Ok(graph[n].iter().map(|s| s.to_string()).collect())
        })
        .unwrap();
        assert_eq!(order, ["loop", "mbcache", "jbd2", "crc16", "ext4"]);
    }

    #[test]
    fn a_cycle_is_an_error() {
        let err = load_order(&["a"], |n| {
            Ok(vec![if n == "a" { "b" } else { "a" }.to_owned()])
        });
        assert!(err.is_err());
    }

    #[test]
    fn reads_builtin_module_names() {
        let names = builtin_names("kernel/mm/zbud.ko\nkernel/crypto/crc32c-generic.ko\n\n");
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["crc32c_generic", "zbud"]
        );
    }

    #[test]
    fn names_use_underscores() {
        assert_eq!(canonical("crc32c-generic"), "crc32c_generic");
    }
}
