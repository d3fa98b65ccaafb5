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
