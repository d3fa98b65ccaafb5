"""``oxloop.platform_support()``: what each oxloop loop can do on the running platform, and why not.

Built from the loop classes themselves (every public method of ``asyncio.AbstractEventLoop``
on this Python, and where the loop's MRO finds it), the native selectors compiled into this
build, and the limitations listed on Python's "asyncio — Platform Support" page.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import types
from typing import Any, Dict, List, Optional, Tuple

from . import _oxloop
from ._compat import NATIVE_TLS_SUPPORTED
from ._process import pidfd_supported

_UNIX = sys.platform != "win32"


def _entry(available: bool, reason: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    d: Dict[str, Any] = {"available": available, "reason": None if available else reason}
    d.update(extra)
    return d


def _api_names() -> List[str]:
    return sorted(
        n for n in dir(asyncio.AbstractEventLoop)
        if not n.startswith("_") and callable(getattr(asyncio.AbstractEventLoop, n))
    )


_SUBPROCESS_NOTE = (
    "asyncio's subprocess transport over the native pipe transports; exit tracked by the loop itself (pidfd in the selector, "
    "or a waitpid thread): no child watcher, no SIGCHLD handler, from a loop in any thread"
)


_PIPE_TRANSPORT_NOTE = (
    "the transport is native (oxloop._oxloop.ReadPipeTransport / WritePipeTransport) on a "
    "native selector, asyncio's with a Python selectors object or OXLOOP_NATIVE_TRANSPORTS=0"
)


def _subprocess_exit_tracking() -> Dict[str, Any]:
    pidfd = _UNIX and pidfd_supported()
    return {
        "mechanism": "pidfd" if pidfd else ("thread" if _UNIX else None),
        "pidfd": _entry(
            pidfd,
            "os.pidfd_open is missing or refused here (Linux < 5.3, seccomp, or not Linux): "
            "each child is waited for by a daemon thread instead",
        ),
        "child_watcher": False,
        "sigchld_handler": False,
        "any_thread": True,
        "zombies_after_close": False,
        "note": "pidfd_open(pid) is watched with the loop's reader; when readable, "
        "waitpid(WNOHANG) collects the status (asyncio's returncode rules; 255 and a warning "
        "when someone else reaped it). Children still running when the loop closes are "
        "handed to a reaper thread. A child watcher set explicitly on the policy "
        "(other than asyncio's default Threaded/Pidfd ones) is honoured as asyncio does.",
    }


# --- where a loop method's code is: derived from the class, never listed by hand ----------------

_NATIVE_MODULE = _oxloop.__name__  # "oxloop._oxloop"


def _owner(cls: type, name: str) -> Optional[type]:
    """The class of ``cls.__mro__`` whose own namespace defines ``name`` (the one that wins)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def _is_native_class(klass: Optional[type]) -> bool:
    return klass is not None and klass.__module__ == _NATIVE_MODULE


def _code_kind(klass: type) -> str:
    module = klass.__module__
    if module == _NATIVE_MODULE:
        return "native"
    if module == "oxloop" or module.startswith("oxloop."):
        return "oxloop"
    if module == "asyncio" or module.startswith("asyncio."):
        return "asyncio"
    return "other"


def _function(attr: Any) -> Optional[types.FunctionType]:
    """The Python function behind a class attribute (None for native methods)."""
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    while hasattr(attr, "__wrapped__"):
        attr = attr.__wrapped__
    return attr if isinstance(attr, types.FunctionType) else None


def _code_names(func: types.FunctionType) -> frozenset:
    """Every global and attribute name the function's code (and code nested in it) refers to."""
    names: "set[str]" = set()
    stack = [func.__code__]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return frozenset(names)


def _native_method(cls: type, name: str) -> bool:
    """``name`` is a method (not a property) that the native class defines and wins in the MRO."""
    owner = _owner(cls, name)
    return _is_native_class(owner) and callable(vars(owner)[name])


def implementation(cls: type, name: str) -> Dict[str, Any]:
    """Where ``cls``'s method ``name`` is, derived from ``cls.__mro__``.

    ``implementation`` is ``"native"`` when the native class (``oxloop._oxloop.LoopCore``)
    defines the method, or when the oxloop Python method that wins is marked
    ``@native_hot_path(...)`` (``selector_events.native_hot_path``) and its code does call those
    native names; ``"oxloop"`` for oxloop's own Python code; ``"asyncio"`` for the running
    asyncio's code (``"other"`` for a class from anywhere else). ``defined_by`` names the class;
    ``over_native`` lists the native underscore methods the method's own code calls (asyncio's
    ``add_reader`` over the native ``_add_reader``); ``native_path`` the marked names.
    """
    owner = _owner(cls, name)
    if owner is None:
        raise AttributeError(f"{cls.__qualname__} has no {name}")
    kind = _code_kind(owner)
    info: Dict[str, Any] = {"defined_by": f"{owner.__module__}.{owner.__qualname__}"}
    func = _function(vars(owner)[name])
    if func is None:
        info["implementation"] = kind
        return info
    names = _code_names(func)
    marked: Tuple[str, ...] = tuple(getattr(func, "__oxloop_native__", ()))
    for n in marked:
        native = _native_method(cls, n) or (
            isinstance(getattr(_oxloop, n, None), type)
            and getattr(_oxloop, n).__module__ == _NATIVE_MODULE
        )
        if n not in names or not native:
            raise RuntimeError(
                f"{info['defined_by']}.{name} is marked native through {n!r}, but "
                + ("its code never refers to it" if n not in names
                   else f"{n!r} is not native in {cls.__qualname__}'s MRO")
            )
    if marked and kind == "oxloop":
        info["implementation"] = "native"
        info["native_path"] = list(marked)
    else:
        info["implementation"] = kind
    over = sorted(
        n for n in names
        if n.startswith("_") and n != name and n not in marked and _native_method(cls, n)
    )
    if over:
        info["over_native"] = over
    return info


def _selector_loop_apis() -> Dict[str, Dict[str, Any]]:
    from .unix_events import SelectorEventLoop

    out = {}
    for name in _api_names():
        # Which transport a method creates is reported under "transports".
        out[name] = _entry(True, **implementation(SelectorEventLoop, name))
    if not _UNIX:
        reason = "Windows has no AF_UNIX stream sockets support in asyncio"
        for n in ("create_unix_connection", "create_unix_server"):
            out[n] = _entry(False, reason)
        for n in ("add_signal_handler", "remove_signal_handler"):
            out[n] = _entry(False, "Windows has no POSIX signals for an event loop to catch")
    notes = {
        "add_reader": "regular files cannot be watched for I/O: epoll refuses them (EPERM); "
        "poll and select report them always ready",
        "add_writer": "regular files cannot be watched for I/O (see add_reader)",
        "subprocess_exec": _SUBPROCESS_NOTE,
        "subprocess_shell": _SUBPROCESS_NOTE,
        "connect_read_pipe": "pipes, FIFOs, character devices (ttys, ptys) and sockets; "
        "a regular file raises ValueError as in asyncio; " + _PIPE_TRANSPORT_NOTE,
        "connect_write_pipe": "pipes, FIFOs, character devices (ttys, ptys) and sockets; "
        "a regular file raises ValueError as in asyncio; " + _PIPE_TRANSPORT_NOTE,
    }
    for n, note in notes.items():
        if n in out:
            out[n]["note"] = note
    return out


def _proactor_loop_apis() -> Dict[str, Dict[str, Any]]:
    reason = (
        "oxloop's ProactorEventLoop (io_uring on Linux, IOCP on Windows) is not implemented yet"
    )
    return {name: _entry(False, reason) for name in _api_names()}


def _selectors() -> Dict[str, Dict[str, Any]]:
    default = _oxloop.default_selector()
    reasons = {
        "epoll": "epoll exists only on Linux",
        "kqueue": "kqueue exists only on macOS and the BSDs",
        "poll": "poll() is not available on this platform",
        "select": "select() is not available on this platform",
    }
    out = {}
    for name, available in _oxloop.selector_kinds():
        extra: Dict[str, Any] = {"default": name == default}
        if name == "select":
            extra["limit"] = (
                "file descriptors below FD_SETSIZE (1024); a larger fd raises ValueError"
                if _UNIX
                else "512 sockets, sockets only (Windows)"
            )
        out[name] = _entry(available, reasons[name], **extra)
    out["python-selectors-object"] = _entry(
        True, note="any selectors.BaseSelector instance, driven as asyncio drives it"
    )
    return out


def _limitations() -> List[Dict[str, Any]]:
    """The limitations of asyncio's "Platform Support" page, and oxloop's standing on each."""
    win = sys.platform == "win32"
    mac = sys.platform == "darwin"
    return [
        {
            "limitation": "loop.add_reader() and loop.add_writer() cannot be used to monitor file I/O",
            "platforms": ["all"],
            "applies_here": True,
            "oxloop": "same: regular files are refused by epoll (PermissionError) and always "
            "ready for poll/select",
        },
        {
            "limitation": "create_unix_connection() and create_unix_server() are not supported",
            "platforms": ["win32"],
            "applies_here": win,
            "oxloop": "supported on Unix",
        },
        {
            "limitation": "add_signal_handler() and remove_signal_handler() are not supported",
            "platforms": ["win32"],
            "applies_here": win,
            "oxloop": "supported on Unix, from the main thread",
        },
        {
            "limitation": "SelectSelector is limited to 512 sockets",
            "platforms": ["win32"],
            "applies_here": win,
            "oxloop": "on Unix select() takes fds below FD_SETSIZE (1024) and raises ValueError "
            "beyond; epoll and poll have no such limit",
        },
        {
            "limitation": "SelectorEventLoop: add_reader()/add_writer() accept only sockets",
            "platforms": ["win32"],
            "applies_here": win,
            "oxloop": "on Unix any pollable fd (pipes, ttys, sockets, eventfds)",
        },
        {
            "limitation": "SelectorEventLoop: no pipes (connect_read_pipe/connect_write_pipe)",
            "platforms": ["win32"],
            "applies_here": win,
            "oxloop": "supported on Unix",
        },
        {
            "limitation": "SelectorEventLoop: no subprocesses",
            "platforms": ["win32"],
            "applies_here": win,
            "oxloop": "supported on Unix",
        },
        {
            "limitation": "ProactorEventLoop: add_reader()/add_writer() are not supported",
            "platforms": ["win32"],
            "applies_here": win,
            "oxloop": "oxloop has no ProactorEventLoop yet",
        },
        {
            "limitation": "monotonic clock resolution around 15.6 ms",
            "platforms": ["win32"],
            "applies_here": win,
            "oxloop": "loop.time() is CLOCK_MONOTONIC (ns resolution) on Unix; timeouts are "
            "passed with sub-millisecond precision (epoll_pwait2, ppoll, pselect)",
        },
        {
            "limitation": "kqueue on macOS 10.6-10.8 does not support character devices",
            "platforms": ["darwin"],
            "applies_here": mac and platform.mac_ver()[0][:4] in ("10.6", "10.7", "10.8"),
            "oxloop": "choose SelectorEventLoop('select') or ('poll') there, as with asyncio",
        },
    ]


def platform_support() -> Dict[str, Any]:
    """A machine-readable report of what each oxloop loop can do here, and why not."""
    return {
        "platform": sys.platform,
        "machine": platform.machine(),
        "release": platform.release(),
        "python": platform.python_version(),
        "oxloop": _oxloop.__version__,
        "clock": {"resolution": _oxloop.clock_resolution(), "source": "CLOCK_MONOTONIC"},
        "selectors": _selectors(),
        "transports": {
            "tcp/unix stream": "native (oxloop._oxloop.SocketTransport); "
            "OXLOOP_NATIVE_TRANSPORTS=0 selects asyncio's",
            "tls": (
                "native (oxloop._oxloop.SSLProtocol, asyncio's 3.11+ sslproto in Rust, over "
                "the user's ssl.SSLContext); OXLOOP_NATIVE_TLS=0 selects asyncio's"
                if NATIVE_TLS_SUPPORTED
                else "asyncio's own SSLProtocol (this Python's sslproto; native TLS needs 3.11+)"
            ),
            "udp/unix datagram": "native (oxloop._oxloop.DatagramTransport); "
            "OXLOOP_NATIVE_TRANSPORTS=0 selects asyncio's",
            "pipes": "native (oxloop._oxloop.ReadPipeTransport / WritePipeTransport) for "
            "connect_read_pipe/connect_write_pipe and subprocess pipes on a native selector; "
            "asyncio's with a Python selectors object or OXLOOP_NATIVE_TRANSPORTS=0",
            "subprocesses": "asyncio's subprocess transport on the native core "
            "(a subprocess's pipes use the native pipe transports)",
        },
        "subprocess_exit_tracking": _subprocess_exit_tracking(),
        "loops": {
            "SelectorEventLoop": _selector_loop_apis(),
            "ProactorEventLoop": _proactor_loop_apis(),
        },
        "limitations": _limitations(),
    }
