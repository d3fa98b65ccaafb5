//! Python functions the native code calls on slow paths only (errors, reprs, debug mode).
//! They live in `oxloop/_helpers.py` so that version differences of asyncio (3.9-3.13) are
//! handled in one readable place; they are imported once and cached.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

pub(crate) struct Helpers {
    /// `callback_error(handle, callback, args, exc)`: report to the loop's exception handler.
    pub callback_error: Py<PyAny>,
    /// `handle_repr(handle) -> str`, as asyncio's Handle/TimerHandle repr.
    pub handle_repr: Py<PyAny>,
    /// `source_traceback() -> list`: debug-mode creation stack of a handle.
    pub source_traceback: Py<PyAny>,
    /// `slow_callback(loop, handle, seconds)`: the debug-mode "Executing ... took" warning.
    pub slow_callback: Py<PyAny>,
    /// `asyncio.selector_events.BaseSelectorEventLoop`: fd watching with a Python selector.
    pub base_selector_loop: Py<PyAny>,
    /// `asyncio.Future` (the C implementation when available, as asyncio uses).
    pub future_type: Py<PyAny>,
    /// `asyncio.events.Handle` / `asyncio.events.TimerHandle`: the native handles' `__class__`.
    pub asyncio_handle: Py<PyAny>,
    pub asyncio_timer_handle: Py<PyAny>,
}

static HELPERS: PyOnceLock<Helpers> = PyOnceLock::new();

pub(crate) fn get(py: Python<'_>) -> PyResult<&'static Helpers> {
    HELPERS.get_or_try_init(py, || {
        let m = py.import("oxloop._helpers")?;
        let se = py.import("asyncio.selector_events")?;
        let ev = py.import("asyncio.events")?;
        Ok(Helpers {
            callback_error: m.getattr("callback_error")?.unbind(),
            handle_repr: m.getattr("handle_repr")?.unbind(),
            source_traceback: m.getattr("source_traceback")?.unbind(),
            slow_callback: m.getattr("slow_callback")?.unbind(),
            base_selector_loop: se.getattr("BaseSelectorEventLoop")?.unbind(),
            future_type: py.import("asyncio.futures")?.getattr("Future")?.unbind(),
            asyncio_handle: ev.getattr("Handle")?.unbind(),
            asyncio_timer_handle: ev.getattr("TimerHandle")?.unbind(),
        })
    })
}
