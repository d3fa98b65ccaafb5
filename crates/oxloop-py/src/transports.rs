//! `SocketTransport`: asyncio's stream socket transport (`selector_events.py`:
//! `_SelectorSocketTransport` + `_SelectorTransport`, `transports.py`: `_FlowControlMixin`)
//! with its state and hot paths in Rust, for TCP and Unix stream sockets.
//!
//! - read: the fd's reader callback is the transport's native `_read_ready`: recv into the
//!   loop's reusable buffer -> one `bytes` -> `protocol.data_received(data)`; for a
//!   `BufferedProtocol`, `get_buffer(-1)` -> recv_into it -> `buffer_updated(n)`.
//! - write: sent at once when nothing is queued; the remainder is copied into a queue of
//!   chunks flushed with one `sendmsg` (scatter/gather) per writable event.
//! - everything else (close/abort, flow control, EOF, errors, server attach, sendfile support)
//!   follows asyncio's code for the running Python version; the slow paths (logging, warnings,
//!   limits validation) call `oxloop/_transports.py`.
//!
//! Borrow discipline (as in `base_events.rs`): no `PyRef`/`PyRefMut` of the transport is held
//! while Python code runs, so protocols may call back into the transport from any callback.
//! System calls retry EINTR without running Python signal handlers in between (the sockets are
//! non-blocking, so EINTR is practically impossible; pending handlers run at the next bytecode).

use std::collections::VecDeque;
use std::os::fd::RawFd;

use oxloop_core::net;
use oxloop_core::selector::Interest;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{
    PyAssertionError, PyConnectionError, PyKeyboardInterrupt, PyOSError, PyRuntimeError,
    PySystemExit, PyTypeError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyMemoryView, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::base_events::{loop_debug, LoopCore, Poller};
use crate::common::{common, deref_common, Common};
use crate::errors::to_pyerr;
use crate::flow_control::{report_flow_error, write_flow_methods, WriteFlow};
use crate::selector_events::{add_watcher, remove_watcher};
use crate::sock::io_fd;

/// Small writes queued behind each other share a chunk up to this size.
const COALESCE: usize = 64 * 1024;
/// At most this many chunks per sendmsg().
/// The loop's receive buffer is kept when at most this large.
const MAX_KEPT_RECV_BUFFER: usize = 1 << 20;

/// The `_SelectorTransport` attributes the socket and the datagram transport share, as one
/// more `#[pymethods]` block of `$t` (fields `loop_`, `sock`, `fd`, `protocol`,
/// `protocol_connected`, `closing`, `conn_lost`, `paused`).
macro_rules! selector_transport_attrs {
    ($t:ty) => {
        #[pyo3::pymethods]
        impl $t {
            #[getter]
            fn _loop(&self, py: pyo3::Python<'_>) -> Option<pyo3::Py<pyo3::PyAny>> {
                self.loop_.as_ref().map(|x| x.clone_ref(py))
            }
            #[getter]
            fn _sock(&self, py: pyo3::Python<'_>) -> Option<pyo3::Py<pyo3::PyAny>> {
                self.sock.as_ref().map(|x| x.clone_ref(py))
            }
            #[getter]
            fn _sock_fd(&self) -> std::os::fd::RawFd {
                self.fd
            }
            #[getter]
            fn _protocol(&self, py: pyo3::Python<'_>) -> Option<pyo3::Py<pyo3::PyAny>> {
                self.protocol.as_ref().map(|x| x.clone_ref(py))
            }
            #[getter]
            fn _protocol_connected(&self) -> bool {
                self.protocol_connected
            }
            #[setter(_protocol_connected)]
            fn set_protocol_connected_attr(&mut self, v: bool) {
                self.protocol_connected = v;
            }
            #[getter]
            fn _closing(&self) -> bool {
                self.closing
            }
            #[getter]
            fn _conn_lost(&self) -> usize {
                self.conn_lost
            }
            #[getter]
            fn _paused(&self) -> bool {
                self.paused
            }
        }
    };
}
pub(crate) use selector_transport_attrs;

struct Cached {
    common: &'static Common,
    buffered_protocol: Py<PyAny>,
    transport_socket: Py<PyAny>,
    set_nodelay: Py<PyAny>,
    sendfile_try_native: Py<PyAny>,
    conn_lost_warning: Py<PyAny>,
    detach_dead: Py<PyAny>,
    mask_class: Py<PyAny>,
    test_selector_event: Py<PyAny>,
    /// The default high/low water marks as Python ints, shared by every transport.
    default_high: Py<PyAny>,
    default_low: Py<PyAny>,
    attach_takes_transport: bool,
    /// 3.12+: the transport has its own writelines() (scatter/gather, no join).
    own_writelines: bool,
}

deref_common!(Cached);

static CACHED: PyOnceLock<Cached> = PyOnceLock::new();

fn cached(py: Python<'_>) -> PyResult<&'static Cached> {
    CACHED.get_or_try_init(py, || {
        let m = py.import("oxloop._transports")?;
        let get = |name: &str| m.getattr(name).map(Bound::unbind);
        Ok(Cached {
            common: common(py)?,
            buffered_protocol: get("BufferedProtocol")?,
            transport_socket: get("TransportSocket")?,
            set_nodelay: get("set_nodelay")?,
            sendfile_try_native: get("SENDFILE_TRY_NATIVE")?,
            conn_lost_warning: get("conn_lost_warning")?,
            detach_dead: get("detach_dead")?,
            mask_class: get("SocketTransport")?,
            test_selector_event: get("test_selector_event")?,
            default_high: 65536i64.into_pyobject(py)?.into_any().unbind(),
            default_low: 16384i64.into_pyobject(py)?.into_any().unbind(),
            attach_takes_transport: m.getattr("ATTACH_TAKES_TRANSPORT")?.is_truthy()?,
            own_writelines: crate::compat::get(py)?.stream_own_writelines,
        })
    })
}

/// The unsent data: chunks, the first one sent up to `head`.
#[derive(Default)]
struct WriteQueue {
    chunks: VecDeque<Vec<u8>>,
    head: usize,
    size: usize,
}

impl WriteQueue {
    fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.size += data.len();
        if let Some(last) = self.chunks.back_mut() {
            if last.len() + data.len() <= COALESCE {
                last.extend_from_slice(data);
                return;
            }
        }
        let mut chunk = Vec::with_capacity(data.len().max(4096));
        chunk.extend_from_slice(data);
        self.chunks.push_back(chunk);
    }

    /// Drops `n` sent bytes from the front.
    fn consume(&mut self, mut n: usize) {
        n = n.min(self.size);
        self.size -= n;
        while n > 0 {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let rest = first.len() - self.head;
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
            self.chunks.clear();
            self.head = 0;
        }
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.head = 0;
        self.size = 0;
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size);
        for (i, c) in self.chunks.iter().enumerate() {
            out.extend_from_slice(if i == 0 { &c[self.head..] } else { c });
        }
        out
    }

    /// One sendmsg() of the queued chunks (at most `net::MAX_IOV`). Ok(None): would block.
    fn send(&self, fd: RawFd) -> std::io::Result<Option<usize>> {
        let mut bufs: [&[u8]; net::MAX_IOV] = [&[]; net::MAX_IOV];
        let mut n = 0;
        for (i, c) in self.chunks.iter().take(net::MAX_IOV).enumerate() {
            bufs[n] = if i == 0 { &c[self.head..] } else { c };
            n += 1;
        }
        net::sendmsg(fd, &bufs[..n])
    }
}

pub(crate) fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// A bytes-like argument of write(): the bytes object itself, or a buffer export.
pub(crate) enum Data<'py> {
    Bytes(Bound<'py, PyBytes>),
    View(PyUntypedBuffer),
}

impl Data<'_> {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Data::Bytes(b) => b.as_bytes(),
            Data::View(v) if v.len_bytes() == 0 || v.buf_ptr().is_null() => &[],
            // SAFETY: the export is C-contiguous (checked when made), non-empty with a non-null
            // pointer (checked above) and held by `self`, so the memory is valid and cannot be
            // resized while the slice lives.
            Data::View(v) => unsafe {
                std::slice::from_raw_parts(v.buf_ptr() as *const u8, v.len_bytes())
            },
        }
    }
}

fn data_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Data<'py>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Data::Bytes(b.clone()));
    }
    let view = PyUntypedBuffer::get(obj)?;
    if view.is_c_contiguous() {
        return Ok(Data::View(view));
    }
    drop(view);
    // A non-contiguous memoryview: its bytes, in order.
    let b = obj.call_method0(intern!(obj.py(), "tobytes"))?;
    Ok(Data::Bytes(b.cast_into::<PyBytes>()?))
}

#[pyclass(module = "oxloop._oxloop", dict, weakref)]
pub struct SocketTransport {
    loop_: Option<Py<PyAny>>,
    sock: Option<Py<PyAny>>,
    fd: RawFd,
    protocol: Option<Py<PyAny>>,
    protocol_connected: bool,
    /// The protocol is a `BufferedProtocol` (decided in set_protocol, as asyncio does).
    buffered: bool,
    server: Option<Py<PyAny>>,
    /// asyncio's `_extra` dict. asyncio builds it at creation; here it is made only when a
    /// caller passed one or asks for the dict itself (`_extra`, a key that is not an exact
    /// str): until then `get_extra_info` answers from the fields below.
    extra: Option<Py<PyDict>>,
    /// The socket behind extra['socket'] (kept after connection_lost, as the dict keeps it).
    extra_sock: Option<Py<PyAny>>,
    /// extra['socket']: the `TransportSocket`, made at the first request.
    extra_tsock: Option<Py<PyAny>>,
    extra_sockname: Option<Py<PyAny>>,
    extra_peername: Option<Py<PyAny>>,
    /// The dict starts with 'peername' (given by the accept path), as asyncio's does then.
    extra_peername_first: bool,
    buffer: WriteQueue,
    conn_lost: usize,
    closing: bool,
    paused: bool,
    eof: bool,
    empty_waiter: Option<Py<PyAny>>,
    /// Write flow control: limits and `_protocol_paused`.
    flow: WriteFlow,
    max_size: crate::common::MaxSize,
}

/// The end of asyncio's `_SelectorTransport._force_close(exc)` once the loop is known: stop
/// watching `fd` for writing (if data was buffered) and for reading (unless it was already
/// closing), then `loop.call_soon(transport._call_connection_lost, exc)`.
pub(crate) fn force_close_tail(
    transport: &Bound<'_, PyAny>,
    loop_: &Bound<'_, PyAny>,
    fd: RawFd,
    had_buffer: bool,
    was_closing: bool,
    exc: Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = transport.py();
    if had_buffer {
        remove_writer(loop_, fd)?;
    }
    if !was_closing {
        remove_reader(loop_, fd)?;
    }
    let cb = transport.getattr(intern!(py, "_call_connection_lost"))?;
    loop_.call_method1(intern!(py, "call_soon"), (cb, exc))?;
    Ok(())
}

fn loop_of<'py>(slf: &Bound<'py, SocketTransport>) -> Option<Bound<'py, PyAny>> {
    let py = slf.py();
    slf.borrow().loop_.as_ref().map(|l| l.bind(py).clone())
}

/// When `callback` is `tr._read_ready` and `handle` a native Handle, the handle keeps the
/// transport instead of the bound method (see `Handle::transport_read`).
fn mark_read_ready(
    tr: &Bound<'_, SocketTransport>,
    handle: &Py<PyAny>,
    callback: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = tr.py();
    let Ok(h) = handle.bind(py).cast::<crate::handles::Handle>() else {
        return Ok(());
    };
    if callback.getattr(intern!(py, "__self__"))?.is(tr)
        && callback
            .getattr(intern!(py, "__name__"))?
            .eq(intern!(py, "_read_ready"))?
    {
        crate::handles::Handle::set_transport_read(h, tr.clone().into_any().unbind());
    }
    Ok(())
}

pub(crate) fn add_reader(
    loop_: &Bound<'_, PyAny>,
    fd: RawFd,
    cb: Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = loop_.py();
    if let Ok(core) = loop_.cast::<LoopCore>() {
        let fdobj = fd.into_pyobject(py)?;
        let handle = add_watcher(
            core,
            fdobj.as_any(),
            cb.clone().unbind(),
            PyTuple::empty(py).unbind(),
            true,
        )?;
        if let Ok(tr) = cb.getattr(intern!(py, "__self__")) {
            if let Ok(tr) = tr.cast::<SocketTransport>() {
                mark_read_ready(tr, &handle, &cb)?;
            }
        }
    } else {
        loop_.call_method1(intern!(py, "_add_reader"), (fd, cb))?;
    }
    Ok(())
}

pub(crate) fn add_writer(
    loop_: &Bound<'_, PyAny>,
    fd: RawFd,
    cb: Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = loop_.py();
    if let Ok(core) = loop_.cast::<LoopCore>() {
        let fdobj = fd.into_pyobject(py)?;
        add_watcher(
            core,
            fdobj.as_any(),
            cb.unbind(),
            PyTuple::empty(py).unbind(),
            false,
        )?;
    } else {
        loop_.call_method1(intern!(py, "_add_writer"), (fd, cb))?;
    }
    Ok(())
}

pub(crate) fn remove_reader(loop_: &Bound<'_, PyAny>, fd: RawFd) -> PyResult<()> {
    let py = loop_.py();
    if let Ok(core) = loop_.cast::<LoopCore>() {
        remove_watcher(core, fd.into_pyobject(py)?.as_any(), true)?;
    } else {
        loop_.call_method1(intern!(py, "_remove_reader"), (fd,))?;
    }
    Ok(())
}

pub(crate) fn remove_writer(loop_: &Bound<'_, PyAny>, fd: RawFd) -> PyResult<()> {
    let py = loop_.py();
    if let Ok(core) = loop_.cast::<LoopCore>() {
        remove_watcher(core, fd.into_pyobject(py)?.as_any(), false)?;
    } else {
        loop_.call_method1(intern!(py, "_remove_writer"), (fd,))?;
    }
    Ok(())
}

fn shutdown_wr(fd: RawFd) -> PyResult<()> {
    // SAFETY: shutdown(2) on an fd we were given; an invalid fd is reported as an error.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } < 0 {
        return Err(to_pyerr(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether the loop's selector watches `fd` for `interest` (asyncio's `_test_selector_event`).
pub(crate) fn polling(loop_: &Bound<'_, PyAny>, fd: RawFd, interest: Interest) -> PyResult<bool> {
    let py = loop_.py();
    if let Ok(core) = loop_.cast::<LoopCore>() {
        if let Ok(me) = core.try_borrow() {
            if let Some(Poller::Native(_)) = &me.poller {
                return Ok(me
                    .io
                    .get(&fd)
                    .is_some_and(|e| e.interest.bits() & interest.bits() != 0));
            }
        }
    }
    let ev = if interest == Interest::READABLE { 1 } else { 2 };
    cached(py)?
        .test_selector_event
        .call1(py, (loop_, fd, ev))?
        .is_truthy(py)
}

pub(crate) fn loop_is_closed(loop_: &Bound<'_, PyAny>) -> PyResult<bool> {
    if let Ok(core) = loop_.cast::<LoopCore>() {
        if let Ok(me) = core.try_borrow() {
            return Ok(me.closed);
        }
    }
    loop_
        .call_method0(intern!(loop_.py(), "is_closed"))?
        .is_truthy()
}

impl SocketTransport {
    /// The reader callback (asyncio's `_read_ready`).
    pub(crate) fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (conn_lost, buffered) = {
            let me = slf.borrow();
            (me.conn_lost, me.buffered)
        };
        if conn_lost > 0 {
            return Ok(());
        }
        if buffered {
            Self::read_get_buffer(slf)
        } else {
            Self::read_data_received(slf)
        }
    }

    /// extra['socket']: the `TransportSocket` of the transport's socket, made once.
    fn extra_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let sock = {
            let me = slf.borrow();
            if let Some(t) = &me.extra_tsock {
                return Ok(t.clone_ref(py));
            }
            match &me.extra_sock {
                Some(s) => s.clone_ref(py),
                None => return Ok(py.None()),
            }
        };
        let tsock = cached(py)?.transport_socket.call1(py, (sock,))?;
        let mut me = slf.borrow_mut();
        Ok(me.extra_tsock.get_or_insert(tsock).clone_ref(py))
    }

    /// asyncio's `_extra` dict, made from the fields when it does not exist yet (with the
    /// keys in asyncio's order).
    fn extra_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        if let Some(d) = &slf.borrow().extra {
            return Ok(d.bind(py).clone());
        }
        let tsock = Self::extra_socket(slf)?;
        let (sockname, peername, peer_first) = {
            let me = slf.borrow();
            let o =
                |x: &Option<Py<PyAny>>| x.as_ref().map_or_else(|| py.None(), |v| v.clone_ref(py));
            (
                o(&me.extra_sockname),
                o(&me.extra_peername),
                me.extra_peername_first,
            )
        };
        let d = PyDict::new(py);
        if peer_first {
            d.set_item("peername", &peername)?;
        }
        d.set_item("socket", tsock)?;
        d.set_item("sockname", sockname)?;
        if !peer_first {
            d.set_item("peername", peername)?;
        }
        let mut me = slf.borrow_mut();
        if let Some(d) = &me.extra {
            return Ok(d.bind(py).clone());
        }
        me.extra = Some(d.clone().unbind());
        me.extra_sock = None;
        me.extra_tsock = None;
        me.extra_sockname = None;
        me.extra_peername = None;
        Ok(d)
    }

    fn is_reading_(&self) -> bool {
        !self.closing && !self.paused
    }

    fn repr_with(
        py: Python<'_>,
        type_name: &str,
        sock_none: bool,
        closing: bool,
        fd: RawFd,
        loop_: Option<&Bound<'_, PyAny>>,
        bufsize: usize,
    ) -> PyResult<String> {
        let mut info = vec![type_name.to_string()];
        if sock_none {
            info.push("closed".into());
        } else if closing {
            info.push("closing".into());
        }
        info.push(format!("fd={fd}"));
        if let Some(l) = loop_ {
            if !loop_is_closed(l)? {
                let r = polling(l, fd, Interest::READABLE)?;
                info.push(if r { "read=polling" } else { "read=idle" }.into());
                let w = polling(l, fd, Interest::WRITABLE)?;
                let state = if w { "polling" } else { "idle" };
                info.push(format!("write=<{state}, bufsize={bufsize}>"));
            }
        }
        let _ = py;
        Ok(format!("<{}>", info.join(" ")))
    }

    /// asyncio's `_fatal_error(exc, message)`.
    fn fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let is_os = exc.is_instance_of::<PyOSError>();
        let Some(loop_) = loop_of(slf) else {
            // asyncio: `self._loop` is None once the connection is lost.
            return Err(PyAttributeErrorNone::err(if is_os {
                "get_debug"
            } else {
                "call_exception_handler"
            }));
        };
        if is_os {
            if loop_debug(&loop_)? {
                cached(py)?
                    .fatal_error_debug
                    .call1(py, (slf, message, exc))?;
            }
        } else {
            let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
            let ctx = PyDict::new(py);
            ctx.set_item("message", message)?;
            ctx.set_item("exception", exc)?;
            ctx.set_item("transport", slf)?;
            ctx.set_item("protocol", protocol)?;
            loop_.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        }
        Self::force_close(slf, exc.clone())
    }

    fn fatal_pyerr(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_exit(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        Self::fatal_error(slf, &exc, message)
    }

    /// asyncio's `_force_close(exc)`.
    fn force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd, had_buffer, was_closing) = {
            let mut me = slf.borrow_mut();
            if me.conn_lost > 0 {
                return Ok(());
            }
            let had_buffer = !me.buffer.is_empty();
            me.buffer.clear();
            let was_closing = me.closing;
            me.closing = true;
            me.conn_lost += 1;
            (
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.fd,
                had_buffer,
                was_closing,
            )
        };
        let Some(loop_) = loop_ else {
            return Ok(());
        };
        force_close_tail(
            slf.as_any(),
            loop_.bind(py),
            fd,
            had_buffer,
            was_closing,
            exc,
        )
    }

    /// asyncio's `close()`.
    fn close_(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let mut me = slf.borrow_mut();
            if me.closing {
                return Ok(());
            }
            me.closing = true;
            (me.loop_.as_ref().map(|l| l.clone_ref(py)), me.fd)
        };
        let Some(loop_) = loop_ else {
            return Ok(());
        };
        let loop_ = loop_.bind(py);
        remove_reader(loop_, fd)?;
        let empty = {
            let mut me = slf.borrow_mut();
            let empty = me.buffer.is_empty();
            if empty {
                me.conn_lost += 1;
            }
            empty
        };
        if empty {
            remove_writer(loop_, fd)?;
            let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
            loop_.call_method1(intern!(py, "call_soon"), (cb, py.None()))?;
        }
        Ok(())
    }

    /// `_maybe_pause_protocol()`.
    fn maybe_pause(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let size = slf.borrow().buffer.size as i64;
        if !WriteFlow::pause_needed(slf, size, |me| &mut me.flow)? {
            return Ok(());
        }
        let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
        let res = match &protocol {
            Some(p) => p.call_method0(py, intern!(py, "pause_writing")).map(drop),
            None => Err(PyAttributeErrorNone::err("pause_writing")),
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
        let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
        let res = match &protocol {
            Some(p) => p.call_method0(py, intern!(py, "resume_writing")).map(drop),
            None => Err(PyAttributeErrorNone::err("resume_writing")),
        };
        Self::report_flow_error(slf, res, "protocol.resume_writing() failed", protocol)
    }

    fn report_flow_error(
        slf: &Bound<'_, Self>,
        res: PyResult<()>,
        message: &str,
        protocol: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        report_flow_error(slf.as_any(), res, message, protocol, || Ok(loop_of(slf)))
    }

    fn debug_log(slf: &Bound<'_, Self>, msg: &str) -> PyResult<()> {
        let py = slf.py();
        if let Some(loop_) = loop_of(slf) {
            if loop_debug(&loop_)? {
                cached(py)?.debug.call1(py, (msg, slf))?;
            }
        }
        Ok(())
    }

    /// `_read_ready__data_received`.
    fn read_data_received(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd, max_size, slow, protocol) = {
            let me = slf.borrow();
            let (Some(l), Some(p)) = (&me.loop_, &me.protocol) else {
                return Ok(());
            };
            let slow = me.max_size.slow(py);
            (
                l.clone_ref(py),
                io_fd(py, me.sock.as_ref()),
                me.max_size.native,
                slow,
                p.clone_ref(py),
            )
        };
        if let Some(n) = slow {
            return Self::read_data_received_slow(slf, n, protocol);
        }
        let loop_ = loop_.bind(py);
        let core = loop_.cast::<LoopCore>().ok();
        let mut buf = match core.and_then(|c| c.try_borrow_mut().ok()) {
            Some(mut c) => std::mem::take(&mut c.recv_buf),
            None => Vec::new(),
        };
        if buf.len() < max_size {
            buf.resize(max_size, 0);
        }
        // SAFETY: `buf` is an owned Vec of at least `max_size` bytes, alive for the call.
        let res = net::recv(fd, &mut buf[..max_size]);
        let data = match &res {
            Ok(Some(n)) => Some(PyBytes::new(py, &buf[..*n])),
            _ => None,
        };
        if buf.len() <= MAX_KEPT_RECV_BUFFER {
            if let Some(mut c) = core.and_then(|c| c.try_borrow_mut().ok()) {
                if c.recv_buf.capacity() < buf.capacity() {
                    c.recv_buf = buf;
                }
            }
        }
        match res {
            Ok(None) => Ok(()),
            Err(e) => Self::fatal_pyerr(slf, to_pyerr(e), "Fatal read error on socket transport"),
            Ok(Some(0)) => Self::on_eof(slf),
            Ok(Some(_)) => {
                let data = data.expect("made above");
                match protocol.call_method1(py, intern!(py, "data_received"), (data,)) {
                    Ok(_) => Ok(()),
                    Err(e) => Self::fatal_pyerr(
                        slf,
                        e,
                        "Fatal error: protocol.data_received() call failed.",
                    ),
                }
            }
        }
    }

    /// `_read_ready__data_received` with a `max_size` the native read does not take: asyncio's
    /// own `self._sock.recv(self.max_size)`.
    fn read_data_received_slow(
        slf: &Bound<'_, Self>,
        max_size: Py<PyAny>,
        protocol: Py<PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let Some(sock) = slf.borrow().sock.as_ref().map(|s| s.clone_ref(py)) else {
            return Err(PyAttributeErrorNone::err("recv"));
        };
        let data = match sock.call_method1(py, intern!(py, "recv"), (max_size,)) {
            Ok(d) => d,
            Err(e) if crate::common::would_block(py, &e) => return Ok(()),
            Err(e) => return Self::fatal_pyerr(slf, e, "Fatal read error on socket transport"),
        };
        if !data.bind(py).is_truthy()? {
            return Self::on_eof(slf);
        }
        match protocol.call_method1(py, intern!(py, "data_received"), (data,)) {
            Ok(_) => Ok(()),
            Err(e) => {
                Self::fatal_pyerr(slf, e, "Fatal error: protocol.data_received() call failed.")
            }
        }
    }

    /// `_read_ready__get_buffer`.
    fn read_get_buffer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (fd, protocol, sock) = {
            let me = slf.borrow();
            let (Some(p), Some(s)) = (&me.protocol, &me.sock) else {
                return Ok(());
            };
            (
                io_fd(py, me.sock.as_ref()),
                p.clone_ref(py),
                s.clone_ref(py),
            )
        };
        let protocol = protocol.bind(py);
        let got = protocol
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .and_then(|buf| {
                if buf.len()? == 0 {
                    return Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ));
                }
                Ok(buf)
            });
        let buf = match got {
            Ok(b) => b,
            Err(e) => {
                return Self::fatal_pyerr(slf, e, "Fatal error: protocol.get_buffer() call failed.")
            }
        };
        let res: PyResult<Option<usize>> = match PyUntypedBuffer::get(&buf) {
            Ok(view) if !view.readonly() && view.is_c_contiguous() => {
                // SAFETY: a writable, C-contiguous export of `len_bytes()` bytes, held (so
                // neither freed nor resized) until dropped below, after the call.
                let r = unsafe { net::recv_raw(fd, view.buf_ptr().cast(), view.len_bytes()) };
                // Released before buffer_updated() runs, as recv_into releases it.
                drop(view);
                r.map_err(to_pyerr)
            }
            // Anything else: the socket's own recv_into, for its exact result or error.
            _ => match sock.call_method1(py, intern!(py, "recv_into"), (&buf,)) {
                Ok(n) => n.extract(py).map(Some),
                Err(e)
                    if e.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py)
                        || e.is_instance_of::<pyo3::exceptions::PyInterruptedError>(py) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        };
        drop(buf);
        match res {
            Ok(None) => Ok(()),
            Err(e) => Self::fatal_pyerr(slf, e, "Fatal read error on socket transport"),
            Ok(Some(0)) => Self::on_eof(slf),
            Ok(Some(n)) => match protocol.call_method1(intern!(py, "buffer_updated"), (n,)) {
                Ok(_) => Ok(()),
                Err(e) => Self::fatal_pyerr(
                    slf,
                    e,
                    "Fatal error: protocol.buffer_updated() call failed.",
                ),
            },
        }
    }

    /// `_read_ready__on_eof`.
    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        Self::debug_log(slf, "%r received EOF")?;
        let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
        let res = match &protocol {
            Some(p) => p.call_method0(py, intern!(py, "eof_received")),
            None => Err(PyAttributeErrorNone::err("eof_received")),
        };
        let keep_open = match res {
            Ok(k) => k,
            Err(e) => {
                return Self::fatal_pyerr(
                    slf,
                    e,
                    "Fatal error: protocol.eof_received() call failed.",
                )
            }
        };
        if keep_open.is_truthy(py)? {
            let (loop_, fd) = {
                let me = slf.borrow();
                (me.loop_.as_ref().map(|l| l.clone_ref(py)), me.fd)
            };
            if let Some(l) = loop_ {
                remove_reader(l.bind(py), fd)?;
            }
            Ok(())
        } else {
            Self::close_(slf)
        }
    }

    /// The writer callback (asyncio's `_write_ready` / `_write_sendmsg`).
    fn write_ready_(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let res = {
            let me = slf.borrow();
            if me.buffer.is_empty() {
                return Err(PyAssertionError::new_err("Data should not be empty"));
            }
            if me.conn_lost > 0 {
                return Ok(());
            }
            me.buffer.send(io_fd(py, me.sock.as_ref()))
        };
        match res {
            Ok(None) => Ok(()),
            Err(e) => {
                let (loop_, fd) = {
                    let me = slf.borrow();
                    (me.loop_.as_ref().map(|l| l.clone_ref(py)), me.fd)
                };
                if let Some(l) = &loop_ {
                    remove_writer(l.bind(py), fd)?;
                }
                slf.borrow_mut().buffer.clear();
                let exc = to_pyerr(e).into_value(py).into_bound(py).into_any();
                Self::fatal_error(slf, &exc, "Fatal write error on socket transport")?;
                let waiter = slf.borrow().empty_waiter.as_ref().map(|w| w.clone_ref(py));
                if let Some(w) = waiter {
                    w.call_method1(py, intern!(py, "set_exception"), (exc,))?;
                }
                Ok(())
            }
            Ok(Some(n)) => {
                slf.borrow_mut().buffer.consume(n);
                Self::maybe_resume(slf)?; // May append to the buffer.
                Self::after_flush(slf)
            }
        }
    }

    /// The end of a successful flush: when the queue is empty, stop watching and finish a
    /// pending close or write_eof.
    fn after_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (empty, loop_, fd, waiter, closing, eof) = {
            let me = slf.borrow();
            (
                me.buffer.is_empty(),
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.fd,
                me.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                me.closing,
                me.eof,
            )
        };
        if !empty {
            return Ok(());
        }
        if let Some(l) = &loop_ {
            remove_writer(l.bind(py), fd)?;
        }
        if let Some(w) = waiter {
            w.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
        }
        if closing {
            Self::call_connection_lost_(slf, py.None().into_bound(py))?;
        } else if eof {
            shutdown_wr(io_fd(py, slf.borrow().sock.as_ref()))?;
        }
        Ok(())
    }

    fn call_connection_lost_(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, connected) = {
            let me = slf.borrow();
            (
                me.protocol.as_ref().map(|p| p.clone_ref(py)),
                me.protocol_connected,
            )
        };
        let res = if connected {
            match &protocol {
                Some(p) => p
                    .call_method1(py, intern!(py, "connection_lost"), (&exc,))
                    .map(drop),
                None => Err(PyAttributeErrorNone::err("connection_lost")),
            }
        } else {
            Ok(())
        };
        // finally:
        let (sock, protocol, loop_, server) = {
            let mut me = slf.borrow_mut();
            (
                me.sock.take(),
                me.protocol.take(),
                me.loop_.take(),
                me.server.take(),
            )
        };
        let mut fin: PyResult<()> = Ok(());
        if let Some(s) = &sock {
            fin = s.call_method0(py, intern!(py, "close")).map(drop);
        }
        drop((sock, protocol, loop_));
        if fin.is_ok() {
            if let Some(server) = &server {
                fin = detach(slf, server.bind(py));
            }
        }
        drop(server);
        res?;
        fin?;
        let waiter = slf.borrow().empty_waiter.as_ref().map(|w| w.clone_ref(py));
        if let Some(w) = waiter {
            let e = PyConnectionError::new_err("Connection is closed by peer");
            w.call_method1(py, intern!(py, "set_exception"), (e.into_value(py),))?;
        }
        Ok(())
    }

    /// Queues `data` (after an immediate send when nothing is queued).
    fn write_slice(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let (queued, conn_lost, fd, sock_fd) = {
            let me = slf.borrow();
            let sock_fd = io_fd(py, me.sock.as_ref());
            (!me.buffer.is_empty(), me.conn_lost, me.fd, sock_fd)
        };
        if conn_lost > 0 {
            let threshold = cached(py)?.log_threshold;
            if conn_lost >= threshold {
                cached(py)?.conn_lost_warning.call0(py)?;
            }
            slf.borrow_mut().conn_lost += 1;
            return Ok(());
        }
        let mut rest = data;
        if !queued {
            // Optimization: try to send now.
            match net::send(sock_fd, data) {
                Ok(Some(n)) => {
                    rest = &data[n.min(data.len())..];
                    if rest.is_empty() {
                        return Ok(());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    return Self::fatal_pyerr(
                        slf,
                        to_pyerr(e),
                        "Fatal write error on socket transport",
                    )
                }
            }
            // Not all was written; register the write handler.
            if let Some(l) = loop_of(slf) {
                add_writer(&l, fd, slf.getattr(intern!(py, "_write_ready"))?)?;
            }
        }
        slf.borrow_mut().buffer.push(rest);
        Self::maybe_pause(slf)
    }
}

/// The sockname and peername of a new connection, with their values replaced by equal ones
/// the loop already holds: every connection accepted by one listener has the same sockname,
/// and most come from one host. Only exact tuples of exact str/int are shared (immutable,
/// compared without running Python code).
fn share_addresses<'py>(
    core: &Bound<'py, LoopCore>,
    sockname: Bound<'py, PyAny>,
    peername: Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = core.py();
    let plain = |t: &Bound<'py, PyAny>| -> bool {
        t.cast::<PyTuple>().is_ok_and(|t| {
            t.is_exact_instance_of::<PyTuple>()
                && t.iter().all(|x| {
                    x.is_exact_instance_of::<PyString>() || x.is_exact_instance_of::<PyInt>()
                })
        })
    };
    let mut me = core.borrow_mut();
    let sockname = if plain(&sockname) {
        match &me.last_sockname {
            Some(last) if last.bind(py).eq(&sockname)? => last.bind(py).clone(),
            _ => {
                me.last_sockname = Some(sockname.clone().unbind());
                sockname
            }
        }
    } else {
        sockname
    };
    let peername = if plain(&peername) {
        let t = peername.cast::<PyTuple>()?;
        let host = t.get_item(0)?;
        match &me.last_peer_host {
            Some(last) if last.bind(py).is(&host) => peername,
            Some(last) if host.is_exact_instance_of::<PyString>() && last.bind(py).eq(&host)? => {
                let mut items: Vec<Bound<'py, PyAny>> = t.iter().collect();
                items[0] = last.bind(py).clone();
                PyTuple::new(py, items)?.into_any()
            }
            _ => {
                if host.is_exact_instance_of::<PyString>() {
                    me.last_peer_host = Some(host.unbind());
                }
                peername
            }
        }
    } else {
        peername
    };
    Ok((sockname, peername))
}

/// An AttributeError for a protocol that is already gone (asyncio would fail on `None.x`).
struct PyAttributeErrorNone;
impl PyAttributeErrorNone {
    fn err(name: &str) -> PyErr {
        pyo3::exceptions::PyAttributeError::new_err(format!(
            "'NoneType' object has no attribute '{name}'"
        ))
    }
}

fn attach(slf: &Bound<'_, SocketTransport>, server: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    if cached(py)?.attach_takes_transport {
        server.call_method1(intern!(py, "_attach"), (slf,))?;
    } else {
        server.call_method0(intern!(py, "_attach"))?;
    }
    Ok(())
}

fn detach(slf: &Bound<'_, SocketTransport>, server: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    if cached(py)?.attach_takes_transport {
        server.call_method1(intern!(py, "_detach"), (slf,))?;
    } else {
        server.call_method0(intern!(py, "_detach"))?;
    }
    Ok(())
}

#[pymethods]
impl SocketTransport {
    /// asyncio's `_SelectorSocketTransport(loop, sock, protocol, waiter, extra, server)`.
    #[staticmethod]
    ///
    /// `peername`: the address accept() returned (oxloop's accept path), instead of an
    /// `extra={'peername': addr}` dict.
    #[pyo3(signature = (r#loop, sock, protocol, waiter=None, extra=None, server=None, *, peername=None))]
    #[allow(clippy::too_many_arguments)]
    fn _create<'py>(
        r#loop: &Bound<'py, PyAny>,
        sock: &Bound<'py, PyAny>,
        protocol: &Bound<'py, PyAny>,
        waiter: Option<&Bound<'py, PyAny>>,
        extra: Option<&Bound<'py, PyAny>>,
        server: Option<&Bound<'py, PyAny>>,
        peername: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, SocketTransport>> {
        let py = r#loop.py();
        let c = cached(py)?;
        let core = r#loop.cast::<LoopCore>().ok();
        let extra = match extra {
            Some(e) if !e.is_none() => Some(e.cast::<PyDict>()?.clone()),
            _ => None,
        };
        let addr = |name: &str| -> PyResult<Bound<'py, PyAny>> {
            match sock.call_method0(name) {
                Ok(n) => Ok(n),
                Err(e) if e.is_instance_of::<PyOSError>(py) => Ok(py.None().into_bound(py)),
                Err(e) => Err(e),
            }
        };
        let (mut extra_sockname, mut extra_peername, mut extra_sock) = (None, None, None);
        let peername_first = peername.is_some();
        match &extra {
            Some(extra) => {
                extra.set_item("socket", c.transport_socket.call1(py, (sock,))?)?;
                extra.set_item("sockname", addr("getsockname")?)?;
                if !extra.contains("peername")? {
                    extra.set_item("peername", addr("getpeername")?)?;
                }
            }
            None => {
                let sockname = addr("getsockname")?;
                let peer = match peername {
                    Some(p) => p.clone(),
                    None => addr("getpeername")?,
                };
                // Connections to one listener share their sockname (and mostly the peer's
                // host): equal values share one object instead of one copy per connection.
                let (sockname, peer) = match core {
                    Some(core) => share_addresses(core, sockname, peer)?,
                    None => (sockname, peer),
                };
                extra_sockname = Some(sockname.unbind());
                extra_peername = Some(peer.unbind());
                extra_sock = Some(sock.clone().unbind());
            }
        }
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        let server = server.filter(|s| !s.is_none());
        let tr = Bound::new(
            py,
            SocketTransport {
                loop_: Some(r#loop.clone().unbind()),
                sock: Some(sock.clone().unbind()),
                fd,
                protocol: None,
                protocol_connected: false,
                buffered: false,
                server: server.map(|s| s.clone().unbind()),
                extra: extra.map(Bound::unbind),
                extra_sock,
                extra_tsock: None,
                extra_sockname,
                extra_peername,
                extra_peername_first: peername_first,
                buffer: WriteQueue::default(),
                conn_lost: 0,
                closing: false,
                paused: false,
                eof: false,
                empty_waiter: None,
                flow: WriteFlow::with_objects(
                    c.default_high.clone_ref(py),
                    c.default_low.clone_ref(py),
                ),
                max_size: crate::common::MaxSize::new(),
            },
        )?;
        Self::set_protocol(&tr, protocol)?;
        if let Some(s) = server {
            attach(&tr, s)?;
        }
        // One int object for the fd, shared by loop._transports and the fd watcher.
        let fd_obj = fd.into_pyobject(py)?;
        r#loop
            .getattr(intern!(py, "_transports"))?
            .set_item(&fd_obj, &tr)?;
        // Disable the Nagle algorithm, as asyncio does.
        c.set_nodelay.call1(py, (sock,))?;
        let call_soon = r#loop.getattr(intern!(py, "call_soon"))?;
        call_soon.call1((protocol.getattr(intern!(py, "connection_made"))?, &tr))?;
        // Only start reading when connection_made() has been called.
        call_soon.call1((
            tr.getattr(intern!(py, "_add_reader"))?,
            fd_obj,
            tr.getattr(intern!(py, "_read_ready"))?,
        ))?;
        if let Some(w) = waiter.filter(|w| !w.is_none()) {
            call_soon.call1((&c.set_result_unless_cancelled, w, py.None()))?;
        }
        Ok(tr)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let (sock_none, closing, fd, loop_, bufsize) = {
            let me = slf.borrow();
            (
                me.sock.is_none(),
                me.closing,
                me.fd,
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.buffer.size,
            )
        };
        let name = slf.get_type().name()?.to_string();
        let loop_ = loop_.map(|l| l.into_bound(py));
        Self::repr_with(py, &name, sock_none, closing, fd, loop_.as_ref(), bufsize)
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if slf.borrow().extra.is_none() && name.is_exact_instance_of::<PyString>() {
            let key = name.cast::<PyString>()?.to_cow()?;
            let found = match &*key {
                "socket" => Some(Self::extra_socket(slf)?),
                "sockname" => slf
                    .borrow()
                    .extra_sockname
                    .as_ref()
                    .map(|v| v.clone_ref(py)),
                "peername" => slf
                    .borrow()
                    .extra_peername
                    .as_ref()
                    .map(|v| v.clone_ref(py)),
                _ => None,
            };
            return Ok(found.or(default).unwrap_or_else(|| py.None()));
        }
        // The lookup may run Python code (a key's __eq__): no borrow is held meanwhile.
        let extra = Self::extra_dict(slf)?;
        if let Some(v) = extra.get_item(name)? {
            return Ok(v.unbind());
        }
        Ok(default.unwrap_or_else(|| py.None()))
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, slf.py().None().into_bound(slf.py()))
    }

    fn set_protocol(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let buffered = protocol.is_instance(cached(py)?.buffered_protocol.bind(py))?;
        let old = {
            let mut me = slf.borrow_mut();
            me.buffered = buffered;
            me.protocol_connected = true;
            me.protocol.replace(protocol.clone().unbind())
        };
        drop(old);
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        match &self.protocol {
            Some(p) => p.clone_ref(py),
            None => py.None(),
        }
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    fn is_reading(&self) -> bool {
        self.is_reading_()
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let mut me = slf.borrow_mut();
            if !me.is_reading_() {
                return Ok(());
            }
            me.paused = true;
            (me.loop_.as_ref().map(|l| l.clone_ref(py)), me.fd)
        };
        if let Some(l) = loop_ {
            remove_reader(l.bind(py), fd)?;
        }
        Self::debug_log(slf, "%r pauses reading")
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let mut me = slf.borrow_mut();
            if me.closing || !me.paused {
                return Ok(());
            }
            me.paused = false;
            (me.loop_.as_ref().map(|l| l.clone_ref(py)), me.fd)
        };
        if let Some(l) = loop_ {
            add_reader(l.bind(py), fd, slf.getattr(intern!(py, "_read_ready"))?)?;
        }
        Self::debug_log(slf, "%r resumes reading")
    }

    /// asyncio's `_add_reader(fd, callback, *args)`: only while reading.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        let py = slf.py();
        let loop_ = {
            let me = slf.borrow();
            if !me.is_reading_() {
                return Ok(());
            }
            me.loop_.as_ref().map(|l| l.clone_ref(py))
        };
        let Some(loop_) = loop_ else {
            return Ok(());
        };
        let loop_ = loop_.bind(py);
        if args.is_empty() {
            if let (Ok(core), Ok(_)) = (loop_.cast::<LoopCore>(), fd.extract::<RawFd>()) {
                let handle = add_watcher(
                    core,
                    fd,
                    callback.clone().unbind(),
                    PyTuple::empty(py).unbind(),
                    true,
                )?;
                mark_read_ready(slf, &handle, callback)?;
                return Ok(());
            }
        }
        let mut a = vec![fd.clone(), callback.clone()];
        a.extend(args.iter());
        loop_.call_method1(intern!(py, "_add_reader"), PyTuple::new(py, a)?)?;
        Ok(())
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_(slf)
    }

    #[pyo3(signature = (exc, message="Fatal error on transport"))]
    fn _fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        Self::fatal_error(slf, exc, message)
    }

    fn _force_close(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::force_close(slf, exc.clone())
    }

    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::call_connection_lost_(slf, exc.clone())
    }

    fn get_write_buffer_size(&self) -> usize {
        self.buffer.size
    }

    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::read_ready(slf)
    }

    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::write_ready_(slf)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        {
            let me = slf.borrow();
            if me.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if me.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
        }
        if data.is_instance_of::<PyMemoryView>() && !data.is_truthy()? {
            return Ok(());
        }
        if let Ok(mv) = data.cast::<PyMemoryView>() {
            let contiguous = PyUntypedBuffer::get(mv.as_any())?.is_c_contiguous();
            let (idle, conn_lost) = {
                let me = slf.borrow();
                (me.buffer.is_empty(), me.conn_lost)
            };
            if !contiguous && idle && conn_lost == 0 {
                // asyncio's immediate sock.send() refuses it: a fatal write error.
                let err = pyo3::exceptions::PyBufferError::new_err(
                    "memoryview: underlying buffer is not C-contiguous",
                );
                return Self::fatal_pyerr(slf, err, "Fatal write error on socket transport");
            }
        }
        let d = data_of(data)?;
        let bytes = d.as_slice();
        if bytes.is_empty() {
            return Ok(());
        }
        Self::write_slice(slf, bytes)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if !cached(py)?.own_writelines {
            // 3.9-3.11: WriteTransport.writelines: b''.join(list_of_data) then write().
            let data = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
            return Self::write(slf, &data);
        }
        {
            let me = slf.borrow();
            if me.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call writelines() after write_eof()",
                ));
            }
            if me.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to writelines; sendfile is in progress",
                ));
            }
        }
        if !list_of_data.is_truthy()? {
            return Ok(());
        }
        // All views first (memoryview(data) for each), as asyncio's list comprehension.
        let mut items = Vec::new();
        for item in list_of_data.try_iter()? {
            let item = item?;
            let view = PyMemoryView::from(&item)?;
            items.push(data_of(view.as_any())?);
        }
        let conn_lost = slf.borrow().conn_lost;
        if conn_lost > 0 {
            if conn_lost >= cached(py)?.log_threshold {
                cached(py)?.conn_lost_warning.call0(py)?;
            }
            slf.borrow_mut().conn_lost += 1;
            return Ok(());
        }
        let was_empty = {
            let mut me = slf.borrow_mut();
            let was_empty = me.buffer.is_empty();
            for d in &items {
                me.buffer.push(d.as_slice());
            }
            was_empty
        };
        drop(items);
        if slf.borrow().buffer.is_empty() {
            return Ok(());
        }
        Self::write_ready_(slf)?;
        // If the entire buffer couldn't be written, register a write handler.
        let (pending, loop_, fd) = {
            let me = slf.borrow();
            (
                !me.buffer.is_empty(),
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.fd,
            )
        };
        if pending {
            if let Some(l) = loop_ {
                if was_empty {
                    add_writer(l.bind(py), fd, slf.getattr(intern!(py, "_write_ready"))?)?;
                }
            }
            Self::maybe_pause(slf)?;
        }
        Ok(())
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (empty, fd) = {
            let mut me = slf.borrow_mut();
            if me.closing || me.eof {
                return Ok(());
            }
            me.eof = true;
            (me.buffer.is_empty(), io_fd(slf.py(), me.sock.as_ref()))
        };
        if empty {
            shutdown_wr(fd)?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (loop_, empty) = {
            let me = slf.borrow();
            if me.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err("Empty waiter is already set"));
            }
            (
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.buffer.is_empty(),
            )
        };
        let Some(loop_) = loop_ else {
            return Err(pyo3::exceptions::PyAttributeError::new_err(
                "'NoneType' object has no attribute 'create_future'",
            ));
        };
        let fut = loop_.call_method0(py, intern!(py, "create_future"))?;
        slf.borrow_mut().empty_waiter = Some(fut.clone_ref(py));
        if empty {
            fut.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(fut)
    }

    fn _reset_empty_waiter(slf: &Bound<'_, Self>) {
        let old = slf.borrow_mut().empty_waiter.take();
        drop(old);
    }

    // --- attributes asyncio's code and tests read --------------------------------------

    /// What `isinstance()` falls back to: a subclass of asyncio's `transports._FlowControlMixin`
    /// (hence of `asyncio.Transport`), so `isinstance(tr, asyncio.Transport)` holds as for
    /// asyncio's transport. `type(tr)` stays this native class.
    #[getter]
    fn __class__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(cached(py)?.mask_class.clone_ref(py))
    }

    #[getter]
    fn _sendfile_compatible(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(cached(py)?.sendfile_try_native.clone_ref(py))
    }
    #[getter]
    fn _start_tls_compatible(&self) -> bool {
        true
    }
    #[getter]
    fn _server(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.server.as_ref().map(|x| x.clone_ref(py))
    }
    #[getter]
    fn _extra<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        Self::extra_dict(slf)
    }
    #[getter]
    fn _eof(&self) -> bool {
        self.eof
    }
    #[getter]
    fn _empty_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.empty_waiter.as_ref().map(|x| x.clone_ref(py))
    }
    /// A copy of the unsent data.
    #[getter]
    fn _buffer<'py>(&self, py: Python<'py>) -> Bound<'py, PyByteArray> {
        PyByteArray::new(py, &self.buffer.snapshot())
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
        for x in [
            &self.loop_,
            &self.sock,
            &self.protocol,
            &self.server,
            &self.empty_waiter,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(x)?;
        }
        self.flow.traverse(&visit)?;
        self.max_size.traverse(&visit)?;
        if let Some(e) = &self.extra {
            visit.call(e)?;
        }
        for x in [
            &self.extra_sock,
            &self.extra_tsock,
            &self.extra_sockname,
            &self.extra_peername,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(x)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        // The socket is kept: the finalizer still warns about and closes an unclosed one.
        self.max_size = crate::common::MaxSize::new();
        self.loop_ = None;
        self.protocol = None;
        self.server = None;
        self.empty_waiter = None;
        self.extra = None;
        self.extra_sock = None;
        self.extra_tsock = None;
        self.extra_sockname = None;
        self.extra_peername = None;
    }
}

write_flow_methods!(SocketTransport);

selector_transport_attrs!(SocketTransport);

impl crate::common::Finalize for SocketTransport {
    fn finalize(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let server = slf.try_borrow()?.server.as_ref().map(|s| s.clone_ref(py));
        crate::common::finalize_unclosed(
            slf,
            |me| me.sock.is_some(),
            |me| me.sock.take(),
            || match &server {
                // 3.13: the server forgets the client (its WeakSet already has).
                Some(server) => cached(py)?.detach_dead.call1(py, (server,)).map(drop),
                None => Ok(()),
            },
        )
    }
}

impl Drop for SocketTransport {
    /// asyncio's `__del__`: an unclosed transport warns (ResourceWarning) and closes its socket.
    fn drop(&mut self) {
        let Some(sock) = self.sock.take() else {
            return;
        };
        Python::attach(|py| {
            // Do not disturb an exception being propagated while this object is freed.
            let pending = PyErr::take(py);
            let loop_ = self.loop_.as_ref().map(|l| l.bind(py).clone());
            let repr = SocketTransport::repr_with(
                py,
                "SocketTransport",
                false,
                self.closing,
                self.fd,
                loop_.as_ref(),
                self.buffer.size,
            )
            .unwrap_or_else(|_| format!("<SocketTransport fd={}>", self.fd));
            let mut res = cached(py).and_then(|c| c.unclosed.call1(py, (repr,)).map(drop));
            if res.is_ok() {
                res = sock.call_method0(py, "close").map(drop);
            }
            if res.is_ok() {
                if let Some(server) = &self.server {
                    // 3.13: the server forgets the client (its WeakSet already has).
                    res = cached(py).and_then(|c| c.detach_dead.call1(py, (server,)).map(drop));
                }
            }
            if let Err(e) = res {
                e.write_unraisable(py, None);
            }
            if let Some(p) = pending {
                p.restore(py);
            }
        });
    }
}

#[pymethods]
impl SocketTransport {
    /// `_buffer_factory`: asyncio's class attribute (3.9-3.11: `bytearray`; 3.12+ has none).
    #[getter]
    fn _buffer_factory(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::common::asyncio_class_attr(
            py,
            "SOCKET_BUFFER_FACTORY",
            "SocketTransport",
            "_buffer_factory",
        )
    }
}
