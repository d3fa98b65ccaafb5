//! The loop clock agrees with CLOCK_MONOTONIC and is fine-grained.

use oxloop_core::clock;
use oxloop_core::sys::cvt;

fn raw_monotonic() -> f64 {
    // SAFETY: zero is a valid timespec, filled in by clock_gettime.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    #[cfg(not(target_vendor = "apple"))]
    let id = libc::CLOCK_MONOTONIC;
    #[cfg(target_vendor = "apple")]
    let id = libc::CLOCK_UPTIME_RAW;
    // SAFETY: `ts` is a valid, writable timespec.
    cvt(unsafe { libc::clock_gettime(id, &mut ts) }).unwrap();
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[test]
fn monotonic_matches_clock_monotonic() {
    let before = raw_monotonic();
    let ours = clock::monotonic();
    let after = raw_monotonic();
    assert!(
        before <= ours + 1e-6 && ours <= after + 1e-6,
        "{before} {ours} {after}"
    );
    assert!((ours - before).abs() < 0.005);
}

#[test]
fn monotonic_ns_agrees_with_monotonic() {
    let ns = clock::monotonic_ns();
    let s = clock::monotonic();
    let diff = s - ns as f64 / 1e9;
    assert!((0.0..0.005).contains(&diff), "{diff}");
}

#[test]
fn monotonic_never_goes_back() {
    let mut last = clock::monotonic_ns();
    for _ in 0..10_000 {
        let now = clock::monotonic_ns();
        assert!(now >= last);
        last = now;
    }
}

#[test]
fn resolution_is_fine() {
    let r = clock::resolution();
    assert!(r > 0.0 && r <= 1e-6, "{r}");
}
