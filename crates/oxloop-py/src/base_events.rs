//! `LoopCore`: the native base class of every oxloop loop — asyncio's `BaseEventLoop`
//! scheduling core (`base_events.py`) in Rust.
//!
//! It owns the ready queue, the timer heap, the selector and the fd watchers, and runs the
//! `_run_once` pipeline exactly as asyncio does: compact cancelled timers -> compute the
//! timeout -> wait for I/O with the GIL released -> queue ready fd callbacks -> queue due
//! timers -> run exactly the callbacks that were ready at that point.
//!
//! Borrow discipline: a `PyRefMut<LoopCore>` is never held while Python code runs (callbacks,
//! `__del__` of dropped objects) or while the GIL is released, so `call_soon_threadsafe` from
//! another thread never finds the loop borrowed. Objects removed from the loop's containers
//! are dropped only after the borrow ends.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use oxloop_core::clock;
use oxloop_core::selector::{Event, Selector};
use oxloop_core::timers::TimerHeap;
use oxloop_core::waker::Waker;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::errors::to_pyerr;
use crate::handles::{copy_context, run_handle, Handle, TimerHandle};
use crate::helpers;
use crate::selector_events::{self, IoEntry, WAKER_TOKEN};

/// asyncio's `MAXIMUM_SELECT_TIMEOUT`: 24 hours.
const MAXIMUM_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;
/// asyncio's `_MIN_SCHEDULED_TIMER_HANDLES` and `_MIN_CANCELLED_TIMER_HANDLES_FRACTION`.
const MIN_SCHEDULED_TIMER_HANDLES: usize = 100;
const MIN_CANCELLED_TIMER_HANDLES_FRACTION: f64 = 0.5;

/// Hashing for fd keys: one multiplication instead of SipHash (fds are small, trusted ints
/// and the table is looked up on every event and loop iteration).
#[derive(Clone, Copy, Default)]
pub(crate) struct FdHash;

impl std::hash::BuildHasher for FdHash {
    type Hasher = FdHasher;
    fn build_hasher(&self) -> FdHasher {
        FdHasher(0)
    }
}

pub(crate) struct FdHasher(u64);

impl std::hash::Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_i32(&mut self, n: i32) {
        // The high bits feed hashbrown's control bytes: spread the fd over all 64 bits.
        self.0 = u64::from(n as u32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What the loop waits on: a native selector, or any Python `selectors.BaseSelector`.
pub(crate) enum Poller {
    Native(Arc<dyn Selector>),
    Python(Py<PyAny>),
}

impl Poller {
    fn clone_ref(&self, py: Python<'_>) -> Poller {
        match self {
            Poller::Native(s) => Poller::Native(Arc::clone(s)),
            Poller::Python(o) => Poller::Python(o.clone_ref(py)),
        }
    }
}

#[pyclass(subclass, dict, weakref, module = "oxloop._oxloop")]
pub struct LoopCore {
    /// Ready callbacks: oxloop `Handle`s, or any object with `_run()`/`_cancelled` (asyncio's
    /// own `Handle`, e.g. from `add_signal_handler`).
    pub(crate) ready: VecDeque<Py<PyAny>>,
    pub(crate) timers: TimerHeap<Py<Handle>>,
    pub(crate) timer_cancelled_count: usize,
    /// Native fd watchers, keyed by fd (the fd is also the selector token: entries are
    /// deregistered before removal and events are consumed in the same iteration they are
    /// read, so a stale event can never reach a reused fd).
    pub(crate) io: HashMap<RawFd, IoEntry, FdHash>,
    pub(crate) poller: Option<Poller>,
    pub(crate) events: Vec<Event>,
    pub(crate) waker: Option<Arc<Waker>>,
    pub(crate) stopping: bool,
    pub(crate) closed: bool,
    pub(crate) debug: bool,
    pub(crate) clock_resolution: f64,
    /// Reusable receive buffer of the native sock_recv.
    pub(crate) recv_buf: Vec<u8>,
    /// The last sockname / peer host a native transport stored: equal ones share it.
    pub(crate) last_sockname: Option<Py<PyAny>>,
    pub(crate) last_peer_host: Option<Py<PyAny>>,
    /// The read end of asyncio's self-pipe (`loop._ssock`), if any.
    pub(crate) self_pipe: Option<RawFd>,
    /// Signal handlers are installed (the self-pipe is then the signal wakeup fd).
    pub(crate) signals: bool,
}

pub(crate) fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// `loop.get_debug()` for any loop object (fast path for oxloop loops).
pub(crate) fn loop_debug(loop_: &Bound<'_, PyAny>) -> PyResult<bool> {
    if let Ok(core) = loop_.cast::<LoopCore>() {
        return Ok(core.borrow().debug);
    }
    loop_.call_method0("get_debug")?.is_truthy()
}

/// `loop._timer_handle_cancelled(handle)` for any loop object.
pub(crate) fn timer_handle_cancelled(
    loop_: &Bound<'_, PyAny>,
    handle: &Bound<'_, Handle>,
) -> PyResult<()> {
    if let Ok(core) = loop_.cast::<LoopCore>() {
        if handle.borrow().scheduled {
            core.borrow_mut().timer_cancelled_count += 1;
        }
        return Ok(());
    }
    loop_.call_method1("_timer_handle_cancelled", (handle,))?;
    Ok(())
}

fn is_cancelled(item: &Bound<'_, PyAny>) -> PyResult<bool> {
    match item.cast::<Handle>() {
        Ok(h) => Ok(h.borrow().cancelled),
        Err(_) => item.getattr("_cancelled")?.is_truthy(),
    }
}

impl LoopCore {
    /// Whether a zero-timeout poll can be left out: a native selector with no fd watched but
    /// asyncio's self-pipe while no signal handler is installed. Such a poll could only report
    /// the self-pipe (which then carries no signal, only wake-ups that the native waker makes
    /// unnecessary) or the waker (whose callbacks are already in the ready queue), so skipping
    /// it changes nothing a callback can observe.
    fn poll_is_futile(&self) -> bool {
        matches!(self.poller, Some(Poller::Native(_)))
            && !self.signals
            && match self.io.len() {
                0 => true,
                1 => self.self_pipe.is_some_and(|fd| self.io.contains_key(&fd)),
                _ => false,
            }
    }

    /// Makes a Handle (or TimerHandle when `when` is given) owned by this loop.
    pub(crate) fn new_handle(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
        when: Option<f64>,
        debug: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let context = match context {
            Some(c) if !c.is_none(py) => c,
            _ => copy_context(py)?,
        };
        let mut h = Handle::new(callback, args, slf.clone().into_any().unbind(), context);
        if debug {
            h.source_traceback = Some(helpers::get(py)?.source_traceback.call0(py)?);
        }
        match when {
            None => Py::new(py, h),
            Some(w) => {
                h.when = w;
                h.scheduled = true;
                let init = PyClassInitializer::from(h).add_subclass(TimerHandle);
                let t = Py::new(py, init)?.into_bound(py).into_any();
                // SAFETY: a TimerHandle is a Handle (`extends = Handle`): no type check needed.
                Ok(unsafe { t.cast_into_unchecked::<Handle>() }.unbind())
            }
        }
    }

    /// Debug-mode checks asyncio runs in call_soon/call_at: thread and callback type.
    fn debug_checks(
        slf: &Bound<'_, Self>,
        callback: &Py<PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        if check_thread {
            slf.call_method0("_check_thread")?;
        }
        slf.call_method1("_check_callback", (callback, method))?;
        Ok(())
    }

    /// `call_at` once `when` is known: the closed check, the debug checks, the timer.
    fn schedule_at(
        slf: &Bound<'_, Self>,
        when: f64,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let (closed, debug) = {
            let me = slf.borrow();
            (me.closed, me.debug)
        };
        if closed {
            return Err(closed_error());
        }
        if debug {
            Self::debug_checks(slf, &callback, "call_at", true)?;
        }
        let h = Self::new_handle(slf, callback, args, context, Some(when), debug)?;
        let py = slf.py();
        slf.borrow_mut().timers.push(when, h.clone_ref(py));
        Ok(h)
    }

    /// Removes cancelled timers as asyncio does: all of them when they are many, else only
    /// those at the head of the heap. Returns what was removed, to be dropped unborrowed.
    fn compact_timers(&mut self, py: Python<'_>) -> Vec<Py<Handle>> {
        let mut removed = Vec::new();
        let count = self.timers.len();
        if count > MIN_SCHEDULED_TIMER_HANDLES
            && (self.timer_cancelled_count as f64) / (count as f64)
                > MIN_CANCELLED_TIMER_HANDLES_FRACTION
        {
            self.timers.retain(|h| {
                let cancelled = h.borrow(py).cancelled;
                if cancelled {
                    removed.push(h.clone_ref(py));
                }
                !cancelled
            });
            for h in &removed {
                h.borrow_mut(py).scheduled = false;
            }
            self.timer_cancelled_count = 0;
        } else {
            while let Some(h) = self.timers.peek() {
                if !h.borrow(py).cancelled {
                    break;
                }
                let (_, h) = self.timers.pop().expect("peeked");
                h.borrow_mut(py).scheduled = false;
                self.timer_cancelled_count = self.timer_cancelled_count.saturating_sub(1);
                removed.push(h);
            }
        }
        removed
    }

    /// One iteration of the event loop (asyncio's `BaseEventLoop._run_once`).
    pub(crate) fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (timeout, poller, removed) = {
            let mut me = slf.borrow_mut();
            let removed = if me.timers.is_empty() {
                Vec::new()
            } else {
                me.compact_timers(py)
            };
            let timeout = if !me.ready.is_empty() || me.stopping {
                Some(0.0)
            } else {
                me.timers
                    .peek_when()
                    .map(|when| (when - clock::monotonic()).clamp(0.0, MAXIMUM_SELECT_TIMEOUT))
            };
            let poller = match &me.poller {
                Some(_) if timeout == Some(0.0) && me.poll_is_futile() => None,
                Some(p) => Some(p.clone_ref(py)),
                None => return Err(closed_error()),
            };
            (timeout, poller, removed)
        };
        drop(removed);

        match poller {
            None => {}
            Some(Poller::Native(sel)) => {
                let mut events = std::mem::take(&mut slf.borrow_mut().events);
                let res =
                    py.detach(|| sel.select(&mut events, timeout.map(Duration::from_secs_f64)));
                let res = match res {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        events.clear();
                        py.check_signals()
                    }
                    Err(e) => Err(to_pyerr(e)),
                };
                if let Err(e) = res {
                    slf.borrow_mut().events = events;
                    return Err(e);
                }
                selector_events::process_native_events(slf, &mut events)?;
                slf.borrow_mut().events = events;
            }
            Some(Poller::Python(sel)) => {
                let timeout_obj: Py<PyAny> = match timeout {
                    Some(t) => t.into_pyobject(py)?.into_any().unbind(),
                    None => py.None(),
                };
                let event_list = sel.call_method1(py, "select", (timeout_obj,))?;
                slf.call_method1("_process_events", (event_list,))?;
            }
        }

        // Queue the timers that are due (asyncio: `when < now + clock_resolution`).
        let ntodo = {
            let mut me = slf.borrow_mut();
            let end_time = if me.timers.is_empty() {
                0.0
            } else {
                clock::monotonic() + me.clock_resolution
            };
            while let Some(when) = me.timers.peek_when() {
                if when >= end_time {
                    break;
                }
                let (_, h) = me.timers.pop().expect("peeked");
                h.borrow_mut(py).scheduled = false;
                me.ready.push_back(h.into_any());
            }
            me.ready.len()
        };

        // Run only what is ready now; callbacks scheduled meanwhile wait for the next round.
        for _ in 0..ntodo {
            let (item, debug) = {
                let mut me = slf.borrow_mut();
                match me.ready.pop_front() {
                    Some(item) => (item, me.debug),
                    None => break,
                }
            };
            let item = item.into_bound(py);
            let res = if debug {
                Self::run_debug(slf, &item)
            } else {
                run_item(py, &item)
            };
            release_ready(py, item.unbind());
            res?;
        }
        Ok(())
    }

    fn run_debug(slf: &Bound<'_, Self>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if is_cancelled(item)? {
            return Ok(());
        }
        slf.setattr("_current_handle", item)?;
        let t0 = clock::monotonic();
        let res = run_item(py, item);
        let dt = clock::monotonic() - t0;
        slf.setattr("_current_handle", py.None())?;
        res?;
        let limit: f64 = slf.getattr("slow_callback_duration")?.extract()?;
        if dt >= limit {
            helpers::get(py)?.slow_callback.call1(py, (slf, item, dt))?;
        }
        Ok(())
    }
}

/// A `call_soon` handle is not tracked by the cyclic GC while it waits in the ready queue:
/// it is alive there anyway (the queue holds it), and a batch of thousands of queued handles
/// would otherwise be traversed by every young-generation collection. Objects it refers to
/// just look referenced from outside to the GC meanwhile, which is safe.
/// [`release_ready`] puts it back under the GC when it leaves the queue still referenced.
fn untrack_queued(h: &Py<Handle>) {
    // SAFETY: `h` is a live Handle, a GC type tracked since its allocation; untracking a
    // tracked object is always allowed (the GIL is held: we were handed a Py by Python code).
    unsafe { pyo3::ffi::PyObject_GC_UnTrack(h.as_ptr().cast()) }
}

/// Drops a ready-queue entry; a Handle that something else still references is tracked by
/// the GC again (see [`untrack_queued`]) so that cycles through it stay collectable.
pub(crate) fn release_ready(py: Python<'_>, item: Py<PyAny>) {
    let item = item.into_bound(py);
    let p = item.as_ptr();
    // SAFETY: GIL held; `p` is alive (we own a reference). Only a Handle (a GC type) that is
    // not tracked is tracked again, and only while another reference exists.
    unsafe {
        if pyo3::ffi::Py_REFCNT(p) > 1
            && pyo3::ffi::PyObject_GC_IsTracked(p) == 0
            && item.is_instance_of::<Handle>()
        {
            pyo3::ffi::PyObject_GC_Track(p.cast());
        }
    }
}

/// Runs one ready-queue entry, skipping cancelled ones.
fn run_item(py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
    match item.cast::<Handle>() {
        Ok(h) => {
            if h.borrow().cancelled {
                return Ok(());
            }
            run_handle(py, h)
        }
        Err(_) => {
            if item.getattr("_cancelled")?.is_truthy()? {
                return Ok(());
            }
            item.call_method0("_run")?;
            Ok(())
        }
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> LoopCore {
        LoopCore {
            ready: VecDeque::new(),
            timers: TimerHeap::new(),
            timer_cancelled_count: 0,
            io: HashMap::default(),
            poller: None,
            events: Vec::with_capacity(256),
            waker: None,
            stopping: false,
            closed: false,
            debug: false,
            clock_resolution: clock::resolution(),
            recv_buf: Vec::new(),
            last_sockname: None,
            last_peer_host: None,
            self_pipe: None,
            signals: false,
        }
    }

    /// Sets up the selector. `selector` is None (the platform default), a selector name, or a
    /// Python `selectors.BaseSelector`. Returns the native selector's name, or None for a
    /// Python selector object.
    #[pyo3(signature = (selector=None))]
    fn _oxloop_init(
        slf: &Bound<'_, Self>,
        selector: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<&'static str>> {
        let poller = selector_events::make_poller(selector)?;
        let name = match &poller {
            Poller::Native(s) => Some(s.kind().name()),
            Poller::Python(_) => None,
        };
        let waker = match &poller {
            Poller::Native(s) => {
                let w = Arc::new(Waker::new().map_err(to_pyerr)?);
                s.register(
                    w.fd(),
                    WAKER_TOKEN,
                    oxloop_core::selector::Interest::READABLE,
                )
                .map_err(to_pyerr)?;
                Some(w)
            }
            Poller::Python(_) => None,
        };
        let mut me = slf.borrow_mut();
        me.poller = Some(poller);
        me.waker = waker;
        Ok(name)
    }

    /// Releases everything the native core holds (called by `close()` once asyncio's part is done).
    fn _oxloop_close(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let (ready, timers, io, poller, waker) = {
            let mut me = slf.borrow_mut();
            me.closed = true;
            (
                std::mem::take(&mut me.ready),
                me.timers.drain(),
                std::mem::take(&mut me.io),
                me.poller.take(),
                me.waker.take(),
            )
        };
        for t in &timers {
            t.borrow_mut(py).scheduled = false;
        }
        for item in ready {
            release_ready(py, item);
        }
        drop((timers, io, poller, waker));
    }

    #[getter]
    fn _closed(&self) -> bool {
        self.closed
    }
    #[setter(_closed)]
    fn set_closed_attr(&mut self, value: bool) {
        self.closed = value;
    }
    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping
    }
    #[setter(_stopping)]
    fn set_stopping_attr(&mut self, value: bool) {
        self.stopping = value;
    }
    #[getter]
    fn _debug(&self) -> bool {
        self.debug
    }
    #[setter(_debug)]
    fn set_debug_attr(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.debug = value.is_truthy()?;
        Ok(())
    }
    #[getter]
    fn _clock_resolution(&self) -> f64 {
        self.clock_resolution
    }
    #[setter(_clock_resolution)]
    fn set_clock_resolution_attr(&mut self, value: f64) {
        self.clock_resolution = value;
    }
    /// A snapshot of the ready queue (asyncio's `_ready` deque is private; tests read its length).
    #[getter]
    fn _ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.ready.iter().map(|h| h.clone_ref(py)))
    }
    #[setter(_ready)]
    fn set_ready_attr(&mut self, _value: &Bound<'_, PyAny>) {}
    /// A snapshot of the scheduled timers.
    #[getter]
    fn _scheduled<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.timers.iter().map(|h| h.clone_ref(py)))
    }
    #[setter(_scheduled)]
    fn set_scheduled_attr(&mut self, _value: &Bound<'_, PyAny>) {}
    #[getter]
    fn _timer_cancelled_count(&self) -> usize {
        self.timer_cancelled_count
    }
    #[setter(_timer_cancelled_count)]
    fn set_timer_cancelled_count_attr(&mut self, value: usize) {
        self.timer_cancelled_count = value;
    }

    /// `asyncio.Future(loop=self)`, without a Python-level frame.
    fn create_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item(pyo3::intern!(py, "loop"), slf)?;
        helpers::get(py)?.future_type.call(py, (), Some(&kwargs))
    }

    fn get_debug(&self) -> bool {
        self.debug
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    /// The loop's clock: `time.monotonic()`.
    fn time(&self) -> f64 {
        clock::monotonic()
    }

    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let (closed, debug) = {
            let me = slf.borrow();
            (me.closed, me.debug)
        };
        if closed {
            return Err(closed_error());
        }
        if debug {
            Self::debug_checks(slf, &callback, "call_soon", true)?;
        }
        let h = Self::new_handle(slf, callback, args, context, None, debug)?;
        untrack_queued(&h);
        slf.borrow_mut()
            .ready
            .push_back(h.clone_ref(slf.py()).into_any());
        Ok(h)
    }

    /// asyncio's private `_call_soon(callback, args, context)` (no checks).
    fn _call_soon(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: &Bound<'_, PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let args = PyTuple::new(py, args.try_iter()?.collect::<PyResult<Vec<_>>>()?)?.unbind();
        let debug = slf.borrow().debug;
        let h = Self::new_handle(slf, callback, args, context, None, debug)?;
        untrack_queued(&h);
        slf.borrow_mut().ready.push_back(h.clone_ref(py).into_any());
        Ok(h)
    }

    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let (closed, debug) = {
            let me = slf.borrow();
            (me.closed, me.debug)
        };
        if closed {
            return Err(closed_error());
        }
        if debug {
            Self::debug_checks(slf, &callback, "call_soon_threadsafe", false)?;
        }
        let h = Self::new_handle(slf, callback, args, context, None, debug)?;
        untrack_queued(&h);
        let waker = {
            let mut me = slf.borrow_mut();
            me.ready.push_back(h.clone_ref(slf.py()).into_any());
            me.waker.clone()
        };
        match waker {
            Some(w) => w.wake().map_err(to_pyerr)?,
            // A Python selector: wake it through asyncio's self-pipe.
            None => {
                slf.call_method0("_write_to_self")?;
            }
        }
        Ok(h)
    }

    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        if delay.is_none() && slf.py().version_info() >= (3, 11) {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let delay: f64 = match delay.extract() {
            Ok(d) => d,
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "unsupported operand type(s) for +: 'float' and '{}'",
                    delay.get_type().name()?
                )))
            }
        };
        Self::schedule_at(slf, clock::monotonic() + delay, callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        if when.is_none() {
            // 3.11+ checks explicitly; before, TimerHandle's `assert when is not None` fired.
            if slf.py().version_info() >= (3, 11) {
                return Err(PyTypeError::new_err("when cannot be None"));
            }
            return Err(pyo3::exceptions::PyAssertionError::new_err(()));
        }
        let when: f64 = when.extract()?;
        Self::schedule_at(slf, when, callback, args, context)
    }

    /// asyncio's private hook, called by asyncio's own TimerHandle.cancel().
    fn _timer_handle_cancelled(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        if handle.getattr("_scheduled")?.is_truthy()? {
            slf.borrow_mut().timer_cancelled_count += 1;
        }
        Ok(())
    }

    /// asyncio's private `_add_callback(handle)`: queue a handle unless cancelled.
    fn _add_callback(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        if !is_cancelled(handle)? {
            slf.borrow_mut().ready.push_back(handle.clone().unbind());
        }
        Ok(())
    }

    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_once(slf)
    }

    /// The body of run_forever: iterate until stop() (the setup and cleanup stay asyncio's).
    fn _run_forever_inner(slf: &Bound<'_, Self>) -> PyResult<()> {
        loop {
            Self::run_once(slf)?;
            if slf.borrow().stopping {
                return Ok(());
            }
        }
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        selector_events::add_watcher(slf, fd, callback, args, true)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        selector_events::add_watcher(slf, fd, callback, args, false)
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        selector_events::remove_watcher(slf, fd, true)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        selector_events::remove_watcher(slf, fd, false)
    }

    /// `(events_mask, reader, writer)` for a natively watched fd, or None.
    fn _oxloop_key(&self, py: Python<'_>, fd: RawFd) -> Option<selector_events::KeyTuple> {
        self.io.get(&fd).map(|e| e.key(py))
    }

    /// Tells the core which fd is the read end of asyncio's self-pipe (-1: none).
    fn _oxloop_set_self_pipe(&mut self, fd: RawFd) {
        self.self_pipe = (fd >= 0).then_some(fd);
    }

    /// Tells the core whether signal handlers are installed.
    fn _oxloop_set_signals(&mut self, installed: bool) {
        self.signals = installed;
    }

    /// All natively watched fds.
    fn _oxloop_fds(&self) -> Vec<RawFd> {
        self.io.keys().copied().collect()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for h in &self.ready {
            visit.call(h)?;
        }
        for h in self.timers.iter() {
            visit.call(h)?;
        }
        for e in self.io.values() {
            e.traverse(&visit)?;
        }
        if let Some(Poller::Python(o)) = &self.poller {
            visit.call(o)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        Python::attach(|py| {
            for item in ready {
                release_ready(py, item);
            }
        });
        self.timers.clear();
        self.io.clear();
        if let Some(Poller::Python(_)) = &self.poller {
            self.poller = None;
        }
    }
}
