//! Loads the embedded eBPF object, sets the kernel offsets, attaches the umount tracepoints and
//! hands out the ring buffer and drop counters. Dropping [`Probes`] detaches everything.

use anyhow::{Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use probe_common::DropCause;

use crate::kernel::{
    btf::{self, Resolved},
    offset_cache,
    privileges::Privileges,
    tracefs,
};

/// The eBPF object, embedded at build time (see build.rs).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("BUSYPROBE_EBPF_OBJECT"));

/// One program and the tracepoints of one category it is attached to.
#[derive(Clone, Copy, Debug)]
pub struct Attachment {
    /// The program's name in the object.
    pub program: &'static str,
    /// The tracepoints' category.
    pub category: &'static str,
    /// The tracepoints.
    pub names: &'static [&'static str],
}

const fn syscalls(program: &'static str, names: &'static [&'static str]) -> Attachment {
    Attachment {
        program,
        category: "syscalls",
        names,
    }
}

/// The umount capture.
pub const UMOUNT_TRACEPOINTS: [Attachment; 2] = [
    syscalls("sys_enter_umount", &["sys_enter_umount"]),
    syscalls("sys_exit_umount", &["sys_exit_umount"]),
];

/// Release tracking: every way a process lets go of an fd (`close`, `dup2`/`dup3` over it,
/// `close_range`, close-on-exec at `execve`, exit), of a mapping (`munmap`) or of a working
/// or root directory (`chdir`, `fchdir`, `chroot`, exit).
pub const RELEASE_TRACEPOINTS: [Attachment; 9] = [
    syscalls("sys_enter_close", &["sys_enter_close"]),
    syscalls("sys_enter_munmap", &["sys_enter_munmap"]),
    syscalls("sys_enter_chdir", &["sys_enter_chdir", "sys_enter_fchdir"]),
    syscalls("sys_enter_chroot", &["sys_enter_chroot"]),
    syscalls(
        "sys_exit_dir_change",
        &["sys_exit_chdir", "sys_exit_fchdir", "sys_exit_chroot"],
    ),
    syscalls("sys_enter_dup", &["sys_enter_dup2", "sys_enter_dup3"]),
    syscalls("sys_enter_close_range", &["sys_enter_close_range"]),
    syscalls(
        "sys_enter_exec",
        &["sys_enter_execve", "sys_enter_execveat"],
    ),
    Attachment {
        program: "sched_process_exit",
        category: "sched",
        names: &["sched_process_exit"],
    },
];

/// Open times: the entry and the exit of every syscall that opens a file.
pub const OPEN_TIME_TRACEPOINTS: [Attachment; 2] = [
    syscalls(
        "sys_enter_open",
        &[
            "sys_enter_openat",
            "sys_enter_open",
            "sys_enter_openat2",
            "sys_enter_creat",
        ],
    ),
    syscalls(
        "sys_exit_open",
        &[
            "sys_exit_openat",
            "sys_exit_open",
            "sys_exit_openat2",
            "sys_exit_creat",
        ],
    ),
];

/// The probe mode in use (more modes come with the security-hook work).
pub const MODE_TRACEPOINT: &str = "tracepoint";

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Byte size of the events ring buffer.
    pub ring_buffer_size: u32,
    /// Attach release tracking (the busy window's `close` probe).
    pub track_releases: bool,
    /// Attach the open-times probes (when a file on a tracked mount was opened).
    pub open_times: bool,
    /// Track only mounts listed in `TRACKED_MOUNTS` (with `--path`); else all but those.
    pub allow_list: bool,
}

/// `OPEN_TIMES`: `(pid, fd)` → when and on which mount a file on a tracked mount was opened.
pub type OpenTimesMap = aya::maps::HashMap<MapData, probe_common::FdKey, probe_common::OpenRecord>;
/// `RECENT_OPENS_BY_MOUNT`: per CPU, rings of tracked mounts' last opens.
pub type RecentOpensMap = aya::maps::PerCpuArray<MapData, probe_common::RecentOpens>;

/// Loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
}

/// Loads the embedded object with the given offsets, without attaching anything.
///
/// For a holder scan or `doctor` (no event stream): the event maps are made as small as the
/// kernel allows, so that nothing is allocated for them.
pub fn load_object(offsets: &Resolved) -> Result<Ebpf> {
    load_object_with(offsets, None, false)
}

/// The maps that only the event stream fills, which a lean load shrinks to one entry.
const STREAM_MAPS: [&str; 4] = [
    "UMOUNT_INFLIGHT",
    "OPEN_TIMES",
    "RECENT_OPENS_BY_MOUNT",
    "TRACKED_MOUNTS",
];

/// Loads the object: with `ring_buffer_size` for the event stream (full maps), without for a
/// lean load; `allow_list` says how `TRACKED_MOUNTS` is read.
fn load_object_with(
    offsets: &Resolved,
    ring_buffer_size: Option<u32>,
    allow_list: bool,
) -> Result<Ebpf> {
    let allow = u8::from(allow_list);
    let mut loader = EbpfLoader::new();
    for (name, value) in &offsets.values {
        loader.override_global(name, value, true);
    }
    loader.override_global("FILTER_IS_ALLOW_LIST", &allow, true);
    match ring_buffer_size {
        Some(size) => {
            loader.map_max_entries("EVENTS", size);
        }
        None => {
            loader.map_max_entries("EVENTS", 4096);
            for map in STREAM_MAPS {
                loader.map_max_entries(map, 1);
            }
        }
    }
    loader
        .load(EBPF_OBJECT)
        .context("loading the eBPF object into the kernel")
}

/// Resolves the kernel offsets once per process (parsing BTF takes ~100 ms), warning about
/// (not failing on) what is missing: the programs skip what needs an unknown offset.
pub fn resolve_offsets() -> &'static Resolved {
    static RESOLVED: std::sync::OnceLock<Resolved> = std::sync::OnceLock::new();
    RESOLVED.get_or_init(|| {
        let vmlinux = std::path::Path::new(btf::VMLINUX);
        let cache = std::path::Path::new(offset_cache::DIR);
        let key = offset_cache::key(vmlinux);
        let resolved = match key.as_deref().and_then(|k| offset_cache::read(cache, k)) {
            Some(cached) => cached,
            None => match btf::load(vmlinux) {
                Ok(parsed) => {
                    let r = btf::resolve(&parsed);
                    if let Some(k) = &key {
                        offset_cache::write(cache, k, &r);
                    }
                    r
                }
                Err(e) => {
                    tracing::warn!(
                        "{e:#}: the probes that need kernel struct offsets are disabled"
                    );
                    return Resolved::unknown();
                }
            },
        };
        for warning in resolved.warnings() {
            tracing::warn!("{warning}");
        }
        resolved
    })
}

impl Probes {
    /// Checks privileges, mounts tracefs if needed, loads and attaches the umount probes.
    /// `command` names the subcommand for error messages.
    pub fn load(command: &str, opts: &LoadOptions) -> Result<Self> {
        Privileges::current().require_probes(command)?;
        tracefs::ensure_mounted()?;
        let mut ebpf = load_object_with(
            resolve_offsets(),
            Some(opts.ring_buffer_size),
            opts.allow_list,
        )?;
        for attachment in &UMOUNT_TRACEPOINTS {
            attach(&mut ebpf, attachment)?;
        }
        if opts.track_releases {
            for attachment in &RELEASE_TRACEPOINTS {
                if let Err(e) = attach(&mut ebpf, attachment) {
                    tracing::warn!("release tracking is partly off: {e:#}");
                }
            }
        }
        if opts.track_releases && opts.open_times {
            for attachment in &OPEN_TIME_TRACEPOINTS {
                if let Err(e) = attach(&mut ebpf, attachment) {
                    tracing::warn!(
                        "open times are off (transient holders will have no open time): {e:#}"
                    );
                }
            }
        }
        Ok(Self { ebpf })
    }

    /// Starts forwarding the programs' aya-log records to `tracing` (as `log` records).
    pub fn forward_logs(&mut self) {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => {
                // SAFETY: the logger owns its ring buffer fd and keeps it open while registered.
                let registered = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        logger,
                        tokio::io::Interest::READABLE,
                    )
                };
                let spawned = registered.map(|mut fd| {
                    tokio::spawn(async move {
                        while let Ok(mut guard) = fd.readable_mut().await {
                            guard.get_inner_mut().flush();
                            guard.clear_ready();
                        }
                    })
                });
                if let Err(e) = spawned {
                    tracing::warn!("cannot poll eBPF logs: {e}");
                }
            }
            Err(e) => tracing::warn!("eBPF logs unavailable: {e}"),
        }
    }

    /// The events ring buffer (can be taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("the eBPF object has no EVENTS map")?;
        RingBuf::try_from(map).context("EVENTS is not a ring buffer")
    }

    /// The open probes' maps: when each fd on a tracked mount was opened, and each tracked
    /// mount's recent opens (can be taken once).
    pub fn take_open_maps(&mut self) -> Result<(OpenTimesMap, RecentOpensMap)> {
        let times = self
            .ebpf
            .take_map("OPEN_TIMES")
            .context("the eBPF object has no OPEN_TIMES map")?;
        let recent = self
            .ebpf
            .take_map("RECENT_OPENS_BY_MOUNT")
            .context("the eBPF object has no RECENT_OPENS_BY_MOUNT map")?;
        Ok((
            aya::maps::HashMap::try_from(times).context("OPEN_TIMES is not a hash map")?,
            aya::maps::PerCpuArray::try_from(recent)
                .context("RECENT_OPENS_BY_MOUNT is not a per-CPU array")?,
        ))
    }

    /// The kernel's set of tracked mounts (can be taken once).
    pub fn take_tracked_mounts(&mut self) -> Result<aya::maps::HashMap<MapData, u32, u8>> {
        let map = self
            .ebpf
            .take_map("TRACKED_MOUNTS")
            .context("the eBPF object has no TRACKED_MOUNTS map")?;
        aya::maps::HashMap::try_from(map).context("TRACKED_MOUNTS is not a hash map")
    }

    /// The per-CPU drop counters (can be taken once).
    pub fn take_drop_counters(&mut self) -> Result<DropCounters> {
        let map = self
            .ebpf
            .take_map("DROPS")
            .context("the eBPF object has no DROPS map")?;
        Ok(DropCounters(
            PerCpuArray::try_from(map).context("DROPS is not a per-CPU array")?,
        ))
    }
}

/// Loads one tracepoint program and attaches it to each of its tracepoints.
pub fn attach(ebpf: &mut Ebpf, a: &Attachment) -> Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(a.program)
        .with_context(|| format!("program {} missing from the eBPF object", a.program))?
        .try_into()
        .with_context(|| format!("program {} is not a tracepoint", a.program))?;
    prog.load().with_context(|| {
        format!(
            "loading {} (the verifier's log is above, if any)",
            a.program
        )
    })?;
    for name in a.names {
        prog.attach(a.category, name)
            .with_context(|| format!("attaching to tracepoint {}:{name}", a.category))?;
    }
    Ok(())
}

/// The kernel side's per-CPU loss counters.
pub struct DropCounters(PerCpuArray<MapData, u64>);

impl DropCounters {
    /// Sums every cause over all CPUs.
    pub fn read(&self) -> Result<[u64; DropCause::COUNT as usize]> {
        let mut out = [0; DropCause::COUNT as usize];
        for cause in DropCause::ALL {
            let values = self
                .0
                .get(&(cause as u32), 0)
                .with_context(|| format!("reading drop counter {}", cause.as_str()))?;
            out[cause as usize] = values.iter().sum();
        }
        Ok(out)
    }
}
