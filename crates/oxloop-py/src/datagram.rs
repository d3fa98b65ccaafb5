//! `DatagramTransport`: asyncio's datagram transport (`selector_events.py`:
//! `_SelectorDatagramTransport` + `_SelectorTransport`, `transports.py`: `_FlowControlMixin`)
//! with its state and hot paths in Rust, for UDP (IPv4, IPv6) and Unix datagram sockets.
//!
//! - read: the fd's reader callback is the transport's native `_read_ready`: recvfrom into the
//!   loop's reusable buffer -> one `bytes` and the sender's address, the same Python object
//!   `socket.recvfrom` returns -> `protocol.datagram_received(data, addr)`. The address objects
//!   of the last few senders are kept (keyed by the raw socket address) and handed out again
//!   for the same sender: tuples of str and int, immutable, equal to what the stdlib builds.
//! - sendto: sent at once when nothing is queued. The address is a `socket.sendto` address: an
//!   address object this transport handed out (its raw address is known), or an IPv4/IPv6
//!   tuple with a numeric host, is converted in Rust; anything else (a host name, bytes, an
//!   unusual form) goes to the socket's own `sendto`, which resolves it or raises exactly as
//!   for asyncio. A datagram that cannot go out now is queued with its address.
//! - everything else (close/abort, flow control, errors, per-version rules) follows asyncio's
//!   code for the running Python version; the rules that changed between versions are read from
//!   asyncio's own source by `oxloop/_transports.py`.
//!
//! Borrow discipline (as in `transports.rs`): no `PyRef`/`PyRefMut` of the transport is held
//! while Python code runs, so protocols may call back into the transport from any callback.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use oxloop_core::net::{self, Peer, SockAddr};
use oxloop_core::selector::Interest;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{
    PyAttributeError, PyBlockingIOError, PyInterruptedError, PyNotImplementedError, PyOSError,
    PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyMemoryView, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::base_events::{loop_debug, LoopCore};
use crate::common::{common, deref_common, Common};
use crate::errors::to_pyerr;
use crate::flow_control::{report_flow_error, write_flow_methods, WriteFlow};
use crate::selector_events::add_watcher;
use crate::sock::io_fd;
use crate::transports::{
    add_writer, force_close_tail, is_exit, loop_is_closed, polling, remove_reader, remove_writer,
    selector_transport_attrs, Data,
};

/// The most one recvfrom() of an IPv4/IPv6 socket reads, below asyncio's `max_size` (256
/// KiB): no IP datagram exceeds 64 KiB (IPv6 jumbograms aside), so this returns the same
/// datagrams, without the mmap/munmap glibc does for every 256 KiB buffer.
const IP_DATAGRAM_READ: usize = 64 * 1024 + 1;
/// At most this many datagrams are read per readable event (see `read_ready_`).
const MAX_BATCH: u32 = 16;
/// Without recent evidence of queued datagrams, a second read is tried once per this many events.
const PROBE_EVERY: u32 = 8;
/// The loop's receive buffer is kept when at most this large.
const MAX_KEPT_RECV_BUFFER: usize = 1 << 20;
/// How many senders' address objects are kept for reuse (slots of a direct-mapped table).
const PEER_SLOTS: usize = 64;

struct Cached {
    common: &'static Common,
    transport_socket: Py<PyAny>,
    conn_lost_warning: Py<PyAny>,
    mask_class: Py<PyAny>,
    datagram_buffer: Py<PyAny>,
    bytes_type: Py<PyAny>,
    /// 3.9-3.12: `sendto(b'')` returns without sending anything.
    empty_returns: bool,
    /// 3.11+: `get_write_buffer_size()` is the `_buffer_size` counter (else the queue's sum).
    counts_size: bool,
    /// Counted per queued datagram on top of its length (3.13: 8 "header bytes").
    header_on_queue: isize,
    /// Uncounted (on top of its length) when a datagram leaves the queue.
    header_on_send: isize,
    /// 3.11+: pause_reading()/resume_reading()/is_reading() (else NotImplementedError).
    can_pause: bool,
}

deref_common!(Cached);

static CACHED: PyOnceLock<Cached> = PyOnceLock::new();

fn cached(py: Python<'_>) -> PyResult<&'static Cached> {
    CACHED.get_or_try_init(py, || {
        let m = py.import("oxloop._transports")?;
        let get = |name: &str| m.getattr(name).map(Bound::unbind);
        Ok(Cached {
            common: common(py)?,
            transport_socket: get("TransportSocket")?,
            conn_lost_warning: get("conn_lost_warning")?,
            mask_class: get("DatagramTransport")?,
            datagram_buffer: get("datagram_buffer")?,
            bytes_type: py.get_type::<PyBytes>().into_any().unbind(),
            empty_returns: m.getattr("DATAGRAM_EMPTY_RETURNS")?.is_truthy()?,
            counts_size: m.getattr("DATAGRAM_COUNTS_SIZE")?.is_truthy()?,
            header_on_queue: m.getattr("DATAGRAM_HEADER_ON_QUEUE")?.extract()?,
            header_on_send: m.getattr("DATAGRAM_HEADER_ON_SEND")?.extract()?,
            can_pause: m.getattr("DATAGRAM_CAN_PAUSE")?.is_truthy()?,
        })
    })
}

/// Where a datagram goes.
enum Target {
    /// The socket is connected: `send()`.
    Connected,
    /// A socket address known in Rust: `sendto()` natively.
    Native(SockAddr),
    /// Anything else: the socket's own `sendto(data, addr)`.
    Python,
}

/// A queued datagram: `bytes(data)`, the address as given, and where it goes.
struct Queued {
    data: Py<PyBytes>,
    addr: Py<PyAny>,
    target: Target,
}

/// The outcome of one send attempt.
enum Sent {
    Done,
    WouldBlock,
    Failed(PyErr),
}

/// The bytes of a bytes-like argument for a native send, or None when only the socket's own
/// method gives the exact result (a non-contiguous buffer, which it refuses).
fn contiguous<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Data<'py>>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Some(Data::Bytes(b.clone())));
    }
    let view = PyUntypedBuffer::get(obj)?;
    Ok(view.is_c_contiguous().then_some(Data::View(view)))
}

fn int_in(obj: &Bound<'_, PyAny>, max: u64) -> Option<u64> {
    if !obj.is_exact_instance_of::<PyInt>() {
        return None;
    }
    let v: u64 = obj.extract().ok()?;
    (v <= max).then_some(v)
}

/// The socket address `socket.sendto` would make of `addr` for a socket of `family`, when it is
/// an IPv4/IPv6 tuple of a numeric host and in-range ints (exact types only); None otherwise.
fn parse_ip_address(family: libc::c_int, addr: &Bound<'_, PyAny>) -> Option<SockAddr> {
    let t = addr.cast_exact::<PyTuple>().ok()?;
    let n = t.len();
    let want = match family {
        libc::AF_INET if n == 2 => libc::AF_INET,
        libc::AF_INET6 if (2..=4).contains(&n) => libc::AF_INET6,
        _ => return None,
    };
    let host = t.get_item(0).ok()?;
    let host = host.cast_exact::<PyString>().ok()?;
    let host = host.to_str().ok()?;
    let ip = net::parse_numeric_host(want, host)?;
    let port = int_in(&t.get_item(1).ok()?, 0xffff)? as u16;
    if want == libc::AF_INET {
        let v4 = std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
        return Some(SockAddr::v4(v4, port));
    }
    let flowinfo = if n > 2 {
        int_in(&t.get_item(2).ok()?, 0xfffff)? as u32
    } else {
        0
    };
    let scope_id = if n > 3 {
        int_in(&t.get_item(3).ok()?, u32::MAX as u64)? as u32
    } else {
        0
    };
    Some(SockAddr::v6(
        std::net::Ipv6Addr::from(ip),
        port,
        flowinfo,
        scope_id,
    ))
}

/// The Python object CPython's `socket.recvfrom` returns for the address `sa`
/// (`makesockaddr`): None, `(host, port)`, `(host, port, flowinfo, scope_id)`, or for
/// AF_UNIX a path str (file system encoding) or an abstract name as bytes.
fn peer_object<'py>(py: Python<'py>, sa: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
    Ok(match sa.peer() {
        Peer::Unnamed => py.None().into_bound(py),
        Peer::V4(ip, port) => {
            let o = ip.octets();
            let host = format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]);
            PyTuple::new(
                py,
                [
                    PyString::new(py, &host).into_any(),
                    port.into_pyobject(py)?.into_any(),
                ],
            )?
            .into_any()
        }
        Peer::V6(ip, port, flowinfo, scope_id) => {
            let host = net::format_v6(&ip);
            PyTuple::new(
                py,
                [
                    PyString::new(py, &host).into_any(),
                    port.into_pyobject(py)?.into_any(),
                    flowinfo.into_pyobject(py)?.into_any(),
                    scope_id.into_pyobject(py)?.into_any(),
                ],
            )?
            .into_any()
        }
        Peer::Unix(path) if path.first() == Some(&0) => PyBytes::new(py, path).into_any(),
        Peer::Unix(path) => {
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            // SAFETY: `path[..end]` is a live slice; the call copies it into a new str.
            let obj = unsafe {
                pyo3::ffi::PyUnicode_DecodeFSDefaultAndSize(
                    path.as_ptr().cast(),
                    end as pyo3::ffi::Py_ssize_t,
                )
            };
            // SAFETY: a new reference or NULL with an exception set, as Bound expects.
            unsafe { Bound::from_owned_ptr_or_err(py, obj)? }
        }
        Peer::Other(_) => py.None().into_bound(py),
    })
}

/// The peer table slot of `sa` (FNV-1a of its bytes).
fn peer_slot(sa: &SockAddr) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in sa.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as usize % PEER_SLOTS
}

#[pyclass(module = "oxloop._oxloop", dict, weakref)]
pub struct DatagramTransport {
    loop_: Option<Py<PyAny>>,
    sock: Option<Py<PyAny>>,
    fd: RawFd,
    family: libc::c_int,
    protocol: Option<Py<PyAny>>,
    protocol_connected: bool,
    extra: Option<Py<PyDict>>,
    /// `_address`: the remote address given at creation (create_datagram_endpoint's
    /// remote_addr), and whether it is truthy (asyncio tests `if self._address:`).
    address: Option<Py<PyAny>>,
    has_address: bool,
    /// `self._extra['peername']` is truthy: datagrams go out with send().
    connected: bool,
    buffer: VecDeque<Queued>,
    /// asyncio's `_buffer_size` (3.11+), header bytes included as the version counts them.
    buffer_size: isize,
    /// The sum of the queued datagrams' lengths (3.9-3.10's get_write_buffer_size()).
    buffer_bytes: usize,
    conn_lost: usize,
    closing: bool,
    paused: bool,
    /// Write flow control: limits and `_protocol_paused`.
    flow: WriteFlow,
    max_size: crate::common::MaxSize,
    /// The address objects of recent senders, by raw address: a direct-mapped table of
    /// `PEER_SLOTS` slots (allocated with the first datagram).
    peers: Vec<Option<(SockAddr, Py<PyAny>)>>,
    /// The slot of the last sender (an echo replies to it: checked first by sendto).
    last_peer: usize,
    /// The last readable event found more than one datagram queued.
    queued_hint: bool,
    /// Readable events since the last probe for a second datagram.
    since_probe: u32,
}

fn loop_of<'py>(slf: &Bound<'py, DatagramTransport>) -> Option<Bound<'py, PyAny>> {
    let py = slf.py();
    slf.borrow().loop_.as_ref().map(|l| l.bind(py).clone())
}

/// An AttributeError for an attribute of an object that is already gone (asyncio would fail
/// on `None.x`).
fn none_has_no(name: &str) -> PyErr {
    PyAttributeError::new_err(format!("'NoneType' object has no attribute '{name}'"))
}

impl DatagramTransport {
    fn is_reading_(&self) -> bool {
        !self.closing && !self.paused
    }

    fn write_buffer_size(&self, c: &Cached) -> isize {
        if c.counts_size {
            self.buffer_size
        } else {
            self.buffer_bytes as isize
        }
    }

    fn repr_with(
        type_name: &str,
        sock_none: bool,
        closing: bool,
        fd: RawFd,
        loop_: Option<&Bound<'_, PyAny>>,
        bufsize: isize,
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
        Ok(format!("<{}>", info.join(" ")))
    }

    /// asyncio's `_fatal_error(exc, message)`.
    fn fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let is_os = exc.is_instance_of::<PyOSError>();
        let Some(loop_) = loop_of(slf) else {
            // asyncio: `self._loop` is None once the connection is lost.
            return Err(none_has_no(if is_os {
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

    /// asyncio's `_force_close(exc)`.
    fn force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd, had_buffer, was_closing, dropped) = {
            let mut me = slf.borrow_mut();
            if me.conn_lost > 0 {
                return Ok(());
            }
            let had_buffer = !me.buffer.is_empty();
            let dropped = std::mem::take(&mut me.buffer);
            // asyncio clears the deque and leaves `_buffer_size` as it was.
            me.buffer_bytes = 0;
            let was_closing = me.closing;
            me.closing = true;
            me.conn_lost += 1;
            (
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.fd,
                had_buffer,
                was_closing,
                dropped,
            )
        };
        drop(dropped);
        let Some(loop_) = loop_ else {
            return Err(none_has_no("call_soon"));
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
            return Err(none_has_no("_remove_reader"));
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
                None => Err(none_has_no("connection_lost")),
            }
        } else {
            Ok(())
        };
        // finally:
        let (sock, protocol, loop_, peers) = {
            let mut me = slf.borrow_mut();
            (
                me.sock.take(),
                me.protocol.take(),
                me.loop_.take(),
                std::mem::take(&mut me.peers),
            )
        };
        let fin = match &sock {
            Some(s) => s.call_method0(py, intern!(py, "close")).map(drop),
            None => Err(none_has_no("close")),
        };
        drop((sock, protocol, loop_, peers));
        res?;
        fin
    }

    /// `_maybe_pause_protocol()`.
    fn maybe_pause(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let c = cached(py)?;
        let size = slf.borrow().write_buffer_size(c) as i64;
        if !WriteFlow::pause_needed(slf, size, |me| &mut me.flow)? {
            return Ok(());
        }
        let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
        let res = match &protocol {
            Some(p) => p.call_method0(py, intern!(py, "pause_writing")).map(drop),
            None => Err(none_has_no("pause_writing")),
        };
        Self::report_flow_error(slf, res, "protocol.pause_writing() failed", protocol)
    }

    /// `_maybe_resume_protocol()`.
    fn maybe_resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let c = cached(py)?;
        let size = slf.borrow().write_buffer_size(c) as i64;
        if !WriteFlow::resume_needed(slf, size, |me| &mut me.flow)? {
            return Ok(());
        }
        let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
        let res = match &protocol {
            Some(p) => p.call_method0(py, intern!(py, "resume_writing")).map(drop),
            None => Err(none_has_no("resume_writing")),
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

    /// The address object for `sa`: a recent sender's own object, or a new one (then kept).
    fn peer_for<'py>(slf: &Bound<'py, Self>, sa: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if sa.is_empty() {
            return Ok(py.None().into_bound(py));
        }
        let slot = peer_slot(sa);
        {
            let mut me = slf.borrow_mut();
            if let Some(Some((k, obj))) = me.peers.get(slot) {
                if k == sa {
                    let obj = obj.bind(py).clone();
                    me.last_peer = slot;
                    return Ok(obj);
                }
            }
        }
        let obj = peer_object(py, sa)?;
        let old = {
            let mut me = slf.borrow_mut();
            if me.peers.is_empty() {
                me.peers = (0..PEER_SLOTS).map(|_| None).collect();
            }
            me.last_peer = slot;
            me.peers[slot].replace((*sa, obj.clone().unbind()))
        };
        drop(old);
        Ok(obj)
    }

    /// Where a datagram for `addr` goes (`addr` already checked against `_address`).
    fn target_for(&self, py: Python<'_>, addr: &Bound<'_, PyAny>) -> Target {
        if self.connected {
            return Target::Connected;
        }
        let known = |e: &Option<(SockAddr, Py<PyAny>)>| match e {
            Some((sa, o)) if o.bind(py).is(addr) => Some(*sa),
            _ => None,
        };
        if let Some(sa) = self.peers.get(self.last_peer).and_then(known) {
            return Target::Native(sa);
        }
        if let Some(sa) = self.peers.iter().find_map(known) {
            return Target::Native(sa);
        }
        match parse_ip_address(self.family, addr) {
            Some(sa) => Target::Native(sa),
            None => Target::Python,
        }
    }

    /// One attempt to send `data` (the original object, for the Python fallback) to `target`.
    fn send_one(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
        target: &Target,
    ) -> PyResult<Sent> {
        let py = slf.py();
        let (fd, sock) = {
            let me = slf.borrow();
            (
                io_fd(py, me.sock.as_ref()),
                me.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        let Some(sock) = sock else {
            let name = match target {
                Target::Connected => "send",
                _ => "sendto",
            };
            return Ok(Sent::Failed(none_has_no(name)));
        };
        let native = match target {
            Target::Python => None,
            _ => contiguous(data)?,
        };
        let res: PyResult<Option<usize>> = match (native, target) {
            (Some(d), Target::Connected) => net::send(fd, d.as_slice()).map_err(to_pyerr),
            (Some(d), Target::Native(sa)) => net::sendto(fd, d.as_slice(), sa).map_err(to_pyerr),
            (_, Target::Connected) => sock
                .call_method1(py, intern!(py, "send"), (data,))
                .map(|_| Some(0)),
            _ => sock
                .call_method1(py, intern!(py, "sendto"), (data, addr))
                .map(|_| Some(0)),
        };
        Ok(match res {
            Ok(Some(_)) => Sent::Done,
            Ok(None) => Sent::WouldBlock,
            Err(e)
                if e.is_instance_of::<PyBlockingIOError>(py)
                    || e.is_instance_of::<PyInterruptedError>(py) =>
            {
                Sent::WouldBlock
            }
            Err(e) => Sent::Failed(e),
        })
    }

    /// A failed send: OSError -> `protocol.error_received(exc)`; SystemExit/KeyboardInterrupt
    /// propagate; anything else is fatal.
    fn send_failed(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if err.is_instance_of::<PyOSError>(py) {
            let protocol = slf.borrow().protocol.as_ref().map(|p| p.clone_ref(py));
            let Some(p) = protocol else {
                return Err(none_has_no("error_received"));
            };
            p.call_method1(py, intern!(py, "error_received"), (err.into_value(py),))?;
            return Ok(());
        }
        if is_exit(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        Self::fatal_error(slf, &exc, "Fatal write error on datagram transport")
    }

    /// The native `_read_ready`: asyncio's, one datagram per call, except that when reading it
    /// again at once could not be told apart from asyncio's next loop iterations, it reads on
    /// (at most `MAX_BATCH` datagrams): nothing else is ready in the loop (this callback is the
    /// last of the iteration and the protocol scheduled nothing), the loop is not stopping nor
    /// in debug mode, and the transport still reads with the same protocol. asyncio would then
    /// select again and run this same callback next; the only difference is that timers and
    /// other fds that become ready meanwhile wait for the batch (a bounded delay, as a longer
    /// callback would cause). The second read is tried only while datagrams were recently
    /// found queued (and on one event in `PROBE_EVERY`), so a lightly loaded socket does not
    /// pay a recvfrom that finds nothing.
    fn read_ready_(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut n: u32 = 0;
        loop {
            let protocol = slf.borrow().protocol.as_ref().map(|p| p.as_ptr());
            if !Self::read_one(slf)? {
                if n == 1 {
                    slf.borrow_mut().queued_hint = false;
                }
                return Ok(());
            }
            n += 1;
            if n >= MAX_BATCH {
                slf.borrow_mut().queued_hint = true;
                return Ok(());
            }
            let go_on = {
                let mut me = slf.borrow_mut();
                if n >= 2 {
                    me.queued_hint = true;
                }
                let probe = if n == 1 && !me.queued_hint {
                    me.since_probe += 1;
                    if me.since_probe >= PROBE_EVERY {
                        me.since_probe = 0;
                        true
                    } else {
                        false
                    }
                } else {
                    true
                };
                probe
                    && me.conn_lost == 0
                    && me.is_reading_()
                    && me.protocol.as_ref().map(|p| p.as_ptr()) == protocol
                    && me
                        .loop_
                        .as_ref()
                        .and_then(|l| l.bind(py).cast::<LoopCore>().ok().cloned())
                        .and_then(|core| {
                            core.try_borrow()
                                .ok()
                                .map(|c| c.ready.is_empty() && !c.stopping && !c.debug)
                        })
                        .unwrap_or(false)
            };
            if !go_on {
                return Ok(());
            }
        }
    }

    /// One asyncio `_read_ready`: Ok(true) when a datagram was delivered.
    fn read_one(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let (loop_, fd, max_size, protocol) = {
            let me = slf.borrow();
            if me.conn_lost > 0 {
                return Ok(false);
            }
            let (Some(l), Some(p)) = (&me.loop_, &me.protocol) else {
                return Ok(false);
            };
            if let Some(n) = me.max_size.slow(py) {
                let sock = me.sock.as_ref().map(|s| s.clone_ref(py));
                let p = p.clone_ref(py);
                drop(me);
                return Self::read_one_slow(slf, n, sock, p);
            }
            let ip = me.family == libc::AF_INET || me.family == libc::AF_INET6;
            let n = me.max_size.native;
            let n = if ip { n.min(IP_DATAGRAM_READ) } else { n };
            (
                l.clone_ref(py),
                io_fd(py, me.sock.as_ref()),
                n,
                p.clone_ref(py),
            )
        };
        let loop_ = loop_.bind(py);
        let core = loop_.cast::<LoopCore>().ok();
        let mut buf = match core.and_then(|c| c.try_borrow_mut().ok()) {
            Some(mut c) => std::mem::take(&mut c.recv_buf),
            None => Vec::new(),
        };
        if buf.len() < max_size {
            buf.resize(max_size, 0);
        }
        let res = net::recvfrom(fd, &mut buf[..max_size]);
        let data = match &res {
            Ok(Some((n, _))) => Some(PyBytes::new(py, &buf[..*n])),
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
            Ok(None) => Ok(false),
            Err(e) => {
                let exc = to_pyerr(e).into_value(py);
                protocol.call_method1(py, intern!(py, "error_received"), (exc,))?;
                Ok(false)
            }
            Ok(Some((_, sa))) => {
                let data = data.expect("made above");
                let addr = match Self::peer_for(slf, &sa) {
                    Ok(a) => a,
                    Err(e) if is_exit(py, &e) => return Err(e),
                    Err(e) => {
                        let exc = e.into_value(py).into_bound(py).into_any();
                        Self::fatal_error(slf, &exc, "Fatal read error on datagram transport")?;
                        return Ok(false);
                    }
                };
                protocol.call_method1(py, intern!(py, "datagram_received"), (data, addr))?;
                Ok(true)
            }
        }
    }

    /// `_read_ready` with a `max_size` the native read does not take: asyncio's own
    /// `self._sock.recvfrom(self.max_size)`, one datagram (Ok(false): no burst).
    fn read_one_slow(
        slf: &Bound<'_, Self>,
        max_size: Py<PyAny>,
        sock: Option<Py<PyAny>>,
        protocol: Py<PyAny>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let sock = sock.ok_or_else(|| none_has_no("recvfrom"))?;
        let got = sock
            .call_method1(py, intern!(py, "recvfrom"), (max_size,))
            .and_then(|r| r.extract::<(Py<PyAny>, Py<PyAny>)>(py));
        match got {
            Err(e) if crate::common::would_block(py, &e) => {}
            Err(e) if e.is_instance_of::<PyOSError>(py) => {
                protocol.call_method1(py, intern!(py, "error_received"), (e.into_value(py),))?;
            }
            Err(e) if is_exit(py, &e) => return Err(e),
            Err(e) => {
                let exc = e.into_value(py).into_bound(py).into_any();
                Self::fatal_error(slf, &exc, "Fatal read error on datagram transport")?;
            }
            Ok((data, addr)) => {
                protocol.call_method1(py, intern!(py, "datagram_received"), (data, addr))?;
            }
        }
        Ok(false)
    }

    /// asyncio's `_sendto_ready`: flush the queue while the socket takes datagrams.
    fn sendto_ready_(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let c = cached(py)?;
        loop {
            let item = {
                let mut me = slf.borrow_mut();
                let Some(item) = me.buffer.pop_front() else {
                    break;
                };
                let n = item.data.bind(py).as_bytes().len();
                me.buffer_size -= n as isize + c.header_on_send;
                me.buffer_bytes -= n;
                item
            };
            let sent = {
                let data = item.data.bind(py).clone().into_any();
                let addr = item.addr.bind(py).clone();
                Self::send_one(slf, &data, &addr, &item.target)?
            };
            match sent {
                Sent::Done => {}
                Sent::WouldBlock => {
                    let mut me = slf.borrow_mut();
                    let n = item.data.bind(py).as_bytes().len();
                    me.buffer_size += n as isize + c.header_on_send;
                    me.buffer_bytes += n;
                    me.buffer.push_front(item); // Try again later.
                    break;
                }
                Sent::Failed(e) => {
                    drop(item);
                    return Self::send_failed(slf, e);
                }
            }
        }
        Self::maybe_resume(slf)?; // May append to the buffer.
        let (empty, loop_, fd, closing) = {
            let me = slf.borrow();
            (
                me.buffer.is_empty(),
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.fd,
                me.closing,
            )
        };
        if empty {
            let Some(l) = loop_ else {
                return Err(none_has_no("_remove_writer"));
            };
            remove_writer(l.bind(py), fd)?;
            if closing {
                Self::call_connection_lost_(slf, py.None().into_bound(py))?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl DatagramTransport {
    /// asyncio's `_SelectorDatagramTransport(loop, sock, protocol, address, waiter, extra)`.
    #[staticmethod]
    #[pyo3(signature = (r#loop, sock, protocol, address=None, waiter=None, extra=None))]
    fn _create<'py>(
        r#loop: &Bound<'py, PyAny>,
        sock: &Bound<'py, PyAny>,
        protocol: &Bound<'py, PyAny>,
        address: Option<&Bound<'py, PyAny>>,
        waiter: Option<&Bound<'py, PyAny>>,
        extra: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, DatagramTransport>> {
        let py = r#loop.py();
        let c = cached(py)?;
        let extra = match extra {
            Some(e) if !e.is_none() => e.cast::<PyDict>()?.clone(),
            _ => PyDict::new(py),
        };
        extra.set_item("socket", c.transport_socket.call1(py, (sock,))?)?;
        match sock.call_method0("getsockname") {
            Ok(n) => extra.set_item("sockname", n)?,
            Err(e) if e.is_instance_of::<PyOSError>(py) => extra.set_item("sockname", py.None())?,
            Err(e) => return Err(e),
        }
        if !extra.contains("peername")? {
            match sock.call_method0("getpeername") {
                Ok(n) => extra.set_item("peername", n)?,
                Err(e) if e.is_instance_of::<PyOSError>(py) => {
                    extra.set_item("peername", py.None())?
                }
                Err(e) => return Err(e),
            }
        }
        let connected = match extra.get_item("peername")? {
            Some(p) => p.is_truthy()?,
            None => false,
        };
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        let family: libc::c_int = sock.getattr("family")?.extract()?;
        let address = address.filter(|a| !a.is_none());
        let has_address = match address {
            Some(a) => a.is_truthy()?,
            None => false,
        };
        let tr = Bound::new(
            py,
            DatagramTransport {
                loop_: Some(r#loop.clone().unbind()),
                sock: Some(sock.clone().unbind()),
                fd,
                family,
                protocol: None,
                protocol_connected: false,
                extra: Some(extra.unbind()),
                address: address.map(|a| a.clone().unbind()),
                has_address,
                connected,
                buffer: VecDeque::new(),
                buffer_size: 0,
                buffer_bytes: 0,
                conn_lost: 0,
                closing: false,
                paused: false,
                flow: WriteFlow::new(py)?,
                max_size: crate::common::MaxSize::new(),
                peers: Vec::new(),
                last_peer: 0,
                queued_hint: false,
                since_probe: 0,
            },
        )?;
        Self::set_protocol(&tr, protocol)?;
        r#loop
            .getattr(intern!(py, "_transports"))?
            .set_item(fd, &tr)?;
        let call_soon = r#loop.getattr(intern!(py, "call_soon"))?;
        call_soon.call1((protocol.getattr(intern!(py, "connection_made"))?, &tr))?;
        // Only start reading when connection_made() has been called.
        call_soon.call1((
            tr.getattr(intern!(py, "_add_reader"))?,
            fd,
            tr.getattr(intern!(py, "_read_ready"))?,
        ))?;
        if let Some(w) = waiter.filter(|w| !w.is_none()) {
            call_soon.call1((&c.set_result_unless_cancelled, w, py.None()))?;
        }
        Ok(tr)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let c = cached(py)?;
        let (sock_none, closing, fd, loop_, bufsize) = {
            let me = slf.borrow();
            (
                me.sock.is_none(),
                me.closing,
                me.fd,
                me.loop_.as_ref().map(|l| l.clone_ref(py)),
                me.write_buffer_size(c),
            )
        };
        let name = slf.get_type().name()?.to_string();
        let loop_ = loop_.map(|l| l.into_bound(py));
        Self::repr_with(&name, sock_none, closing, fd, loop_.as_ref(), bufsize)
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        // The lookup may run Python code (a key's __eq__): no borrow is held meanwhile.
        let extra = slf.borrow().extra.as_ref().map(|e| e.clone_ref(py));
        if let Some(extra) = extra {
            if let Some(v) = extra.bind(py).get_item(name)? {
                return Ok(v.unbind());
            }
        }
        Ok(default.unwrap_or_else(|| py.None()))
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, slf.py().None().into_bound(slf.py()))
    }

    fn set_protocol(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let old = {
            let mut me = slf.borrow_mut();
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

    fn is_reading(&self, py: Python<'_>) -> PyResult<bool> {
        if !cached(py)?.can_pause {
            return Err(PyNotImplementedError::new_err(()));
        }
        Ok(self.is_reading_())
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !cached(py)?.can_pause {
            return Err(PyNotImplementedError::new_err(()));
        }
        let (loop_, fd) = {
            let mut me = slf.borrow_mut();
            if !me.is_reading_() {
                return Ok(());
            }
            me.paused = true;
            (me.loop_.as_ref().map(|l| l.clone_ref(py)), me.fd)
        };
        match loop_ {
            Some(l) => remove_reader(l.bind(py), fd)?,
            None => return Err(none_has_no("_remove_reader")),
        }
        Self::debug_log(slf, "%r pauses reading")
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !cached(py)?.can_pause {
            return Err(PyNotImplementedError::new_err(()));
        }
        let fd = {
            let mut me = slf.borrow_mut();
            if me.closing || !me.paused {
                return Ok(());
            }
            me.paused = false;
            me.fd
        };
        let cb = slf.getattr(intern!(py, "_read_ready"))?;
        let fdobj = fd.into_pyobject(py)?.into_any();
        Self::_add_reader(slf, &fdobj, &cb, &PyTuple::empty(py))?;
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
            return Err(none_has_no("_add_reader"));
        };
        let loop_ = loop_.bind(py);
        if args.is_empty() {
            if let (Ok(core), Ok(_)) = (loop_.cast::<LoopCore>(), fd.extract::<RawFd>()) {
                add_watcher(
                    core,
                    fd,
                    callback.clone().unbind(),
                    PyTuple::empty(py).unbind(),
                    true,
                )?;
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

    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<isize> {
        Ok(self.write_buffer_size(cached(py)?))
    }

    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::read_ready_(slf)
    }

    fn _sendto_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::sendto_ready_(slf)
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let is_bytes = data.is_exact_instance_of::<PyBytes>();
        if !(is_bytes
            || data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        let c = cached(py)?;
        if c.empty_returns && !data.is_truthy()? {
            return Ok(());
        }
        let none = py.None().into_bound(py);
        let mut addr = addr.cloned().unwrap_or(none);
        let address = {
            let me = slf.borrow();
            if me.has_address {
                me.address.as_ref().map(|a| a.clone_ref(py))
            } else {
                None
            }
        };
        if let Some(address) = address {
            let address = address.into_bound(py);
            if !addr.is_none() && !addr.is(&address) {
                let allowed = PyTuple::new(py, [py.None().into_bound(py), address.clone()])?;
                if !allowed.contains(&addr)? {
                    return Err(PyValueError::new_err(format!(
                        "Invalid address: must be None or {}",
                        address.str()?
                    )));
                }
            }
            addr = address;
            let conn_lost = slf.borrow().conn_lost;
            if conn_lost > 0 {
                if conn_lost >= c.log_threshold {
                    c.conn_lost_warning.call0(py)?;
                }
                slf.borrow_mut().conn_lost += 1;
                return Ok(());
            }
        }
        let (idle, target) = {
            let me = slf.borrow();
            (me.buffer.is_empty(), me.target_for(py, &addr))
        };
        if idle {
            // Attempt to send it right away first.
            match Self::send_one(slf, data, &addr, &target)? {
                Sent::Done => return Ok(()),
                Sent::WouldBlock => {
                    let (loop_, fd) = {
                        let me = slf.borrow();
                        (me.loop_.as_ref().map(|l| l.clone_ref(py)), me.fd)
                    };
                    let Some(l) = loop_ else {
                        return Err(none_has_no("_add_writer"));
                    };
                    add_writer(l.bind(py), fd, slf.getattr(intern!(py, "_sendto_ready"))?)?;
                }
                Sent::Failed(e) => return Self::send_failed(slf, e),
            }
        }
        // Ensure that what we buffer is immutable.
        let (stored, len) = if is_bytes {
            let b = data.cast::<PyBytes>()?.clone();
            let n = b.as_bytes().len();
            (b, n as isize)
        } else {
            let plain = data.is_exact_instance_of::<PyByteArray>()
                || data.is_exact_instance_of::<PyMemoryView>();
            let b = match if plain { contiguous(data)? } else { None } {
                Some(d) => PyBytes::new(py, d.as_slice()),
                None => c
                    .bytes_type
                    .bind(py)
                    .call1((data,))?
                    .cast_into::<PyBytes>()?,
            };
            (b, data.len()? as isize)
        };
        {
            let mut me = slf.borrow_mut();
            me.buffer_bytes += stored.as_bytes().len();
            me.buffer_size += len + c.header_on_queue;
            me.buffer.push_back(Queued {
                data: stored.unbind(),
                addr: addr.unbind(),
                target,
            });
        }
        Self::maybe_pause(slf)
    }

    // --- attributes asyncio's code and tests read --------------------------------------

    /// What `isinstance()` falls back to: `oxloop._transports.DatagramTransport`, whose bases
    /// are those of the running asyncio's datagram transport. `type(tr)` stays this class.
    #[getter]
    fn __class__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(cached(py)?.mask_class.clone_ref(py))
    }

    #[getter]
    fn _address(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.address.as_ref().map(|x| x.clone_ref(py))
    }
    #[getter]
    fn _extra(&self, py: Python<'_>) -> Option<Py<PyDict>> {
        self.extra.as_ref().map(|x| x.clone_ref(py))
    }
    /// asyncio's `_buffer_size` counter.
    #[getter]
    fn _buffer_size(&self) -> isize {
        self.buffer_size
    }
    /// A copy of the queue: a deque of `(bytes, addr)`.
    #[getter]
    fn _buffer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let items = self
            .buffer
            .iter()
            .map(|q| (q.data.clone_ref(py), q.addr.clone_ref(py)))
            .collect::<Vec<_>>();
        cached(py)?.datagram_buffer.call1(py, (items,))
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
        for x in [&self.loop_, &self.sock, &self.protocol, &self.address]
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
        for q in &self.buffer {
            visit.call(&q.addr)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        // The socket is kept: the finalizer still warns about and closes an unclosed one.
        self.max_size = crate::common::MaxSize::new();
        self.loop_ = None;
        self.protocol = None;
        self.extra = None;
        self.address = None;
        self.buffer.clear();
    }
}

write_flow_methods!(DatagramTransport);

selector_transport_attrs!(DatagramTransport);

impl crate::common::Finalize for DatagramTransport {
    fn finalize(slf: &Bound<'_, Self>) -> PyResult<()> {
        crate::common::finalize_unclosed(
            slf,
            |me| me.sock.is_some(),
            |me| me.sock.take(),
            || Ok(()),
        )
    }
}

impl Drop for DatagramTransport {
    /// asyncio's `__del__`: an unclosed transport warns (ResourceWarning) and closes its socket.
    fn drop(&mut self) {
        let Some(sock) = self.sock.take() else {
            return;
        };
        Python::attach(|py| {
            // Do not disturb an exception being propagated while this object is freed.
            let pending = PyErr::take(py);
            let loop_ = self.loop_.as_ref().map(|l| l.bind(py).clone());
            let bufsize = cached(py)
                .map(|c| self.write_buffer_size(c))
                .unwrap_or(self.buffer_size);
            let repr = DatagramTransport::repr_with(
                "DatagramTransport",
                false,
                self.closing,
                self.fd,
                loop_.as_ref(),
                bufsize,
            )
            .unwrap_or_else(|_| format!("<DatagramTransport fd={}>", self.fd));
            let mut res = cached(py).and_then(|c| c.unclosed.call1(py, (repr,)).map(drop));
            if res.is_ok() {
                res = sock.call_method0(py, "close").map(drop);
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

// asyncio's datagram transport is a `WriteTransport` too: these raise NotImplementedError
// (`writelines` joins the data first), from asyncio's own base classes.
crate::common::base_class_methods!(
    DatagramTransport;
    write(data),
    writelines(list_of_data),
    write_eof(),
    can_write_eof(),
);

#[pymethods]
impl DatagramTransport {
    /// `_server`: a datagram transport never has one (asyncio sets it to None).
    #[getter]
    fn _server(&self, py: Python<'_>) -> Py<PyAny> {
        py.None()
    }

    /// `_buffer_factory`: asyncio's class attribute (`collections.deque`).
    #[getter]
    fn _buffer_factory(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::common::asyncio_class_attr(
            py,
            "DATAGRAM_BUFFER_FACTORY",
            "DatagramTransport",
            "_buffer_factory",
        )
    }
}
