//! The event loop's clock, identical to Python's `time.monotonic()`.
//!
//! CPython reads `CLOCK_MONOTONIC` (on Apple platforms `mach_absolute_time()`,
//! which is what `CLOCK_UPTIME_RAW` returns), converts it to integer
//! nanoseconds and then to seconds as an `f64`. [`monotonic`] does exactly the
//! same, so times computed in Rust and in Python (`loop.time()`, timer
//! deadlines) are directly comparable.

use crate::sys::{cvt, zeroed_timespec};

#[cfg(not(target_vendor = "apple"))]
const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
// CPython uses mach_absolute_time() on Apple platforms; CLOCK_UPTIME_RAW is the
// same clock (CLOCK_MONOTONIC there also counts time asleep).
#[cfg(target_vendor = "apple")]
const CLOCK: libc::clockid_t = libc::CLOCK_UPTIME_RAW;

fn timespec_ns(ts: &libc::timespec) -> u64 {
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Nanoseconds of the monotonic clock (arbitrary epoch, typically boot).
pub fn monotonic_ns() -> u64 {
    let mut ts = zeroed_timespec();
    // SAFETY: `ts` is a valid, writable timespec.
    cvt(unsafe { libc::clock_gettime(CLOCK, &mut ts) })
        .expect("clock_gettime(CLOCK_MONOTONIC) cannot fail with a valid clock id and buffer");
    timespec_ns(&ts)
}

/// Seconds of the monotonic clock, bit-for-bit what Python's
/// `time.monotonic()` returns for the same instant.
pub fn monotonic() -> f64 {
    ns_to_seconds(monotonic_ns() as i64)
}

/// CPython's `_PyTime_AsSecondsDouble`: exact integer division when the value
/// is a whole number of seconds, `ns as f64 / 1e9` otherwise.
fn ns_to_seconds(ns: i64) -> f64 {
    const NS_PER_SEC: i64 = 1_000_000_000;
    if ns % NS_PER_SEC == 0 {
        (ns / NS_PER_SEC) as f64
    } else {
        ns as f64 / 1e9
    }
}

/// Resolution of the monotonic clock in seconds (`clock_getres`), as reported
/// by Python's `time.get_clock_info("monotonic").resolution` on Linux.
pub fn resolution() -> f64 {
    let mut ts = zeroed_timespec();
    // SAFETY: `ts` is a valid, writable timespec.
    cvt(unsafe { libc::clock_getres(CLOCK, &mut ts) })
        .expect("clock_getres(CLOCK_MONOTONIC) cannot fail with a valid clock id and buffer");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_conversion_matches_cpython() {
        assert_eq!(ns_to_seconds(3_000_000_000), 3.0);
        assert_eq!(ns_to_seconds(1_500_000_000), 1.5);
        assert_eq!(ns_to_seconds(123_456_789_012), 123_456_789_012f64 / 1e9);
    }
}
