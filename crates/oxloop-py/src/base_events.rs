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
use std::convert::Infallible;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use oxloop_core::clock;
use oxloop_core::selector::{Event, Selector, SelectorKind};
use oxloop_core::timers::TimerHeap;
use oxloop_core::waker::Waker;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyList, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::errors::to_pyerr;
use crate::handles::{copy_context, run_handle, when_object, Handle, TimerHandle, When};
use crate::helpers;
use crate::selector_events::{self, IoEntry, WAKER_TOKEN};

/// asyncio's `MAXIMUM_SELECT_TIMEOUT`: 24 hours (the int `24 * 3600`).
const MAXIMUM_SELECT_TIMEOUT: i64 = 24 * 3600;
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

/// One entry of the timer heap: asyncio's `TimerHandle` in `loop._scheduled`.
pub(crate) struct Timer {
    /// The deadline when it is an exact float (`obj` is None); unused otherwise.
    when: f64,
    /// The deadline when it is any other object (compared with Python's `<`).
    obj: Option<Py<PyAny>>,
    handle: Py<Handle>,
}

/// `a < b` for two timers with float deadlines: `TimerHandle.__lt__` on floats (NaN: false).
#[inline]
fn float_lt(a: &Timer, b: &Timer) -> Result<bool, Infallible> {
    Ok(a.when < b.when)
}

/// `a < b` as `TimerHandle.__lt__` answers it: `a._when < b._when`, natively for two floats,
/// with Python's operator otherwise (which may run Python code and fail).
fn timer_lt(py: Python<'_>, a: &Timer, b: &Timer) -> PyResult<bool> {
    if a.obj.is_none() && b.obj.is_none() {
        return Ok(a.when < b.when);
    }
    when_object(py, a.when, a.obj.as_ref()).lt(when_object(py, b.when, b.obj.as_ref()))
}

/// The `timeout` `_run_once` hands the selector, as the Python value asyncio computes:
/// `0` (an int) when callbacks are ready, else `min(max(0, when - time()), 86400)` (3.9-3.12)
/// or `when - time()` clamped by `if t > 86400: ... elif t < 0: ...` (3.13+, where a NaN
/// stays NaN and the selector raises ValueError).
enum SelectTimeout {
    Block,
    Int(i64),
    Float(f64),
    Obj(Py<PyAny>),
}

impl SelectTimeout {
    /// `min(max(0, when - now), MAXIMUM_SELECT_TIMEOUT)` for a float deadline, with Python's
    /// `max`/`min` (a NaN difference gives the int 0; +inf the int 86400).
    fn of_float(when: f64, now: f64, clamp_313: bool) -> SelectTimeout {
        let d = when - now;
        if clamp_313 {
            return if d > MAXIMUM_SELECT_TIMEOUT as f64 {
                SelectTimeout::Int(MAXIMUM_SELECT_TIMEOUT)
            } else if d < 0.0 {
                SelectTimeout::Int(0)
            } else {
                SelectTimeout::Float(d)
            };
        }
        // max(0, d): d if d > 0 else 0; min(m, 86400): 86400 if 86400 < m else m.
        if d > 0.0 {
            if (MAXIMUM_SELECT_TIMEOUT as f64) < d {
                SelectTimeout::Int(MAXIMUM_SELECT_TIMEOUT)
            } else {
                SelectTimeout::Float(d)
            }
        } else {
            SelectTimeout::Int(0)
        }
    }

    /// The same with Python's operators, for a deadline that is not a float.
    fn of_object(
        py: Python<'_>,
        when: &Bound<'_, PyAny>,
        now: f64,
        clamp_313: bool,
    ) -> PyResult<SelectTimeout> {
        let d = when.sub(PyFloat::new(py, now))?;
        let zero = 0i64.into_pyobject(py)?.into_any();
        let max = MAXIMUM_SELECT_TIMEOUT.into_pyobject(py)?.into_any();
        if clamp_313 {
            let t = if d.gt(&max)? {
                max
            } else if d.lt(&zero)? {
                zero
            } else {
                d
            };
            return Ok(SelectTimeout::Obj(t.unbind()));
        }
        // builtins.max(0, d): RichCompareBool(d, 0, Py_GT); min(m, 86400): (86400, m, Py_LT).
        let m = if d.gt(&zero)? { d } else { zero };
        let t = if max.lt(&m)? { max } else { m };
        Ok(SelectTimeout::Obj(t.unbind()))
    }

    fn is_zero(&self) -> bool {
        matches!(self, SelectTimeout::Int(0))
    }

    /// For a native selector: a duration that is never negative or out of range. A NaN (3.13+)
    /// raises the ValueError of the Python selector of that kind (`math.ceil(timeout * 1e3)`
    /// in EpollSelector/PollSelector, `select.select`'s / `kqueue.control`'s own check).
    fn duration(&self, py: Python<'_>, kind: SelectorKind) -> PyResult<Option<Duration>> {
        let secs = match self {
            SelectTimeout::Block => return Ok(None),
            SelectTimeout::Int(n) => *n as f64,
            SelectTimeout::Float(f) => *f,
            SelectTimeout::Obj(o) => o.bind(py).extract::<f64>()?,
        };
        if secs.is_nan() {
            return Err(PyValueError::new_err(match kind {
                SelectorKind::Epoll | SelectorKind::Poll => "cannot convert float NaN to integer",
                _ => "Invalid value NaN (not a number)",
            }));
        }
        Ok(Some(secs_to_duration(secs)))
    }

    /// For a Python selector: the value asyncio would pass.
    fn to_object(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            SelectTimeout::Block => py.None(),
            SelectTimeout::Int(n) => n.into_pyobject(py)?.into_any().unbind(),
            SelectTimeout::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
            SelectTimeout::Obj(o) => o.clone_ref(py),
        })
    }
}

/// Seconds as a select timeout: NaN and negatives are 0, anything above
/// `MAXIMUM_SELECT_TIMEOUT` is that (a conversion that cannot panic).
pub(crate) fn secs_to_duration(secs: f64) -> Duration {
    if secs > 0.0 {
        Duration::from_secs_f64(secs.min(MAXIMUM_SELECT_TIMEOUT as f64))
    } else {
        Duration::ZERO
    }
}

#[pyclass(subclass, dict, weakref, module = "oxloop._oxloop")]
pub struct LoopCore {
    /// Ready callbacks: oxloop `Handle`s, or any object with `_run()`/`_cancelled` (asyncio's
    /// own `Handle`, e.g. from `add_signal_handler`).
    pub(crate) ready: VecDeque<Py<PyAny>>,
    /// asyncio's `_scheduled`: heapq's list, in heapq's order.
    pub(crate) timers: TimerHeap<Timer>,
    /// How many timers in `timers` have a deadline that is not a float. While there is none,
    /// every heap operation compares floats with the loop borrowed; otherwise the heap is
    /// taken out of the loop for the operation (Python comparisons run Python code).
    pub(crate) slow_timers: usize,
    /// asyncio's `_timer_cancelled_count` (an int it may set to anything).
    pub(crate) timer_cancelled_count: i64,
    /// Native fd watchers, keyed by fd (the fd is also the selector token: entries are
    /// deregistered before removal and events are consumed in the same iteration they are
    /// read, so a stale event can never reach a reused fd).
    pub(crate) io: HashMap<RawFd, IoEntry, FdHash>,
    pub(crate) poller: Option<Poller>,
    pub(crate) events: Vec<Event>,
    pub(crate) waker: Option<Arc<Waker>>,
    pub(crate) stopping: bool,
    pub(crate) closed: bool,
    /// `_stopping` / `_closed` as set when not exactly True/False (asyncio stores any value).
    stopping_obj: Option<Py<PyAny>>,
    closed_obj: Option<Py<PyAny>>,
    /// Whether `_debug` is true (asyncio: `if self._debug:`).
    pub(crate) debug: bool,
    /// `_debug` as it was set when it is not exactly True/False (asyncio stores the value
    /// `set_debug` is given; `get_debug()` returns it).
    pub(crate) debug_obj: Option<Py<PyAny>>,
    pub(crate) clock_resolution: f64,
    /// `_clock_resolution` as set when it is not a float (`end_time` is then computed with
    /// Python's `+`).
    clock_resolution_obj: Option<Py<PyAny>>,
    /// Python 3.13+'s `_run_once` timeout rule (see [`SelectTimeout`]).
    timeout_313: bool,
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

/// A flag attribute asyncio stores as given: the object when it is not exactly True/False.
fn flag_value(py: Python<'_>, value: bool, obj: Option<&Py<PyAny>>) -> Py<PyAny> {
    match obj {
        Some(o) => o.clone_ref(py),
        None => PyBool::new(py, value).to_owned().into_any().unbind(),
    }
}

/// `(truthiness, the object unless exactly True/False)` of a value set on a flag attribute.
/// The truthiness is taken once, when it is set (asyncio's `if self._flag:` takes it each time).
fn flag_of(value: &Bound<'_, PyAny>) -> PyResult<(bool, Option<Py<PyAny>>)> {
    Ok(match value.cast_exact::<PyBool>() {
        Ok(b) => (b.is_true(), None),
        Err(_) => (value.is_truthy()?, Some(value.clone().unbind())),
    })
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
            {
                let mut core = core.borrow_mut();
                core.timer_cancelled_count = core.timer_cancelled_count.saturating_add(1);
            }
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
        when: Option<&When>,
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
                let when_obj = match w {
                    When::Float(f) => {
                        h.when = *f;
                        None
                    }
                    When::Obj(o) => Some(o.clone_ref(py)),
                };
                let init = PyClassInitializer::from(h).add_subclass(TimerHandle { when_obj });
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

    /// What every call_soon/call_later/call_at does first: asyncio's `_check_closed()`, then in
    /// debug mode its `_check_thread()` (unless `check_thread` is false) and
    /// `_check_callback(callback, method)`. Returns the debug flag.
    #[inline]
    fn check_schedule(
        slf: &Bound<'_, Self>,
        callback: &Py<PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<bool> {
        let (closed, debug) = {
            let me = slf.borrow();
            (me.closed, me.debug)
        };
        if closed {
            return Err(closed_error());
        }
        if debug {
            Self::debug_checks(slf, callback, method, check_thread)?;
        }
        Ok(debug)
    }

    /// `call_at` once `when` is known: the closed check, the debug checks, the timer, the
    /// heappush (`timer._scheduled = True` only once that succeeded, as asyncio).
    fn schedule_at(
        slf: &Bound<'_, Self>,
        when: When,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let debug = Self::check_schedule(slf, &callback, "call_at", true)?;
        let h = Self::new_handle(slf, callback, args, context, Some(&when), debug)?;
        let py = slf.py();
        let timer = match when {
            When::Float(w) => Timer {
                when: w,
                obj: None,
                handle: h.clone_ref(py),
            },
            When::Obj(o) => Timer {
                when: f64::NAN,
                obj: Some(o),
                handle: h.clone_ref(py),
            },
        };
        Self::push_timer(slf, timer)?;
        h.borrow_mut(py).scheduled = true;
        Ok(h)
    }

    /// Runs `f` on the timer heap taken out of the loop, with the loop not borrowed (for heap
    /// operations that compare in Python). Timers that Python code scheduled meanwhile went to
    /// the loop's (then empty) heap; they are pushed onto the real one afterwards.
    fn with_heap<R>(slf: &Bound<'_, Self>, f: impl FnOnce(&mut TimerHeap<Timer>) -> R) -> R {
        let py = slf.py();
        let mut heap = std::mem::take(&mut slf.borrow_mut().timers);
        let r = f(&mut heap);
        let meanwhile = std::mem::replace(&mut slf.borrow_mut().timers, heap).drain();
        for t in meanwhile {
            if let Err(e) = Self::push_timer(slf, t) {
                e.write_unraisable(py, None);
            }
        }
        r
    }

    /// `heapq.heappush(self._scheduled, timer)`.
    fn push_timer(slf: &Bound<'_, Self>, timer: Timer) -> PyResult<()> {
        let py = slf.py();
        {
            let mut me = slf.borrow_mut();
            if timer.obj.is_some() {
                me.slow_timers += 1;
            } else if me.slow_timers == 0 {
                let Ok(()) = me.timers.push(timer, float_lt);
                return Ok(());
            }
        }
        Self::with_heap(slf, |heap| heap.push(timer, |a, b| timer_lt(py, a, b)))
    }

    /// `heapq.heappop(self._scheduled)` (the loop must not be borrowed).
    fn pop_timer(slf: &Bound<'_, Self>) -> PyResult<Option<Timer>> {
        let py = slf.py();
        let root_slow = {
            let mut me = slf.borrow_mut();
            if me.slow_timers == 0 {
                let Ok(t) = me.timers.pop(float_lt);
                return Ok(t);
            }
            me.timers.peek().is_some_and(|t| t.obj.is_some())
        };
        let r = Self::with_heap(slf, |heap| heap.pop(|a, b| timer_lt(py, a, b)));
        if root_slow {
            // Popped, or dropped by a failed sift: either way it left the heap.
            let mut me = slf.borrow_mut();
            me.slow_timers = me.slow_timers.saturating_sub(1);
        }
        r
    }

    /// The first step of `_run_once`: removes cancelled timers as asyncio does, all of them
    /// (then `heapify`) when they are many, else those at the head of the heap.
    fn compact_timers(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (rebuild, slow) = {
            let me = slf.borrow();
            let count = me.timers.len();
            (
                count > MIN_SCHEDULED_TIMER_HANDLES
                    && (me.timer_cancelled_count as f64) / (count as f64)
                        > MIN_CANCELLED_TIMER_HANDLES_FRACTION,
                me.slow_timers > 0,
            )
        };
        if rebuild {
            let mut removed: Vec<Py<Handle>> = Vec::new();
            // asyncio builds a new list and assigns it only once heapify succeeded: keep the
            // old one when a Python comparison may fail.
            let old: Option<Vec<Timer>> = slow.then(|| {
                slf.borrow()
                    .timers
                    .iter()
                    .map(|t| Timer {
                        when: t.when,
                        obj: t.obj.as_ref().map(|o| o.clone_ref(py)),
                        handle: t.handle.clone_ref(py),
                    })
                    .collect()
            });
            {
                let mut me = slf.borrow_mut();
                let mut slow_removed = 0;
                me.timers.retain(|t| {
                    let cancelled = t.handle.borrow(py).cancelled;
                    if cancelled {
                        // A second reference: the entry dropped here is never the last one.
                        removed.push(t.handle.clone_ref(py));
                        slow_removed += usize::from(t.obj.is_some());
                    }
                    !cancelled
                });
                me.slow_timers -= slow_removed;
                for h in &removed {
                    h.borrow_mut(py).scheduled = false;
                }
                if !slow || me.slow_timers == 0 {
                    let Ok(()) = me.timers.heapify(float_lt);
                    me.timer_cancelled_count = 0;
                }
            }
            if slow && slf.borrow().slow_timers > 0 {
                let res = Self::with_heap(slf, |heap| heap.heapify(|a, b| timer_lt(py, a, b)));
                let mut me = slf.borrow_mut();
                match res {
                    Ok(()) => me.timer_cancelled_count = 0,
                    Err(e) => {
                        let old = old.unwrap_or_default();
                        me.slow_timers = old.iter().filter(|t| t.obj.is_some()).count();
                        let partial = std::mem::replace(&mut me.timers, TimerHeap::new());
                        for t in old {
                            let Ok(()) = me.timers.push(t, |_, _| Ok::<bool, Infallible>(false));
                        }
                        drop(me);
                        drop((partial, removed));
                        return Err(e);
                    }
                }
            }
            drop(old);
            drop(removed);
            return Ok(());
        }
        // Remove cancelled timers from the head of the heap.
        loop {
            {
                let mut me = slf.borrow_mut();
                match me.timers.peek() {
                    Some(t) if t.handle.borrow(py).cancelled => {}
                    _ => return Ok(()),
                }
                me.timer_cancelled_count = me.timer_cancelled_count.saturating_sub(1);
            }
            if let Some(t) = Self::pop_timer(slf)? {
                t.handle.borrow_mut(py).scheduled = false;
                drop(t);
            }
        }
    }

    /// The timeout of `_run_once`'s select (the loop must not be borrowed).
    fn select_timeout(slf: &Bound<'_, Self>) -> PyResult<SelectTimeout> {
        let py = slf.py();
        let (head, clamp_313) = {
            let me = slf.borrow();
            if !me.ready.is_empty() || me.stopping {
                return Ok(SelectTimeout::Int(0));
            }
            match me.timers.peek() {
                None => return Ok(SelectTimeout::Block),
                Some(t) => match &t.obj {
                    None => {
                        let now = clock::monotonic();
                        return Ok(SelectTimeout::of_float(t.when, now, me.timeout_313));
                    }
                    Some(o) => (o.clone_ref(py), me.timeout_313),
                },
            }
        };
        SelectTimeout::of_object(py, head.bind(py), clock::monotonic(), clamp_313)
    }

    /// Moves the due timers to the ready queue (asyncio: until `handle._when >= end_time`,
    /// `end_time = time() + clock_resolution`).
    fn queue_due_timers(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (end_time, resolution) = {
            let mut me = slf.borrow_mut();
            match &me.clock_resolution_obj {
                // A `_clock_resolution` that is not a float: `time() + it` with Python's `+`
                // (asyncio computes it even when no timer is scheduled).
                Some(r) => (f64::NAN, Some(r.clone_ref(py))),
                None => {
                    if me.timers.is_empty() {
                        return Ok(());
                    }
                    let end_time = clock::monotonic() + me.clock_resolution;
                    if me.slow_timers == 0 {
                        while let Some(t) = me.timers.peek() {
                            if t.when >= end_time {
                                return Ok(());
                            }
                            let Ok(Some(t)) = me.timers.pop(float_lt) else {
                                return Ok(());
                            };
                            t.handle.borrow_mut(py).scheduled = false;
                            me.ready.push_back(t.handle.into_any());
                        }
                        return Ok(());
                    }
                    (end_time, None)
                }
            }
        };
        // `end_time` as a Python object when it is not a float (else compared natively).
        let (end_time, end) = match resolution {
            None => (end_time, PyFloat::new(py, end_time).into_any()),
            Some(r) => {
                let end = PyFloat::new(py, clock::monotonic()).add(r)?;
                match end.cast_exact::<PyFloat>() {
                    Ok(f) => (f.value(), end),
                    Err(_) => (f64::NAN, end),
                }
            }
        };
        let end_is_float = end.is_exact_instance_of::<PyFloat>();
        loop {
            // `if handle._when >= end_time: break`
            let head = {
                let me = slf.borrow();
                match me.timers.peek() {
                    None => return Ok(()),
                    Some(t) => match &t.obj {
                        None if end_is_float => {
                            if t.when >= end_time {
                                return Ok(());
                            }
                            None
                        }
                        _ => Some(when_object(py, t.when, t.obj.as_ref()).unbind()),
                    },
                }
            };
            if let Some(when) = head {
                if when.bind(py).ge(&end)? {
                    return Ok(());
                }
            }
            if let Some(t) = Self::pop_timer(slf)? {
                t.handle.borrow_mut(py).scheduled = false;
                slf.borrow_mut().ready.push_back(t.handle.into_any());
            }
        }
    }

    /// One iteration of the event loop (asyncio's `BaseEventLoop._run_once`).
    pub(crate) fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !slf.borrow().timers.is_empty() {
            Self::compact_timers(slf)?;
        }
        let timeout = Self::select_timeout(slf)?;
        let poller = {
            let me = slf.borrow();
            match &me.poller {
                Some(_) if timeout.is_zero() && me.poll_is_futile() => None,
                Some(p) => Some(p.clone_ref(py)),
                None => return Err(closed_error()),
            }
        };

        match poller {
            None => {}
            Some(Poller::Native(sel)) => {
                let timeout = timeout.duration(py, sel.kind())?;
                let mut events = std::mem::take(&mut slf.borrow_mut().events);
                let res = py.detach(|| sel.select(&mut events, timeout));
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
                let event_list = sel.call_method1(py, "select", (timeout.to_object(py)?,))?;
                slf.call_method1("_process_events", (event_list,))?;
            }
        }

        Self::queue_due_timers(slf)?;
        let ntodo = slf.borrow().ready.len();

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
        // `dt >= self.slow_callback_duration`, with Python's `>=` unless it is a float.
        let limit = slf.getattr(pyo3::intern!(py, "slow_callback_duration"))?;
        let slow = match limit.cast_exact::<PyFloat>() {
            Ok(l) => dt >= l.value(),
            Err(_) => PyFloat::new(py, dt).ge(&limit)?,
        };
        if slow {
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
    fn py_new(
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LoopCore> {
        Ok(LoopCore {
            ready: VecDeque::new(),
            timers: TimerHeap::new(),
            slow_timers: 0,
            timer_cancelled_count: 0,
            io: HashMap::default(),
            poller: None,
            events: Vec::with_capacity(256),
            waker: None,
            stopping: false,
            closed: false,
            stopping_obj: None,
            closed_obj: None,
            debug: false,
            debug_obj: None,
            clock_resolution: clock::resolution(),
            clock_resolution_obj: None,
            timeout_313: crate::compat::get(_args.py())?.run_once_timeout_if_elif,
            recv_buf: Vec::new(),
            last_sockname: None,
            last_peer_host: None,
            self_pipe: None,
            signals: false,
        })
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
            me.closed_obj = None;
            (
                std::mem::take(&mut me.ready),
                {
                    me.slow_timers = 0;
                    me.timers.drain()
                },
                std::mem::take(&mut me.io),
                me.poller.take(),
                me.waker.take(),
            )
        };
        for t in &timers {
            t.handle.borrow_mut(py).scheduled = false;
        }
        for item in ready {
            release_ready(py, item);
        }
        drop((timers, io, poller, waker));
    }

    #[getter]
    fn _closed(&self, py: Python<'_>) -> Py<PyAny> {
        flag_value(py, self.closed, self.closed_obj.as_ref())
    }
    #[setter(_closed)]
    fn set_closed_attr(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        (self.closed, self.closed_obj) = flag_of(value)?;
        Ok(())
    }
    #[getter]
    fn _stopping(&self, py: Python<'_>) -> Py<PyAny> {
        flag_value(py, self.stopping, self.stopping_obj.as_ref())
    }
    #[setter(_stopping)]
    fn set_stopping_attr(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        (self.stopping, self.stopping_obj) = flag_of(value)?;
        Ok(())
    }
    /// `_debug` as set (`set_debug(enabled)` stores `enabled` as given).
    #[getter]
    fn _debug(&self, py: Python<'_>) -> Py<PyAny> {
        flag_value(py, self.debug, self.debug_obj.as_ref())
    }
    #[setter(_debug)]
    fn set_debug_attr(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        (self.debug, self.debug_obj) = flag_of(value)?;
        Ok(())
    }
    #[getter]
    fn _clock_resolution(&self, py: Python<'_>) -> Py<PyAny> {
        when_object(
            py,
            self.clock_resolution,
            self.clock_resolution_obj.as_ref(),
        )
        .unbind()
    }
    #[setter(_clock_resolution)]
    fn set_clock_resolution_attr(&mut self, value: &Bound<'_, PyAny>) {
        match When::of(value) {
            When::Float(f) => {
                self.clock_resolution = f;
                self.clock_resolution_obj = None;
            }
            When::Obj(o) => self.clock_resolution_obj = Some(o),
        }
    }
    /// A snapshot of the ready queue (asyncio's `_ready` deque is private; tests read its length).
    #[getter]
    fn _ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.ready.iter().map(|h| h.clone_ref(py)))
    }
    #[setter(_ready)]
    fn set_ready_attr(&mut self, _value: &Bound<'_, PyAny>) {}
    /// A snapshot of the scheduled timers, in heapq's list order (as asyncio's `_scheduled`).
    #[getter]
    fn _scheduled<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.timers.iter().map(|t| t.handle.clone_ref(py)))
    }
    #[setter(_scheduled)]
    fn set_scheduled_attr(&mut self, _value: &Bound<'_, PyAny>) {}
    #[getter]
    fn _timer_cancelled_count(&self) -> i64 {
        self.timer_cancelled_count
    }
    #[setter(_timer_cancelled_count)]
    fn set_timer_cancelled_count_attr(&mut self, value: i64) {
        self.timer_cancelled_count = value;
    }

    /// `asyncio.Future(loop=self)`, without a Python-level frame.
    fn create_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item(pyo3::intern!(py, "loop"), slf)?;
        helpers::get(py)?.future_type.call(py, (), Some(&kwargs))
    }

    fn get_debug(&self, py: Python<'_>) -> Py<PyAny> {
        self._debug(py)
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
        let debug = Self::check_schedule(slf, &callback, "call_soon", true)?;
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
        let debug = Self::check_schedule(slf, &callback, "call_soon_threadsafe", false)?;
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
        let py = slf.py();
        if delay.is_none() && crate::compat::get(py)?.call_later_rejects_none {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        // `self.time() + delay`: float + float and float + int natively (an int too large for
        // a float raises OverflowError, as float.__add__), anything else with Python's `+`.
        let now = clock::monotonic();
        let when = if let Ok(d) = delay.cast_exact::<PyFloat>() {
            When::Float(now + d.value())
        } else if delay.is_exact_instance_of::<PyInt>() {
            // SAFETY: GIL held; `delay` is an int. PyLong_AsDouble returns -1.0 with an
            // exception set on overflow.
            let d = unsafe { pyo3::ffi::PyLong_AsDouble(delay.as_ptr()) };
            if d == -1.0 {
                if let Some(e) = PyErr::take(py) {
                    return Err(e);
                }
            }
            When::Float(now + d)
        } else {
            When::of(&PyFloat::new(py, now).add(delay)?)
        };
        Self::schedule_at(slf, when, callback, args, context)
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
            // 3.11+ checks first; before, TimerHandle's `assert when is not None` fired after
            // the closed check and the debug checks.
            if crate::compat::get(slf.py())?.call_at_rejects_none {
                return Err(PyTypeError::new_err("when cannot be None"));
            }
            Self::check_schedule(slf, &callback, "call_at", true)?;
            return Err(pyo3::exceptions::PyAssertionError::new_err(()));
        }
        Self::schedule_at(slf, When::of(when), callback, args, context)
    }

    /// asyncio's private hook, called by asyncio's own TimerHandle.cancel().
    fn _timer_handle_cancelled(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        if handle.getattr("_scheduled")?.is_truthy()? {
            {
                let mut me = slf.borrow_mut();
                me.timer_cancelled_count = me.timer_cancelled_count.saturating_add(1);
            }
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
        for t in self.timers.iter() {
            visit.call(&t.handle)?;
            if let Some(o) = &t.obj {
                visit.call(o)?;
            }
        }
        for o in [
            &self.debug_obj,
            &self.stopping_obj,
            &self.closed_obj,
            &self.clock_resolution_obj,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(o)?;
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
        self.slow_timers = 0;
        self.debug_obj = None;
        self.stopping_obj = None;
        self.closed_obj = None;
        self.clock_resolution_obj = None;
        self.io.clear();
        if let Some(Poller::Python(_)) = &self.poller {
            self.poller = None;
        }
    }
}
