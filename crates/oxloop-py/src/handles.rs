//! `Handle` and `TimerHandle`: what `call_soon`, `call_later` and the fd watchers return,
//! mirroring `asyncio.events.Handle` / `asyncio.events.TimerHandle`.
//!
//! A handle holds its callback, its arguments and the `contextvars.Context` it runs in.
//! Running it enters the context with `PyContext_Enter` and calls the callback directly
//! (no `Context.run` bound-method call, no argument tuple rebuilt); an exception other than
//! `SystemExit`/`KeyboardInterrupt` goes to the loop's exception handler, exactly as
//! `asyncio.Handle._run` does.

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::helpers;

#[pyclass(subclass, weakref, module = "oxloop._oxloop")]
pub struct Handle {
    pub(crate) callback: Option<Py<PyAny>>,
    pub(crate) args: Option<Py<PyTuple>>,
    pub(crate) context: Option<Py<PyAny>>,
    pub(crate) loop_: Option<Py<PyAny>>,
    pub(crate) cancelled: bool,
    pub(crate) source_traceback: Option<Py<PyAny>>,
    /// Representation kept when cancelled in debug mode (as asyncio does).
    /// (Boxed: debug mode only; a thin pointer keeps every handle 16 bytes smaller.)
    #[allow(clippy::box_collection)]
    pub(crate) repr: Option<Box<String>>,
    /// Only meaningful for `TimerHandle`.
    pub(crate) when: f64,
    /// Only meaningful for `TimerHandle`: still in the loop's timer heap.
    pub(crate) scheduled: bool,
    /// The callback is a native `SocketTransport`'s `_read_ready`: `callback` holds the
    /// transport itself (no bound-method object per connection) and running the handle calls
    /// the method directly. `_callback` still reads as the bound method.
    pub(crate) transport_read: bool,
}

impl Handle {
    pub(crate) fn new(
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        loop_: Py<PyAny>,
        context: Py<PyAny>,
    ) -> Handle {
        Handle {
            callback: Some(callback),
            args: Some(args),
            context: Some(context),
            loop_: Some(loop_),
            cancelled: false,
            source_traceback: None,
            repr: None,
            when: 0.0,
            scheduled: false,
            transport_read: false,
        }
    }
}

impl Drop for Handle {
    /// Releases the references as plain decrefs: `Py::drop` would first look up whether this
    /// thread is attached (a thread-local read per field), once per handle, millions a second.
    fn drop(&mut self) {
        // SAFETY: a Handle lives in its Python object and is dropped by its tp_dealloc, or is
        // a value made and dropped by Rust code called from Python; either way this thread is
        // attached to the interpreter.
        let py = unsafe { Python::assume_attached() };
        let objs = [
            self.callback.take(),
            self.context.take(),
            self.loop_.take(),
            self.source_traceback.take(),
        ];
        for x in objs.into_iter().flatten() {
            drop(x.into_bound(py));
        }
        if let Some(a) = self.args.take() {
            drop(a.into_bound(py));
        }
    }
}

/// Copy of the current context, as `contextvars.copy_context()`.
pub(crate) fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: we hold the GIL; PyContext_CopyCurrent returns a new reference or NULL with an
    // exception set, which from_owned_ptr_or_err turns into a PyErr.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()).map(Bound::unbind) }
}

/// Calls `callback(*args)` inside `context`. Returns the callback's error, if any.
pub(crate) fn call_in_context(
    py: Python<'_>,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    context: &Bound<'_, PyAny>,
) -> PyResult<()> {
    // SAFETY: GIL held; `context` is any object: PyContext_Enter checks that it is a
    // contextvars.Context and raises TypeError otherwise (handled below).
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        let err = PyErr::fetch(py);
        // Not a Context (PyContext_Enter's TypeError): asyncio's `Handle._run` calls
        // `self._context.run(self._callback, *self._args)` on whatever it was given, so do
        // that (an int gives asyncio's AttributeError, an object with `run` is called).
        if err.is_instance_of::<pyo3::exceptions::PyTypeError>(py) {
            return context_run(py, callback, args, context);
        }
        return Err(err);
    }
    let nargs = args.len();
    // SAFETY: GIL held; callback and args are valid owned references kept alive by the caller
    // for the duration of the call. The result is a new reference or NULL with an exception set.
    let res = unsafe {
        if nargs == 0 {
            ffi::PyObject_CallNoArgs(callback.as_ptr())
        } else {
            ffi::PyObject_Call(callback.as_ptr(), args.as_ptr(), std::ptr::null_mut())
        }
    };
    let out = if res.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: res is a new, non-null reference that we own and release here.
        unsafe { ffi::Py_DECREF(res) };
        Ok(())
    };
    // SAFETY: GIL held; we entered this very context above. Exiting can only fail if the
    // context is not the current one, which the callback cannot arrange.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } < 0 {
        let exit_err = PyErr::fetch(py);
        return out.and(Err(exit_err));
    }
    out
}

/// `context.run(callback, *args)` as Python code would call it (a context that is not a
/// `contextvars.Context`).
fn context_run(
    py: Python<'_>,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    context: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let run = context.getattr(pyo3::intern!(py, "run"))?;
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(callback.clone());
    all.extend(args.iter());
    run.call1(PyTuple::new(py, all)?)?;
    Ok(())
}

/// Runs a handle as `asyncio.Handle._run` does. Only SystemExit and KeyboardInterrupt propagate.
pub(crate) fn run_handle(py: Python<'_>, handle: &Bound<'_, Handle>) -> PyResult<()> {
    // Bound clones (their drop is a plain decref): the callback may cancel the handle,
    // which drops the handle's own references, while it runs.
    let (callback, args, context, transport_read) = {
        let h = handle.borrow();
        match (&h.callback, &h.args, &h.context) {
            (Some(c), Some(a), Some(x)) => (
                c.bind(py).clone(),
                a.bind(py).clone(),
                x.bind(py).clone(),
                h.transport_read,
            ),
            _ => return Ok(()),
        }
    };
    if transport_read {
        return run_transport_read(
            py,
            handle,
            callback.unbind(),
            &args.unbind(),
            &context.unbind(),
        );
    }
    match call_in_context(py, &callback, &args, &context) {
        Ok(()) => Ok(()),
        Err(err) => {
            report_callback_error(py, handle.as_any(), &callback.unbind(), &args.unbind(), err)
        }
    }
}

/// A `transport_read` handle: `transport._read_ready()` called natively inside the context.
fn run_transport_read(
    py: Python<'_>,
    handle: &Bound<'_, Handle>,
    transport: Py<PyAny>,
    args: &Py<PyTuple>,
    context: &Py<PyAny>,
) -> PyResult<()> {
    let tr = transport
        .bind(py)
        .cast::<crate::transports::SocketTransport>()?;
    // SAFETY: GIL held; `context` is the contextvars.Context the handle was made with.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let out = crate::transports::SocketTransport::read_ready(tr);
    // SAFETY: GIL held; we entered this very context above.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } < 0 {
        let exit_err = PyErr::fetch(py);
        if out.is_ok() {
            return Err(exit_err);
        }
    }
    match out {
        Ok(()) => Ok(()),
        Err(err) => {
            let callback = transport.bind(py).getattr("_read_ready")?.unbind();
            report_callback_error(py, handle.as_any(), &callback, args, err)
        }
    }
}

impl Handle {
    /// Makes this fd handle run `transport._read_ready()` natively (see `transport_read`).
    pub(crate) fn set_transport_read(slf: &Bound<'_, Handle>, transport: Py<PyAny>) {
        let old = {
            let mut h = slf.borrow_mut();
            h.transport_read = true;
            h.callback.replace(transport)
        };
        drop(old);
    }
}

/// The error path of a callback: SystemExit/KeyboardInterrupt propagate, everything else
/// becomes a `call_exception_handler` context like asyncio's.
pub(crate) fn report_callback_error(
    py: Python<'_>,
    handle: &Bound<'_, PyAny>,
    callback: &Py<PyAny>,
    args: &Py<PyTuple>,
    err: PyErr,
) -> PyResult<()> {
    if err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py) {
        return Err(err);
    }
    helpers::get(py)?
        .callback_error
        .call1(py, (handle, callback, args, err.into_value(py)))?;
    Ok(())
}

fn handle_repr(slf: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = slf.py();
    helpers::get(py)?.handle_repr.call1(py, (slf,))?.extract(py)
}

#[pymethods]
impl Handle {
    #[new]
    #[pyo3(signature = (callback, args, r#loop, context=None))]
    fn py_new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Bound<'_, PyAny>,
        r#loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Handle> {
        let args = PyTuple::new(py, args.try_iter()?.collect::<PyResult<Vec<_>>>()?)?.unbind();
        let context = match context {
            Some(c) if !c.is_none(py) => c,
            _ => copy_context(py)?,
        };
        Ok(Handle::new(callback, args, r#loop, context))
    }

    /// Cancel the callback. A cancelled callback is never run.
    pub(crate) fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (was_cancelled, loop_, scheduled) = {
            let h = slf.borrow();
            (
                h.cancelled,
                h.loop_.as_ref().map(|l| l.bind(py).clone()),
                h.scheduled,
            )
        };
        if was_cancelled {
            return Ok(());
        }
        let debug = match &loop_ {
            // An oxloop loop: count the cancelled timer and read the debug flag in one borrow.
            Some(l) => match l.cast::<crate::base_events::LoopCore>() {
                Ok(core) => {
                    let mut core = core.borrow_mut();
                    if scheduled {
                        core.timer_cancelled_count = core.timer_cancelled_count.saturating_add(1);
                    }
                    core.debug
                }
                Err(_) => {
                    if scheduled {
                        crate::base_events::timer_handle_cancelled(l, slf)?;
                    }
                    crate::base_events::loop_debug(l)?
                }
            },
            None => false,
        };
        if debug {
            slf.borrow_mut().cancelled = true;
            // Keep a representation (made after marking it cancelled, as asyncio does) so that
            // "Executing <Handle cancelled ...> took ..." still names the callback.
            let repr = handle_repr(slf.as_any())?;
            slf.borrow_mut().repr = Some(Box::new(repr));
        }
        // Drop references to the callback and its arguments to break cycles, as asyncio does
        // (after the borrow: dropping them can run Python code).
        let (callback, args) = {
            let mut h = slf.borrow_mut();
            h.cancelled = true;
            (h.callback.take(), h.args.take())
        };
        drop((callback, args));
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancelled
    }

    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    /// Run the callback now (asyncio's private `Handle._run`, used by tests and tools).
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        run_handle(slf.py(), slf)
    }

    /// What `isinstance()` falls back to: asyncio's `events.Handle` for a native `Handle`,
    /// `events.TimerHandle` for a native `TimerHandle`, so `isinstance(h, asyncio.Handle)` and
    /// `isinstance(th, asyncio.TimerHandle)` hold as for asyncio's handles (and asyncio's
    /// `TimerHandle.__eq__`/`__lt__`/... accept a native one). `type(h)` stays the native
    /// class; a Python subclass of `Handle` reports itself, as `object.__class__` would.
    /// (Only looked up by `isinstance()`, `__class__` reads and the like: not on a hot path.)
    #[getter]
    fn __class__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let ty = slf.get_type();
        if ty.is(py.get_type::<Handle>()) {
            return Ok(helpers::get(py)?.asyncio_handle.clone_ref(py));
        }
        if ty.is(py.get_type::<TimerHandle>()) {
            return Ok(helpers::get(py)?.asyncio_timer_handle.clone_ref(py));
        }
        Ok(ty.into_any().unbind())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        if let Some(r) = &slf.borrow().repr {
            return Ok(String::clone(r));
        }
        handle_repr(slf.as_any())
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.callback {
            Some(c) if self.transport_read => Ok(Some(c.bind(py).getattr("_read_ready")?.unbind())),
            c => Ok(c.as_ref().map(|c| c.clone_ref(py))),
        }
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.args.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.loop_.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.cancelled
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|c| c.clone_ref(py))
    }

    #[setter(_source_traceback)]
    fn set_source_traceback_attr(&mut self, value: Option<Py<PyAny>>) {
        self.source_traceback = value;
    }

    #[getter]
    fn _repr(&self) -> Option<String> {
        self.repr.as_deref().cloned()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(x) = &self.callback {
            visit.call(x)?;
        }
        if let Some(x) = &self.args {
            visit.call(x)?;
        }
        if let Some(x) = &self.context {
            visit.call(x)?;
        }
        if let Some(x) = &self.loop_ {
            visit.call(x)?;
        }
        if let Some(x) = &self.source_traceback {
            visit.call(x)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.callback = None;
        self.args = None;
        self.context = None;
        self.loop_ = None;
        self.source_traceback = None;
    }
}

/// A handle scheduled for a point in time (`call_later`, `call_at`).
///
/// asyncio stores `when` as given and compares handles with `self._when < other._when`. An
/// exact `float` deadline is kept as the base's `when` (compared natively); any other object
/// (int, bool, Decimal, Fraction, ...) is kept in `when_obj`, returned by `when()` / `_when`
/// and compared with Python's operators.
#[pyclass(extends = Handle, module = "oxloop._oxloop")]
pub struct TimerHandle {
    pub(crate) when_obj: Option<Py<PyAny>>,
}

/// A deadline: an exact float (native comparisons) or any other object (Python's).
pub(crate) enum When {
    Float(f64),
    Obj(Py<PyAny>),
}

impl When {
    /// The deadline `obj` as given.
    pub(crate) fn of(obj: &Bound<'_, PyAny>) -> When {
        match obj.cast_exact::<PyFloat>() {
            Ok(f) => When::Float(f.value()),
            Err(_) => When::Obj(obj.clone().unbind()),
        }
    }
}

/// The deadline as the Python object asyncio's `_when` would be.
pub(crate) fn when_object<'py>(
    py: Python<'py>,
    when: f64,
    when_obj: Option<&Py<PyAny>>,
) -> Bound<'py, PyAny> {
    match when_obj {
        Some(o) => o.bind(py).clone(),
        None => PyFloat::new(py, when).into_any(),
    }
}

impl TimerHandle {
    /// `self._when`, without keeping the handle borrowed (the object's own methods may run
    /// Python code that touches the handle).
    fn when_of<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        let py = slf.py();
        let me = slf.borrow();
        when_object(py, me.as_super().when, me.when_obj.as_ref())
    }

    /// `self._callback` / `self._args` (None once cancelled).
    fn callback_and_args(slf: &Bound<'_, Self>) -> (Py<PyAny>, Py<PyAny>) {
        let py = slf.py();
        let me = slf.borrow();
        let h = me.as_super();
        (
            h.callback
                .as_ref()
                .map_or_else(|| py.None(), |c| c.clone_ref(py)),
            h.args
                .as_ref()
                .map_or_else(|| py.None(), |a| a.clone_ref(py).into_any()),
        )
    }
}

fn bool_obj(py: Python<'_>, b: bool) -> Py<PyAny> {
    PyBool::new(py, b).to_owned().into_any().unbind()
}

#[pymethods]
impl TimerHandle {
    #[new]
    #[pyo3(signature = (when, callback, args, r#loop, context=None))]
    fn py_new(
        py: Python<'_>,
        when: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
        args: Bound<'_, PyAny>,
        r#loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<PyClassInitializer<TimerHandle>> {
        let mut h = Handle::py_new(py, callback, args, r#loop, context)?;
        if when.is_none() && crate::compat::get(py)?.timer_handle_asserts_when {
            // 3.9/3.10's TimerHandle.__init__: `assert when is not None` (after Handle's).
            return Err(pyo3::exceptions::PyAssertionError::new_err(()));
        }
        let when_obj = match When::of(when) {
            When::Float(w) => {
                h.when = w;
                None
            }
            When::Obj(o) => Some(o),
        };
        Ok(PyClassInitializer::from(h).add_subclass(TimerHandle { when_obj }))
    }

    /// The absolute time (in `loop.time()` terms) the callback is scheduled for, as given.
    fn when<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::when_of(slf)
    }

    #[getter]
    fn _when<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::when_of(slf)
    }

    #[getter]
    fn _scheduled(slf: PyRef<'_, Self>) -> bool {
        slf.as_super().scheduled
    }

    /// `hash(self._when)`.
    fn __hash__(slf: &Bound<'_, Self>) -> PyResult<isize> {
        Self::when_of(slf).hash()
    }

    /// asyncio's `__lt__`, `__le__`, `__gt__`, `__ge__`, `__eq__` (and object's `__ne__`, the
    /// negation of `__eq__`), returning what those expressions return.
    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        use pyo3::basic::CompareOp::*;
        let py = other.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let fast = {
            let (x, y) = (slf.borrow(), other.borrow());
            match (&x.when_obj, &y.when_obj) {
                (None, None) => Some((x.as_super().when, y.as_super().when)),
                _ => None,
            }
        };
        // `self._when OP other._when`
        let when_cmp = |op| -> PyResult<Py<PyAny>> {
            if let Some((a, b)) = fast {
                let r = match op {
                    Lt => a < b,
                    Gt => a > b,
                    _ => a == b,
                };
                return Ok(bool_obj(py, r));
            }
            Ok(Self::when_of(slf)
                .rich_compare(Self::when_of(other), op)?
                .unbind())
        };
        // `self._when == other._when and self._callback == other._callback and
        //  self._args == other._args and self._cancelled == other._cancelled`
        let eq = || -> PyResult<Py<PyAny>> {
            let r = when_cmp(Eq)?;
            if !r.bind(py).is_truthy()? {
                return Ok(r);
            }
            let (cb_x, args_x) = Self::callback_and_args(slf);
            let (cb_y, args_y) = Self::callback_and_args(other);
            let r = cb_x.bind(py).rich_compare(cb_y, Eq)?;
            if !r.is_truthy()? {
                return Ok(r.unbind());
            }
            let r = args_x.bind(py).rich_compare(args_y, Eq)?;
            if !r.is_truthy()? {
                return Ok(r.unbind());
            }
            let same = slf.borrow().as_super().cancelled == other.borrow().as_super().cancelled;
            Ok(bool_obj(py, same))
        };
        match op {
            Lt | Gt => when_cmp(op),
            Le | Ge => {
                let r = when_cmp(if matches!(op, Le) { Lt } else { Gt })?;
                if r.bind(py).is_truthy()? {
                    return Ok(r);
                }
                eq()
            }
            Eq => eq(),
            Ne => Ok(bool_obj(py, !eq()?.bind(py).is_truthy()?)),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(x) = &self.when_obj {
            visit.call(x)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.when_obj = None;
    }
}
