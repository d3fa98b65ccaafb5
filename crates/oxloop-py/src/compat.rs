//! The version rules of the running asyncio that the native code needs, read once from
//! `oxloop/_compat.py` (where every fact oxloop reads off asyncio is decided and documented).
//! Nothing here looks at `sys.version_info`: the rule and its reason live in `_compat.py`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

pub(crate) struct Compat {
    /// `_compat.CALL_LATER_REJECTS_NONE`: `call_later(None, ...)` raises
    /// `TypeError("delay must not be None")` (3.11+); before, the float addition fails.
    pub(crate) call_later_rejects_none: bool,
    /// `_compat.CALL_AT_REJECTS_NONE`: `call_at(None, ...)` raises
    /// `TypeError("when cannot be None")` (3.11+); before, TimerHandle's assert fires.
    pub(crate) call_at_rejects_none: bool,
    /// `_compat.STREAM_OWN_WRITELINES`: the stream transport has its own `writelines()`
    /// (3.12+); before, `WriteTransport.writelines` joins and calls `write()`.
    pub(crate) stream_own_writelines: bool,
    /// `_compat.RUN_ONCE_TIMEOUT_IF_ELIF`: `_run_once` clamps the selector timeout with
    /// if/elif (3.13+), so a NaN deadline reaches the selector; before, `max(0, nan)` is 0.
    pub(crate) run_once_timeout_if_elif: bool,
    /// `_compat.TIMER_HANDLE_ASSERTS_WHEN`: `TimerHandle(None, ...)` fails its
    /// `assert when is not None` (3.9/3.10).
    pub(crate) timer_handle_asserts_when: bool,
}

static COMPAT: PyOnceLock<Compat> = PyOnceLock::new();

pub(crate) fn get(py: Python<'_>) -> PyResult<&'static Compat> {
    COMPAT.get_or_try_init(py, || {
        let m = py.import("oxloop._compat")?;
        let flag = |name: &str| -> PyResult<bool> { m.getattr(name)?.extract() };
        Ok(Compat {
            call_later_rejects_none: flag("CALL_LATER_REJECTS_NONE")?,
            call_at_rejects_none: flag("CALL_AT_REJECTS_NONE")?,
            stream_own_writelines: flag("STREAM_OWN_WRITELINES")?,
            run_once_timeout_if_elif: flag("RUN_ONCE_TIMEOUT_IF_ELIF")?,
            timer_handle_asserts_when: flag("TIMER_HANDLE_ASSERTS_WHEN")?,
        })
    })
}
