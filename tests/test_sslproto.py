"""The native TLS layer (``oxloop._oxloop.SSLProtocol``, Python 3.11+) against asyncio's own.

Each test runs on stock asyncio (the reference) and on oxloop loops: native TLS over the native
transport, native TLS over asyncio's Python transport (OXLOOP_NATIVE_TRANSPORTS=0 and a Python
selectors object), and asyncio's SSLProtocol (OXLOOP_NATIVE_TLS=0). The results must be equal:
data, callback order, exception types, exception-handler calls.
"""

import asyncio
import gc
import logging
import os
import selectors
import ssl
import sys
import weakref

import pytest

from conftest import require_oxloop

try:
    from test.test_asyncio import utils as test_utils
except ImportError:  # pragma: no cover
    test_utils = None

NATIVE_TLS = sys.version_info >= (3, 11)

pytestmark = [
    pytest.mark.skipif(test_utils is None, reason="CPython's test package is missing"),
    # 3.9/3.10 keep their own, older sslproto on every loop (its different closing and flow
    # control behaviour is covered, against stock asyncio, by test_ssl.py).
    pytest.mark.skipif(not NATIVE_TLS, reason="the native TLS layer is asyncio's 3.11+ sslproto"),
]

KINDS = ["asyncio", "native", "native-pytransport", "native-pyselector", "asyncio-tls"]


@pytest.fixture(params=KINDS)
def tloop(request, monkeypatch):
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    if request.param == "asyncio":
        loop = asyncio.SelectorEventLoop()
    else:
        ox = require_oxloop()
        monkeypatch.setenv("OXLOOP_NATIVE_TLS", "0" if request.param == "asyncio-tls" else "1")
        monkeypatch.setenv(
            "OXLOOP_NATIVE_TRANSPORTS", "0" if request.param == "native-pytransport" else "1"
        )
        sel = selectors.DefaultSelector() if request.param == "native-pyselector" else None
        loop = ox.SelectorEventLoop(sel)
    loop.kind = request.param
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
    loop.handler_calls = calls
    yield loop
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del loop
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == fds, "fd leak"
    assert not calls, f"unexpected exception handler calls: {calls}"


def run(loop, coro, timeout=15):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def expect_native(loop):
    return NATIVE_TLS and loop.kind in ("native", "native-pytransport", "native-pyselector")


def check_tls_kind(loop, tr):
    if expect_native(loop):
        assert type(tr).__module__ == "oxloop._oxloop"
        assert type(tr).__name__ == "_SSLProtocolTransport"
        assert type(tr._ssl_protocol).__name__ == "SSLProtocol"
    else:
        assert type(tr).__module__ == "asyncio.sslproto"
    assert isinstance(tr, asyncio.Transport)
    assert isinstance(tr, asyncio.transports._FlowControlMixin)


class Echo(asyncio.Protocol):
    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.tr.write(data)


class Collect(asyncio.Protocol):
    """Records data and the order of the callbacks."""

    def __init__(self, loop, expect=None, eof_result=None):
        self.events = []
        self.data = bytearray()
        self.expect = expect
        self.eof_result = eof_result
        self.done = loop.create_future()
        self.got = loop.create_future()

    def connection_made(self, tr):
        self.tr = tr
        self.events.append("made")

    def data_received(self, data):
        assert type(data) is bytes
        self.data += data
        if self.expect is not None and len(self.data) >= self.expect and not self.got.done():
            self.got.set_result(None)

    def eof_received(self):
        self.events.append("eof")
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc)))
        if not self.done.done():
            self.done.set_result(exc)


async def tls_pair(loop, server_factory, client_factory, **client_kw):
    srv = await loop.create_server(
        server_factory, "127.0.0.1", 0, ssl=test_utils.simple_server_sslcontext()
    )
    port = srv.sockets[0].getsockname()[1]
    tr, proto = await loop.create_connection(
        client_factory, "127.0.0.1", port,
        ssl=test_utils.simple_client_sslcontext(), server_hostname="", **client_kw
    )
    return srv, tr, proto


async def close_server(srv):
    srv.close()
    await srv.wait_closed()


def test_echo_and_extra_info(tloop):
    async def main():
        srv, tr, proto = await tls_pair(tloop, Echo, lambda: Collect(tloop))
        check_tls_kind(tloop, tr)
        total = 0
        for size in (1, 1000, 16 * 1024 + 1, 300 * 1024):
            tr.write(b"a" * size)
            total += size
            proto.expect = total
            proto.got = tloop.create_future()
            await proto.got
        assert bytes(proto.data) == b"a" * total
        assert isinstance(tr.get_extra_info("ssl_object"), ssl.SSLObject)
        assert isinstance(tr.get_extra_info("sslcontext"), ssl.SSLContext)
        assert tr.get_extra_info("cipher")[1].startswith("TLS")
        assert tr.get_extra_info("peercert") == {}  # the client does not verify here
        assert "compression" in dir(tr.get_extra_info("ssl_object"))
        assert tr.get_extra_info("compression") is None
        assert tr.get_extra_info("peername")[1] == srv.sockets[0].getsockname()[1]
        assert tr.get_extra_info("sockname")[0] == "127.0.0.1"
        assert tr.get_extra_info("socket") is not None
        assert tr.get_extra_info("nope", 42) == 42
        assert not tr.can_write_eof()
        with pytest.raises(NotImplementedError):
            tr.write_eof()
        assert tr.get_write_buffer_limits() == (128 * 1024, 512 * 1024)
        assert tr.get_read_buffer_limits() == (64 * 1024, 256 * 1024)
        with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got str"):
            tr.write("x")
        tr.writelines([b"x", bytearray(b"y"), memoryview(b"z")])
        proto.expect = total + 3
        proto.got = tloop.create_future()
        await proto.got
        assert bytes(proto.data[-3:]) == b"xyz"
        tr.close()
        assert tr.is_closing()
        assert await proto.done is None
        # Our close_notify is answered: the shutdown completes with eof_received().
        assert proto.events == ["made", "eof", ("lost", type(None))]
        await close_server(srv)

    run(tloop, main())


class BufferedCollect(asyncio.BufferedProtocol):
    def __init__(self, loop, expect, size=1000):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.expect = expect
        self.sizes = []
        self.events = []
        self.got = loop.create_future()
        self.done = loop.create_future()

    def connection_made(self, tr):
        self.tr = tr

    def get_buffer(self, sizehint):
        self.sizes.append(sizehint)
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.data += self.buf[:nbytes]
        if len(self.data) >= self.expect and not self.got.done():
            self.got.set_result(None)

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc)))
        self.done.set_result(exc)


def test_buffered_protocol_over_tls(tloop):
    payload = bytes(range(256)) * 4096  # 1 MiB

    class Sender(asyncio.Protocol):
        def connection_made(self, tr):
            tr.write(payload)
            tr.close()

    async def main():
        srv, tr, proto = await tls_pair(tloop, Sender, lambda: BufferedCollect(tloop, len(payload)))
        check_tls_kind(tloop, tr)
        await proto.got
        assert bytes(proto.data) == payload
        assert all(isinstance(s, int) for s in proto.sizes)
        # close_notify from the server: eof_received, then connection_lost(None).
        assert await proto.done is None
        assert proto.events == ["eof", ("lost", type(None))]
        await close_server(srv)

    run(tloop, main())


@pytest.mark.parametrize("keep_open", [None, True])
def test_eof_received_over_tls(tloop, keep_open, caplog):
    class Closer(asyncio.Protocol):
        def connection_made(self, tr):
            tr.write(b"bye")
            tr.close()

    async def main():
        srv, tr, proto = await tls_pair(
            tloop, Closer, lambda: Collect(tloop, expect=3, eof_result=keep_open)
        )
        exc = await proto.done
        assert exc is None
        assert bytes(proto.data) == b"bye"
        assert proto.events == ["made", "eof", ("lost", type(None))]
        await close_server(srv)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(tloop, main())
    warned = [r for r in caplog.records if "has no effect when using ssl" in r.getMessage()]
    if sys.version_info >= (3, 11):
        assert len(warned) == (1 if keep_open else 0)


def test_write_flow_control_counts_backlog(tloop):
    """A peer that does not read: the client's write buffer (plaintext backlog + encrypted data
    held back while the socket transport is paused) reaches the high-water mark."""
    chunk = b"z" * (256 * 1024)

    class Slow(asyncio.Protocol):
        def __init__(self):
            self.n = 0

        def connection_made(self, tr):
            self.tr = tr
            tr.pause_reading()
            slow.append(self)

        def data_received(self, data):
            self.n += len(data)

    slow = []

    class Writer(Collect):
        def pause_writing(self):
            self.events.append("pause")
            if not self.paused.done():
                self.paused.set_result(self.tr.get_write_buffer_size())

        def resume_writing(self):
            self.events.append("resume")
            if not self.resumed.done():
                self.resumed.set_result(self.tr.get_write_buffer_size())

    async def main():
        def factory():
            w = Writer(tloop)
            w.paused = tloop.create_future()
            w.resumed = tloop.create_future()
            return w

        srv, tr, proto = await tls_pair(tloop, Slow, factory)
        sent = 0
        while not proto.paused.done() and sent < 200 * len(chunk):
            tr.write(chunk)
            sent += len(chunk)
            await asyncio.sleep(0)
        size_at_pause = await proto.paused
        high = tr.get_write_buffer_limits()[1]
        assert size_at_pause >= high
        assert tr.get_write_buffer_size() >= high
        assert tr._protocol_paused
        slow[0].tr.resume_reading()
        size_at_resume = await proto.resumed
        assert size_at_resume <= tr.get_write_buffer_limits()[0]
        while slow[0].n < sent:
            await asyncio.sleep(0.01)
        assert slow[0].n == sent
        assert proto.events == ["made", "pause", "resume"]
        tr.close()
        await proto.done
        await close_server(srv)

    run(tloop, main(), timeout=30)


def test_abort_mid_transfer(tloop):
    class Sink(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr
            sinks.append(self)
            self.lost = tloop.create_future()

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    sinks = []

    async def main():
        srv, tr, proto = await tls_pair(tloop, Sink, lambda: Collect(tloop))
        for _ in range(20):
            tr.write(b"q" * 100_000)
        tr.abort()
        assert tr.is_closing()
        assert await proto.done is None
        assert proto.events == ["made", ("lost", type(None))]
        # writes after abort are dropped silently (as asyncio)
        tr.write(b"late")
        await sinks[0].lost
        await close_server(srv)

    run(tloop, main())


def test_pause_resume_reading_and_set_protocol(tloop):
    async def main():
        srv, tr, proto = await tls_pair(tloop, Echo, lambda: Collect(tloop))
        assert tr.is_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        tr.write(b"ping")
        await asyncio.sleep(0.1)
        assert proto.data == b""
        tr.resume_reading()
        proto.expect = 4
        await proto.got
        assert proto.data == b"ping"
        other = Collect(tloop, expect=4)
        tr.set_protocol(other)
        assert tr.get_protocol() is other
        tr.write(b"pong")
        await other.got
        assert other.data == b"pong"
        assert proto.data == b"ping"
        tr.close()
        await other.done
        await close_server(srv)

    run(tloop, main())


class LateEcho(asyncio.Protocol):
    """An echo protocol that may receive data before connection_made() (start_tls: data can
    arrive with the handshake's last flight, before the awaiting task runs)."""

    tr = None

    def __init__(self):
        self.pending = []

    def connection_made(self, tr):
        self.tr = tr
        for d in self.pending:
            tr.write(d)

    def data_received(self, data):
        if self.tr is None:
            self.pending.append(data)
        else:
            self.tr.write(data)


def test_start_tls_upgrade(tloop):
    server_ctx = test_utils.simple_server_sslcontext()

    class Upgrader(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr

        def data_received(self, data):
            assert data == b"STARTTLS"
            tloop.create_task(self.upgrade())

        async def upgrade(self):
            echo = LateEcho()
            tr = await tloop.start_tls(self.tr, echo, server_ctx, server_side=True)
            echo.connection_made(tr)

    async def main():
        srv = await tloop.create_server(Upgrader, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        tr, proto = await tloop.create_connection(lambda: Collect(tloop), "127.0.0.1", port)
        tr.write(b"STARTTLS")
        await asyncio.sleep(0.05)
        ttr = await tloop.start_tls(
            tr, proto, test_utils.simple_client_sslcontext(), server_hostname=""
        )
        check_tls_kind(tloop, ttr)
        proto.expect = 5
        ttr.write(b"hello")
        await proto.got
        assert proto.data == b"hello"
        ttr.close()
        await proto.done
        await close_server(srv)

    run(tloop, main())


def test_handshake_timeout(tloop):
    async def main():
        # A plain TCP server that never speaks TLS.
        srv = await tloop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer than"):
            await tloop.create_connection(
                asyncio.Protocol, "127.0.0.1", port,
                ssl=test_utils.simple_client_sslcontext(), server_hostname="",
                ssl_handshake_timeout=0.2,
            )
        await close_server(srv)

    run(tloop, main())


def test_failed_verification(tloop):
    async def main():
        srv = await tloop.create_server(
            asyncio.Protocol, "127.0.0.1", 0, ssl=test_utils.simple_server_sslcontext()
        )
        port = srv.sockets[0].getsockname()[1]
        ctx = ssl.create_default_context()  # does not trust the test certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            await tloop.create_connection(
                asyncio.Protocol, "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
            )
        await close_server(srv)

    run(tloop, main())
    # The server side logs its failed handshake through the exception handler (an SSLError,
    # not an OSError): the same on every loop.
    msgs = {c["message"] for c in tloop.handler_calls}
    assert msgs <= {"SSL handshake failed"}
    tloop.handler_calls.clear()


def test_protocol_and_transport_are_collected(tloop):
    async def main():
        srv, tr, proto = await tls_pair(tloop, Echo, lambda: Collect(tloop, expect=2))
        tr.write(b"hi")
        await proto.got
        refs = [weakref.ref(tr), weakref.ref(proto), weakref.ref(tr.get_extra_info("sslcontext"))]
        if expect_native(tloop):
            refs.append(weakref.ref(tr._ssl_protocol))
        tr.close()
        await proto.done
        await close_server(srv)
        return refs

    refs = run(tloop, main())
    tloop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)


@pytest.mark.skipif(not NATIVE_TLS, reason="native TLS is used on Python 3.11+")
def test_switch_native_tls(monkeypatch):
    ox = require_oxloop()
    for value, native in (("1", True), ("0", False)):
        monkeypatch.setenv("OXLOOP_NATIVE_TLS", value)
        loop = ox.SelectorEventLoop()
        monkeypatch.setenv("OXLOOP_NATIVE_TLS", "1" if value == "0" else "0")  # read once

        async def main():
            srv, tr, proto = await tls_pair(loop, Echo, lambda: Collect(loop))
            kind = type(tr).__module__
            tr.close()
            await proto.done
            await close_server(srv)
            return kind

        try:
            kind = run(loop, main())
        finally:
            loop.close()
        assert kind == ("oxloop._oxloop" if native else "asyncio.sslproto")


@pytest.mark.skipif(not NATIVE_TLS, reason="native TLS is used on Python 3.11+")
def test_unclosed_transport_warns():
    ox = require_oxloop()
    loop = ox.SelectorEventLoop()
    try:
        proto = ox._oxloop.SSLProtocol(
            loop, asyncio.Protocol(), test_utils.simple_client_sslcontext(), None
        )
        tr = proto._app_transport
        assert not tr.is_closing()
        del proto
        with pytest.warns(ResourceWarning, match="unclosed transport"):
            del tr
            gc.collect()
    finally:
        loop.close()


def _buffer_calls(cls, loop):
    """get_buffer(n) / buffer_updated(nbytes) with arguments of every kind, before any
    connection (state UNWRAPPED: the data only goes to the incoming BIO)."""
    from fractions import Fraction

    def outcome(f):
        try:
            r = f()
        except Exception as exc:
            return (type(exc).__name__, str(exc))
        return ("ok", type(r).__name__, len(r) if hasattr(r, "__len__") else None)

    proto = cls(loop, asyncio.Protocol(), test_utils.simple_client_sslcontext(),
                loop.create_future())
    got = []
    for n in [-1, 0, 5, 10**400, -10**400, 1.5, float("nan"), "x", None, True,
              Fraction(1, 2), 2**70]:
        got.append(("get_buffer", repr(n)[:20], outcome(lambda: proto.get_buffer(n))))
    for n in [5, -1, 0, None, 10**400, 1.5, "x", True, 2**70]:
        got.append(("buffer_updated", repr(n)[:20], outcome(lambda: proto.buffer_updated(n)),
                    proto._get_read_buffer_size()))
    return got


def test_get_buffer_and_buffer_updated_take_any_argument_as_asyncio():
    # asyncio compares n with 0 and max_size and slices its buffer with nbytes: any int (also
    # 10**400), None for nbytes, and the errors of other types are Python's own.
    from asyncio import sslproto

    ox = require_oxloop()
    ref_loop = asyncio.SelectorEventLoop()
    loop = ox.SelectorEventLoop()
    try:
        want = _buffer_calls(sslproto.SSLProtocol, ref_loop)
        got = _buffer_calls(ox._oxloop.SSLProtocol, loop)
    finally:
        ref_loop.close()
        loop.close()
    assert got == want
