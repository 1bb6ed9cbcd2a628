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
    scan_kind, ScanFileRecord, ScanRecord,
};

use super::proc_scan::{process_facts, FanotifyFd, Hold, QueuedOnMount, ScanOutcome};
use crate::{
    decode::path_within_mount,
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
    fn run(&mut self, program: &str) -> Result<Vec<Record>> {
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

/// One record of an iterator's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A hold, or a fanotify group with its count.
    Hold(ScanRecord),
    /// The file of a queued event of the group just before it.
    File(Box<ScanFileRecord>),
}

/// The records in an iterator's output: [`ScanRecord`]s, and, after a fanotify group's, the
/// longer [`ScanFileRecord`]s of its files (a trailing partial record is dropped).
pub fn decode_records(mut bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(rec) = read_record::<ScanRecord>(bytes) {
        if rec.kind != scan_kind::FANOTIFY_FILE {
            out.push(Record::Hold(rec));
            bytes = &bytes[std::mem::size_of::<ScanRecord>()..];
            continue;
        }
        let Some(file) = read_record::<ScanFileRecord>(bytes) else {
            break;
        };
        out.push(Record::File(Box::new(file)));
        bytes = &bytes[std::mem::size_of::<ScanFileRecord>()..];
    }
    out
}

/// The plain-old-data record `T` at the start of `bytes`, if they hold a whole one.
fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= std::mem::size_of::<T>())
        // SAFETY: enough bytes for `T`, a `#[repr(C)]` record of integers and byte arrays
        // (any bit pattern is valid); `read_unaligned` needs no alignment.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Names the records' holds and groups them by process, as the `/proc` scan does.
fn outcome(records: &[Record]) -> ScanOutcome {
    let own = std::process::id();
    let mut holds: BTreeMap<u32, BTreeSet<Hold>> = BTreeMap::new();
    let mut out = ScanOutcome {
        processes: process::pids().len(),
        method: Seen::KernelScan,
        ..ScanOutcome::default()
    };
    for r in records {
        let r = match r {
            Record::Hold(r) => r,
            Record::File(f) => {
                add_queued_file(&mut out.fanotify, f);
                continue;
            }
        };
        if r.pid == own || r.pid == 0 {
            continue;
        }
        if r.kind == scan_kind::FANOTIFY {
            out.fanotify.push(FanotifyFd {
                process: process_facts(r.pid),
                fd: r.fd as i32,
                queued: Some(r.count),
                files: Vec::new(),
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

/// Adds the queued file `f` to its group: the last listener found, when it is the same
/// process and fd (the iterator writes a group's files right after it).
fn add_queued_file(listeners: &mut [FanotifyFd], f: &ScanFileRecord) {
    let Some(group) = listeners
        .last_mut()
        .filter(|l| l.process.pid == f.record.pid && l.fd == f.record.fd as i32)
    else {
        return;
    };
    let (within, cut) = path_within_mount(&f.names, f.depth, f.flags);
    group.files.push(QueuedOnMount {
        mount_id: u64::from(f.record.mnt_id),
        within,
        cut,
    });
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
    use probe_common::{NAME_LEN, RELEASE_DEPTH};
    use std::mem::size_of;

    /// `record`'s bytes.
    fn bytes_of<T>(record: &T) -> &[u8] {
        // SAFETY: viewing a plain struct as bytes.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(record).cast::<u8>(), size_of::<T>())
        }
    }

    fn group(pid: u32, fd: u32, count: u32) -> ScanRecord {
        ScanRecord {
            kind: scan_kind::FANOTIFY,
            pid,
            tid: pid,
            fd,
            mnt_id: 99,
            count,
            addr: 0,
            addr_end: 0,
        }
    }

    /// A group's queued file: `names` leaf first.
    fn file(pid: u32, fd: u32, index: u32, mnt_id: u32, names: &[&[u8]]) -> ScanFileRecord {
        let mut f = ScanFileRecord {
            record: ScanRecord {
                kind: scan_kind::FANOTIFY_FILE,
                mnt_id,
                count: index,
                ..group(pid, fd, 0)
            },
            depth: names.len() as u32,
            flags: 0,
            names: [[0; NAME_LEN]; RELEASE_DEPTH],
        };
        for (slot, name) in f.names.iter_mut().zip(names) {
            slot[..name.len()].copy_from_slice(name);
        }
        f
    }

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
        let mut bytes = [bytes_of(&rec), bytes_of(&rec)].concat();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            decode_records(&bytes),
            [Record::Hold(rec), Record::Hold(rec)]
        );
    }

    #[test]
    fn a_groups_files_follow_it_as_longer_records() {
        let (g, f0, f1) = (
            group(7, 4, 6),
            file(7, 4, 0, 99, &[b"a"]),
            file(7, 4, 1, 98, &[b"b", b"dir"]),
        );
        let fd = ScanRecord {
            kind: scan_kind::FD,
            ..group(8, 3, 0)
        };
        let whole = [bytes_of(&g), bytes_of(&f0), bytes_of(&f1), bytes_of(&fd)].concat();
        let want = [
            Record::Hold(g),
            Record::File(Box::new(f0)),
            Record::File(Box::new(f1)),
            Record::Hold(fd),
        ];
        assert_eq!(decode_records(&whole), want);
        // A file record cut short is dropped, not read as holds.
        let cut = &whole[..whole.len() - size_of::<ScanRecord>() - 1];
        assert_eq!(decode_records(cut), want[..2]);
    }

    #[test]
    fn queued_files_join_their_group_in_queue_order() {
        let mut listeners = vec![FanotifyFd {
            process: process_facts(7),
            fd: 4,
            queued: Some(6),
            files: Vec::new(),
        }];
        add_queued_file(&mut listeners, &file(7, 4, 0, 99, &[b"a"]));
        add_queued_file(&mut listeners, &file(7, 4, 1, 98, &[b"b", b"dir"]));
        // Another group's file (never written so, but not this group's).
        add_queued_file(&mut listeners, &file(7, 5, 2, 99, &[b"c"]));
        let files: Vec<(u64, &[u8])> = listeners[0]
            .files
            .iter()
            .map(|f| (f.mount_id, f.within.as_slice()))
            .collect();
        assert_eq!(files, [(99, &b"/a"[..]), (98, b"/dir/b")]);
    }
}
