//! The poll backend (every Unix). See the contract in the [parent module](super).
//!
//! The `pollfd` array and the fd → (token, interest, index) table live behind
//! a mutex. `select()` copies the array under the lock, waits without it, and
//! maps the results back through the table as it is after the wait (so fds
//! deregistered meanwhile are not reported). Waiting uses `ppoll` with a
//! nanosecond `timespec` where it exists, and `poll` with the timeout rounded
//! up to whole milliseconds elsewhere (macOS).

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use super::fdtable::FdTable;
use super::{
    check_interest, lock, poll_like_readiness, push_event, Event, Interest, Registration, Selector,
    SelectorKind,
};
use crate::sys::{cvt, errno_error};

const IN: u32 = libc::POLLIN as u16 as u32;
const OUT: u32 = libc::POLLOUT as u16 as u32;

#[derive(Debug, Clone, Copy)]
struct PollReg {
    reg: Registration,
    /// Position of this fd's entry in `PollState::pollfds`.
    index: usize,
}

#[derive(Debug)]
struct PollState {
    pollfds: Vec<libc::pollfd>,
    regs: FdTable<PollReg>,
}

/// `poll(2)`-based [`Selector`].
#[derive(Debug)]
pub struct PollSelector {
    state: Mutex<PollState>,
    /// Copy of `pollfds` handed to the kernel, kept to reuse its allocation.
    scratch: Mutex<Vec<libc::pollfd>>,
}

fn poll_bits(interest: Interest) -> libc::c_short {
    let mut bits = 0;
    if interest.is_readable() {
        bits |= libc::POLLIN;
    }
    if interest.is_writable() {
        bits |= libc::POLLOUT;
    }
    bits
}

impl Default for PollSelector {
    fn default() -> Self {
        Self::new()
    }
}

impl PollSelector {
    /// Creates an empty poll selector (no syscall involved).
    pub fn new() -> PollSelector {
        PollSelector {
            state: Mutex::new(PollState {
                pollfds: Vec::new(),
                regs: FdTable::new(),
            }),
            scratch: Mutex::new(Vec::new()),
        }
    }

    fn wait(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
        let nfds = fds.len() as libc::nfds_t;
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "freebsd",
            target_os = "dragonfly",
            target_os = "netbsd",
            target_os = "openbsd"
        ))]
        {
            let ts = timeout.map(crate::sys::timespec_from_duration);
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `fds` is a valid array of `nfds` pollfds, `ts_ptr` is null
            // or points at a live timespec, and a null sigmask keeps the
            // current signal mask.
            let n = cvt(unsafe { libc::ppoll(fds.as_mut_ptr(), nfds, ts_ptr, std::ptr::null()) })?;
            Ok(n as usize)
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
            let ms = timeout.map_or(-1, crate::sys::duration_to_ms_ceil);
            // SAFETY: `fds` is a valid array of `nfds` pollfds.
            let n = cvt(unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) })?;
            Ok(n as usize)
        }
    }
}

impl Selector for PollSelector {
    fn kind(&self) -> SelectorKind {
        SelectorKind::Poll
    }

    fn register(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        check_interest(interest)?;
        if fd < 0 {
            return Err(errno_error(libc::EBADF));
        }
        // A closed fd is accepted, as by CPython's select.poll: poll(2) reports it POLLNVAL,
        // which counts as ready for reading and writing.
        let mut st = lock(&self.state);
        if st.regs.contains(fd) {
            return Err(errno_error(libc::EEXIST));
        }
        let index = st.pollfds.len();
        st.pollfds.push(libc::pollfd {
            fd,
            events: poll_bits(interest),
            revents: 0,
        });
        st.regs.insert(
            fd,
            PollReg {
                reg: Registration { token, interest },
                index,
            },
        );
        Ok(())
    }

    fn reregister(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        check_interest(interest)?;
        let mut st = lock(&self.state);
        let entry = st
            .regs
            .get_mut(fd)
            .ok_or_else(|| errno_error(libc::ENOENT))?;
        entry.reg = Registration { token, interest };
        let index = entry.index;
        st.pollfds[index].events = poll_bits(interest);
        Ok(())
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        let mut st = lock(&self.state);
        let entry = st
            .regs
            .remove(fd)
            .ok_or_else(|| errno_error(libc::ENOENT))?;
        st.pollfds.swap_remove(entry.index);
        if let Some(moved) = st.pollfds.get(entry.index).map(|p| p.fd) {
            st.regs
                .get_mut(moved)
                .expect("every pollfd has a table entry")
                .index = entry.index;
        }
        Ok(())
    }

    fn select(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        // Only contended if two threads select at once: the second one then
        // uses a temporary buffer rather than waiting for the first.
        let mut guard;
        let mut local;
        let fds: &mut Vec<libc::pollfd> = match self.scratch.try_lock() {
            Ok(g) => {
                guard = g;
                &mut guard
            }
            Err(TryLockError::Poisoned(p)) => {
                guard = p.into_inner();
                &mut guard
            }
            Err(TryLockError::WouldBlock) => {
                local = Vec::new();
                &mut local
            }
        };
        fds.clear();
        fds.extend_from_slice(&lock(&self.state).pollfds);
        let mut remaining = Self::wait(fds, timeout)?;
        if remaining == 0 {
            return Ok(());
        }
        let st = lock(&self.state);
        for pfd in fds.iter().filter(|p| p.revents != 0) {
            if let Some(entry) = st.regs.get(pfd.fd) {
                let ready = poll_like_readiness(pfd.revents as u16 as u32, IN, OUT);
                push_event(events, entry.reg, ready);
            }
            remaining -= 1;
            if remaining == 0 {
                break;
            }
        }
        Ok(())
    }
}
