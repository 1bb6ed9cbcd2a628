//! The kernel-side holder scan: three BPF iterators (`iter/task_file`, `iter/task`,
//! `iter/task_vma`) walk every task from the host's view and report, per wanted mount id,
//! open files, cwd, root, executable, file mappings, and fanotify groups with unread events
//! pinning the mount. User space only names what they found (`readlink` on `/proc`).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs,
    io::Read,
    os::unix::ffi::OsStrExt,
};

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues},
    programs::Iter,
    Btf, Ebpf,
};
use probe_common::{
    names::{maps, programs},
    scan_kind, ScanRecord,
};

use super::proc_scan::{process_facts, FanotifyFd, Hold, ScanOutcome};
use crate::{
    loader,
    model::{HolderKind, Seen},
    state::process::{self, proc_path},
};

/// The iterator programs and the BTF iterator types they attach to.
const ITERATORS: [(&str, &str); 3] = [
    (programs::SCAN_TASK_FILE, "task_file"),
    (programs::SCAN_TASK, "task"),
    (programs::SCAN_TASK_VMA, "task_vma"),
];

/// Loaded iterator programs, ready to run as often as needed (one scan at a time).
pub struct KernelScanner {
    ebpf: Ebpf,
    anon_mount: Option<u32>,
}

/// Mount ids one scan can look for: `SCAN_MOUNTS` holds 64 entries, one of them the
/// anonymous-inode mount's.
pub const MAX_SCAN_MOUNTS: usize = 63;

/// `SCAN_MOUNTS` values (see `probe-ebpf/src/holders.rs`).
const MOUNT_WANTED: u32 = 1;
const MOUNT_ANON: u32 = 2;

impl KernelScanner {
    /// Loads the object (with the kernel's offsets) and verifies the three iterators once.
    pub fn load() -> Result<Self> {
        // The iterators need the kernel's BTF, and so does the loader (aya parses its own in
        // `EbpfLoader::new`). One after the other, not side by side: two parses at once were
        // the agent's peak of memory (57 MiB, against 29 MiB once running).
        let mut ebpf = loader::load_object(loader::resolve_offsets())?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        for (program, iter_type) in ITERATORS {
            let prog: &mut Iter = ebpf
                .program_mut(program)
                .with_context(|| format!("program {program} missing from the object"))?
                .try_into()?;
            prog.load(iter_type, &btf)
                .with_context(|| format!("loading BPF iterator {program} (iter/{iter_type})"))?;
        }
        let anon_mount =
            super::proc_scan::anon_inode_mount_id().and_then(|id| u32::try_from(id).ok());
        Ok(Self { ebpf, anon_mount })
    }

    /// Finds every hold on `ids`.
    pub fn scan(&mut self, ids: &HashSet<u64>) -> Result<ScanOutcome> {
        self.set_wanted(ids)?;
        self.reset_counts()?;
        let mut records = Vec::new();
        for (program, _) in ITERATORS {
            records.extend(self.run(program)?);
        }
        let mut out = outcome(&records);
        out.fds = usize::try_from(self.count(0)?).unwrap_or(usize::MAX);
        Ok(out)
    }

    fn counts(&mut self) -> Result<PerCpuArray<&mut MapData, u64>> {
        let map = self
            .ebpf
            .map_mut(maps::SCAN_COUNTS)
            .with_context(|| format!("no {} map", maps::SCAN_COUNTS))?;
        Ok(PerCpuArray::try_from(map)?)
    }

    fn reset_counts(&mut self) -> Result<()> {
        let mut counts = self.counts()?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for index in 0..2 {
            counts.set(index, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        Ok(())
    }

    /// The sum over CPUs of counter `index` (0: open files visited, 1: tasks visited).
    fn count(&mut self, index: u32) -> Result<u64> {
        Ok(self.counts()?.get(&index, 0)?.iter().sum())
    }

    fn set_wanted(&mut self, ids: &HashSet<u64>) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(maps::SCAN_MOUNTS)
            .with_context(|| format!("no {} map", maps::SCAN_MOUNTS))?;
        let mut wanted: BpfHashMap<_, u32, u32> = BpfHashMap::try_from(map)?;
        let old: Vec<u32> = wanted.keys().filter_map(Result::ok).collect();
        for key in old {
            wanted.remove(&key)?;
        }
        for &id in ids {
            let id = u32::try_from(id).context("mount id beyond 32 bits")?;
            wanted
                .insert(id, MOUNT_WANTED, 0)
                .context("filling SCAN_MOUNTS (at most 64 mounts)")?;
        }
        // Only files on the anonymous-inode mount can be fanotify groups: the iterator looks
        // at their names and queues, and at nothing else's.
        if let Some(anon) = self.anon_mount {
            wanted
                .insert(anon, MOUNT_ANON, 0)
                .context("filling SCAN_MOUNTS")?;
        }
        Ok(())
    }

    /// Runs one iterator to the end and decodes its records.
    fn run(&mut self, program: &str) -> Result<Vec<ScanRecord>> {
        let prog: &mut Iter = self
            .ebpf
            .program_mut(program)
            .context("program missing")?
            .try_into()?;
        let link_id = prog
            .attach()
            .with_context(|| format!("attaching {program}"))?;
        let link = prog.take_link(link_id)?;
        let mut file = link.into_file().context("creating the iterator")?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading {program}"))?;
        Ok(decode_records(&bytes))
    }
}

/// The fixed-size records in an iterator's output (a trailing partial record is dropped).
pub fn decode_records(bytes: &[u8]) -> Vec<ScanRecord> {
    bytes
        .chunks_exact(std::mem::size_of::<ScanRecord>())
        // SAFETY: each chunk has exactly the size of the plain-old-data record.
        .map(|chunk| unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<ScanRecord>()) })
        .collect()
}

/// Names the records' holds and groups them by process, as the `/proc` scan does.
fn outcome(records: &[ScanRecord]) -> ScanOutcome {
    let own = std::process::id();
    let mut holds: BTreeMap<u32, BTreeSet<Hold>> = BTreeMap::new();
    let mut out = ScanOutcome {
        processes: process::pids().len(),
        method: Seen::KernelScan,
        ..ScanOutcome::default()
    };
    for r in records.iter().filter(|r| r.pid != own && r.pid != 0) {
        if r.kind == scan_kind::FANOTIFY {
            out.fanotify.push(FanotifyFd {
                process: process_facts(r.pid),
                fd: r.fd as i32,
                queued: Some(r.count),
            });
            continue;
        }
        let Some((kind, link)) = link_of(r) else {
            continue;
        };
        // Gone between the iterator and now (closed, exited): not a holder any more; release
        // tracking reports it if it let go after the failing call.
        let Ok(path) = fs::read_link(&link).map(|p| p.as_os_str().as_bytes().to_vec()) else {
            continue;
        };
        let fd = (kind == HolderKind::Fd).then_some(r.fd as i32);
        holds.entry(r.pid).or_default().insert(Hold {
            kind,
            mount_id: u64::from(r.mnt_id),
            path,
            fd,
        });
    }
    out.holders = holds
        .into_iter()
        .map(|(pid, set)| (process_facts(pid), set.into_iter().collect()))
        .collect();
    out
}

/// The hold's kind and the `/proc` magic link that names it.
fn link_of(r: &ScanRecord) -> Option<(HolderKind, std::path::PathBuf)> {
    let task = |link: &str| proc_path(r.pid, &format!("task/{}/{link}", r.tid));
    Some(match r.kind {
        scan_kind::FD => (HolderKind::Fd, proc_path(r.pid, &format!("fd/{}", r.fd))),
        scan_kind::CWD => (HolderKind::Cwd, task("cwd")),
        scan_kind::ROOT => (HolderKind::Root, task("root")),
        scan_kind::EXE => (HolderKind::Exe, proc_path(r.pid, "exe")),
        scan_kind::MMAP => (
            HolderKind::Mmap,
            proc_path(r.pid, &format!("map_files/{:x}-{:x}", r.addr, r.addr_end)),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_whole_records_only() {
        let rec = ScanRecord {
            kind: scan_kind::FD,
            pid: 7,
            tid: 7,
            fd: 3,
            mnt_id: 99,
            count: 0,
            addr: 1,
            addr_end: 2,
        };
        // SAFETY: viewing a plain struct as bytes.
        let one = unsafe {
            std::slice::from_raw_parts(
                (&raw const rec).cast::<u8>(),
                std::mem::size_of::<ScanRecord>(),
            )
        };
        let mut bytes = [one, one].concat();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode_records(&bytes), [rec, rec]);
    }
}
