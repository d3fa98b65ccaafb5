//! The epoll backend (Linux, Android). See the contract in the [parent module](super).
//!
//! Registrations are level-triggered `EPOLLIN` / `EPOLLOUT` with the fd number
//! as epoll data; a table maps the fd to its token and interest, which is
//! needed to mask `EPOLLERR`/`EPOLLHUP` by interest like CPython does.
//!
//! Waiting uses `epoll_pwait2` (Linux 5.11+, nanosecond timeouts). If the
//! kernel lacks it (`ENOSYS`, or `EPERM` from a seccomp filter that does not
//! know it), that is remembered process-wide and `epoll_wait` is used with the
//! timeout rounded up to whole milliseconds. Android always uses `epoll_wait`:
//! its app seccomp policy kills processes that make unknown syscalls.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use super::fdtable::FdTable;
use super::{
    check_interest, lock, poll_like_readiness, push_event, Event, Interest, Registration, Selector,
    SelectorKind, EVENTS_INITIAL, EVENTS_MAX,
};
use crate::sys::{cvt, duration_to_ms_ceil, errno_error};

/// Set once `epoll_pwait2` turned out to be unavailable.
#[cfg(target_os = "linux")]
static PWAIT2_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;

const EMPTY_EVENT: libc::epoll_event = libc::epoll_event { events: 0, u64: 0 };

/// `epoll(7)`-based [`Selector`].
#[derive(Debug)]
pub struct EpollSelector {
    epfd: OwnedFd,
    regs: Mutex<FdTable<Registration>>,
    buf: Mutex<Vec<libc::epoll_event>>,
}

fn epoll_bits(interest: Interest) -> u32 {
    let mut bits = 0;
    if interest.is_readable() {
        bits |= IN;
    }
    if interest.is_writable() {
        bits |= OUT;
    }
    bits
}

/// The kernel's `struct __kernel_timespec` (64-bit fields on every
/// architecture), which `epoll_pwait2` takes, unlike libc's `timespec`.
#[cfg(target_os = "linux")]
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

impl EpollSelector {
    /// Creates an epoll instance (close-on-exec).
    pub fn new() -> io::Result<EpollSelector> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the fd was just created and is owned by nobody else.
        let epfd = unsafe { crate::sys::owned(fd) };
        Ok(EpollSelector {
            epfd,
            regs: Mutex::new(FdTable::new()),
            buf: Mutex::new(vec![EMPTY_EVENT; EVENTS_INITIAL]),
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.ctl_bits(op, fd, epoll_bits(interest))
    }

    fn ctl_bits(&self, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `ev` is a valid epoll_event (ignored by EPOLL_CTL_DEL).
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// One wait, filling `buf`; returns the number of events.
    fn wait(&self, buf: &mut [libc::epoll_event], timeout: Option<Duration>) -> io::Result<usize> {
        let maxevents = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
        #[cfg(target_os = "linux")]
        if !PWAIT2_UNSUPPORTED.load(Ordering::Relaxed) {
            let ts = timeout.map(|d| {
                let d = d.min(Duration::from_secs(crate::sys::MAX_TIMEOUT_SECS));
                KernelTimespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: i64::from(d.subsec_nanos()),
                }
            });
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const KernelTimespec);
            // SAFETY: epoll_pwait2(epfd, events, maxevents, timeout, sigmask,
            // sigsetsize): `buf` has room for `maxevents` events, `ts_ptr` is
            // null or points at a live __kernel_timespec, and a null sigmask
            // means "keep the current mask" (sigsetsize is then ignored). All
            // integer arguments are passed as c_long, as syscall() reads them.
            let r = cvt(unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epfd.as_raw_fd() as libc::c_long,
                    buf.as_mut_ptr(),
                    maxevents as libc::c_long,
                    ts_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0 as libc::c_long,
                )
            });
            match r {
                Ok(n) => return Ok(n as usize),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    PWAIT2_UNSUPPORTED.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let ms = timeout.map_or(-1, duration_to_ms_ceil);
        // SAFETY: `buf` has room for `maxevents` events.
        let n = cvt(unsafe {
            libc::epoll_wait(self.epfd.as_raw_fd(), buf.as_mut_ptr(), maxevents, ms)
        })?;
        Ok(n as usize)
    }
}

impl EpollSelector {
    /// EPOLL_CTL_MOD, or EPOLL_CTL_ADD when the kernel does not know (this file under) `fd`.
    fn mod_or_add(&self, fd: RawFd, bits: u32) -> io::Result<()> {
        match self.ctl_bits(libc::EPOLL_CTL_MOD, fd, bits) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.ctl_bits(libc::EPOLL_CTL_ADD, fd, bits)
            }
            r => r,
        }
    }
}

impl Selector for EpollSelector {
    fn kind(&self) -> SelectorKind {
        SelectorKind::Epoll
    }

    fn register(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        check_interest(interest)?;
        // Hold the table lock across the syscall so that kernel and table
        // change together with respect to other registering threads.
        let mut regs = lock(&self.regs);
        if regs.get(fd).is_some_and(|r| r.interest.is_empty()) {
            // A released one-shot registration: re-arm it (or add the new file).
            self.mod_or_add(fd, epoll_bits(interest))?;
            regs.insert(fd, Registration { token, interest });
            return Ok(());
        }
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest)?;
        // A leftover entry (fd closed without deregistering, number reused)
        // is simply replaced: the kernel is the authority.
        regs.insert(fd, Registration { token, interest });
        Ok(())
    }

    fn reregister(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        check_interest(interest)?;
        let mut regs = lock(&self.regs);
        // An fd this table knows but the kernel does not was closed while registered and its
        // number reused (a closed file leaves the epoll set by itself): the caller now means
        // the new file, so it is added, as a fresh register() would.
        let res = if regs.get(fd).is_some() {
            self.mod_or_add(fd, epoll_bits(interest))
        } else {
            self.ctl(libc::EPOLL_CTL_MOD, fd, interest)
        };
        match res {
            Ok(()) => {
                regs.insert(fd, Registration { token, interest });
                Ok(())
            }
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBADF)) {
                    // The kernel does not know this fd (any more): drop a stale entry.
                    regs.remove(fd);
                }
                Err(e)
            }
        }
    }

    fn arm_oneshot(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<bool> {
        check_interest(interest)?;
        let mut regs = lock(&self.regs);
        let bits = epoll_bits(interest) | libc::EPOLLONESHOT as u32;
        if regs.get(fd).is_some() {
            self.mod_or_add(fd, bits)?;
        } else {
            match self.ctl_bits(libc::EPOLL_CTL_ADD, fd, bits) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.ctl_bits(libc::EPOLL_CTL_MOD, fd, bits)?
                }
                r => r?,
            }
        }
        regs.insert(fd, Registration { token, interest });
        Ok(true)
    }

    fn release_oneshot(&self, fd: RawFd) -> io::Result<()> {
        let mut regs = lock(&self.regs);
        match regs.get(fd) {
            Some(r) => {
                let token = r.token;
                regs.insert(
                    fd,
                    Registration {
                        token,
                        interest: Interest::NONE,
                    },
                );
                Ok(())
            }
            None => Err(errno_error(libc::ENOENT)),
        }
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        let mut regs = lock(&self.regs);
        let known = regs.remove(fd).is_some();
        match self.ctl(libc::EPOLL_CTL_DEL, fd, Interest::NONE) {
            Ok(()) => Ok(()),
            // Registered here but closed since: the kernel dropped it already.
            Err(e) if known && matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBADF)) => {
                Ok(())
            }
            Err(e) if !known && e.raw_os_error() == Some(libc::EBADF) => {
                Err(errno_error(libc::ENOENT))
            }
            Err(e) => Err(e),
        }
    }

    fn select(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        // The buffer is only contended if two threads select at once; the
        // second one then uses a temporary buffer rather than waiting.
        let mut guard;
        let mut local;
        let buf: &mut Vec<libc::epoll_event> = match self.buf.try_lock() {
            Ok(g) => {
                guard = g;
                &mut guard
            }
            Err(TryLockError::Poisoned(p)) => {
                guard = p.into_inner();
                &mut guard
            }
            Err(TryLockError::WouldBlock) => {
                local = vec![EMPTY_EVENT; EVENTS_INITIAL];
                &mut local
            }
        };
        let n = self.wait(buf, timeout)?;
        if n == 0 {
            return Ok(());
        }
        {
            let regs = lock(&self.regs);
            for ev in &buf[..n] {
                let (bits, data) = (ev.events, ev.u64);
                if let Some(&reg) = regs.get(data as RawFd) {
                    push_event(events, reg, poll_like_readiness(bits, IN, OUT));
                }
            }
        }
        if n == buf.len() && buf.len() < EVENTS_MAX {
            let new_len = (buf.len() * 2).min(EVENTS_MAX);
            buf.resize(new_len, EMPTY_EVENT);
        }
        Ok(())
    }

    fn as_raw_fd(&self) -> Option<RawFd> {
        Some(self.epfd.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    #[test]
    fn oneshot_fires_once_then_released_and_rearmed() {
        let sel = EpollSelector::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        assert!(sel.arm_oneshot(fd, 7, Interest::READABLE).unwrap());
        b.write_all(b"x").unwrap();
        let mut ev = Vec::new();
        sel.select(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].token, 7);
        // Disarmed: the unread byte is not reported again.
        sel.select(&mut ev, Some(Duration::ZERO)).unwrap();
        assert!(ev.is_empty());
        sel.release_oneshot(fd).unwrap();
        // A plain registration of the same fd re-arms it (the kernel still has it).
        sel.register(fd, 8, Interest::READABLE).unwrap();
        sel.select(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!((ev.len(), ev[0].token), (1, 8));
        sel.deregister(fd).unwrap();
        assert!(sel.arm_oneshot(fd, 9, Interest::READABLE).unwrap());
        sel.select(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!((ev.len(), ev[0].token), (1, 9));
        sel.release_oneshot(fd).unwrap();
        assert!(sel.arm_oneshot(fd, 10, Interest::READABLE).unwrap());
        sel.select(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!((ev.len(), ev[0].token), (1, 10));
        sel.release_oneshot(fd).unwrap();
    }

    #[test]
    fn released_oneshot_of_closed_fd_then_new_file_same_number() {
        let sel = EpollSelector::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        // A duplicate keeps the old file alive after `a` is closed.
        // SAFETY: dup of a valid fd; the result is owned below.
        let dup = unsafe { crate::sys::owned(cvt(libc::dup(fd)).unwrap()) };
        assert!(sel.arm_oneshot(fd, 1, Interest::READABLE).unwrap());
        b.write_all(b"x").unwrap();
        let mut ev = Vec::new();
        sel.select(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!(ev.len(), 1);
        sel.release_oneshot(fd).unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        // dup2 closes `a`'s number and reuses it atomically: closing first and then dup2-ing
        // onto the free number races with other test threads opening fds (EBUSY, or their fd
        // replaced).
        let a = a.into_raw_fd();
        // SAFETY: dup2 onto the number `a` had (its old file lives on in `dup`); `c2` owns it
        // afterwards, and nothing else does (`a` was given up by into_raw_fd).
        let c2 = unsafe { crate::sys::owned(cvt(libc::dup2(c.as_raw_fd(), a)).unwrap()) };
        drop(c);
        sel.register(fd, 2, Interest::READABLE).unwrap();
        b.write_all(b"old").unwrap();
        sel.select(&mut ev, Some(Duration::ZERO)).unwrap();
        assert!(ev.is_empty(), "the old file woke the new registration");
        d.write_all(b"new").unwrap();
        sel.select(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!((ev.len(), ev[0].token), (1, 2));
        sel.deregister(fd).unwrap();
        drop((dup, c2));
    }

    #[test]
    fn buffer_grows_when_full() {
        let sel = EpollSelector::new().unwrap();
        let mut socks = Vec::new();
        for i in 0..300u64 {
            let (a, b) = UnixStream::pair().unwrap();
            sel.register(a.as_raw_fd(), i, Interest::WRITABLE).unwrap();
            socks.push((a, b));
        }
        let mut events = Vec::new();
        sel.select(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), EVENTS_INITIAL);
        assert_eq!(lock(&sel.buf).len(), 2 * EVENTS_INITIAL);
        sel.select(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 300);
        let mut tokens: Vec<u64> = events.iter().map(|e| e.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, (0..300).collect::<Vec<_>>());
    }

    /// Forces the `epoll_wait` fallback (as after ENOSYS) for the whole test
    /// process; the other tests in this binary do not depend on which path
    /// is taken, only on the results, which are the same.
    #[cfg(target_os = "linux")]
    #[test]
    fn epoll_wait_fallback_rounds_up() {
        let sel = EpollSelector::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        sel.register(a.as_raw_fd(), 1, Interest::READABLE).unwrap();
        PWAIT2_UNSUPPORTED.store(true, Ordering::Relaxed);
        let mut events = Vec::new();
        for timeout in [Duration::from_micros(300), Duration::from_millis(2)] {
            let start = Instant::now();
            sel.select(&mut events, Some(timeout)).unwrap();
            assert!(events.is_empty());
            assert!(
                start.elapsed() >= timeout,
                "{timeout:?}: {:?}",
                start.elapsed()
            );
        }
        b.write_all(b"x").unwrap();
        sel.select(&mut events, None).unwrap();
        assert_eq!(events.len(), 1);
        PWAIT2_UNSUPPORTED.store(false, Ordering::Relaxed);
    }

    #[test]
    fn hup_is_masked_by_interest() {
        let sel = EpollSelector::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        sel.register(a.as_raw_fd(), 5, Interest::READABLE).unwrap();
        drop(b);
        let mut events = Vec::new();
        sel.select(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(
            events,
            [Event {
                token: 5,
                readable: true,
                writable: false
            }]
        );
    }
}
