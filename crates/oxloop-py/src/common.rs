//! The `oxloop._transports` objects every native transport (socket, datagram, pipe) uses,
//! imported once. Each transport module's own `Cached` holds a reference to them and derefs
//! to them, so `cached(py)?.debug` reads the shared object.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

pub(crate) struct Common {
    pub(crate) set_result_unless_cancelled: Py<PyAny>,
    /// `debug(loop, msg, *args)`: a `logger.debug` line when the loop is in debug mode.
    pub(crate) debug: Py<PyAny>,
    pub(crate) fatal_error_debug: Py<PyAny>,
    /// The ResourceWarning of an unclosed transport.
    pub(crate) unclosed: Py<PyAny>,
    /// asyncio's `_set_write_buffer_limits` computation: `(high, low) -> (high, low)`.
    pub(crate) write_buffer_limits: Py<PyAny>,
    /// `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
    pub(crate) log_threshold: usize,
}

static COMMON: PyOnceLock<Common> = PyOnceLock::new();

pub(crate) fn common(py: Python<'_>) -> PyResult<&'static Common> {
    COMMON.get_or_try_init(py, || {
        let m = py.import("oxloop._transports")?;
        let get = |name: &str| m.getattr(name).map(Bound::unbind);
        Ok(Common {
            set_result_unless_cancelled: get("set_result_unless_cancelled")?,
            debug: get("debug")?,
            fatal_error_debug: get("fatal_error_debug")?,
            unclosed: get("unclosed")?,
            write_buffer_limits: get("write_buffer_limits")?,
            log_threshold: m.getattr("LOG_THRESHOLD_FOR_CONNLOST_WRITES")?.extract()?,
        })
    })
}

/// `impl Deref<Target = Common>` for a module's `Cached` struct with a `common` field.
macro_rules! deref_common {
    ($t:ty) => {
        impl ::std::ops::Deref for $t {
            type Target = $crate::common::Common;
            fn deref(&self) -> &$crate::common::Common {
                self.common
            }
        }
    };
}
pub(crate) use deref_common;

/// Call the method `name` as the transport's `__class__` (the Python class with asyncio's
/// bases that `isinstance()` sees) resolves it, on the native transport `slf`: for the
/// methods asyncio's transport inherits from the abstract classes of `asyncio.transports`
/// (they raise NotImplementedError; `writelines` joins, then calls `self.write`), so the
/// native one answers exactly as asyncio's, for the running version.
pub(crate) fn call_base_method<'py>(
    slf: &Bound<'py, PyAny>,
    name: &str,
    args: &[&Bound<'py, PyAny>],
) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let f = slf.getattr(pyo3::intern!(py, "__class__"))?.getattr(name)?;
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(slf.clone());
    all.extend(args.iter().map(|a| (*a).clone()));
    Ok(f.call1(pyo3::types::PyTuple::new(py, all)?)?.unbind())
}

/// One more `#[pymethods]` block for the native transport `$t`: each listed method (with its
/// asyncio parameter names) is asyncio's inherited base-class method ([`call_base_method`]).
macro_rules! base_class_methods {
    ($t:ty; $($name:ident($($arg:ident),*)),* $(,)?) => {
        #[pyo3::pymethods]
        impl $t {
            $(
                fn $name(
                    slf: &pyo3::Bound<'_, Self>,
                    $($arg: &pyo3::Bound<'_, pyo3::PyAny>),*
                ) -> pyo3::PyResult<pyo3::Py<pyo3::PyAny>> {
                    $crate::common::call_base_method(
                        slf.as_any(),
                        stringify!($name),
                        &[$($arg),*],
                    )
                }
            )*
        }
    };
}
pub(crate) use base_class_methods;

/// The class attribute `name` of `oxloop._transports` (asyncio's value), or AttributeError
/// naming `attr` as on `type_name` when the running asyncio's class has none (None there).
pub(crate) fn asyncio_class_attr(
    py: Python<'_>,
    name: &str,
    type_name: &str,
    attr: &str,
) -> PyResult<Py<PyAny>> {
    let v = py.import("oxloop._transports")?.getattr(name)?;
    if v.is_none() {
        return Err(pyo3::exceptions::PyAttributeError::new_err(format!(
            "'{type_name}' object has no attribute '{attr}'"
        )));
    }
    Ok(v.unbind())
}

/// A native transport whose `__del__` work (asyncio's: an unclosed transport warns and closes
/// its socket or pipe) runs as the type's `tp_finalize`, installed by [`install_finalizer`].
///
/// The cyclic GC calls every `tp_finalize` of a garbage cycle before it clears any member
/// (PEP 442), as it calls asyncio's `__del__`: the socket or pipe object is still intact
/// then. Work left to `Drop` (at deallocation) could find it already emptied by its own
/// `tp_clear` (a `socket.socket` without `_io_refs`). `Drop` keeps doing the same work for
/// an object freed by reference counting, which does not call the finalizer; whichever runs
/// first takes the resource, so the work is done once.
pub(crate) trait Finalize: pyo3::PyClass {
    /// asyncio's `__del__`, on the live object; errors are reported as unraisable.
    fn finalize(slf: &Bound<'_, Self>) -> PyResult<()>;
}

/// The `tp_finalize` slot of `T`: runs [`Finalize::finalize`] with the current exception
/// saved and restored, as a finalizer must.
unsafe extern "C" fn finalize_slot<T: Finalize>(obj: *mut pyo3::ffi::PyObject) {
    // SAFETY: CPython calls tp_finalize with the GIL held (the thread is attached).
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `obj` is a live object (CPython holds a reference for the duration of the call).
    let any = unsafe { Bound::from_borrowed_ptr(py, obj) };
    let pending = PyErr::take(py);
    if let Ok(slf) = any.cast::<T>() {
        if let Err(e) = T::finalize(slf) {
            e.write_unraisable(py, Some(&any));
        }
    }
    if let Some(p) = pending {
        p.restore(py);
    }
}

/// Give `T`'s type object the `tp_finalize` slot of [`Finalize`] (PyO3 has no `__del__`).
pub(crate) fn install_finalizer<T: Finalize>(py: Python<'_>) {
    let ty = T::type_object(py);
    let tp = ty.as_type_ptr();
    // SAFETY: `tp` is T's heap type object, alive while `ty` is held; the GIL is held, under
    // which CPython itself updates type slots; tp_finalize is not inherited by PyO3's types
    // (none subclasses T natively), and PyType_Modified drops any cached lookup of the type.
    unsafe {
        (*tp).tp_finalize = Some(finalize_slot::<T>);
        pyo3::ffi::PyType_Modified(tp);
    }
}

/// asyncio's `__del__` of a selector or pipe transport: if `take` finds its socket / pipe
/// still set, `ResourceWarning("unclosed transport {self!r}", source=self)`, then the socket /
/// pipe is closed and `after` runs. No borrow is held while Python code runs.
pub(crate) fn finalize_unclosed<T>(
    slf: &Bound<'_, T>,
    is_open: impl Fn(&T) -> bool,
    take: impl FnOnce(&mut T) -> Option<Py<PyAny>>,
    after: impl FnOnce() -> PyResult<()>,
) -> PyResult<()>
where
    T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>,
{
    let py = slf.py();
    if !slf.try_borrow().is_ok_and(|me| is_open(&me)) {
        return Ok(());
    }
    let repr = slf.as_any().repr()?;
    // Taken before the warning: if that raises (-W error), this is not retried at
    // deallocation; the socket / pipe is then left to its own finalizer, as asyncio's is.
    let resource = {
        let mut me = slf.try_borrow_mut()?;
        take(&mut me)
    };
    let Some(resource) = resource else {
        return Ok(());
    };
    common(py)?.unclosed.call1(py, (repr, slf))?;
    resource.call_method0(py, pyo3::intern!(py, "close"))?;
    after()
}

/// asyncio's `max_size` (the most one read returns), as asyncio keeps it: a class attribute
/// of 256 KiB that an instance attribute may shadow with any object. An exact int in
/// 1..=256 KiB is read natively with that size (`native`); any other value is kept as
/// `given`, and each read passes it to the stdlib call asyncio makes (`sock.recv`,
/// `sock.recvfrom`, `os.read`), so the result or error is the stdlib's (0: an empty read,
/// a negative or huge int, a float: their errors; a big int: that much memory, as asyncio).
pub(crate) struct MaxSize {
    pub(crate) native: usize,
    given: Option<Py<PyAny>>,
}

impl MaxSize {
    pub(crate) const DEFAULT: usize = 256 * 1024;

    pub(crate) fn new() -> Self {
        MaxSize {
            native: Self::DEFAULT,
            given: None,
        }
    }

    /// The attribute's value.
    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.given {
            Some(v) => Ok(v.clone_ref(py)),
            None => Ok(self.native.into_pyobject(py)?.into_any().unbind()),
        }
    }

    /// `max_size = v`.
    pub(crate) fn set(&mut self, v: &Bound<'_, PyAny>) {
        let small = v
            .is_exact_instance_of::<pyo3::types::PyInt>()
            .then(|| v.extract::<usize>().ok())
            .flatten()
            .filter(|n| (1..=Self::DEFAULT).contains(n));
        *self = match small {
            Some(n) => MaxSize {
                native: n,
                given: None,
            },
            None => MaxSize {
                native: Self::DEFAULT,
                given: Some(v.clone().unbind()),
            },
        };
    }

    /// The value to pass to the stdlib read, when it is not one the native read takes.
    pub(crate) fn slow(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.given.as_ref().map(|v| v.clone_ref(py))
    }

    pub(crate) fn traverse(&self, visit: &pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        match &self.given {
            Some(v) => visit.call(v),
            None => Ok(()),
        }
    }
}

/// Whether a read that raised `e` (in Python) just found nothing to read.
pub(crate) fn would_block(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py)
        || e.is_instance_of::<pyo3::exceptions::PyInterruptedError>(py)
}
