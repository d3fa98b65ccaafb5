//! Write flow control shared by the native transports (asyncio's `_FlowControlMixin`):
//! the high/low water marks, `_protocol_paused`, and the pause/resume decisions. Each
//! transport embeds one [`WriteFlow`] and keeps its own `#[pymethods]` as thin wrappers,
//! since it calls the protocol and reports errors its own way.

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

/// asyncio's default high water mark (64 KiB); the low one is a quarter of it.
const DEFAULT_HIGH: i64 = 64 * 1024;
const DEFAULT_LOW: i64 = DEFAULT_HIGH / 4;

/// One water mark: the object given (asyncio stores and returns it as is) and, when it is an
/// exact int, bool or float, the same value as a float to compare buffer sizes with natively
/// (ints beyond the float range saturate to +/-inf, which compares the same with any size).
/// Any other object (an int subclass, Decimal, Fraction, ...) is compared with Python's own
/// operators, as asyncio does.
pub(crate) struct Mark {
    obj: Py<PyAny>,
    fast: Option<f64>,
}

impl Mark {
    pub(crate) fn new(obj: Bound<'_, PyAny>) -> PyResult<Self> {
        let fast = fast_value(&obj)?;
        Ok(Mark {
            obj: obj.unbind(),
            fast,
        })
    }

    /// A mark that is a known int (the defaults).
    fn known(obj: Py<PyAny>, value: i64) -> Self {
        Mark {
            obj,
            fast: Some(value as f64),
        }
    }

    pub(crate) fn obj(&self, py: Python<'_>) -> Py<PyAny> {
        self.obj.clone_ref(py)
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        Mark {
            obj: self.obj.clone_ref(py),
            fast: self.fast,
        }
    }

    /// `size <= self`: natively for a plain number, else in Python (hold no borrow then).
    pub(crate) fn size_le(&self, py: Python<'_>, size: i64) -> PyResult<bool> {
        match self.fast {
            Some(v) => Ok(size as f64 <= v),
            None => Self::le(py, size, &self.obj),
        }
    }

    /// `size >= self`: natively for a plain number, else in Python (hold no borrow then).
    pub(crate) fn size_ge(&self, py: Python<'_>, size: i64) -> PyResult<bool> {
        match self.fast {
            Some(v) => Ok(size as f64 >= v),
            None => Self::ge(py, size, &self.obj),
        }
    }

    /// Visit the object (for the owner's `__traverse__`).
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.obj)
    }

    /// `size <= mark`, as Python evaluates it.
    fn le(py: Python<'_>, size: i64, mark: &Py<PyAny>) -> PyResult<bool> {
        size.into_pyobject(py)?.le(mark.bind(py))
    }

    /// `size >= mark`, as Python evaluates it.
    fn ge(py: Python<'_>, size: i64, mark: &Py<PyAny>) -> PyResult<bool> {
        size.into_pyobject(py)?.ge(mark.bind(py))
    }
}

/// The float value of an exact int, bool or float (saturating for huge ints), else None.
fn fast_value(obj: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    use pyo3::types::{PyBool, PyFloat, PyInt};
    if obj.is_exact_instance_of::<PyFloat>() {
        return Ok(Some(obj.extract::<f64>()?));
    }
    if !(obj.is_exact_instance_of::<PyInt>() || obj.is_exact_instance_of::<PyBool>()) {
        return Ok(None);
    }
    match obj.extract::<f64>() {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(obj.py()) => {
            let negative = obj.lt(0)?;
            Ok(Some(if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }))
        }
        Err(e) => Err(e),
    }
}

pub(crate) struct WriteFlow {
    /// `_protocol_paused`.
    pub(crate) paused: bool,
    /// `_high_water` / `_low_water`.
    high: Mark,
    low: Mark,
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
            high: Mark::known(high_water, DEFAULT_HIGH),
            low: Mark::known(low_water, DEFAULT_LOW),
        }
    }

    /// `get_write_buffer_limits()`: `(low, high)`.
    pub(crate) fn limits(&self, py: Python<'_>) -> (Py<PyAny>, Py<PyAny>) {
        (self.low.obj(py), self.high.obj(py))
    }

    pub(crate) fn high_water(&self, py: Python<'_>) -> Py<PyAny> {
        self.high.obj(py)
    }

    pub(crate) fn low_water(&self, py: Python<'_>) -> Py<PyAny> {
        self.low.obj(py)
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
        let (h, l) = (Mark::new(h)?, Mark::new(l)?);
        let old = {
            let mut me = slf.borrow_mut();
            let f = flow(&mut me);
            (
                std::mem::replace(&mut f.high, h),
                std::mem::replace(&mut f.low, l),
            )
        };
        drop(old);
        Ok(())
    }

    /// `_maybe_pause_protocol()`'s test on the transport `slf`, whose buffer holds `size`
    /// bytes: true (and now paused) when `not size <= high` and the protocol is not paused
    /// yet. A mark that is not a plain number is compared in Python with no borrow held
    /// (its comparison may raise, as in asyncio).
    pub(crate) fn pause_needed<T>(
        slf: &Bound<'_, T>,
        size: i64,
        flow: impl Fn(&mut T) -> &mut WriteFlow,
    ) -> PyResult<bool>
    where
        T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>,
    {
        let slow = {
            let mut me = slf.borrow_mut();
            let f = flow(&mut me);
            match f.high.fast {
                // `not size <= high`: a stored mark is never NaN (asyncio's check refuses it).
                Some(h) => return Ok(f.set_paused_if(size as f64 > h, true)),
                None => f.high.obj(slf.py()),
            }
        };
        let above = !Mark::le(slf.py(), size, &slow)?;
        let mut me = slf.borrow_mut();
        Ok(flow(&mut me).set_paused_if(above, true))
    }

    /// `_maybe_resume_protocol()`'s test: true (and no longer paused) when the protocol is
    /// paused and `size <= low` (compared only when paused, as asyncio's `and`).
    pub(crate) fn resume_needed<T>(
        slf: &Bound<'_, T>,
        size: i64,
        flow: impl Fn(&mut T) -> &mut WriteFlow,
    ) -> PyResult<bool>
    where
        T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>,
    {
        let slow = {
            let mut me = slf.borrow_mut();
            let f = flow(&mut me);
            if !f.paused {
                return Ok(false);
            }
            match f.low.fast {
                Some(l) => return Ok(f.set_paused_if(size as f64 <= l, false)),
                None => f.low.obj(slf.py()),
            }
        };
        let below = Mark::le(slf.py(), size, &slow)?;
        let mut me = slf.borrow_mut();
        Ok(flow(&mut me).set_paused_if(below, false))
    }

    /// When `cond` holds and `paused` is not `to` yet, set it to `to`: true if it changed.
    fn set_paused_if(&mut self, cond: bool, to: bool) -> bool {
        if !cond || self.paused == to {
            return false;
        }
        self.paused = to;
        true
    }

    /// Visit the Python objects held (for the owner's `__traverse__`).
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.high.traverse(visit)?;
        self.low.traverse(visit)
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
            fn _high_water(&self, py: pyo3::Python<'_>) -> pyo3::Py<pyo3::PyAny> {
                self.flow.high_water(py)
            }
            #[getter]
            fn _low_water(&self, py: pyo3::Python<'_>) -> pyo3::Py<pyo3::PyAny> {
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
