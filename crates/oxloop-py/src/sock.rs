//! asyncio's low-level socket calls (`selector_events.py`: `sock_recv`, `sock_recv_into`,
//! `sock_sendall`) done natively for plain `socket.socket` objects.
//!
//! Each `_oxloop_sock_*` method tries the operation at once and returns its result, or, when the
//! socket is not ready, a Future completed later by a `SockOp` watching the fd: the same steps,
//! checks, errors and cleanup as asyncio's versions (the fd is checked against transports, the
//! watcher is removed when the future is done, cancelled included). The Python wrappers in
//! `oxloop/selector_events.py` fall back to asyncio's own code for anything else (subclasses of
//! socket, SSL sockets, buffers the native path cannot take); a native method says so by
//! returning `NotImplemented`.

use std::os::fd::RawFd;

use oxloop_core::net;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::base_events::LoopCore;
use crate::selector_events::{add_oneshot_watcher, rearm_oneshot, remove_watcher};

/// Buffers kept by a loop for receiving are at most this large; larger reads allocate.
const MAX_KEPT_RECV_BUFFER: usize = 1 << 20;

enum Io {
    /// recv(n) -> bytes
    Recv(usize),
    /// recv_into(buf) -> int
    RecvInto(PyUntypedBuffer),
    /// send everything from `pos` on
    SendAll(PyUntypedBuffer, usize),
}

/// One pending socket operation: the fd watcher's callback (called with no argument) and the
/// future's done callback (called with the future).
#[pyclass(module = "oxloop._oxloop")]
pub struct SockOp {
    io: Io,
    fut: Option<Py<PyAny>>,
    loop_: Option<Py<LoopCore>>,
    fd: RawFd,
    handle: Option<Py<PyAny>>,
}

enum Outcome {
    NotReady,
    Done(Py<PyAny>),
    Failed(PyErr),
}

/// recv(2) into `len` bytes at `ptr`: Ok(None) when the socket would block.
///
/// # Safety
/// `ptr` must point to `len` writable bytes that stay valid for the whole call.
unsafe fn recv_into_raw(ptr: *mut u8, fd: RawFd, len: usize) -> PyResult<Option<usize>> {
    // SAFETY: guaranteed by this function's contract.
    unsafe { net::recv_raw(fd, ptr, len) }.map_err(crate::errors::to_pyerr)
}

/// recv(n) -> bytes, through the loop's reusable buffer.
fn recv_bytes(core: &Bound<'_, LoopCore>, fd: RawFd, n: usize) -> PyResult<Option<Py<PyAny>>> {
    let py = core.py();
    let mut buf = std::mem::take(&mut core.borrow_mut().recv_buf);
    if buf.len() < n {
        // `n` is the caller's: a size the allocator refuses is CPython's MemoryError (its
        // recv allocates the bytes object first), not an abort.
        if buf.try_reserve_exact(n - buf.len()).is_err() {
            core.borrow_mut().recv_buf = buf;
            return Err(pyo3::exceptions::PyMemoryError::new_err(()));
        }
        buf.resize(n, 0);
    }
    let res = net::recv(fd, &mut buf[..n]).map_err(crate::errors::to_pyerr);
    let out = match res {
        Ok(Some(got)) => Ok(Some(PyBytes::new(py, &buf[..got]).into_any().unbind())),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    if buf.len() <= MAX_KEPT_RECV_BUFFER {
        core.borrow_mut().recv_buf = buf;
    }
    out
}

fn buffer_ptr(buf: &PyUntypedBuffer) -> *mut u8 {
    buf.buf_ptr().cast()
}

/// The bytes of a C-contiguous buffer export from `offset` on.
fn buffer_tail(buf: &PyUntypedBuffer, offset: usize) -> &[u8] {
    let len = buf.len_bytes();
    if offset >= len || buf.buf_ptr().is_null() {
        return &[];
    }
    // SAFETY: the export is C-contiguous (checked when it was taken) with `len` readable bytes,
    // non-null (checked above), and held by `buf`, which outlives the returned slice.
    unsafe { std::slice::from_raw_parts(buffer_ptr(buf).add(offset), len - offset) }
}

impl SockOp {
    fn attempt(&mut self, py: Python<'_>) -> Outcome {
        let Some(core) = self.loop_.as_ref().map(|l| l.bind(py).clone()) else {
            return Outcome::NotReady;
        };
        let res = match &mut self.io {
            Io::Recv(n) => recv_bytes(&core, self.fd, *n).map(|r| r.map(Outcome::Done)),
            Io::RecvInto(buf) => {
                let (ptr, len) = (buffer_ptr(buf), buf.len_bytes());
                // SAFETY: a writable, C-contiguous export of `len` bytes held by this op.
                unsafe { recv_into_raw(ptr, self.fd, len) }.map(|r| {
                    r.map(|got| Outcome::Done(got.into_pyobject(py).unwrap().into_any().unbind()))
                })
            }
            Io::SendAll(buf, pos) => {
                let len = buf.len_bytes();
                let rest = buffer_tail(buf, *pos);
                match net::send(self.fd, rest).map_err(crate::errors::to_pyerr) {
                    Ok(Some(sent)) => {
                        *pos += sent;
                        if *pos >= len {
                            Ok(Some(Outcome::Done(py.None())))
                        } else {
                            Ok(None)
                        }
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        };
        match res {
            Ok(Some(o)) => o,
            Ok(None) => Outcome::NotReady,
            Err(e) => Outcome::Failed(e),
        }
    }
}

#[pymethods]
impl SockOp {
    /// With no argument: the fd is ready, try again. With the future: it is done, stop watching.
    #[pyo3(signature = (*args))]
    fn __call__(slf: &Bound<'_, Self>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let py = slf.py();
        if !args.is_empty() {
            return SockOp::future_done(slf);
        }
        let fut = match &slf.borrow().fut {
            Some(f) => f.clone_ref(py),
            None => return Ok(()),
        };
        let fut = fut.bind(py);
        // Cancellation can be scheduled on a previous loop iteration.
        if fut.call_method0("done")?.is_truthy()? {
            return Ok(());
        }
        let outcome = slf.borrow_mut().attempt(py);
        match outcome {
            Outcome::NotReady => {
                // Still waiting: a one-shot registration was disarmed by the event.
                let (loop_, fd) = {
                    let me = slf.borrow();
                    (me.loop_.as_ref().map(|l| l.clone_ref(py)), me.fd)
                };
                match loop_ {
                    Some(l) => rearm_oneshot(l.bind(py), fd),
                    None => Ok(()),
                }
            }
            Outcome::Done(v) => {
                fut.call_method1("set_result", (v,))?;
                Ok(())
            }
            Outcome::Failed(e) => {
                fut.call_method1("set_exception", (e.into_value(py),))?;
                Ok(())
            }
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(x) = &self.fut {
            visit.call(x)?;
        }
        if let Some(x) = &self.loop_ {
            visit.call(x)?;
        }
        if let Some(x) = &self.handle {
            visit.call(x)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.fut = None;
        self.loop_ = None;
        self.handle = None;
    }
}

impl SockOp {
    /// asyncio's `_sock_read_done` / `_sock_write_done`: remove the watcher unless it was
    /// replaced (its handle cancelled) meanwhile.
    fn future_done(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, handle, fd, read) = {
            let mut me = slf.borrow_mut();
            let read = !matches!(me.io, Io::SendAll(..));
            (me.loop_.take(), me.handle.take(), me.fd, read)
        };
        // Release the buffer export now, as asyncio drops its memoryview.
        let fut = slf.borrow_mut().fut.take();
        drop(fut);
        let Some(loop_) = loop_ else {
            return Ok(());
        };
        let cancelled = match &handle {
            Some(h) => match h.bind(py).cast::<crate::handles::Handle>() {
                Ok(native) => native.borrow().cancelled,
                Err(_) => h.bind(py).call_method0("cancelled")?.is_truthy()?,
            },
            None => false,
        };
        if !cancelled {
            let fdobj = fd.into_pyobject(py)?;
            let loop_ = loop_.bind(py);
            // asyncio goes through the public remove_reader/remove_writer, which refuses an fd
            // that a transport has taken over meanwhile.
            ensure_fd_no_transport(loop_, fd)?;
            remove_watcher(loop_, fdobj.as_any(), read)?;
        }
        Ok(())
    }
}

/// asyncio's `_ensure_fd_no_transport(fd)`, reading `loop._transports` (a WeakValueDictionary)
/// through its underlying dict.
pub(crate) fn ensure_fd_no_transport(core: &Bound<'_, LoopCore>, fd: RawFd) -> PyResult<()> {
    let transports = match core.getattr("_transports") {
        Ok(t) => t,
        Err(_) => return Ok(()),
    };
    let transport = match transports
        .getattr("data")
        .ok()
        .and_then(|d| d.cast_into::<PyDict>().ok())
    {
        Some(data) => match data.get_item(fd)? {
            Some(r) => r.call0()?,
            None => return Ok(()),
        },
        None => {
            core.call_method1("_ensure_fd_no_transport", (fd,))?;
            return Ok(());
        }
    };
    if transport.is_none() || transport.call_method0("is_closing")?.is_truthy()? {
        return Ok(());
    }
    Err(PyRuntimeError::new_err(format!(
        "File descriptor {} is used by transport {}",
        fd,
        transport.repr()?
    )))
}

fn check_nonblocking(core: &Bound<'_, LoopCore>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    if core.borrow().debug {
        let timeout = sock.call_method0("gettimeout")?;
        if !timeout.eq(0)? {
            return Err(PyValueError::new_err("the socket must be non-blocking"));
        }
    }
    Ok(())
}

fn sock_fd(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    sock.call_method0("fileno")?.extract()
}

/// Registers `op` on the fd and as the future's done callback; returns the future.
fn start_op(core: &Bound<'_, LoopCore>, fd: RawFd, io: Io, read: bool) -> PyResult<Py<PyAny>> {
    let py = core.py();
    let fut = core.call_method0("create_future")?;
    ensure_fd_no_transport(core, fd)?;
    let op = Bound::new(
        py,
        SockOp {
            io,
            fut: Some(fut.clone().unbind()),
            loop_: Some(core.clone().unbind()),
            fd,
            handle: None,
        },
    )?;
    let fdobj = fd.into_pyobject(py)?;
    let handle = add_oneshot_watcher(core, fdobj.as_any(), op.clone().into_any().unbind(), read)?;
    op.borrow_mut().handle = Some(handle);
    fut.call_method1("add_done_callback", (&op,))?;
    Ok(fut.unbind())
}

#[pymethods]
impl LoopCore {
    /// `sock_recv` for a plain socket: the data, a Future, or NotImplemented (use asyncio's).
    fn _oxloop_sock_recv(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        n: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if !n.is_instance_of::<PyInt>() {
            return Ok(py.NotImplemented());
        }
        let n: isize = n.extract()?;
        check_nonblocking(slf, sock)?;
        if n < 0 {
            return Err(PyValueError::new_err("negative buffersize in recv"));
        }
        if n == 0 {
            // CPython's recv(0) returns b'' without a system call.
            return Ok(PyBytes::new(py, b"").into_any().unbind());
        }
        let fd = sock_fd(sock)?;
        if let Some(data) = recv_bytes(slf, fd, n as usize)? {
            return Ok(data);
        }
        start_op(slf, fd, Io::Recv(n as usize), true)
    }

    /// `sock_recv_into` for a plain socket: the byte count, a Future, or NotImplemented.
    fn _oxloop_sock_recv_into(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let view = match PyUntypedBuffer::get(buf) {
            Ok(v) if !v.readonly() && v.is_c_contiguous() => v,
            _ => return Ok(py.NotImplemented()),
        };
        check_nonblocking(slf, sock)?;
        if view.len_bytes() == 0 {
            // CPython's recv_into() of an empty buffer returns 0 without a system call.
            return Ok(0i32.into_pyobject(py)?.into_any().unbind());
        }
        let fd = sock_fd(sock)?;
        // SAFETY: a writable, C-contiguous export of `len_bytes()` bytes, held until the end.
        if let Some(got) = unsafe { recv_into_raw(buffer_ptr(&view), fd, view.len_bytes()) }? {
            return Ok(got.into_pyobject(py)?.into_any().unbind());
        }
        start_op(slf, fd, Io::RecvInto(view), true)
    }

    /// `sock_sendall` for a plain socket: None when all was sent at once, a Future, or
    /// NotImplemented.
    fn _oxloop_sock_sendall(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let view = match PyUntypedBuffer::get(data) {
            Ok(v) if v.is_c_contiguous() && v.item_size() == 1 => v,
            _ => return Ok(py.NotImplemented()),
        };
        check_nonblocking(slf, sock)?;
        let fd = sock_fd(sock)?;
        let len = view.len_bytes();
        let data = buffer_tail(&view, 0);
        let sent = net::send(fd, data)
            .map_err(crate::errors::to_pyerr)?
            .unwrap_or(0);
        if sent == len {
            return Ok(py.None());
        }
        start_op(slf, fd, Io::SendAll(view, sent), false)
    }
}
