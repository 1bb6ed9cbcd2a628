//! Kernel struct field offsets from BTF (`/sys/kernel/btf/vmlinux`). Rust eBPF programs have no
//! CO-RE, so the offsets they read are resolved here at start-up and set as globals before load.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Btf, Type};
use probe_common::{KernelOffsets, OFFSET_UNKNOWN};

/// The kernel's own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// One field the probes read, as `struct.member.member`.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    /// The struct that holds the first member.
    pub structure: &'static str,
    /// Member names from the struct down; unnamed unions/structs are searched transparently.
    pub members: &'static [&'static str],
}

impl FieldSpec {
    /// `struct.member.member` for messages.
    pub fn name(&self) -> String {
        format!("{}.{}", self.structure, self.members.join("."))
    }
}

/// The fields behind [`KernelOffsets`], in field order.
pub const FIELDS: [FieldSpec; 3] = [
    FieldSpec {
        structure: "task_struct",
        members: &["nsproxy"],
    },
    FieldSpec {
        structure: "nsproxy",
        members: &["mnt_ns"],
    },
    FieldSpec {
        structure: "mnt_namespace",
        members: &["ns", "inum"],
    },
];

/// Offsets resolved, with the fields that could not be.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The offsets; unresolved ones are [`OFFSET_UNKNOWN`].
    pub offsets: KernelOffsets,
    /// `(field, why)` for each field that failed.
    pub failures: Vec<(String, String)>,
}

/// Reads and parses a BTF file (the kernel's takes about 100 ms).
pub fn load(path: &Path) -> Result<Btf> {
    Btf::from_file(path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reading BTF from {}", path.display()))
}

/// Resolves every field of [`KernelOffsets`].
pub fn resolve(btf: &Btf) -> Resolved {
    let mut values = [OFFSET_UNKNOWN; FIELDS.len()];
    let mut failures = Vec::new();
    for (slot, spec) in values.iter_mut().zip(FIELDS.iter()) {
        match field_offset(btf, spec) {
            Ok(off) => *slot = off,
            Err(e) => failures.push((spec.name(), format!("{e:#}"))),
        }
    }
    let [task_nsproxy, nsproxy_mnt_ns, mnt_ns_inum] = values;
    Resolved {
        offsets: KernelOffsets {
            task_nsproxy,
            nsproxy_mnt_ns,
            mnt_ns_inum,
            _pad: 0,
        },
        failures,
    }
}

/// Byte offset of `spec` from the start of its struct.
pub fn field_offset(btf: &Btf, spec: &FieldSpec) -> Result<u32> {
    let mut current = struct_named(btf, spec.structure)?;
    let mut offset_bits = 0u32;
    for (i, member) in spec.members.iter().enumerate() {
        let (bits, ty) = find_member(btf, &current, member)
            .with_context(|| format!("no member `{member}` in {}", spec.name()))?;
        offset_bits += bits;
        if i + 1 < spec.members.len() {
            current = match skip_qualifiers(btf, ty)? {
                Type::Struct(s) | Type::Union(s) => s,
                other => bail!("`{member}` is a {}, not a struct", other.name()),
            };
        }
    }
    if !offset_bits.is_multiple_of(8) {
        bail!("{} is a bit field", spec.name());
    }
    Ok(offset_bits / 8)
}

fn struct_named(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
    btf.resolve_types_by_name(name)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("no type `{name}` in BTF"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .with_context(|| format!("no struct `{name}` with members in BTF"))
}

/// Finds `name` among the members of `s`, descending into unnamed struct/union members.
/// Returns its bit offset from the start of `s` and its type.
fn find_member(btf: &Btf, s: &btf_rs::Struct, name: &str) -> Option<(u32, Type)> {
    for m in &s.members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let ty = btf.resolve_chained_type(m).ok()?;
        if member_name == name {
            return Some((m.bit_offset(), ty));
        }
        if member_name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = skip_qualifiers(btf, ty).ok()? {
                if let Some((bits, found)) = find_member(btf, &inner, name) {
                    return Some((m.bit_offset() + bits, found));
                }
            }
        }
    }
    None
}

/// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
fn skip_qualifiers(btf: &Btf, mut ty: Type) -> Result<Type> {
    for _ in 0..16 {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            Type::TypeTag(t) => btf.resolve_chained_type(t),
            _ => return Ok(ty),
        }
        .map_err(|e| anyhow!("{e}"))?;
    }
    bail!("type qualifier chain too long")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the build machines (and any BTF kernel) every field resolves; the values match
    /// what bpftool prints for 6.x kernels' layouts.
    /// The running kernel's BTF, or `None` (with a printed reason) on a kernel without it.
    fn kernel_btf(test: &str) -> Option<Btf> {
        let path = Path::new(VMLINUX);
        if !path.exists() {
            eprintln!("SKIPPED {test}: {VMLINUX} does not exist (kernel without BTF)");
            return None;
        }
        Some(load(path).unwrap())
    }

    #[test]
    fn resolves_the_running_kernels_offsets() {
        let Some(btf) = kernel_btf("resolves_the_running_kernels_offsets") else {
            return;
        };
        let r = resolve(&btf);
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        let o = r.offsets;
        assert!(o.task_nsproxy > 1000 && o.task_nsproxy < 8000, "{o:?}");
        assert!(o.nsproxy_mnt_ns > 0 && o.nsproxy_mnt_ns < 64, "{o:?}");
        assert!(o.mnt_ns_inum < 256, "{o:?}");
    }

    #[test]
    fn descends_into_anonymous_unions() {
        let Some(btf) = kernel_btf("descends_into_anonymous_unions") else {
            return;
        };
        // `file.f_path` sits inside an anonymous union on 6.x kernels (facts doc: 64).
        let f_path = field_offset(
            &btf,
            &FieldSpec {
                structure: "file",
                members: &["f_path"],
            },
        )
        .unwrap();
        let mnt = field_offset(
            &btf,
            &FieldSpec {
                structure: "path",
                members: &["mnt"],
            },
        )
        .unwrap();
        assert_eq!(mnt, 0);
        assert!(f_path > 0 && f_path.is_multiple_of(8), "{f_path}");
        let err = field_offset(
            &btf,
            &FieldSpec {
                structure: "file",
                members: &["no_such_member"],
            },
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("no member `no_such_member`"),
            "{err:#}"
        );
        assert!(field_offset(
            &btf,
            &FieldSpec {
                structure: "no_such_struct_xyz",
                members: &["a"]
            }
        )
        .is_err());
    }
}
