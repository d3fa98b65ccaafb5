//! Low-level helpers around raw syscalls.
//!
//! Every libc call in this crate reports its result through [`cvt`], which
//! turns the C convention "`-1` and `errno`" into an [`io::Result`]. Nothing
//! here retries on `EINTR`: callers that block (the selectors) must surface
//! [`io::ErrorKind::Interrupted`] so that Python signal handlers can run.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Integer types returned by syscalls, where `-1` means failure and the cause
/// is in `errno`.
pub trait SyscallReturn: Copy + PartialEq {
    /// The failure value, `-1`.
    const MINUS_ONE: Self;
}

macro_rules! impl_syscall_return {
    ($($t:ty),*) => {$(
        impl SyscallReturn for $t {
            const MINUS_ONE: Self = -1;
        }
    )*};
}
impl_syscall_return!(i32, i64, isize);

/// Converts a raw syscall return value: `-1` becomes
/// [`io::Error::last_os_error`], anything else is passed through.
///
/// Must be called right after the syscall, before anything else can clobber
/// `errno`.
#[inline]
pub fn cvt<T: SyscallReturn>(ret: T) -> io::Result<T> {
    if ret == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An `io::Error` carrying the given `errno` value.
#[inline]
pub(crate) fn errno_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Checks that `fd` is an open file descriptor (`fcntl(fd, F_GETFD)`).
///
/// Returns `Err` with `EBADF` for a closed or negative fd.
pub fn fd_is_valid(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`; an invalid fd
    // is reported as EBADF, never undefined behaviour.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) }).map(drop)
}

/// Sets or clears `O_NONBLOCK` on `fd`. Does nothing if it is already as asked.
pub fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<()> {
    // SAFETY: F_GETFL only reads the file status flags of `fd`.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let new = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL with an int argument changes only the status flags of `fd`.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// Sets or clears `FD_CLOEXEC` on `fd`. Does nothing if it is already as asked.
pub fn set_cloexec(fd: RawFd, cloexec: bool) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let new = if cloexec {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    if new != flags {
        // SAFETY: F_SETFD with an int argument changes only the descriptor flags of `fd`.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, new) })?;
    }
    Ok(())
}

/// Takes ownership of a freshly created descriptor returned by a syscall.
///
/// # Safety
/// `fd` must be an open descriptor that nothing else owns or will close.
#[inline]
pub(crate) unsafe fn owned(fd: RawFd) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Creates a non-blocking, close-on-exec pipe: `(read end, write end)`.
/// (Used by the waker where there is no eventfd.)
#[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "netbsd",
        target_os = "openbsd"
    ))]
    {
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill in.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        Ok(unsafe { (owned(fds[0]), owned(fds[1])) })
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "netbsd",
        target_os = "openbsd"
    )))]
    {
        // SAFETY: `fds` is a valid array of two ints for pipe to fill in.
        cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
        // SAFETY: pipe succeeded, so both fds are open and owned by nobody else.
        let (r, w) = unsafe { (owned(fds[0]), owned(fds[1])) };
        for fd in [&r, &w] {
            use std::os::fd::AsRawFd;
            set_cloexec(fd.as_raw_fd(), true)?;
            set_nonblocking(fd.as_raw_fd(), true)?;
        }
        Ok((r, w))
    }
}

/// Longest timeout handed to the kernel, in seconds (about 3 years).
///
/// macOS rejects `select()` timeouts above 10^8 s with `EINVAL`, and
/// everything else is happy with it; a longer timeout is indistinguishable
/// from "forever" for an event loop.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 100_000_000;

/// A zero-initialised `libc::timespec` (it has private padding fields on some
/// targets, so it cannot be built with a struct literal portably).
#[inline]
pub(crate) fn zeroed_timespec() -> libc::timespec {
    // SAFETY: timespec is plain old data: integers (and padding) for which
    // all-zero bytes are a valid value.
    unsafe { MaybeUninit::<libc::timespec>::zeroed().assume_init() }
}

/// Converts a timeout to a `timespec` with full nanosecond precision, clamped
/// to [`MAX_TIMEOUT_SECS`].
pub(crate) fn timespec_from_duration(d: Duration) -> libc::timespec {
    let mut ts = zeroed_timespec();
    if d.as_secs() >= MAX_TIMEOUT_SECS {
        ts.tv_sec = MAX_TIMEOUT_SECS as libc::time_t;
    } else {
        ts.tv_sec = d.as_secs() as libc::time_t;
        ts.tv_nsec = d.subsec_nanos() as _;
    }
    ts
}

#[allow(dead_code)] // unused on targets with both epoll_pwait2-less paths compiled out
/// Converts a timeout to whole milliseconds, rounding UP so that a wait never
/// ends before the timeout (0.3 ms becomes 1 ms, not 0), clamped to `c_int::MAX`.
pub(crate) fn duration_to_ms_ceil(d: Duration) -> libc::c_int {
    let ms = d.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn cvt_maps_minus_one_to_errno() {
        // SAFETY: closing fd -1 is always EBADF and touches nothing.
        let err = cvt(unsafe { libc::close(-1) }).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert_eq!(cvt(5i64).unwrap(), 5);
        assert_eq!(cvt(0isize).unwrap(), 0);
    }

    #[test]
    fn ms_rounding_is_ceil() {
        assert_eq!(duration_to_ms_ceil(Duration::ZERO), 0);
        assert_eq!(duration_to_ms_ceil(Duration::from_micros(300)), 1);
        assert_eq!(duration_to_ms_ceil(Duration::from_millis(2)), 2);
        assert_eq!(duration_to_ms_ceil(Duration::from_nanos(2_000_001)), 3);
        assert_eq!(duration_to_ms_ceil(Duration::MAX), libc::c_int::MAX);
    }

    #[test]
    fn timespec_keeps_nanoseconds_and_clamps() {
        let ts = timespec_from_duration(Duration::from_nanos(1_300_000_123));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (1, 300_000_123));
        let ts = timespec_from_duration(Duration::MAX);
        assert_eq!((ts.tv_sec as u64, ts.tv_nsec), (MAX_TIMEOUT_SECS, 0));
    }

    #[test]
    fn pipe_flags() {
        let (r, w) = pipe().unwrap();
        for fd in [r.as_raw_fd(), w.as_raw_fd()] {
            // SAFETY: reading flags of an fd we own.
            let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            assert_ne!(fl & libc::O_NONBLOCK, 0);
            // SAFETY: as above.
            let fd_fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert_ne!(fd_fl & libc::FD_CLOEXEC, 0);
        }
        set_nonblocking(r.as_raw_fd(), false).unwrap();
        // SAFETY: reading flags of an fd we own.
        let fl = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0);
        fd_is_valid(r.as_raw_fd()).unwrap();
        assert_eq!(
            fd_is_valid(-1).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
