//! Failures other than EBUSY explained on the `umount` line (`explanation`: code, sentence,
//! related event): real `umount2` calls by fixture processes in private mount namespaces,
//! under the real `busyprobe watch --json`.

use std::{os::unix::fs::MetadataExt, path::Path};

use libtest_mimic::Trial;
use serde_json::Value;

use crate::support::{
    contract::assert_umount_line,
    fixture::Plan,
    incident::{observe, observe_one, Fixture},
    process::tool,
    watcher::{is_umount_of, lines_text, Watcher},
};

/// No extra arguments for `busyprobe watch --json`.
const NO_ARGS: [&str; 0] = [];

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        explain_einval_after_another_process_unmounted_it,
        explain_einval_after_an_unmount_propagated_from_another_namespace,
        explain_einval_at_the_end_of_an_unmount_all_loop,
        explain_einval_on_a_directory_inside_a_tmpfs,
        explain_einval_for_mnt_expire_with_mnt_detach,
        explain_einval_on_a_locked_mount,
        explain_eperm_without_cap_sys_admin,
        explain_enoent_names_the_missing_component,
    ]
}

/// A new temporary directory (removed on drop) and its canonical path.
fn temp_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let path = dir.path().canonicalize().expect("canonicalize temp dir");
    (dir, path)
}

/// A line's explanation: its code, related event and sentence (the line must have one).
fn explanation(line: &Value) -> (&str, &Value, &str) {
    let e = &line["explanation"];
    let code = e["code"].as_str();
    let sentence = e["sentence"].as_str();
    match (code, sentence) {
        (Some(code), Some(sentence)) => (code, &e["related_event"], sentence),
        _ => panic!("no explanation on the line: {line}"),
    }
}

/// umount(8)'s successful unmount of `mnt` among `seen`.
fn unmount_by_umount8<'a>(seen: &'a [Value], mnt: &Path) -> &'a Value {
    let line = seen
        .iter()
        .find(|v| v["type"] == "umount" && v["target_abs"] == text(mnt) && v["ret"] == 0)
        .unwrap_or_else(|| panic!("umount(8)'s unmount of {mnt:?}: {}", lines_text(seen)));
    assert_eq!(line["comm"], "umount", "{line}");
    line
}

/// The path as the sentences write it.
fn text(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Two processes tear the same mount down (the Kata double teardown): umount(8) unmounts it,
/// then the fixture's own `umount2` fails with EINVAL, named as an earlier unmount by umount(8),
/// with its event id.
fn explain_einval_after_another_process_unmounted_it() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let none: [&str; 0] = [];
    let plan = Plan::new()
        .tmpfs(&mnt)
        .must_run(&[tool("umount").as_path(), &mnt], &none)
        .umount2(&mnt, 0);
    let fixture = Fixture::run(&plan);
    let seen = watcher.read_until("the fixture's umount line", |v| {
        is_umount_of(v, fixture.pid())
    });
    let line = seen.last().expect("the fixture's line");
    assert_umount_line(line, &fixture, &fixture.report.calls[0]);
    assert_eq!(line["errno"], "EINVAL", "{line}");
    let earlier = unmount_by_umount8(&seen, &mnt);
    assert_eq!(earlier["mntns"], fixture.mntns, "{earlier}");
    let other = earlier["pid"].as_u64().expect("pid");
    assert_ne!(other, u64::from(fixture.pid()));
    let (code, related, sentence) = explanation(line);
    assert_eq!(code, "unmounted_earlier", "{line}");
    assert_eq!(related, &earlier["id"], "{line}");
    assert_eq!(line["pid"], fixture.pid());
    let start = format!(
        "nothing is mounted at {} any more: umount[{other}] unmounted it ",
        text(&mnt)
    );
    assert!(sentence.starts_with(&start), "{sentence}");
    assert!(
        sentence.contains(&format!("earlier (event {})", earlier["id"])),
        "{sentence}"
    );
    assert!(earlier.get("explanation").is_none(), "a success has none");
}

/// The mount is gone from the caller's namespace because another namespace, a peer of it (as a
/// pod's namespace is of the host's), unmounted the same path: the EINVAL names that unmount,
/// by its process, namespace and event. The fixture first fails with EBUSY (busyprobe then
/// knows its namespace's table), waits for the test to have seen that line, and lets go; then
/// a peer namespace (`unshare -m --propagation unchanged`) unmounts it, and the fixture's own
/// `umount2` fails with EINVAL.
fn explain_einval_after_an_unmount_propagated_from_another_namespace() {
    let (_dir, tmp) = temp_dir();
    let (base, go) = (tmp.join("base"), crate::agent::GoAhead(tmp.join("go")));
    let mnt = base.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let none: [&str; 0] = [];
    let unshare = ["unshare", "-m", "--propagation", "unchanged"];
    let umount = tool("umount");
    let in_a_peer: Vec<&std::ffi::OsStr> = unshare
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([umount.as_os_str(), mnt.as_os_str()])
        .collect();
    let plan = Plan::new()
        .tmpfs(&base)
        .make_shared(&base)
        .tmpfs(&mnt)
        .hold(mnt.join("f"))
        .umount2(&mnt, 0)
        .release()
        .wait_for(&go.0)
        .must_run(&in_a_peer, &none)
        .umount2(&mnt, 0);
    let fixture = std::thread::scope(|threads| {
        let fixture = threads.spawn(|| Fixture::run(&plan));
        watcher.read_until("the fixture's EBUSY", |v| {
            v["type"] == "umount" && v["target_abs"] == text(&mnt) && v["errno"] == "EBUSY"
        });
        drop(go);
        fixture.join().expect("the fixture")
    });
    let seen = watcher.read_until("the fixture's EINVAL", |v| {
        is_umount_of(v, fixture.pid()) && v["errno"] == "EINVAL"
    });
    let line = seen.last().expect("the EINVAL line");
    assert_umount_line(line, &fixture, &fixture.report.calls[1]);
    let peer = unmount_by_umount8(&seen, &mnt);
    assert_ne!(peer["mntns"], fixture.mntns, "another namespace: {peer}");
    let (code, related, sentence) = explanation(line);
    assert_eq!(code, "unmounted_earlier", "{line}");
    assert_eq!(related, &peer["id"], "{line}");
    let mount = mount_id_at(fixture.pid(), &base);
    let start = format!("nothing is mounted at {} any more: mount ", text(&mnt));
    let named = format!(
        "most likely by propagation: umount[{}] unmounted the same path in mount namespace {} ",
        peer["pid"], peer["mntns"]
    );
    assert!(sentence.starts_with(&start), "{sentence}");
    assert!(sentence.contains("(tmpfs, shared:"), "{sentence}");
    assert!(sentence.contains(&named), "{sentence}");
    assert!(
        sentence.contains(&format!("before (event {})", peer["id"])),
        "{sentence}"
    );
    assert!(
        sentence.ends_with(&format!(
            "now inside mount {mount} (tmpfs on {})",
            text(&base)
        )),
        "{sentence}"
    );
}

/// The same process unmounts the same target twice (containerd's unmount-all loop): the second
/// call's EINVAL is the end of the loop, related to the first call's line.
fn explain_einval_at_the_end_of_an_unmount_all_loop() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new().tmpfs(&mnt).umount2(&mnt, 0).umount2(&mnt, 0);
    let (fixture, lines) = observe(&watcher, &plan);
    let [first, second] = &lines[..] else {
        panic!("two lines: {}", lines_text(&lines));
    };
    assert_eq!(fixture.report.calls[0].errno, 0, "the first call worked");
    assert_eq!(fixture.report.calls[1].errno, libc::EINVAL);
    assert_eq!(second["errno"], "EINVAL", "{second}");
    assert_eq!(second["pid"], fixture.pid());
    let (code, related, sentence) = explanation(second);
    assert_eq!(code, "unmount_all_loop_end", "{second}");
    assert_eq!(related, &first["id"], "{second}");
    assert!(
        sentence.starts_with(&format!(
            "end of an unmount-all loop: {}[{}] unmounted {} successfully ",
            fixture.comm,
            fixture.pid(),
            text(&mnt)
        )),
        "{sentence}"
    );
    assert!(first.get("explanation").is_none(), "{first}");
}

/// The id of the mount at `mount_point` in the live process `pid`'s mount table.
fn mount_id_at(pid: u32, mount_point: &Path) -> u64 {
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    table
        .lines()
        .rev()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            (fields.get(4) == Some(&text(mount_point))).then(|| fields[0].parse().ok())?
        })
        .unwrap_or_else(|| panic!("nothing mounted at {mount_point:?} in {pid}:\n{table}"))
}

/// A directory inside a tmpfs, never a mount point: EINVAL names the tmpfs it lies in.
fn explain_einval_on_a_directory_inside_a_tmpfs() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let dir = mnt.join("dir");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new().tmpfs(&mnt).mkdir(&dir).umount2(&dir, 0);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_eq!(call.errno, libc::EINVAL);
    assert_eq!(line["pid"], fixture.pid());
    let id = mount_id_at(fixture.pid(), &mnt);
    let (code, related, sentence) = explanation(&line);
    assert_eq!(code, "not_a_mount_point", "{line}");
    assert_eq!(related, &Value::Null, "{line}");
    let start = format!(
        "{} is not a mount point: busyprobe saw nothing mounted there since busyprobe started ",
        text(&dir)
    );
    assert!(sentence.starts_with(&start), "{sentence}");
    assert!(
        sentence.contains(&format!("inside mount {id} (tmpfs on {})", text(&mnt))),
        "{sentence}"
    );
}

/// `MNT_EXPIRE | MNT_DETACH` on a mount point: the kernel refuses the pair, and the line says
/// which flags.
fn explain_einval_for_mnt_expire_with_mnt_detach() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new()
        .tmpfs(&mnt)
        .umount2(&mnt, libc::MNT_EXPIRE | libc::MNT_DETACH);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_eq!(call.errno, libc::EINVAL);
    assert_eq!(line["pid"], fixture.pid());
    let (code, related, sentence) = explanation(&line);
    assert_eq!(code, "invalid_flags", "{line}");
    assert_eq!(related, &Value::Null, "{line}");
    assert!(
        sentence.starts_with("MNT_EXPIRE cannot be combined with MNT_DETACH:"),
        "{sentence}"
    );
}

/// A tmpfs copied into a mount namespace owned by a new user namespace is locked there: the
/// fixture, with every capability in that user namespace, gets EINVAL, and the line names the
/// mount, the mount namespace and the user namespace.
fn explain_einval_on_a_locked_mount() {
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new()
        .tmpfs(&mnt)
        .new_user_namespace()
        .umount2(&mnt, 0);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_eq!(call.errno, libc::EINVAL);
    assert_eq!(line["pid"], fixture.pid());
    let id = mount_id_at(fixture.pid(), &mnt);
    let userns = std::fs::metadata(format!("/proc/{}/ns/user", fixture.pid()))
        .expect("the fixture's user namespace")
        .ino();
    let (code, related, sentence) = explanation(&line);
    assert_eq!(code, "locked_mount", "{line}");
    assert_eq!(related, &Value::Null, "{line}");
    let start = format!(
        "mount {id} (tmpfs on {}) is locked: it came into mount namespace {} from a more \
         privileged one (copied when that namespace was made for user namespace {userns},",
        text(&mnt),
        fixture.mntns
    );
    assert!(sentence.starts_with(&start), "{sentence}");
}

/// A fixture that dropped to uid 65534 (no capabilities left) gets EPERM: the line names the
/// missing capability, the user namespace that owns its mount namespace (the initial one, the
/// test's own) and that mount namespace.
fn explain_eperm_without_cap_sys_admin() {
    const NOBODY: u32 = 65534;
    let (_dir, tmp) = temp_dir();
    let mnt = tmp.join("mnt");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new().tmpfs(&mnt).become_user(NOBODY).umount2(&mnt, 0);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_eq!(call.errno, libc::EPERM);
    assert_eq!(line["pid"], fixture.pid());
    let userns = std::fs::metadata("/proc/self/ns/user")
        .expect("own user namespace")
        .ino();
    let (code, related, sentence) = explanation(&line);
    assert_eq!(code, "no_cap_sys_admin", "{line}");
    assert_eq!(related, &Value::Null, "{line}");
    let caller = format!("{}[{}]", fixture.comm, fixture.pid());
    assert!(
        sentence.starts_with(&format!(
            "{caller} (uid {NOBODY}) lacks CAP_SYS_ADMIN in user namespace {userns} (created by \
             uid 0), which owns its mount namespace {}",
            fixture.mntns
        )),
        "{sentence}"
    );
    assert!(
        sentence.contains("its effective capabilities lack CAP_SYS_ADMIN"),
        "{sentence}"
    );
}

/// A target whose middle component is missing: ENOENT names that component and the part of
/// the path that exists, as the caller sees them.
fn explain_enoent_names_the_missing_component() {
    let (_dir, tmp) = temp_dir();
    let exists = tmp.join("exists");
    let target = exists.join("missing").join("leaf");
    let watcher = Watcher::start(&NO_ARGS);
    let plan = Plan::new().mkdir(&exists).umount2(&target, 0);
    let (fixture, call, line) = observe_one(&watcher, &plan);
    assert_eq!(call.errno, libc::ENOENT);
    assert_eq!(line["pid"], fixture.pid());
    let (code, related, sentence) = explanation(&line);
    assert_eq!(code, "no_such_path", "{line}");
    assert_eq!(related, &Value::Null, "{line}");
    assert_eq!(
        sentence,
        format!(
            "{} does not exist as {}[{}] sees it: there is no missing in {}",
            text(&target),
            fixture.comm,
            fixture.pid(),
            text(&exists)
        )
    );
}
