//! `oxloop._oxloop`: the native half of oxloop. This file only registers the module.
#![deny(unsafe_op_in_unsafe_fn)]

mod base_events;
mod common;
mod compat;
mod datagram;
mod errors;
mod flow_control;
mod handles;
mod helpers;
mod selector_events;
mod sock;
mod sslproto;
mod transports;
mod unix_events;

use pyo3::prelude::*;

#[pymodule]
fn _oxloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<base_events::LoopCore>()?;
    m.add_class::<sock::SockOp>()?;
    m.add_class::<transports::SocketTransport>()?;
    m.add_class::<sslproto::SSLProtocol>()?;
    m.add_class::<sslproto::SSLProtocolTransport>()?;
    m.add_class::<datagram::DatagramTransport>()?;
    m.add_class::<unix_events::ReadPipeTransport>()?;
    m.add_class::<unix_events::WritePipeTransport>()?;
    // asyncio's __del__ of each transport, run when the cyclic GC finalizes (common.rs).
    let py = m.py();
    common::install_finalizer::<transports::SocketTransport>(py);
    common::install_finalizer::<datagram::DatagramTransport>(py);
    common::install_finalizer::<unix_events::ReadPipeTransport>(py);
    common::install_finalizer::<unix_events::WritePipeTransport>(py);
    common::install_finalizer::<sslproto::SSLProtocolTransport>(py);
    m.add_function(wrap_pyfunction!(selector_events::selector_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(selector_events::default_selector, m)?)?;
    m.add_function(wrap_pyfunction!(selector_events::clock_resolution, m)?)?;
    #[cfg(feature = "test-hooks")]
    test_hooks::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// Functions only the test suite calls, compiled in with the `test-hooks` cargo feature (which
/// `make setup` enables and the wheels users install do not have).
#[cfg(feature = "test-hooks")]
mod test_hooks {
    use pyo3::prelude::*;
    use pyo3::types::PyDict;

    pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
        m.add_function(wrap_pyfunction!(_compat_flags_for_test, m)?)?;
        Ok(())
    }

    /// Panics inside native code, to prove a Rust panic surfaces as a Python exception
    /// (`pyo3_runtime.PanicException`) instead of aborting the process.
    #[pyfunction]
    fn _panic_for_test(message: &str) {
        panic!("{}", message);
    }

    /// The version flags as the native code holds them (`compat.rs`), keyed by their
    /// `oxloop._compat` names, so a test can check they are the ones `_compat.py` decided.
    #[pyfunction]
    fn _compat_flags_for_test(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let c = crate::compat::get(py)?;
        let d = PyDict::new(py);
        d.set_item("CALL_LATER_REJECTS_NONE", c.call_later_rejects_none)?;
        d.set_item("CALL_AT_REJECTS_NONE", c.call_at_rejects_none)?;
        d.set_item("STREAM_OWN_WRITELINES", c.stream_own_writelines)?;
        d.set_item("RUN_ONCE_TIMEOUT_IF_ELIF", c.run_once_timeout_if_elif)?;
        d.set_item("TIMER_HANDLE_ASSERTS_WHEN", c.timer_handle_asserts_when)?;
        Ok(d)
    }
}
