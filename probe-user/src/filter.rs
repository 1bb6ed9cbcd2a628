//! Which unmount attempts a user asked to see (`--only-failed`, `--path PREFIX`).

use crate::{event::UmountAttempt, paths};

/// A user's selection of unmount attempts.
#[derive(Clone, Debug, Default)]
pub struct AttemptFilter {
    /// Hide successful unmounts.
    pub only_failed: bool,
    /// Keep only targets at or below this absolute path.
    pub path_prefix: Option<Vec<u8>>,
}

impl AttemptFilter {
    /// Whether the attempt is shown. With a path prefix, an attempt whose absolute target is
    /// unknown is shown only if its raw target matches (never hidden for lack of context).
    pub fn accepts(&self, attempt: &UmountAttempt) -> bool {
        if self.only_failed && !attempt.call.failed() {
            return false;
        }
        let Some(prefix) = &self.path_prefix else {
            return true;
        };
        let target = attempt
            .target_abs
            .as_deref()
            .unwrap_or(&attempt.call.target.bytes);
        paths::is_under(target, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(target: &[u8], abs: Option<&[u8]>, ret: i64) -> UmountAttempt {
        crate::event::sample_attempt(target, abs, ret, 0)
    }

    #[test]
    fn default_accepts_everything() {
        assert!(AttemptFilter::default().accepts(&attempt(b"/x", Some(b"/x"), 0)));
    }

    #[test]
    fn only_failed_hides_successes() {
        let f = AttemptFilter {
            only_failed: true,
            ..Default::default()
        };
        assert!(!f.accepts(&attempt(b"/x", Some(b"/x"), 0)));
        assert!(f.accepts(&attempt(b"/x", Some(b"/x"), -16)));
    }

    #[test]
    fn path_prefix_uses_the_absolute_target() {
        let f = AttemptFilter {
            path_prefix: Some(b"/var/lib/containerd".to_vec()),
            ..Default::default()
        };
        assert!(f.accepts(&attempt(
            b"mnt",
            Some(b"/var/lib/containerd/tmpmounts/m1"),
            -16
        )));
        assert!(!f.accepts(&attempt(
            b"/var/lib/containerd-old/m",
            Some(b"/var/lib/containerd-old/m"),
            -16
        )));
        assert!(!f.accepts(&attempt(b"mnt", None, -16)));
        assert!(f.accepts(&attempt(b"/var/lib/containerd/x", None, -16)));
    }
}
