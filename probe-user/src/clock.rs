//! Converting the kernel's `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`) to wall time,
//! and writing a duration for people (the one formatter every output and sentence uses).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{clock_gettime, ClockId};

/// Wall-clock time of boot, measured once: `CLOCK_REALTIME - CLOCK_BOOTTIME`.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    boot_wall_ns: i128,
}

fn nanos(clock: ClockId) -> i128 {
    let ts = clock_gettime(clock).expect("clock_gettime on a standard clock cannot fail");
    i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
}

impl BootClock {
    /// Measures the offset now.
    pub fn now() -> Self {
        let boot = nanos(ClockId::CLOCK_BOOTTIME);
        let real = nanos(ClockId::CLOCK_REALTIME);
        Self {
            boot_wall_ns: real - boot,
        }
    }

    /// A clock whose boot happened at the given wall time (for tests).
    #[cfg(test)]
    pub fn booted_at_ns(boot_wall_ns: i128) -> Self {
        Self { boot_wall_ns }
    }

    /// The wall-clock time of a `CLOCK_BOOTTIME` reading.
    pub fn to_wall(self, boot_ns: u64) -> SystemTime {
        let wall = (self.boot_wall_ns + i128::from(boot_ns)).max(0);
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall).unwrap_or(u64::MAX))
    }
}

/// `CLOCK_BOOTTIME` now, in ns: the kernel's clock of the events.
pub fn boot_ns_now() -> u64 {
    u64::try_from(nanos(ClockId::CLOCK_BOOTTIME)).unwrap_or(0)
}

/// A duration for people: `999ns`, `1.5µs`, `2.5ms`, `3.00s`.
pub fn for_people(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_boot_ns_to_wall_time() {
        let clock = BootClock::booted_at_ns(1_700_000_000_000_000_000);
        let wall = clock.to_wall(5_000_000_123);
        assert_eq!(
            wall.duration_since(UNIX_EPOCH).unwrap().as_nanos(),
            1_700_000_005_000_000_123
        );
    }

    #[test]
    fn measured_clock_is_close_to_now() {
        let clock = BootClock::now();
        let boot_now = nanos(ClockId::CLOCK_BOOTTIME) as u64;
        let diff = SystemTime::now()
            .duration_since(clock.to_wall(boot_now))
            .unwrap_or_default();
        assert!(diff < Duration::from_secs(1), "{diff:?}");
    }
}
