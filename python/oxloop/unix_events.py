"""oxloop's selector event loop for Unix (the counterpart of asyncio/unix_events.py).

``SelectorEventLoop`` = the native core (``oxloop._oxloop.LoopCore``: scheduling, timers, the
selector and fd watching, in Rust) + asyncio's own ``_UnixSelectorEventLoop`` for everything
the core does not implement natively yet (low-level socket calls, signals, transports, pipes,
subprocesses). Methods of the core take precedence in the MRO.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
import selectors
import socket
import sys
import threading
from asyncio import base_events, constants, events, selector_events, trsock, unix_events
from asyncio.log import logger
from typing import Optional, Union

from . import _oxloop
from .selector_events import NativeSelector, NativeSockMixin

__all__ = ("SelectorEventLoop", "EventLoopPolicy")

_NativeSocketTransport = _oxloop.SocketTransport
_IP_FAMILIES = frozenset(
    f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None)) if f is not None
)
_IP_DATAGRAM_READ = 64 * 1024 + 1
_STREAM_FAMILIES = frozenset(
    f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None), getattr(socket, "AF_UNIX", None))
    if f is not None
)

# The TLS timeouts _accept_connection takes after `backlog` in this version, with their defaults
# (passed on to _start_serving explicitly, as asyncio does).
_ACCEPT_TIMEOUT_DEFAULTS = tuple(
    p.default
    for p in inspect.signature(
        selector_events.BaseSelectorEventLoop._accept_connection
    ).parameters.values()
)[6:]


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

    # The core leaves out zero-timeout polls that could only report the self-pipe: it needs to
    # know which fd that is and whether it carries signals.
    def _make_self_pipe(self):
        super()._make_self_pipe()
        self._oxloop_set_self_pipe(self._ssock.fileno())

    def _close_self_pipe(self):
        self._oxloop_set_self_pipe(-1)
        super()._close_self_pipe()

    def add_signal_handler(self, sig, callback, *args):
        try:
            return super().add_signal_handler(sig, callback, *args)
        finally:
            self._oxloop_set_signals(bool(self._signal_handlers))

    def remove_signal_handler(self, sig):
        try:
            return super().remove_signal_handler(sig)
        finally:
            self._oxloop_set_signals(bool(self._signal_handlers))

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

    def _accept_connection(
        self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *timeouts
    ):
        """asyncio's ``_accept_connection`` without a Task per accepted connection.

        asyncio runs ``_accept_connection2`` as a Task whose only job, without TLS, is to call
        ``protocol_factory()`` and make the transport in the next iteration, then wait for the
        transport's waiter. Here a plain callback does those two steps in that same iteration
        and in its own copy of the context (as the Task's), and nothing waits: the protocol
        and transport callbacks run in the same order, and a connection no longer costs a
        Task, a coroutine and a future (which, 4096 accepts at a time, left ~0.9 KiB of RSS
        per connection behind). TLS keeps asyncio's Task.
        """
        if sslcontext:
            return super()._accept_connection(
                protocol_factory, sock, sslcontext, server, backlog, *timeouts
            )
        timeouts += _ACCEPT_TIMEOUT_DEFAULTS[len(timeouts):]
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                # Early exit because the socket accept buffer is empty.
                return None
            except OSError as exc:
                # There's nowhere to send the error, so just log it.
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Linux keeps reporting the fd as ready: stop reading, retry later.
                    self.call_exception_handler({
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": trsock.TransportSocket(sock),
                    })
                    self._remove_reader(sock.fileno())
                    self.call_later(
                        constants.ACCEPT_RETRY_DELAY, self._start_serving,
                        protocol_factory, sock, sslcontext, server, backlog, *timeouts,
                    )
                else:
                    raise  # The event loop will catch, log and ignore it.
            else:
                self.call_soon(
                    self._oxloop_accept_connection2, protocol_factory, conn, addr, server
                )

    def _oxloop_accept_connection2(self, protocol_factory, conn, addr, server):
        """asyncio's ``_accept_connection2`` without TLS, minus the Task and its waiter."""
        protocol = None
        transport = None
        try:
            protocol = protocol_factory()
            if (
                self._oxloop_native_transports
                and type(self)._make_socket_transport is SelectorEventLoop._make_socket_transport
                and conn.__class__ is socket.socket
                and conn.family in _STREAM_FAMILIES
            ):
                # The native transport keeps the peer's address without an `extra` dict.
                transport = _NativeSocketTransport._create(
                    self, conn, protocol, None, None, server, peername=addr
                )
            else:
                transport = self._make_socket_transport(
                    conn, protocol, extra={"peername": addr}, server=server
                )
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if self._debug:
                context = {
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                }
                if protocol is not None:
                    context["protocol"] = protocol
                if transport is not None:
                    context["transport"] = transport
                self.call_exception_handler(context)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
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
