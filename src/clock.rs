//! Time sources, and how kstash writes a time or a duration for people.
//!
//! Invariant: only the proposer and the guard read a clock; apply uses the
//! time stamped into each entry. [`format_duration`] writes what the config
//! parser reads back to the same value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Move forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Format ms since the epoch as RFC 3339 (UTC, second precision).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A duration as an operator writes it in config: in the largest unit that
/// divides it exactly (`32d`, `1h`, `90m`, `15m`, `90s`, `250ms`), or, when
/// that would take 100 or more of the unit, in combined units from the
/// largest down (`59m59s`, `1h40m`, `1d1s`, `1s500ms`); `0s` for zero.
/// Never months or years (humantime's own output says `1month 1day 8h…` for
/// 32 days). The config parser reads every output back to the same value.
pub fn format_duration(d: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let (unit, size) = UNITS
        .into_iter()
        .find(|(_, size)| nanos.is_multiple_of(*size))
        .expect("a nanosecond divides every duration");
    let count = nanos / size;
    if count < 100 {
        return format!("{count}{unit}");
    }
    let mut left = nanos;
    let mut out = String::new();
    for (unit, size) in UNITS {
        let n = left / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            left -= n * size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_written_and_parse_back() {
        let cases = [
            (Duration::from_secs(32 * 86_400), "32d"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(15 * 60), "15m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(5400), "90m"),
            (Duration::from_secs(6000), "1h40m"),
            (Duration::from_secs(3599), "59m59s"),
            (Duration::from_secs(36 * 3600), "36h"),
            (Duration::from_secs(400 * 86_400), "400d"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_secs(86_400 + 1), "1d1s"),
            (Duration::from_nanos(1_001), "1us1ns"),
            (Duration::ZERO, "0s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d, "{text}");
        }
    }
}
