//! What the open probes leave in the kernel's maps, read on an EBUSY: when each held file was
//! opened (an fd opened after the failing call returned did not hold the mount then), and who
//! opened files on the mount shortly before the call (recent accessors: context, not holders).

use std::collections::HashSet;

use probe_common::{FdKey, OpenRecord, RecentOpens, OPENED_FOR_EVENT, RECENT_OPEN_RINGS};

use crate::{
    event::UmountCall,
    loader::{OpenTimesMap, RecentOpensMap},
    model::{Accessor, Attribution, Holder, HolderKind, OpenTimeUnknown},
};

/// How long before the failing call an open still makes a recent accessor.
pub const RECENT_NS: u64 = 2_000_000_000;

/// The kernel's open-time maps.
pub struct OpenMaps {
    times: OpenTimesMap,
    recent: RecentOpensMap,
}

impl OpenMaps {
    /// The two maps, taken from the loaded probes.
    pub fn new(times: OpenTimesMap, recent: RecentOpensMap) -> Self {
        Self { times, recent }
    }

    /// Drops `a`'s fd holders opened after `call` returned, says when the others were opened,
    /// and lists the recent accessors of its mounts.
    pub fn apply(&self, call: &UmountCall, a: &mut Attribution) {
        apply_open_times(call, a, |key| self.times.get(&key, 0).ok());
        let rings: Vec<(u64, RecentOpens)> = a
            .blamed_mount_ids()
            .into_iter()
            .filter_map(|id| {
                let ring = u32::try_from(id).ok()? % RECENT_OPEN_RINGS;
                let per_cpu = self.recent.get(&ring, 0).ok()?;
                let mine = per_cpu.iter().filter(|r| u64::from(r.mnt_id) == id);
                Some(mine.map(|r| (id, *r)).collect::<Vec<_>>())
            })
            .flatten()
            .collect();
        a.accessors = recent_accessors(&rings, call, &a.holders);
    }
}

/// Drops fd holders whose file was opened after the failing call returned and says how long
/// before the call the others were opened, or why that is unknown. `opened_at` looks up an
/// fd's open record; one left by an earlier file on another mount under the same number says
/// nothing of this file.
fn apply_open_times(
    call: &UmountCall,
    a: &mut Attribution,
    opened_at: impl Fn(FdKey) -> Option<OpenRecord>,
) {
    a.holders.retain_mut(|h| {
        let (Some(p), Some(fd), HolderKind::Fd) = (&h.process, h.fd, h.kind) else {
            return true;
        };
        let Ok(fd) = u32::try_from(fd) else {
            return true;
        };
        let record =
            opened_at(FdKey { pid: p.pid, fd }).filter(|r| u64::from(r.mnt_id) == h.mount_id);
        match record {
            None => h.open_time_unknown = Some(OpenTimeUnknown::NotTimed),
            Some(r) if r.opened_ts_boot_ns == 0 => {
                h.open_time_unknown = Some(OpenTimeUnknown::RacedAnUnmount)
            }
            Some(r) => {
                let for_event = r.flags & OPENED_FOR_EVENT != 0;
                place_open(h, call, r.opened_ts_boot_ns, for_event);
                return held_at_the_call(call, r.opened_ts_boot_ns, for_event);
            }
        }
        true
    });
}

/// Whether a file opened at `opened_ts_boot_ns` (a fanotify event fd when `for_event`) can
/// have held the mount at `call`'s busy check: opened before the call returned, or an event
/// fd, whose event, queued before, held it. Any other file opened after the call returned
/// did not hold the mount when the kernel said busy.
pub fn held_at_the_call(call: &UmountCall, opened_ts_boot_ns: u64, for_event: bool) -> bool {
    for_event || call.opened_before(opened_ts_boot_ns).is_some()
}

/// Says when `h` opened its file (at `opened_ts_boot_ns`; a fanotify event fd when
/// `for_event`): how long before `call`, or, for an event fd opened after the call returned,
/// how long after.
pub fn place_open(h: &mut Holder, call: &UmountCall, opened_ts_boot_ns: u64, for_event: bool) {
    h.event_fd = for_event;
    h.opened_ns_before = call.opened_before(opened_ts_boot_ns);
    if h.opened_ns_before.is_none() && for_event {
        h.opened_ns_after = Some(opened_ts_boot_ns.saturating_sub(call.returned_ts_boot_ns()));
    }
}

/// The opens in `rings` (mount id, ring) made within [`RECENT_NS`] before the call by an fd
/// that is not among `holders`, newest first, each once; those of the caller's own thread
/// group (whatever its `comm` then: `umount(8)` opens its target before it calls `umount2`,
/// and a shell's child has the caller's pid until it execs it) marked [`Accessor::by_caller`].
fn recent_accessors(
    rings: &[(u64, RecentOpens)],
    call: &UmountCall,
    holders: &[Holder],
) -> Vec<Accessor> {
    let held = held_fds(holders);
    let mut seen = HashSet::new();
    let mut out: Vec<Accessor> = rings
        .iter()
        .flat_map(|(mount_id, ring)| ring.slots.iter().map(move |s| (*mount_id, s)))
        .filter(|(_, s)| s.opened_ts_boot_ns != 0 && s.opened_ts_boot_ns <= call.ts_boot_ns)
        .filter(|(_, s)| call.ts_boot_ns - s.opened_ts_boot_ns <= RECENT_NS)
        .filter(|(_, s)| !held.contains(&(s.pid, s.fd)))
        .filter(|(_, s)| seen.insert((s.pid, s.fd, s.opened_ts_boot_ns)))
        .map(|(mount_id, s)| Accessor {
            pid: s.pid,
            comm: crate::paths::nul_terminated(&s.comm).to_vec(),
            fd: s.fd,
            mount_id,
            opened_ns_before: call.ts_boot_ns - s.opened_ts_boot_ns,
            by_caller: s.pid == call.pid,
        })
        .collect();
    out.sort_by_key(|x| x.opened_ns_before);
    out
}

/// `(pid, fd)` of every holder that holds through an fd.
pub fn held_fds(holders: &[Holder]) -> HashSet<(u32, u32)> {
    holders
        .iter()
        .filter_map(|h| Some((h.process.as_ref()?.pid, u32::try_from(h.fd?).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::sample_ebusy_call,
        model::{sample_attribution, sample_process_holder},
    };
    use probe_common::RecentOpen;

    const CALL_TS: u64 = 10_000_000_000;
    const CALL_NS: u64 = 50_000;

    fn call() -> UmountCall {
        sample_ebusy_call(CALL_TS, CALL_NS)
    }

    fn fd_holder(pid: u32, fd: i32) -> Holder {
        let mut h = sample_process_holder(HolderKind::Fd, 812, pid, b"scanner", None);
        h.fd = Some(fd);
        h
    }

    fn attribution(holders: Vec<Holder>) -> Attribution {
        sample_attribution("/mnt", holders)
    }

    fn event_record(opened: u64) -> OpenRecord {
        OpenRecord {
            flags: OPENED_FOR_EVENT,
            ..record(opened, 812)
        }
    }

    fn record(opened: u64, mnt_id: u32) -> OpenRecord {
        OpenRecord {
            opened_ts_boot_ns: opened,
            mnt_id,
            flags: 0,
        }
    }

    #[test]
    fn open_times_keep_what_was_open_at_the_busy_check() {
        let mut a = attribution(vec![
            fd_holder(10, 3), // opened 2 ms before the call
            fd_holder(11, 3), // opened during the call: maybe before the busy check
            fd_holder(12, 3), // opened after the call returned
            fd_holder(13, 3), // open never seen (fanotify, passed, before start)
            fd_holder(14, 3), // open time unknown (raced an unmount)
            fd_holder(15, 3), // the record is of an earlier file on another mount
            fd_holder(16, 3), // a fanotify event fd opened 2 ms before the call
            fd_holder(17, 3), // an event fd opened after the call: its event held the mount
        ]);
        let opened = |key: FdKey| match key.pid {
            10 => Some(record(CALL_TS - 2_000_000, 812)),
            11 => Some(record(CALL_TS + CALL_NS, 812)),
            12 => Some(record(CALL_TS + CALL_NS + 1, 812)),
            14 => Some(record(0, 812)),
            15 => Some(record(CALL_TS + CALL_NS + 1, 99)),
            16 => Some(event_record(CALL_TS - 2_000_000)),
            17 => Some(event_record(CALL_TS + CALL_NS + 300)),
            _ => None,
        };
        apply_open_times(&call(), &mut a, opened);
        let got: Vec<_> = a
            .holders
            .iter()
            .map(|h| {
                let pid = h.process.as_ref().unwrap().pid;
                (pid, h.opened_ns_before, h.open_time_unknown)
            })
            .collect();
        use OpenTimeUnknown::{NotTimed, RacedAnUnmount};
        assert_eq!(
            got,
            [
                (10, Some(2_000_000), None),
                (11, Some(0), None),
                (13, None, Some(NotTimed)),
                (14, None, Some(RacedAnUnmount)),
                (15, None, Some(NotTimed)),
                (16, Some(2_000_000), None),
                (17, None, None),
            ]
        );
        let events: Vec<_> = a
            .holders
            .iter()
            .map(|h| (h.event_fd, h.opened_ns_after))
            .collect();
        assert_eq!(
            events,
            [
                [(false, None); 5].as_slice(),
                &[(true, None), (true, Some(300))]
            ]
            .concat(),
            "only the event fds are marked; the one opened after the call says how long after"
        );
    }

    fn slot(pid: u32, fd: u32, opened: u64) -> RecentOpen {
        named_slot(pid, fd, opened, b"scanner")
    }

    fn named_slot(pid: u32, fd: u32, opened: u64, name: &[u8]) -> RecentOpen {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name);
        RecentOpen {
            opened_ts_boot_ns: opened,
            pid,
            fd,
            comm,
        }
    }

    #[test]
    fn recent_accessors_are_recent_opens_that_hold_nothing() {
        let mut cpu0 = RecentOpens::default();
        cpu0.slots[0] = slot(20, 5, CALL_TS - 40_000_000); // closed before the call: accessor
        cpu0.slots[1] = slot(10, 3, CALL_TS - 1_000_000); // the holder
        cpu0.slots[2] = slot(21, 4, CALL_TS - RECENT_NS - 1); // too long ago
        cpu0.slots[3] = slot(22, 4, CALL_TS + 1); // after the call
        let mut cpu1 = RecentOpens::default();
        cpu1.slots[5] = slot(23, 7, CALL_TS - 3_000_000); // another CPU, on a counted copy
        cpu1.slots[6] = slot(20, 5, CALL_TS - 40_000_000); // the same open, seen twice
        let rings = [(812, cpu0), (813, cpu1)];
        let got = recent_accessors(&rings, &call(), &[fd_holder(10, 3)]);
        let got: Vec<_> = got
            .iter()
            .map(|x| (x.pid, x.fd, x.mount_id, x.opened_ns_before, x.comm.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (23, 7, 813, 3_000_000, b"scanner".to_vec()),
                (20, 5, 812, 40_000_000, b"scanner".to_vec()),
            ]
        );
        assert!(got.iter().all(|x| x.0 != call().pid));
    }

    #[test]
    fn the_callers_own_opens_are_marked_as_the_callers() {
        let caller = call().pid;
        let mut cpu0 = RecentOpens::default();
        // umount(8) opens its target (O_PATH) and closes it before it calls umount2.
        cpu0.slots[0] = named_slot(caller, 3, CALL_TS - 1_200_000, b"umount");
        // Before that, as the shell's child it had not yet exec'd, it redirected a file.
        cpu0.slots[1] = named_slot(caller, 0, CALL_TS - 4_000_000, b"sh");
        cpu0.slots[2] = slot(20, 5, CALL_TS - 2_000_000); // another process
        let got = recent_accessors(&[(812, cpu0)], &call(), &[]);
        let got: Vec<_> = got
            .iter()
            .map(|x| (x.pid, x.fd, x.comm.clone(), x.by_caller))
            .collect();
        assert_eq!(
            got,
            [
                (caller, 3, b"umount".to_vec(), true),
                (20, 5, b"scanner".to_vec(), false),
                (caller, 0, b"sh".to_vec(), true),
            ]
        );
    }
}
