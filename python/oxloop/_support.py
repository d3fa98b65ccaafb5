"""``oxloop.platform_support()``: what each oxloop loop can do on the running platform, and why not.

Built from the loop classes themselves (every public method of ``asyncio.AbstractEventLoop``
on this Python), the native selectors compiled into this build, and the limitations listed on
Python's "asyncio — Platform Support" page.
"""

from __future__ import annotations

import asyncio
import platform
import sys
from typing import Any, Dict, List, Optional

from . import _oxloop
from ._compat import NATIVE_TLS_SUPPORTED
from ._process import pidfd_supported

# The loop methods the native core implements itself; the rest of SelectorEventLoop is asyncio's
# own code running on that core.
NATIVE_METHODS = frozenset(
    {
        "call_soon", "call_soon_threadsafe", "call_later", "call_at", "time",
        "run_forever", "get_debug", "is_closed", "close", "create_future",
        "sock_recv", "sock_recv_into", "sock_sendall",
        "add_reader", "add_writer", "remove_reader", "remove_writer",
    }
)

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


def _selector_loop_apis() -> Dict[str, Dict[str, Any]]:
    out = {}
    for name in _api_names():
        # start_tls is oxloop's own on 3.11+ (it builds the native SSLProtocol). For the other
        # asyncio methods, which transport they create is reported under "transports".
        native = name in NATIVE_METHODS or (name == "start_tls" and NATIVE_TLS_SUPPORTED)
        impl = "native" if native else "asyncio"
        out[name] = _entry(True, implementation=impl)
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
