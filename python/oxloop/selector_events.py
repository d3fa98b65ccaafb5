"""The selector view that asyncio's inherited code sees as ``loop._selector`` on a native loop.

asyncio's transports only ask a loop's selector which events an fd is watched for (in their
reprs), so a native loop answers from its own table; a loop built on a Python ``selectors``
object keeps that object as ``_selector``, exactly as asyncio does.
"""

import selectors
import socket
from collections.abc import Mapping


class _NativeMapping(Mapping):
    def __init__(self, view):
        self._view = view

    def __len__(self):
        return len(self._view._loop._oxloop_fds())

    def __iter__(self):
        return iter(self._view._loop._oxloop_fds())

    def __getitem__(self, fileobj):
        key = self._view.get_key(fileobj)
        return key


class NativeSelector:
    """Read-only view of a native loop's fd watchers, shaped like ``selectors.BaseSelector``."""

    def __init__(self, loop, name):
        self._loop = loop
        self.name = name

    def __repr__(self):
        return f"<oxloop native {self.name} selector>"

    def get_key(self, fileobj):
        fd = fileobj if isinstance(fileobj, int) else selectors._fileobj_to_fd(fileobj)
        found = self._loop._oxloop_key(fd)
        if found is None:
            raise KeyError(f"{fileobj!r} is not registered")
        events, obj, reader, writer = found
        return selectors.SelectorKey(obj, fd, events, (reader, writer))

    def get_map(self):
        return _NativeMapping(self)

    def close(self):
        # The loop's close() releases the native selector itself.
        pass


_SOCKET_TYPE = socket.socket


def native_hot_path(*names):
    """Marks an oxloop Python method whose work is done natively by ``names`` (native methods
    of the loop, or classes of ``oxloop._oxloop``), which it calls; the Python code around
    them only picks the path. ``platform_support()`` reports such a method as native after
    checking that its code calls each name and that each is native where the method runs."""

    def mark(func):
        func.__oxloop_native__ = names
        return func

    return mark


class NativeSockMixin:
    """asyncio's low-level socket coroutines, done natively for plain ``socket.socket`` objects.

    The native methods return the result at once, a Future to await, or NotImplemented when
    only asyncio's own implementation can reproduce the exact behaviour (socket subclasses
    such as ``ssl.SSLSocket``, non-contiguous buffers, non-int sizes); then it is used.
    """

    __slots__ = ()

    @native_hot_path("_oxloop_sock_recv")
    async def sock_recv(self, sock, n):
        """Receive up to n bytes from sock (non-blocking)."""
        if sock.__class__ is _SOCKET_TYPE:
            r = self._oxloop_sock_recv(sock, n)
            if r is not NotImplemented:
                if r.__class__ is bytes:
                    return r
                return await r
        return await super().sock_recv(sock, n)

    @native_hot_path("_oxloop_sock_recv_into")
    async def sock_recv_into(self, sock, buf):
        """Receive into buf from sock (non-blocking); return the number of bytes."""
        if sock.__class__ is _SOCKET_TYPE:
            r = self._oxloop_sock_recv_into(sock, buf)
            if r is not NotImplemented:
                if r.__class__ is int:
                    return r
                return await r
        return await super().sock_recv_into(sock, buf)

    @native_hot_path("_oxloop_sock_sendall")
    async def sock_sendall(self, sock, data):
        """Send all of data to sock (non-blocking)."""
        if sock.__class__ is _SOCKET_TYPE:
            r = self._oxloop_sock_sendall(sock, data)
            if r is not NotImplemented:
                if r is None:
                    return None
                return await r
        return await super().sock_sendall(sock, data)
