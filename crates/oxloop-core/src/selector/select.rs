//! The select backend (every Unix). See the contract in the [parent module](super).
//!
//! The read and write `fd_set`s are maintained incrementally behind a mutex
//! together with the fd → (token, interest) table. `select()` copies both sets
//! under the lock, passes a copy of the write set as the except set (its
//! results are merged into writable, as CPython does on Windows), waits with
//! `pselect` (nanosecond `timespec`) without the lock, and maps the results
//! through the table as it is after the wait.
//!
//! Only fds in `0..FD_SETSIZE` are ever put in an `fd_set`: larger ones are
//! rejected at registration, so no memory beyond the sets is ever touched.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;

use super::fdtable::FdTable;
use super::{
    check_interest, lock, push_event, Event, Interest, Registration, Selector, SelectorKind,
};
use crate::sys::{cvt, errno_error, fd_is_valid, timespec_from_duration};

const SETSIZE: RawFd = libc::FD_SETSIZE as RawFd;

/// An `fd_set` that can only be touched at in-range fds.
#[derive(Clone, Copy)]
struct FdSet(libc::fd_set);

impl FdSet {
    fn new() -> FdSet {
        // SAFETY: an fd_set is a plain array of integers; all-zero bytes are a
        // valid value, and exactly the empty set (what FD_ZERO produces).
        FdSet(unsafe { MaybeUninit::<libc::fd_set>::zeroed().assume_init() })
    }

    fn in_range(fd: RawFd) -> bool {
        (0..SETSIZE).contains(&fd)
    }

    fn insert(&mut self, fd: RawFd) {
        assert!(Self::in_range(fd), "fd {fd} outside the fd_set");
        // SAFETY: `fd` is in 0..FD_SETSIZE (checked above) and `self.0` is a
        // valid, initialised fd_set.
        unsafe { libc::FD_SET(fd, &mut self.0) }
    }

    fn remove(&mut self, fd: RawFd) {
        if Self::in_range(fd) {
            // SAFETY: `fd` is in 0..FD_SETSIZE and `self.0` is a valid fd_set.
            unsafe { libc::FD_CLR(fd, &mut self.0) }
        }
    }

    fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: `fd` is in 0..FD_SETSIZE (checked first) and `self.0` is a
        // valid fd_set.
        Self::in_range(fd) && unsafe { libc::FD_ISSET(fd, &self.0) }
    }
}

impl std::fmt::Debug for FdSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries((0..SETSIZE).filter(|&fd| self.contains(fd)))
            .finish()
    }
}

#[derive(Debug)]
struct SelectState {
    regs: FdTable<Registration>,
    read: FdSet,
    write: FdSet,
}

impl SelectState {
    fn set_interest(&mut self, fd: RawFd, interest: Interest) {
        if interest.is_readable() {
            self.read.insert(fd);
        } else {
            self.read.remove(fd);
        }
        if interest.is_writable() {
            self.write.insert(fd);
        } else {
            self.write.remove(fd);
        }
    }
}

/// `select(2)`-based [`Selector`], limited to fds below `FD_SETSIZE`.
#[derive(Debug)]
pub struct SelectSelector {
    state: Mutex<SelectState>,
}

impl Default for SelectSelector {
    fn default() -> Self {
        Self::new()
    }
}

impl SelectSelector {
    /// Creates an empty select selector (no syscall involved).
    pub fn new() -> SelectSelector {
        SelectSelector {
            state: Mutex::new(SelectState {
                regs: FdTable::new(),
                read: FdSet::new(),
                write: FdSet::new(),
            }),
        }
    }
}

impl Selector for SelectSelector {
    fn kind(&self) -> SelectorKind {
        SelectorKind::Select
    }

    fn register(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        check_interest(interest)?;
        if fd >= SETSIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "filedescriptor out of range in select()",
            ));
        }
        fd_is_valid(fd)?; // also rejects negative fds with EBADF
        let mut st = lock(&self.state);
        if st.regs.contains(fd) {
            return Err(errno_error(libc::EEXIST));
        }
        st.regs.insert(fd, Registration { token, interest });
        st.set_interest(fd, interest);
        Ok(())
    }

    fn reregister(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        check_interest(interest)?;
        let mut st = lock(&self.state);
        let reg = st
            .regs
            .get_mut(fd)
            .ok_or_else(|| errno_error(libc::ENOENT))?;
        *reg = Registration { token, interest };
        st.set_interest(fd, interest);
        Ok(())
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.regs
            .remove(fd)
            .ok_or_else(|| errno_error(libc::ENOENT))?;
        st.set_interest(fd, Interest::NONE);
        Ok(())
    }

    fn select(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let (mut read, mut write, nfds) = {
            let st = lock(&self.state);
            (st.read, st.write, st.regs.end())
        };
        let mut except = write;
        let ts = timeout.map(timespec_from_duration);
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the three sets are valid fd_sets, `nfds` <= FD_SETSIZE (only
        // in-range fds are registered), `ts_ptr` is null or points at a live
        // timespec, and a null sigmask keeps the current signal mask.
        let n = cvt(unsafe {
            libc::pselect(
                nfds,
                &mut read.0,
                &mut write.0,
                &mut except.0,
                ts_ptr,
                std::ptr::null(),
            )
        })?;
        if n == 0 {
            return Ok(());
        }
        let st = lock(&self.state);
        for fd in 0..nfds {
            let readable = read.contains(fd);
            let writable = write.contains(fd) || except.contains(fd);
            if !(readable || writable) {
                continue;
            }
            if let Some(&reg) = st.regs.get(fd) {
                push_event(events, reg, Interest::from_flags(readable, writable));
            }
        }
        Ok(())
    }

    fn max_fd(&self) -> Option<RawFd> {
        Some(SETSIZE - 1)
    }
}
