//! fd watching (asyncio's `selector_events.py`: `_add_reader`, `_remove_reader`,
//! `_add_writer`, `_remove_writer`, `_process_events`) on a native selector.
//!
//! With a Python `selectors` object the loop delegates these to asyncio's own
//! `BaseSelectorEventLoop` methods, which keep `(reader, writer)` in each key's data exactly as
//! asyncio does; only the native selectors keep their watchers in `LoopCore::io`.

use std::os::fd::RawFd;
use std::sync::Arc;

use oxloop_core::selector::{new_selector, Event, Interest, Selector, SelectorKind};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::base_events::{closed_error, LoopCore, Poller};
use crate::errors::to_pyerr;
use crate::handles::Handle;
use crate::helpers;

/// Token of the loop's own waker; every other token is the watched fd itself.
pub(crate) const WAKER_TOKEN: u64 = u64::MAX;

/// `(events, fileobj, reader, writer)`, the parts of a `selectors.SelectorKey`.
pub(crate) type KeyTuple = (u8, Py<PyAny>, Py<PyAny>, Py<PyAny>);

/// One natively watched fd: the object it was registered with, its callbacks, its interest.
pub(crate) struct IoEntry {
    pub fileobj: Py<PyAny>,
    pub reader: Option<Py<Handle>>,
    pub writer: Option<Py<Handle>>,
    pub interest: Interest,
    /// Registered one-shot (a native sock_* operation alone on the fd): the kernel disarms
    /// it after one event (`armed` false), and stopping to watch it then needs no syscall.
    pub oneshot: bool,
    pub armed: bool,
}

impl IoEntry {
    /// `(events, fileobj, reader, writer)` as a `selectors.SelectorKey` would carry them.
    pub fn key(&self, py: Python<'_>) -> KeyTuple {
        let opt = |h: &Option<Py<Handle>>| match h {
            Some(h) => h.clone_ref(py).into_any(),
            None => py.None(),
        };
        (
            self.interest.bits(),
            self.fileobj.clone_ref(py),
            opt(&self.reader),
            opt(&self.writer),
        )
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.fileobj)?;
        if let Some(h) = &self.reader {
            visit.call(h)?;
        }
        if let Some(h) = &self.writer {
            visit.call(h)?;
        }
        Ok(())
    }
}

/// Builds the loop's poller from the `selector` argument of `SelectorEventLoop`.
pub(crate) fn make_poller(selector: Option<&Bound<'_, PyAny>>) -> PyResult<Poller> {
    let kind = match selector {
        None => SelectorKind::default_for_platform(),
        Some(s) if s.is_none() => SelectorKind::default_for_platform(),
        Some(s) if s.is_instance_of::<PyString>() => {
            let name: String = s.extract()?;
            SelectorKind::from_name(&name).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "unknown selector {name:?}: expected 'epoll', 'poll', 'select' or 'kqueue'"
                ))
            })?
        }
        Some(s) => {
            for attr in [
                "register",
                "unregister",
                "modify",
                "select",
                "get_map",
                "close",
            ] {
                if !s.hasattr(attr)? {
                    return Err(PyTypeError::new_err(format!(
                        "selector must be None, a selector name or a selectors.BaseSelector, \
                         got {} (no {attr}())",
                        s.repr()?
                    )));
                }
            }
            return Ok(Poller::Python(s.clone().unbind()));
        }
    };
    let sel: Arc<dyn Selector> = Arc::from(new_selector(kind).map_err(to_pyerr)?);
    Ok(Poller::Native(sel))
}

/// The names of the native selectors and whether this build has them.
#[pyfunction]
pub(crate) fn selector_kinds() -> Vec<(&'static str, bool)> {
    [
        SelectorKind::Epoll,
        SelectorKind::Poll,
        SelectorKind::Select,
        SelectorKind::Kqueue,
    ]
    .iter()
    .map(|k| (k.name(), k.is_available()))
    .collect()
}

/// A watched fd number as `selectors._fileobj_to_fd` gives it: any non-negative Python int.
/// Numbers beyond a C int can name no open file.
#[derive(Clone, Copy)]
enum FdNum {
    Fd(RawFd),
    TooLarge,
}

/// `selectors._fileobj_lookup`: `_fileobj_to_fd`, plus its fallback: an object that no longer
/// has a valid fileno() (a closed socket) is found among the registered ones.
fn fileobj_lookup(core: &LoopCore, fileobj: &Bound<'_, PyAny>) -> PyResult<FdNum> {
    match fileobj_to_fd(fileobj) {
        Ok(fd) => Ok(fd),
        Err(e) if e.is_instance_of::<PyValueError>(fileobj.py()) => {
            for (fd, entry) in core.io.iter() {
                if entry.fileobj.bind(fileobj.py()).is(fileobj) {
                    return Ok(FdNum::Fd(*fd));
                }
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// `selectors._fileobj_to_fd`: an int as it is, anything else `int(fileobj.fileno())`
/// (so a fileno() returning "5" or 5.0 is accepted); a negative number is refused.
fn fileobj_to_fd(fileobj: &Bound<'_, PyAny>) -> PyResult<FdNum> {
    let py = fileobj.py();
    let num = if fileobj.is_instance_of::<PyInt>() {
        fileobj.clone()
    } else {
        let invalid = || PyValueError::new_err(format!("Invalid file object: {}", repr(fileobj)));
        let int = py.get_type::<PyInt>();
        match fileobj.call_method0("fileno").and_then(|n| int.call1((n,))) {
            Ok(n) => n,
            Err(e) => {
                if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                    || e.is_instance_of::<PyTypeError>(py)
                    || e.is_instance_of::<PyValueError>(py)
                {
                    return Err(invalid());
                }
                return Err(e);
            }
        }
    };
    let negative = || {
        PyValueError::new_err(format!(
            "Invalid file descriptor: {}",
            num.str().map(|s| s.to_string()).unwrap_or_default()
        ))
    };
    match num.extract::<i64>() {
        Ok(fd) if fd < 0 => Err(negative()),
        Ok(fd) => Ok(RawFd::try_from(fd).map_or(FdNum::TooLarge, FdNum::Fd)),
        Err(_) if num.lt(0)? => Err(negative()),
        Err(_) => Ok(FdNum::TooLarge),
    }
}

/// The error registering an fd beyond a C int gives: `select.epoll`/`select.poll`'s
/// OverflowError; for select, the message of an fd beyond FD_SETSIZE (asyncio's
/// SelectSelector accepts it and fails in `select()` later, on every loop iteration).
fn too_large_error(sel: &dyn Selector) -> PyErr {
    if sel.max_fd().is_some() {
        PyValueError::new_err("filedescriptor out of range in select()")
    } else {
        pyo3::exceptions::PyOverflowError::new_err("Python int too large to convert to C int")
    }
}

/// asyncio's SelectSelector changes a registration as unregister + register(fileobj): when
/// `fileobj` no longer gives a valid fd (a closed socket) the register fails with its
/// ValueError and the registration is gone. The other selectors modify in place.
fn select_modify_check(sel: &dyn Selector, fileobj: &Bound<'_, PyAny>) -> PyResult<()> {
    if sel.kind() == SelectorKind::Select {
        fileobj_to_fd(fileobj)?;
    }
    Ok(())
}

fn repr(o: &Bound<'_, PyAny>) -> String {
    o.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<object>".into())
}

fn native(core: &LoopCore) -> Option<Arc<dyn Selector>> {
    match &core.poller {
        Some(Poller::Native(s)) => Some(Arc::clone(s)),
        _ => None,
    }
}

/// `_add_reader` (read=true) / `_add_writer` (read=false). Returns the new handle.
pub(crate) fn add_watcher(
    slf: &Bound<'_, LoopCore>,
    fileobj: &Bound<'_, PyAny>,
    callback: Py<PyAny>,
    args: Py<PyTuple>,
    read: bool,
) -> PyResult<Py<PyAny>> {
    add_watcher_with(slf, fileobj, callback, args, read, false)
}

/// `add_watcher` for a native sock_* operation: when nothing else watches the fd, the
/// registration is one-shot where the selector has that mode (epoll). The watcher must
/// call [`rearm_oneshot`] if it keeps waiting after its event.
pub(crate) fn add_oneshot_watcher(
    slf: &Bound<'_, LoopCore>,
    fileobj: &Bound<'_, PyAny>,
    callback: Py<PyAny>,
    read: bool,
) -> PyResult<Py<PyAny>> {
    let args = PyTuple::empty(slf.py()).unbind();
    add_watcher_with(slf, fileobj, callback, args, read, true)
}

/// Re-arms the disarmed one-shot registration of `fd` (its watcher is still waiting).
pub(crate) fn rearm_oneshot(slf: &Bound<'_, LoopCore>, fd: RawFd) -> PyResult<()> {
    let mut me = slf.borrow_mut();
    let Some(sel) = native(&me) else {
        return Ok(());
    };
    let Some(entry) = me.io.get_mut(&fd) else {
        return Ok(());
    };
    if entry.oneshot && !entry.armed {
        sel.arm_oneshot(fd, fd as u64, entry.interest)
            .map_err(to_pyerr)?;
        entry.armed = true;
    }
    Ok(())
}

fn add_watcher_with(
    slf: &Bound<'_, LoopCore>,
    fileobj: &Bound<'_, PyAny>,
    callback: Py<PyAny>,
    args: Py<PyTuple>,
    read: bool,
    oneshot: bool,
) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let (closed, sel, debug) = {
        let me = slf.borrow();
        (me.closed, native(&me), me.debug)
    };
    if closed {
        return Err(closed_error());
    }
    let Some(sel) = sel else {
        // A Python selector object: asyncio's own implementation, unchanged.
        let name = if read { "_add_reader" } else { "_add_writer" };
        let mut call_args = vec![
            slf.clone().into_any(),
            fileobj.clone(),
            callback.into_bound(py),
        ];
        call_args.extend(args.bind(py).iter());
        let base = helpers::get(py)?.base_selector_loop.bind(py);
        return Ok(base
            .getattr(name)?
            .call1(PyTuple::new(py, call_args)?)?
            .unbind());
    };
    let fd = match fileobj_lookup(&slf.borrow(), fileobj)? {
        FdNum::Fd(fd) => fd,
        FdNum::TooLarge => return Err(too_large_error(&*sel)),
    };
    let handle = LoopCore::new_handle(slf, callback, args, None, None, debug)?;
    let flag = if read {
        Interest::READABLE
    } else {
        Interest::WRITABLE
    };
    let old = {
        let mut me = slf.borrow_mut();
        match me.io.get_mut(&fd) {
            Some(entry) => {
                let interest = entry.interest.add(flag);
                let changed = interest != entry.interest;
                // A one-shot registration becomes a normal one (re-armed) as soon as
                // anything else watches the fd.
                if changed || entry.oneshot {
                    let res = if changed {
                        select_modify_check(&*sel, fileobj)
                    } else {
                        Ok(())
                    };
                    let res = res.and_then(|()| match sel.reregister(fd, fd as u64, interest) {
                        // Only the one-shot mode changes, a change asyncio makes without a
                        // syscall: a closed fd (its registration gone with it) is kept as
                        // asyncio keeps its stale key.
                        Err(e) if !changed && e.raw_os_error() == Some(libc::EBADF) => Ok(()),
                        r => r.map_err(to_pyerr),
                    });
                    if let Err(e) = res {
                        // As asyncio's selectors: a failed modify drops the registration.
                        let _ = sel.deregister(fd);
                        let gone = me.io.remove(&fd);
                        drop(me);
                        drop(gone);
                        return Err(e);
                    }
                    entry.interest = interest;
                    entry.oneshot = false;
                    entry.armed = true;
                }
                let slot = if read {
                    &mut entry.reader
                } else {
                    &mut entry.writer
                };
                slot.replace(handle.clone_ref(py))
            }
            None => {
                let oneshot = oneshot && sel.arm_oneshot(fd, fd as u64, flag).map_err(to_pyerr)?;
                if !oneshot {
                    sel.register(fd, fd as u64, flag).map_err(to_pyerr)?;
                }
                let h = Some(handle.clone_ref(py));
                let (reader, writer) = if read { (h, None) } else { (None, h) };
                me.io.insert(
                    fd,
                    IoEntry {
                        fileobj: fileobj.clone().unbind(),
                        reader,
                        writer,
                        interest: flag,
                        oneshot,
                        armed: true,
                    },
                );
                None
            }
        }
    };
    if let Some(old) = old {
        Handle::cancel(old.bind(py))?;
    }
    Ok(handle.into_any())
}

/// `_remove_reader` / `_remove_writer`: True if a callback was removed.
pub(crate) fn remove_watcher(
    slf: &Bound<'_, LoopCore>,
    fileobj: &Bound<'_, PyAny>,
    read: bool,
) -> PyResult<bool> {
    let py = slf.py();
    let (closed, sel) = {
        let me = slf.borrow();
        (me.closed, native(&me))
    };
    if closed {
        return Ok(false);
    }
    let Some(_) = sel else {
        let name = if read {
            "_remove_reader"
        } else {
            "_remove_writer"
        };
        let base = helpers::get(py)?.base_selector_loop.bind(py);
        return base.getattr(name)?.call1((slf, fileobj))?.is_truthy();
    };
    let fd = match fileobj_lookup(&slf.borrow(), fileobj)? {
        FdNum::Fd(fd) => fd,
        // Never registered: asyncio's get_key() raises KeyError, remove_*() returns False.
        FdNum::TooLarge => return Ok(false),
    };
    remove_fd(slf, fd, read, Some(fileobj))
}

/// Stops watching `fd` for reading or writing. `fileobj` is what the caller named the fd
/// with (the registered object when None).
fn remove_fd(
    slf: &Bound<'_, LoopCore>,
    fd: RawFd,
    read: bool,
    fileobj: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let py = slf.py();
    let (handle, gone) = {
        let mut me = slf.borrow_mut();
        let Some(sel) = native(&me) else {
            return Ok(false);
        };
        let Some(entry) = me.io.get_mut(&fd) else {
            return Ok(false);
        };
        let flag = if read {
            Interest::READABLE
        } else {
            Interest::WRITABLE
        };
        let interest = entry.interest.remove(flag);
        let handle = if read {
            entry.reader.take()
        } else {
            entry.writer.take()
        };
        if interest.is_empty() {
            if entry.oneshot && !entry.armed {
                // Fired and disarmed: left in the kernel until the fd is registered again.
                let _ = sel.release_oneshot(fd);
            } else {
                // Like asyncio's EpollSelector.unregister: a closed fd is already gone, fine.
                let _ = sel.deregister(fd);
            }
            (handle, me.io.remove(&fd))
        } else {
            if interest != entry.interest {
                entry.interest = interest;
                let named = match fileobj {
                    Some(f) => f.clone(),
                    None => entry.fileobj.bind(py).clone(),
                };
                let res = select_modify_check(&*sel, &named)
                    .and_then(|()| sel.reregister(fd, fd as u64, interest).map_err(to_pyerr));
                if let Err(e) = res {
                    // As asyncio's selectors: a failed modify drops the registration.
                    let _ = sel.deregister(fd);
                    let gone = me.io.remove(&fd);
                    drop(me);
                    drop((handle, gone));
                    return Err(e);
                }
            }
            (handle, None)
        }
    };
    drop(gone);
    match handle {
        Some(h) => {
            Handle::cancel(h.bind(py))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Queues the callbacks of the fds that are ready (asyncio's `_process_events`).
pub(crate) fn process_native_events(
    slf: &Bound<'_, LoopCore>,
    events: &mut [Event],
) -> PyResult<()> {
    let py = slf.py();
    let mut stale: Vec<(RawFd, bool)> = Vec::new();
    {
        let mut me = slf.borrow_mut();
        let mut ready: Vec<Py<PyAny>> = Vec::with_capacity(events.len());
        for ev in events.iter() {
            if ev.token == WAKER_TOKEN {
                if let Some(w) = &me.waker {
                    let _ = w.drain();
                }
                continue;
            }
            let fd = ev.token as RawFd;
            let Some(entry) = me.io.get_mut(&fd) else {
                continue;
            };
            if entry.oneshot {
                entry.armed = false;
            }
            let entry = &*entry;
            for (is_ready, slot, read) in [
                (ev.readable, &entry.reader, true),
                (ev.writable, &entry.writer, false),
            ] {
                if !is_ready {
                    continue;
                }
                if let Some(h) = slot {
                    if h.borrow(py).cancelled {
                        stale.push((fd, read));
                    } else {
                        ready.push(h.clone_ref(py).into_any());
                    }
                }
            }
        }
        me.ready.extend(ready);
    }
    for (fd, read) in stale {
        remove_fd(slf, fd, read, None)?;
    }
    Ok(())
}

/// The name of the platform's default native selector.
#[pyfunction]
pub(crate) fn default_selector() -> &'static str {
    SelectorKind::default_for_platform().name()
}

/// The resolution of the loop's clock, in seconds.
#[pyfunction]
pub(crate) fn clock_resolution() -> f64 {
    oxloop_core::clock::resolution()
}
