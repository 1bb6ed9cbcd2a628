//! The choice of an explanation, from facts and history written out by hand.

use super::*;
use crate::{event::KernelPath, state::mountinfo::parse_line};

const EINVAL: i64 = -(libc::EINVAL as i64);
const EPERM: i64 = -(libc::EPERM as i64);
const ENOENT: i64 = -(libc::ENOENT as i64);
const EXPIRE_DETACH: u32 = (libc::MNT_EXPIRE | libc::MNT_DETACH) as u32;

fn call(pid: u32, target: &[u8], ret: i64, flags: u32) -> UmountCall {
    UmountCall {
        ts_boot_ns: 3_000_000_000,
        pid,
        tid: pid,
        uid: 0,
        gid: 0,
        comm: b"kata-agent".to_vec(),
        mntns: 4026532001,
        cgroup_id: 1,
        target: KernelPath {
            bytes: target.to_vec(),
            ..Default::default()
        },
        flags,
        ret,
        duration_ns: 1000,
        hooked: None,
    }
}

fn earlier(pid: u32) -> Unmounted {
    Unmounted {
        id: 7,
        pid,
        comm: b"containerd".to_vec(),
        ts_boot_ns: 1_000_000_000,
    }
}

fn tmpfs() -> MountEntry {
    parse_line(b"812 1 0:50 / /run/m rw - tmpfs tmpfs rw").unwrap()
}

/// The target now: on mount 812 (tmpfs on /run/m), its root or not.
fn on_tmpfs(is_mount_root: bool) -> CallerFacts {
    CallerFacts::Target(Ok(TargetNow {
        mount_id: 812,
        is_mount_root,
        mount: Some(tmpfs()),
        root_mount_id: Some(1),
        owner_userns: Some(4026531837),
        watcher_userns: Some(4026531837),
    }))
}

fn code(e: &Option<Explanation>) -> Option<(&'static str, Option<u64>)> {
    e.as_ref().map(|e| (e.code.as_str(), e.related_event))
}

#[test]
fn the_same_process_again_is_the_end_of_an_unmount_all_loop() {
    let c = call(100, b"/run/m", EINVAL, 0);
    let before = earlier(100);
    let seen = Seen {
        last_unmount: Some(&before),
        cached_mount: Some(tmpfs()),
        ..Seen::default()
    };
    let got = explain(&c, Some(b"/run/m"), &on_tmpfs(false), &seen);
    assert_eq!(code(&got), Some(("unmount_all_loop_end", Some(7))));
    let s = got.unwrap().sentence;
    assert!(
        s.starts_with("end of an unmount-all loop: containerd[100]"),
        "{s}"
    );
    assert!(s.contains("2.00s before (event 7)"), "{s}");
}

#[test]
fn another_process_before_is_an_earlier_unmount_naming_it() {
    let c = call(200, b"/run/m", EINVAL, 0);
    let before = earlier(100);
    let seen = Seen {
        last_unmount: Some(&before),
        ..Seen::default()
    };
    let got = explain(&c, Some(b"/run/m"), &on_tmpfs(false), &seen);
    assert_eq!(code(&got), Some(("unmounted_earlier", Some(7))));
    let s = got.unwrap().sentence;
    assert!(
        s.contains("containerd[100] unmounted it 2.00s earlier (event 7)"),
        "{s}"
    );
    // The caller gone before its target was read: the history still says it.
    let unknown = CallerFacts::Target(Err("gone".into()));
    let got = explain(&c, Some(b"/run/m"), &unknown, &seen);
    assert_eq!(code(&got), Some(("unmounted_earlier", Some(7))));
}

#[test]
fn a_path_inside_a_mount_names_that_mount() {
    let c = call(200, b"/run/m/dir", EINVAL, 0);
    let got = explain(&c, Some(b"/run/m/dir"), &on_tmpfs(false), &Seen::default());
    assert_eq!(code(&got), Some(("not_a_mount_point", None)));
    let s = got.unwrap().sentence;
    assert!(s.contains("inside mount 812 (tmpfs on /run/m)"), "{s}");
    assert!(
        s.contains("nothing mounted there since busyprobe started 0ns before"),
        "{s}"
    );
    let long = Seen {
        watched_ns: 3600 * 1_000_000_000,
        ..Seen::default()
    };
    let got = explain(&c, Some(b"/run/m/dir"), &on_tmpfs(false), &long).unwrap();
    assert!(got
        .sentence
        .contains("nothing mounted there in the last 10 minutes"));
    // A mount the cache saw there, gone without an unmount busyprobe saw.
    let seen = Seen {
        cached_mount: Some(tmpfs()),
        ..Seen::default()
    };
    let got = explain(&c, Some(b"/run/m/dir"), &on_tmpfs(false), &seen);
    assert_eq!(code(&got), Some(("unmounted_earlier", None)));
}

/// A mount gone from the caller's namespace, shared with peers, right after another namespace
/// unmounted the same path: that unmount is named, as the likely propagation.
#[test]
fn a_mount_gone_with_its_peers_unmount_names_it() {
    let c = call(200, b"/run/m/dir", EINVAL, 0);
    let mut gone = tmpfs();
    gone.mount_point = b"/run/m/dir".to_vec();
    gone.id = 900;
    gone.propagation.shared = Some(5);
    let by = Unmounted {
        id: 9,
        pid: 77,
        comm: b"kubelet".to_vec(),
        ts_boot_ns: 2_000_000_000,
    };
    let seen = Seen {
        cached_mount: Some(gone),
        propagated_from: Some((4026532999, &by)),
        ..Seen::default()
    };
    let got = explain(&c, Some(b"/run/m/dir"), &on_tmpfs(false), &seen);
    assert_eq!(code(&got), Some(("unmounted_earlier", Some(9))));
    assert_eq!(
        got.unwrap().sentence,
        "nothing is mounted at /run/m/dir any more: mount 900 (tmpfs, shared:5) was there and \
         is gone without an unmount busyprobe saw in this namespace, most likely by \
         propagation: kubelet[77] unmounted the same path in mount namespace 4026532999 1.00s \
         before (event 9), and this mount follows the unmounts of its peer group; the path is \
         now inside mount 812 (tmpfs on /run/m)"
    );
}

#[test]
fn flags_are_blamed_in_the_kernels_order() {
    // Unknown bits first, whatever the target.
    let c = call(200, b"/run/m/dir", EINVAL, 0x40 | libc::MNT_DETACH as u32);
    let got = explain(&c, Some(b"/run/m/dir"), &on_tmpfs(false), &Seen::default());
    assert_eq!(code(&got), Some(("invalid_flags", None)));
    assert!(got.unwrap().sentence.contains("0x40"));
    // MNT_EXPIRE|MNT_DETACH on a path that is no mount's root: the path is refused first.
    let c = call(200, b"/run/m/dir", EINVAL, EXPIRE_DETACH);
    let got = explain(&c, Some(b"/run/m/dir"), &on_tmpfs(false), &Seen::default());
    assert_eq!(code(&got), Some(("not_a_mount_point", None)));
    // On a mount's root, the flags.
    let c = call(200, b"/run/m", EINVAL, EXPIRE_DETACH);
    let got = explain(&c, Some(b"/run/m"), &on_tmpfs(true), &Seen::default());
    assert_eq!(code(&got), Some(("invalid_flags", None)));
    assert!(got.unwrap().sentence.contains("with MNT_DETACH"));
    // A mount's root with good flags in a mount namespace of the initial user namespace: not
    // explained.
    let c = call(200, b"/run/m", EINVAL, 0);
    assert_eq!(
        explain(&c, Some(b"/run/m"), &on_tmpfs(true), &Seen::default()),
        None
    );
}

#[test]
fn a_mount_root_refused_in_a_less_privileged_namespace_is_locked() {
    let c = call(200, b"/run/m", EINVAL, 0);
    let mut facts = on_tmpfs(true);
    if let CallerFacts::Target(Ok(t)) = &mut facts {
        t.owner_userns = Some(4026532999);
    }
    let got = explain(&c, Some(b"/run/m"), &facts, &Seen::default());
    assert_eq!(code(&got), Some(("locked_mount", None)));
    let s = got.unwrap().sentence;
    let start = "mount 812 (tmpfs on /run/m) is locked: it came into mount namespace 4026532001";
    assert!(s.starts_with(start), "{s}");
    assert!(s.contains("user namespace 4026532999"), "{s}");
    // MNT_EXPIRE|MNT_DETACH there is still the flags.
    let c = call(200, b"/run/m", EINVAL, EXPIRE_DETACH);
    let got = explain(&c, Some(b"/run/m"), &facts, &Seen::default());
    assert_eq!(code(&got), Some(("invalid_flags", None)));
}

#[test]
fn an_unprivileged_caller_is_named_with_both_namespaces() {
    let c = call(300, b"/run/m", EPERM, 0);
    let p = Privileges {
        owner_userns: Some(4026531837),
        owner_uid: Some(0),
        caller_userns: Some(4026531837),
        cap_sys_admin: Some(false),
        euid: Some(65534),
    };
    let got = explain(
        &c,
        Some(b"/run/m"),
        &CallerFacts::Privileges(p.clone()),
        &Seen::default(),
    );
    assert_eq!(code(&got), Some(("no_cap_sys_admin", None)));
    let s = got.unwrap().sentence;
    assert!(
        s.contains("(uid 65534) lacks CAP_SYS_ADMIN in user namespace 4026531837"),
        "{s}"
    );
    assert!(s.contains("mount namespace 4026532001"), "{s}");
    // With the capability where it counts, MNT_FORCE still needs it in the initial namespace;
    // without MNT_FORCE, something else refused (not explained).
    let able = Privileges {
        cap_sys_admin: Some(true),
        euid: Some(0),
        ..p.clone()
    };
    let forced = call(300, b"/run/m", EPERM, libc::MNT_FORCE as u32);
    let got = explain(
        &forced,
        None,
        &CallerFacts::Privileges(able.clone()),
        &Seen::default(),
    );
    assert_eq!(code(&got), Some(("no_cap_sys_admin", None)));
    assert!(got
        .unwrap()
        .sentence
        .contains("but MNT_FORCE needs it in the initial"));
    assert_eq!(
        explain(&c, None, &CallerFacts::Privileges(able), &Seen::default()),
        None
    );
    // Gone before anything was read: said, not guessed.
    let got = explain(
        &c,
        None,
        &CallerFacts::Privileges(Privileges::default()),
        &Seen::default(),
    );
    let s = got.unwrap().sentence;
    assert!(s.contains("unknown"), "{s}");
}

#[test]
fn a_missing_component_is_named() {
    let c = call(300, b"/tmp/a/missing/leaf", ENOENT, 0);
    let facts = CallerFacts::Path(Ok(PathNow::Missing {
        parent: b"/tmp/a".to_vec(),
        component: b"missing".to_vec(),
    }));
    let got = explain(&c, None, &facts, &Seen::default());
    assert_eq!(code(&got), Some(("no_such_path", None)));
    assert!(got
        .unwrap()
        .sentence
        .contains("there is no missing in /tmp/a"));
    let exists = CallerFacts::Path(Ok(PathNow::ExistsNow));
    let got = explain(&c, None, &exists, &Seen::default()).unwrap();
    assert!(
        got.sentence.contains("created after the call"),
        "{}",
        got.sentence
    );
    let gone = CallerFacts::Path(Err("the caller's /proc/300/root: ENOENT".into()));
    let got = explain(&c, None, &gone, &Seen::default()).unwrap();
    assert_eq!(got.code, ExplanationCode::NoSuchPath);
    assert!(got.sentence.contains("unknown"), "{}", got.sentence);
}

#[test]
fn ebusy_and_successes_are_not_explained_and_successes_are_remembered() {
    let mut explainer = Explainer::default();
    let mut ok = crate::event::sample_attempt(b"/run/m", Some(b"/run/m"), 0, 0);
    explainer.observe(&mut ok, &CallerFacts::None);
    assert_eq!(ok.explanation, None);
    let mut busy = crate::event::sample_attempt(b"/run/m", Some(b"/run/m"), -16, 0);
    explainer.observe(&mut busy, &CallerFacts::None);
    assert_eq!(busy.explanation, None);
    let mut again = crate::event::sample_attempt(b"/run/m", Some(b"/run/m"), EINVAL, 0);
    again.id = 43;
    explainer.observe(&mut again, &on_tmpfs(false));
    assert_eq!(
        code(&again.explanation),
        Some(("unmount_all_loop_end", Some(42)))
    );
}
