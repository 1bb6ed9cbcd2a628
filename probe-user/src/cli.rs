//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::loader::{ModeChoice, OpenTimes};

/// `busyprobe --version`: the crate version plus the embedded probe object's identity.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (probe object: ",
    env!("BUSYPROBE_EBPF_PROFILE"),
    " build, ",
    env!("BUSYPROBE_EBPF_BYTES"),
    " bytes, sha256 ",
    env!("BUSYPROBE_EBPF_SHA256"),
    ")"
);

/// Who is holding the mount that umount says is busy?
///
/// busyprobe traces every unmount attempt on this host with eBPF and reports who made it and
/// what the kernel answered. Run `busyprobe doctor` first to see what this kernel supports,
/// and `busyprobe demo` to see it explain a real failure. Without a subcommand it runs `top`
/// on a terminal and `watch` when its output is piped.
#[derive(Parser, Debug)]
#[command(name = "busyprobe", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// More diagnostics on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// A small incident built for real and explained live: the first thing to run (needs root).
    ///
    /// In a private mount namespace under a temporary directory: a tmpfs, a process holding a
    /// file on it, a "scanner" that opens a file for a moment, and an unmounter that retries
    /// the way container runtimes do. `busyprobe watch` runs alongside and names every holder.
    /// Everything is cleaned up at the end.
    Demo,
    /// Stream every unmount attempt on this host, one line each (needs root).
    ///
    /// Human-readable by default; `--json` prints JSON Lines (schema v1, see
    /// docs/json-schema.md): one `umount` object per attempt and periodic `stats` objects
    /// with the counts of lost events. Stops on Ctrl-C or SIGTERM.
    Watch(WatchArgs),
    /// A live full-screen view of the incidents (failed unmounts of one target up to the one
    /// that worked) and who held each (needs root and a terminal).
    ///
    /// One row per incident: failing, unmounted, or gave up (still mounted); its failures,
    /// first and last; the target; its main holder (kind, process, pod, file) and how many
    /// more. The header shows failures per second over the last minutes, mounts still mounted
    /// after failing, and events lost, by cause. Enter opens an incident (its holders with
    /// how many attempts named each, the retry timeline, the mount); `s` sorts by last
    /// failure, failures or target; `y` copies its `busyprobe who` command and `Y` its JSON
    /// to the terminal's clipboard (OSC 52); `r` writes its Markdown report (as `busyprobe
    /// report`) to ./busyprobe-incident-ID.md. `a` (or Tab) switches to every unmount attempt,
    /// newest first, failures in red, where Enter opens the details (the mount, each holder,
    /// and how long before or after the failure a transient holder had the file open) and
    /// `f` shows failures only. `/` filters by command or path, `p` pauses, `?` lists the
    /// keys, `q` quits. Plain `busyprobe` on a terminal runs this.
    Top(TopArgs),
    /// The `top` view over a recording (no root, no probes): rotated files oldest first, the
    /// recording's host, kernel and probe mode in the header, incidents by the recording's
    /// time. Malformed lines are skipped and listed once the screen closes. A big recording
    /// (a gigabyte reads in about two seconds) shows its progress on stderr until the screen
    /// opens.
    Replay(ReplayArgs),
    /// Record every unmount attempt to a file, headless, for a node that fails now and then.
    ///
    /// JSON Lines (schema v1): a `header` line first in every file (version, host, kernel,
    /// probe mode, start), then every event and periodic `stats` lines. Mode 0600, written
    /// a whole line at a time, synced to disk at most every `--fsync` (a power cut loses
    /// about that much), rotated by size. A full disk (or another write error) loses lines,
    /// not the recorder: they are counted, said once on stderr, and marked in the file by a
    /// `recording-lines-lost` warning once it writes again. SIGINT/SIGTERM finish the current
    /// line and exit 0.
    Record(RecordArgs),
    /// The node daemon: one set of probes for the whole node, recording, Prometheus metrics
    /// and live clients, until SIGTERM (needs root; `dist/busyprobe-agent.service` runs it).
    ///
    /// Each part can be turned off. Recording: with `-o FILE`, exactly what `record -o FILE`
    /// writes (the same header, rotation, mode 0600); without it, nothing is written to disk.
    /// Metrics: Prometheus text on `http://ADDR/metrics` (`--metrics`, loopback port 10057 by
    /// default; `--no-metrics` serves none): unmount attempts by result, failures by holder
    /// kind and name, mounts still mounted after their last unmount failed, drops by cause,
    /// attribution latency, and the version and probe mode (README, "Metrics"). Live clients:
    /// every connection to the Unix socket (`--socket`, `/run/busyprobe/agent.sock` by
    /// default, root's unless `--socket-group`; `--no-socket` serves none) gets the
    /// recording's lines from a `header` line on; `busyprobe watch --connect` and `busyprobe
    /// top --connect` show them without probes of their own; a client that reads too slowly
    /// loses lines and is told how many, and never slows the agent. Under systemd
    /// (`Type=notify`) it reports ready once the probes are attached. A port in use, a socket
    /// that cannot be served or a recording that cannot be created is an error before
    /// anything is started; a recording that cannot write later (a full disk) loses lines,
    /// counted in the metrics and marked in the file, and stops nothing. `--path` scopes every
    /// part; `--only-failed` the recording only (the metrics count every attempt: a
    /// successful unmount is what clears the leaked-mount gauge).
    Agent(AgentArgs),
    /// Who holds this mount right now, in every mount and PID namespace (a better `fuser -vm`).
    ///
    /// Finds open files, working directories, roots, executables, memory mappings,
    /// submounts, copies of the mount in other mount namespaces that would make an unmount
    /// fail, loop devices, swap files and fanotify listeners whose marks cover it. Loads no
    /// probes: works where eBPF is unavailable; without root, most processes cannot be
    /// inspected (they are counted).
    ///
    /// Exit status: 0 when something holds the mount, 1 when nothing does, 2 on error (a reader
    /// that stops early, as `| head -1` does, is not an error).
    Who(WhoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// For example: `busyprobe completions bash > /etc/bash_completion.d/busyprobe`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `busyprobe man | man -l -`.
    Man,
    /// The demo's incident (internal).
    #[command(name = "__demo-incident", hide = true)]
    DemoIncident {
        /// The temporary directory to build it in.
        dir: PathBuf,
    },
    /// One of the demo's helper processes (internal): `hold` keeps FILE open until killed,
    /// `scan` opens it for a moment.
    #[command(name = "__demo-helper", hide = true)]
    DemoHelper {
        /// `hold` or `scan`.
        role: String,
        /// The file.
        file: PathBuf,
    },
    /// A self-contained report of a recording, to paste into a bug report (no root needed).
    ///
    /// Host, kernel and probe mode; the counts (attempts, failures by errno, the mounts that
    /// failed most, the holders seen most); then each incident: consecutive failed attempts on
    /// one target up to the one that worked, with the mount, the holders and the retry
    /// timeline. Rotated files (FILE.1 ...) are read oldest first. Streams: any size, constant
    /// memory. A torn last line or a malformed line is skipped and said on stderr. Written to a
    /// file or a pipe, the report shows the progress of its two passes on stderr.
    Report(ReportArgs),
    /// Report what this kernel offers and which mode busyprobe will use.
    ///
    /// Checks the kernel version, BTF, tracefs, privileges, and loads a tiny program of each
    /// probe kind to see whether the kernel really accepts it. Without root it says what it
    /// could not check.
    Doctor(DoctorArgs),
}

/// Options of `busyprobe watch`.
#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Print JSON Lines (schema v1) instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
    /// Show the stream of a running `busyprobe agent` from its socket instead of loading
    /// probes (needs no CAP_BPF: root, or the agent's `--socket-group`). PATH defaults to
    /// the agent's default socket. `--only-failed` still applies; the options that choose
    /// what the probes do are the agent's.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = DEFAULT_SOCKET,
          conflicts_with_all = CONNECT_CONFLICTS)]
    pub connect: Option<PathBuf>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// Options of `busyprobe top`.
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// Most events kept on screen, and most incidents (the oldest go first), so memory stays
    /// flat.
    #[arg(long, value_name = "N", default_value_t = KEEP_ON_SCREEN)]
    pub keep: usize,
    /// Show the stream of a running `busyprobe agent` from its socket instead of loading
    /// probes (needs no CAP_BPF: root, or the agent's `--socket-group`). PATH defaults to
    /// the agent's default socket (`f` shows failures only).
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = DEFAULT_SOCKET,
          conflicts_with_all = CONNECT_CONFLICTS, conflicts_with = "only_failed")]
    pub connect: Option<PathBuf>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// What the probes are told, which a client of the agent (`--connect`) cannot choose.
const CONNECT_CONFLICTS: [&str; 7] = [
    "path",
    "cri_socket",
    "ring_buffer_size",
    "no_holders",
    "open_times",
    "no_open_times",
    "stats_interval",
];

/// `top --keep` and `replay --keep` by default.
pub const KEEP_ON_SCREEN: usize = 10_000;

/// Options of `busyprobe replay`.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The recording(s): each with its rotated predecessors. `-` reads a live stream of JSON
    /// Lines on stdin, for example another node's: `ssh node busyprobe watch --json |
    /// busyprobe replay -` (keys then come from the terminal).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Most events kept on screen, and most incidents (the newest are kept).
    #[arg(long, value_name = "N", default_value_t = KEEP_ON_SCREEN)]
    pub keep: usize,
}

/// What every event stream (`watch`, `record`) can be told.
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// Show only unmounts that failed.
    #[arg(long)]
    pub only_failed: bool,
    /// Show only unmounts whose absolute target is PREFIX or below it (and track only mounts
    /// under it; a new mount is then tracked once the mount tables show it, within a second).
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<PathBuf>,
    /// Seconds between `stats` lines (counts of events and drops); 0 prints one only at exit.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stats_interval: u64,
    /// Size of the kernel → user-space ring buffer in bytes (a power of two, at least one
    /// page). Smaller loses events sooner under bursts; every loss is counted.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,
    /// Do not look for the holders of a busy mount (no `holders` on EBUSY events, no
    /// release tracking): the lightest mode.
    #[arg(long)]
    pub no_holders: bool,
    /// Where the open probes note when each file is opened, which tells a holder that opened
    /// its file after the failing call (not a holder then) and says "opened N ms before the
    /// call": `all` tracked mounts, all the time (the default of `watch`, `top` and `record`:
    /// exact from a mount's first failure, but every open on the node costs 0.2-1 µs more);
    /// `contended`, only mounts whose unmount failed with EBUSY, from that failure until the
    /// mount is gone or has not failed for 10 minutes (the agent's default: the open probes
    /// are attached only while such a mount exists, so a node with none pays close to `off`;
    /// a mount's first failure has no open times, its retries have them); `off`, never.
    #[arg(long, value_enum, value_name = "WHERE")]
    pub open_times: Option<OpenTimes>,
    /// `--open-times off`.
    #[arg(long, conflicts_with = "open_times")]
    pub no_open_times: bool,
    /// How the probes hook the kernel: `fentry` (BPF trampolines on the syscall wrappers:
    /// only traced calls pay), `tracepoint` (syscall tracepoints: every kernel has them, but
    /// they slow every syscall of every task a little), or `auto`: fentry where the kernel
    /// allows it, else tracepoints, saying why.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto, env = "BUSYPROBE_MODE")]
    pub mode: ModeChoice,
    /// The container runtime's CRI socket, asked for the Kubernetes names (pod, namespace,
    /// container, image) of the containers that callers and holders run in. By default
    /// busyprobe finds it: containerd's `/run/containerd/containerd.sock`, k3s/RKE2's
    /// `/run/k3s/containerd/containerd.sock`, CRI-O's `/var/run/crio/crio.sock`,
    /// cri-dockerd's `/run/cri-dockerd.sock`, and the `-address` of a holder's own containerd
    /// shim. `none` asks no runtime (container ids from cgroups only). A runtime that cannot
    /// be asked gets one notice, and busyprobe goes on with container ids.
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<PathBuf>,
}

impl Default for StreamArgs {
    fn default() -> Self {
        Self {
            only_failed: false,
            path: None,
            stats_interval: 10,
            ring_buffer_size: 4 << 20,
            no_holders: false,
            open_times: None,
            no_open_times: false,
            mode: ModeChoice::Auto,
            cri_socket: None,
        }
    }
}

impl StreamArgs {
    /// Where opens are timed: as asked, else the command's `default`.
    pub fn open_times(&self, default: OpenTimes) -> OpenTimes {
        if self.no_open_times {
            return OpenTimes::Off;
        }
        self.open_times.unwrap_or(default)
    }
}

/// How a recording rotates and reaches the disk (`record` and `agent`).
#[derive(Args, Debug, Clone)]
pub struct RotationArgs {
    /// Start a new file when the current one reaches SIZE (`100M`, `512K`, `1G`): FILE.1 is
    /// the newest old one.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub rotate: Option<u64>,
    /// Old files to keep when rotating (FILE.1 .. FILE.N). With 0 none is kept, and an
    /// existing FILE is refused rather than deleted.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub keep: usize,
    /// Sync the recording to disk (fdatasync) at most every INTERVAL while lines are written
    /// (`1s`, `500ms`, `10s`), the last ones within about INTERVAL even when no more come: a
    /// power cut loses at most about the last INTERVAL of lines. `0` syncs after every line;
    /// `off` never syncs on a timer (the kernel writes lines back when it chooses, typically
    /// within 30 s). Rotation and exit always sync.
    #[arg(long, value_name = "INTERVAL", default_value = "1s", value_parser = parse_fsync)]
    pub fsync: Fsync,
}

/// `--fsync`: at most every this long, or `None` for `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fsync(pub Option<std::time::Duration>);

/// `1s`, `500ms`, `0` (humantime) or `off`.
fn parse_fsync(s: &str) -> Result<Fsync, String> {
    if s.trim() == "off" {
        return Ok(Fsync(None));
    }
    if s.trim() == "0" {
        return Ok(Fsync(Some(std::time::Duration::ZERO)));
    }
    humantime::parse_duration(s)
        .map(|d| Fsync(Some(d)))
        .map_err(|e| format!("{s:?}: {e} (an interval like 1s or 500ms, 0, or off)"))
}

/// Options of `busyprobe record`.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// The recording (JSON Lines, mode 0600). An existing one is rotated away first.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub rotation: RotationArgs,
    /// Stop after this long (`30m`, `2h`, `90s`).
    #[arg(long, value_name = "D")]
    pub duration: Option<humantime::Duration>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// The address `agent --metrics` listens on by default: loopback only, port 10057 (the
/// Prometheus exporters' range 9100-9999 is full; README, "Metrics").
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:10057";

/// The socket `agent --socket` serves and `watch --connect` and `top --connect` read by
/// default (its directory is systemd's `RuntimeDirectory=busyprobe`; the agent creates it
/// when missing, for this default only).
pub const DEFAULT_SOCKET: &str = "/run/busyprobe/agent.sock";

/// Options of `busyprobe agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Record to FILE as `record -o FILE` does (JSON Lines, mode 0600; an existing one is
    /// rotated away first). Without it the agent records nothing.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub rotation: RotationArgs,
    /// Serve Prometheus metrics on ADDR (`IP:PORT`) at `/metrics`. Keep it on loopback
    /// unless the node's firewall is meant to let scrapers in: the metrics name no paths, but
    /// they show what fails on the node.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics: std::net::SocketAddr,
    /// Serve no metrics.
    #[arg(long, conflicts_with = "metrics")]
    pub no_metrics: bool,
    /// The first N process names of blamed holders get a series of their own in
    /// `busyprobe_busy_unmounts_by_holder_name_total`; every later name counts under `other`
    /// (label values stay bounded; 0 counts every name as `other`).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        conflicts_with = "no_metrics"
    )]
    pub metrics_holder_names: usize,
    /// Serve the live stream on the Unix socket PATH: every client gets the JSON Lines a
    /// recording holds, from a `header` line on (`busyprobe watch --connect PATH`, `busyprobe
    /// top --connect PATH`, or any reader such as `socat - UNIX-CONNECT:PATH`). Mode 0600 (root
    /// only) unless `--socket-group` is given. A client that reads too slowly loses lines (a
    /// `lost` line says how many); the agent never waits for one. The directory must exist,
    /// but for the default's (`/run/busyprobe`, created mode 0755 when missing).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Let the members of GROUP connect to the socket too (mode 0660, group GROUP).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Serve no live clients.
    #[arg(long, conflicts_with_all = ["socket", "socket_group"])]
    pub no_socket: bool,
    // `--only-failed` applies to the recording only: the metrics count every attempt (the
    // successful unmounts are what clears the leaked-mount gauge). `--path` applies to both.
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// Options of `busyprobe report`.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// The recording(s): each with its rotated predecessors.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Only the incident that contains attempt ID (the `id` of an `umount` line).
    #[arg(long, value_name = "ID")]
    pub event: Option<u64>,
    /// `markdown` (default) or `json` (one object with the same content).
    #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
    pub format: ReportFormat,
}

/// `report --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// GitHub-flavoured Markdown.
    Markdown,
    /// One JSON object.
    Json,
}

/// Options of `busyprobe who`.
#[derive(Args, Debug, Clone)]
pub struct WhoArgs {
    /// A mount point (or any path: the mount it is on is examined, and said).
    #[arg(required_unless_present = "pod", conflicts_with = "pod")]
    pub path: Option<PathBuf>,
    /// Instead of a path, every mount of a Kubernetes pod: its volumes under
    /// `KUBELET_ROOT/pods/UID/` and what holds each, the answer to a pod stuck in
    /// Terminating. POD is the pod's UID, or `NAMESPACE/NAME` when the container runtime
    /// (see `--cri-socket`) still knows the pod. Exit status 0 when anything holds one of them.
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// The kubelet's root directory (its `--root-dir`), for `--pod`.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_root: PathBuf,
    /// Print JSON (`"type":"who"`) instead of a table: one object, or one line per mount with
    /// `--pod`.
    #[arg(long)]
    pub json: bool,
    /// How to find holders among processes: `kernel` (BPF iterators: exact, fast, sees
    /// fanotify queues; needs root), `proc` (a /proc walk; works without eBPF), or `auto`
    /// (kernel when it loads, else proc).
    #[arg(long, value_enum, default_value_t = ScanChoice::Auto)]
    pub scan: ScanChoice,
    /// The container runtime's CRI socket, asked for the Kubernetes names (pod, namespace,
    /// container, image) of the containers that callers and holders run in. By default
    /// busyprobe finds it: containerd's `/run/containerd/containerd.sock`, k3s/RKE2's
    /// `/run/k3s/containerd/containerd.sock`, CRI-O's `/var/run/crio/crio.sock`,
    /// cri-dockerd's `/run/cri-dockerd.sock`, and the `-address` of a holder's own containerd
    /// shim. `none` asks no runtime (container ids from cgroups only). A runtime that cannot
    /// be asked gets one notice, and busyprobe goes on with container ids.
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<PathBuf>,
}

/// `--scan`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanChoice {
    /// The kernel scan when it loads, else /proc.
    Auto,
    /// BPF iterators only (error if they cannot load).
    Kernel,
    /// A /proc walk only.
    Proc,
}

/// Options of `busyprobe doctor` (none yet).
#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {}

/// `100M`, `512K`, `1G`, `4096` (binary units, an optional `i`/`B`) → bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['B', 'b']).trim_end_matches('i');
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 100M"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let size: u32 = s.parse().map_err(|e| format!("{e}"))?;
    let page = 4096;
    if size < page || !size.is_power_of_two() {
        return Err(format!(
            "{size} is not a power of two of at least {page} bytes"
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ring_size_must_be_a_power_of_two_page_multiple() {
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("8388608"), Ok(8 << 20));
        assert!(parse_ring_size("4095").is_err());
        assert!(parse_ring_size("6144").is_err());
        assert!(parse_ring_size("2048").is_err());
        assert!(parse_ring_size("x").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2mb"), Ok(2 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("10T").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn record_flags_parse() {
        let cli = Cli::try_parse_from([
            "busyprobe",
            "record",
            "-o",
            "/var/log/b.jsonl",
            "--rotate",
            "100M",
            "--keep",
            "3",
            "--duration",
            "30m",
            "--only-failed",
        ])
        .unwrap();
        let Some(Command::Record(r)) = cli.command else {
            panic!("not record")
        };
        assert_eq!(r.rotation.rotate, Some(100 << 20));
        assert_eq!(r.rotation.keep, 3);
        assert_eq!(
            r.rotation.fsync,
            Fsync(Some(std::time::Duration::from_secs(1))),
            "the default"
        );
        assert_eq!(*r.duration.unwrap(), std::time::Duration::from_secs(1800));
        assert!(r.stream.only_failed);
    }

    #[test]
    fn watch_flags_parse() {
        let cli = Cli::try_parse_from([
            "busyprobe",
            "watch",
            "--json",
            "--only-failed",
            "--path",
            "/var/lib",
        ])
        .unwrap();
        let Some(Command::Watch(w)) = cli.command else {
            panic!("not watch")
        };
        assert!(w.json && w.stream.only_failed);
        assert_eq!(
            w.stream.path.as_deref(),
            Some(std::path::Path::new("/var/lib"))
        );
        assert_eq!(w.stream.ring_buffer_size, 4 << 20);
    }

    #[test]
    fn fsync_takes_an_interval_0_or_off() {
        let ms = |n| Ok(Fsync(Some(std::time::Duration::from_millis(n))));
        assert_eq!(parse_fsync("1s"), ms(1000));
        assert_eq!(parse_fsync("250ms"), ms(250));
        assert_eq!(parse_fsync("0"), ms(0));
        assert_eq!(parse_fsync("off"), Ok(Fsync(None)));
        assert!(parse_fsync("sometimes").is_err());
        let cli =
            Cli::try_parse_from(["busyprobe", "agent", "-o", "/r", "--fsync", "off"]).unwrap();
        let Some(Command::Agent(a)) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(a.rotation.fsync, Fsync(None));
    }
}
