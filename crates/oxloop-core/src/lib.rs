//! `oxloop-core`: the platform layer of oxloop, without any Python bindings.
//!
//! oxloop is a drop-in replacement for Python's asyncio event loops. This crate
//! holds everything that does not need the Python runtime, so that it can be
//! built and tested with `cargo test -p oxloop-core` alone:
//!
//! * [`selector`]: level-triggered readiness selectors (epoll, poll, select,
//!   kqueue) with the semantics of CPython's `selectors` module;
//! * [`waker`]: a [`Waker`](waker::Waker) that interrupts a blocked
//!   [`Selector::select`](selector::Selector::select) from another thread;
//! * [`timers`]: the [`TimerHeap`](timers::TimerHeap) behind `call_at`/`call_later`;
//! * [`clock`]: the loop's clock, identical to Python's `time.monotonic()`;
//! * [`net`] / [`pipe`]: non-blocking socket and plain-fd (pipe, tty) I/O;
//! * [`sys`]: the single place where raw syscall results become `io::Result`s.
//!
//! Only Unix targets are supported for now; see the module documentation of
//! [`selector`] for where a Windows (IOCP / wepoll) backend would go.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(unix))]
compile_error!(
    "oxloop-core supports only Unix targets for now; a Windows port needs an IOCP/wepoll \
     selector backend (see the module documentation of `selector`)"
);

pub mod clock;
pub mod net;
pub mod pipe;
pub mod selector;
pub mod sys;
pub mod timers;
pub mod waker;
