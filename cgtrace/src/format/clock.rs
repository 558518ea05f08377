//! Event timestamps are CLOCK_MONOTONIC (`bpf_ktime_get_ns`); one reference pair taken at start
//! turns them into wall-clock time. Recorded with a session, it gives replays the same text.
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockRef {
    pub mono_ns: u64,
    pub realtime_ns: u64,
}

impl ClockRef {
    pub fn now() -> ClockRef {
        let realtime_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        ClockRef {
            mono_ns: monotonic_ns(),
            realtime_ns,
        }
    }

    /// Wall-clock nanoseconds since the epoch of a monotonic timestamp.
    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        (self.realtime_ns as i128 + mono_ns as i128 - self.mono_ns as i128).max(0) as u64
    }

    /// (hours, minutes, seconds, microseconds) of the UTC time of day.
    pub fn utc_hms_us(&self, mono_ns: u64) -> (u64, u64, u64, u64) {
        let ns = self.wall_ns(mono_ns);
        let secs = ns / 1_000_000_000;
        let day = secs % 86_400;
        (
            day / 3600,
            day % 3600 / 60,
            day % 60,
            ns % 1_000_000_000 / 1000,
        )
    }
}

/// CLOCK_MONOTONIC now, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts() {
        let c = ClockRef {
            mono_ns: 10_000_000_000,
            realtime_ns: 86_400_000_000_000 + 3_723_000_000_000,
        };
        assert_eq!(c.utc_hms_us(10_000_000_000), (1, 2, 3, 0));
        assert_eq!(c.utc_hms_us(10_000_001_500), (1, 2, 3, 1));
        assert_eq!(c.wall_ns(0), 86_400_000_000_000 + 3_713_000_000_000);
    }
}
