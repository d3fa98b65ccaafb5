//! [`Waker`]: wakes a [`Selector::select`](crate::selector::Selector::select)
//! blocked in another thread (`call_soon_threadsafe`, signal wake-ups).
//!
//! On Linux/Android it is an `eventfd(EFD_NONBLOCK | EFD_CLOEXEC)`; elsewhere a
//! non-blocking close-on-exec pipe. Register [`Waker::fd`] for
//! [`Interest::READABLE`](crate::selector::Interest::READABLE); when it fires,
//! call [`Waker::drain`] so that it stops being readable (selectors are
//! level-triggered).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::sys::cvt;

/// A wake-up channel for a selector. `Send + Sync`: any thread may call
/// [`wake`](Waker::wake).
#[derive(Debug)]
pub struct Waker {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// One descriptor: writes add to a 64-bit counter, a read resets it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    EventFd(OwnedFd),
    /// The portable fallback (also built in tests on Linux to exercise it).
    #[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
    Pipe { read: OwnedFd, write: OwnedFd },
}

/// `EAGAIN` means "already signalled" (counter or pipe full) for `wake`, and
/// "nothing left" for `drain`: both are success.
fn ok_if_would_block(r: io::Result<isize>) -> io::Result<Option<isize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

impl Waker {
    /// Creates a waker (an eventfd on Linux/Android, a pipe elsewhere).
    pub fn new() -> io::Result<Waker> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // SAFETY: eventfd takes no pointers.
            let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
            // SAFETY: eventfd succeeded; the new fd is ours alone.
            let fd = unsafe { crate::sys::owned(fd) };
            Ok(Waker {
                inner: Inner::EventFd(fd),
            })
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Self::new_pipe()
        }
    }

    #[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
    fn new_pipe() -> io::Result<Waker> {
        let (read, write) = crate::sys::pipe()?;
        Ok(Waker {
            inner: Inner::Pipe { read, write },
        })
    }

    /// The descriptor to register for `READABLE`.
    pub fn fd(&self) -> RawFd {
        match &self.inner {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Inner::EventFd(fd) => fd.as_raw_fd(),
            #[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
            Inner::Pipe { read, .. } => read.as_raw_fd(),
        }
    }

    /// Makes [`fd`](Waker::fd) readable. A full counter or pipe (`EAGAIN`)
    /// means it is readable already, and counts as success.
    pub fn wake(&self) -> io::Result<()> {
        match &self.inner {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Inner::EventFd(fd) => {
                let one: u64 = 1;
                // SAFETY: writes the 8 bytes of `one`, a live local.
                let r = cvt(unsafe {
                    libc::write(
                        fd.as_raw_fd(),
                        (&one as *const u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                });
                ok_if_would_block(r).map(drop)
            }
            #[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
            Inner::Pipe { write, .. } => {
                let byte = 1u8;
                // SAFETY: writes the single byte `byte`, a live local.
                let r =
                    cvt(unsafe { libc::write(write.as_raw_fd(), (&byte as *const u8).cast(), 1) });
                ok_if_would_block(r).map(drop)
            }
        }
    }

    /// Consumes all pending wake-ups so that [`fd`](Waker::fd) is no longer
    /// readable. Nothing pending (`EAGAIN`) is success.
    pub fn drain(&self) -> io::Result<()> {
        match &self.inner {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Inner::EventFd(fd) => {
                let mut counter: u64 = 0;
                // SAFETY: reads at most 8 bytes into `counter`, a live local.
                let r = cvt(unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        (&mut counter as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                });
                ok_if_would_block(r).map(drop)
            }
            #[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
            Inner::Pipe { read, .. } => {
                let mut buf = [0u8; 256];
                loop {
                    // SAFETY: reads at most `buf.len()` bytes into `buf`, a live local.
                    let r = cvt(unsafe {
                        libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    });
                    match ok_if_would_block(r)? {
                        // Drained (EAGAIN), or EOF, which cannot happen while we
                        // own the write end.
                        None | Some(0) => return Ok(()),
                        Some(_) => continue,
                    }
                }
            }
        }
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = cvt(unsafe { libc::poll(&mut pfd, 1, 0) }).unwrap();
        n == 1 && pfd.revents & libc::POLLIN != 0
    }

    fn exercise(w: &Waker) {
        assert!(!is_readable(w.fd()));
        w.drain().unwrap(); // nothing pending: still Ok
        for _ in 0..100_000 {
            w.wake().unwrap(); // the pipe fills up long before this: EAGAIN is Ok
        }
        assert!(is_readable(w.fd()));
        w.drain().unwrap();
        assert!(!is_readable(w.fd()));
    }

    #[test]
    fn default_waker() {
        exercise(&Waker::new().unwrap());
    }

    #[test]
    fn pipe_waker() {
        exercise(&Waker::new_pipe().unwrap());
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn eventfd_counter_full_is_ok() {
        let w = Waker::new().unwrap();
        let max: u64 = u64::MAX - 1; // the largest value an eventfd counter holds
                                     // SAFETY: writes the 8 bytes of `max`, a live local.
        let r = cvt(unsafe { libc::write(w.fd(), (&max as *const u64).cast(), 8) });
        assert_eq!(r.unwrap(), 8);
        w.wake().unwrap(); // would overflow: EAGAIN, reported as success
        w.drain().unwrap();
        assert!(!is_readable(w.fd()));
    }

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Waker>();
    }
}
