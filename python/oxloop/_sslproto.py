"""Slow paths of the native TLS layer (``oxloop._oxloop.SSLProtocol``).

The TLS state machine and its data path (decrypt into the application's buffer, encrypt on
write, flow control) are in Rust (``crates/oxloop-py/src/sslproto.rs``), a reimplementation of
asyncio's ``sslproto.py`` (3.11+). What is here runs once per connection, on errors or in
debug mode, and uses the running asyncio's own objects (logger, constants, exception types), so
messages and types are asyncio's.
"""

import ssl
from asyncio import constants, exceptions, protocols, sslproto, transports
from asyncio.log import logger

from ._compat import ABORT_TAKES_EXC  # noqa: F401  (read by the native TLS layer)

SSLAgainErrors = (ssl.SSLWantReadError, ssl.SSLSyscallError)
SSLError = ssl.SSLError
CertificateError = ssl.CertificateError
MemoryBIO = ssl.MemoryBIO
SSLObject = ssl.SSLObject
BufferedProtocol = protocols.BufferedProtocol
CancelledError = exceptions.CancelledError
TimeoutError = exceptions.TimeoutError

SSL_HANDSHAKE_TIMEOUT = constants.SSL_HANDSHAKE_TIMEOUT
SSL_SHUTDOWN_TIMEOUT = constants.SSL_SHUTDOWN_TIMEOUT
FLOW_CONTROL_HIGH_WATER_SSL_READ = constants.FLOW_CONTROL_HIGH_WATER_SSL_READ
FLOW_CONTROL_HIGH_WATER_SSL_WRITE = constants.FLOW_CONTROL_HIGH_WATER_SSL_WRITE
LOG_THRESHOLD_FOR_CONNLOST_WRITES = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES
SENDFILE_FALLBACK = constants._SendfileMode.FALLBACK

def add_flowcontrol_defaults(high, low, kb):
    return sslproto.add_flowcontrol_defaults(high, low, kb)


def create_transport_context(server_side, server_hostname):
    return sslproto._create_transport_context(server_side, server_hostname)


class SSLProtocol(protocols.BufferedProtocol):
    """What ``isinstance()`` sees as the class of the native ``oxloop._oxloop.SSLProtocol``.

    The transport under TLS reads into the protocol's buffer (``get_buffer``/``buffer_updated``)
    because ``isinstance(ssl_protocol, asyncio.BufferedProtocol)`` holds, as for asyncio's
    ``SSLProtocol``. Never instantiated.
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raise TypeError("use oxloop._oxloop.SSLProtocol()")


class _SSLProtocolTransport(transports._FlowControlMixin, transports.Transport):
    """What ``isinstance()`` sees as the class of the native ``oxloop._oxloop._SSLProtocolTransport``
    (the transport an application protocol gets over TLS). Never instantiated.
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raise TypeError("use oxloop._oxloop.SSLProtocol()")


def log_debug(msg, *args):
    logger.debug(msg, *args)


def log_warning(msg):
    logger.warning(msg)


def fatal_error_debug(protocol, message, exc):
    """asyncio's ``_fatal_error`` for an OSError in debug mode."""
    logger.debug("%r: %s", protocol, message, exc_info=exc)


def unclosed_warning():
    import warnings

    warnings.warn("unclosed transport <asyncio._SSLProtocolTransport object>", ResourceWarning)
