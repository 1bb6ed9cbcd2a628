//! `busyprobe who`'s contract beyond the holder kinds: exit statuses (0 held, 1 not held,
//! 2 error) and a path that is not a mount point (the mount it is on is named).

use libtest_mimic::Trial;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::process::{self, tool, DieWithTest, Reaped, OUTPUT_TIMEOUT};

/// Every trial.
pub fn trials() -> Vec<Trial> {
    trials![
        who_counts_and_names_processes_it_cannot_inspect,
        who_inside_a_mount_names_that_mount_and_exits_by_holders,
        who_on_a_missing_path_exits_2,
        who_into_a_closed_pipe_keeps_its_answer,
        who_pod_answers_for_every_volume_of_the_pod,
        who_pod_names_what_it_cannot_find,
    ]
}

/// Runs a shell script in a private mount namespace (its mounts vanish with it).
fn in_private_namespace(script: &str) -> Output {
    process::output(
        Command::new(tool("unshare"))
            .args(["-m", "--propagation", "private", "sh", "-c", script])
            .env("BUSYPROBE", env!("CARGO_BIN_EXE_busyprobe")),
    )
}

fn who_inside_a_mount_names_that_mount_and_exits_by_holders() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().canonicalize().unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Nothing holds the tmpfs (exit 1), then a child sits in it (exit 0); `who` is asked
    // about a directory inside the mount both times. The second time, once the child is
    // `sleep` with its working directory in the mount (at most 10 s; else a fifth line says
    // so).
    let script = format!(
        r#"mount -t tmpfs whotest {m}; mkdir {m}/sub
"$BUSYPROBE" who --json {m}/sub; echo "status=$?"
(cd {m}/sub && exec sleep 30) &
i=0
until [ "$(cat /proc/$!/comm)" = sleep ] && [ "$(readlink /proc/$!/cwd)" = {m}/sub ]; do
    i=$((i+1)); [ $i -lt 1000 ] || {{ echo "the child never sat in the mount"; break; }}
    sleep 0.01
done
"$BUSYPROBE" who --json {m}/sub; echo "status=$?"
kill $!"#,
        m = mnt.display()
    );
    let out = in_private_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "two answers, two statuses:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (idle, held): (Value, Value) = (
        serde_json::from_str(lines[0]).unwrap(),
        serde_json::from_str(lines[2]).unwrap(),
    );
    for who in [&idle, &held] {
        assert_eq!(who["is_mount_point"], false, "{who}");
        assert_eq!(who["path"], mnt.join("sub").to_str().unwrap(), "{who}");
        assert_eq!(
            who["mount"]["mount_point"],
            mnt.to_str().unwrap(),
            "the mount it is on: {who}"
        );
        assert_eq!(who["mount"]["source"], "whotest", "{who}");
    }
    assert_eq!(lines[1], "status=1", "nothing holds it: {idle}");
    assert_eq!(idle["holders"], serde_json::json!([]), "{idle}");
    assert_eq!(lines[3], "status=0", "a cwd holds it: {held}");
    let cwd = &held["holders"][0];
    assert_eq!(cwd["kind"], "cwd", "{held}");
    assert_eq!(cwd["comm"], "sleep", "{held}");
    assert_eq!(cwd["path"], mnt.join("sub").to_str().unwrap(), "{held}");
}

fn who_on_a_missing_path_exits_2() {
    let out = process::output(
        Command::new(env!("CARGO_BIN_EXE_busyprobe")).args(["who", "/nonexistent/busyprobe/path"]),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("busyprobe: error: resolving /nonexistent/busyprobe/path"),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}

/// As an unprivileged user most processes cannot be inspected (EACCES on /proc/PID/fd): they
/// are counted and named, and the scan goes on to an answer.
fn who_counts_and_names_processes_it_cannot_inspect() {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("busyprobe");
    std::fs::copy(env!("CARGO_BIN_EXE_busyprobe"), &copy).unwrap();
    let out = crate::support::output_of_fresh_copy(
        Command::new(&copy)
            .args(["who", "--scan", "proc", "--json", "/tmp"])
            .uid(65534)
            .gid(65534),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "an answer, not an error: {stderr}"
    );
    assert!(stderr.contains("not running as root"), "{stderr}");
    let who: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let blocked = who["uninspectable"].as_array().expect("uninspectable");
    let init = blocked
        .iter()
        .find(|u| u["pid"] == 1)
        .unwrap_or_else(|| panic!("pid 1 is named: {who}"));
    assert!(
        init["comm"].as_str().is_some_and(|c| !c.is_empty()),
        "{init}"
    );
    assert_eq!(
        init["error"], "reading /proc/1/fd: Permission denied (os error 13)",
        "{init}"
    );
    assert!(
        who["processes_scanned"].as_u64().unwrap() > blocked.len() as u64 / 2,
        "{who}"
    );
}

/// `busyprobe who PATH | head -1`: a reader that goes away before `who` has written is not an
/// error (2); the exit status is still the answer (0 held, 1 not held), as a script asks it.
fn who_into_a_closed_pipe_keeps_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().canonicalize().unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let idle = format!(
        r#"mount -t tmpfs whopipe {m} && exec "$BUSYPROBE" who {m}"#,
        m = mnt.display()
    );
    // `/` is held by every process's root directory.
    for (script, answer) in [(r#"exec "$BUSYPROBE" who /"#, 0), (idle.as_str(), 1)] {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader); // every write into the pipe fails with EPIPE
        let mut child = Reaped(
            Command::new(tool("unshare"))
                .args(["-m", "--propagation", "private", "sh", "-c", script])
                .env("BUSYPROBE", env!("CARGO_BIN_EXE_busyprobe"))
                .stdin(std::process::Stdio::null())
                .stdout(writer)
                .die_with_test()
                .spawn()
                .expect("start unshare"),
        );
        let status = process::wait(&mut child, OUTPUT_TIMEOUT);
        assert_eq!(status.code(), Some(answer), "{script}");
    }
}

/// `who --pod UID`: every mount under the kubelet's directory of that pod (two volumes, one
/// of them with a nested mount) and who holds each; the other pod's volume is left out.
fn who_pod_answers_for_every_volume_of_the_pod() {
    const UID: &str = "6c0b7c4e-2f59-4a53-9d0e-3f1c2b4a5d6e";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("kubelet");
    let pod = root.join("pods").join(UID);
    let cache = pod.join("volumes/kubernetes.io~empty-dir/cache");
    let config = pod.join("volumes/kubernetes.io~configmap/config");
    let other = root.join("pods/11111111-2222-4333-8444-555555555555/volumes/x");
    for d in [&cache, &config, &other] {
        std::fs::create_dir_all(d).unwrap();
    }
    let script = format!(
        r#"mount -t tmpfs cache {cache}; mkdir {cache}/sub; mount -t tmpfs nested {cache}/sub
mount -t tmpfs config {config}; mount -t tmpfs other {other}
(cd {config} && exec sleep 30) &
i=0
until [ "$(cat /proc/$!/comm)" = sleep ] && [ "$(readlink /proc/$!/cwd)" = {config} ]; do
    i=$((i+1)); [ $i -lt 1000 ] || {{ echo "the child never sat in the volume"; break; }}
    sleep 0.01
done
"$BUSYPROBE" who --json --cri-socket none --kubelet-root {root} --pod {UID}; echo "status=$?"
echo "pid=$!"
kill $!"#,
        cache = cache.display(),
        config = config.display(),
        other = other.display(),
        root = root.display(),
    );
    let out = in_private_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "three answers, status, pid:\n{stdout}\n{stderr}"
    );
    let answers: Vec<Value> = lines[..3]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let points: Vec<&str> = answers
        .iter()
        .map(|a| a["mount"]["mount_point"].as_str().unwrap())
        .collect();
    let (config, cache) = (config.to_str().unwrap(), cache.to_str().unwrap());
    let nested = format!("{cache}/sub");
    assert_eq!(points, vec![config, cache, nested.as_str()], "{stdout}");
    assert_eq!(
        lines[3], "status=0",
        "a cwd holds the config volume: {stdout}"
    );
    let pid: u64 = lines[4].strip_prefix("pid=").unwrap().parse().unwrap();
    let held = &answers[0]["holders"];
    assert_eq!(held.as_array().unwrap().len(), 1, "{held}");
    assert_eq!(
        (&held[0]["kind"], &held[0]["pid"], &held[0]["comm"]),
        (
            &Value::from("cwd"),
            &Value::from(pid),
            &Value::from("sleep")
        ),
        "{held}"
    );
    // The cache volume is held by its nested mount (a submount), the nested one by nothing.
    assert_eq!(
        answers[1]["holders"][0]["kind"], "submount",
        "{}",
        answers[1]
    );
    assert_eq!(
        answers[2]["holders"],
        serde_json::json!([]),
        "{}",
        answers[2]
    );
}

/// A pod UID the kubelet has no directory for, and a pod name without a runtime to ask:
/// exit status 2 and one sentence saying what to do.
fn who_pod_names_what_it_cannot_find() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let run = |pod: &str| {
        process::output(Command::new(env!("CARGO_BIN_EXE_busyprobe")).args([
            "who",
            "--cri-socket",
            "none",
            "--kubelet-root",
            root,
            "--pod",
            pod,
        ]))
    };
    let out = run("0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "no directory {root}/pods/0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d: the kubelet has no pod with UID"
        )),
        "{stderr}"
    );
    let out = run("demo/web-0");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the container runtime does not know a pod demo/web-0"),
        "{stderr}"
    );
    assert!(stderr.contains("kubectl get pod -n demo web-0"), "{stderr}");
}
