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
