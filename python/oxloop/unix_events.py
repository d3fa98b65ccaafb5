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
import errno
import os
import selectors
import socket
import sys
import threading
from asyncio import base_events, constants, events, selector_events, sslproto, trsock, unix_events
from asyncio.log import logger
from typing import Optional, Union

from . import _oxloop
from ._compat import (
    ACCEPT_TIMEOUT_DEFAULTS, DEFAULT_CHILD_WATCHERS, NATIVE_TLS_SUPPORTED, RUN_FOREVER_SETUP,
    SSL_ENSURE_FD,
)
from ._process import ChildTracker
from .selector_events import NativeSelector, NativeSockMixin, native_hot_path

__all__ = ("SelectorEventLoop", "EventLoopPolicy")

_NativeSocketTransport = _oxloop.SocketTransport
_NativeDatagramTransport = _oxloop.DatagramTransport
_NativeReadPipeTransport = _oxloop.ReadPipeTransport
_NativeWritePipeTransport = _oxloop.WritePipeTransport
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
        # TCP and Unix stream sockets, and pipes (on a native selector), get the native
        # transports; OXLOOP_NATIVE_TRANSPORTS=0 (read once, at creation) keeps asyncio's Python
        # transports instead.
        self._oxloop_native_transports = os.environ.get("OXLOOP_NATIVE_TRANSPORTS", "1") != "0"
        self._oxloop_children = ChildTracker(self)
        # TLS runs on the native SSLProtocol (3.11+); OXLOOP_NATIVE_TLS=0 keeps asyncio's.
        self._oxloop_native_tls = (
            NATIVE_TLS_SUPPORTED and os.environ.get("OXLOOP_NATIVE_TLS", "1") != "0"
        )
        try:
            name = self._oxloop_init(selector)
        except BaseException:
            # Nothing was set up: let __del__ see a closed loop instead of a half-built one.
            self._closed = True
            raise
        # (a str selector is a native one's name: then `name` is not None and NativeSelector is given)
        super().__init__(
            NativeSelector(self, name) if name is not None else selector  # type: ignore[arg-type]
        )
        if self.get_debug():  # PYTHONASYNCIODEBUG=1 / -X dev
            self.set_debug(True)

    def __repr__(self) -> str:
        # Names oxloop (asyncio's loop has the same class name) and the selector: a native
        # one by name ("epoll"), a Python selectors object by its class ("selectors.EpollSelector").
        sel = getattr(self, "_selector", None)
        if sel is None:
            kind = None
        elif isinstance(sel, NativeSelector):
            kind = sel.name
        else:
            kind = f"{type(sel).__module__}.{type(sel).__qualname__}"
        cls = type(self)
        name = ("oxloop.SelectorEventLoop" if cls is SelectorEventLoop
                else f"{cls.__name__} (oxloop.SelectorEventLoop)")
        return (
            f"<{name} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()} selector={kind}>"
        )

    def set_debug(self, enabled: bool) -> None:
        super().set_debug(enabled)
        # (BaseEventLoop.__init__ calls this before the selector is set: __init__ reports then.)
        if enabled and getattr(self, "_selector", None) is not None:
            # Debug mode says which parts of this loop are not oxloop's native ones, and why.
            for what in self._oxloop_fallbacks():
                logger.debug("%r: %s", self, what)

    def _oxloop_fallbacks(self) -> list:
        out = []
        if not isinstance(self._selector, NativeSelector):  # type: ignore[attr-defined]
            out.append(f"a Python selectors object ({type(self._selector).__name__}) was given: "  # type: ignore[attr-defined]
                       "fd watching, sock_* calls and transports are asyncio's own code")
        elif not self._oxloop_native_transports:
            out.append("OXLOOP_NATIVE_TRANSPORTS=0: stream, datagram and pipe transports are "
                       "asyncio's")
        if not NATIVE_TLS_SUPPORTED:
            out.append("TLS is asyncio's sslproto on Python < 3.11 (the native TLS layer "
                       "reproduces 3.11+'s)")
        elif not self._oxloop_native_tls:
            out.append("OXLOOP_NATIVE_TLS=0: TLS is asyncio's sslproto")
        return out

    def run_forever(self) -> None:
        """Run until stop() is called (asyncio's setup and cleanup around the native loop)."""
        if RUN_FOREVER_SETUP:  # Python 3.13+
            try:
                self._run_forever_setup()  # type: ignore[attr-defined]
                self._run_forever_inner()
            finally:
                self._run_forever_cleanup()  # type: ignore[attr-defined]
            return
        self._check_closed()  # type: ignore[attr-defined]
        self._check_running()  # type: ignore[attr-defined]
        self._set_coroutine_origin_tracking(self._debug)  # type: ignore[attr-defined]
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
                finalizer=self._asyncgen_finalizer_hook,  # type: ignore[attr-defined]
            )
            events._set_running_loop(self)
            self._run_forever_inner()
        finally:
            self._stopping = False
            self._thread_id = None  # type: ignore[assignment]  # (typeshed: undeclared)
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)  # type: ignore[attr-defined]
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
        if self._oxloop_native_stream(sock):
            return _NativeSocketTransport._create(self, sock, protocol, waiter, extra, server)
        return super()._make_socket_transport(
            sock, protocol, waiter, extra=extra, server=server
        )

    def _oxloop_native_stream(self, sock):
        return (
            self._oxloop_native_transports
            and sock.__class__ is socket.socket
            and sock.type == socket.SOCK_STREAM
            and sock.family in _STREAM_FAMILIES
        )

    if NATIVE_TLS_SUPPORTED:

        def _make_ssl_transport(
            self, rawsock, protocol, sslcontext, waiter=None,
            *, server_side=False, server_hostname=None,
            extra=None, server=None,
            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
        ):
            """asyncio's _make_ssl_transport with the native SSLProtocol (and, for a plain
            stream socket, the native transport under it)."""
            if not self._oxloop_native_tls:
                return super()._make_ssl_transport(
                    rawsock, protocol, sslcontext, waiter,
                    server_side=server_side, server_hostname=server_hostname,
                    extra=extra, server=server,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout,
                )
            if SSL_ENSURE_FD:
                self._ensure_fd_no_transport(rawsock)
            if sslproto.ssl is None:
                raise RuntimeError("stdlib ssl module not available")
            ssl_protocol = _oxloop.SSLProtocol(
                self, protocol, sslcontext, waiter,
                server_side, server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
            app_transport = ssl_protocol._app_transport
            if self._oxloop_native_stream(rawsock):
                _NativeSocketTransport._create(self, rawsock, ssl_protocol, None, extra, server)
            else:
                selector_events._SelectorSocketTransport(
                    self, rawsock, ssl_protocol, extra=extra, server=server
                )
            return app_transport

        @native_hot_path("SSLProtocol")
        async def start_tls(self, transport, protocol, sslcontext, *,
                            server_side=False,
                            server_hostname=None,
                            ssl_handshake_timeout=None,
                            ssl_shutdown_timeout=None):
            """Upgrade transport to TLS (asyncio's start_tls, with the native SSLProtocol).

            Return a new transport that *protocol* should start using immediately.
            """
            if not self._oxloop_native_tls:
                return await super().start_tls(
                    transport, protocol, sslcontext,
                    server_side=server_side, server_hostname=server_hostname,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout,
                )
            if base_events.ssl is None:
                raise RuntimeError('Python ssl module is not available')

            if not isinstance(sslcontext, base_events.ssl.SSLContext):
                raise TypeError(
                    f'sslcontext is expected to be an instance of ssl.SSLContext, '
                    f'got {sslcontext!r}')

            if not getattr(transport, '_start_tls_compatible', False):
                raise TypeError(
                    f'transport {transport!r} is not supported by start_tls()')

            waiter = self.create_future()
            ssl_protocol = _oxloop.SSLProtocol(
                self, protocol, sslcontext, waiter,
                server_side, server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
                call_connection_made=False)
            ssl_protocol._app_transport  # made now, as asyncio's __init__ does

            # No read may reach the TLS protocol before its connection_made: reading stays
            # paused until the two callbacks below have run, in this order.
            transport.pause_reading()

            transport.set_protocol(ssl_protocol)
            conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
            resume_cb = self.call_soon(transport.resume_reading)

            try:
                await waiter
            except BaseException:
                transport.close()
                conmade_cb.cancel()
                resume_cb.cancel()
                raise

            return ssl_protocol._app_transport
    def _native_pipes(self) -> bool:
        # The native pipe transports watch their fd through the native selector; a loop on a
        # Python selectors object keeps asyncio's own pipe transports.
        return self._oxloop_native_transports and isinstance(self._selector, NativeSelector)  # type: ignore[attr-defined]

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        if self._native_pipes():
            return _NativeReadPipeTransport._create(self, pipe, protocol, waiter, extra)
        return super()._make_read_pipe_transport(pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        if self._native_pipes():
            return _NativeWritePipeTransport._create(self, pipe, protocol, waiter, extra)
        return super()._make_write_pipe_transport(pipe, protocol, waiter, extra)

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
        if sslcontext or self._task_factory is not None:
            # TLS needs the Task (the handshake is awaited), and a task factory the user set
            # must see every Task asyncio would create: asyncio's own code.
            return super()._accept_connection(
                protocol_factory, sock, sslcontext, server, backlog, *timeouts
            )
        timeouts += ACCEPT_TIMEOUT_DEFAULTS[len(timeouts):]
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                # Nothing (more) to accept in this readiness round.
                return None
            except OSError as exc:
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
                    raise  # reported by the loop as a failed reader callback, as in asyncio
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
        return transport


def _explicit_child_watcher():
    """The child watcher set on the current policy, unless it is one of asyncio's defaults.

    Read from the policy's attribute: calling ``get_child_watcher()`` would create a watcher
    (and warn on 3.12+)."""
    policy = getattr(events, "_event_loop_policy", None)
    watcher = getattr(policy, "_watcher", None)
    if watcher is None or type(watcher) in DEFAULT_CHILD_WATCHERS:
        return None
    return watcher


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making oxloop loops."""

    _loop_factory = SelectorEventLoop
