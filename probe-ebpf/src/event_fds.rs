//! fanotify's event fds (enhanced mode): a listener's `read` of its group opens one file per
//! event it returns (`fanotify_read` → `copy_event_to_user` → `dentry_open`), each passing
//! the `file_open` hook in the listener's context. fentry/fexit on `fanotify_read` keep the
//! threads inside it in `READING_EVENTS`, so the hook can tell an event fd from a file the
//! process opened itself: the event, queued earlier, held the file's mount before its fd was
//! opened, so an event fd opened after a failing call may still be what held the mount at the
//! busy check. Keyed by thread, not per CPU: a read sleeps for events and may wake elsewhere.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use probe_common::{assert_symbol_name, names::programs, DropCause};

use crate::maps::{count_drop, READING_EVENTS};

/// fentry on `fanotify_read`: the current thread reads a group's events.
#[fentry(function = "fanotify_read")]
pub fn fentry_fanotify_read(_ctx: FEntryContext) -> u32 {
    if READING_EVENTS.insert(current_tid(), 1, 0).is_err() {
        count_drop(DropCause::InflightMapFull);
    }
    0
}
assert_symbol_name!(fentry_fanotify_read, programs::FENTRY_FANOTIFY_READ);

/// fexit on `fanotify_read`: the current thread is done reading.
#[fexit(function = "fanotify_read")]
pub fn fexit_fanotify_read(_ctx: FExitContext) -> u32 {
    let _ = READING_EVENTS.remove(current_tid());
    0
}
assert_symbol_name!(fexit_fanotify_read, programs::FEXIT_FANOTIFY_READ);

/// Whether the current thread is inside `fanotify_read`: a file it opens now is an event fd.
pub fn reading_events() -> bool {
    // SAFETY: presence check only.
    unsafe { READING_EVENTS.get(current_tid()) }.is_some()
}

fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}
