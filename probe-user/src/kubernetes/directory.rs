//! The pod directory: container id → [`PodNames`], cached from the runtimes' CRI listings.
//!
//! - A lookup that misses asks the runtimes again (one listing serves every id a pass
//!   needs; a listing started by [`PodDirectory::prefetch`] as the pass began counts), so a
//!   container that started since the last listing is named; ids that a fresh listing did not
//!   name are not asked about again for [`UNKNOWN_FOR`].
//! - Containers that disappear from the listings are remembered for [`REMEMBER_GONE`]: an
//!   EBUSY often comes right after the container was deleted, exactly when a teardown fails.
//! - [`PodDirectory::cached`] never asks the runtime: the hot path of successful unmounts uses it.
//! - A runtime that cannot be asked (no socket, no permission, too old, no answer within
//!   [`DEADLINE`]) gets one notice on stderr and is left alone for [`BACKOFF`]; busyprobe goes
//!   on with the cgroup's container ids.
//! - Every listing says at debug level (`-v`) what it took and what the cache holds (`pod
//!   names: listing took …`): `cargo xtask bench pods` counts these lines to show that
//!   successful unmounts never ask the runtime.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::{
    cri::{CriClient, CriError, CriRuntime, Listing},
    socket::{self, Sockets},
    PodNames,
};

/// How long one runtime may take to list its containers.
pub const DEADLINE: Duration = Duration::from_secs(1);
/// How long a runtime that failed is left alone.
pub const BACKOFF: Duration = Duration::from_secs(30);
/// How long a container is remembered after it left the listings.
pub const REMEMBER_GONE: Duration = Duration::from_secs(10 * 60);
/// How long an id that a fresh listing did not name is not asked about again.
pub const UNKNOWN_FOR: Duration = Duration::from_secs(5);
/// How old the last listing may be before a pass starts another as it begins: a retry storm
/// (containerd retries every 50 ms) lists once a second, not once a retry (each listing
/// competes with the pass's scan for the CPU); an id the listing does not know is still
/// asked about after the scan.
pub const PASS_LISTING_AGE: Duration = Duration::from_secs(1);
/// A listing started this recently serves a miss (it started after the miss's cause).
const FRESH: Duration = Duration::from_millis(100);
/// Most containers remembered (a node runs a few hundred).
const MOST_KNOWN: usize = 65_536;

/// The cache of pod names for container ids, filled from the node's CRI runtimes.
pub struct PodDirectory {
    sockets: Sockets,
    runtime: Option<Arc<CriRuntime>>,
    sources: Mutex<Vec<Source>>,
    state: Mutex<State>,
    /// Held while a listing runs: a lookup waits for one in flight rather than start another.
    listing: Mutex<()>,
    prefetching: Arc<AtomicBool>,
    /// Whether the log said that no runtime socket was found.
    said_none: AtomicBool,
}

/// One runtime socket and how it has been answering.
struct Source {
    client: CriClient,
    failing: Option<(Instant, CriError)>,
    /// What the log last said about it (`runtime` name, or the error), to say it once.
    said: Option<String>,
}

#[derive(Default)]
struct State {
    known: HashMap<String, Known>,
    unknown: HashMap<String, Instant>,
    last_listing: Option<Instant>,
}

struct Known {
    names: PodNames,
    gone_since: Option<Instant>,
}

impl PodDirectory {
    /// A directory over `sockets`; asks nothing until the first lookup or [`Self::prefetch`].
    pub fn new(sockets: Sockets) -> Self {
        let runtime = match sockets {
            Sockets::Off => None,
            _ => match CriRuntime::start() {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::warn!(
                        "pod names: cannot start the CRI client ({e}); container ids only"
                    );
                    None
                }
            },
        };
        let sources = match &runtime {
            Some(r) => sockets
                .initial()
                .into_iter()
                .map(|p| Source::new(p, r.clone()))
                .collect(),
            None => Vec::new(),
        };
        Self {
            sockets,
            runtime,
            sources: Mutex::new(sources),
            state: Mutex::default(),
            listing: Mutex::new(()),
            prefetching: Arc::default(),
            said_none: AtomicBool::new(false),
        }
    }

    /// A directory that never asks a runtime (tests).
    #[cfg(test)]
    pub fn off() -> Self {
        Self::new(Sockets::Off)
    }

    /// The names of container `id` if already known; never asks the runtime.
    pub fn cached(&self, id: &str) -> Option<PodNames> {
        let state = self.state.lock().expect("directory lock");
        state.known.get(id).map(|k| k.names.clone())
    }

    /// Starts a listing in the background unless one runs, so that a lookup soon after
    /// finds it done (an attribution pass calls it as it starts, before its scan).
    pub fn prefetch(self: &Arc<Self>) {
        if self.runtime.is_none() || self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let directory = self.clone();
        let spawned = std::thread::Builder::new()
            .name("pod-names".into())
            .spawn(move || {
                directory.list_now();
                directory.prefetching.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.prefetching.store(false, Ordering::Release);
        }
    }

    /// Whether container `id` is neither known nor confirmed unknown by a recent listing (a
    /// container of a runtime the CRI does not serve, such as Docker or Podman alone).
    pub fn is_new(&self, id: &str) -> bool {
        let wanted = [(id.to_owned(), 0)];
        !self.missing(&wanted).is_empty()
    }

    /// [`Self::prefetch`] unless a listing started less than `age` ago: at most one listing
    /// per `age` (an attribution pass, [`PASS_LISTING_AGE`]; a container id the hot path
    /// found unknown, [`UNKNOWN_FOR`]).
    pub fn prefetch_if_older_than(self: &Arc<Self>, age: Duration) {
        if !self.listed_since(Instant::now() - age) {
            self.prefetch();
        }
    }

    /// The names of each wanted container id (with a process of it, whose shim may name
    /// another runtime socket); asks the runtimes when an id is not known yet.
    pub fn names(&self, wanted: &[(String, u32)]) -> HashMap<String, PodNames> {
        if self.runtime.is_some() && !self.missing(wanted).is_empty() {
            // Waits for a listing in flight (a prefetch): it may name them.
            let _listing = self.listing.lock().expect("listing lock");
            let fresh = self.listed_since(Instant::now() - FRESH);
            let new_socket = !self.missing(wanted).is_empty() && self.add_shim_sockets(wanted);
            if !self.missing(wanted).is_empty() && (!fresh || new_socket) {
                self.list_locked();
            }
            self.say_if_no_socket();
            self.remember_unknown(wanted);
        }
        self.lookup(wanted)
    }

    /// The UID of pod `namespace/name`, from a fresh listing (a pod whose sandbox is gone
    /// from the runtime is not known).
    pub fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.list_now();
        let state = self.state.lock().expect("directory lock");
        let mut found: Vec<(&String, bool)> = state
            .known
            .values()
            .filter(|k| k.names.namespace == namespace && k.names.pod == name)
            .map(|k| (&k.names.uid, k.gone_since.is_none()))
            .collect();
        // A pod recreated under the same name: the one still present.
        found.sort_by_key(|(_, present)| !present);
        found.first().map(|(uid, _)| (*uid).clone())
    }

    /// The known names of `wanted`; never asks the runtime.
    pub fn lookup(&self, wanted: &[(String, u32)]) -> HashMap<String, PodNames> {
        let state = self.state.lock().expect("directory lock");
        wanted
            .iter()
            .filter_map(|(id, _)| Some((id.clone(), state.known.get(id)?.names.clone())))
            .collect()
    }

    /// The ids neither known nor recently confirmed unknown.
    fn missing<'a>(&self, wanted: &'a [(String, u32)]) -> Vec<&'a (String, u32)> {
        let state = self.state.lock().expect("directory lock");
        let now = Instant::now();
        wanted
            .iter()
            .filter(|(id, _)| !state.known.contains_key(id))
            .filter(|(id, _)| {
                state
                    .unknown
                    .get(id)
                    .is_none_or(|at| now.duration_since(*at) > UNKNOWN_FOR)
            })
            .collect()
    }

    /// Remembers the ids a listing just did not name.
    fn remember_unknown(&self, wanted: &[(String, u32)]) {
        let mut state = self.state.lock().expect("directory lock");
        let now = Instant::now();
        state
            .unknown
            .retain(|_, at| now.duration_since(*at) <= UNKNOWN_FOR);
        for (id, _) in wanted {
            if !state.known.contains_key(id) && !state.unknown.contains_key(id) {
                state.unknown.insert(id.clone(), now);
            }
        }
    }

    fn listed_since(&self, since: Instant) -> bool {
        let state = self.state.lock().expect("directory lock");
        state.last_listing.is_some_and(|at| at >= since)
    }

    /// Adds the well-known sockets that appeared since (a runtime started after busyprobe,
    /// as at boot) and the sockets of the shims above the processes of ids not known;
    /// whether any is new.
    fn add_shim_sockets(&self, wanted: &[(String, u32)]) -> bool {
        let (true, Some(runtime)) = (self.sockets.searches_shims(), &self.runtime) else {
            return false;
        };
        let missing: Vec<u32> = self.missing(wanted).iter().map(|(_, pid)| *pid).collect();
        let found = self.sockets.initial().into_iter().map(|p| (p, None));
        let above = missing
            .into_iter()
            .filter_map(|pid| Some((socket::of_shim_above(Path::new("/proc"), pid)?, Some(pid))));
        let mut sources = self.sources.lock().expect("sources lock");
        let mut added = false;
        for (path, pid) in found.chain(above) {
            if sources
                .iter()
                .any(|s| same_socket(s.client.socket(), &path))
            {
                continue;
            }
            match pid {
                Some(pid) => tracing::info!(
                    "pod names: found the CRI socket {} above pid {pid}",
                    path.display()
                ),
                None => tracing::info!("pod names: found the CRI socket {}", path.display()),
            }
            sources.push(Source::new(path, runtime.clone()));
            added = true;
        }
        added
    }

    /// Says once that no runtime socket is known, when a container needed naming.
    fn say_if_no_socket(&self) {
        let none = self.sources.lock().expect("sources lock").is_empty();
        if none && !self.said_none.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "pod names: no CRI socket found (looked at {} and above the holders for a \
                 containerd shim); showing container ids only (--cri-socket PATH names one)",
                socket::WELL_KNOWN.join(", ")
            );
        }
    }

    /// Lists every runtime now (waiting for a listing in flight first).
    fn list_now(&self) {
        let _listing = self.listing.lock().expect("listing lock");
        self.list_locked();
    }

    /// Asks every runtime not backing off; merges what they answer.
    fn list_locked(&self) {
        let started = Instant::now();
        let mut listings = Vec::new();
        {
            let mut sources = self.sources.lock().expect("sources lock");
            for source in sources.iter_mut() {
                if let Some(listing) = source.list(started) {
                    listings.push(listing);
                }
            }
        }
        let answered = listings.len();
        let mut state = self.state.lock().expect("directory lock");
        state.merge(listings, started);
        tracing::debug!(
            "pod names: listing took {} µs ({answered} runtime(s) answered); {} containers \
             and sandboxes known, cache heap {} bytes",
            started.elapsed().as_micros(),
            state.known.len(),
            state.heap_bytes()
        );
    }
}

impl Source {
    fn new(socket: PathBuf, runtime: Arc<CriRuntime>) -> Self {
        Self {
            client: CriClient::new(socket, runtime),
            failing: None,
            said: None,
        }
    }

    /// Its listing, unless it failed less than [`BACKOFF`] ago; says once how it answers.
    fn list(&mut self, now: Instant) -> Option<Listing> {
        if let Some((since, _)) = &self.failing {
            if now.duration_since(*since) < BACKOFF {
                return None;
            }
        }
        match self.client.list(DEADLINE) {
            Ok(listing) => {
                self.failing = None;
                let line = format!(
                    "pod names: asking {} ({}; {} containers and sandboxes)",
                    self.client.socket().display(),
                    listing.runtime,
                    listing.names.len()
                );
                if self.say(&listing.runtime) {
                    tracing::info!("{line}");
                }
                Some(listing)
            }
            Err(e) => {
                if self.say(&e.to_string()) {
                    tracing::warn!("pod names: {e}; showing container ids only");
                }
                self.failing = Some((now, e));
                None
            }
        }
    }

    /// Whether the log should say something about `key` (not said last time).
    fn say(&mut self, key: &str) -> bool {
        let new = self.said.as_deref() != Some(key);
        if new {
            self.said = Some(key.to_owned());
        }
        new
    }
}

impl State {
    /// Takes in fresh listings: named containers are (again) present; known ones no listing
    /// names are gone from now on, and forgotten [`REMEMBER_GONE`] later. With no answer at
    /// all, nothing is marked gone.
    fn merge(&mut self, listings: Vec<Listing>, now: Instant) {
        if listings.is_empty() {
            return;
        }
        let mut present: HashMap<String, PodNames> = HashMap::new();
        for listing in listings {
            present.extend(listing.names);
        }
        for (id, known) in self.known.iter_mut() {
            if !present.contains_key(id) && known.gone_since.is_none() {
                known.gone_since = Some(now);
            }
        }
        self.known.retain(|_, k| {
            k.gone_since
                .is_none_or(|since| now.duration_since(since) <= REMEMBER_GONE)
        });
        for (id, names) in present {
            self.unknown.remove(&id);
            if self.known.len() < MOST_KNOWN || self.known.contains_key(&id) {
                self.known.insert(
                    id,
                    Known {
                        names,
                        gone_since: None,
                    },
                );
            }
        }
        self.last_listing = Some(now);
    }

    /// The bytes the cache holds on the heap: its strings' capacities and its hash tables'
    /// buckets (a count of the allocations, not of the allocator's rounding).
    fn heap_bytes(&self) -> usize {
        let known: usize = self
            .known
            .iter()
            .map(|(id, k)| id.capacity() + names_heap_bytes(&k.names))
            .sum();
        let unknown: usize = self.unknown.keys().map(String::capacity).sum();
        known
            + unknown
            + table_bytes::<String, Known>(self.known.capacity())
            + table_bytes::<String, Instant>(self.unknown.capacity())
    }
}

/// The heap bytes of the strings of `names`.
fn names_heap_bytes(names: &PodNames) -> usize {
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
    names.pod.capacity()
        + names.namespace.capacity()
        + names.uid.capacity()
        + optional(&names.container)
        + optional(&names.image)
}

/// The heap bytes of a `HashMap<K, V>` table of `capacity`: hashbrown keeps a power of two
/// of buckets (at least 8 per 7 entries), each an entry and a control byte, plus one group
/// of control bytes.
fn table_bytes<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (std::mem::size_of::<(K, V)>() + 1) + 16
}

/// Whether two socket paths are the same socket (a shim's `/proc/N/root/…` path and the
/// well-known path name one socket when they reach the same inode).
fn same_socket(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pod: &str) -> PodNames {
        PodNames {
            pod: pod.into(),
            namespace: "ns".into(),
            uid: "uid".into(),
            container: Some("c".into()),
            image: None,
        }
    }

    fn listing(ids: &[(&str, &str)]) -> Listing {
        Listing {
            names: ids
                .iter()
                .map(|(id, pod)| (id.to_string(), names(pod)))
                .collect(),
            runtime: "test 1".into(),
        }
    }

    #[test]
    fn gone_containers_are_remembered_for_a_while() {
        let mut state = State::default();
        let t0 = Instant::now();
        state.merge(vec![listing(&[("a", "pa"), ("b", "pb")])], t0);
        state.merge(vec![listing(&[("b", "pb")])], t0 + Duration::from_secs(1));
        assert_eq!(state.known["a"].names.pod, "pa", "a is gone but remembered");
        assert!(state.known["a"].gone_since.is_some());
        assert!(state.known["b"].gone_since.is_none());
        state.merge(vec![listing(&[("b", "pb")])], t0 + REMEMBER_GONE);
        assert!(state.known.contains_key("a"), "still within the memory");
        state.merge(
            vec![listing(&[("b", "pb")])],
            t0 + REMEMBER_GONE + Duration::from_secs(2),
        );
        assert!(!state.known.contains_key("a"), "forgotten");
    }

    #[test]
    fn no_answer_marks_nothing_gone() {
        let mut state = State::default();
        let t0 = Instant::now();
        state.merge(vec![listing(&[("a", "pa")])], t0);
        state.merge(Vec::new(), t0 + REMEMBER_GONE * 2);
        assert!(state.known["a"].gone_since.is_none());
    }

    #[test]
    fn a_container_back_in_the_listing_is_present_again() {
        let mut state = State::default();
        let t0 = Instant::now();
        state.merge(vec![listing(&[("a", "pa")])], t0);
        state.merge(vec![listing(&[])], t0 + Duration::from_secs(1));
        state.merge(vec![listing(&[("a", "pa2")])], t0 + Duration::from_secs(2));
        assert!(state.known["a"].gone_since.is_none());
        assert_eq!(state.known["a"].names.pod, "pa2");
    }

    /// The goal (cache memory for 200 containers ≤ 2 MiB), counted on names the size
    /// of a real node's: 20 pods × 10 containers and their 20 sandboxes, 64-digit ids,
    /// registry image references.
    #[test]
    fn the_cache_of_200_containers_holds_well_under_2_mib() {
        let mut names = HashMap::new();
        for pod in 0..20 {
            let sandbox = PodNames {
                pod: format!("ingest-worker-7f9c8d6b5-{pod:05}"),
                namespace: "data-pipeline".into(),
                uid: format!("7c9e6679-7425-40de-944b-e07fc1f9{pod:04}"),
                container: None,
                image: None,
            };
            names.insert(format!("{pod:064x}"), sandbox.clone());
            for c in 0..10 {
                let container = PodNames {
                    container: Some(format!("sidecar-number-{c}")),
                    image: Some(format!(
                        "registry.k8s.example.com/platform/sidecar-{c}:v1.29.3@sha256:{:064x}",
                        c
                    )),
                    ..sandbox.clone()
                };
                names.insert(format!("{:064x}", 1000 + pod * 10 + c), container);
            }
        }
        let mut state = State::default();
        state.merge(
            vec![Listing {
                names,
                runtime: "containerd 1.6".into(),
            }],
            Instant::now(),
        );
        assert_eq!(state.known.len(), 220);
        let bytes = state.heap_bytes();
        eprintln!("the cache of 200 containers and 20 sandboxes: {bytes} heap bytes");
        assert!(bytes > 220 * 64, "counts the ids at least: {bytes}");
        assert!(bytes <= 2 << 20, "{bytes} bytes");
    }

    #[test]
    fn table_bytes_follow_hashbrowns_buckets() {
        assert_eq!(table_bytes::<u64, u64>(0), 0);
        assert_eq!(table_bytes::<u64, u64>(3), 4 * 17 + 16);
        assert_eq!(table_bytes::<u64, u64>(224), 256 * 17 + 16);
    }

    #[test]
    fn an_off_directory_names_nothing_and_asks_nothing() {
        let d = PodDirectory::off();
        assert!(d.names(&[("a".into(), 1)]).is_empty());
        assert_eq!(d.cached("a"), None);
    }

    #[test]
    fn a_socket_that_is_not_one_gives_a_clear_error_and_no_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cri.sock");
        std::fs::write(&file, b"").unwrap();
        let d = PodDirectory::new(Sockets::Given(file.clone()));
        assert!(d.names(&[("a".into(), 1)]).is_empty());
        let sources = d.sources.lock().unwrap();
        let (_, err) = sources[0].failing.as_ref().unwrap();
        assert_eq!(err, &CriError::NotASocket(file));
    }

    /// A runtime that starts after busyprobe (at boot, before containerd): its well-known
    /// socket is asked from the next lookup that misses.
    #[test]
    fn a_well_known_socket_that_appears_later_is_asked() {
        let root = tempfile::tempdir().unwrap();
        let d = PodDirectory::new(Sockets::Found {
            root: root.path().to_owned(),
        });
        assert!(d.names(&[("a".into(), u32::MAX)]).is_empty());
        assert!(d.sources.lock().unwrap().is_empty(), "nothing there yet");
        let sock = root.path().join("run/containerd/containerd.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(listener); // refuses at once: the lookup fails fast, but the socket is asked
        assert!(d.names(&[("b".into(), u32::MAX)]).is_empty());
        let sources = d.sources.lock().unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].client.socket(), sock);
        assert!(sources[0].failing.is_some(), "it was asked");
    }

    /// A socket that accepts but never answers: the lookup gives up at the deadline, and the
    /// next one does not wait again (the runtime is left alone for a while).
    #[test]
    fn a_runtime_that_never_answers_costs_one_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let d = PodDirectory::new(Sockets::Given(path.clone()));
        let t = Instant::now();
        assert!(d.names(&[("a".into(), 1)]).is_empty());
        let first = t.elapsed();
        assert!(first >= DEADLINE, "gave up after {first:?}");
        let t = Instant::now();
        assert!(d.names(&[("b".into(), 1)]).is_empty());
        assert!(t.elapsed() < DEADLINE / 2, "asked again: {:?}", t.elapsed());
        let sources = d.sources.lock().unwrap();
        assert_eq!(
            sources[0].failing.as_ref().unwrap().1,
            CriError::Timeout(path, DEADLINE)
        );
    }
}
