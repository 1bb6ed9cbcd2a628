//! Kernel struct field offsets from BTF (`/sys/kernel/btf/vmlinux`). Rust eBPF programs have no
//! CO-RE, so the offsets they read are resolved here at start-up and set as globals before load.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Btf, Type};
use probe_common::{names::offsets, OFFSET_UNKNOWN};

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

/// How one eBPF global's value is derived from BTF.
#[derive(Clone, Copy, Debug)]
pub enum OffsetSpec {
    /// The byte offset of a field.
    Field(FieldSpec),
    /// For a bit field: the byte offset of the aligned 32-bit word holding it.
    BitfieldWord(FieldSpec),
    /// For a bit field: its shift within that word.
    BitfieldShift(FieldSpec),
    /// For a bit field: its width in bits.
    BitfieldWidth(FieldSpec),
    /// The value of an enumerator.
    EnumValue {
        /// The enum type.
        enumeration: &'static str,
        /// The enumerator.
        name: &'static str,
    },
}

impl OffsetSpec {
    /// What is resolved, for messages and `doctor`.
    pub fn describe(&self) -> String {
        match self {
            OffsetSpec::Field(f) => f.name(),
            OffsetSpec::BitfieldWord(f) => format!("{} (word)", f.name()),
            OffsetSpec::BitfieldShift(f) => format!("{} (shift)", f.name()),
            OffsetSpec::BitfieldWidth(f) => format!("{} (width)", f.name()),
            OffsetSpec::EnumValue { enumeration, name } => format!("enum {enumeration}::{name}"),
        }
    }
}

const fn field(structure: &'static str, members: &'static [&'static str]) -> OffsetSpec {
    OffsetSpec::Field(FieldSpec { structure, members })
}

const FAN_TYPE: FieldSpec = FieldSpec {
    structure: "fanotify_event",
    members: &["type"],
};

/// Every offset global of the eBPF object (`probe_common::with_offset_globals!`, in the same
/// order) and its source.
pub const GLOBALS: [(&str, OffsetSpec); 47] = [
    (
        offsets::OFF_TASK_NSPROXY,
        field("task_struct", &["nsproxy"]),
    ),
    (offsets::OFF_NSPROXY_MNT_NS, field("nsproxy", &["mnt_ns"])),
    (
        offsets::OFF_MNT_NS_INUM,
        field("mnt_namespace", &["ns", "inum"]),
    ),
    (offsets::OFF_TASK_TGID, field("task_struct", &["tgid"])),
    (offsets::OFF_TASK_PID, field("task_struct", &["pid"])),
    (offsets::OFF_TASK_FS, field("task_struct", &["fs"])),
    (offsets::OFF_TASK_MM, field("task_struct", &["mm"])),
    (offsets::OFF_MM_EXE_FILE, field("mm_struct", &["exe_file"])),
    (offsets::OFF_FS_ROOT, field("fs_struct", &["root"])),
    (offsets::OFF_FS_PWD, field("fs_struct", &["pwd"])),
    (offsets::OFF_FILE_F_PATH, field("file", &["f_path"])),
    (
        offsets::OFF_FILE_PRIVATE_DATA,
        field("file", &["private_data"]),
    ),
    (offsets::OFF_PATH_MNT, field("path", &["mnt"])),
    (offsets::OFF_PATH_DENTRY, field("path", &["dentry"])),
    (offsets::OFF_MOUNT_MNT, field("mount", &["mnt"])),
    (offsets::OFF_MOUNT_MNT_ID, field("mount", &["mnt_id"])),
    (offsets::OFF_MOUNT_MNT_NS, field("mount", &["mnt_ns"])),
    (
        offsets::OFF_DENTRY_NAME,
        field("dentry", &["d_name", "name"]),
    ),
    (
        offsets::OFF_GROUP_NOTIFICATION_LIST,
        field("fsnotify_group", &["notification_list"]),
    ),
    (
        offsets::OFF_GROUP_Q_LEN,
        field("fsnotify_group", &["q_len"]),
    ),
    (
        offsets::OFF_FAN_TYPE_WORD,
        OffsetSpec::BitfieldWord(FAN_TYPE),
    ),
    (offsets::FAN_TYPE_SHIFT, OffsetSpec::BitfieldShift(FAN_TYPE)),
    (offsets::FAN_TYPE_WIDTH, OffsetSpec::BitfieldWidth(FAN_TYPE)),
    (
        offsets::FAN_TYPE_PATH,
        OffsetSpec::EnumValue {
            enumeration: "fanotify_event_type",
            name: "FANOTIFY_EVENT_TYPE_PATH",
        },
    ),
    (
        offsets::FAN_TYPE_PATH_PERM,
        OffsetSpec::EnumValue {
            enumeration: "fanotify_event_type",
            name: "FANOTIFY_EVENT_TYPE_PATH_PERM",
        },
    ),
    (
        offsets::OFF_FAN_PATH_EVENT_PATH,
        field("fanotify_path_event", &["path"]),
    ),
    (offsets::OFF_VMA_FILE, field("vm_area_struct", &["vm_file"])),
    (
        offsets::OFF_VMA_START,
        field("vm_area_struct", &["vm_start"]),
    ),
    (offsets::OFF_VMA_END, field("vm_area_struct", &["vm_end"])),
    (offsets::OFF_TASK_FILES, field("task_struct", &["files"])),
    (offsets::OFF_FILES_FDT, field("files_struct", &["fdt"])),
    (offsets::OFF_FDT_FD, field("fdtable", &["fd"])),
    (offsets::OFF_FDT_MAX_FDS, field("fdtable", &["max_fds"])),
    (offsets::OFF_DENTRY_PARENT, field("dentry", &["d_parent"])),
    (offsets::OFF_VFSMOUNT_ROOT, field("vfsmount", &["mnt_root"])),
    (offsets::OFF_VFSMOUNT_SB, field("vfsmount", &["mnt_sb"])),
    (offsets::OFF_SB_MAGIC, field("super_block", &["s_magic"])),
    (offsets::OFF_FILES_COUNT, field("files_struct", &["count"])),
    (
        offsets::OFF_FDT_CLOSE_ON_EXEC,
        field("fdtable", &["close_on_exec"]),
    ),
    (offsets::OFF_FS_USERS, field("fs_struct", &["users"])),
    (offsets::OFF_TASK_COMM, field("task_struct", &["comm"])),
    (
        offsets::OFF_FILES_NEXT_FD,
        field("files_struct", &["next_fd"]),
    ),
    (offsets::OFF_FDT_OPEN_FDS, field("fdtable", &["open_fds"])),
    (offsets::OFF_FILE_F_MODE, field("file", &["f_mode"])),
    (offsets::OFF_FILE_F_FLAGS, field("file", &["f_flags"])),
    (offsets::OFF_SB_DEV, field("super_block", &["s_dev"])),
    (offsets::OFF_SB_ROOT, field("super_block", &["s_root"])),
];

/// The offset globals resolved, with those that could not be.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// `(global name, value)`; unresolved ones hold [`OFFSET_UNKNOWN`].
    pub values: Vec<(&'static str, u32)>,
    /// `(what, why)` for each spec that failed.
    pub failures: Vec<(String, String)>,
}

impl Resolved {
    /// Every global unknown (no BTF): the programs skip what needs them.
    pub fn unknown() -> Self {
        Self {
            values: GLOBALS.iter().map(|(n, _)| (*n, OFFSET_UNKNOWN)).collect(),
            failures: Vec::new(),
        }
    }

    /// One sentence per spec that could not be resolved, for the user.
    pub fn warnings(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|(what, why)| {
                format!("kernel BTF has no {what} ({why}): the probes that need it are disabled")
            })
            .collect()
    }

    /// The value of one global.
    pub fn get(&self, name: &str) -> u32 {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(OFFSET_UNKNOWN, |(_, v)| *v)
    }
}

/// Reads and parses a BTF file (the kernel's takes about 100 ms).
pub fn load(path: &Path) -> Result<Btf> {
    Btf::from_file(path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reading BTF from {}", path.display()))
}

/// Resolves every global of [`GLOBALS`].
pub fn resolve(btf: &Btf) -> Resolved {
    let mut values = Vec::with_capacity(GLOBALS.len());
    let mut failures = Vec::new();
    for (name, spec) in GLOBALS {
        let value = resolve_spec(btf, &spec).unwrap_or_else(|e| {
            failures.push((spec.describe(), format!("{e:#}")));
            OFFSET_UNKNOWN
        });
        values.push((name, value));
    }
    Resolved { values, failures }
}

/// The value of one spec.
pub fn resolve_spec(btf: &Btf, spec: &OffsetSpec) -> Result<u32> {
    match spec {
        OffsetSpec::Field(f) => field_offset(btf, f),
        OffsetSpec::BitfieldWord(f) => Ok(member_bits(btf, f)?.0 / 32 * 4),
        OffsetSpec::BitfieldShift(f) => Ok(member_bits(btf, f)?.0 % 32),
        OffsetSpec::BitfieldWidth(f) => member_bits(btf, f)?
            .1
            .with_context(|| format!("{} is not a bit field", f.name())),
        OffsetSpec::EnumValue { enumeration, name } => enum_value(btf, enumeration, name),
    }
}

/// Byte offset of `spec` from the start of its struct.
pub fn field_offset(btf: &Btf, spec: &FieldSpec) -> Result<u32> {
    let (bits, bitfield) = member_bits(btf, spec)?;
    if bitfield.is_some() || !bits.is_multiple_of(8) {
        bail!("{} is a bit field", spec.name());
    }
    Ok(bits / 8)
}

/// Bit offset of `spec` from the start of its struct, and its width if it is a bit field.
fn member_bits(btf: &Btf, spec: &FieldSpec) -> Result<(u32, Option<u32>)> {
    let mut current = struct_named(btf, spec.structure)?;
    let mut offset_bits = 0u32;
    let mut width = None;
    for (i, member) in spec.members.iter().enumerate() {
        let (bits, ty, size) = find_member(btf, &current, member)
            .with_context(|| format!("no member `{member}` in {}", spec.name()))?;
        offset_bits += bits;
        width = size;
        if i + 1 < spec.members.len() {
            current = match skip_qualifiers(btf, ty)? {
                Type::Struct(s) | Type::Union(s) => s,
                other => bail!("`{member}` is a {}, not a struct", other.name()),
            };
        }
    }
    Ok((offset_bits, width))
}

fn enum_value(btf: &Btf, enumeration: &str, name: &str) -> Result<u32> {
    let types = btf
        .resolve_types_by_name(enumeration)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("no enum `{enumeration}`"))?;
    for t in types {
        if let Type::Enum(e) = t {
            for m in &e.members {
                if btf.resolve_name(m).is_ok_and(|n| n == name) {
                    return Ok(m.val());
                }
            }
        }
    }
    bail!("no enumerator {name} in enum {enumeration}")
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
/// Returns its bit offset from the start of `s`, its type and its bit-field width.
fn find_member(btf: &Btf, s: &btf_rs::Struct, name: &str) -> Option<(u32, Type, Option<u32>)> {
    for m in &s.members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let ty = btf.resolve_chained_type(m).ok()?;
        if member_name == name {
            return Some((m.bit_offset(), ty, m.bitfield_size().filter(|&w| w > 0)));
        }
        if member_name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = skip_qualifiers(btf, ty).ok()? {
                if let Some((bits, found, width)) = find_member(btf, &inner, name) {
                    return Some((m.bit_offset() + bits, found, width));
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

    /// The loader sets every offset global the kernel side declares, and no other.
    #[test]
    fn globals_are_the_kernel_sides_offsets_in_order() {
        let names: Vec<&str> = GLOBALS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, offsets::ALL);
    }

    #[test]
    fn resolves_the_running_kernels_offsets() {
        let Some(btf) = kernel_btf("resolves_the_running_kernels_offsets") else {
            return;
        };
        let r = resolve(&btf);
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        assert_eq!(r.values.len(), GLOBALS.len());
        assert!(
            (1000..8000).contains(&r.get(offsets::OFF_TASK_NSPROXY)),
            "{r:?}"
        );
        assert_eq!(r.get(offsets::OFF_PATH_MNT), 0);
        assert_eq!(r.get(offsets::OFF_PATH_DENTRY), 8);
        // fanotify_event.type is a 3-bit field; the path events' enumerators are 2 and 3
        // on every kernel since 5.9.
        assert_eq!(r.get(offsets::FAN_TYPE_WIDTH), 3);
        assert_eq!(
            (
                r.get(offsets::FAN_TYPE_PATH),
                r.get(offsets::FAN_TYPE_PATH_PERM)
            ),
            (2, 3)
        );
        assert_eq!(r.get(offsets::OFF_FAN_TYPE_WORD) % 4, 0);
        assert_eq!(r.get("NO_SUCH_GLOBAL"), OFFSET_UNKNOWN);
    }

    /// A BTF blob with `int` and `struct task_struct { int pid; }` only.
    fn tiny_btf() -> Vec<u8> {
        let strings: &[u8] = b"\0int\0task_struct\0pid\0";
        let (int_name, struct_name, pid_name) = (1u32, 5u32, 17u32);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| types.extend_from_slice(&w.to_le_bytes()))
        };
        push(&[int_name, 1 << 24, 4, 32]); // [1] INT "int", size 4, 32 bits
        push(&[struct_name, (4 << 24) | 1, 4]); // [2] STRUCT "task_struct", 1 member, size 4
        push(&[pid_name, 1, 0]); //     pid: type [1] at bit 0
        let mut blob = Vec::new();
        blob.extend_from_slice(&0xeb9fu16.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&word.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn a_btf_without_a_field_gives_a_clear_warning() {
        let btf = Btf::from_bytes(&tiny_btf()).expect("a valid BTF blob");
        assert_eq!(
            field_offset(
                &btf,
                &FieldSpec {
                    structure: "task_struct",
                    members: &["pid"]
                }
            )
            .unwrap(),
            0
        );
        let r = resolve(&btf);
        assert_eq!(r.get(offsets::OFF_TASK_NSPROXY), OFFSET_UNKNOWN);
        assert_eq!(
            r.get(offsets::OFF_TASK_PID),
            0,
            "task_struct.pid is in the blob"
        );
        assert_eq!(
            r.failures.len(),
            GLOBALS.len() - 1,
            "nothing else resolves in this blob"
        );
        let warnings = r.warnings();
        assert!(
            warnings.contains(
                &"kernel BTF has no task_struct.nsproxy (no member `nsproxy` in task_struct.nsproxy): the probes that need it are disabled"
                    .to_string()
            ),
            "{warnings:#?}"
        );
        assert!(
            warnings.iter().any(|w| w.starts_with(
                "kernel BTF has no mount.mnt_id (no struct `mount` with members in BTF)"
            )),
            "{warnings:#?}"
        );
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
