//! Prometheus metrics of the event stream (`busyprobe agent`): a [`Sink`] that counts what
//! goes through it into a `prometheus-client` registry, which [`http`] serves as the
//! Prometheus text format (0.0.4). Every label value is bounded: results are errno names,
//! holder kinds and drop causes are fixed lists; no path, pid or mount id is ever a label.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `busyprobe_unmount_attempts_total` | counter | `result`: `ok` or the errno name (`EBUSY`, `EINVAL`, ...) |
//! | `busyprobe_busy_unmounts_by_holder_kind_total` | counter | `kind`: a holder kind (`fd`, `cwd`, ..., `unknown`) or `attribution_error` |
//! | `busyprobe_busy_unmounts_by_holder_name_total` | counter | `comm`: a blamed holder's process name, for the first N names seen (`--metrics-holder-names`); `other` for the rest |
//! | `busyprobe_leaked_mounts` | gauge | none |
//! | `busyprobe_drops_total` | counter | `cause`: as the stats lines' `drops` |
//! | `busyprobe_undecodable_records_total` | counter | none |
//! | `busyprobe_attribution_latency_seconds` | histogram | none |
//! | `busyprobe_info` | gauge (info) | `version`, `probe_mode`, `kernel` |
//! | `busyprobe_recording_lines_lost_total` | counter | `cause`: the errno name of the failed write (`ENOSPC`, `EIO`, ...) |
//! | `busyprobe_clients` | gauge | none (with `--socket`) |
//! | `busyprobe_client_lines_lost_total` | counter | none (with `--socket`) |

pub mod http;

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::Arc,
    time::SystemTime,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::{
    event::{UmountAttempt, Warning},
    sink::{clients::ClientCounts, Sink},
    stats::Stats,
};

/// `busyprobe_unmount_attempts_total`'s label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// `ok` or the errno name.
    result: String,
}

/// `busyprobe_busy_unmounts_by_holder_kind_total`'s label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    /// A holder kind's name, or `attribution_error`.
    kind: &'static str,
}

/// `busyprobe_busy_unmounts_by_holder_name_total`'s label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    /// A holder's process name, or `other`.
    comm: String,
}

/// The label value of the holder names past the first N.
const OTHER_NAMES: &str = "other";

/// `busyprobe_drops_total`'s label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    /// A drop cause's name.
    cause: &'static str,
}

/// `busyprobe_recording_lines_lost_total`'s label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrnoLabel {
    /// The errno name of the failed write.
    cause: String,
}

/// `busyprobe_recording_lines_lost_total`, which the recording counts into as it loses lines
/// (the metrics sink itself only serves it).
#[derive(Clone, Debug, Default)]
pub struct LinesLost(Family<ErrnoLabel, Counter>);

impl LinesLost {
    /// One line lost because of `cause`.
    pub fn add(&self, cause: &str) {
        self.0
            .get_or_create(&ErrnoLabel {
                cause: cause.to_owned(),
            })
            .inc();
    }
}

/// `busyprobe_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    probe_mode: String,
    kernel: String,
}

/// What `busyprobe_info` says.
#[derive(Clone, Debug)]
pub struct About {
    /// busyprobe's version.
    pub version: String,
    /// The probes' mode (`fentry`, `tracepoint`).
    pub probe_mode: String,
    /// The kernel release.
    pub kernel: String,
}

/// A mount known only by how its unmount was asked for: the caller's mount namespace and
/// the absolute target.
type MountKey = (u64, Vec<u8>);

/// The metrics sink. Build it with [`Metrics::new`], serve [`Metrics::registry`].
pub struct Metrics {
    registry: Arc<Registry>,
    attempts: Family<ResultLabel, Counter>,
    by_holder_kind: Family<KindLabel, Counter>,
    by_holder_name: Family<NameLabel, Counter>,
    /// The holder names that have a series of their own: at most `holder_names`.
    named: HashSet<String>,
    holder_names: usize,
    leaked: Gauge,
    drops: Family<CauseLabel, Counter>,
    undecodable: Counter,
    latency: Histogram,
    lines_lost: LinesLost,
    /// Mounts whose last unmount attempt failed with EBUSY, and that attempt's caller.
    busy: HashMap<MountKey, u32>,
    /// The totals of the last stats seen (the stats are totals; counters go up by deltas).
    last_stats: Stats,
    /// Whether a mount namespace still lives (read when a stats tick prunes `busy`).
    namespaces: Namespaces,
}

/// How the metrics learn whether a mount namespace still lives (tests give their own).
struct Namespaces {
    /// The mount namespace of a process, while it runs.
    of_pid: Box<dyn Fn(u32) -> Option<u64>>,
    /// Every mount namespace a process is in now: a walk of `/proc`.
    all: Box<dyn Fn() -> HashSet<u64>>,
}

impl Namespaces {
    /// This host's, from `/proc`.
    fn of_this_host() -> Self {
        use crate::state::process::{mntns_of, pids};
        Self {
            of_pid: Box::new(mntns_of),
            all: Box::new(|| pids().into_iter().filter_map(mntns_of).collect()),
        }
    }
}

/// Upper bounds of the latency histogram: 1 ms to about 33 s, doubling.
const LATENCY_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 16);

impl Metrics {
    /// The metrics of a stream of attempts; `busyprobe_info` says `about`; the first
    /// `holder_names` names of blamed holder processes get a series of their own.
    pub fn new(about: About, holder_names: usize) -> Self {
        Self::with_namespaces(about, holder_names, Namespaces::of_this_host())
    }

    /// [`Metrics::new`] learning which mount namespaces live from `namespaces` (tests).
    fn with_namespaces(about: About, holder_names: usize, namespaces: Namespaces) -> Self {
        let mut registry = Registry::default();
        let attempts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "busyprobe_unmount_attempts",
            "Unmount attempts (umount, umount2) seen, by result: ok, or the errno name",
            attempts.clone(),
        );
        let by_holder_kind = Family::<KindLabel, Counter>::default();
        registry.register(
            "busyprobe_busy_unmounts_by_holder_kind",
            "EBUSY unmount attempts by the kind of their blamed holders (an attempt with \
             holders of two kinds counts once under each; attribution_error: none could be \
             looked for)",
            by_holder_kind.clone(),
        );
        let by_holder_name = Family::<NameLabel, Counter>::default();
        registry.register(
            "busyprobe_busy_unmounts_by_holder_name",
            "EBUSY unmount attempts by the process names (comm) of their blamed holders: the \
             first N names seen have a series each (--metrics-holder-names), every later one \
             counts under other (an attempt held by two names counts under both)",
            by_holder_name.clone(),
        );
        let leaked = Gauge::default();
        registry.register(
            "busyprobe_leaked_mounts",
            "Mounts still mounted after their last unmount attempt failed with EBUSY (by the \
             caller's mount namespace and absolute target; a later unmount that works, or \
             finds no mount there, or the end of that namespace, takes one off)",
            leaked.clone(),
        );
        let drops = Family::<CauseLabel, Counter>::default();
        registry.register(
            "busyprobe_drops",
            "Losses counted by the probes, by cause, as in the stats lines: ringbuf_full and \
             inflight_map_full are events lost; path_truncated, path_unreadable and \
             release_path_cut are events kept with a path cut or missing",
            drops.clone(),
        );
        let undecodable = Counter::default();
        registry.register(
            "busyprobe_undecodable_records",
            "Ring-buffer records that could not be decoded",
            undecodable.clone(),
        );
        let (start, factor, count) = LATENCY_BUCKETS;
        let latency = Histogram::new(exponential_buckets(start, factor, count));
        registry.register_with_unit(
            "busyprobe_attribution_latency",
            "From an attributed (EBUSY) unmount call's entry to its line being handed to the \
             outputs, written to the recording first: the holder scan and the wait for \
             releases included",
            Unit::Seconds,
            latency.clone(),
        );
        let lines_lost = LinesLost::default();
        registry.register(
            "busyprobe_recording_lines_lost",
            "Lines the recording (-o) could not write, by the errno name of the failed write \
             (ENOSPC: the disk was full); the recording marks each gap with a \
             recording-lines-lost warning once it writes again",
            lines_lost.0.clone(),
        );
        registry.register(
            "busyprobe",
            "busyprobe's version, probe mode and kernel",
            Info::new(InfoLabels {
                version: about.version,
                probe_mode: about.probe_mode,
                kernel: about.kernel,
            }),
        );
        Self {
            registry: Arc::new(registry),
            attempts,
            by_holder_kind,
            by_holder_name,
            named: HashSet::new(),
            holder_names,
            leaked,
            drops,
            undecodable,
            latency,
            lines_lost,
            busy: HashMap::new(),
            last_stats: Stats::default(),
            namespaces,
        }
    }

    /// Also shows the live clients' counts (`agent --socket`). Call it before serving the
    /// registry.
    pub fn count_clients(&mut self, counts: &ClientCounts) {
        let registry = Arc::get_mut(&mut self.registry)
            .expect("the clients are counted before the registry is served");
        registry.register(
            "busyprobe_clients",
            "Live clients connected to the agent's socket",
            counts.connected.clone(),
        );
        registry.register(
            "busyprobe_client_lines_lost",
            "Lines of the stream not sent to a live client because it read too slowly (the \
             client is told how many in a lost line); the agent and the other clients do not \
             wait",
            counts.lines_lost.clone(),
        );
    }

    /// The registry to serve (it reads the same metrics this sink updates).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The lost-lines counter, for the recording to count into.
    pub fn lines_lost(&self) -> LinesLost {
        self.lines_lost.clone()
    }

    /// Counts `attempt` as seen at `now`.
    fn count(&mut self, attempt: &UmountAttempt, now: SystemTime) {
        let result = attempt.call.errno_name().unwrap_or_else(|| "ok".into());
        self.attempts.get_or_create(&ResultLabel { result }).inc();
        if let Some(Ok(found)) = &attempt.attribution {
            self.count_names(&found.blamed_process_names());
        }
        if let Some(attribution) = &attempt.attribution {
            let kinds: Vec<&'static str> = match attribution {
                Ok(found) => found
                    .blamed_kinds()
                    .into_iter()
                    .map(|k| k.as_str())
                    .collect(),
                Err(_) => vec!["attribution_error"],
            };
            for kind in kinds {
                self.by_holder_kind.get_or_create(&KindLabel { kind }).inc();
            }
            let waited = now.duration_since(attempt.ts).unwrap_or_default();
            self.latency.observe(waited.as_secs_f64());
        }
        self.track_busy(attempt);
    }

    /// Counts one EBUSY under each of `names` (its blamed holders' process names), each name
    /// past the first [`Metrics::holder_names`] under `other`, once however many fall there.
    fn count_names(&mut self, names: &[&[u8]]) {
        let mut labels: Vec<String> = names
            .iter()
            .map(|name| self.label_of(&String::from_utf8_lossy(name)))
            .collect();
        labels.sort_unstable();
        labels.dedup();
        for comm in labels {
            self.by_holder_name.get_or_create(&NameLabel { comm }).inc();
        }
    }

    /// `name`'s label: itself if it has a series or there is room for one, else `other`.
    fn label_of(&mut self, name: &str) -> String {
        if self.named.contains(name) {
            return name.to_owned();
        }
        if self.named.len() < self.holder_names {
            self.named.insert(name.to_owned());
            return name.to_owned();
        }
        OTHER_NAMES.to_owned()
    }

    /// Keeps [`Metrics::busy`] as the last attempt on each mount says: EBUSY adds it; success,
    /// EINVAL (not a mount point any more) or ENOENT (gone) removes it; other errors (EPERM,
    /// ...) say nothing about it.
    fn track_busy(&mut self, attempt: &UmountAttempt) {
        // An absolute target is its own absolute form: only a relative one whose caller's
        // working directory could not be read has none.
        let Some(target) = attempt.target_abs.clone() else {
            return;
        };
        let key = (attempt.call.mntns, target);
        let call = &attempt.call;
        if call.failed_with(libc::EBUSY) {
            self.busy.insert(key, call.pid);
        } else if !call.failed() || call.failed_with(libc::EINVAL) || call.failed_with(libc::ENOENT)
        {
            self.busy.remove(&key);
        }
        self.leaked.set(self.busy.len() as i64);
    }

    /// Brings the loss counters up to `stats` (totals since start) and forgets busy mounts
    /// whose mount namespace has ended (they went with it, no unmount call seen).
    fn take_stats(&mut self, stats: &Stats) {
        let before: HashMap<_, _> = self.last_stats.drops_by_cause().collect();
        for (cause, now) in stats.drops_by_cause() {
            let delta = now.saturating_sub(before.get(cause).copied().unwrap_or(0));
            if delta > 0 {
                self.drops
                    .get_or_create(&CauseLabel { cause })
                    .inc_by(delta);
            }
        }
        let undecodable = stats
            .decode_errors
            .saturating_sub(self.last_stats.decode_errors);
        self.undecodable.inc_by(undecodable);
        self.last_stats = stats.clone();
        self.forget_ended_namespaces();
    }

    /// Forgets the busy mounts whose mount namespace has ended (they went with it, no unmount
    /// call seen). A namespace whose last failing caller still runs in it lives: only the
    /// others are looked for, in one walk of `/proc` (none while every caller is there).
    fn forget_ended_namespaces(&mut self) {
        let of_pid = &self.namespaces.of_pid;
        let unsure: HashSet<u64> = self
            .busy
            .iter()
            .filter(|((ns, _), pid)| *ns != 0 && of_pid(**pid) != Some(*ns))
            .map(|((ns, _), _)| *ns)
            .collect();
        if unsure.is_empty() {
            return;
        }
        let live = (self.namespaces.all)();
        self.busy
            .retain(|(ns, _), _| !unsure.contains(ns) || live.contains(ns));
        self.leaked.set(self.busy.len() as i64);
    }
}

impl Sink for Metrics {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.count(attempt, SystemTime::now());
        Ok(())
    }

    fn warning(&mut self, _warning: &Warning) -> io::Result<()> {
        Ok(())
    }

    fn stats(&mut self, _ts: SystemTime, stats: &Stats, _last: bool) -> io::Result<()> {
        self.take_stats(stats);
        Ok(())
    }
}

/// The registry in the Prometheus text format (0.0.4).
pub fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .expect("writing into a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc, time::Duration};

    use super::*;
    use crate::{
        event::sample_attempt,
        model::{sample_attribution, sample_process_holder, Holder, HolderKind, Seen},
    };

    fn about() -> About {
        About {
            version: "0.1.0".into(),
            probe_mode: "fentry".into(),
            kernel: "6.18.0".into(),
        }
    }

    /// Metrics whose live namespaces are the shared set (no caller is ever found running).
    fn metrics(live: &Rc<RefCell<HashSet<u64>>>) -> Metrics {
        let live = live.clone();
        let namespaces = Namespaces {
            of_pid: Box::new(|_| None),
            all: Box::new(move || live.borrow().clone()),
        };
        Metrics::with_namespaces(about(), 2, namespaces)
    }

    fn attempt(target: &str, mntns: u64, ret: i64) -> UmountAttempt {
        let mut a = sample_attempt(target.as_bytes(), Some(target.as_bytes()), ret, 0);
        a.call.mntns = mntns;
        a
    }

    /// An EBUSY on `target` in `mntns`, attributed to `holders`.
    fn busy(target: &'static str, mntns: u64, holders: Vec<Holder>) -> UmountAttempt {
        let mut a = attempt(target, mntns, -16);
        a.attribution = Some(Ok(sample_attribution(target, holders)));
        a
    }

    fn fd_holder() -> Holder {
        sample_process_holder(HolderKind::Fd, 812, 777, b"sleep", Some(1))
    }

    /// The exposition's sample lines (no comments), for assertions on whole lines.
    fn samples(m: &Metrics) -> Vec<String> {
        exposition(&m.registry())
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    }

    /// Fails unless every one of `lines` is a whole line of `text`.
    fn assert_lines(text: &[String], lines: &[&str]) {
        for line in lines {
            assert!(
                text.iter().any(|l| l == line),
                "{line} in\n{}",
                text.join("\n")
            );
        }
    }

    fn has(m: &Metrics, line: &str) -> bool {
        samples(m).iter().any(|l| l == line)
    }

    #[test]
    fn lines_the_recording_lost_are_counted_by_cause() {
        let m = metrics(&Rc::default());
        let lost = m.lines_lost();
        lost.add("ENOSPC");
        lost.add("ENOSPC");
        lost.add("EIO");
        assert_lines(
            &samples(&m),
            &[
                r#"busyprobe_recording_lines_lost_total{cause="ENOSPC"} 2"#,
                r#"busyprobe_recording_lines_lost_total{cause="EIO"} 1"#,
            ],
        );
    }

    #[test]
    fn counts_attempts_by_result_and_failures_by_holder_kind() {
        let live = Rc::new(RefCell::new(HashSet::from([7])));
        let mut m = metrics(&live);
        let mut cwd = fd_holder();
        cwd.kind = HolderKind::Cwd;
        let mut copy = fd_holder();
        copy.kind = HolderKind::MountCopy;
        copy.blamed = false;
        m.umount(&busy("/mnt/a", 7, vec![fd_holder(), fd_holder(), cwd]))
            .unwrap();
        m.umount(&busy("/mnt/a", 7, vec![fd_holder(), copy]))
            .unwrap();
        let mut lost = attempt("/mnt/b", 7, -16);
        lost.attribution = Some(Err("the caller's namespace was gone".into()));
        m.umount(&lost).unwrap();
        m.umount(&attempt("/mnt/c", 7, -22)).unwrap();
        m.umount(&attempt("/mnt/a", 7, 0)).unwrap();
        let text = samples(&m);
        assert_lines(
            &text,
            &[
                r#"busyprobe_unmount_attempts_total{result="EBUSY"} 3"#,
                r#"busyprobe_unmount_attempts_total{result="EINVAL"} 1"#,
                r#"busyprobe_unmount_attempts_total{result="ok"} 1"#,
                // Two fd holders of one attempt count it once; a copy not blamed, never.
                r#"busyprobe_busy_unmounts_by_holder_kind_total{kind="fd"} 2"#,
                r#"busyprobe_busy_unmounts_by_holder_kind_total{kind="cwd"} 1"#,
                r#"busyprobe_busy_unmounts_by_holder_kind_total{kind="attribution_error"} 1"#,
                "busyprobe_attribution_latency_seconds_count 3",
                r#"busyprobe_info{version="0.1.0",probe_mode="fentry",kernel="6.18.0"} 1"#,
            ],
        );
        assert!(
            !text.iter().any(|l| l.contains("mount-copy")),
            "{}",
            text.join("\n")
        );
        assert!(
            !text.iter().any(|l| l.contains("/mnt")),
            "no paths as labels"
        );
    }

    #[test]
    fn the_first_names_of_blamed_holders_have_a_series_and_the_rest_count_as_other() {
        let live = Rc::new(RefCell::new(HashSet::from([7])));
        // Room for two names.
        let mut m = metrics(&live);
        let holder = |comm: &[u8], blamed: bool| {
            let mut h = sample_process_holder(HolderKind::Fd, 812, 777, comm, Some(1));
            h.blamed = blamed;
            h
        };
        m.umount(&busy(
            "/mnt/a",
            7,
            vec![holder(b"scanner", true), holder(b"scanner", true)],
        ))
        .unwrap();
        // A holder not blamed is no reason.
        m.umount(&busy(
            "/mnt/a",
            7,
            vec![holder(b"cat", false), holder(b"scanner", true)],
        ))
        .unwrap();
        m.umount(&busy("/mnt/a", 7, vec![holder(b"containerd\xff", true)]))
            .unwrap();
        // Two names past the first two: `other`, once for the attempt.
        m.umount(&busy(
            "/mnt/a",
            7,
            vec![holder(b"falco", true), holder(b"sh", true)],
        ))
        .unwrap();
        m.umount(&busy(
            "/mnt/a",
            7,
            vec![holder(b"scanner", true), holder(b"sh", true)],
        ))
        .unwrap();
        let text = samples(&m);
        assert_lines(
            &text,
            &[
                r#"busyprobe_busy_unmounts_by_holder_name_total{comm="scanner"} 3"#,
                "busyprobe_busy_unmounts_by_holder_name_total{comm=\"containerd\u{fffd}\"} 1",
                r#"busyprobe_busy_unmounts_by_holder_name_total{comm="other"} 2"#,
            ],
        );
        let series = text
            .iter()
            .filter(|l| l.starts_with("busyprobe_busy_unmounts_by_holder_name_total"))
            .count();
        assert_eq!(series, 3, "{}", text.join("\n"));
    }

    #[test]
    fn a_mount_is_leaked_from_its_ebusy_until_it_is_unmounted() {
        let live = Rc::new(RefCell::new(HashSet::from([7, 8])));
        let mut m = metrics(&live);
        assert!(has(&m, "busyprobe_leaked_mounts 0"));
        m.umount(&busy("/mnt/a", 7, vec![fd_holder()])).unwrap();
        m.umount(&busy("/mnt/a", 7, vec![fd_holder()])).unwrap();
        // The same path in another namespace is another mount.
        m.umount(&busy("/mnt/a", 8, vec![fd_holder()])).unwrap();
        m.umount(&busy("/mnt/b", 8, vec![fd_holder()])).unwrap();
        assert!(has(&m, "busyprobe_leaked_mounts 3"), "{:?}", samples(&m));
        // EPERM says nothing about the mount; success and EINVAL take it off.
        m.umount(&attempt("/mnt/a", 7, -1)).unwrap();
        assert!(has(&m, "busyprobe_leaked_mounts 3"));
        m.umount(&attempt("/mnt/a", 7, 0)).unwrap();
        assert!(has(&m, "busyprobe_leaked_mounts 2"));
        m.umount(&attempt("/mnt/b", 8, -22)).unwrap();
        assert!(has(&m, "busyprobe_leaked_mounts 1"));
        // Namespace 8 ends: its mount went with it, seen at the next stats tick.
        live.borrow_mut().remove(&8);
        m.stats(SystemTime::now(), &Stats::default(), false)
            .unwrap();
        assert!(has(&m, "busyprobe_leaked_mounts 0"), "{:?}", samples(&m));
    }

    #[test]
    fn a_namespace_whose_caller_still_runs_in_it_is_alive_without_a_walk() {
        let walks = Rc::new(std::cell::Cell::new(0));
        let counted = walks.clone();
        // The callers' pid (1234) runs in namespace 7; namespace 8 lives too.
        let namespaces = Namespaces {
            of_pid: Box::new(|pid| (pid == 1234).then_some(7)),
            all: Box::new(move || {
                counted.set(counted.get() + 1);
                HashSet::from([7, 8])
            }),
        };
        let mut m = Metrics::with_namespaces(about(), 2, namespaces);
        m.umount(&busy("/mnt/a", 7, vec![fd_holder()])).unwrap();
        m.stats(SystemTime::now(), &Stats::default(), false)
            .unwrap();
        assert_eq!(walks.get(), 0, "the caller is in 7: no walk");
        assert!(has(&m, "busyprobe_leaked_mounts 1"));
        // Its caller is not in 8 (any more): one walk, which finds 8 alive.
        m.umount(&busy("/mnt/a", 8, vec![fd_holder()])).unwrap();
        m.stats(SystemTime::now(), &Stats::default(), false)
            .unwrap();
        assert_eq!(walks.get(), 1);
        assert!(has(&m, "busyprobe_leaked_mounts 2"));
    }

    #[test]
    fn drops_follow_the_stats_totals() {
        let live = Rc::default();
        let mut m = metrics(&live);
        let mut stats = Stats {
            events: 10,
            drops: [2, 0, 1, 0, 0],
            decode_errors: 1,
        };
        m.stats(SystemTime::now(), &stats, false).unwrap();
        stats.drops = [5, 0, 1, 0, 3];
        stats.decode_errors = 4;
        m.stats(SystemTime::now(), &stats, true).unwrap();
        let text = samples(&m);
        assert_lines(
            &text,
            &[
                r#"busyprobe_drops_total{cause="ringbuf_full"} 5"#,
                r#"busyprobe_drops_total{cause="path_truncated"} 1"#,
                r#"busyprobe_drops_total{cause="release_path_cut"} 3"#,
                "busyprobe_undecodable_records_total 4",
            ],
        );
    }

    #[test]
    fn latency_runs_from_the_call_to_the_sink() {
        let live = Rc::default();
        let mut m = metrics(&live);
        let a = busy(
            "/mnt/a",
            7,
            vec![Holder::new(HolderKind::Unknown, 812, Seen::MountTable)],
        );
        m.count(&a, a.ts + Duration::from_millis(300));
        let text = samples(&m);
        assert_lines(
            &text,
            &[
                r#"busyprobe_attribution_latency_seconds_bucket{le="0.256"} 0"#,
                r#"busyprobe_attribution_latency_seconds_bucket{le="0.512"} 1"#,
                "busyprobe_attribution_latency_seconds_sum 0.3",
                r#"busyprobe_busy_unmounts_by_holder_kind_total{kind="unknown"} 1"#,
            ],
        );
    }

    #[test]
    fn the_exposition_is_prometheus_text_with_help_and_types() {
        let live = Rc::default();
        let mut m = metrics(&live);
        m.umount(&busy("/mnt/a", 7, vec![fd_holder()])).unwrap();
        let text = exposition(&m.registry());
        for line in [
            "# TYPE busyprobe_unmount_attempts_total counter",
            "# TYPE busyprobe_leaked_mounts gauge",
            "# TYPE busyprobe_attribution_latency_seconds histogram",
            "# TYPE busyprobe_info gauge",
            "# UNIT busyprobe_attribution_latency_seconds seconds",
        ] {
            let present = text.lines().any(|l| l == line);
            // OpenMetrics' UNIT line has no place in the 0.0.4 text format.
            assert_eq!(present, !line.starts_with("# UNIT"), "{line} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }
}
