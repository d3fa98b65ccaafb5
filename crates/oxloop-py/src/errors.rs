//! io::Error -> Python exceptions. An OS error becomes the matching `OSError` subclass WITH its
//! errno (`OSError(errno, strerror)` picks the subclass, as CPython's own modules do); an error
//! without errno becomes the exception its kind names.

use pyo3::exceptions::{PyNotImplementedError, PyOSError, PyValueError};
use pyo3::PyErr;
use std::io;

pub(crate) fn to_pyerr(err: io::Error) -> PyErr {
    if let Some(code) = err.raw_os_error() {
        let msg = io::Error::from_raw_os_error(code).to_string();
        // Strip Rust's " (os error N)" suffix so the message reads like CPython's strerror.
        let msg = match msg.rfind(" (os error") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        return PyOSError::new_err((code, msg));
    }
    match err.kind() {
        io::ErrorKind::InvalidInput => PyValueError::new_err(err.to_string()),
        io::ErrorKind::Unsupported => PyNotImplementedError::new_err(err.to_string()),
        _ => PyOSError::new_err(err.to_string()),
    }
}
