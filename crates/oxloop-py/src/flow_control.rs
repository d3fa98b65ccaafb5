//! Write flow control shared by the native transports (asyncio's `_FlowControlMixin`):
//! the high/low water marks, `_protocol_paused`, and the pause/resume decisions. Each
//! transport embeds one [`WriteFlow`] and keeps its own `#[pymethods]` as thin wrappers,
//! since it calls the protocol and reports errors its own way.

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

/// asyncio's default high water mark (64 KiB); the low one is a quarter of it.
const DEFAULT_HIGH: i64 = 64 * 1024;
const DEFAULT_LOW: i64 = DEFAULT_HIGH / 4;

pub(crate) struct WriteFlow {
    /// `_protocol_paused`.
    pub(crate) paused: bool,
    /// `_high_water` / `_low_water` as the Python objects asyncio stores (int or float).
    high_water: Option<Py<PyAny>>,
    low_water: Option<Py<PyAny>>,
    /// The same limits as floats, compared with the buffer size.
    high: f64,
    low: f64,
}

impl WriteFlow {
    /// asyncio's defaults: 64 KiB high, 16 KiB low; not paused.
    pub(crate) fn new(py: Python<'_>) -> PyResult<Self> {
        Ok(Self::with_objects(
            DEFAULT_HIGH.into_pyobject(py)?.into_any().unbind(),
            DEFAULT_LOW.into_pyobject(py)?.into_any().unbind(),
        ))
    }

    /// The defaults, with already-built (cached) objects for the two default limits.
    pub(crate) fn with_objects(high_water: Py<PyAny>, low_water: Py<PyAny>) -> Self {
        WriteFlow {
            paused: false,
            high_water: Some(high_water),
            low_water: Some(low_water),
            high: DEFAULT_HIGH as f64,
            low: DEFAULT_LOW as f64,
        }
    }

    /// `get_write_buffer_limits()`: `(low, high)`.
    pub(crate) fn limits(&self, py: Python<'_>) -> (Py<PyAny>, Py<PyAny>) {
        let o = |x: &Option<Py<PyAny>>| x.as_ref().map_or_else(|| py.None(), |v| v.clone_ref(py));
        (o(&self.low_water), o(&self.high_water))
    }

    pub(crate) fn high_water(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.high_water.as_ref().map(|x| x.clone_ref(py))
    }

    pub(crate) fn low_water(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.low_water.as_ref().map(|x| x.clone_ref(py))
    }

    /// `_set_write_buffer_limits(high, low)` on the transport `slf`: `compute` is asyncio's
    /// limit computation (`(high, low) -> (high, low)`, raising its own errors); `flow`
    /// borrows the transport's `WriteFlow` mutably. Nothing changes when either step fails,
    /// and the old limit objects are released after the borrow ends.
    pub(crate) fn set_limits<T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>>(
        slf: &Bound<'_, T>,
        compute: &Py<PyAny>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
        flow: impl FnOnce(&mut T) -> &mut WriteFlow,
    ) -> PyResult<()> {
        let py = slf.py();
        let (h, l): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            compute.bind(py).call1((high, low))?.extract()?;
        let (hf, lf): (f64, f64) = (h.extract()?, l.extract()?);
        let old = {
            let mut me = slf.borrow_mut();
            let f = flow(&mut me);
            f.high = hf;
            f.low = lf;
            (
                f.high_water.replace(h.unbind()),
                f.low_water.replace(l.unbind()),
            )
        };
        drop(old);
        Ok(())
    }

    /// `_maybe_pause_protocol()`'s test: true (and now paused) when the buffer of `size`
    /// bytes is above the high water mark and the protocol is not paused yet.
    pub(crate) fn pause_needed(&mut self, size: f64) -> bool {
        if size <= self.high || self.paused {
            return false;
        }
        self.paused = true;
        true
    }

    /// `_maybe_resume_protocol()`'s test: true (and no longer paused) when the protocol is
    /// paused and the buffer of `size` bytes is at or below the low water mark.
    pub(crate) fn resume_needed(&mut self, size: f64) -> bool {
        if !(self.paused && size <= self.low) {
            return false;
        }
        self.paused = false;
        true
    }

    /// Visit the Python objects held (for the owner's `__traverse__`).
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for x in [&self.high_water, &self.low_water].into_iter().flatten() {
            visit.call(x)?;
        }
        Ok(())
    }
}

/// The Python-visible `_FlowControlMixin` methods and attributes of a transport class `$t`
/// that has a `flow: WriteFlow` field and `maybe_pause` / `maybe_resume` functions (its own
/// `_maybe_pause_protocol()` / `_maybe_resume_protocol()`), as one more `#[pymethods]` block.
macro_rules! write_flow_methods {
    ($t:ty) => {
        #[pyo3::pymethods]
        impl $t {
            fn get_write_buffer_limits(
                &self,
                py: pyo3::Python<'_>,
            ) -> (pyo3::Py<pyo3::PyAny>, pyo3::Py<pyo3::PyAny>) {
                self.flow.limits(py)
            }

            #[pyo3(signature = (high=None, low=None))]
            fn _set_write_buffer_limits(
                slf: &pyo3::Bound<'_, Self>,
                high: Option<&pyo3::Bound<'_, pyo3::PyAny>>,
                low: Option<&pyo3::Bound<'_, pyo3::PyAny>>,
            ) -> pyo3::PyResult<()> {
                let compute = &$crate::common::common(slf.py())?.write_buffer_limits;
                $crate::flow_control::WriteFlow::set_limits(slf, compute, high, low, |me| {
                    &mut me.flow
                })
            }

            #[pyo3(signature = (high=None, low=None))]
            fn set_write_buffer_limits(
                slf: &pyo3::Bound<'_, Self>,
                high: Option<&pyo3::Bound<'_, pyo3::PyAny>>,
                low: Option<&pyo3::Bound<'_, pyo3::PyAny>>,
            ) -> pyo3::PyResult<()> {
                Self::_set_write_buffer_limits(slf, high, low)?;
                Self::maybe_pause(slf)
            }

            fn _maybe_pause_protocol(slf: &pyo3::Bound<'_, Self>) -> pyo3::PyResult<()> {
                Self::maybe_pause(slf)
            }

            fn _maybe_resume_protocol(slf: &pyo3::Bound<'_, Self>) -> pyo3::PyResult<()> {
                Self::maybe_resume(slf)
            }

            #[getter]
            fn _protocol_paused(&self) -> bool {
                self.flow.paused
            }
            #[setter(_protocol_paused)]
            fn set_protocol_paused_attr(&mut self, v: bool) {
                self.flow.paused = v;
            }
            #[getter]
            fn _high_water(&self, py: pyo3::Python<'_>) -> Option<pyo3::Py<pyo3::PyAny>> {
                self.flow.high_water(py)
            }
            #[getter]
            fn _low_water(&self, py: pyo3::Python<'_>) -> Option<pyo3::Py<pyo3::PyAny>> {
                self.flow.low_water(py)
            }
        }
    };
}
pub(crate) use write_flow_methods;

/// The end of asyncio's `_maybe_pause_protocol()` / `_maybe_resume_protocol()`: `res` is the
/// result of the protocol's `pause_writing()` / `resume_writing()`; a failure other than
/// SystemExit/KeyboardInterrupt goes to the loop's exception handler with `message`.
/// `loop_` gives the transport's loop (`None`: the error propagates).
pub(crate) fn report_flow_error<'py>(
    transport: &Bound<'py, PyAny>,
    res: PyResult<()>,
    message: &str,
    protocol: Option<Py<PyAny>>,
    loop_: impl FnOnce() -> PyResult<Option<Bound<'py, PyAny>>>,
) -> PyResult<()> {
    let py = transport.py();
    let Err(err) = res else {
        return Ok(());
    };
    if crate::transports::is_exit(py, &err) {
        return Err(err);
    }
    let Some(loop_) = loop_()? else {
        return Err(err);
    };
    let ctx = pyo3::types::PyDict::new(py);
    ctx.set_item("message", message)?;
    ctx.set_item("exception", err.into_value(py))?;
    ctx.set_item("transport", transport)?;
    ctx.set_item("protocol", protocol)?;
    loop_.call_method1(pyo3::intern!(py, "call_exception_handler"), (ctx,))?;
    Ok(())
}
