//! asyncio's pipe transports (`unix_events.py`: `_UnixReadPipeTransport` and
//! `_UnixWritePipeTransport`, with `transports.py`'s `_FlowControlMixin` for the write side)
//! with their state and hot paths in Rust. Used by `connect_read_pipe`/`connect_write_pipe`
//! and so by the pipes of subprocesses.
//!
//! - read: the fd's reader callback is the native `_read_ready`: one `read(2)` of at most
//!   `max_size` (256 KiB) -> one `bytes` -> `protocol.data_received(data)`. What FIONREAD
//!   announces is read straight into a new `bytes` object; otherwise (EOF, EIO, fds without
//!   FIONREAD) the read goes into the loop's reusable buffer and is copied. (asyncio's
//!   `os.read(fd, 256 KiB)` allocates 256 KiB and shrinks it, per read.)
//! - write: written at once when nothing is queued; the remainder is queued (a `bytes` object
//!   by reference, anything else copied) and flushed with `writev` on writable events.
//! - everything else follows asyncio's code for the running Python version (3.9-3.13): the fd
//!   type checks and their messages, the write side's reader trick that notices a reader
//!   closing its end, EIO from a pty logged at debug level only, flow control that resumes the
//!   protocol only once the queue is empty, close/abort/write_eof, `__del__`'s ResourceWarning.
//!   Slow paths (logging, warnings, reprs) call `oxloop/_transports.py`.
//!
//! Borrow discipline (as in `transports.rs`): no `PyRef`/`PyRefMut` of a transport is held
//! while Python code runs, so protocols may call back into the transport from any callback.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use oxloop_core::net::MAX_IOV;
use oxloop_core::pipe;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::call::PyCallArgs;
use pyo3::exceptions::{
    PyAssertionError, PyAttributeError, PyBufferError, PyNotImplementedError, PyOSError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::base_events::{loop_debug, LoopCore};
use crate::common::{common, deref_common, Common};
use crate::errors::to_pyerr;
use crate::flow_control::{report_flow_error, write_flow_methods, WriteFlow};
use crate::transports::{add_reader, add_writer, is_exit, remove_reader, remove_writer};

/// The loop's read buffer is kept when at most this large.
const MAX_KEPT_READ_BUFFER: usize = 1 << 20;
/// Queued writes smaller than this are copied (and coalesced); a larger `bytes` object is
/// queued by reference.
const SHARE_MIN: usize = 16 * 1024;
/// Small writes queued behind each other share a chunk up to this size.
const COALESCE: usize = 64 * 1024;
/// `selectors.EVENT_READ` / `EVENT_WRITE`.
const EVENT_READ: u8 = 1;
const EVENT_WRITE: u8 = 2;

struct Cached {
    common: &'static Common,
    read_mask: Py<PyAny>,
    write_mask: Py<PyAny>,
    closed_by_peer: Py<PyAny>,
    conn_lost_warning: Py<PyAny>,
    polling: Py<PyAny>,
    /// 3.11+: `is_reading()` and `_add_reader()` on the read transport, which then starts
    /// reading only if not paused or closed by then.
    read_is_reading: bool,
    /// The write side watches a FIFO for readability (not on AIX, where that only works for
    /// sockets).
    reader_trick_on_fifo: bool,
}

deref_common!(Cached);

static CACHED: PyOnceLock<Cached> = PyOnceLock::new();

fn cached(py: Python<'_>) -> PyResult<&'static Cached> {
    CACHED.get_or_try_init(py, || {
        let m = py.import("oxloop._transports")?;
        let get = |name: &str| m.getattr(name).map(Bound::unbind);
        Ok(Cached {
            common: common(py)?,
            read_mask: get("ReadPipeTransport")?,
            write_mask: get("WritePipeTransport")?,
            closed_by_peer: get("pipe_closed_by_peer")?,
            conn_lost_warning: get("pipe_conn_lost_warning")?,
            polling: get("pipe_polling")?,
            read_is_reading: m.getattr("PIPE_READ_IS_READING")?.is_truthy()?,
            reader_trick_on_fifo: m.getattr("PIPE_READER_TRICK_ON_FIFO")?.is_truthy()?,
        })
    })
}

/// The methods and attributes the read and the write pipe transport share, as one more
/// `#[pymethods]` block of `$t` (fields `protocol`, `pipe`, `loop_`, `extra`, `fileno`; a
/// `fatal_error` function).
macro_rules! pipe_shared_methods {
    ($t:ty) => {
        #[pymethods]
        impl $t {
            #[pyo3(signature = (exc, message="Fatal error on pipe transport"))]
            fn _fatal_error(
                slf: &Bound<'_, Self>,
                exc: &Bound<'_, PyAny>,
                message: &str,
            ) -> PyResult<()> {
                Self::fatal_error(slf, exc, message)
            }

            fn _call_connection_lost(
                slf: &Bound<'_, Self>,
                exc: &Bound<'_, PyAny>,
            ) -> PyResult<()> {
                let py = slf.py();
                let protocol = clone_opt(py, &slf.borrow().protocol);
                let res = match &protocol {
                    Some(p) => p
                        .call_method1(py, intern!(py, "connection_lost"), (exc,))
                        .map(drop),
                    None => Err(none_attr("connection_lost")),
                };
                // finally:
                let pipe_obj = slf.borrow_mut().pipe.take();
                let fin = match &pipe_obj {
                    Some(p) => p.call_method0(py, intern!(py, "close")).map(drop),
                    None => Err(none_attr("close")),
                };
                let old = {
                    let mut me = slf.borrow_mut();
                    (me.protocol.take(), me.loop_.take())
                };
                drop((pipe_obj, protocol, old));
                fin?;
                res
            }

            #[pyo3(signature = (name, default=None))]
            fn get_extra_info(
                slf: &Bound<'_, Self>,
                name: &Bound<'_, PyAny>,
                default: Option<Py<PyAny>>,
            ) -> PyResult<Py<PyAny>> {
                let py = slf.py();
                let extra = slf.borrow().extra.as_ref().map(|e| e.clone_ref(py));
                if let Some(extra) = extra {
                    if let Some(v) = extra.bind(py).get_item(name)? {
                        return Ok(v.unbind());
                    }
                }
                Ok(default.unwrap_or_else(|| py.None()))
            }

            #[getter]
            fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                clone_opt(py, &self.loop_)
            }
            #[getter]
            fn _pipe(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                clone_opt(py, &self.pipe)
            }
            /// Settable, as on asyncio's transport (`_pipe = None`: no warning from the finalizer).
            #[setter(_pipe)]
            fn set_pipe_attr(&mut self, pipe: Option<Py<PyAny>>) {
                self.pipe = pipe;
            }
            #[getter]
            fn _fileno(&self) -> RawFd {
                self.fileno
            }
            #[getter]
            fn _protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                clone_opt(py, &self.protocol)
            }
            #[getter]
            fn _extra(&self, py: Python<'_>) -> Option<Py<PyDict>> {
                self.extra.as_ref().map(|x| x.clone_ref(py))
            }
        }
    };
}

/// An AttributeError for an attribute that asyncio would look up on `None` (a protocol, pipe
/// or loop already released by `_call_connection_lost`).
fn none_attr(name: &str) -> PyErr {
    PyAttributeError::new_err(format!("'NoneType' object has no attribute '{name}'"))
}

fn clone_opt(py: Python<'_>, x: &Option<Py<PyAny>>) -> Option<Py<PyAny>> {
    x.as_ref().map(|v| v.clone_ref(py))
}

fn call_soon<'py>(loop_: &Bound<'py, PyAny>, args: impl PyCallArgs<'py>) -> PyResult<()> {
    loop_.call_method1(intern!(loop_.py(), "call_soon"), args)?;
    Ok(())
}

/// What both constructors do first: `extra['pipe'] = pipe`, `pipe.fileno()`, the fstat check
/// and `os.set_blocking(fd, False)`. Returns the extra dict, the fd and the fd's kind.
fn open_pipe<'py>(
    pipe_obj: &Bound<'py, PyAny>,
    extra: Option<&Bound<'py, PyAny>>,
    message: &str,
) -> PyResult<(Bound<'py, PyDict>, RawFd, pipe::FileKind)> {
    let py = pipe_obj.py();
    // BaseTransport.__init__: the caller's dict itself, or a new one.
    let extra = match extra {
        Some(e) if !e.is_none() => e.cast::<PyDict>()?.clone(),
        _ => PyDict::new(py),
    };
    extra.set_item(intern!(py, "pipe"), pipe_obj)?;
    let fd: RawFd = pipe_obj.call_method0(intern!(py, "fileno"))?.extract()?;
    let kind = pipe::file_kind(fd).map_err(to_pyerr)?;
    if !(kind.fifo || kind.socket || kind.char_device) {
        return Err(PyValueError::new_err(message.to_string()));
    }
    oxloop_core::sys::set_nonblocking(fd, true).map_err(to_pyerr)?;
    Ok((extra, fd, kind))
}

/// asyncio's pipe transport `__repr__`: `<Name [closed|closing] fd=N state...>`. `bufsize` is
/// Some for the write side (which reports whether it polls for writing, and its buffer size).
fn pipe_repr(
    py: Python<'_>,
    name: &str,
    pipe_open: bool,
    closing: bool,
    fd: RawFd,
    loop_: Option<&Py<PyAny>>,
    bufsize: Option<usize>,
) -> PyResult<String> {
    let event = if bufsize.is_some() {
        EVENT_WRITE
    } else {
        EVENT_READ
    };
    let mut info = vec![name.to_string()];
    if !pipe_open {
        info.push("closed".into());
    } else if closing {
        info.push("closing".into());
    }
    info.push(format!("fd={fd}"));
    // None when the loop (or its `_selector`) is gone.
    let polling = match loop_ {
        Some(l) if pipe_open => cached(py)?.polling.call1(py, (l, fd, event))?,
        _ => py.None(),
    };
    if pipe_open && !polling.is_none(py) {
        let p = polling.is_truthy(py)?;
        info.push(if p { "polling" } else { "idle" }.into());
        if let Some(n) = bufsize {
            info.push(format!("bufsize={n}"));
        }
    } else if pipe_open {
        info.push("open".into());
    } else {
        info.push("closed".into());
    }
    Ok(format!("<{}>", info.join(" ")))
}

/// `__del__` of an unclosed pipe transport: a ResourceWarning, then `pipe.close()`.
fn warn_unclosed(py: Python<'_>, repr: String, pipe_obj: Py<PyAny>) {
    let mut res = cached(py).and_then(|c| c.unclosed.call1(py, (repr,)).map(drop));
    if res.is_ok() {
        res = pipe_obj.call_method0(py, intern!(py, "close")).map(drop);
    }
    if let Err(e) = res {
        e.write_unraisable(py, None);
    }
}

fn debug_log(loop_: &Bound<'_, PyAny>, msg: &str, tr: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = loop_.py();
    if loop_debug(loop_)? {
        cached(py)?.debug.call1(py, (msg, tr))?;
    }
    Ok(())
}

/// One read of at most `max_size` bytes: `(result, data)`, data being the bytes read when the
/// result is `Ok(Some(n))` with n > 0.
///
/// When the fd says how much it holds (FIONREAD: pipes, sockets, ttys), that much is read
/// straight into a new `bytes` object; otherwise (or when it says 0: EOF, EIO and the like
/// are then read as asyncio would) into the loop's reusable buffer, then copied.
#[allow(clippy::type_complexity)]
fn read_pipe<'py>(
    py: Python<'py>,
    loop_: &Bound<'py, PyAny>,
    fd: RawFd,
    max_size: usize,
) -> PyResult<(std::io::Result<Option<usize>>, Option<Bound<'py, PyBytes>>)> {
    if let Ok(avail) = pipe::available(fd) {
        if avail > 0 {
            let n = avail.min(max_size);
            // SAFETY: a new bytes object of n (uninitialized) bytes, or NULL with an exception.
            let obj = unsafe {
                Bound::from_owned_ptr_or_err(
                    py,
                    pyo3::ffi::PyBytes_FromStringAndSize(
                        std::ptr::null(),
                        n as pyo3::ffi::Py_ssize_t,
                    ),
                )
            }?;
            // SAFETY: the buffer of a bytes object, valid for n bytes while `obj` lives.
            let ptr = unsafe { pyo3::ffi::PyBytes_AsString(obj.as_ptr()) } as *mut u8;
            // SAFETY: `obj` is a new bytes object that nothing else references yet, so
            // filling its buffer (CPython's own idiom for building bytes) is sound; `obj`
            // outlives the call.
            let res = unsafe { pipe::read_raw(fd, ptr, n) };
            let obj = obj.cast_into::<PyBytes>()?;
            return Ok(match res {
                Ok(Some(k)) if k == n => (res, Some(obj)),
                // Fewer bytes than announced (someone else read meanwhile): copy those.
                Ok(Some(k)) if k > 0 => {
                    // SAFETY: the first k bytes of the buffer were written by read().
                    let got = unsafe { std::slice::from_raw_parts(ptr, k) };
                    (res, Some(PyBytes::new(py, got)))
                }
                _ => (res, None),
            });
        }
    }
    let core = loop_.cast::<LoopCore>().ok();
    let mut buf = match core.and_then(|c| c.try_borrow_mut().ok()) {
        Some(mut c) => std::mem::take(&mut c.recv_buf),
        None => Vec::new(),
    };
    if buf.len() < max_size {
        buf.resize(max_size, 0);
    }
    let res = pipe::read(fd, &mut buf[..max_size]);
    let data = match &res {
        Ok(Some(n)) if *n > 0 => Some(PyBytes::new(py, &buf[..*n])),
        _ => None,
    };
    if buf.len() <= MAX_KEPT_READ_BUFFER {
        if let Some(mut c) = core.and_then(|c| c.try_borrow_mut().ok()) {
            if c.recv_buf.capacity() < buf.capacity() {
                c.recv_buf = buf;
            }
        }
    }
    Ok((res, data))
}

// ------------------------------------------------------------------------------------------
// Read pipe
// ------------------------------------------------------------------------------------------

#[pyclass(module = "oxloop._oxloop", dict, weakref)]
pub struct ReadPipeTransport {
    loop_: Option<Py<PyAny>>,
    pipe: Option<Py<PyAny>>,
    fileno: RawFd,
    protocol: Option<Py<PyAny>>,
    extra: Option<Py<PyDict>>,
    closing: bool,
    paused: bool,
    max_size: crate::common::MaxSize,
}

impl ReadPipeTransport {
    fn is_reading_(&self) -> bool {
        !self.paused && !self.closing
    }

    /// `_close(exc)`: stop reading and schedule `_call_connection_lost(exc)`.
    fn close_(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let mut me = slf.borrow_mut();
            me.closing = true;
            (clone_opt(py, &me.loop_), me.fileno)
        };
        let loop_ = loop_.ok_or_else(|| none_attr("_remove_reader"))?;
        let loop_ = loop_.bind(py);
        remove_reader(loop_, fd)?;
        call_soon(
            loop_,
            (slf.getattr(intern!(py, "_call_connection_lost"))?, exc),
        )
    }

    /// `_fatal_error(exc, message)`: EIO (a pty whose other side closed) is only logged in
    /// debug mode; anything else goes to the loop's exception handler.
    fn fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let (loop_, protocol) = {
            let me = slf.borrow();
            (clone_opt(py, &me.loop_), clone_opt(py, &me.protocol))
        };
        let eio = exc.is_instance_of::<PyOSError>()
            && exc
                .getattr(intern!(py, "errno"))?
                .extract::<Option<i32>>()
                .ok()
                .flatten()
                == Some(libc::EIO);
        // asyncio's first use of `self._loop` (None once the connection is lost).
        let loop_ = loop_.ok_or_else(|| {
            none_attr(if eio {
                "get_debug"
            } else {
                "call_exception_handler"
            })
        })?;
        let loop_ = loop_.bind(py);
        if eio {
            if loop_debug(loop_)? {
                cached(py)?
                    .fatal_error_debug
                    .call1(py, (slf, message, exc))?;
            }
        } else {
            let ctx = PyDict::new(py);
            ctx.set_item("message", message)?;
            ctx.set_item("exception", exc)?;
            ctx.set_item("transport", slf)?;
            ctx.set_item("protocol", protocol)?;
            loop_.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        }
        Self::close_(slf, exc.clone())
    }

    /// End of file: asyncio schedules `eof_received()` and `_call_connection_lost(None)`.
    fn on_eof(slf: &Bound<'_, Self>, loop_: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if loop_debug(loop_)? {
            cached(py)?.closed_by_peer.call1(py, (slf,))?;
        }
        let (fd, protocol) = {
            let mut me = slf.borrow_mut();
            me.closing = true;
            (me.fileno, clone_opt(py, &me.protocol))
        };
        remove_reader(loop_, fd)?;
        let protocol = protocol.ok_or_else(|| none_attr("eof_received"))?;
        call_soon(loop_, (protocol.getattr(py, intern!(py, "eof_received"))?,))?;
        call_soon(
            loop_,
            (
                slf.getattr(intern!(py, "_call_connection_lost"))?,
                py.None(),
            ),
        )
    }
}

#[pymethods]
impl ReadPipeTransport {
    /// asyncio's `_UnixReadPipeTransport(loop, pipe, protocol, waiter, extra)`.
    #[staticmethod]
    #[pyo3(signature = (r#loop, pipe, protocol, waiter=None, extra=None))]
    fn _create<'py>(
        r#loop: &Bound<'py, PyAny>,
        pipe: &Bound<'py, PyAny>,
        protocol: &Bound<'py, PyAny>,
        waiter: Option<&Bound<'py, PyAny>>,
        extra: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, ReadPipeTransport>> {
        let py = r#loop.py();
        let c = cached(py)?;
        let (extra, fd, _) = open_pipe(pipe, extra, "Pipe transport is for pipes/sockets only.")?;
        let tr = Bound::new(
            py,
            ReadPipeTransport {
                loop_: Some(r#loop.clone().unbind()),
                pipe: Some(pipe.clone().unbind()),
                fileno: fd,
                protocol: Some(protocol.clone().unbind()),
                extra: Some(extra.unbind()),
                closing: false,
                paused: false,
                max_size: crate::common::MaxSize::new(),
            },
        )?;
        let call_soon = r#loop.getattr(intern!(py, "call_soon"))?;
        call_soon.call1((protocol.getattr(intern!(py, "connection_made"))?, &tr))?;
        // Only start reading when connection_made() has been called (3.11+: and only if the
        // protocol did not pause reading or close the transport meanwhile).
        let add = if c.read_is_reading {
            tr.getattr(intern!(py, "_add_reader"))?
        } else {
            r#loop.getattr(intern!(py, "_add_reader"))?
        };
        call_soon.call1((add, fd, tr.getattr(intern!(py, "_read_ready"))?))?;
        if let Some(w) = waiter.filter(|w| !w.is_none()) {
            call_soon.call1((&c.set_result_unless_cancelled, w, py.None()))?;
        }
        Ok(tr)
    }

    /// 3.11+'s `_add_reader(fd, callback)`: only while reading.
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let loop_ = {
            let me = slf.borrow();
            if !me.is_reading_() {
                return Ok(());
            }
            clone_opt(py, &me.loop_)
        };
        let loop_ = loop_.ok_or_else(|| none_attr("_add_reader"))?;
        let loop_ = loop_.bind(py);
        match fd.extract::<RawFd>() {
            Ok(fd) => add_reader(loop_, fd, callback.clone()),
            Err(_) => loop_
                .call_method1(intern!(py, "_add_reader"), (fd, callback))
                .map(drop),
        }
    }

    /// 3.11+; before, `ReadTransport.is_reading()` raised NotImplementedError.
    fn is_reading(&self, py: Python<'_>) -> PyResult<bool> {
        if !cached(py)?.read_is_reading {
            return Err(PyNotImplementedError::new_err(()));
        }
        Ok(self.is_reading_())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let (pipe_open, closing, fd, loop_) = {
            let me = slf.borrow();
            (
                me.pipe.is_some(),
                me.closing,
                me.fileno,
                clone_opt(py, &me.loop_),
            )
        };
        let name = slf.get_type().name()?.to_string();
        pipe_repr(py, &name, pipe_open, closing, fd, loop_.as_ref(), None)
    }

    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd, max_size) = {
            let me = slf.borrow();
            let Some(l) = &me.loop_ else {
                return Ok(());
            };
            if let Some(n) = me.max_size.slow(py) {
                let fd = me.fileno;
                drop(me);
                return Self::read_ready_slow(slf, fd, n);
            }
            (l.clone_ref(py), me.fileno, me.max_size.native)
        };
        let loop_ = loop_.bind(py);
        let (res, data) = read_pipe(py, loop_, fd, max_size)?;
        match res {
            Ok(None) => Ok(()),
            Err(e) => {
                let exc = to_pyerr(e).into_value(py).into_bound(py).into_any();
                Self::fatal_error(slf, &exc, "Fatal read error on pipe transport")
            }
            Ok(Some(0)) => Self::on_eof(slf, loop_),
            Ok(Some(_)) => {
                let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
                let protocol = protocol.ok_or_else(|| none_attr("data_received"))?;
                protocol.call_method1(py, intern!(py, "data_received"), (data,))?;
                Ok(())
            }
        }
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let mut me = slf.borrow_mut();
            if !me.is_reading_() {
                return Ok(());
            }
            me.paused = true;
            (clone_opt(py, &me.loop_), me.fileno)
        };
        let loop_ = loop_.ok_or_else(|| none_attr("_remove_reader"))?;
        let loop_ = loop_.bind(py);
        remove_reader(loop_, fd)?;
        debug_log(loop_, "%r pauses reading", slf.as_any())
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let mut me = slf.borrow_mut();
            if me.closing || !me.paused {
                return Ok(());
            }
            me.paused = false;
            (clone_opt(py, &me.loop_), me.fileno)
        };
        let loop_ = loop_.ok_or_else(|| none_attr("_add_reader"))?;
        let loop_ = loop_.bind(py);
        add_reader(loop_, fd, slf.getattr(intern!(py, "_read_ready"))?)?;
        debug_log(loop_, "%r resumes reading", slf.as_any())
    }

    fn set_protocol(&mut self, protocol: Py<PyAny>) {
        self.protocol = Some(protocol);
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        clone_opt(py, &self.protocol).unwrap_or_else(|| py.None())
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.borrow().closing {
            return Ok(());
        }
        Self::close_(slf, slf.py().None().into_bound(slf.py()))
    }

    fn _close(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::close_(slf, exc.clone())
    }

    /// What `isinstance()` falls back to: `oxloop._transports.ReadPipeTransport`, a subclass
    /// of `asyncio.ReadTransport`, as asyncio's read pipe transport is. `type(tr)` stays this
    /// native class.
    #[getter]
    fn __class__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(cached(py)?.read_mask.clone_ref(py))
    }
    #[getter]
    fn _closing(&self) -> bool {
        self.closing
    }
    #[getter]
    fn _paused(&self) -> bool {
        self.paused
    }
    #[getter]
    fn max_size(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.max_size.get(py)
    }
    #[setter]
    fn set_max_size(&mut self, v: &Bound<'_, PyAny>) {
        self.max_size.set(v);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for x in [&self.loop_, &self.pipe, &self.protocol]
            .into_iter()
            .flatten()
        {
            visit.call(x)?;
        }
        if let Some(e) = &self.extra {
            visit.call(e)?;
        }
        self.max_size.traverse(&visit)
    }

    fn __clear__(&mut self) {
        // The pipe is visited but kept (its own clear breaks a cycle through it): the
        // finalizer still warns about and closes an unclosed one.
        self.max_size = crate::common::MaxSize::new();
        self.loop_ = None;
        self.protocol = None;
        self.extra = None;
    }
}

pipe_shared_methods!(ReadPipeTransport);

impl crate::common::Finalize for ReadPipeTransport {
    fn finalize(slf: &Bound<'_, Self>) -> PyResult<()> {
        crate::common::finalize_unclosed(
            slf,
            |me| me.pipe.is_some(),
            |me| me.pipe.take(),
            || Ok(()),
        )
    }
}

impl Drop for ReadPipeTransport {
    fn drop(&mut self) {
        let Some(pipe_obj) = self.pipe.take() else {
            return;
        };
        Python::attach(|py| {
            // Do not disturb an exception being propagated while this object is freed.
            let pending = PyErr::take(py);
            let repr = pipe_repr(
                py,
                "ReadPipeTransport",
                true,
                self.closing,
                self.fileno,
                self.loop_.as_ref(),
                None,
            )
            .unwrap_or_else(|_| format!("<ReadPipeTransport fd={}>", self.fileno));
            warn_unclosed(py, repr, pipe_obj);
            if let Some(p) = pending {
                p.restore(py);
            }
        });
    }
}

// ------------------------------------------------------------------------------------------
// Write pipe
// ------------------------------------------------------------------------------------------

enum Chunk {
    /// Copied bytes (coalesced small writes, bytearray/memoryview data).
    Owned(Vec<u8>),
    /// A `bytes` object from the offset on, queued by reference (it is immutable).
    Shared(Py<PyBytes>, usize),
}

impl Chunk {
    fn bytes<'a>(&'a self, py: Python<'_>) -> &'a [u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(b, off) => &b.as_bytes(py)[*off..],
        }
    }
}

/// The unsent data (asyncio's `bytearray`): chunks, the first one sent up to `head`.
#[derive(Default)]
struct PipeBuffer {
    chunks: VecDeque<Chunk>,
    head: usize,
    size: usize,
}

impl PipeBuffer {
    fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn push_copy(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.size += data.len();
        if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
            if last.len() + data.len() <= COALESCE {
                last.extend_from_slice(data);
                return;
            }
        }
        let mut chunk = Vec::with_capacity(data.len().max(4096));
        chunk.extend_from_slice(data);
        self.chunks.push_back(Chunk::Owned(chunk));
    }

    /// Queues `bytes[off..]`: by reference when large, else copied.
    fn push_bytes(&mut self, b: &Bound<'_, PyBytes>, off: usize) {
        let data = &b.as_bytes()[off..];
        if data.len() < SHARE_MIN {
            self.push_copy(data);
            return;
        }
        self.size += data.len();
        self.chunks
            .push_back(Chunk::Shared(b.clone().unbind(), off));
    }

    /// Drops `n` written bytes from the front.
    fn consume(&mut self, py: Python<'_>, mut n: usize) {
        n = n.min(self.size);
        self.size -= n;
        while n > 0 {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let rest = first.bytes(py).len() - self.head;
            if n >= rest {
                n -= rest;
                self.chunks.pop_front();
                self.head = 0;
            } else {
                self.head += n;
                n = 0;
            }
        }
        if self.size == 0 {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.head = 0;
        self.size = 0;
    }

    fn snapshot(&self, py: Python<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size);
        for (i, c) in self.chunks.iter().enumerate() {
            let b = c.bytes(py);
            out.extend_from_slice(if i == 0 { &b[self.head..] } else { b });
        }
        out
    }

    /// Writes as much as the fd takes (writev of up to `MAX_IOV` chunks at a time, again
    /// while whole batches go through). Ok(0): would block at once.
    fn flush(&mut self, py: Python<'_>, fd: RawFd) -> std::io::Result<usize> {
        let mut total = 0;
        while !self.is_empty() {
            let mut bufs: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
            let mut n = 0;
            let mut offered = 0;
            for (i, c) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let b = c.bytes(py);
                bufs[n] = if i == 0 { &b[self.head..] } else { b };
                offered += bufs[n].len();
                n += 1;
            }
            let res = pipe::writev(fd, &bufs[..n]);
            match res {
                Ok(None) => break,
                Ok(Some(k)) => {
                    self.consume(py, k);
                    total += k;
                    if k < offered {
                        break;
                    }
                }
                // Report the error only if nothing was written: the next call sees it again.
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }
}

#[pyclass(module = "oxloop._oxloop", dict, weakref)]
pub struct WritePipeTransport {
    loop_: Option<Py<PyAny>>,
    pipe: Option<Py<PyAny>>,
    fileno: RawFd,
    protocol: Option<Py<PyAny>>,
    extra: Option<Py<PyDict>>,
    buffer: PipeBuffer,
    conn_lost: usize,
    /// Set when close() or write_eof() is called.
    closing: bool,
    /// Write flow control: limits and `_protocol_paused`.
    flow: WriteFlow,
}

/// Data given to write(): the bytes object itself or a buffer export of the bytes-like object.
enum WriteData<'py> {
    Bytes(Bound<'py, PyBytes>),
    View(PyUntypedBuffer),
}

impl WriteData<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            WriteData::Bytes(b) => b.as_bytes(),
            WriteData::View(v) if v.len_bytes() == 0 || v.buf_ptr().is_null() => &[],
            // SAFETY: the export is C-contiguous (checked when made), non-empty with a non-null
            // pointer (checked above) and held by `self`, so the memory is valid and cannot be
            // resized while the slice lives.
            WriteData::View(v) => unsafe {
                std::slice::from_raw_parts(v.buf_ptr() as *const u8, v.len_bytes())
            },
        }
    }
}

impl WritePipeTransport {
    fn loop_or_err(&self, py: Python<'_>, attr: &str) -> PyResult<Py<PyAny>> {
        clone_opt(py, &self.loop_).ok_or_else(|| none_attr(attr))
    }

    /// `_close(exc)`: drop the queue, stop watching, schedule `_call_connection_lost(exc)`.
    fn close_(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd, had_buffer) = {
            let mut me = slf.borrow_mut();
            me.closing = true;
            let had = !me.buffer.is_empty();
            // asyncio's first use of `self._loop` (None once the connection is lost).
            let first = if had {
                "_remove_writer"
            } else {
                "_remove_reader"
            };
            (me.loop_or_err(py, first), me.fileno, had)
        };
        let loop_ = loop_?;
        let loop_ = loop_.bind(py);
        if had_buffer {
            remove_writer(loop_, fd)?;
        }
        let old = std::mem::take(&mut slf.borrow_mut().buffer);
        drop(old);
        remove_reader(loop_, fd)?;
        call_soon(
            loop_,
            (slf.getattr(intern!(py, "_call_connection_lost"))?, exc),
        )
    }

    /// `_fatal_error(exc, message)`: an OSError is only logged in debug mode.
    fn fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let is_os = exc.is_instance_of::<PyOSError>();
        let (loop_, protocol) = {
            let me = slf.borrow();
            // asyncio's first use of `self._loop` (None once the connection is lost).
            let first = if is_os {
                "get_debug"
            } else {
                "call_exception_handler"
            };
            (me.loop_or_err(py, first), clone_opt(py, &me.protocol))
        };
        let loop_ = loop_?;
        let loop_ = loop_.bind(py);
        if is_os {
            if loop_debug(loop_)? {
                cached(py)?
                    .fatal_error_debug
                    .call1(py, (slf, message, exc))?;
            }
        } else {
            let ctx = PyDict::new(py);
            ctx.set_item("message", message)?;
            ctx.set_item("exception", exc)?;
            ctx.set_item("transport", slf)?;
            ctx.set_item("protocol", protocol)?;
            loop_.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        }
        Self::close_(slf, exc.clone())
    }

    fn fatal_pyerr(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_exit(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        Self::fatal_error(slf, &exc, message)
    }

    /// `_maybe_pause_protocol()`.
    fn maybe_pause(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let size = slf.borrow().buffer.size as i64;
        if !WriteFlow::pause_needed(slf, size, |me| &mut me.flow)? {
            return Ok(());
        }
        let protocol = clone_opt(py, &slf.borrow().protocol);
        let res = match &protocol {
            Some(p) => p.call_method0(py, intern!(py, "pause_writing")).map(drop),
            None => Err(none_attr("pause_writing")),
        };
        Self::report_flow_error(slf, res, "protocol.pause_writing() failed", protocol)
    }

    /// `_maybe_resume_protocol()`.
    fn maybe_resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let size = slf.borrow().buffer.size as i64;
        if !WriteFlow::resume_needed(slf, size, |me| &mut me.flow)? {
            return Ok(());
        }
        let protocol = clone_opt(py, &slf.borrow().protocol);
        let res = match &protocol {
            Some(p) => p.call_method0(py, intern!(py, "resume_writing")).map(drop),
            None => Err(none_attr("resume_writing")),
        };
        Self::report_flow_error(slf, res, "protocol.resume_writing() failed", protocol)
    }

    fn report_flow_error(
        slf: &Bound<'_, Self>,
        res: PyResult<()>,
        message: &str,
        protocol: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        report_flow_error(slf.as_any(), res, message, protocol, || {
            let loop_ = slf.borrow().loop_or_err(py, "call_exception_handler")?;
            Ok(Some(loop_.into_bound(py)))
        })
    }

    /// write() once the data is known to be non-empty bytes-like data.
    fn write_data(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (queued, conn_lost, closing, fd) = {
            let me = slf.borrow();
            (!me.buffer.is_empty(), me.conn_lost, me.closing, me.fileno)
        };
        if conn_lost > 0 || closing {
            if conn_lost >= cached(py)?.log_threshold {
                cached(py)?.conn_lost_warning.call0(py)?;
            }
            slf.borrow_mut().conn_lost += 1;
            return Ok(());
        }
        // A buffer export; a non-contiguous one fails as os.write() / bytearray += would.
        let wd = match data.cast::<PyBytes>() {
            Ok(b) => Ok(WriteData::Bytes(b.clone())),
            Err(_) => PyUntypedBuffer::get(data).and_then(|v| {
                if v.is_c_contiguous() {
                    Ok(WriteData::View(v))
                } else {
                    Err(PyBufferError::new_err(
                        "memoryview: underlying buffer is not C-contiguous",
                    ))
                }
            }),
        };
        let wd = match wd {
            Ok(d) => d,
            Err(e) if !queued => {
                slf.borrow_mut().conn_lost += 1;
                return Self::fatal_pyerr(slf, e, "Fatal write error on pipe transport");
            }
            Err(e) => return Err(e),
        };
        let bytes = wd.as_slice();
        let mut off = 0;
        if !queued {
            // Attempt to write it right away first.
            match pipe::write(fd, bytes) {
                Ok(Some(n)) => off = n.min(bytes.len()),
                Ok(None) => {}
                Err(e) => {
                    slf.borrow_mut().conn_lost += 1;
                    return Self::fatal_pyerr(
                        slf,
                        to_pyerr(e),
                        "Fatal write error on pipe transport",
                    );
                }
            }
            if off == bytes.len() {
                return Ok(());
            }
            let loop_ = slf.borrow().loop_or_err(py, "_add_writer")?;
            add_writer(
                loop_.bind(py),
                fd,
                slf.getattr(intern!(py, "_write_ready"))?,
            )?;
        }
        {
            let mut me = slf.borrow_mut();
            match &wd {
                WriteData::Bytes(b) => me.buffer.push_bytes(b, off),
                WriteData::View(_) => me.buffer.push_copy(&bytes[off..]),
            }
        }
        drop(wd);
        Self::maybe_pause(slf)
    }
}

#[pymethods]
impl WritePipeTransport {
    /// asyncio's `_UnixWritePipeTransport(loop, pipe, protocol, waiter, extra)`.
    #[staticmethod]
    #[pyo3(signature = (r#loop, pipe, protocol, waiter=None, extra=None))]
    fn _create<'py>(
        r#loop: &Bound<'py, PyAny>,
        pipe: &Bound<'py, PyAny>,
        protocol: &Bound<'py, PyAny>,
        waiter: Option<&Bound<'py, PyAny>>,
        extra: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, WritePipeTransport>> {
        let py = r#loop.py();
        let c = cached(py)?;
        let (extra, fd, kind) = open_pipe(
            pipe,
            extra,
            "Pipe transport is only for pipes, sockets and character devices",
        )?;
        let tr = Bound::new(
            py,
            WritePipeTransport {
                loop_: Some(r#loop.clone().unbind()),
                pipe: Some(pipe.clone().unbind()),
                fileno: fd,
                protocol: Some(protocol.clone().unbind()),
                extra: Some(extra.unbind()),
                buffer: PipeBuffer::default(),
                conn_lost: 0,
                closing: false,
                flow: WriteFlow::new(py)?,
            },
        )?;
        let call_soon = r#loop.getattr(intern!(py, "call_soon"))?;
        call_soon.call1((protocol.getattr(intern!(py, "connection_made"))?, &tr))?;
        // The reader trick: the write end of a pipe (or socket) turns readable when the
        // reader closes its end. Only start reading when connection_made() has been called.
        if kind.socket || (kind.fifo && c.reader_trick_on_fifo) {
            call_soon.call1((
                r#loop.getattr(intern!(py, "_add_reader"))?,
                fd,
                tr.getattr(intern!(py, "_read_ready"))?,
            ))?;
        }
        if let Some(w) = waiter.filter(|w| !w.is_none()) {
            call_soon.call1((&c.set_result_unless_cancelled, w, py.None()))?;
        }
        Ok(tr)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let (pipe_open, closing, fd, loop_, size) = {
            let me = slf.borrow();
            (
                me.pipe.is_some(),
                me.closing,
                me.fileno,
                clone_opt(py, &me.loop_),
                me.buffer.size,
            )
        };
        let name = slf.get_type().name()?.to_string();
        pipe_repr(
            py,
            &name,
            pipe_open,
            closing,
            fd,
            loop_.as_ref(),
            Some(size),
        )
    }

    fn get_write_buffer_size(&self) -> usize {
        self.buffer.size
    }

    /// The reader closed its end (the write end turned readable).
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, had_buffer) = {
            let me = slf.borrow();
            (me.loop_or_err(py, "get_debug")?, !me.buffer.is_empty())
        };
        if loop_debug(loop_.bind(py))? {
            cached(py)?.closed_by_peer.call1(py, (slf,))?;
        }
        let exc = if had_buffer {
            pyo3::exceptions::PyBrokenPipeError::new_err(())
                .into_value(py)
                .into_any()
        } else {
            py.None()
        };
        Self::close_(slf, exc.into_bound(py))
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let empty = if let Ok(b) = data.cast::<PyBytes>() {
            b.as_bytes().is_empty()
        } else if let Ok(b) = data.cast::<PyByteArray>() {
            b.len() == 0
        } else if data.is_instance_of::<PyMemoryView>() {
            !data.is_truthy()?
        } else {
            return Err(PyAssertionError::new_err(data.repr()?.unbind()));
        };
        if empty {
            return Ok(());
        }
        Self::write_data(slf, data)
    }

    /// `WriteTransport.writelines`: `b''.join(list_of_data)`, then write().
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let data = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write(slf, &data)
    }

    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let res = {
            let mut me = slf.borrow_mut();
            if me.buffer.is_empty() {
                return Err(PyAssertionError::new_err("Data should not be empty"));
            }
            let fd = me.fileno;
            me.buffer.flush(py, fd)
        };
        match res {
            Err(e) => {
                let (loop_, fd, old) = {
                    let mut me = slf.borrow_mut();
                    me.conn_lost += 1;
                    (
                        me.loop_or_err(py, "_remove_writer"),
                        me.fileno,
                        std::mem::take(&mut me.buffer),
                    )
                };
                drop(old);
                // Remove the writer here: _fatal_error() doesn't, the buffer being empty.
                remove_writer(loop_?.bind(py), fd)?;
                let exc = to_pyerr(e).into_value(py).into_bound(py).into_any();
                Self::fatal_error(slf, &exc, "Fatal write error on pipe transport")
            }
            Ok(_) => {
                let (empty, loop_, fd) = {
                    let me = slf.borrow();
                    (
                        me.buffer.is_empty(),
                        me.loop_or_err(py, "_remove_writer"),
                        me.fileno,
                    )
                };
                if !empty {
                    return Ok(());
                }
                let loop_ = loop_?;
                remove_writer(loop_.bind(py), fd)?;
                Self::maybe_resume(slf)?; // May append to the buffer.
                if slf.borrow().closing {
                    remove_reader(loop_.bind(py), fd)?;
                    Self::_call_connection_lost(slf, py.None().bind(py))?;
                }
                Ok(())
            }
        }
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (empty, loop_, fd) = {
            let mut me = slf.borrow_mut();
            if me.closing {
                return Ok(());
            }
            if me.pipe.is_none() {
                return Err(PyAssertionError::new_err(()));
            }
            me.closing = true;
            (
                me.buffer.is_empty(),
                me.loop_or_err(py, "_remove_reader"),
                me.fileno,
            )
        };
        if empty {
            let loop_ = loop_?;
            let loop_ = loop_.bind(py);
            remove_reader(loop_, fd)?;
            call_soon(
                loop_,
                (
                    slf.getattr(intern!(py, "_call_connection_lost"))?,
                    py.None(),
                ),
            )?;
        }
        Ok(())
    }

    fn set_protocol(&mut self, protocol: Py<PyAny>) {
        self.protocol = Some(protocol);
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        clone_opt(py, &self.protocol).unwrap_or_else(|| py.None())
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let go = {
            let me = slf.borrow();
            me.pipe.is_some() && !me.closing
        };
        if go {
            // write_eof is all what we needed to close the write pipe.
            Self::write_eof(slf)?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_(slf, slf.py().None().into_bound(slf.py()))
    }

    #[pyo3(signature = (exc=None))]
    fn _close(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let exc = exc.cloned().unwrap_or_else(|| py.None().into_bound(py));
        Self::close_(slf, exc)
    }

    // --- _FlowControlMixin: see write_flow_methods! below ----------------------------------

    // --- attributes asyncio's code and tests read --------------------------------------

    /// What `isinstance()` falls back to: `oxloop._transports.WritePipeTransport`, a subclass
    /// of `transports._FlowControlMixin` and `asyncio.WriteTransport`, as asyncio's write pipe
    /// transport is. `type(tr)` stays this native class.
    #[getter]
    fn __class__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(cached(py)?.write_mask.clone_ref(py))
    }
    /// A copy of the unsent data.
    #[getter]
    fn _buffer<'py>(&self, py: Python<'py>) -> Bound<'py, PyByteArray> {
        PyByteArray::new(py, &self.buffer.snapshot(py))
    }
    #[getter]
    fn _conn_lost(&self) -> usize {
        self.conn_lost
    }
    #[getter]
    fn _closing(&self) -> bool {
        self.closing
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for x in [&self.loop_, &self.pipe, &self.protocol]
            .into_iter()
            .flatten()
        {
            visit.call(x)?;
        }
        self.flow.traverse(&visit)?;
        if let Some(e) = &self.extra {
            visit.call(e)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        // The pipe is visited but kept (its own clear breaks a cycle through it): the
        // finalizer still warns about and closes an unclosed one.
        self.loop_ = None;
        self.protocol = None;
        self.extra = None;
    }
}

write_flow_methods!(WritePipeTransport);

pipe_shared_methods!(WritePipeTransport);

impl crate::common::Finalize for WritePipeTransport {
    fn finalize(slf: &Bound<'_, Self>) -> PyResult<()> {
        crate::common::finalize_unclosed(
            slf,
            |me| me.pipe.is_some(),
            |me| me.pipe.take(),
            || Ok(()),
        )
    }
}

impl Drop for WritePipeTransport {
    fn drop(&mut self) {
        let Some(pipe_obj) = self.pipe.take() else {
            return;
        };
        Python::attach(|py| {
            // Do not disturb an exception being propagated while this object is freed.
            let pending = PyErr::take(py);
            let repr = pipe_repr(
                py,
                "WritePipeTransport",
                true,
                self.closing,
                self.fileno,
                self.loop_.as_ref(),
                Some(self.buffer.size),
            )
            .unwrap_or_else(|_| format!("<WritePipeTransport fd={}>", self.fileno));
            self.buffer.clear();
            warn_unclosed(py, repr, pipe_obj);
            if let Some(p) = pending {
                p.restore(py);
            }
        });
    }
}

// asyncio's write pipe transport is a `Transport` (through `_FlowControlMixin`), hence a
// `ReadTransport`: these raise NotImplementedError, from asyncio's own base classes.
crate::common::base_class_methods!(
    WritePipeTransport;
    pause_reading(),
    resume_reading(),
    is_reading(),
);

impl ReadPipeTransport {
    /// `_read_ready` with a `max_size` the native read does not take: asyncio's own
    /// `os.read(self._fileno, self.max_size)` (an error other than OSError propagates).
    fn read_ready_slow(slf: &Bound<'_, Self>, fd: RawFd, max_size: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let data = match py
            .import(intern!(py, "os"))?
            .call_method1(intern!(py, "read"), (fd, max_size))
        {
            Ok(d) => d,
            Err(e) if crate::common::would_block(py, &e) => return Ok(()),
            Err(e) if e.is_instance_of::<PyOSError>(py) => {
                let exc = e.into_value(py).into_bound(py).into_any();
                return Self::fatal_error(slf, &exc, "Fatal read error on pipe transport");
            }
            Err(e) => return Err(e),
        };
        if !data.is_truthy()? {
            let loop_ = clone_opt(py, &slf.borrow().loop_).ok_or_else(|| none_attr("get_debug"))?;
            return Self::on_eof(slf, loop_.bind(py));
        }
        let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
        let protocol = protocol.ok_or_else(|| none_attr("data_received"))?;
        protocol.call_method1(py, intern!(py, "data_received"), (data,))?;
        Ok(())
    }
}
