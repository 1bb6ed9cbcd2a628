//! Open times where an unmount is contended (`--open-times contended`, the agent's default).
//!
//! Timing every open on every tracked mount costs each open on the node about 1 µs; what the
//! times are for is a mount whose unmount fails. So a mount becomes *contended* when an
//! unmount of it fails with EBUSY (as the failure is decoded, before its holders are looked
//! for): its id goes into the kernel's `CONTENDED_MOUNTS`, and the open probes are attached
//! while at least one mount is there. A mount stops being contended when it is gone from its
//! namespace's table, or when it has not failed for [`CONTENDED_FOR`] (a leaked mount nobody
//! retries must not keep every open on the node paying); with none left the probes are
//! detached. So a mount's first failure has no open times, and its retries (containerd's 2nd
//! to 50th) have them for every file opened after the first. Attaching takes milliseconds
//! (a second or more for fentry trampolines under emulation): a thread of its own does it, so
//! that the event loop, which makes a mount contended, never waits for it.

use std::{
    collections::HashMap,
    sync::{mpsc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData};

use crate::{
    loader::OpenTimeSwitch,
    state::{mount_cache::OnTables, mountinfo::MountEntry},
};

/// How long a mount stays contended after its last failure.
pub const CONTENDED_FOR: Duration = Duration::from_secs(600);

/// The contended mounts, and the open probes attached while there are any.
pub struct Contention {
    inner: Mutex<Inner>,
}

struct Inner {
    map: BpfHashMap<MapData, u32, u8>,
    /// Whether the open probes should be attached (and since when), told to the thread that
    /// attaches them.
    want: mpsc::Sender<(bool, Instant)>,
    mounts: HashMap<u32, Contended>,
    /// Why the last mount could not be added (said once until one is).
    failing: bool,
}

/// A contended mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Contended {
    /// Its namespace (the mount id is looked for in that table).
    mntns: u64,
    /// Its last failure.
    last_failure: Instant,
}

impl Contention {
    /// Contention kept in `map` (the kernel's `CONTENDED_MOUNTS`), with `switch` attaching
    /// the open probes (on a thread of its own, which ends with this).
    pub fn new(map: BpfHashMap<MapData, u32, u8>, switch: OpenTimeSwitch) -> Self {
        let (want, wants) = mpsc::channel();
        thread::Builder::new()
            .name("open-probes".into())
            .spawn(move || follow(switch, &wants))
            .expect("spawning a thread");
        Self {
            inner: Mutex::new(Inner {
                map,
                want,
                mounts: HashMap::new(),
                failing: false,
            }),
        }
    }

    /// An unmount of `mount` (in namespace `mntns`) failed with EBUSY at `now`: its opens are
    /// timed from now on.
    pub fn failed(&self, mount: u64, mntns: u64, now: Instant) {
        let Ok(id) = u32::try_from(mount) else {
            return;
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.contend(
            id,
            Contended {
                mntns,
                last_failure: now,
            },
        );
    }

    /// Lets go of the mounts gone from `tables` or quiet for [`CONTENDED_FOR`] at `now`.
    pub fn settle(&self, tables: &HashMap<u64, Vec<MountEntry>>, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let over: Vec<u32> = inner
            .mounts
            .iter()
            .filter(|(id, c)| !still_contended(tables, **id, c, now))
            .map(|(id, _)| *id)
            .collect();
        for id in over {
            inner.release(id);
        }
    }
}

impl Inner {
    fn contend(&mut self, id: u32, contended: Contended) {
        if let Some(known) = self.mounts.get_mut(&id) {
            *known = contended;
            return;
        }
        if let Err(e) = self.map.insert(id, 1, 0) {
            if !std::mem::replace(&mut self.failing, true) {
                tracing::warn!(
                    "cannot time the opens on contended mount {id}: {e} (its failures will have \
                     no open times; said once until a mount is added)"
                );
            }
            return;
        }
        self.failing = false;
        let first = self.mounts.is_empty();
        self.mounts.insert(id, contended);
        if !first {
            tracing::debug!("open times on contended mount {id} too");
            return;
        }
        tracing::info!(
            "open times on: mount {id} (mount namespace {}) is contended",
            contended.mntns
        );
        self.tell_switch(true);
    }

    fn release(&mut self, id: u32) {
        self.mounts.remove(&id);
        let _ = self.map.remove(&id);
        if self.mounts.is_empty() {
            tracing::info!("open times off: no mount is contended any more");
            self.tell_switch(false);
        } else {
            tracing::debug!("mount {id} is no longer contended");
        }
    }

    /// Tells the attaching thread whether the open probes are wanted (while any mount is
    /// contended).
    fn tell_switch(&self, on: bool) {
        let _ = self.want.send((on, Instant::now()));
    }
}

/// The attaching thread: attaches or detaches the open probes as last wanted, until the
/// [`Contention`] goes (then the switch detaches them as it goes).
fn follow(mut switch: OpenTimeSwitch, wants: &mpsc::Receiver<(bool, Instant)>) {
    while let Ok(mut wish) = wants.recv() {
        // Only the last wish counts.
        while let Ok(later) = wants.try_recv() {
            wish = later;
        }
        let (on, since) = wish;
        match (on, switch.is_on()) {
            (true, false) => match switch.on() {
                Ok(()) => tracing::info!(
                    "open probes attached, {:.1?} after the mount was found contended",
                    since.elapsed()
                ),
                Err(e) => tracing::warn!(
                    "cannot attach the open probes for the contended mounts: {e:#} (their \
                     failures will have no open times)"
                ),
            },
            (false, true) => {
                switch.off();
                tracing::debug!("open probes detached");
            }
            _ => {}
        }
    }
}

/// Whether a contended mount still is at `now`: still in its namespace's table, and failed
/// within [`CONTENDED_FOR`].
fn still_contended(
    tables: &HashMap<u64, Vec<MountEntry>>,
    id: u32,
    contended: &Contended,
    now: Instant,
) -> bool {
    let mounted = tables
        .get(&contended.mntns)
        .is_some_and(|mounts| mounts.iter().any(|m| m.id == u64::from(id)));
    mounted && now.saturating_duration_since(contended.last_failure) < CONTENDED_FOR
}

/// The mount cache's keeper thread settles the contended mounts at every change of the tables
/// (and at least every second).
impl OnTables for std::sync::Arc<Contention> {
    fn tables_changed(&mut self, tables: &HashMap<u64, Vec<MountEntry>>) {
        self.settle(tables, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::mountinfo::parse_line;

    #[test]
    fn a_mount_stays_contended_while_mounted_and_failing() {
        let t0 = Instant::now();
        let tables = HashMap::from([(
            7,
            vec![parse_line(b"812 1 0:50 / /var/lib/x rw - tmpfs t rw").unwrap()],
        )]);
        let contended = |mntns, last_failure| Contended {
            mntns,
            last_failure,
        };
        assert!(still_contended(&tables, 812, &contended(7, t0), t0));
        assert!(still_contended(
            &tables,
            812,
            &contended(7, t0),
            t0 + CONTENDED_FOR - Duration::from_secs(1)
        ));
        assert!(
            !still_contended(&tables, 812, &contended(7, t0), t0 + CONTENDED_FOR),
            "quiet for too long"
        );
        assert!(
            !still_contended(&tables, 813, &contended(7, t0), t0),
            "unmounted (its id is gone from the table)"
        );
        assert!(
            !still_contended(&tables, 812, &contended(8, t0), t0),
            "its namespace is gone"
        );
    }
}
