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
use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyMemoryError, PyOverflowError, PyRuntimeError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyInt, PyMemoryView, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::base_events::LoopCore;
use crate::selector_events::{add_oneshot_watcher, rearm_oneshot, remove_watcher};

/// Buffers kept by a loop for receiving are at most this large; larger reads allocate.
const MAX_KEPT_RECV_BUFFER: usize = 1 << 20;

enum Io {
    /// recv(n) -> bytes
    Recv(usize),
    /// recv_into(buf) -> int. The buffer object, exported anew at each attempt: asyncio calls
    /// `sock.recv_into(buf)` each time, so between attempts a bytearray may be resized and a
    /// memoryview released (the attempt then fails as recv_into would).
    RecvInto(Py<PyAny>),
    /// send everything from `pos` on, from an export of `memoryview(data)` held by the op, as
    /// asyncio's `view = memoryview(data)` (the caller may release its own memoryview).
    SendAll(PyUntypedBuffer, usize),
}

/// One pending socket operation: the fd watcher's callback (called with no argument) and the
/// future's done callback (called with the future).
///
/// Every attempt acts on the fd the socket object holds *now*, as asyncio's callbacks call
/// `sock.recv(...)`: once the socket is closed (fd -1) the op fails with EBADF, and never
/// touches another file that took over its old fd number.
#[pyclass(module = "oxloop._oxloop")]
pub struct SockOp {
    io: Io,
    sock: Option<Py<PyAny>>,
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

/// recv(n) -> bytes, through the loop's reusable buffer (a fresh one above
/// `MAX_KEPT_RECV_BUFFER`, whose allocation failing is a MemoryError, as CPython's recv(n)).
fn recv_bytes(core: &Bound<'_, LoopCore>, fd: RawFd, n: usize) -> PyResult<Option<Py<PyAny>>> {
    let py = core.py();
    if n > MAX_KEPT_RECV_BUFFER {
        let mut big: Vec<u8> = Vec::new();
        big.try_reserve_exact(n)
            .map_err(|_| PyMemoryError::new_err(()))?;
        // SAFETY: `big` owns at least `n` bytes of (uninitialized) capacity, which recv(2)
        // only writes to, for the whole call.
        let got =
            unsafe { net::recv_raw(fd, big.as_mut_ptr(), n) }.map_err(crate::errors::to_pyerr)?;
        return Ok(got.map(|got| {
            // SAFETY: recv(2) initialized the first `got` <= `n` bytes of the capacity.
            unsafe { big.set_len(got) };
            PyBytes::new(py, &big).into_any().unbind()
        }));
    }
    let mut buf = std::mem::take(&mut core.borrow_mut().recv_buf);
    if buf.len() < n {
        // n <= MAX_KEPT_RECV_BUFFER here (larger sizes took the fallible path above).
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

/// The fd a socket object holds now: -1 once it is closed or detached, which fails as a
/// call on the closed socket would (EBADF).
pub(crate) fn live_fd(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd = current_fd(sock)?;
    if fd < 0 {
        return Err(crate::errors::to_pyerr(std::io::Error::from_raw_os_error(
            libc::EBADF,
        )));
    }
    Ok(fd)
}

/// `sock.recv_into(buf)` through the socket object, for a buffer the native path cannot
/// export (released, made read-only or non-contiguous meanwhile): its result or its error,
/// exactly as asyncio's callback gets them; would-block keeps waiting.
fn recv_into_via_python(
    sock: &Bound<'_, PyAny>,
    buf: &Bound<'_, PyAny>,
) -> PyResult<Option<Py<PyAny>>> {
    match sock.call_method1("recv_into", (buf,)) {
        Ok(n) => Ok(Some(n.unbind())),
        Err(e)
            if e.is_instance_of::<PyBlockingIOError>(sock.py())
                || e.is_instance_of::<PyInterruptedError>(sock.py()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl SockOp {
    fn attempt(&mut self, py: Python<'_>) -> Outcome {
        let Some(core) = self.loop_.as_ref().map(|l| l.bind(py).clone()) else {
            return Outcome::NotReady;
        };
        let Some(sock) = self.sock.as_ref().map(|s| s.bind(py).clone()) else {
            return Outcome::NotReady;
        };
        let fd = match live_fd(&sock) {
            Ok(fd) => fd,
            Err(e) => return Outcome::Failed(e),
        };
        let res = match &mut self.io {
            Io::Recv(n) => recv_bytes(&core, fd, *n).map(|r| r.map(Outcome::Done)),
            Io::RecvInto(obj) => {
                let obj = obj.bind(py);
                match PyUntypedBuffer::get(obj) {
                    Ok(view) if !view.readonly() && view.is_c_contiguous() => {
                        let (ptr, len) = (buffer_ptr(&view), view.len_bytes());
                        // SAFETY: a writable, C-contiguous export of `len` bytes, held by
                        // `view` for the whole call.
                        unsafe { recv_into_raw(ptr, fd, len) }.and_then(|r| match r {
                            Some(got) => Ok(Some(Outcome::Done(
                                got.into_pyobject(py)?.into_any().unbind(),
                            ))),
                            None => Ok(None),
                        })
                    }
                    _ => recv_into_via_python(&sock, obj).map(|r| r.map(Outcome::Done)),
                }
            }
            Io::SendAll(buf, pos) => {
                let len = buf.len_bytes();
                let rest = buffer_tail(buf, *pos);
                match net::send(fd, rest).map_err(crate::errors::to_pyerr) {
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
        if let Some(x) = &self.sock {
            visit.call(x)?;
        }
        if let Io::RecvInto(x) = &self.io {
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
        self.sock = None;
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
        let (fut, sock) = {
            let mut me = slf.borrow_mut();
            (me.fut.take(), me.sock.take())
        };
        drop((fut, sock));
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

/// The head of CPython's socket object (`PySocketSockObject`, Modules/socketmodule.h, the same
/// from 3.9 to 3.13): the object header, then the fd (`SOCKET_T sock_fd`, an `int` on Unix),
/// -1 once the socket is closed or detached.
#[repr(C)]
struct SocketObjectHead {
    ob_base: pyo3::ffi::PyObject,
    sock_fd: libc::c_int,
}

/// `_socket.socket` and `socket.socket`, once the layout was checked against a real socket of
/// the running interpreter (its fileno() before and after close()); None when the check failed.
struct SocketTypes {
    base: Py<PyType>,
    plain: Py<PyType>,
}

static SOCKET_TYPES: PyOnceLock<Option<SocketTypes>> = PyOnceLock::new();

fn verified_socket_types(py: Python<'_>) -> Option<&'static SocketTypes> {
    SOCKET_TYPES
        .get_or_init(py, || {
            let check = || -> PyResult<Option<SocketTypes>> {
                let base = py
                    .import("_socket")?
                    .getattr("socket")?
                    .cast_into::<PyType>()?;
                let plain = py
                    .import("socket")?
                    .getattr("socket")?
                    .cast_into::<PyType>()?;
                let s = plain.call0()?;
                let open = s.call_method0("fileno")?.extract::<RawFd>()?;
                let seen_open = head_fd(&s);
                s.call_method0("close")?;
                let ok = s.is_instance(&base)? && seen_open == open && head_fd(&s) == -1;
                Ok(ok.then(|| SocketTypes {
                    base: base.unbind(),
                    plain: plain.unbind(),
                }))
            };
            check().ok().flatten()
        })
        .as_ref()
}

/// The fd field of an object that is a `_socket.socket` (or subclass) instance.
fn head_fd(sock: &Bound<'_, PyAny>) -> RawFd {
    // SAFETY: callers pass instances of `_socket.socket` or its subclasses, whose C struct
    // starts with `SocketObjectHead` (subclasses only append fields); the read is of a plain
    // int under the GIL, which every writer of the field (close, detach) holds too.
    unsafe { (*sock.as_ptr().cast::<SocketObjectHead>()).sock_fd }
}

/// The fd a transport's socket holds now, for its recv/send calls: -1 once the socket was closed
/// or detached under it (or is gone), so that the call fails with EBADF as asyncio's
/// `self._sock.recv(...)` does, instead of reaching a file that took over the old number.
pub(crate) fn io_fd(py: Python<'_>, sock: Option<&Py<PyAny>>) -> RawFd {
    sock.and_then(|s| current_fd(s.bind(py)).ok()).unwrap_or(-1)
}

/// The fd a socket object holds now (-1 once closed or detached): its C field when the layout
/// was verified, else its fileno().
#[inline]
pub(crate) fn current_fd(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let py = sock.py();
    match verified_socket_types(py) {
        // A plain socket.socket (what the native transports hold): one pointer comparison.
        Some(t) if sock.get_type_ptr() == t.plain.as_ptr().cast() => Ok(head_fd(sock)),
        Some(t) if sock.is_instance(t.base.bind(py))? => Ok(head_fd(sock)),
        _ => sock_fd(sock),
    }
}

/// Registers `op` on the fd and as the future's done callback; returns the future.
fn start_op(
    core: &Bound<'_, LoopCore>,
    sock: &Bound<'_, PyAny>,
    fd: RawFd,
    io: Io,
    read: bool,
) -> PyResult<Py<PyAny>> {
    let py = core.py();
    let fut = core.call_method0("create_future")?;
    ensure_fd_no_transport(core, fd)?;
    let op = Bound::new(
        py,
        SockOp {
            io,
            sock: Some(sock.clone().unbind()),
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
        // socket.recv(n) converts n to a C ssize_t, with that name in its OverflowError.
        let n: isize = n.extract().map_err(|e: PyErr| {
            if e.is_instance_of::<PyOverflowError>(py) {
                PyOverflowError::new_err("Python int too large to convert to C ssize_t")
            } else {
                e
            }
        })?;
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
        start_op(slf, sock, fd, Io::Recv(n as usize), true)
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
        drop(view);
        start_op(slf, sock, fd, Io::RecvInto(buf.clone().unbind()), true)
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
        let sent = net::send(fd, buffer_tail(&view, 0))
            .map_err(crate::errors::to_pyerr)?
            .unwrap_or(0);
        if sent == len {
            return Ok(py.None());
        }
        drop(view);
        // asyncio goes on from its own `memoryview(data)`.
        let held = PyMemoryView::from(data)?;
        let view = PyUntypedBuffer::get(held.as_any())?;
        start_op(slf, sock, fd, Io::SendAll(view, sent), false)
    }
}
