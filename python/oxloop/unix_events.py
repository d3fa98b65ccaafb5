"""oxloop's selector event loop for Unix (the counterpart of asyncio/unix_events.py).

``SelectorEventLoop`` = the native core (``oxloop._oxloop.LoopCore``: scheduling, timers, the
selector and fd watching, in Rust) + asyncio's own ``_UnixSelectorEventLoop`` for everything
the core does not implement natively yet (low-level socket calls, signals, transports, pipes,
subprocesses). Methods of the core take precedence in the MRO.
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
from .selector_events import NativeSelector, NativeSockMixin

__all__ = ("SelectorEventLoop", "EventLoopPolicy")

_NativeSocketTransport = _oxloop.SocketTransport
_NativeDatagramTransport = _oxloop.DatagramTransport
_IP_FAMILIES = frozenset(
    f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None)) if f is not None
)
_IP_DATAGRAM_READ = 64 * 1024 + 1
_STREAM_FAMILIES = frozenset(
    f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None), getattr(socket, "AF_UNIX", None))
    if f is not None
)
_DATAGRAM_FAMILIES = _STREAM_FAMILIES


class SelectorEventLoop(_oxloop.LoopCore, NativeSockMixin, unix_events._UnixSelectorEventLoop):
    """asyncio's SelectorEventLoop on oxloop's native core.

    ``selector`` is None (the platform's best native selector: epoll on Linux), a native
    selector's name ("epoll", "poll", "select", "kqueue"), or any ``selectors.BaseSelector``
    instance, which the loop then drives exactly as asyncio would.
    """

    def __init__(self, selector: Optional[Union[str, selectors.BaseSelector]] = None) -> None:
        # TCP and Unix stream sockets get the native transport; OXLOOP_NATIVE_TRANSPORTS=0 (read
        # once, at creation) keeps asyncio's Python transport instead.
        self._oxloop_native_transports = os.environ.get("OXLOOP_NATIVE_TRANSPORTS", "1") != "0"
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
        super().close()
        self._oxloop_close()

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

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        # UDP (IPv4/IPv6) and Unix datagram sockets get the native transport, like the stream
        # sockets above; a socket subclass or another family keeps asyncio's.
        if (
            self._oxloop_native_transports
            and sock.__class__ is socket.socket
            and sock.type == socket.SOCK_DGRAM
            and sock.family in _DATAGRAM_FAMILIES
        ):
            transport = _NativeDatagramTransport._create(
                self, sock, protocol, address, waiter, extra
            )
        else:
            transport = super()._make_datagram_transport(sock, protocol, address, waiter, extra)
        if sock.family in _IP_FAMILIES:
            # No IPv4/IPv6 datagram exceeds 64 KiB (IPv6 jumbograms aside), so a read of
            # 64 KiB + 1 returns the same datagrams as asyncio's 256 KiB, without the
            # mmap/munmap glibc does for every 256 KiB bytes object.
            transport.max_size = _IP_DATAGRAM_READ
        return transport


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making oxloop loops."""

    _loop_factory = SelectorEventLoop
