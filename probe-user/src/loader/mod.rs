//! Loads the embedded eBPF object and attaches its probes: checks privileges and tracefs,
//! resolves the kernel struct offsets (BTF, cached) and sets them as globals, decides the mode
//! (`resolve_mode`: fentry where the kernel allows it, else syscall tracepoints), and attaches
//! each mode's sets (`ProbeSets`: the umount capture, release tracking, open times); hands out
//! the ring buffer, the open-time and tracked-mount maps and the drop counters, and forwards
//! the programs' logs. A lean load (`load_object`) serves the holder scan and `doctor`.
//! Programs, maps and globals are named by `probe_common::names`; a test checks that the
//! embedded object has every one. Dropping [`Probes`] detaches everything.

mod open_switch;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{lsm::LsmLinkId, Lsm, Program, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use probe_common::{
    names::{globals, maps, programs},
    DropCause,
};

use crate::kernel::{
    btf::{self, Resolved},
    lsm, offset_cache,
    privileges::Privileges,
    tracefs,
};

pub use open_switch::OpenTimeSwitch;

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
    syscalls(programs::SYS_ENTER_UMOUNT, &["sys_enter_umount"]),
    syscalls(programs::SYS_EXIT_UMOUNT, &["sys_exit_umount"]),
];

/// Release tracking: every way a process lets go of an fd (`close`, `dup2`/`dup3` over it,
/// `close_range`, close-on-exec at `execve`, exit), of a mapping (`munmap`) or of a working
/// or root directory (`chdir`, `fchdir`, `chroot`, exit).
pub const RELEASE_TRACEPOINTS: [Attachment; 9] = [
    syscalls(programs::SYS_ENTER_CLOSE, &["sys_enter_close"]),
    syscalls(programs::SYS_ENTER_MUNMAP, &["sys_enter_munmap"]),
    syscalls(
        programs::SYS_ENTER_CHDIR,
        &["sys_enter_chdir", "sys_enter_fchdir"],
    ),
    syscalls(programs::SYS_ENTER_CHROOT, &["sys_enter_chroot"]),
    syscalls(
        programs::SYS_EXIT_DIR_CHANGE,
        &["sys_exit_chdir", "sys_exit_fchdir", "sys_exit_chroot"],
    ),
    syscalls(
        programs::SYS_ENTER_DUP,
        &["sys_enter_dup2", "sys_enter_dup3"],
    ),
    syscalls(programs::SYS_ENTER_CLOSE_RANGE, &["sys_enter_close_range"]),
    syscalls(
        programs::SYS_ENTER_EXEC,
        &["sys_enter_execve", "sys_enter_execveat"],
    ),
    EXIT_TRACEPOINT,
];

/// Release tracking at process exit, in both modes (a scheduler tracepoint: it does not slow
/// syscalls down).
const EXIT_TRACEPOINT: Attachment = Attachment {
    program: programs::SCHED_PROCESS_EXIT,
    category: "sched",
    names: &["sched_process_exit"],
};

/// Open times: the entry and the exit of every syscall that opens a file.
pub const OPEN_TIME_TRACEPOINTS: [Attachment; 2] = [
    syscalls(
        programs::SYS_ENTER_OPEN,
        &[
            "sys_enter_openat",
            "sys_enter_open",
            "sys_enter_openat2",
            "sys_enter_creat",
        ],
    ),
    syscalls(
        programs::SYS_EXIT_OPEN,
        &[
            "sys_exit_openat",
            "sys_exit_open",
            "sys_exit_openat2",
            "sys_exit_creat",
        ],
    ),
];

/// An fentry or fexit program and the kernel function it traces.
#[derive(Clone, Copy, Debug)]
pub struct FnAttachment {
    /// The program's name in the object.
    pub program: &'static str,
    /// The traced function (an x86-64 syscall wrapper).
    pub function: &'static str,
}

const fn traced(program: &'static str, function: &'static str) -> FnAttachment {
    FnAttachment { program, function }
}

/// fentry mode's umount capture: the syscall wrapper's entry and exit.
pub const UMOUNT_FENTRY: [FnAttachment; 2] = [
    traced(programs::FENTRY_UMOUNT, "__x64_sys_umount"),
    traced(programs::FEXIT_UMOUNT, "__x64_sys_umount"),
];

/// fentry mode's release tracking (exit stays the `sched_process_exit` tracepoint, which
/// does not slow syscalls down).
pub const RELEASE_FENTRY: [FnAttachment; 13] = [
    traced(programs::FENTRY_CLOSE, "__x64_sys_close"),
    traced(programs::FENTRY_MUNMAP, "__x64_sys_munmap"),
    traced(programs::FENTRY_CHDIR, "__x64_sys_chdir"),
    traced(programs::FENTRY_FCHDIR, "__x64_sys_fchdir"),
    traced(programs::FENTRY_CHROOT, "__x64_sys_chroot"),
    traced(programs::FEXIT_CHDIR, "__x64_sys_chdir"),
    traced(programs::FEXIT_FCHDIR, "__x64_sys_fchdir"),
    traced(programs::FEXIT_CHROOT, "__x64_sys_chroot"),
    traced(programs::FENTRY_DUP2, "__x64_sys_dup2"),
    traced(programs::FENTRY_DUP3, "__x64_sys_dup3"),
    traced(programs::FENTRY_CLOSE_RANGE, "__x64_sys_close_range"),
    traced(programs::FENTRY_EXECVE, "__x64_sys_execve"),
    traced(programs::FENTRY_EXECVEAT, "__x64_sys_execveat"),
];

/// A BPF LSM program and the security hook it observes.
#[derive(Clone, Copy, Debug)]
pub struct HookAttachment {
    /// The program's name in the object.
    pub program: &'static str,
    /// The hook (`sb_umount`: the program is `lsm/sb_umount`).
    pub hook: &'static str,
}

/// The enhanced mode's umount hook: the exact mount of each attempt (beside fentry mode's
/// umount capture).
pub const UMOUNT_LSM: HookAttachment = HookAttachment {
    program: programs::LSM_SB_UMOUNT,
    hook: "sb_umount",
};

/// The enhanced mode's open times, beside fentry mode's programs on the open syscalls: the
/// hook times every open but `O_PATH` ones exactly, the opens no syscall makes (fanotify's
/// event fds, marked as such with [`EVENT_FD_FENTRY`]) included; the syscalls' probes time
/// the `O_PATH` ones.
pub const OPEN_TIME_LSM: HookAttachment = HookAttachment {
    program: programs::LSM_FILE_OPEN,
    hook: "file_open",
};

/// The enhanced mode's marks on fanotify's event fds: the threads inside `fanotify_read`,
/// whose opens the `file_open` hook marks as event fds. Attached before the hook; a read
/// already waiting for events then is not marked (its event fds are timed as the listener's
/// own opens).
pub const EVENT_FD_FENTRY: [FnAttachment; 2] = [
    traced(programs::FENTRY_FANOTIFY_READ, "fanotify_read"),
    traced(programs::FEXIT_FANOTIFY_READ, "fanotify_read"),
];

/// fentry mode's open times.
pub const OPEN_TIME_FENTRY: [FnAttachment; 8] = [
    traced(programs::FENTRY_OPEN, "__x64_sys_open"),
    traced(programs::FENTRY_OPENAT, "__x64_sys_openat"),
    traced(programs::FENTRY_OPENAT2, "__x64_sys_openat2"),
    traced(programs::FENTRY_CREAT, "__x64_sys_creat"),
    traced(programs::FEXIT_OPEN, "__x64_sys_open"),
    traced(programs::FEXIT_OPENAT, "__x64_sys_openat"),
    traced(programs::FEXIT_OPENAT2, "__x64_sys_openat2"),
    traced(programs::FEXIT_CREAT, "__x64_sys_creat"),
];

/// Which probes to use, as asked (`--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    /// The best the kernel allows: enhanced, else fentry, else tracepoints.
    #[default]
    Auto,
    /// Syscall tracepoints.
    Tracepoint,
    /// fentry/fexit on the syscall wrappers; an error where the kernel refuses them.
    Fentry,
    /// fentry plus BPF LSM security hooks; fentry alone (said why) where BPF LSM is not
    /// active, an error where fentry is refused.
    Enhanced,
}

/// How the probes hook the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Syscall tracepoints (`syscalls:sys_enter_*`/`sys_exit_*`): every kernel has them, but
    /// enabling any puts every task on the syscall slow path.
    Tracepoint,
    /// BPF trampolines (fentry/fexit) on the x86-64 syscall wrappers: only the traced calls
    /// pay. Needs a kernel that allows fentry (not under lockdown's function-tracing ban).
    Fentry,
    /// fentry mode plus BPF LSM programs on the `sb_umount` and `file_open` security hooks:
    /// each attempt carries the exact mount it is about, and every open is timed (fanotify's
    /// event fds too) by one hook beside the open syscalls' trampolines (which time `O_PATH`
    /// opens, the hook never sees). Needs the `bpf` LSM active.
    Enhanced,
}

impl Mode {
    /// The mode's name (logs, `header` lines, the TUI).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tracepoint => "tracepoint",
            Mode::Fentry => "fentry",
            Mode::Enhanced => "enhanced",
        }
    }
}

/// Where the open probes time opens (`--open-times`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OpenTimes {
    /// On every tracked mount, all the time.
    All,
    /// On the mounts whose unmount failed with EBUSY, from that failure on; the open probes
    /// are attached only while there is one.
    Contended,
    /// Never.
    Off,
}

impl std::fmt::Display for OpenTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::All => "open times on every tracked mount",
            Self::Contended => "open times on contended mounts",
            Self::Off => "no open times",
        })
    }
}

/// The mode a stream runs in, and why when `auto` fell back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeDecision {
    /// The mode.
    pub mode: Mode,
    /// Why the mode is less than the one asked for (`auto` asks for enhanced): BPF LSM not
    /// active, fentry refused.
    pub fallback: Option<String>,
}

impl std::fmt::Display for ModeDecision {
    /// `fentry mode`, or `tracepoint mode: fentry is refused here: ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} mode", self.mode.as_str())?;
        match &self.fallback {
            Some(why) => write!(f, ": {why}"),
            None => Ok(()),
        }
    }
}

/// The mode to run in for `choice`: `auto` and `enhanced` try fentry mode's umount program and
/// the `sb_umount` hook's (loads, nothing attached) and settle for fentry mode when BPF LSM is
/// not active or refused (saying why); `auto` settles for tracepoints when fentry is refused,
/// `fentry` and `enhanced` fail then. `command` names the subcommand for the privilege error,
/// checked first.
pub fn resolve_mode(command: &str, choice: ModeChoice) -> Result<ModeDecision> {
    Privileges::current().require_probes(command)?;
    let decided = |mode, fallback| Ok(ModeDecision { mode, fallback });
    if choice == ModeChoice::Tracepoint {
        return decided(Mode::Tracepoint, None);
    }
    if let Err(e) = fentry_available() {
        if choice == ModeChoice::Auto {
            let cause = e.root_cause();
            return decided(
                Mode::Tracepoint,
                Some(format!("fentry is refused here: {cause}")),
            );
        }
        let flag = if choice == ModeChoice::Fentry {
            "fentry"
        } else {
            "enhanced"
        };
        return Err(e.context(format!("--mode {flag}: this kernel refuses fentry programs; `busyprobe doctor` says what it allows, and --mode tracepoint works everywhere")));
    }
    if choice == ModeChoice::Fentry {
        return decided(Mode::Fentry, None);
    }
    match lsm_available() {
        Ok(()) => decided(Mode::Enhanced, None),
        Err(e) => decided(Mode::Fentry, Some(format!("no security hooks: {e:#}"))),
    }
}

/// Whether the `bpf` LSM is active and the kernel loads the `sb_umount` hook's program.
fn lsm_available() -> Result<()> {
    if let Some(why) = lsm::bpf_inactive(&lsm::active()?) {
        anyhow::bail!(why);
    }
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let mut ebpf = load_object(resolve_offsets())?;
    load_hook(&mut ebpf, &btf, &UMOUNT_LSM).map(drop)
}

/// Loads a BPF LSM program at its hook (once: a loaded one is left as it is).
fn load_hook<'e>(ebpf: &'e mut Ebpf, btf: &Btf, a: &HookAttachment) -> Result<&'e mut Lsm> {
    let prog: &mut Lsm = ebpf
        .program_mut(a.program)
        .with_context(|| format!("program {} missing from the eBPF object", a.program))?
        .try_into()
        .with_context(|| format!("program {} is not a BPF LSM program", a.program))?;
    if prog.fd().is_err() {
        prog.load(a.hook, btf)
            .with_context(|| format!("loading {} on the {} hook", a.program, a.hook))?;
    }
    Ok(prog)
}

/// Loads a BPF LSM program at its hook and attaches it.
pub fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, a: &HookAttachment) -> Result<LsmLinkId> {
    load_hook(ebpf, btf, a)?
        .attach()
        .with_context(|| format!("attaching {} to the {} hook", a.program, a.hook))
}

/// Whether the kernel loads fentry mode's umount program.
fn fentry_available() -> Result<()> {
    anyhow::ensure!(
        cfg!(target_arch = "x86_64"),
        "fentry mode traces the x86-64 syscall wrappers"
    );
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let mut ebpf = load_object(resolve_offsets())?;
    let [umount, _] = UMOUNT_FENTRY;
    load_traced(&mut ebpf, &btf, &umount)
}

/// Loads an fentry/fexit program at its function.
fn load_traced(ebpf: &mut Ebpf, btf: &Btf, a: &FnAttachment) -> Result<()> {
    let loaded = match ebpf.program_mut(a.program) {
        Some(Program::FEntry(p)) => p.load(a.function, btf),
        Some(Program::FExit(p)) => p.load(a.function, btf),
        _ => anyhow::bail!(
            "program {} is not an fentry/fexit program of the object",
            a.program
        ),
    };
    loaded.with_context(|| format!("loading {} on {}", a.program, a.function))
}

/// Loads an fentry/fexit program at its function and attaches it.
pub fn attach_traced(ebpf: &mut Ebpf, btf: &Btf, a: &FnAttachment) -> Result<()> {
    load_traced(ebpf, btf, a)?;
    let attached = match ebpf.program_mut(a.program) {
        Some(Program::FEntry(p)) => p.attach().map(drop),
        Some(Program::FExit(p)) => p.attach().map(drop),
        _ => unreachable!("checked by load_traced"),
    };
    attached.with_context(|| format!("attaching {} to {}", a.program, a.function))
}

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Byte size of the events ring buffer.
    pub ring_buffer_size: u32,
    /// Attach release tracking (the busy window's `close` probe).
    pub track_releases: bool,
    /// Where the open-times probes note when files are opened: `contended` loads them
    /// without attaching them (an [`OpenTimeSwitch`] does, while a mount is contended).
    pub open_times: OpenTimes,
    /// Track only mounts listed in `TRACKED_MOUNTS` (with `--path`); else all but those.
    pub allow_list: bool,
    /// How the probes hook the kernel ([`resolve_mode`]).
    pub mode: Mode,
}

/// `OPEN_TIMES`: `(pid, fd)` → when and on which mount a file on a tracked mount was opened.
pub type OpenTimesMap = aya::maps::HashMap<MapData, probe_common::FdKey, probe_common::OpenRecord>;
/// `RECENT_OPENS_BY_MOUNT`: per CPU, rings of tracked mounts' last opens.
pub type RecentOpensMap = aya::maps::PerCpuArray<MapData, probe_common::RecentOpens>;

/// Loaded and attached probes (shared with the [`OpenTimeSwitch`], which attaches the open
/// probes later).
pub struct Probes {
    ebpf: Arc<Mutex<Ebpf>>,
    mode: Mode,
}

/// Loads the embedded object with the given offsets, without attaching anything.
///
/// For a holder scan or `doctor` (no event stream): the event maps are made as small as the
/// kernel allows, so that nothing is allocated for them.
pub fn load_object(offsets: &Resolved) -> Result<Ebpf> {
    load_object_with(offsets, None, false, false, false)
}

/// The maps that only the event stream fills, which a lean load shrinks to one entry.
const STREAM_MAPS: [&str; 5] = [
    maps::UMOUNT_INFLIGHT,
    maps::OPEN_TIMES,
    maps::RECENT_OPENS_BY_MOUNT,
    maps::TRACKED_MOUNTS,
    maps::CONTENDED_MOUNTS,
];

/// Loads the object: with `ring_buffer_size` for the event stream (full maps), without for a
/// lean load; `allow_list` says how `TRACKED_MOUNTS` is read, `where_contended` that opens
/// are timed only on `CONTENDED_MOUNTS`, `hooked` that the `file_open` hook times them
/// (enhanced mode: the open syscalls' exits then time `O_PATH` files only).
fn load_object_with(
    offsets: &Resolved,
    ring_buffer_size: Option<u32>,
    allow_list: bool,
    where_contended: bool,
    hooked: bool,
) -> Result<Ebpf> {
    let allow = u8::from(allow_list);
    let contended = u8::from(where_contended);
    let hooked = u8::from(hooked);
    let mut loader = EbpfLoader::new();
    for (name, value) in &offsets.values {
        loader.override_global(name, value, true);
    }
    loader.override_global(globals::FILTER_IS_ALLOW_LIST, &allow, true);
    loader.override_global(globals::OPEN_TIMES_WHERE_CONTENDED, &contended, true);
    loader.override_global(globals::FILE_OPEN_HOOKED, &hooked, true);
    match ring_buffer_size {
        Some(size) => {
            loader.map_max_entries(maps::EVENTS, size);
        }
        None => {
            loader.map_max_entries(maps::EVENTS, 4096);
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
            opts.open_times == OpenTimes::Contended,
            opts.mode == Mode::Enhanced,
        )?;
        let mut sets = match opts.mode {
            Mode::Tracepoint => ProbeSets::tracepoints(&mut ebpf),
            mode => ProbeSets::fentry(&mut ebpf, mode == Mode::Enhanced)?,
        };
        sets.umount()?;
        if opts.track_releases {
            for e in sets.releases() {
                tracing::warn!("release tracking is partly off: {e:#}");
            }
        }
        let open_failures = match opts.open_times {
            _ if !opts.track_releases => Vec::new(),
            OpenTimes::All => sets.open_times(),
            OpenTimes::Contended => sets.load_open_times(),
            OpenTimes::Off => Vec::new(),
        };
        for e in open_failures {
            tracing::warn!("open times are off (transient holders will have no open time): {e:#}");
        }
        Ok(Self {
            ebpf: Arc::new(Mutex::new(ebpf)),
            mode: opts.mode,
        })
    }

    /// The loaded probes, locked (nothing else runs on them for long).
    fn ebpf(&self) -> MutexGuard<'_, Ebpf> {
        self.ebpf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches the open probes on demand (`--open-times contended`; they are loaded).
    pub fn open_switch(&self) -> OpenTimeSwitch {
        OpenTimeSwitch::new(Arc::clone(&self.ebpf), self.mode)
    }

    /// Starts forwarding the programs' aya-log records to `tracing` (as `log` records).
    pub fn forward_logs(&mut self) {
        match aya_log::EbpfLogger::init(&mut self.ebpf()) {
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
        let map = take_map(&mut self.ebpf(), maps::EVENTS)?;
        RingBuf::try_from(map).with_context(|| format!("{} is not a ring buffer", maps::EVENTS))
    }

    /// The open probes' maps: when each fd on a tracked mount was opened, and each tracked
    /// mount's recent opens (can be taken once).
    pub fn take_open_maps(&mut self) -> Result<(OpenTimesMap, RecentOpensMap)> {
        let times = take_map(&mut self.ebpf(), maps::OPEN_TIMES)?;
        let recent = take_map(&mut self.ebpf(), maps::RECENT_OPENS_BY_MOUNT)?;
        Ok((
            aya::maps::HashMap::try_from(times)
                .with_context(|| format!("{} is not a hash map", maps::OPEN_TIMES))?,
            aya::maps::PerCpuArray::try_from(recent).with_context(|| {
                format!("{} is not a per-CPU array", maps::RECENT_OPENS_BY_MOUNT)
            })?,
        ))
    }

    /// The kernel's set of tracked mounts (can be taken once).
    pub fn take_tracked_mounts(&mut self) -> Result<aya::maps::HashMap<MapData, u32, u8>> {
        let map = take_map(&mut self.ebpf(), maps::TRACKED_MOUNTS)?;
        aya::maps::HashMap::try_from(map)
            .with_context(|| format!("{} is not a hash map", maps::TRACKED_MOUNTS))
    }

    /// The kernel's set of contended mounts (can be taken once).
    pub fn take_contended_mounts(&mut self) -> Result<aya::maps::HashMap<MapData, u32, u8>> {
        let map = take_map(&mut self.ebpf(), maps::CONTENDED_MOUNTS)?;
        aya::maps::HashMap::try_from(map)
            .with_context(|| format!("{} is not a hash map", maps::CONTENDED_MOUNTS))
    }

    /// The per-CPU drop counters (can be taken once).
    pub fn take_drop_counters(&mut self) -> Result<DropCounters> {
        let map = take_map(&mut self.ebpf(), maps::DROPS)?;
        Ok(DropCounters(PerCpuArray::try_from(map).with_context(
            || format!("{} is not a per-CPU array", maps::DROPS),
        )?))
    }
}

/// Takes the map `name` out of the object (a map can be taken once).
fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("the eBPF object has no {name} map"))
}

/// The programs of one mode, attached set by set.
struct ProbeSets<'a> {
    ebpf: &'a mut Ebpf,
    /// The kernel's BTF, in fentry and enhanced modes.
    btf: Option<Btf>,
    /// The security hooks too (enhanced mode).
    hooks: bool,
}

impl<'a> ProbeSets<'a> {
    fn tracepoints(ebpf: &'a mut Ebpf) -> Self {
        Self {
            ebpf,
            btf: None,
            hooks: false,
        }
    }

    fn fentry(ebpf: &'a mut Ebpf, hooks: bool) -> Result<Self> {
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        Ok(Self {
            ebpf,
            btf: Some(btf),
            hooks,
        })
    }

    /// The umount capture (nothing works without it), with its security hook in enhanced
    /// mode.
    fn umount(&mut self) -> Result<()> {
        let Self { ebpf, btf, hooks } = self;
        match btf {
            None => UMOUNT_TRACEPOINTS.iter().try_for_each(|a| attach(ebpf, a)),
            Some(btf) => {
                UMOUNT_FENTRY
                    .iter()
                    .try_for_each(|a| attach_traced(ebpf, btf, a))?;
                if *hooks {
                    attach_hook(ebpf, btf, &UMOUNT_LSM)?;
                }
                Ok(())
            }
        }
    }

    /// Release tracking; what could not be attached.
    fn releases(&mut self) -> Vec<anyhow::Error> {
        let Self { ebpf, btf, .. } = self;
        match btf {
            None => failures(RELEASE_TRACEPOINTS.iter().map(|a| attach(ebpf, a))),
            Some(btf) => {
                let mut failed =
                    failures(RELEASE_FENTRY.iter().map(|a| attach_traced(ebpf, btf, a)));
                failed.extend(attach(ebpf, &EXIT_TRACEPOINT).err());
                failed
            }
        }
    }

    /// The open-times programs loaded but not attached (an [`OpenTimeSwitch`] attaches them);
    /// what could not be loaded.
    fn load_open_times(&mut self) -> Vec<anyhow::Error> {
        let Self { ebpf, btf, hooks } = self;
        match btf {
            Some(btf) if *hooks => {
                let traced = [&OPEN_TIME_FENTRY[..], &EVENT_FD_FENTRY].concat();
                let mut failed = failures(traced.iter().map(|a| load_traced(ebpf, btf, a)));
                failed.extend(load_hook(ebpf, btf, &OPEN_TIME_LSM).err());
                failed
            }
            None => failures(
                OPEN_TIME_TRACEPOINTS
                    .iter()
                    .map(|a| load(ebpf, a).map(drop)),
            ),
            Some(btf) => failures(OPEN_TIME_FENTRY.iter().map(|a| load_traced(ebpf, btf, a))),
        }
    }

    /// Open times; what could not be attached.
    fn open_times(&mut self) -> Vec<anyhow::Error> {
        let Self { ebpf, btf, hooks } = self;
        match btf {
            Some(btf) if *hooks => {
                let traced = [&OPEN_TIME_FENTRY[..], &EVENT_FD_FENTRY].concat();
                let mut failed = failures(traced.iter().map(|a| attach_traced(ebpf, btf, a)));
                failed.extend(attach_hook(ebpf, btf, &OPEN_TIME_LSM).err());
                failed
            }
            None => failures(OPEN_TIME_TRACEPOINTS.iter().map(|a| attach(ebpf, a))),
            Some(btf) => failures(OPEN_TIME_FENTRY.iter().map(|a| attach_traced(ebpf, btf, a))),
        }
    }
}

/// The errors among `results`.
fn failures(results: impl Iterator<Item = Result<()>>) -> Vec<anyhow::Error> {
    results.filter_map(Result::err).collect()
}

/// Loads one tracepoint program and attaches it to each of its tracepoints.
pub fn attach(ebpf: &mut Ebpf, a: &Attachment) -> Result<()> {
    let prog = load(ebpf, a)?;
    for name in a.names {
        prog.attach(a.category, name)
            .with_context(|| format!("attaching to tracepoint {}:{name}", a.category))?;
    }
    Ok(())
}

/// Loads one tracepoint program (once: a loaded one is left as it is).
fn load<'e>(ebpf: &'e mut Ebpf, a: &Attachment) -> Result<&'e mut TracePoint> {
    let prog = tracepoint(ebpf, a.program)?;
    if prog.fd().is_err() {
        prog.load().with_context(|| {
            format!(
                "loading {} (the verifier's log is above, if any)",
                a.program
            )
        })?;
    }
    Ok(prog)
}

/// The tracepoint program `name` of the object.
fn tracepoint<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut TracePoint> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program {name} is not a tracepoint"))
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aya_obj::{Object, ParseError, ProgramSection};

    use super::*;

    /// What an object check found wrong with one name.
    fn problems(object: &mut Object) -> Vec<String> {
        let mut problems = Vec::new();
        let mut program = |name: &str, kinds: &[&str], wanted: &str| match object
            .programs
            .get(name)
            .map(|p| section_kind(&p.section))
        {
            None => problems.push(format!("program {name} is missing")),
            Some(kind) if !kinds.contains(&kind) => {
                problems.push(format!("program {name} is a {kind} program, not {wanted}"))
            }
            Some(_) => {}
        };
        let tracepoints = [
            &UMOUNT_TRACEPOINTS[..],
            &RELEASE_TRACEPOINTS,
            &OPEN_TIME_TRACEPOINTS,
        ];
        for a in tracepoints.concat() {
            program(a.program, &["tracepoint"], "a tracepoint");
        }
        for a in [
            &UMOUNT_FENTRY[..],
            &RELEASE_FENTRY,
            &OPEN_TIME_FENTRY,
            &EVENT_FD_FENTRY,
        ]
        .concat()
        {
            program(a.program, &["fentry", "fexit"], "fentry/fexit");
        }
        for a in [UMOUNT_LSM, OPEN_TIME_LSM] {
            program(a.program, &["lsm"], "a BPF LSM program");
        }
        // The programs named elsewhere (the holder scan's iterators, doctor's probes).
        for name in programs::ALL {
            program(name, &ALL_KINDS, "a known kind");
        }
        for name in STREAM_MAPS.iter().chain(maps::ALL) {
            if !object.maps.contains_key(*name) {
                problems.push(format!("map {name} is missing"));
            }
        }
        for (name, size) in global_sizes() {
            // What `EbpfLoader::override_global(name, value, true)` does before a load.
            let value = vec![0u8; size];
            let one = HashMap::from([(name, (&value[..], true))]);
            match object.patch_map_data(one) {
                Ok(()) => {}
                Err(ParseError::SymbolNotFound { .. }) => {
                    problems.push(format!("global {name} is missing"))
                }
                Err(e) => problems.push(format!("global {name} ({size} bytes): {e}")),
            }
        }
        // A name both in a loader table and in a names list is reported once.
        let mut seen = std::collections::HashSet::new();
        problems.retain(|p| seen.insert(p.clone()));
        problems
    }

    /// The program kinds [`section_kind`] names.
    const ALL_KINDS: [&str; 7] = [
        "tracepoint",
        "fentry",
        "fexit",
        "iterator",
        "raw_tracepoint",
        "tp_btf",
        "lsm",
    ];

    fn section_kind(section: &ProgramSection) -> &'static str {
        match section {
            ProgramSection::TracePoint => "tracepoint",
            ProgramSection::FEntry { .. } => "fentry",
            ProgramSection::FExit { .. } => "fexit",
            ProgramSection::Iter { .. } => "iterator",
            ProgramSection::RawTracePoint => "raw_tracepoint",
            ProgramSection::BtfTracePoint => "tp_btf",
            ProgramSection::Lsm { .. } => "lsm",
            _ => "other",
        }
    }

    /// Every global user space may set, with the size of the value it writes: the offsets
    /// (`u32`, [`btf::GLOBALS`]) and [`globals::ALL`].
    fn global_sizes() -> Vec<(&'static str, usize)> {
        let mut sizes: Vec<_> = btf::GLOBALS
            .iter()
            .map(|(name, _)| (*name, size_of::<u32>()))
            .collect();
        for name in globals::ALL {
            let size = match *name {
                // as `load_object_with` writes them
                globals::FILTER_IS_ALLOW_LIST
                | globals::OPEN_TIMES_WHERE_CONTENDED
                | globals::FILE_OPEN_HOOKED => size_of::<u8>(),
                globals::BUSY_WINDOW_NS => size_of::<u64>(),
                other => panic!("no size known for global {other}: add it here"),
            };
            sizes.push((name, size));
        }
        sizes
    }

    /// A rename on either side is caught here, without root: the embedded object has every
    /// program (of the kind the loader attaches it as), map and global that user space names.
    #[test]
    fn the_embedded_object_has_everything_user_space_names() {
        let mut object = Object::parse(EBPF_OBJECT).expect("the embedded eBPF object parses");
        let problems = problems(&mut object);
        assert!(
            problems.is_empty(),
            "the embedded eBPF object does not match the names user space uses \
             (probe_common::names):\n{}",
            problems.join("\n")
        );
    }
}
