//! Ring-buffer bytes → typed events. The header is checked before anything is cast; a short,
//! inconsistent or unknown record is an error the caller counts, never a crash.

use std::mem::size_of;

use probe_common::{
    EventHeader, EventKind, ReleaseEvent, UmountEvent, COMM_LEN, HOOK_FS_ROOT, HOOK_SAW_MOUNT,
    NAME_LEN, OPEN_RACED, PATH_BUF_LEN, PATH_TRUNCATED, PATH_UNREADABLE, RELEASE_DEPTH,
    RELEASE_NAME_CUT, RELEASE_OPENED_FOR_EVENT, RELEASE_PATH_DEEPER, UMOUNT_EVENT_FIXED,
};
use thiserror::Error;

use crate::{
    event::{ExactMount, KernelPath, Release, ReleaseHow, UmountCall},
    paths::nul_terminated,
};

/// A decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// A finished unmount call.
    Umount(UmountCall),
    /// A file on a tracked mount let go during a busy window.
    Release(Release),
}

/// Why a record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    /// A type tag this build does not know (a newer probe object?).
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    /// The header's size or the record's length does not fit the kind.
    #[error("event kind {kind:?} needs {need} bytes, header says {said}, record has {got}")]
    BadSize {
        /// The kind.
        kind: EventKind,
        /// The fewest bytes a record of the kind has (its struct size, or for an unmount the part
        /// before the target).
        need: usize,
        /// `header.size`.
        said: u32,
        /// Bytes received.
        got: usize,
    },
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; EventHeader is plain old data; read_unaligned needs no alignment.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    match kind {
        EventKind::Umount => {
            let raw: UmountEvent = read_cut(kind, &header, bytes, UMOUNT_EVENT_FIXED)?;
            Ok(KernelEvent::Umount(umount_call(&raw, header.size as usize)))
        }
        EventKind::Release => {
            let raw: ReleaseEvent = read_cut(kind, &header, bytes, size_of::<ReleaseEvent>())?;
            Ok(KernelEvent::Release(release(&raw)))
        }
    }
}

/// A path within its mount from the probe's leaf-first `names` (`depth` of them) and their
/// truncation `flags` (as a [`ReleaseEvent`] carries them): the path, and whether it was cut.
pub fn path_within_mount(
    names: &[[u8; NAME_LEN]; RELEASE_DEPTH],
    depth: u32,
    flags: u32,
) -> (Vec<u8>, bool) {
    let depth = (depth as usize).min(RELEASE_DEPTH);
    // Components come leaf first; the path within the mount is root first. When the walk
    // stopped short of the mount's root, the path starts with `/…` (it is not whole).
    let mut within = Vec::new();
    if flags & RELEASE_PATH_DEEPER != 0 {
        within.extend_from_slice("/…".as_bytes());
    }
    for name in names[..depth].iter().rev() {
        within.push(b'/');
        within.extend_from_slice(nul_terminated(name));
    }
    if within.is_empty() {
        within.push(b'/');
    }
    (
        within,
        flags & (RELEASE_PATH_DEEPER | RELEASE_NAME_CUT) != 0,
    )
}

fn release(raw: &ReleaseEvent) -> Release {
    let (path_within_mount, truncated) = path_within_mount(&raw.names, raw.depth, raw.flags);
    Release {
        ts_boot_ns: raw.header.ts_boot_ns,
        pid: raw.header.pid,
        tid: raw.header.tid,
        comm: nul_terminated(&raw.comm).to_vec(),
        fd: raw.fd,
        how: ReleaseHow::from_raw(raw.how),
        mnt_id: u64::from(raw.mnt_id),
        mount_ns: (raw.mount_ns != 0).then_some(u64::from(raw.mount_ns)),
        path_within_mount,
        truncated,
        opened_ts_boot_ns: (raw.opened_ts_boot_ns != 0 && raw.opened_ts_boot_ns != OPEN_RACED)
            .then_some(raw.opened_ts_boot_ns),
        open_raced: raw.opened_ts_boot_ns == OPEN_RACED,
        opened_for_event: raw.flags & RELEASE_OPENED_FOR_EVENT != 0,
        queued_events: raw.queued_events,
        queued_index: raw.queued_index,
    }
}

/// A record of `header.size` bytes, from `fixed` (the shortest the kind may be cut to, see
/// [`UmountEvent`]) up to the whole struct: the bytes sent, the rest zero.
fn read_cut<T: Copy>(
    kind: EventKind,
    header: &EventHeader,
    bytes: &[u8],
    fixed: usize,
) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    let said = header.size as usize;
    if !(fixed..=need).contains(&said) || bytes.len() < said {
        return Err(DecodeError::BadSize {
            kind,
            need: fixed,
            said: header.size,
            got: bytes.len(),
        });
    }
    let mut raw = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: `said` <= size_of::<T>() bytes are copied into the zeroed value, from a slice
    // at least that long; T is one of the plain-old-data event structs (all-zero is valid).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.as_mut_ptr().cast::<u8>(), said);
        Ok(raw.assume_init())
    }
}

/// `raw` as decoded from a record of `size` bytes: the target's length is clamped to the
/// bytes the record has.
fn umount_call(raw: &UmountEvent, size: usize) -> UmountCall {
    UmountCall {
        ts_boot_ns: raw.header.ts_boot_ns,
        pid: raw.header.pid,
        tid: raw.header.tid,
        uid: raw.uid,
        gid: raw.gid,
        comm: nul_terminated(&raw.comm[..COMM_LEN]).to_vec(),
        mntns: raw.mntns,
        cgroup_id: raw.cgroup_id,
        target: kernel_path(&raw.target, size.saturating_sub(UMOUNT_EVENT_FIXED)),
        flags: raw.flags,
        ret: raw.ret,
        duration_ns: raw.duration_ns,
        hooked: (raw.hooked.seen & HOOK_SAW_MOUNT != 0).then_some(ExactMount {
            id: u64::from(raw.hooked.mnt_id),
            mntns: u64::from(raw.hooked.mnt_ns),
            dev: (raw.hooked.dev != 0).then_some((raw.hooked.dev >> 20, raw.hooked.dev & 0xf_ffff)),
            fs_root: raw.hooked.seen & HOOK_FS_ROOT != 0,
        }),
    }
}

fn kernel_path(raw: &probe_common::PathBuf, sent: usize) -> KernelPath {
    let len = (raw.len as usize).min(PATH_BUF_LEN).min(sent);
    KernelPath {
        bytes: raw.bytes[..len].to_vec(),
        truncated: raw.status & PATH_TRUNCATED != 0,
        unreadable: raw.status & PATH_UNREADABLE != 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A zeroed umount record with the given fields, as the kernel writes it: cut after the
    /// target's bytes.
    pub(crate) fn umount_record(pid: u32, target: &[u8], ret: i64, flags: u32) -> Vec<u8> {
        let size = UMOUNT_EVENT_FIXED + target.len();
        let mut bytes = whole_umount_record(pid, target, ret, flags);
        bytes[4..8].copy_from_slice(&(size as u32).to_ne_bytes());
        bytes.truncate(size);
        bytes
    }

    /// As [`umount_record`], the whole struct sent (as busyprobe did until 2026-12-07).
    fn whole_umount_record(pid: u32, target: &[u8], ret: i64, flags: u32) -> Vec<u8> {
        // SAFETY: all-zero is a valid UmountEvent.
        let mut ev: UmountEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = EventKind::Umount as u32;
        ev.header.size = size_of::<UmountEvent>() as u32;
        ev.header.ts_boot_ns = 42;
        ev.header.pid = pid;
        ev.header.tid = pid + 1;
        ev.uid = 1000;
        ev.gid = 100;
        ev.flags = flags;
        ev.ret = ret;
        ev.duration_ns = 5120;
        ev.cgroup_id = 77;
        ev.mntns = 4026531840;
        ev.comm[..9].copy_from_slice(b"umount-me");
        ev.target.len = target.len() as u32;
        ev.target.bytes[..target.len()].copy_from_slice(target);
        bytes_of(&ev)
    }

    /// A plain record's bytes, as the kernel writes them into the ring buffer.
    pub(crate) fn bytes_of<T: Copy>(record: &T) -> Vec<u8> {
        // SAFETY: viewing a plain `repr(C)` struct as bytes.
        unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    /// A release of `fd` on mount `mnt_id` by pid `pid` (thread `pid + 1`, comm `scanner`) at
    /// `ts_boot_ns`, its path within the mount given leaf first (`["passwd", "etc"]` is
    /// `/etc/passwd`).
    pub(crate) fn release_event(
        pid: u32,
        fd: u32,
        mnt_id: u32,
        ts_boot_ns: u64,
        names_leaf_first: &[&[u8]],
    ) -> ReleaseEvent {
        // SAFETY: all-zero is a valid ReleaseEvent.
        let mut ev: ReleaseEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = EventKind::Release as u32;
        ev.header.size = size_of::<ReleaseEvent>() as u32;
        ev.header.ts_boot_ns = ts_boot_ns;
        ev.header.pid = pid;
        ev.header.tid = pid + 1;
        ev.fd = fd;
        ev.mnt_id = mnt_id;
        ev.depth = names_leaf_first.len() as u32;
        for (slot, name) in ev.names.iter_mut().zip(names_leaf_first) {
            slot[..name.len()].copy_from_slice(name);
        }
        ev.comm[..7].copy_from_slice(b"scanner");
        ev
    }

    #[test]
    fn decodes_a_release_record_into_a_path_within_the_mount() {
        let mut ev = release_event(9, 4, 812, 77, &[b"passwd", b"etc"]);
        let bytes = &bytes_of(&ev);
        let KernelEvent::Release(r) = decode(bytes).unwrap() else {
            panic!("not a release")
        };
        assert_eq!(r.path_within_mount, b"/etc/passwd");
        assert_eq!(
            (r.pid, r.tid, r.fd, r.mnt_id, r.ts_boot_ns),
            (9, 10, 4, 812, 77)
        );
        assert_eq!(r.comm, b"scanner");
        assert!(!r.truncated);
        assert_eq!(r.opened_ts_boot_ns, None);
        assert_eq!(r.how, ReleaseHow::Close);
        assert_eq!(r.mount_ns, None);
        assert_eq!(r.queued_events, 0);
        ev.mount_ns = 4026532184;
        ev.queued_events = 3;
        ev.flags = RELEASE_PATH_DEEPER;
        let bytes = &bytes_of(&ev);
        let KernelEvent::Release(r) = decode(bytes).unwrap() else {
            panic!("not a release")
        };
        assert!(r.truncated);
        assert_eq!(r.path_within_mount, "/…/etc/passwd".as_bytes(), "not whole");
        assert_eq!(r.mount_ns, Some(4026532184));
        assert_eq!(r.queued_events, 3);
        assert_eq!(
            (r.opened_ts_boot_ns, r.open_raced),
            (None, false),
            "not seen"
        );
        for (opened, decoded) in [(5_000, (Some(5_000), false)), (OPEN_RACED, (None, true))] {
            ev.opened_ts_boot_ns = opened;
            let KernelEvent::Release(r) = decode(&bytes_of(&ev)).unwrap() else {
                panic!("not a release")
            };
            assert_eq!((r.opened_ts_boot_ns, r.open_raced), decoded);
            assert!(!r.opened_for_event);
        }
        // A fanotify event fd: the flag beside the path's, which stays whole.
        ev.flags = RELEASE_OPENED_FOR_EVENT;
        let KernelEvent::Release(r) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("not a release")
        };
        assert!(r.opened_for_event && !r.truncated);
        assert_eq!(r.path_within_mount, b"/etc/passwd");
    }

    #[test]
    fn the_hooks_exact_mount_is_decoded_only_when_the_hook_ran() {
        let mut bytes = umount_record(1234, b"/mnt/x", -16, 0);
        let KernelEvent::Umount(call) = decode(&bytes).unwrap() else {
            panic!("not an umount")
        };
        assert_eq!(call.hooked, None, "no hook: no exact mount");
        let at = std::mem::offset_of!(UmountEvent, hooked);
        let mut hooked = |fields: [u32; 4]| {
            for (i, v) in fields.into_iter().enumerate() {
                bytes[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_ne_bytes());
            }
            let KernelEvent::Umount(call) = decode(&bytes).unwrap() else {
                panic!("not an umount")
            };
            call.hooked
        };
        // Device 0:57 (the kernel's encoding: major << 20 | minor), shown from its root.
        let got = hooked([HOOK_SAW_MOUNT | HOOK_FS_ROOT, 812, 4026532001, 57]);
        let want = ExactMount {
            id: 812,
            mntns: 4026532001,
            dev: Some((0, 57)),
            fs_root: true,
        };
        assert_eq!(got, Some(want));
        let got = hooked([HOOK_SAW_MOUNT, 812, 4026532001, (8 << 20) | 1]);
        let bind = ExactMount {
            dev: Some((8, 1)),
            fs_root: false,
            ..want
        };
        assert_eq!(got, Some(bind), "a bind mount of a directory of sda1");
        let got = hooked([HOOK_SAW_MOUNT, 812, 4026532001, 0]);
        let unknown = ExactMount {
            dev: None,
            fs_root: false,
            ..want
        };
        assert_eq!(got, Some(unknown), "the device unread");
    }

    #[test]
    fn decodes_an_umount_record() {
        let bytes = umount_record(1234, b"/mnt/x\xff", -16, 2);
        assert_eq!(bytes.len(), UMOUNT_EVENT_FIXED + 7, "cut after the target");
        let KernelEvent::Umount(call) = decode(&bytes).unwrap() else {
            panic!("not an umount")
        };
        let KernelEvent::Umount(whole) =
            decode(&whole_umount_record(1234, b"/mnt/x\xff", -16, 2)).unwrap()
        else {
            panic!("not an umount")
        };
        assert_eq!(whole, call, "a whole record decodes the same");
        assert_eq!(call.pid, 1234);
        assert_eq!(call.tid, 1235);
        assert_eq!(call.uid, 1000);
        assert_eq!(call.gid, 100);
        assert_eq!(call.comm, b"umount-me");
        assert_eq!(call.target.bytes, b"/mnt/x\xff");
        assert!(!call.target.truncated && !call.target.unreadable);
        assert_eq!((call.ret, call.flags, call.duration_ns), (-16, 2, 5120));
        assert_eq!(
            (call.mntns, call.cgroup_id, call.ts_boot_ns),
            (4026531840, 77, 42)
        );
    }

    #[test]
    fn status_bits_become_flags() {
        let mut bytes = umount_record(1, b"/a", 0, 0);
        let status_at = std::mem::offset_of!(UmountEvent, target) + 4;
        bytes[status_at] = (PATH_TRUNCATED | PATH_UNREADABLE) as u8;
        let KernelEvent::Umount(call) = decode(&bytes).unwrap() else {
            panic!("not an umount")
        };
        assert!(call.target.truncated && call.target.unreadable);
    }

    #[test]
    fn length_field_is_clamped_to_the_record() {
        let len_at = std::mem::offset_of!(UmountEvent, target);
        let mut whole = whole_umount_record(1, b"/a", 0, 0);
        whole[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        let KernelEvent::Umount(call) = decode(&whole).unwrap() else {
            panic!("not an umount")
        };
        assert_eq!(call.target.bytes.len(), PATH_BUF_LEN);
        let mut cut = umount_record(1, b"/abc", 0, 0);
        cut[len_at..len_at + 4].copy_from_slice(&100u32.to_ne_bytes());
        let KernelEvent::Umount(call) = decode(&cut).unwrap() else {
            panic!("not an umount")
        };
        assert_eq!(call.target.bytes, b"/abc", "no byte past the record's end");
    }

    #[test]
    fn rejects_short_unknown_and_missized_records() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Short(10)));
        let mut unknown = umount_record(1, b"/a", 0, 0);
        unknown[0] = 99;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(99)));
        let full = umount_record(1, b"/a", 0, 0);
        let said = UMOUNT_EVENT_FIXED + 2;
        assert!(matches!(
            decode(&full[..said - 1]),
            Err(DecodeError::BadSize { got, said: s, .. }) if got == said - 1 && s as usize == said
        ));
        let whole = size_of::<UmountEvent>() as u32;
        for size in [1u32, UMOUNT_EVENT_FIXED as u32 - 1, whole + 1] {
            let mut wrong_size = full.clone();
            wrong_size.resize(4200, 0);
            wrong_size[4..8].copy_from_slice(&size.to_ne_bytes());
            assert!(
                matches!(decode(&wrong_size), Err(DecodeError::BadSize { .. })),
                "size {size}"
            );
        }
    }
}
