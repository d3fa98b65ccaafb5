//! The kqueue backend (macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly BSD).
//! See the contract in the [parent module](super). All kqueue code lives here.
//!
//! Each interest is one kernel filter: `EVFILT_READ` and/or `EVFILT_WRITE`,
//! added with `EV_ADD` (level-triggered: no `EV_CLEAR`, no `EV_ONESHOT`) and
//! removed with `EV_DELETE`. Changes are submitted with `EV_RECEIPT`, so the
//! kernel answers every change with an `EV_ERROR` receipt whose `data` is the
//! errno (0 on success) instead of failing the whole call, and a zero timeout
//! so that submitting never blocks. A table maps fd → (token, interest): the
//! kernel keeps one registration per (fd, filter) and reports the filters
//! separately, so `select()` merges the read and write events of one fd into a
//! single [`Event`] and masks it by interest.
//!
//! kqueue itself would accept a second `register` of the same fd (`EV_ADD`
//! modifies) and a `deregister` of an unknown one only per filter, so
//! `EEXIST` / `ENOENT` are emulated from the table, as CPython does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use super::fdtable::FdTable;
use super::{
    check_interest, lock, push_event, Event, Interest, Registration, Selector, SelectorKind,
    EVENTS_INITIAL, EVENTS_MAX,
};
use crate::sys::{cvt, errno_error, set_cloexec, timespec_from_duration, zeroed_timespec};

// The field types of `struct kevent` differ: NetBSD uses u32 for filter and
// flags, the others short / unsigned short.
#[cfg(target_os = "netbsd")]
type Filter = u32;
#[cfg(target_os = "netbsd")]
type Flags = u32;
#[cfg(not(target_os = "netbsd"))]
type Filter = i16;
#[cfg(not(target_os = "netbsd"))]
type Flags = u16;

fn new_kevent(fd: RawFd, filter: Filter, flags: Flags) -> libc::kevent {
    // SAFETY: kevent is plain old data: integers and a `udata` pointer (plus
    // `ext` words on FreeBSD), for which all-zero bytes (a null `udata`) are a
    // valid value.
    let mut kev: libc::kevent = unsafe { std::mem::zeroed() };
    kev.ident = fd as libc::uintptr_t;
    kev.filter = filter;
    kev.flags = flags;
    kev
}

/// Up to two changes (one per filter) for `fd`.
fn changes(fd: RawFd, interest: Interest, flags: Flags) -> Vec<libc::kevent> {
    let mut v = Vec::with_capacity(2);
    if interest.is_readable() {
        v.push(new_kevent(fd, libc::EVFILT_READ, flags));
    }
    if interest.is_writable() {
        v.push(new_kevent(fd, libc::EVFILT_WRITE, flags));
    }
    v
}

/// Buffers reused by `select()`.
#[derive(Debug)]
struct Scratch {
    kevents: Vec<libc::kevent>,
    /// (fd, what fired), before merging per fd.
    ready: Vec<(RawFd, Interest)>,
}

// SAFETY: the only field that is not Send is `kevent::udata`, a raw pointer
// that this module always leaves null and never dereferences.
unsafe impl Send for Scratch {}

impl Scratch {
    fn new(capacity: usize) -> Scratch {
        Scratch {
            kevents: (0..capacity)
                .map(|_| new_kevent(0, 0 as Filter, 0))
                .collect(),
            ready: Vec::new(),
        }
    }
}

/// `kqueue(2)`-based [`Selector`].
#[derive(Debug)]
pub struct KqueueSelector {
    kq: OwnedFd,
    regs: Mutex<FdTable<Registration>>,
    scratch: Mutex<Scratch>,
}

impl KqueueSelector {
    /// Creates a kqueue (close-on-exec).
    pub fn new() -> io::Result<KqueueSelector> {
        // SAFETY: kqueue takes no arguments.
        let fd = cvt(unsafe { libc::kqueue() })?;
        // SAFETY: the fd was just created and is owned by nobody else.
        let kq = unsafe { crate::sys::owned(fd) };
        set_cloexec(kq.as_raw_fd(), true)?;
        Ok(KqueueSelector {
            kq,
            regs: Mutex::new(FdTable::new()),
            scratch: Mutex::new(Scratch::new(EVENTS_INITIAL)),
        })
    }

    /// Submits `changes` with `EV_RECEIPT` and returns the first per-change
    /// error whose errno is not in `ignore`.
    fn apply(&self, mut changes: Vec<libc::kevent>, ignore: &[i32]) -> io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        for c in &mut changes {
            c.flags |= libc::EV_RECEIPT;
        }
        let n = changes.len();
        let p = changes.as_mut_ptr();
        let zero = zeroed_timespec();
        // SAFETY: `p` points at `n` valid kevents used both as the change list
        // and as the receipt list (the kernel reads all changes before writing
        // receipts, and writes at most `n`); `zero` is a live timespec.
        let got = cvt(unsafe { libc::kevent(self.kq.as_raw_fd(), p, n as _, p, n as _, &zero) })?;
        for receipt in &changes[..(got as usize).min(n)] {
            if receipt.flags & libc::EV_ERROR != 0 && receipt.data != 0 {
                let errno = receipt.data as i32;
                if !ignore.contains(&errno) {
                    return Err(errno_error(errno));
                }
            }
        }
        Ok(())
    }

    /// Adds filters. `EPIPE` is ignored, as in mio: some macOS versions report
    /// it when adding a write filter to a pipe whose reader has gone, although
    /// the filter is registered.
    fn add(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.apply(changes(fd, interest, libc::EV_ADD), &[libc::EPIPE])
    }

    /// Deletes filters; `ENOENT` (filter not there) is ignored.
    fn delete(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.apply(changes(fd, interest, libc::EV_DELETE), &[libc::ENOENT])
    }
}

impl Selector for KqueueSelector {
    fn kind(&self) -> SelectorKind {
        SelectorKind::Kqueue
    }

    fn register(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        check_interest(interest)?;
        let mut regs = lock(&self.regs);
        if regs.contains(fd) {
            return Err(errno_error(libc::EEXIST));
        }
        if let Err(e) = self.add(fd, interest) {
            // One filter may have been added before the other failed.
            let _ = self.delete(fd, interest);
            return Err(e);
        }
        regs.insert(fd, Registration { token, interest });
        Ok(())
    }

    fn reregister(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        check_interest(interest)?;
        let mut regs = lock(&self.regs);
        let old = *regs.get(fd).ok_or_else(|| errno_error(libc::ENOENT))?;
        let result = self
            .add(fd, interest.remove(old.interest))
            .and_then(|()| self.delete(fd, old.interest.remove(interest)));
        match result {
            Ok(()) => {
                regs.insert(fd, Registration { token, interest });
                Ok(())
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::EBADF) {
                    // Closed since it was registered: the kernel dropped it.
                    regs.remove(fd);
                }
                Err(e)
            }
        }
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        let mut regs = lock(&self.regs);
        let old = regs.remove(fd).ok_or_else(|| errno_error(libc::ENOENT))?;
        // EBADF: closed since it was registered, and closing an fd removes its
        // filters, so it is deregistered all the same.
        self.apply(
            changes(fd, old.interest, libc::EV_DELETE),
            &[libc::ENOENT, libc::EBADF],
        )
    }

    fn select(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        // Only contended if two threads select at once: the second one then
        // uses temporary buffers rather than waiting for the first.
        let mut guard;
        let mut local;
        let scratch: &mut Scratch = match self.scratch.try_lock() {
            Ok(g) => {
                guard = g;
                &mut guard
            }
            Err(TryLockError::Poisoned(p)) => {
                guard = p.into_inner();
                &mut guard
            }
            Err(TryLockError::WouldBlock) => {
                local = Scratch::new(EVENTS_INITIAL);
                &mut local
            }
        };
        let Scratch { kevents, ready } = scratch;
        let ts = timeout.map(timespec_from_duration);
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let cap = kevents.len();
        // SAFETY: no changes are passed; `kevents` has room for `cap` events,
        // and `ts_ptr` is null (wait forever) or points at a live timespec.
        // `cap` is never 0, so the timeout is honoured (CPython bpo-29255).
        let n = cvt(unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                std::ptr::null(),
                0,
                kevents.as_mut_ptr(),
                cap as _,
                ts_ptr,
            )
        })? as usize;
        if n == 0 {
            return Ok(());
        }
        ready.clear();
        for kev in &kevents[..n] {
            let what = if kev.flags & libc::EV_ERROR != 0 {
                Interest::BOTH
            } else if kev.filter == libc::EVFILT_READ {
                Interest::READABLE
            } else if kev.filter == libc::EVFILT_WRITE {
                Interest::WRITABLE
            } else {
                continue;
            };
            ready.push((kev.ident as RawFd, what));
        }
        // One Event per fd: merge the read and write filters of the same fd.
        ready.sort_unstable_by_key(|&(fd, _)| fd);
        {
            let regs = lock(&self.regs);
            for group in ready.chunk_by(|a, b| a.0 == b.0) {
                let what = group.iter().fold(Interest::NONE, |acc, &(_, w)| acc.add(w));
                if let Some(&reg) = regs.get(group[0].0) {
                    push_event(events, reg, what);
                }
            }
        }
        if n == cap && cap < EVENTS_MAX {
            let new_len = (cap * 2).min(EVENTS_MAX);
            kevents.resize(new_len, new_kevent(0, 0 as Filter, 0));
        }
        Ok(())
    }

    fn as_raw_fd(&self) -> Option<RawFd> {
        Some(self.kq.as_raw_fd())
    }
}
