"""oxloop's selector event loop for Unix (the counterpart of asyncio/unix_events.py).

``SelectorEventLoop`` = the native core (``oxloop._oxloop.LoopCore``: scheduling, timers, the
selector and fd watching, in Rust) + asyncio's own ``_UnixSelectorEventLoop`` for everything
the core does not implement natively yet (low-level socket calls, signals, transports, pipes,
subprocesses). Methods of the core take precedence in the MRO.

Subprocess exit is tracked by the loop itself (``_process.ChildTracker``: a pidfd in the
selector, or a waitpid thread), never through asyncio's child watcher.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import sys
import threading
from asyncio import base_events, events, unix_events
from typing import Optional, Union

from . import _oxloop
from ._process import ChildTracker
from .selector_events import NativeSelector, NativeSockMixin

__all__ = ("SelectorEventLoop", "EventLoopPolicy")

_NativeSocketTransport = _oxloop.SocketTransport
_NativeReadPipeTransport = _oxloop.ReadPipeTransport
_NativeWritePipeTransport = _oxloop.WritePipeTransport
_IP_FAMILIES = frozenset(
    f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None)) if f is not None
)
_IP_DATAGRAM_READ = 64 * 1024 + 1
_STREAM_FAMILIES = frozenset(
    f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None), getattr(socket, "AF_UNIX", None))
    if f is not None
)


class SelectorEventLoop(_oxloop.LoopCore, NativeSockMixin, unix_events._UnixSelectorEventLoop):
    """asyncio's SelectorEventLoop on oxloop's native core.

    ``selector`` is None (the platform's best native selector: epoll on Linux), a native
    selector's name ("epoll", "poll", "select", "kqueue"), or any ``selectors.BaseSelector``
    instance, which the loop then drives exactly as asyncio would.
    """

    def __init__(self, selector: Optional[Union[str, selectors.BaseSelector]] = None) -> None:
        # TCP and Unix stream sockets, and pipes (on a native selector), get the native
        # transports; OXLOOP_NATIVE_TRANSPORTS=0 (read once, at creation) keeps asyncio's Python
        # transports instead.
        self._oxloop_native_transports = os.environ.get("OXLOOP_NATIVE_TRANSPORTS", "1") != "0"
        self._oxloop_children = ChildTracker(self)
        try:
            name = self._oxloop_init(selector)
        except BaseException:
            # Nothing was set up: let __del__ see a closed loop instead of a half-built one.
            self._closed = True
            raise
        super().__init__(NativeSelector(self, name) if name is not None else selector)

    def __repr__(self) -> str:
        sel = self._selector
        kind = sel.name if isinstance(sel, NativeSelector) else type(sel).__name__
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()} selector={kind}>"
        )

    def run_forever(self) -> None:
        """Run until stop() is called (asyncio's setup and cleanup around the native loop)."""
        if hasattr(base_events.BaseEventLoop, "_run_forever_setup"):  # Python 3.13+
            try:
                self._run_forever_setup()
                self._run_forever_inner()
            finally:
                self._run_forever_cleanup()
            return
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run_forever_inner()
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self) -> None:
        children = getattr(self, "_oxloop_children", None)
        if children is not None and not self.is_running() and not self.is_closed():
            # Children still running are handed to reaper threads: none is left a zombie.
            children.close()
        super().close()
        self._oxloop_close()

    async def _make_subprocess_transport(self, protocol, args, shell,
                                         stdin, stdout, stderr, bufsize,
                                         extra=None, **kwargs):
        if _explicit_child_watcher() is not None:
            # The user installed a watcher of their own (SafeChildWatcher, FastChildWatcher,
            # MultiLoopChildWatcher, a custom one): asyncio's own code, which uses it.
            return await super()._make_subprocess_transport(
                protocol, args, shell, stdin, stdout, stderr, bufsize, extra=extra, **kwargs)
        # asyncio's steps (unix_events._UnixSelectorEventLoop._make_subprocess_transport,
        # 3.9-3.13) with the loop's own exit tracking in place of the child watcher.
        waiter = self.create_future()
        transp = unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs)
        self._oxloop_children.add(transp.get_pid(), self._child_watcher_callback, transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        if (
            self._oxloop_native_transports
            and sock.__class__ is socket.socket
            and sock.type == socket.SOCK_STREAM
            and sock.family in _STREAM_FAMILIES
        ):
            return _NativeSocketTransport._create(self, sock, protocol, waiter, extra, server)
        return super()._make_socket_transport(
            sock, protocol, waiter, extra=extra, server=server
        )

    def _native_pipes(self) -> bool:
        # The native pipe transports watch their fd through the native selector; a loop on a
        # Python selectors object keeps asyncio's own pipe transports.
        return self._oxloop_native_transports and isinstance(self._selector, NativeSelector)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        if self._native_pipes():
            return _NativeReadPipeTransport._create(self, pipe, protocol, waiter, extra)
        return super()._make_read_pipe_transport(pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        if self._native_pipes():
            return _NativeWritePipeTransport._create(self, pipe, protocol, waiter, extra)
        return super()._make_write_pipe_transport(pipe, protocol, waiter, extra)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        transport = super()._make_datagram_transport(sock, protocol, address, waiter, extra)
        if sock.family in _IP_FAMILIES:
            # No IPv4/IPv6 datagram exceeds 64 KiB (IPv6 jumbograms aside), so a read of
            # 64 KiB + 1 returns the same datagrams as asyncio's 256 KiB, without the
            # mmap/munmap glibc does for every 256 KiB bytes object.
            transport.max_size = _IP_DATAGRAM_READ
        return transport


# The watchers asyncio installs by itself (3.9-3.11: ThreadedChildWatcher; 3.12+:
# PidfdChildWatcher when pidfds work). They track no other process and install no signal
# handler, so oxloop's own tracking replaces them with the same results.
_DEFAULT_WATCHERS = tuple(
    w for w in (getattr(unix_events, "ThreadedChildWatcher", None),
                getattr(unix_events, "PidfdChildWatcher", None))
    if w is not None
)


def _explicit_child_watcher():
    """The child watcher set on the current policy, unless it is one of asyncio's defaults.

    Read from the policy's attribute: calling ``get_child_watcher()`` would create a watcher
    (and warn on 3.12+)."""
    policy = getattr(events, "_event_loop_policy", None)
    watcher = getattr(policy, "_watcher", None)
    if watcher is None or type(watcher) in _DEFAULT_WATCHERS:
        return None
    return watcher


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making oxloop loops."""

    _loop_factory = SelectorEventLoop
