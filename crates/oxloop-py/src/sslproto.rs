//! `SSLProtocol` and `_SSLProtocolTransport`: asyncio's TLS layer (`asyncio/sslproto.py`, the
//! 3.11+ implementation) with its state machine and data path in Rust.
//!
//! The TLS work itself is the user's own `ssl.SSLContext`: `sslcontext.wrap_bio(incoming,
//! outgoing, ...)` makes the `ssl.SSLObject` (so SNI callbacks, `sslobject_class` and every
//! context setting keep working), and that object is what `get_extra_info("ssl_object")`
//! returns. For the plain `ssl.SSLObject` the per-chunk calls go straight to its C object
//! (`SSLObject._sslobj`, `_ssl._SSLSocket`): `read(n, buffer)`, `write`, `do_handshake`,
//! `shutdown`; a subclass is called through its own methods. Those methods and the two
//! `ssl.MemoryBIO`s' `write`/`read` are bound once per connection.
//!
//! - read: the transport under TLS sees a `BufferedProtocol`: it receives into this protocol's
//!   buffer, `buffer_updated(n)` feeds the incoming BIO and decrypts either straight into the
//!   application's buffer (`BufferedProtocol`: `read(n, app_buffer)`) or into the connection's
//!   buffer and one `bytes` for `data_received`.
//! - write: `write(data)` encrypts at once (in WRAPPED state) and hands the outgoing BIO's bytes
//!   to `transport.write`; the application's write flow control counts the backlog not yet
//!   encrypted plus the encrypted bytes held back while the transport is paused, as asyncio.
//! - the handshake, shutdown (close_notify), their timeouts, EOF, abort, errors, log messages and
//!   callback order follow asyncio's `sslproto.py` for the running version (3.11/3.12 and 3.13
//!   differ in `_abort`); slow paths call `oxloop/_sslproto.py`.
//!
//! Borrow discipline (as in `transports.rs`): no `PyRef`/`PyRefMut` is held while Python code
//! runs, so any callback may call back into the protocol or its transport.

use std::collections::VecDeque;

use pyo3::exceptions::{
    PyAssertionError, PyAttributeError, PyConnectionAbortedError, PyConnectionResetError,
    PyException, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PySystemExit, PyTypeError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PySlice, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::base_events::loop_debug;
use crate::flow_control::Mark;

/// asyncio's `SSLProtocol.max_size`: the buffer handed to the transport, and the most one
/// `read()` decrypts.
const MAX_SIZE: usize = 256 * 1024;

struct Cached {
    again_errors: Py<PyAny>,
    ssl_error: Py<PyAny>,
    certificate_error: Py<PyAny>,
    memory_bio: Py<PyAny>,
    sslobject_type: Py<PyAny>,
    buffered_protocol: Py<PyAny>,
    cancelled_error: Py<PyAny>,
    timeout_error: Py<PyAny>,
    add_flowcontrol_defaults: Py<PyAny>,
    create_transport_context: Py<PyAny>,
    handshake_timeout: Py<PyAny>,
    shutdown_timeout: Py<PyAny>,
    high_water_read: Py<PyAny>,
    high_water_write: Py<PyAny>,
    log_threshold: usize,
    sendfile_fallback: Py<PyAny>,
    log_debug: Py<PyAny>,
    log_warning: Py<PyAny>,
    fatal_error_debug: Py<PyAny>,
    unclosed_warning: Py<PyAny>,
    protocol_mask: Py<PyAny>,
    transport_mask: Py<PyAny>,
    abort_takes_exc: bool,
}

static CACHED: PyOnceLock<Cached> = PyOnceLock::new();

fn cached(py: Python<'_>) -> PyResult<&'static Cached> {
    CACHED.get_or_try_init(py, || {
        let m = py.import("oxloop._sslproto")?;
        let get = |name: &str| m.getattr(name).map(Bound::unbind);
        Ok(Cached {
            again_errors: get("SSLAgainErrors")?,
            ssl_error: get("SSLError")?,
            certificate_error: get("CertificateError")?,
            memory_bio: get("MemoryBIO")?,
            sslobject_type: get("SSLObject")?,
            buffered_protocol: get("BufferedProtocol")?,
            cancelled_error: get("CancelledError")?,
            timeout_error: get("TimeoutError")?,
            add_flowcontrol_defaults: get("add_flowcontrol_defaults")?,
            create_transport_context: get("create_transport_context")?,
            handshake_timeout: get("SSL_HANDSHAKE_TIMEOUT")?,
            shutdown_timeout: get("SSL_SHUTDOWN_TIMEOUT")?,
            high_water_read: get("FLOW_CONTROL_HIGH_WATER_SSL_READ")?,
            high_water_write: get("FLOW_CONTROL_HIGH_WATER_SSL_WRITE")?,
            log_threshold: m.getattr("LOG_THRESHOLD_FOR_CONNLOST_WRITES")?.extract()?,
            sendfile_fallback: get("SENDFILE_FALLBACK")?,
            log_debug: get("log_debug")?,
            log_warning: get("log_warning")?,
            fatal_error_debug: get("fatal_error_debug")?,
            unclosed_warning: get("unclosed_warning")?,
            protocol_mask: get("SSLProtocol")?,
            transport_mask: get("_SSLProtocolTransport")?,
            abort_takes_exc: m.getattr("ABORT_TAKES_EXC")?.is_truthy()?,
        })
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Unwrapped,
    DoHandshake,
    Wrapped,
    Flushing,
    Shutdown,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Unwrapped => "SSLProtocolState.UNWRAPPED",
            State::DoHandshake => "SSLProtocolState.DO_HANDSHAKE",
            State::Wrapped => "SSLProtocolState.WRAPPED",
            State::Flushing => "SSLProtocolState.FLUSHING",
            State::Shutdown => "SSLProtocolState.SHUTDOWN",
        }
    }
}

/// asyncio's `AppProtocolState`: INIT -cm-> CON_MADE [-dr*->] [-er-> EOF?] -cl-> CON_LOST.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AppState {
    Init,
    ConMade,
    Eof,
    ConLost,
}

fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

fn none_attr(name: &str) -> PyErr {
    PyAttributeError::new_err(format!("'NoneType' object has no attribute '{name}'"))
}

fn exc_value<'py>(py: Python<'py>, err: PyErr) -> Bound<'py, PyAny> {
    err.into_value(py).into_bound(py).into_any()
}

/// The per-connection TLS objects and their bound methods (fixed at creation).
struct Tls {
    incoming: Py<PyAny>,
    outgoing: Py<PyAny>,
    /// The user-visible `ssl.SSLObject` (or `sslobject_class` instance).
    sslobj: Py<PyAny>,
    incoming_write: Py<PyAny>,
    outgoing_read: Py<PyAny>,
    read: Py<PyAny>,
    write: Py<PyAny>,
    do_handshake: Py<PyAny>,
    unwrap: Py<PyAny>,
    /// `pending()`: decrypted bytes buffered in the SSL object.
    pending: Py<PyAny>,
}

/// asyncio's `sslproto.SSLProtocol`: the protocol of the transport under TLS.
#[pyclass(module = "oxloop._oxloop", dict, weakref)]
pub struct SSLProtocol {
    loop_: Option<Py<PyAny>>,
    app_protocol: Option<Py<PyAny>>,
    app_is_buffer: bool,
    app_get_buffer: Option<Py<PyAny>>,
    app_buffer_updated: Option<Py<PyAny>>,
    sslcontext: Option<Py<PyAny>>,
    server_side: bool,
    server_hostname: Option<Py<PyAny>>,
    extra: Option<Py<PyDict>>,
    write_backlog: VecDeque<Py<PyAny>>,
    write_buffer_size: isize,
    waiter: Option<Py<PyAny>>,
    app_transport: Option<Py<SSLProtocolTransport>>,
    app_transport_created: bool,
    transport: Option<Py<PyAny>>,
    /// `transport.write`, bound when the transport is set.
    transport_write: Option<Py<PyAny>>,
    ssl_handshake_timeout: Py<PyAny>,
    ssl_shutdown_timeout: Py<PyAny>,
    tls: Option<Tls>,
    state: State,
    conn_lost: usize,
    app_state: AppState,
    ssl_writing_paused: bool,
    app_reading_paused: bool,
    ssl_reading_paused: bool,
    /// `_incoming_high_water` / `_incoming_low_water`.
    in_high: Mark,
    in_low: Mark,
    eof_received: bool,
    app_writing_paused: bool,
    /// `_outgoing_high_water` / `_outgoing_low_water`.
    out_high: Mark,
    out_low: Mark,
    /// The buffer the transport receives into (`get_buffer`), also used to decrypt into for a
    /// plain `Protocol` (its ciphertext is in the incoming BIO by then).
    ssl_buffer: Option<Py<PyByteArray>>,
    ssl_buffer_view: Option<Py<PyAny>>,
    handshake_start_time: Option<f64>,
    handshake_timeout_handle: Option<Py<PyAny>>,
    shutdown_timeout_handle: Option<Py<PyAny>>,
}

type Slf<'a, 'py> = &'a Bound<'py, SSLProtocol>;

impl SSLProtocol {
    fn loop_(slf: Slf<'_, '_>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        slf.borrow()
            .loop_
            .as_ref()
            .map(|l| l.clone_ref(py))
            .ok_or_else(|| none_attr("call_soon"))
    }

    fn debug(slf: Slf<'_, '_>) -> PyResult<bool> {
        let py = slf.py();
        match slf.borrow().loop_.as_ref().map(|l| l.clone_ref(py)) {
            Some(l) => loop_debug(l.bind(py)),
            None => Ok(false),
        }
    }

    fn tls_field(slf: Slf<'_, '_>, f: impl Fn(&Tls) -> &Py<PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.borrow();
        me.tls
            .as_ref()
            .map(|t| f(t).clone_ref(py))
            .ok_or_else(|| PyRuntimeError::new_err("SSL protocol is gone"))
    }

    fn set_state(slf: Slf<'_, '_>, new_state: State) -> PyResult<()> {
        let mut me = slf.borrow_mut();
        let allowed = matches!(
            (me.state, new_state),
            (_, State::Unwrapped)
                | (State::Unwrapped, State::DoHandshake)
                | (State::DoHandshake, State::Wrapped)
                | (State::Wrapped, State::Flushing)
                | (State::Flushing, State::Shutdown)
        );
        if allowed {
            me.state = new_state;
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(format!(
                "cannot switch state from {} to {}",
                me.state.name(),
                new_state.name()
            )))
        }
    }

    fn set_app_protocol_(slf: Slf<'_, '_>, app_protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let (is_buffer, gb, bu) = app_protocol_parts(app_protocol)?;
        let old = {
            let mut me = slf.borrow_mut();
            me.app_is_buffer = is_buffer;
            (
                me.app_protocol.replace(app_protocol.clone().unbind()),
                std::mem::replace(&mut me.app_get_buffer, gb),
                std::mem::replace(&mut me.app_buffer_updated, bu),
            )
        };
        drop(old);
        Ok(())
    }

    fn wakeup_waiter_(slf: Slf<'_, '_>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let Some(waiter) = slf.borrow().waiter.as_ref().map(|w| w.clone_ref(py)) else {
            return Ok(());
        };
        let waiter = waiter.bind(py);
        if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            match exc {
                Some(e) => waiter.call_method1(intern!(py, "set_exception"), (e,))?,
                None => waiter.call_method1(intern!(py, "set_result"), (py.None(),))?,
            };
        }
        let old = slf.borrow_mut().waiter.take();
        drop(old);
        Ok(())
    }

    fn get_app_transport_(slf: Slf<'_, '_>) -> PyResult<Py<SSLProtocolTransport>> {
        let py = slf.py();
        {
            let me = slf.borrow();
            if let Some(t) = &me.app_transport {
                return Ok(t.clone_ref(py));
            }
            if me.app_transport_created {
                return Err(PyRuntimeError::new_err(
                    "Creating _SSLProtocolTransport twice",
                ));
            }
        }
        let loop_ = slf.borrow().loop_.as_ref().map(|l| l.clone_ref(py));
        let tr = Py::new(
            py,
            SSLProtocolTransport {
                loop_,
                ssl_protocol: Some(slf.clone().unbind()),
                closed: false,
            },
        )?;
        let mut me = slf.borrow_mut();
        me.app_transport = Some(tr.clone_ref(py));
        me.app_transport_created = true;
        Ok(tr)
    }

    fn app_transport_obj(slf: Slf<'_, '_>) -> Py<PyAny> {
        let py = slf.py();
        match &slf.borrow().app_transport {
            Some(t) => t.clone_ref(py).into_any(),
            None => py.None(),
        }
    }

    fn mark_app_transport_closed(slf: Slf<'_, '_>) {
        let py = slf.py();
        let t = slf.borrow().app_transport.as_ref().map(|t| t.clone_ref(py));
        if let Some(t) = t {
            t.bind(py).borrow_mut().closed = true;
        }
    }

    fn set_write_buffer_limits_(
        slf: Slf<'_, '_>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let (h, l) = limits(py, high, low, &cached(py)?.high_water_write)?;
        let old = {
            let mut me = slf.borrow_mut();
            (
                std::mem::replace(&mut me.out_high, h),
                std::mem::replace(&mut me.out_low, l),
            )
        };
        drop(old);
        Ok(())
    }

    fn set_read_buffer_limits_(
        slf: Slf<'_, '_>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let (h, l) = limits(py, high, low, &cached(py)?.high_water_read)?;
        let old = {
            let mut me = slf.borrow_mut();
            (
                std::mem::replace(&mut me.in_high, h),
                std::mem::replace(&mut me.in_low, l),
            )
        };
        drop(old);
        Ok(())
    }

    fn bio_pending(slf: Slf<'_, '_>, outgoing: bool) -> PyResult<isize> {
        let py = slf.py();
        let bio = {
            let me = slf.borrow();
            match &me.tls {
                Some(t) if outgoing => t.outgoing.clone_ref(py),
                Some(t) => t.incoming.clone_ref(py),
                None => return Ok(0),
            }
        };
        bio.bind(py).getattr(intern!(py, "pending"))?.extract()
    }

    /// Nothing left to decrypt: the incoming BIO is empty and the SSL object holds no
    /// decrypted bytes, so another `read()` could only raise SSLWantReadError. The read loops
    /// stop here instead of raising and catching that exception for every chunk.
    fn drained(slf: Slf<'_, '_>) -> PyResult<bool> {
        let py = slf.py();
        if Self::bio_pending(slf, false)? != 0 {
            return Ok(false);
        }
        let pending = Self::tls_field(slf, |t| &t.pending)?;
        let n: isize = pending.call0(py)?.extract(py)?;
        Ok(n == 0)
    }

    fn get_write_buffer_size_(slf: Slf<'_, '_>) -> PyResult<isize> {
        let pending = Self::bio_pending(slf, true)?;
        Ok(pending + slf.borrow().write_buffer_size)
    }

    fn get_read_buffer_size_(slf: Slf<'_, '_>) -> PyResult<isize> {
        Self::bio_pending(slf, false)
    }

    // --- handshake ----------------------------------------------------------------------

    fn start_handshake(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let loop_ = Self::loop_(slf)?;
        let loop_ = loop_.bind(py);
        if Self::debug(slf)? {
            cached(py)?
                .log_debug
                .call1(py, ("%r starts SSL handshake", slf))?;
            let t: f64 = loop_.call_method0(intern!(py, "time"))?.extract()?;
            slf.borrow_mut().handshake_start_time = Some(t);
        } else {
            slf.borrow_mut().handshake_start_time = None;
        }
        Self::set_state(slf, State::DoHandshake)?;
        // Start the handshake timeout count down.
        let timeout = slf.borrow().ssl_handshake_timeout.clone_ref(py);
        let cb = slf.getattr(intern!(py, "_check_handshake_timeout"))?;
        let h = loop_.call_method1(intern!(py, "call_later"), (timeout, cb))?;
        let old = slf
            .borrow_mut()
            .handshake_timeout_handle
            .replace(h.unbind());
        drop(old);
        Self::do_handshake_(slf)
    }

    fn do_handshake_(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let hs = Self::tls_field(slf, |t| &t.do_handshake)?;
        match hs.call0(py) {
            Ok(_) => Self::on_handshake_complete(slf, None),
            Err(e) if e.is_instance(py, cached(py)?.again_errors.bind(py)) => {
                Self::process_outgoing(slf)
            }
            Err(e) if e.is_instance(py, cached(py)?.ssl_error.bind(py)) => {
                let exc = exc_value(py, e);
                Self::on_handshake_complete(slf, Some(exc))
            }
            Err(e) => Err(e),
        }
    }

    fn cancel_handle(slf: Slf<'_, '_>, shutdown: bool) -> PyResult<()> {
        let py = slf.py();
        let h = {
            let mut me = slf.borrow_mut();
            if shutdown {
                me.shutdown_timeout_handle.take()
            } else {
                me.handshake_timeout_handle.take()
            }
        };
        if let Some(h) = h {
            h.call_method0(py, intern!(py, "cancel"))?;
        }
        Ok(())
    }

    fn on_handshake_complete(
        slf: Slf<'_, '_>,
        handshake_exc: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        Self::cancel_handle(slf, false)?;
        let sslobj = Self::tls_field(slf, |t| &t.sslobj)?;
        let sslobj = sslobj.bind(py);
        let res: PyResult<Bound<'_, PyAny>> = match handshake_exc {
            None => Self::set_state(slf, State::Wrapped)
                .and_then(|()| sslobj.call_method0(intern!(py, "getpeercert"))),
            Some(e) => Err(PyErr::from_value(e)),
        };
        let peercert = match res {
            Ok(p) => p,
            Err(e) if e.is_instance_of::<PyException>(py) => {
                Self::set_state(slf, State::Unwrapped)?;
                let exc = exc_value(py, e);
                let msg = if exc.is_instance(cached(py)?.certificate_error.bind(py))? {
                    "SSL handshake failed on verifying the certificate"
                } else {
                    "SSL handshake failed"
                };
                Self::fatal_error_(slf, &exc, msg)?;
                return Self::wakeup_waiter_(slf, Some(&exc));
            }
            Err(e) => return Err(e),
        };
        if Self::debug(slf)? {
            let start = slf.borrow().handshake_start_time;
            let loop_ = Self::loop_(slf)?;
            let now: f64 = loop_.call_method0(py, intern!(py, "time"))?.extract(py)?;
            let dt = now - start.unwrap_or(now);
            cached(py)?
                .log_debug
                .call1(py, ("%r: SSL handshake took %.1f ms", slf, dt * 1e3))?;
        }
        // Add extra info that becomes available after handshake.
        let extra = slf.borrow().extra.as_ref().map(|e| e.clone_ref(py));
        if let Some(extra) = extra {
            let extra = extra.bind(py);
            extra.set_item("peercert", peercert)?;
            extra.set_item("cipher", sslobj.call_method0(intern!(py, "cipher"))?)?;
            extra.set_item(
                "compression",
                sslobj.call_method0(intern!(py, "compression"))?,
            )?;
            extra.set_item("ssl_object", sslobj)?;
        }
        let app = {
            let mut me = slf.borrow_mut();
            if me.app_state == AppState::Init {
                me.app_state = AppState::ConMade;
                Some(me.app_protocol.as_ref().map(|p| p.clone_ref(py)))
            } else {
                None
            }
        };
        if let Some(app) = app {
            let tr = Self::get_app_transport_(slf)?;
            match app {
                Some(a) => a.call_method1(py, intern!(py, "connection_made"), (tr,))?,
                None => return Err(none_attr("connection_made")),
            };
        }
        Self::wakeup_waiter_(slf, None)?;
        Self::do_read(slf)
    }

    // --- shutdown -------------------------------------------------------------------------

    fn start_shutdown(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let state = slf.borrow().state;
        if matches!(state, State::Flushing | State::Shutdown | State::Unwrapped) {
            return Ok(());
        }
        Self::mark_app_transport_closed(slf);
        if state == State::DoHandshake {
            Self::abort_(slf, None)
        } else {
            Self::set_state(slf, State::Flushing)?;
            let loop_ = Self::loop_(slf)?;
            let timeout = slf.borrow().ssl_shutdown_timeout.clone_ref(py);
            let cb = slf.getattr(intern!(py, "_check_shutdown_timeout"))?;
            let h = loop_.call_method1(py, intern!(py, "call_later"), (timeout, cb))?;
            let old = slf.borrow_mut().shutdown_timeout_handle.replace(h);
            drop(old);
            Self::do_flush(slf)
        }
    }

    fn do_flush(slf: Slf<'_, '_>) -> PyResult<()> {
        Self::do_read(slf)?;
        Self::set_state(slf, State::Shutdown)?;
        Self::do_shutdown_(slf)
    }

    fn do_shutdown_(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let res = if slf.borrow().eof_received {
            Ok(())
        } else {
            Self::tls_field(slf, |t| &t.unwrap)?.call0(py).map(drop)
        };
        match res {
            Ok(()) => {
                Self::process_outgoing(slf)?;
                Self::call_eof_received(slf)?;
                Self::on_shutdown_complete(slf, None)
            }
            Err(e) if e.is_instance(py, cached(py)?.again_errors.bind(py)) => {
                Self::process_outgoing(slf)
            }
            Err(e) if e.is_instance(py, cached(py)?.ssl_error.bind(py)) => {
                Self::on_shutdown_complete(slf, Some(exc_value(py, e)))
            }
            Err(e) => Err(e),
        }
    }

    fn on_shutdown_complete(
        slf: Slf<'_, '_>,
        shutdown_exc: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        Self::cancel_handle(slf, true)?;
        match shutdown_exc {
            Some(exc) if exc.is_truthy()? => {
                Self::fatal_error_(slf, &exc, "Fatal error on transport")
            }
            _ => {
                let tr = slf.borrow().transport.as_ref().map(|t| t.clone_ref(py));
                let close = match tr {
                    Some(t) => t.getattr(py, intern!(py, "close"))?,
                    None => return Err(none_attr("close")),
                };
                Self::loop_(slf)?.call_method1(py, intern!(py, "call_soon"), (close,))?;
                Ok(())
            }
        }
    }

    /// `_abort()` (3.11/3.12: `transport.abort()`) / `_abort(exc)` (3.13: `_force_close(exc)`).
    fn abort_(slf: Slf<'_, '_>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        Self::set_state(slf, State::Unwrapped)?;
        let tr = slf.borrow().transport.as_ref().map(|t| t.clone_ref(py));
        if let Some(t) = tr {
            if cached(py)?.abort_takes_exc {
                t.call_method1(py, intern!(py, "_force_close"), (exc,))?;
            } else {
                t.call_method0(py, intern!(py, "abort"))?;
            }
        }
        Ok(())
    }

    // --- outgoing -------------------------------------------------------------------------

    fn write_appdata(slf: Slf<'_, '_>, items: &[Bound<'_, PyAny>]) -> PyResult<()> {
        let py = slf.py();
        let (state, conn_lost) = {
            let me = slf.borrow();
            (me.state, me.conn_lost)
        };
        if matches!(state, State::Flushing | State::Shutdown | State::Unwrapped) {
            if conn_lost >= cached(py)?.log_threshold {
                cached(py)?
                    .log_warning
                    .call1(py, ("SSL connection is closed",))?;
            }
            slf.borrow_mut().conn_lost += 1;
            return Ok(());
        }
        for data in items {
            let n = data.len()? as isize;
            let mut me = slf.borrow_mut();
            me.write_backlog.push_back(data.clone().unbind());
            me.write_buffer_size += n;
        }
        if state != State::Wrapped {
            return Ok(());
        }
        match Self::do_write(slf) {
            Ok(()) => Ok(()),
            Err(e) if e.is_instance_of::<PyException>(py) => {
                let exc = exc_value(py, e);
                Self::fatal_error_(slf, &exc, "Fatal error on SSL protocol")
            }
            Err(e) => Err(e),
        }
    }

    fn do_write(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let write = Self::tls_field(slf, |t| &t.write)?;
        let write = write.bind(py);
        loop {
            let data = match slf.borrow().write_backlog.front() {
                Some(d) => d.clone_ref(py).into_bound(py),
                None => break,
            };
            let count: isize = match write.call1((&data,)) {
                Ok(c) => c.extract()?,
                Err(e) if e.is_instance(py, cached(py)?.again_errors.bind(py)) => break,
                Err(e) => return Err(e),
            };
            let data_len = data.len()? as isize;
            if count < data_len {
                let rest = data.get_item(PySlice::new(py, count, isize::MAX, 1))?;
                let mut me = slf.borrow_mut();
                if let Some(front) = me.write_backlog.front_mut() {
                    *front = rest.unbind();
                }
                me.write_buffer_size -= count;
            } else {
                let mut me = slf.borrow_mut();
                let old = me.write_backlog.pop_front();
                me.write_buffer_size -= data_len;
                drop(me);
                drop(old);
            }
        }
        Self::process_outgoing(slf)
    }

    fn process_outgoing(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let (paused, out_read, tw) = {
            let me = slf.borrow();
            (
                me.ssl_writing_paused,
                me.tls.as_ref().map(|t| t.outgoing_read.clone_ref(py)),
                me.transport_write.as_ref().map(|w| w.clone_ref(py)),
            )
        };
        if !paused {
            if let Some(r) = out_read {
                let data = r.call0(py)?;
                let data = data.bind(py);
                let n = match data.cast::<PyBytes>() {
                    Ok(b) => b.as_bytes().len(),
                    Err(_) => data.len()?,
                };
                if n > 0 {
                    match tw {
                        Some(w) => w.call1(py, (data,))?,
                        None => return Err(none_attr("write")),
                    };
                }
            }
        }
        Self::control_app_writing(slf)
    }

    // --- incoming -------------------------------------------------------------------------

    fn do_read(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        if !matches!(slf.borrow().state, State::Wrapped | State::Flushing) {
            return Ok(());
        }
        let res = (|| {
            let (paused, is_buffer) = {
                let me = slf.borrow();
                (me.app_reading_paused, me.app_is_buffer)
            };
            if !paused {
                if is_buffer {
                    Self::do_read_buffered(slf)?;
                } else {
                    Self::do_read_copied(slf)?;
                }
                if slf.borrow().write_backlog.is_empty() {
                    Self::process_outgoing(slf)?;
                } else {
                    Self::do_write(slf)?;
                }
            }
            Self::control_ssl_reading(slf)
        })();
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.is_instance_of::<PyException>(py) => {
                let exc = exc_value(py, e);
                Self::fatal_error_(slf, &exc, "Fatal error on SSL protocol")
            }
            Err(e) => Err(e),
        }
    }

    fn do_read_buffered(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let size = Self::get_read_buffer_size_(slf)?;
        let (gb, bu) = {
            let me = slf.borrow();
            (
                me.app_get_buffer.as_ref().map(|f| f.clone_ref(py)),
                me.app_buffer_updated.as_ref().map(|f| f.clone_ref(py)),
            )
        };
        let (Some(gb), Some(bu)) = (gb, bu) else {
            return Err(none_attr("get_buffer"));
        };
        let read = Self::tls_field(slf, |t| &t.read)?;
        let read = read.bind(py);
        let again = cached(py)?.again_errors.bind(py);

        let buf = gb.call1(py, (size,))?.into_bound(py);
        let wants = buf.len()? as isize;
        let mut offset: isize = 0;
        let mut count: isize = 1;
        let mut view: Option<Bound<'_, PyMemoryView>> = None;
        let res: PyResult<()> = (|| {
            count = read.call1((wants, &buf))?.extract()?;
            if count > 0 {
                offset = count;
                while offset < wants {
                    if Self::drained(slf)? {
                        break; // as SSLWantReadError would
                    }
                    if view.is_none() {
                        view = Some(PyMemoryView::from(&buf)?);
                    }
                    let part = view.as_ref().expect("set above").get_item(PySlice::new(
                        py,
                        offset,
                        isize::MAX,
                        1,
                    ))?;
                    count = read.call1((wants - offset, &part))?.extract()?;
                    drop(part);
                    if count > 0 {
                        offset += count;
                    } else {
                        break;
                    }
                }
                if offset >= wants {
                    // The buffer is full: more may be waiting in the BIO.
                    let loop_ = Self::loop_(slf)?;
                    let cb = slf.getattr(intern!(py, "_do_read"))?;
                    loop_.call_method1(py, intern!(py, "call_soon"), (cb,))?;
                }
            }
            Ok(())
        })();
        if let Some(v) = view.take() {
            v.call_method0(intern!(py, "release"))?;
        }
        drop(buf);
        match res {
            Ok(()) => {}
            Err(e) if e.is_instance(py, again) => {}
            Err(e) => return Err(e),
        }
        if offset > 0 {
            bu.call1(py, (offset,))?;
        }
        if count == 0 {
            // close_notify
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    fn ensure_ssl_buffer(slf: Slf<'_, '_>, want: usize) -> PyResult<(Py<PyByteArray>, Py<PyAny>)> {
        let py = slf.py();
        {
            let me = slf.borrow();
            if let (Some(b), Some(v)) = (&me.ssl_buffer, &me.ssl_buffer_view) {
                if b.bind(py).len() >= want {
                    return Ok((b.clone_ref(py), v.clone_ref(py)));
                }
            }
        }
        let b = PyByteArray::new_with(py, want, |_| Ok(()))?;
        let v = PyMemoryView::from(b.as_any())?.into_any();
        let mut me = slf.borrow_mut();
        let old = (
            me.ssl_buffer.replace(b.clone().unbind()),
            me.ssl_buffer_view.replace(v.clone().unbind()),
        );
        drop(me);
        drop(old);
        Ok((b.unbind(), v.unbind()))
    }

    fn do_read_copied(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let read = Self::tls_field(slf, |t| &t.read)?;
        let read = read.bind(py);
        let again = cached(py)?.again_errors.bind(py);
        let (buf, view) = Self::ensure_ssl_buffer(slf, MAX_SIZE)?;
        let buf = buf.bind(py);
        let view = view.bind(py);
        let cap = buf.len();
        // Decrypted records go into the connection's buffer; `acc` only when it fills up.
        let mut acc: Vec<u8> = Vec::new();
        let mut offset = 0usize;
        let mut total = 0usize;
        let mut chunk_nonempty = true;
        let res: PyResult<()> = loop {
            let r = if offset == 0 {
                read.call1((cap, view))
            } else {
                let part = view.get_item(PySlice::new(py, offset as isize, isize::MAX, 1))?;
                read.call1((cap - offset, &part))
            };
            let n: usize = match r {
                Ok(n) => n.extract()?,
                Err(e) => break Err(e),
            };
            if n == 0 {
                chunk_nonempty = false;
                break Ok(());
            }
            offset += n;
            total += n;
            let drained = match Self::drained(slf) {
                Ok(d) => d,
                Err(e) => break Err(e),
            };
            if offset == cap {
                // SAFETY: no Python code runs while the bytearray's memory is borrowed here,
                // so it can neither be resized nor freed.
                acc.extend_from_slice(unsafe { &buf.as_bytes()[..offset] });
                offset = 0;
            }
            if drained {
                break Ok(()); // as SSLWantReadError would
            }
        };
        match res {
            Ok(()) => {}
            Err(e) if e.is_instance(py, again) => {}
            Err(e) => return Err(e),
        }
        if total > 0 {
            let data = if acc.is_empty() {
                // SAFETY: as above; PyBytes::new copies without running Python code.
                PyBytes::new(py, unsafe { &buf.as_bytes()[..offset] })
            } else {
                // SAFETY: as above.
                acc.extend_from_slice(unsafe { &buf.as_bytes()[..offset] });
                PyBytes::new(py, &acc)
            };
            let app = slf.borrow().app_protocol.as_ref().map(|p| p.clone_ref(py));
            match app {
                Some(a) => a.call_method1(py, intern!(py, "data_received"), (data,))?,
                None => return Err(none_attr("data_received")),
            };
        }
        if !chunk_nonempty {
            // close_notify
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    fn call_eof_received(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let app = {
            let mut me = slf.borrow_mut();
            if me.app_state != AppState::ConMade {
                return Ok(());
            }
            me.app_state = AppState::Eof;
            me.app_protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let res = match app {
            Some(a) => a.call_method0(py, intern!(py, "eof_received")),
            None => Err(none_attr("eof_received")),
        };
        match res {
            Ok(keep_open) => {
                if keep_open.is_truthy(py)? {
                    cached(py)?.log_warning.call1(
                        py,
                        ("returning true from eof_received() has no effect when using ssl",),
                    )?;
                }
                Ok(())
            }
            Err(e) if is_exit(py, &e) => Err(e),
            Err(e) => {
                let exc = exc_value(py, e);
                Self::fatal_error_(slf, &exc, "Error calling eof_received()")
            }
        }
    }

    // --- flow control ---------------------------------------------------------------------

    fn control_app_writing(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let size = Self::get_write_buffer_size_(slf)? as i64;
        let (high, low, paused) = {
            let me = slf.borrow();
            (
                me.out_high.clone_ref(py),
                me.out_low.clone_ref(py),
                me.app_writing_paused,
            )
        };
        // asyncio: `if size >= high and not paused: ... elif size <= low and paused: ...`.
        let pause = high.size_ge(py, size)? && !paused;
        let resume = !pause && low.size_le(py, size)? && paused;
        let (method, message, app) = {
            let mut me = slf.borrow_mut();
            if pause && !me.app_writing_paused {
                me.app_writing_paused = true;
                (
                    intern!(py, "pause_writing"),
                    "protocol.pause_writing() failed",
                    me.app_protocol.as_ref().map(|p| p.clone_ref(py)),
                )
            } else if resume && me.app_writing_paused {
                me.app_writing_paused = false;
                (
                    intern!(py, "resume_writing"),
                    "protocol.resume_writing() failed",
                    me.app_protocol.as_ref().map(|p| p.clone_ref(py)),
                )
            } else {
                return Ok(());
            }
        };
        let res = match app {
            Some(a) => a.call_method0(py, method).map(drop),
            None => Err(none_attr(method.to_str()?)),
        };
        let Err(e) = res else {
            return Ok(());
        };
        if is_exit(py, &e) {
            return Err(e);
        }
        let ctx = PyDict::new(py);
        ctx.set_item("message", message)?;
        ctx.set_item("exception", e.into_value(py))?;
        ctx.set_item("transport", Self::app_transport_obj(slf))?;
        ctx.set_item("protocol", slf)?;
        Self::loop_(slf)?.call_method1(py, intern!(py, "call_exception_handler"), (ctx,))?;
        Ok(())
    }

    fn control_ssl_reading(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        let size = Self::get_read_buffer_size_(slf)? as i64;
        let (high, low, paused) = {
            let me = slf.borrow();
            (
                me.in_high.clone_ref(py),
                me.in_low.clone_ref(py),
                me.ssl_reading_paused,
            )
        };
        // asyncio: `if size >= high and not paused: ... elif size <= low and paused: ...`.
        let pause = high.size_ge(py, size)? && !paused;
        let resume = !pause && low.size_le(py, size)? && paused;
        let (method, tr) = {
            let mut me = slf.borrow_mut();
            if pause && !me.ssl_reading_paused {
                me.ssl_reading_paused = true;
                (
                    intern!(py, "pause_reading"),
                    me.transport.as_ref().map(|t| t.clone_ref(py)),
                )
            } else if resume && me.ssl_reading_paused {
                me.ssl_reading_paused = false;
                (
                    intern!(py, "resume_reading"),
                    me.transport.as_ref().map(|t| t.clone_ref(py)),
                )
            } else {
                return Ok(());
            }
        };
        match tr {
            Some(t) => t.call_method0(py, method)?,
            None => return Err(none_attr(method.to_str()?)),
        };
        Ok(())
    }

    fn resume_reading_(slf: Slf<'_, '_>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut me = slf.borrow_mut();
            if !me.app_reading_paused {
                return Ok(());
            }
            me.app_reading_paused = false;
        }
        let cb = slf.getattr(intern!(py, "_resume"))?;
        Self::loop_(slf)?.call_method1(py, intern!(py, "call_soon"), (cb,))?;
        Ok(())
    }

    fn fatal_error_(slf: Slf<'_, '_>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let tr = slf.borrow().transport.as_ref().map(|t| t.clone_ref(py));
        if let Some(t) = &tr {
            if t.bind(py).is_truthy()? {
                t.call_method1(py, intern!(py, "_force_close"), (exc,))?;
            }
        }
        if exc.is_instance_of::<PyOSError>() {
            if Self::debug(slf)? {
                cached(py)?
                    .fatal_error_debug
                    .call1(py, (slf, message, exc))?;
            }
        } else if !exc.is_instance(cached(py)?.cancelled_error.bind(py))? {
            let tr = slf.borrow().transport.as_ref().map(|t| t.clone_ref(py));
            let ctx = PyDict::new(py);
            ctx.set_item("message", message)?;
            ctx.set_item("exception", exc)?;
            ctx.set_item("transport", tr)?;
            ctx.set_item("protocol", slf)?;
            Self::loop_(slf)?.call_method1(py, intern!(py, "call_exception_handler"), (ctx,))?;
        }
        Ok(())
    }

    fn get_extra_info_(
        slf: Slf<'_, '_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (extra, tr) = {
            let me = slf.borrow();
            (
                me.extra.as_ref().map(|e| e.clone_ref(py)),
                me.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        if let Some(extra) = extra {
            if let Some(v) = extra.bind(py).get_item(name)? {
                return Ok(v.unbind());
            }
        }
        let default = default.unwrap_or_else(|| py.None());
        match tr {
            Some(t) => t.call_method1(py, intern!(py, "get_extra_info"), (name, default)),
            None => Ok(default),
        }
    }
}

type Parts = (bool, Option<Py<PyAny>>, Option<Py<PyAny>>);

/// asyncio's `_set_app_protocol`: a `BufferedProtocol` gets its `get_buffer`/`buffer_updated`
/// bound once.
fn app_protocol_parts(app_protocol: &Bound<'_, PyAny>) -> PyResult<Parts> {
    let py = app_protocol.py();
    // Make fast hasattr check first
    let is_buffer = app_protocol.hasattr(intern!(py, "get_buffer"))?
        && app_protocol.is_instance(cached(py)?.buffered_protocol.bind(py))?;
    if !is_buffer {
        return Ok((false, None, None));
    }
    Ok((
        true,
        Some(app_protocol.getattr(intern!(py, "get_buffer"))?.unbind()),
        Some(
            app_protocol
                .getattr(intern!(py, "buffer_updated"))?
                .unbind(),
        ),
    ))
}

/// `add_flowcontrol_defaults(high, low, kb)`: the checked (high, low).
fn limits(
    py: Python<'_>,
    high: Option<&Bound<'_, PyAny>>,
    low: Option<&Bound<'_, PyAny>>,
    kb: &Py<PyAny>,
) -> PyResult<(Mark, Mark)> {
    let (h, l): (Bound<'_, PyAny>, Bound<'_, PyAny>) = cached(py)?
        .add_flowcontrol_defaults
        .bind(py)
        .call1((high, low, kb))?
        .extract()?;
    Ok((Mark::new(h)?, Mark::new(l)?))
}

fn items_of<'py>(list_of_data: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(t) = list_of_data.cast::<PyTuple>() {
        return Ok(t.iter().collect());
    }
    list_of_data.try_iter()?.collect()
}

#[pymethods]
impl SSLProtocol {
    #[new]
    #[pyo3(signature = (r#loop, app_protocol, sslcontext, waiter, server_side=None,
                        server_hostname=None, call_connection_made=true,
                        ssl_handshake_timeout=None, ssl_shutdown_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        r#loop: &Bound<'_, PyAny>,
        app_protocol: &Bound<'_, PyAny>,
        sslcontext: &Bound<'_, PyAny>,
        waiter: &Bound<'_, PyAny>,
        server_side: Option<&Bound<'_, PyAny>>,
        server_hostname: Option<&Bound<'_, PyAny>>,
        call_connection_made: bool,
        ssl_handshake_timeout: Option<&Bound<'_, PyAny>>,
        ssl_shutdown_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let c = cached(py)?;
        let zero = 0i64.into_pyobject(py)?;
        let handshake_timeout = match ssl_handshake_timeout.filter(|t| !t.is_none()) {
            None => c.handshake_timeout.clone_ref(py),
            Some(t) if t.le(&zero)? => {
                return Err(PyValueError::new_err(format!(
                    "ssl_handshake_timeout should be a positive number, got {}",
                    t.str()?
                )))
            }
            Some(t) => t.clone().unbind(),
        };
        let shutdown_timeout = match ssl_shutdown_timeout.filter(|t| !t.is_none()) {
            None => c.shutdown_timeout.clone_ref(py),
            Some(t) if t.le(&zero)? => {
                return Err(PyValueError::new_err(format!(
                    "ssl_shutdown_timeout should be a positive number, got {}",
                    t.str()?
                )))
            }
            Some(t) => t.clone().unbind(),
        };
        let false_ = pyo3::types::PyBool::new(py, false).to_owned().into_any();
        let server_side = server_side.unwrap_or(&false_);
        let server_side_b = server_side.is_truthy()?;
        let sslcontext = if sslcontext.is_truthy()? {
            sslcontext.clone()
        } else {
            c.create_transport_context
                .bind(py)
                .call1((server_side, server_hostname))?
        };
        let server_hostname = match server_hostname {
            Some(h) if h.is_truthy()? && !server_side_b => Some(h.clone()),
            _ => None,
        };
        let extra = PyDict::new(py);
        extra.set_item("sslcontext", &sslcontext)?;
        let (app_is_buffer, app_get_buffer, app_buffer_updated) = app_protocol_parts(app_protocol)?;

        let incoming = c.memory_bio.bind(py).call0()?;
        let outgoing = c.memory_bio.bind(py).call0()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("server_side", server_side)?;
        kwargs.set_item("server_hostname", &server_hostname)?;
        let sslobj = sslcontext.call_method(
            intern!(py, "wrap_bio"),
            (&incoming, &outgoing),
            Some(&kwargs),
        )?;
        // The plain ssl.SSLObject: call its C object directly (same methods, same results);
        // any subclass keeps its own methods.
        let direct = sslobj.get_type().is(c.sslobject_type.bind(py));
        let target = if direct {
            sslobj.getattr(intern!(py, "_sslobj"))?
        } else {
            sslobj.clone()
        };
        let tls = Tls {
            incoming_write: incoming.getattr(intern!(py, "write"))?.unbind(),
            outgoing_read: outgoing.getattr(intern!(py, "read"))?.unbind(),
            read: target.getattr(intern!(py, "read"))?.unbind(),
            write: target.getattr(intern!(py, "write"))?.unbind(),
            do_handshake: target.getattr(intern!(py, "do_handshake"))?.unbind(),
            unwrap: if direct {
                target.getattr(intern!(py, "shutdown"))?.unbind()
            } else {
                target.getattr(intern!(py, "unwrap"))?.unbind()
            },
            pending: target.getattr(intern!(py, "pending"))?.unbind(),
            incoming: incoming.unbind(),
            outgoing: outgoing.unbind(),
            sslobj: sslobj.unbind(),
        };
        let (in_high, in_low) = limits(py, None, None, &c.high_water_read)?;
        let (out_high, out_low) = limits(py, None, None, &c.high_water_write)?;
        Ok(SSLProtocol {
            loop_: Some(r#loop.clone().unbind()),
            app_protocol: Some(app_protocol.clone().unbind()),
            app_is_buffer,
            app_get_buffer,
            app_buffer_updated,
            sslcontext: Some(sslcontext.unbind()),
            server_side: server_side_b,
            server_hostname: server_hostname.map(Bound::unbind),
            extra: Some(extra.unbind()),
            write_backlog: VecDeque::new(),
            write_buffer_size: 0,
            waiter: Some(waiter.clone().unbind()).filter(|w| !w.is_none(py)),
            app_transport: None,
            app_transport_created: false,
            transport: None,
            transport_write: None,
            ssl_handshake_timeout: handshake_timeout,
            ssl_shutdown_timeout: shutdown_timeout,
            tls: Some(tls),
            state: State::Unwrapped,
            conn_lost: 0,
            app_state: if call_connection_made {
                AppState::Init
            } else {
                AppState::ConMade
            },
            ssl_writing_paused: false,
            app_reading_paused: false,
            ssl_reading_paused: false,
            in_high,
            in_low,
            eof_received: false,
            app_writing_paused: false,
            out_high,
            out_low,
            ssl_buffer: None,
            ssl_buffer_view: None,
            handshake_start_time: None,
            handshake_timeout_handle: None,
            shutdown_timeout_handle: None,
        })
    }

    #[getter]
    fn __class__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(cached(py)?.protocol_mask.clone_ref(py))
    }

    #[getter]
    fn max_size(&self) -> usize {
        MAX_SIZE
    }

    // --- the protocol of the transport under TLS ------------------------------------------

    /// Called when the low-level connection is made: start the SSL handshake.
    fn connection_made(slf: &Bound<'_, Self>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let write = transport
            .getattr(intern!(py, "write"))
            .ok()
            .map(Bound::unbind);
        let old = {
            let mut me = slf.borrow_mut();
            (
                me.transport.replace(transport.clone().unbind()),
                std::mem::replace(&mut me.transport_write, write),
            )
        };
        drop(old);
        Self::start_handshake(slf)
    }

    /// Called when the low-level connection is lost or closed.
    fn connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (backlog, out_read) = {
            let mut me = slf.borrow_mut();
            (
                std::mem::take(&mut me.write_backlog),
                me.tls.as_ref().map(|t| t.outgoing_read.clone_ref(py)),
            )
        };
        drop(backlog);
        if let Some(r) = out_read {
            r.call0(py)?;
        }
        slf.borrow_mut().conn_lost += 1;
        // Just mark the app transport as closed so that its __del__ doesn't complain.
        Self::mark_app_transport_closed(slf);
        let lost = {
            let mut me = slf.borrow_mut();
            if me.state != State::DoHandshake
                && matches!(me.app_state, AppState::ConMade | AppState::Eof)
            {
                me.app_state = AppState::ConLost;
                Some(me.app_protocol.as_ref().map(|p| p.clone_ref(py)))
            } else {
                None
            }
        };
        if let Some(app) = lost {
            let cb = match app {
                Some(a) => a.getattr(py, intern!(py, "connection_lost"))?,
                None => return Err(none_attr("connection_lost")),
            };
            Self::loop_(slf)?.call_method1(py, intern!(py, "call_soon"), (cb, exc))?;
        }
        Self::set_state(slf, State::Unwrapped)?;
        let old = {
            let mut me = slf.borrow_mut();
            (
                me.transport.take(),
                me.transport_write.take(),
                me.app_transport.take(),
                me.app_protocol.take(),
                me.app_get_buffer.take(),
                me.app_buffer_updated.take(),
            )
        };
        drop(old);
        let exc = Some(exc).filter(|e| !e.is_none());
        Self::wakeup_waiter_(slf, exc)?;
        Self::cancel_handle(slf, true)?;
        Self::cancel_handle(slf, false)?;
        Ok(())
    }

    /// asyncio: `want = n; if want <= 0 or want > self.max_size: want = self.max_size`, then
    /// the buffer (of max_size bytes from the start, so never smaller than `want`) is
    /// returned whole. Only the comparisons of an `n` that is not an int can fail (as there).
    fn get_buffer(slf: &Bound<'_, Self>, n: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if !n.is_instance_of::<pyo3::types::PyInt>() && !n.le(0)? {
            n.gt(MAX_SIZE)?;
        }
        Ok(Self::ensure_ssl_buffer(slf, MAX_SIZE)?.1)
    }

    /// asyncio: `self._incoming.write(self._ssl_buffer_view[:nbytes])`, then the state's step.
    fn buffer_updated(slf: &Bound<'_, Self>, nbytes: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        // asyncio's buffer exists from the start; here it is made at the first get_buffer().
        Self::ensure_ssl_buffer(slf, MAX_SIZE)?;
        let (view, write, state) = {
            let me = slf.borrow();
            (
                me.ssl_buffer_view.as_ref().map(|v| v.clone_ref(py)),
                me.tls.as_ref().map(|t| t.incoming_write.clone_ref(py)),
                me.state,
            )
        };
        let (Some(view), Some(write)) = (view, write) else {
            return Err(none_attr("write"));
        };
        let part = match nbytes.extract::<isize>() {
            Ok(n) if nbytes.is_exact_instance_of::<pyo3::types::PyInt>() => {
                view.bind(py).get_item(PySlice::new(py, 0, n, 1))?
            }
            // Anything else (None, a huge int, an __index__ object, a float): Python's slicing.
            _ => {
                let sl = py
                    .import(intern!(py, "builtins"))?
                    .getattr(intern!(py, "slice"))?
                    .call1((nbytes,))?;
                view.bind(py).get_item(sl)?
            }
        };
        write.call1(py, (&part,))?;
        drop(part);
        match state {
            State::DoHandshake => Self::do_handshake_(slf),
            State::Wrapped => Self::do_read(slf),
            State::Flushing => Self::do_flush(slf),
            State::Shutdown => Self::do_shutdown_(slf),
            State::Unwrapped => Ok(()),
        }
    }

    /// Called when the other end of the low-level stream is half-closed.
    fn eof_received(slf: &Bound<'_, Self>) -> PyResult<Option<bool>> {
        let py = slf.py();
        slf.borrow_mut().eof_received = true;
        let res: PyResult<Option<bool>> = (|| {
            if Self::debug(slf)? {
                cached(py)?.log_debug.call1(py, ("%r received EOF", slf))?;
            }
            let state = slf.borrow().state;
            match state {
                State::DoHandshake => {
                    let exc = PyConnectionResetError::new_err(());
                    Self::on_handshake_complete(slf, Some(exc_value(py, exc)))?;
                }
                State::Wrapped => {
                    Self::set_state(slf, State::Flushing)?;
                    if slf.borrow().app_reading_paused {
                        return Ok(Some(true));
                    }
                    Self::do_flush(slf)?;
                }
                State::Flushing => {
                    Self::do_write(slf)?;
                    Self::set_state(slf, State::Shutdown)?;
                    Self::do_shutdown_(slf)?;
                }
                State::Shutdown => Self::do_shutdown_(slf)?,
                State::Unwrapped => {}
            }
            Ok(None)
        })();
        match res {
            Err(e) if e.is_instance_of::<PyException>(py) => {
                let tr = slf.borrow().transport.as_ref().map(|t| t.clone_ref(py));
                match tr {
                    Some(t) => {
                        t.call_method0(py, intern!(py, "close"))?;
                    }
                    None => return Err(none_attr("close")),
                }
                Err(e)
            }
            r => r,
        }
    }

    /// Called when the low-level transport's buffer goes over the high-water mark.
    fn pause_writing(&mut self) -> PyResult<()> {
        if self.ssl_writing_paused {
            return Err(PyAssertionError::new_err(()));
        }
        self.ssl_writing_paused = true;
        Ok(())
    }

    /// Called when the low-level transport's buffer drains below the low-water mark.
    fn resume_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut me = slf.borrow_mut();
            if !me.ssl_writing_paused {
                return Err(PyAssertionError::new_err(()));
            }
            me.ssl_writing_paused = false;
        }
        Self::process_outgoing(slf)
    }

    // --- asyncio's private API (used by the app transport, asyncio's code and tests) ------

    fn _check_handshake_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if slf.borrow().state != State::DoHandshake {
            return Ok(());
        }
        let timeout = slf.borrow().ssl_handshake_timeout.clone_ref(py);
        let msg = format!(
            "SSL handshake is taking longer than {} seconds: aborting the connection",
            timeout.bind(py).str()?
        );
        let exc = exc_value(py, PyConnectionAbortedError::new_err(msg));
        Self::fatal_error_(slf, &exc, "Fatal error on transport")
    }

    fn _check_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !matches!(slf.borrow().state, State::Flushing | State::Shutdown) {
            return Ok(());
        }
        let exc = cached(py)?
            .timeout_error
            .call1(py, ("SSL shutdown timed out",))?;
        let tr = slf.borrow().transport.as_ref().map(|t| t.clone_ref(py));
        match tr {
            Some(t) => t.call_method1(py, intern!(py, "_force_close"), (exc,))?,
            None => return Err(none_attr("_force_close")),
        };
        Ok(())
    }

    fn _do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf)
    }

    /// The callback `_resume_reading()` schedules.
    fn _resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        let state = slf.borrow().state;
        match state {
            State::Wrapped => Self::do_read(slf),
            State::Flushing => Self::do_flush(slf),
            State::Shutdown => Self::do_shutdown_(slf),
            _ => Ok(()),
        }
    }

    fn _pause_reading(&mut self) {
        self.app_reading_paused = true;
    }

    fn _resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::resume_reading_(slf)
    }

    fn _start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::start_shutdown(slf)
    }

    #[pyo3(signature = (exc=None))]
    fn _abort(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Self::abort_(slf, exc)
    }

    #[pyo3(signature = (exc, message="Fatal error on transport"))]
    fn _fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        Self::fatal_error_(slf, exc, message)
    }

    fn _write_appdata(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = items_of(list_of_data)?;
        Self::write_appdata(slf, &items)
    }

    fn _set_app_protocol(slf: &Bound<'_, Self>, app_protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::set_app_protocol_(slf, app_protocol)
    }

    fn _get_app_transport(slf: &Bound<'_, Self>) -> PyResult<Py<SSLProtocolTransport>> {
        Self::get_app_transport_(slf)
    }

    #[pyo3(signature = (exc=None))]
    fn _wakeup_waiter(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Self::wakeup_waiter_(slf, exc.filter(|e| !e.is_none()))
    }

    #[pyo3(signature = (name, default=None))]
    fn _get_extra_info(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        Self::get_extra_info_(slf, name, default)
    }

    fn _get_write_buffer_size(slf: &Bound<'_, Self>) -> PyResult<isize> {
        Self::get_write_buffer_size_(slf)
    }

    fn _get_read_buffer_size(slf: &Bound<'_, Self>) -> PyResult<isize> {
        Self::get_read_buffer_size_(slf)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn _set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Self::set_write_buffer_limits_(slf, high, low)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn _set_read_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Self::set_read_buffer_limits_(slf, high, low)
    }

    fn _control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::control_app_writing(slf)
    }

    fn _control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::control_ssl_reading(slf)
    }

    /// Made on first use (asyncio makes it in `__init__`; nothing can tell the difference),
    /// and None again after connection_lost().
    #[getter]
    fn _app_transport(slf: &Bound<'_, Self>) -> PyResult<Option<Py<SSLProtocolTransport>>> {
        let (have, created) = {
            let me = slf.borrow();
            (me.app_transport.is_some(), me.app_transport_created)
        };
        if !have && created {
            return Ok(None);
        }
        Self::get_app_transport_(slf).map(Some)
    }
    #[getter]
    fn _app_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.app_protocol.as_ref().map(|t| t.clone_ref(py))
    }
    #[getter]
    fn _app_protocol_is_buffer(&self) -> bool {
        self.app_is_buffer
    }
    #[getter]
    fn _transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.transport.as_ref().map(|t| t.clone_ref(py))
    }
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.loop_.as_ref().map(|t| t.clone_ref(py))
    }
    #[getter]
    fn _sslcontext(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.sslcontext.as_ref().map(|t| t.clone_ref(py))
    }
    #[getter]
    fn _sslobj(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.tls.as_ref().map(|t| t.sslobj.clone_ref(py))
    }
    #[getter]
    fn _incoming(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.tls.as_ref().map(|t| t.incoming.clone_ref(py))
    }
    #[getter]
    fn _outgoing(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.tls.as_ref().map(|t| t.outgoing.clone_ref(py))
    }
    #[getter]
    fn _extra(&self, py: Python<'_>) -> Option<Py<PyDict>> {
        self.extra.as_ref().map(|t| t.clone_ref(py))
    }
    #[getter]
    fn _server_side(&self) -> bool {
        self.server_side
    }
    #[getter]
    fn _server_hostname(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.server_hostname.as_ref().map(|t| t.clone_ref(py))
    }
    #[getter]
    fn _waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.waiter.as_ref().map(|t| t.clone_ref(py))
    }
    /// The state's name ("UNWRAPPED", "DO_HANDSHAKE", "WRAPPED", "FLUSHING", "SHUTDOWN").
    #[getter]
    fn _state_name(&self) -> &'static str {
        let n = self.state.name();
        &n["SSLProtocolState.".len()..]
    }
    #[getter]
    fn _conn_lost(&self) -> usize {
        self.conn_lost
    }
    #[getter]
    fn _eof_received(&self) -> bool {
        self.eof_received
    }
    #[getter]
    fn _write_buffer_size(&self) -> isize {
        self.write_buffer_size
    }
    #[getter]
    fn _ssl_writing_paused(&self) -> bool {
        self.ssl_writing_paused
    }
    #[getter]
    fn _ssl_reading_paused(&self) -> bool {
        self.ssl_reading_paused
    }
    #[getter]
    fn _app_reading_paused(&self) -> bool {
        self.app_reading_paused
    }
    #[getter]
    fn _app_writing_paused(&self) -> bool {
        self.app_writing_paused
    }
    #[getter]
    fn _ssl_handshake_timeout(&self, py: Python<'_>) -> Py<PyAny> {
        self.ssl_handshake_timeout.clone_ref(py)
    }
    #[getter]
    fn _ssl_shutdown_timeout(&self, py: Python<'_>) -> Py<PyAny> {
        self.ssl_shutdown_timeout.clone_ref(py)
    }
    #[getter]
    fn _outgoing_high_water(&self, py: Python<'_>) -> Py<PyAny> {
        self.out_high.obj(py)
    }
    #[getter]
    fn _outgoing_low_water(&self, py: Python<'_>) -> Py<PyAny> {
        self.out_low.obj(py)
    }
    #[getter]
    fn _incoming_high_water(&self, py: Python<'_>) -> Py<PyAny> {
        self.in_high.obj(py)
    }
    #[getter]
    fn _incoming_low_water(&self, py: Python<'_>) -> Py<PyAny> {
        self.in_low.obj(py)
    }
    #[getter]
    fn _handshake_timeout_handle(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.handshake_timeout_handle
            .as_ref()
            .map(|t| t.clone_ref(py))
    }
    #[getter]
    fn _shutdown_timeout_handle(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.shutdown_timeout_handle
            .as_ref()
            .map(|t| t.clone_ref(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for x in [
            &self.loop_,
            &self.app_protocol,
            &self.app_get_buffer,
            &self.app_buffer_updated,
            &self.sslcontext,
            &self.server_hostname,
            &self.waiter,
            &self.transport,
            &self.transport_write,
            &self.ssl_buffer_view,
            &self.handshake_timeout_handle,
            &self.shutdown_timeout_handle,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(x)?;
        }
        visit.call(&self.ssl_handshake_timeout)?;
        visit.call(&self.ssl_shutdown_timeout)?;
        for m in [&self.in_high, &self.in_low, &self.out_high, &self.out_low] {
            m.traverse(&visit)?;
        }
        if let Some(e) = &self.extra {
            visit.call(e)?;
        }
        if let Some(t) = &self.app_transport {
            visit.call(t)?;
        }
        if let Some(b) = &self.ssl_buffer {
            visit.call(b)?;
        }
        for d in &self.write_backlog {
            visit.call(d)?;
        }
        if let Some(t) = &self.tls {
            for x in [
                &t.incoming,
                &t.outgoing,
                &t.sslobj,
                &t.incoming_write,
                &t.outgoing_read,
                &t.read,
                &t.write,
                &t.do_handshake,
                &t.unwrap,
                &t.pending,
            ] {
                visit.call(x)?;
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.loop_ = None;
        self.app_protocol = None;
        self.app_get_buffer = None;
        self.app_buffer_updated = None;
        self.sslcontext = None;
        self.server_hostname = None;
        self.waiter = None;
        self.transport = None;
        self.transport_write = None;
        self.extra = None;
        self.app_transport = None;
        self.write_backlog.clear();
        self.tls = None;
        self.handshake_timeout_handle = None;
        self.shutdown_timeout_handle = None;
    }
}

/// asyncio's `sslproto._SSLProtocolTransport`: the transport the application protocol gets.
#[pyclass(
    module = "oxloop._oxloop",
    name = "_SSLProtocolTransport",
    dict,
    weakref
)]
pub struct SSLProtocolTransport {
    loop_: Option<Py<PyAny>>,
    ssl_protocol: Option<Py<SSLProtocol>>,
    closed: bool,
}

impl SSLProtocolTransport {
    fn proto<'py>(slf: &Bound<'py, Self>, attr: &str) -> PyResult<Bound<'py, SSLProtocol>> {
        let py = slf.py();
        slf.borrow()
            .ssl_protocol
            .as_ref()
            .map(|p| p.bind(py).clone())
            .ok_or_else(|| none_attr(attr))
    }
}

#[pymethods]
impl SSLProtocolTransport {
    #[getter]
    fn __class__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(cached(py)?.transport_mask.clone_ref(py))
    }

    #[getter]
    fn _start_tls_compatible(&self) -> bool {
        true
    }
    #[getter]
    fn _sendfile_compatible(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(cached(py)?.sendfile_fallback.clone_ref(py))
    }
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.loop_.as_ref().map(|l| l.clone_ref(py))
    }
    #[getter]
    fn _ssl_protocol(&self, py: Python<'_>) -> Option<Py<SSLProtocol>> {
        self.ssl_protocol.as_ref().map(|l| l.clone_ref(py))
    }
    #[getter]
    fn _closed(&self) -> bool {
        self.closed
    }
    #[setter(_closed)]
    fn set_closed(&mut self, v: bool) {
        self.closed = v;
    }

    /// Get optional transport information.
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let p = Self::proto(slf, "_get_extra_info")?;
        SSLProtocol::get_extra_info_(&p, name, default)
    }

    fn set_protocol(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let p = Self::proto(slf, "_set_app_protocol")?;
        SSLProtocol::set_app_protocol_(&p, protocol)
    }

    fn get_protocol(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let p = Self::proto(slf, "_app_protocol")?;
        let app = p.borrow().app_protocol.as_ref().map(|a| a.clone_ref(py));
        Ok(app.unwrap_or_else(|| py.None()))
    }

    fn is_closing(&self) -> bool {
        self.closed
    }

    /// Close the transport: buffered data is flushed, then close_notify is exchanged, then
    /// the protocol's connection_lost() is called with None.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let p = {
            let mut me = slf.borrow_mut();
            if !me.closed {
                me.closed = true;
                me.ssl_protocol.as_ref().map(|p| p.clone_ref(slf.py()))
            } else {
                let old = me.ssl_protocol.take();
                drop(me);
                drop(old);
                return Ok(());
            }
        };
        match p {
            Some(p) => SSLProtocol::start_shutdown(p.bind(slf.py())),
            None => Err(none_attr("_start_shutdown")),
        }
    }

    fn is_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let p = Self::proto(slf, "_app_reading_paused")?;
        let paused = p.borrow().app_reading_paused;
        Ok(!paused)
    }

    /// Pause the receiving end: no data is passed to data_received() until resume_reading().
    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let p = Self::proto(slf, "_pause_reading")?;
        p.borrow_mut().app_reading_paused = true;
        Ok(())
    }

    /// Resume the receiving end.
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let p = Self::proto(slf, "_resume_reading")?;
        SSLProtocol::resume_reading_(&p)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let p = Self::proto(slf, "_set_write_buffer_limits")?;
        SSLProtocol::set_write_buffer_limits_(&p, high, low)?;
        SSLProtocol::control_app_writing(&p)
    }

    fn get_write_buffer_limits(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let py = slf.py();
        let p = Self::proto(slf, "_outgoing_low_water")?;
        let me = p.borrow();
        Ok((me.out_low.obj(py), me.out_high.obj(py)))
    }

    /// The size of the write buffers: the data not yet encrypted plus the encrypted data not
    /// yet handed to the transport.
    fn get_write_buffer_size(slf: &Bound<'_, Self>) -> PyResult<isize> {
        let p = Self::proto(slf, "_get_write_buffer_size")?;
        SSLProtocol::get_write_buffer_size_(&p)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_read_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let p = Self::proto(slf, "_set_read_buffer_limits")?;
        SSLProtocol::set_read_buffer_limits_(&p, high, low)?;
        SSLProtocol::control_ssl_reading(&p)
    }

    fn get_read_buffer_limits(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let py = slf.py();
        let p = Self::proto(slf, "_incoming_low_water")?;
        let me = p.borrow();
        Ok((me.in_low.obj(py), me.in_high.obj(py)))
    }

    fn get_read_buffer_size(slf: &Bound<'_, Self>) -> PyResult<isize> {
        let p = Self::proto(slf, "_get_read_buffer_size")?;
        SSLProtocol::get_read_buffer_size_(&p)
    }

    /// Required for the sendfile fallback's pause_writing/resume_writing logic.
    #[getter]
    fn _protocol_paused(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let p = Self::proto(slf, "_app_writing_paused")?;
        let paused = p.borrow().app_writing_paused;
        Ok(paused)
    }

    /// Write some data bytes to the transport (encrypted at once once the handshake is done).
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        if !data.is_truthy()? {
            return Ok(());
        }
        let p = Self::proto(slf, "_write_appdata")?;
        let _ = py;
        SSLProtocol::write_appdata(&p, std::slice::from_ref(data))
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let p = Self::proto(slf, "_write_appdata")?;
        let items = items_of(list_of_data)?;
        SSLProtocol::write_appdata(&p, &items)
    }

    /// Not supported over TLS (as asyncio).
    fn write_eof(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyNotImplementedError::new_err(()))
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    /// Close the transport immediately: buffered data is lost, connection_lost(None) follows.
    /// (3.13: `self._force_close(None)`; 3.11/3.12 the same steps, spelled out.)
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        let p = Self::mark_closed(slf);
        if let Some(p) = p {
            SSLProtocol::abort_(p.bind(slf.py()), None)?;
        }
        Ok(())
    }

    /// 3.13: `_closed = True`, then `_ssl_protocol._abort(exc)` unless the protocol is gone.
    /// 3.11/3.12: `self._ssl_protocol._abort(exc)` with no such check, on an `_abort()` that
    /// takes no argument: always an error there (AttributeError or TypeError), as asyncio's.
    fn _force_close(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let p = Self::mark_closed(slf);
        if !cached(py)?.abort_takes_exc {
            return Err(match p {
                None => none_attr("_abort"),
                Some(_) => PyTypeError::new_err(
                    "SSLProtocol._abort() takes 1 positional argument but 2 were given",
                ),
            });
        }
        if let Some(p) = p {
            SSLProtocol::abort_(p.bind(py), Some(exc).filter(|e| !e.is_none()))?;
        }
        Ok(())
    }

    #[pyo3(name = "_test__append_write_backlog")]
    fn test_append_write_backlog(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let p = Self::proto(slf, "_write_backlog")?;
        let n = data.len()? as isize;
        let mut me = p.borrow_mut();
        me.write_backlog.push_back(data.clone().unbind());
        me.write_buffer_size += n;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(l) = &self.loop_ {
            visit.call(l)?;
        }
        if let Some(p) = &self.ssl_protocol {
            visit.call(p)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.loop_ = None;
        self.ssl_protocol = None;
    }
}

impl SSLProtocolTransport {
    /// `_closed = True`; the SSL protocol, if still attached.
    fn mark_closed(slf: &Bound<'_, Self>) -> Option<Py<SSLProtocol>> {
        let mut me = slf.borrow_mut();
        me.closed = true;
        me.ssl_protocol.as_ref().map(|p| p.clone_ref(slf.py()))
    }
}

impl crate::common::Finalize for SSLProtocolTransport {
    /// asyncio's `__del__`: an unclosed transport is marked closed and warns.
    fn finalize(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut me = slf.try_borrow_mut()?;
            if me.closed {
                return Ok(());
            }
            me.closed = true;
        }
        cached(py)?.unclosed_warning.call0(py).map(drop)
    }
}

impl Drop for SSLProtocolTransport {
    /// asyncio's `__del__`: an unclosed transport warns (ResourceWarning).
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        Python::attach(|py| {
            // Do not disturb an exception being propagated while this object is freed.
            let pending = PyErr::take(py);
            let res = cached(py).and_then(|c| c.unclosed_warning.call0(py).map(drop));
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
impl SSLProtocol {
    #[getter]
    fn _app_transport_created(&self) -> bool {
        self.app_transport_created
    }
}

/// asyncio's `_SSLProtocolTransport` is a `_FlowControlMixin` whose `__init__` never runs:
/// these are the mixin's own methods (on its `_high_water`/`_low_water`, unset until
/// `_set_write_buffer_limits()` sets them), as asyncio's app transport has them.
#[pymethods]
impl SSLProtocolTransport {
    #[pyo3(signature = (high=None, low=None))]
    fn _set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let none = py.None().into_bound(py);
        let (h, l) = (high.unwrap_or(&none), low.unwrap_or(&none));
        crate::common::call_base_method(slf.as_any(), "_set_write_buffer_limits", &[h, l])
    }

    fn _maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        crate::common::call_base_method(slf.as_any(), "_maybe_pause_protocol", &[])
    }

    fn _maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        crate::common::call_base_method(slf.as_any(), "_maybe_resume_protocol", &[])
    }
}
