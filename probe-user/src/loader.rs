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

/// The tracepoints the umount capture attaches: (program, category, name).
pub const UMOUNT_TRACEPOINTS: [(&str, &str, &str); 2] = [
    ("sys_enter_umount", "syscalls", "sys_enter_umount"),
    ("sys_exit_umount", "syscalls", "sys_exit_umount"),
];

/// The release-tracking tracepoints: (program, category, name).
pub const RELEASE_TRACEPOINTS: [(&str, &str, &str); 2] = [
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

/// The syscalls that open a file: the open-times programs attach to their entry
/// (`sys_enter_open`) and exit (`sys_exit_open`).
pub const OPEN_SYSCALLS: [&str; 4] = ["openat", "open", "openat2", "creat"];

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
const STREAM_MAPS: [&str; 3] = ["UMOUNT_INFLIGHT", "OPEN_TIMES", "TRACKED_MOUNTS"];

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
        for (program, category, name) in UMOUNT_TRACEPOINTS {
            attach_tracepoint(&mut ebpf, program, category, name)?;
        }
        if opts.track_releases {
            for (program, category, name) in RELEASE_TRACEPOINTS {
                if let Err(e) = attach_tracepoint(&mut ebpf, program, category, name) {
                    tracing::warn!("release tracking is off: {e:#}");
                }
            }
        }
        if opts.track_releases && opts.open_times {
            if let Err(e) = attach_open_times(&mut ebpf) {
                tracing::warn!(
                    "open times are off (transient holders will have no open time): {e:#}"
                );
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

    /// When each fd on a tracked mount was opened (can be taken once).
    pub fn take_open_times(
        &mut self,
    ) -> Result<aya::maps::HashMap<MapData, probe_common::FdKey, u64>> {
        let map = self
            .ebpf
            .take_map("OPEN_TIMES")
            .context("the eBPF object has no OPEN_TIMES map")?;
        aya::maps::HashMap::try_from(map).context("OPEN_TIMES is not a hash map")
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

/// Loads the open-times programs once each and attaches them to the entry and the exit of
/// every syscall that opens a file.
fn attach_open_times(ebpf: &mut Ebpf) -> Result<()> {
    for (program, side) in [("sys_enter_open", "enter"), ("sys_exit_open", "exit")] {
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the eBPF object"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {program}"))?;
        for syscall in OPEN_SYSCALLS {
            let name = format!("sys_{side}_{syscall}");
            prog.attach("syscalls", &name)
                .with_context(|| format!("attaching to syscalls:{name}"))?;
        }
    }
    Ok(())
}

/// Loads and attaches one tracepoint program.
pub fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program {program} is not a tracepoint"))?;
    prog.load()
        .with_context(|| format!("loading {program} (the verifier's log is above, if any)"))?;
    prog.attach(category, name)
        .with_context(|| format!("attaching to tracepoint {category}:{name}"))?;
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
