"""Slow paths of the native transports (``oxloop._oxloop.SocketTransport``, the stream
transport, and ``ReadPipeTransport``/``WritePipeTransport``, the pipe transports).

The transport's hot paths (read -> data_received, write, the write queue) are in Rust; what is
here runs only on errors, in debug mode, on reprs, or once per connection, and uses the running
asyncio version's own objects (logger, constants, TransportSocket); the rules of that version
are ``oxloop._compat``'s (re-exported here for the native code).
"""

import warnings
from asyncio import (
    base_events, constants, futures, protocols, selector_events, transports, trsock,
)
from asyncio.log import logger

from ._compat import (  # noqa: F401  (read by the native transports)
    ATTACH_TAKES_TRANSPORT,
    DATAGRAM_CAN_PAUSE,
    DATAGRAM_COUNTS_SIZE,
    DATAGRAM_EMPTY_RETURNS,
    DATAGRAM_HEADER_ON_QUEUE,
    DATAGRAM_HEADER_ON_SEND,
    DATAGRAM_IS_DATAGRAM_TRANSPORT,
    PIPE_READ_IS_READING,
    PIPE_READER_TRICK_ON_FIFO,
)

BufferedProtocol = protocols.BufferedProtocol
TransportSocket = trsock.TransportSocket
set_nodelay = base_events._set_nodelay  # type: ignore[attr-defined]
set_result_unless_cancelled = futures._set_result_unless_cancelled  # type: ignore[attr-defined]
SENDFILE_TRY_NATIVE = constants._SendfileMode.TRY_NATIVE
LOG_THRESHOLD_FOR_CONNLOST_WRITES = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES

class SocketTransport(transports._FlowControlMixin, transports.Transport):
    """What ``isinstance()`` sees as the class of the native ``oxloop._oxloop.SocketTransport``.

    The native transport's ``__class__`` is this class, so ``isinstance(tr, asyncio.Transport)``
    (and ``transports._FlowControlMixin``, as asyncio's sendfile fallback checks) is true, as it
    is for asyncio's own transport; ``type(tr)`` is the native class. Never instantiated.
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raise TypeError("use loop._make_socket_transport()")


def debug(msg, transport):
    logger.debug(msg, transport)


def fatal_error_debug(transport, message, exc):
    """asyncio's ``_fatal_error`` for an OSError in debug mode."""
    logger.debug("%r: %s", transport, message, exc_info=exc)


def conn_lost_warning():
    logger.warning("socket.send() raised exception.")


def unclosed(transport_repr, source=None):
    warnings.warn(f"unclosed transport {transport_repr}", ResourceWarning, source=source)


def test_selector_event(loop, fd, event):
    return selector_events._test_selector_event(loop._selector, fd, event)


def write_buffer_limits(high=None, low=None):
    """``_FlowControlMixin._set_write_buffer_limits``: the checked (high, low)."""
    if high is None:
        if low is None:
            high = 64 * 1024
        else:
            high = 4 * low
    if low is None:
        low = high // 4

    if not high >= low >= 0:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low


class _Gone:
    """Stands for a transport already freed (its weak reference in Server._clients is gone)."""


def detach_dead(server):
    """3.13's ``__del__`` detaches an unclosed transport from its server (lets wait_closed end)."""
    if ATTACH_TAKES_TRANSPORT:
        server._detach(_Gone())


# --- the datagram transport (oxloop._oxloop.DatagramTransport) ------------------------------

#: The bases of the running asyncio's datagram transport (3.12+: ``asyncio.DatagramTransport`` too).
_DATAGRAM_BASES = (transports._FlowControlMixin, transports.Transport) + (
    (transports.DatagramTransport,) if DATAGRAM_IS_DATAGRAM_TRANSPORT else ()
)


class DatagramTransport(*_DATAGRAM_BASES):  # type: ignore[misc]  # bases chosen at import
    """What ``isinstance()`` sees as the class of the native ``oxloop._oxloop.DatagramTransport``.

    Its bases are those of the running asyncio's ``_SelectorDatagramTransport`` (3.12+:
    ``asyncio.DatagramTransport`` too), so ``isinstance()`` answers as for asyncio's own
    transport. Never instantiated.
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raise TypeError("use loop._make_datagram_transport()")


def datagram_buffer(items):
    """The ``_buffer`` attribute: a deque of ``(bytes, addr)``, as asyncio keeps it."""
    import collections

    return collections.deque(items)


# --- pipe transports (oxloop._oxloop.ReadPipeTransport / WritePipeTransport) -----------------

class ReadPipeTransport(transports.ReadTransport):
    """What ``isinstance()`` sees as the class of the native ``oxloop._oxloop.ReadPipeTransport``
    (an ``asyncio.ReadTransport``, like asyncio's ``_UnixReadPipeTransport``). Never
    instantiated."""

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raise TypeError("use loop._make_read_pipe_transport()")


class WritePipeTransport(transports._FlowControlMixin, transports.WriteTransport):
    """What ``isinstance()`` sees as the class of the native ``oxloop._oxloop.WritePipeTransport``
    (like asyncio's ``_UnixWritePipeTransport``). Never instantiated."""

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raise TypeError("use loop._make_write_pipe_transport()")


def pipe_closed_by_peer(transport):
    logger.info("%r was closed by peer", transport)


def pipe_conn_lost_warning():
    logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")


def pipe_polling(loop, fd, event):
    """Whether the loop's selector watches fd for event; None without a selector (the pipe
    transports' repr)."""
    selector = getattr(loop, "_selector", None)
    if selector is None:
        return None
    return selector_events._test_selector_event(selector, fd, event)


# --- class attributes the native transports report as asyncio's classes have them -----------

#: ``_buffer_factory`` (3.9-3.11 stream transport: bytearray; datagram: collections.deque),
#: None where the running asyncio's class has none.
SOCKET_BUFFER_FACTORY = getattr(
    selector_events._SelectorSocketTransport, "_buffer_factory", None  # type: ignore[attr-defined]
)
DATAGRAM_BUFFER_FACTORY = getattr(
    selector_events._SelectorDatagramTransport, "_buffer_factory", None  # type: ignore[attr-defined]
)
