//! Level-triggered readiness selectors, with the semantics of CPython's
//! `selectors` module.
//!
//! # The backend contract
//!
//! Every backend ([`SelectorKind`]) implements [`Selector`] and behaves the
//! same way, so that the event loop above it does not care which one it got.
//!
//! **Registration.** A selector maps each registered fd to a caller-chosen,
//! opaque `u64` token and an [`Interest`] (readable, writable or both).
//! Registration methods take `&self` and may be called from any thread, even
//! while another thread is blocked in [`Selector::select`]; epoll and kqueue
//! apply the change at once, poll and select from their next `select()` call.
//!
//! * [`register`](Selector::register) of an fd that is already registered
//!   fails with `EEXIST`; of a negative fd with `EBADF`; of a closed fd with
//!   `EBADF` on epoll, kqueue and select, while poll accepts it and reports it
//!   ready (`POLLNVAL`) on every call, as CPython's `select.poll` does; of a
//!   regular file with `EPERM` on epoll (the kernel refuses it), while poll and
//!   select accept it and report it always ready, like CPython (kqueue:
//!   whatever the kernel says per filter).
//! * [`reregister`](Selector::reregister) replaces token and interest; an
//!   unknown fd gives `ENOENT`. On epoll, an fd the selector knows but the
//!   kernel dropped (it was closed while registered and its number now names
//!   another file) is added anew: the caller means the file the number names
//!   now. A closed fd gives `EBADF` there.
//! * [`deregister`](Selector::deregister) of an unknown fd gives `ENOENT`.
//!   Deregistering an fd that was closed while registered succeeds (the kernel
//!   has dropped it already), as CPython's `unregister()` does, so a caller may
//!   close first and deregister afterwards. Prefer deregistering first: the
//!   select backend fails the whole `select()` with `EBADF` while a closed fd
//!   is registered, and poll reports it ready (`POLLNVAL`) on every call.
//! * `Interest::NONE` is rejected with `InvalidInput` (CPython raises
//!   `ValueError` too): deregister instead. With level-triggered epoll an fd
//!   registered for nothing would still report hang-ups and spin the loop.
//! * epoll and kqueue report errors straight from the kernel; select emulates
//!   the same errno values (`EBADF` via `fcntl(F_GETFD)`, checked at
//!   `register` only: it does not notice a later close until `select`).
//! * The select backend only accepts fds below `FD_SETSIZE` (1024):
//!   [`max_fd`](Selector::max_fd) says so, and `register` of a larger fd fails
//!   with `InvalidInput`, "filedescriptor out of range in select()".
//!
//! **Waiting.** [`select`](Selector::select) clears the event vector, waits,
//! then appends at most one [`Event`] per ready fd, carrying that fd's token.
//!
//! * Readiness is level-triggered: data left unread makes the fd ready again
//!   on the next call. The one exception is opt-in:
//!   [`arm_oneshot`](Selector::arm_oneshot) (epoll only; other backends
//!   return `Ok(false)` and the caller registers normally) arms a
//!   registration that reports at most one event and is then disarmed by the
//!   kernel. A caller that stops watching such an fd after its event calls
//!   [`release_oneshot`](Selector::release_oneshot): the disarmed registration
//!   stays in the kernel (no syscall) and the next `register`, `reregister` or
//!   `arm_oneshot` of that fd number re-arms it with `EPOLL_CTL_MOD`, falling
//!   back to `EPOLL_CTL_ADD` when the kernel no longer knows the fd (it was
//!   closed; a new file under the same number is a different epoll key). A
//!   disarmed registration never reports anything, so a file closed while a
//!   duplicate of its fd keeps it alive cannot wake the loop; it leaves the
//!   kernel with its last fd.
//! * Error and hang-up conditions map as in CPython: for epoll and poll, any
//!   returned bit other than `IN` counts as writable and any bit other than
//!   `OUT` as readable (so `ERR`/`HUP` wake both); select merges its error set
//!   into the write set; kqueue reports the filter that fired (`EV_EOF` is
//!   still a read or write event, `EV_ERROR` wakes both). The result is then
//!   masked by the registered interest, and an event is appended only if
//!   something is left. An fd registered for `READABLE` therefore never shows
//!   up as writable.
//! * Timeouts: `None` blocks until an event or a signal; `Some(ZERO)` only
//!   polls. Any other timeout has sub-millisecond precision where the kernel
//!   offers it (`epoll_pwait2`, `ppoll`, `pselect`, `kevent` take a
//!   `timespec`) and is otherwise rounded UP to the next millisecond
//!   (`epoll_wait` on kernels before 5.11 and on Android, `poll` on macOS): a
//!   wait never ends early because of rounding. Timeouts are clamped to 10^8 s
//!   (about three years; `epoll_wait` and `poll`: `c_int::MAX` ms, 24.8 days). As with any kernel wait, the call may return earlier with no
//!   events (a signal, a registration change); callers loop on their timers.
//! * If a signal interrupts the wait, `select` returns an error of kind
//!   [`io::ErrorKind::Interrupted`] without retrying: the caller must run the
//!   Python signal handlers and then call `select` again.
//! * An event can only name an fd registered at the time the event is
//!   reported: events for an fd deregistered while `select` was blocked are
//!   dropped. As in CPython, if an fd is closed without being deregistered and
//!   its number reused, a stale readiness may be reported once for the new
//!   registration; callers must tolerate spurious wake-ups (`EAGAIN`).
//! * `select` itself is meant to be called from one thread at a time (the
//!   loop's). Concurrent calls are safe but each gets its own scratch buffer.
//!
//! **Descriptors.** Selectors do not own registered fds: they are plain
//! `RawFd`s owned by the caller. A selector's own fd (epoll, kqueue) is
//! close-on-exec and exposed by [`as_raw_fd`](Selector::as_raw_fd). Nothing
//! here handles `fork()`: a child must create a new selector.
//!
//! # Backends
//!
//! * `epoll.rs`: [`SelectorKind::Epoll`], Linux and Android, the default there.
//! * `kqueue.rs`: [`SelectorKind::Kqueue`], macOS, iOS and the BSDs, the
//!   default there. All kqueue code lives in that file.
//! * `poll.rs`: [`SelectorKind::Poll`], every Unix, the default elsewhere.
//! * `select.rs`: [`SelectorKind::Select`], every Unix, limited to `FD_SETSIZE`.
//!
//! Windows is not supported. A port would add a completion-based backend in a
//! `windows.rs` here: IOCP through the `\Device\Afd` poll trick that `wepoll`
//! and mio use, which yields readiness and can implement this same contract;
//! the `RawFd` in the trait would become a `RawSocket` there.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

mod fdtable;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
mod kqueue;
#[cfg(unix)]
mod poll;
#[cfg(unix)]
mod select;

#[cfg(any(target_os = "linux", target_os = "android"))]
pub use epoll::EpollSelector;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
pub use kqueue::KqueueSelector;
#[cfg(unix)]
pub use poll::PollSelector;
#[cfg(unix)]
pub use select::SelectSelector;

/// What a registration waits for. Bit values match Python's
/// `selectors.EVENT_READ` (1) and `selectors.EVENT_WRITE` (2).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Interest(u8);

impl Interest {
    /// Nothing.
    pub const NONE: Interest = Interest(0);
    /// Readable (`EVENT_READ`, bit 1).
    pub const READABLE: Interest = Interest(1);
    /// Writable (`EVENT_WRITE`, bit 2).
    pub const WRITABLE: Interest = Interest(2);
    /// Readable and writable.
    pub const BOTH: Interest = Interest(3);

    /// Whether `READABLE` is set.
    pub fn is_readable(self) -> bool {
        self.0 & Self::READABLE.0 != 0
    }

    /// Whether `WRITABLE` is set.
    pub fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE.0 != 0
    }

    /// Whether neither is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Union (also available as `|`).
    #[allow(clippy::should_implement_trait)] // the name is part of the API; `|` is BitOr
    pub fn add(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    /// `self` without the bits of `other`.
    pub fn remove(self, other: Interest) -> Interest {
        Interest(self.0 & !other.0)
    }

    /// The raw bits (1 = read, 2 = write).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From raw bits; bits other than 1 and 2 are ignored.
    pub fn from_bits(b: u8) -> Interest {
        Interest(b & Self::BOTH.0)
    }

    fn intersect(self, other: Interest) -> Interest {
        Interest(self.0 & other.0)
    }

    fn from_flags(readable: bool, writable: bool) -> Interest {
        Interest(u8::from(readable) | (u8::from(writable) << 1))
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, other: Interest) -> Interest {
        self.add(other)
    }
}

/// One ready fd, as reported by [`Selector::select`]; already masked by the
/// registered interest, so at least one flag is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The token given at registration.
    pub token: u64,
    /// Ready for reading (or at EOF / in error).
    pub readable: bool,
    /// Ready for writing (or in error).
    pub writable: bool,
}

/// The selector backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorKind {
    /// Linux/Android `epoll`.
    Epoll,
    /// POSIX `poll` (`ppoll` where available).
    Poll,
    /// POSIX `select` (`pselect`), limited to fds below `FD_SETSIZE`.
    Select,
    /// BSD/macOS `kqueue`.
    Kqueue,
}

impl SelectorKind {
    /// Epoll on Linux/Android, Kqueue on macOS/iOS/BSD, Poll on other Unixes.
    pub fn default_for_platform() -> SelectorKind {
        if SelectorKind::Epoll.is_available() {
            SelectorKind::Epoll
        } else if SelectorKind::Kqueue.is_available() {
            SelectorKind::Kqueue
        } else {
            SelectorKind::Poll
        }
    }

    /// Parses `"epoll"`, `"poll"`, `"select"` or `"kqueue"` (lower case, as
    /// returned by [`name`](SelectorKind::name)).
    pub fn from_name(name: &str) -> Option<SelectorKind> {
        match name {
            "epoll" => Some(SelectorKind::Epoll),
            "poll" => Some(SelectorKind::Poll),
            "select" => Some(SelectorKind::Select),
            "kqueue" => Some(SelectorKind::Kqueue),
            _ => None,
        }
    }

    /// The lower-case name accepted by [`from_name`](SelectorKind::from_name).
    pub fn name(self) -> &'static str {
        match self {
            SelectorKind::Epoll => "epoll",
            SelectorKind::Poll => "poll",
            SelectorKind::Select => "select",
            SelectorKind::Kqueue => "kqueue",
        }
    }

    /// Whether this backend is compiled in for the current target.
    pub fn is_available(self) -> bool {
        match self {
            SelectorKind::Epoll => cfg!(any(target_os = "linux", target_os = "android")),
            SelectorKind::Poll | SelectorKind::Select => cfg!(unix),
            SelectorKind::Kqueue => cfg!(any(
                target_os = "macos",
                target_os = "ios",
                target_os = "freebsd",
                target_os = "netbsd",
                target_os = "openbsd",
                target_os = "dragonfly"
            )),
        }
    }

    fn unavailable_reason(self) -> &'static str {
        match self {
            SelectorKind::Epoll => "epoll is a Linux/Android-only kernel API",
            SelectorKind::Kqueue => "kqueue exists only on macOS, iOS and the BSDs",
            SelectorKind::Poll | SelectorKind::Select => "it needs a Unix target",
        }
    }
}

impl std::fmt::Display for SelectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Level-triggered readiness selector, like Python's selectors module.
///
/// See the [module documentation](self) for the full contract.
pub trait Selector: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> SelectorKind;
    /// Starts watching `fd` for `interest`, reporting `token`.
    fn register(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()>;
    /// Replaces the token and interest of a registered `fd`.
    fn reregister(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()>;
    /// Stops watching `fd`.
    fn deregister(&self, fd: RawFd) -> io::Result<()>;
    /// Watches `fd` for one event of `interest` (see the module doc). `Ok(false)`: this
    /// backend has no one-shot mode and nothing was done.
    fn arm_oneshot(&self, _fd: RawFd, _token: u64, _interest: Interest) -> io::Result<bool> {
        Ok(false)
    }
    /// Stops watching `fd`, whose one-shot registration has reported its event, leaving
    /// the disarmed registration to be re-armed by the next registration of that fd.
    fn release_oneshot(&self, fd: RawFd) -> io::Result<()> {
        self.deregister(fd)
    }
    /// Waits for readiness. timeout None = block forever, Some(ZERO) = just poll.
    /// Clears `events` first, then appends one Event per ready fd.
    /// On EINTR returns Err(kind Interrupted) WITHOUT retrying (the caller must run Python signal handlers first).
    fn select(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;
    /// Largest fd it accepts, if limited (select: FD_SETSIZE-1).
    fn max_fd(&self) -> Option<RawFd> {
        None
    }
    /// The selector's own fd, if it has one (epoll/kqueue).
    fn as_raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// Creates a selector of the given kind.
///
/// A kind not available on this target fails with
/// [`io::ErrorKind::Unsupported`], naming the platform and the reason.
pub fn new_selector(kind: SelectorKind) -> io::Result<Box<dyn Selector>> {
    match kind {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        SelectorKind::Epoll => Ok(Box::new(EpollSelector::new()?)),
        #[cfg(any(
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly"
        ))]
        SelectorKind::Kqueue => Ok(Box::new(KqueueSelector::new()?)),
        #[cfg(unix)]
        SelectorKind::Poll => Ok(Box::new(PollSelector::new())),
        #[cfg(unix)]
        SelectorKind::Select => Ok(Box::new(SelectSelector::new())),
        #[allow(unreachable_patterns)]
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the {} selector is not available on {}: {}",
                other.name(),
                std::env::consts::OS,
                other.unavailable_reason()
            ),
        )),
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the backends.

/// What the backends remember per fd.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Registration {
    pub(crate) token: u64,
    pub(crate) interest: Interest,
}

/// Rejects an empty interest (see the contract).
pub(crate) fn check_interest(interest: Interest) -> io::Result<()> {
    if interest.is_empty() {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interest must be READABLE, WRITABLE or both (deregister instead of registering for nothing)",
        ))
    } else {
        Ok(())
    }
}

/// CPython's `_PollLikeSelector` mapping: any returned bit other than
/// `in_bit` counts as writable, any bit other than `out_bit` as readable.
pub(crate) fn poll_like_readiness(revents: u32, in_bit: u32, out_bit: u32) -> Interest {
    Interest::from_flags(revents & !out_bit != 0, revents & !in_bit != 0)
}

/// Masks `ready` by the registered interest and appends an event if anything
/// is left.
pub(crate) fn push_event(events: &mut Vec<Event>, reg: Registration, ready: Interest) {
    let ready = ready.intersect(reg.interest);
    if !ready.is_empty() {
        events.push(Event {
            token: reg.token,
            readable: ready.is_readable(),
            writable: ready.is_writable(),
        });
    }
}

/// Locks a mutex, ignoring poisoning: the data behind our mutexes is always
/// left consistent (a panic cannot happen half-way through an update).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Initial size of the epoll/kqueue event buffers.
#[allow(dead_code)] // unused on targets with neither epoll nor kqueue
pub(crate) const EVENTS_INITIAL: usize = 256;
/// Cap for the adaptive growth of the epoll/kqueue event buffers.
#[allow(dead_code)]
pub(crate) const EVENTS_MAX: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_bits() {
        assert_eq!(Interest::NONE.bits(), 0);
        assert_eq!(Interest::READABLE.bits(), 1);
        assert_eq!(Interest::WRITABLE.bits(), 2);
        assert_eq!(Interest::BOTH.bits(), 3);
        assert_eq!(Interest::default(), Interest::NONE);
        assert_eq!(Interest::from_bits(0xff), Interest::BOTH);
        assert_eq!(Interest::READABLE.add(Interest::WRITABLE), Interest::BOTH);
        assert_eq!(Interest::READABLE | Interest::WRITABLE, Interest::BOTH);
        assert_eq!(
            Interest::BOTH.remove(Interest::READABLE),
            Interest::WRITABLE
        );
        assert!(Interest::BOTH.is_readable() && Interest::BOTH.is_writable());
        assert!(!Interest::WRITABLE.is_readable());
        assert!(Interest::NONE.is_empty() && !Interest::READABLE.is_empty());
    }

    #[test]
    fn kinds() {
        for kind in [
            SelectorKind::Epoll,
            SelectorKind::Poll,
            SelectorKind::Select,
            SelectorKind::Kqueue,
        ] {
            assert_eq!(SelectorKind::from_name(kind.name()), Some(kind));
            match new_selector(kind) {
                Ok(sel) => {
                    assert!(kind.is_available());
                    assert_eq!(sel.kind(), kind);
                }
                Err(e) => {
                    assert!(!kind.is_available());
                    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
                    assert!(e.to_string().contains(std::env::consts::OS), "{e}");
                }
            }
        }
        assert_eq!(SelectorKind::from_name("devpoll"), None);
        assert!(SelectorKind::default_for_platform().is_available());
        #[cfg(target_os = "linux")]
        assert_eq!(SelectorKind::default_for_platform(), SelectorKind::Epoll);
    }

    #[test]
    fn poll_like_mapping() {
        let (i, o) = (0x1, 0x4);
        assert_eq!(poll_like_readiness(i, i, o), Interest::READABLE);
        assert_eq!(poll_like_readiness(o, i, o), Interest::WRITABLE);
        assert_eq!(poll_like_readiness(0x8, i, o), Interest::BOTH); // ERR
        assert_eq!(poll_like_readiness(i | o, i, o), Interest::BOTH);
        let reg = Registration {
            token: 7,
            interest: Interest::READABLE,
        };
        let mut ev = Vec::new();
        push_event(&mut ev, reg, Interest::WRITABLE);
        assert!(ev.is_empty());
        push_event(&mut ev, reg, Interest::BOTH);
        assert_eq!(
            ev,
            [Event {
                token: 7,
                readable: true,
                writable: false
            }]
        );
    }
}
