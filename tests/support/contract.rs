//! Checks of the JSON Lines contract (schema version 1) that hold for every line of a type.
//!
//! [`assert_umount_line`] compares an umount line with the `umount2` call the fixture made;
//! tests add their scenario's exact expectations (errno name, flags) on top.

use std::{
    os::unix::fs::MetadataExt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::errno::Errno;
use serde_json::Value;

use super::{fixture::Call, incident::Fixture};

/// Longest target the probe keeps: its buffer is 4096 bytes including the NUL.
pub const TARGET_KEPT: usize = 4095;

/// The names of `umount2` flag bits, in bit order.
const FLAG_NAMES: [(i32, &str); 4] = [
    (libc::MNT_FORCE, "MNT_FORCE"),
    (libc::MNT_DETACH, "MNT_DETACH"),
    (libc::MNT_EXPIRE, "MNT_EXPIRE"),
    (libc::UMOUNT_NOFOLLOW, "UMOUNT_NOFOLLOW"),
];

/// The symbolic name of an errno value, such as `EBUSY`.
pub fn errno_name(errno: i32) -> String {
    format!("{:?}", Errno::from_raw(errno))
}

/// The exact bytes of path field `field`: from `<field>_b64` when present (then `field` must
/// be its lossy UTF-8 form), else from the string itself. `None` when the field is null.
pub fn path_bytes(line: &Value, field: &str) -> Option<Vec<u8>> {
    let b64 = &line[format!("{field}_b64")];
    let text = &line[field];
    if text.is_null() {
        assert!(
            b64.is_null(),
            "{field} is null but {field}_b64 is not: {line}"
        );
        return None;
    }
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string: {line}"));
    if b64.is_null() {
        return Some(text.as_bytes().to_vec());
    }
    let b64 = b64
        .as_str()
        .unwrap_or_else(|| panic!("{field}_b64 is not a string: {line}"));
    let bytes = super::decode_b64(b64)
        .unwrap_or_else(|| panic!("{field}_b64 is not standard padded base64: {line}"));
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "{field}_b64 is only for non-UTF-8 bytes, but these are UTF-8: {line}"
    );
    assert_eq!(
        text,
        String::from_utf8_lossy(&bytes),
        "{field} must be the lossy form of {field}_b64: {line}"
    );
    Some(bytes)
}

/// Checks every field of an umount line against the call `call` made by `fixture`.
pub fn assert_umount_line(line: &Value, fixture: &Fixture, call: &Call) {
    let ctx = format!("\nline: {line}\ncall: {call:?}");
    assert_eq!(line["v"], 1, "v{ctx}");
    assert_eq!(line["type"], "umount", "type{ctx}");
    assert!(line["id"].is_u64(), "id is an unsigned integer{ctx}");
    assert_eq!(line["pid"], fixture.pid(), "pid{ctx}");
    assert_eq!(
        line["tid"],
        fixture.pid(),
        "tid (single-threaded fixture){ctx}"
    );
    assert_eq!(line["comm"], fixture.comm.as_str(), "comm{ctx}");
    assert_eq!(line["uid"], fixture.uid_gid.0, "uid{ctx}");
    assert_eq!(line["gid"], fixture.uid_gid.1, "gid{ctx}");
    assert_mntns(line, fixture, &ctx);
    assert_cgroup(line, fixture, &ctx);
    assert_eq!(line["flags"], call.flags, "flags{ctx}");
    assert_eq!(
        line["flag_names"],
        flag_names(call.flags),
        "flag_names{ctx}"
    );
    assert_result(line, call.errno, &ctx);
    let duration = line["duration_ns"].as_u64();
    assert!(
        duration.is_some_and(|d| d > 0 && d < 10_000_000_000),
        "duration_ns is a positive number of ns under 10 s{ctx}"
    );
    assert_ts_between(line, fixture.started, fixture.finished, &ctx);
    assert_target(line, call, &fixture.report.cwd, &ctx);
    assert_explanation_shape(line, call.errno, &ctx);
}

/// `explanation`, a v1 addition: never on a success or an EBUSY; else, when present,
/// `{code, sentence, related_event}` with a snake_case code, a sentence and an id or null.
fn assert_explanation_shape(line: &Value, errno: i32, ctx: &str) {
    let Some(e) = line.get("explanation") else {
        return;
    };
    assert!(
        errno != 0 && errno != libc::EBUSY,
        "an explanation only on failures other than EBUSY{ctx}"
    );
    let code = e["code"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "explanation.code is snake_case{ctx}"
    );
    assert!(e["sentence"].is_string(), "explanation.sentence{ctx}");
    assert!(
        e["related_event"].is_null() || e["related_event"].is_u64(),
        "explanation.related_event is an id or null{ctx}"
    );
}

fn assert_mntns(line: &Value, fixture: &Fixture, ctx: &str) {
    let own = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
    assert_ne!(
        fixture.mntns, own,
        "fixture runs in its own mount namespace"
    );
    assert_eq!(line["mntns"], fixture.mntns, "mntns{ctx}");
}

/// `cgroup_id` is a number; `cgroup` is null or the fixture's cgroup v2 path.
fn assert_cgroup(line: &Value, fixture: &Fixture, ctx: &str) {
    assert!(line["cgroup_id"].is_u64(), "cgroup_id is a number{ctx}");
    if line["cgroup"].is_null() {
        return;
    }
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", fixture.pid())).unwrap();
    let v2 = own.lines().find_map(|l| l.strip_prefix("0::"));
    assert_eq!(
        line["cgroup"].as_str(),
        v2,
        "cgroup (the cgroup v2 path){ctx}"
    );
}

/// `ret` and `errno` for a call that failed with `errno` (0: succeeded).
fn assert_result(line: &Value, errno: i32, ctx: &str) {
    assert_eq!(line["ret"], -i64::from(errno), "ret{ctx}");
    if errno == 0 {
        assert!(line["errno"].is_null(), "errno is null on success{ctx}");
    } else {
        assert_eq!(line["errno"], errno_name(errno), "errno{ctx}");
    }
}

/// The `flag_names` array expected for `flags`.
pub fn flag_names(flags: i32) -> Value {
    let names = FLAG_NAMES.iter().filter(|(bit, _)| flags & bit != 0);
    Value::from(names.map(|(_, name)| *name).collect::<Vec<_>>())
}

/// `target` and `target_abs`, byte for byte; a target longer than [`TARGET_KEPT`] must be
/// flagged truncated and keep exactly its first [`TARGET_KEPT`] bytes.
fn assert_target(line: &Value, call: &Call, cwd: &[u8], ctx: &str) {
    let target = path_bytes(line, "target").unwrap_or_else(|| panic!("target is null{ctx}"));
    if call.target.len() > TARGET_KEPT {
        assert_eq!(line["target_truncated"], true, "target_truncated{ctx}");
        assert_eq!(
            target,
            &call.target[..TARGET_KEPT],
            "kept target prefix{ctx}"
        );
        return;
    }
    assert_eq!(target, call.target, "target bytes{ctx}");
    assert!(
        matches!(
            line.get("target_truncated"),
            None | Some(Value::Bool(false))
        ),
        "target_truncated absent or false{ctx}"
    );
    let expected_abs = if call.target.starts_with(b"/") {
        call.target.clone()
    } else {
        [cwd, b"/", &call.target].concat()
    };
    let abs = path_bytes(line, "target_abs");
    assert_eq!(
        abs.as_deref(),
        Some(&expected_abs[..]),
        "target_abs (lossy: {:?}){ctx}",
        String::from_utf8_lossy(&expected_abs)
    );
}

/// `ts` is RFC 3339 UTC with nanoseconds, year >= 2024, between `from` and `to` (1 s slack).
fn assert_ts_between(line: &Value, from: SystemTime, to: SystemTime, ctx: &str) {
    let ts = line["ts"].as_str().unwrap_or_else(|| panic!("ts{ctx}"));
    let at = parse_ts(ts).unwrap_or_else(|| panic!("ts is not YYYY-MM-DDTHH:MM:SS.fZ{ctx}"));
    let slack = Duration::from_secs(1);
    assert!(
        at + slack >= from && at <= to + slack,
        "ts {ts} is not within the fixture's lifetime ({}..{} s since the epoch){ctx}",
        epoch_secs(from),
        epoch_secs(to)
    );
}

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (year >= 2024) into a time.
pub fn parse_ts(ts: &str) -> Option<SystemTime> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let num = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok())?
    };
    let mut d = date.split('-');
    let (year, month, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, m, s) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    let valid = year >= 2024
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && h < 24
        && m < 60
        && s < 61
        && d.next().is_none()
        && t.next().is_none()
        && frac.len() <= 9
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    let nanos = format!("{frac:0<9}").parse::<u64>().ok()?;
    let secs = days_since_epoch(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (year >= 1970).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Checks the shape of a stats line and returns its `drops.ringbuf_full`.
pub fn assert_stats_line(line: &Value) -> u64 {
    let ctx = format!("\nline: {line}");
    assert_eq!(line["v"], 1, "v{ctx}");
    assert_eq!(line["type"], "stats", "type{ctx}");
    let ts = line["ts"].as_str().unwrap_or_else(|| panic!("ts{ctx}"));
    assert!(parse_ts(ts).is_some(), "ts{ctx}");
    let count = |v: &Value, what: &str| {
        v.as_u64()
            .unwrap_or_else(|| panic!("{what} is a count{ctx}"))
    };
    let drops = &line["drops"];
    for cause in [
        "ringbuf_full",
        "inflight_map_full",
        "path_truncated",
        "path_unreadable",
        "release_path_cut",
    ] {
        count(&drops[cause], cause);
    }
    count(&line["events"], "events");
    count(&line["decode_errors"], "decode_errors");
    count(&drops["ringbuf_full"], "ringbuf_full")
}

/// Whether `v` is a stats line.
pub fn is_stats(v: &Value) -> bool {
    v["type"] == "stats"
}
