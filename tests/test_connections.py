"""create_connection (happy eyeballs, interleave, local_addr, sock=, all_errors, errors) and
connection life: resets, half-closes, writes after the peer is gone, abort() (issue 3).

Every test runs on stock asyncio and every oxloop loop; stock asyncio decides what is right.
Name resolution is replaced by a fake ``loop.getaddrinfo`` where a test needs a host name with
several addresses (this machine's "localhost" may have only one); the fake is installed the
same way on every loop.
"""

import asyncio
import errno
import logging
import os
import socket
import struct
import sys
from asyncio import constants

import pytest

PY = sys.version_info[:2]
LINGER_RST = struct.pack("ii", 1, 0)


def has_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")


class Recorder(asyncio.Protocol):
    def __init__(self, loop, keep_open=None):
        self.loop = loop
        self.keep_open = keep_open
        self.data = bytearray()
        self.events = []
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, tr):
        self.tr = tr
        self.events.append("made")
        self.made.set_result(None)

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def wait_for_data(proto, n, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(proto.data) < n:
        assert loop.time() < deadline, f"got {len(proto.data)} of {n} bytes"
        await asyncio.sleep(0.002)


class Refusing:
    """A bound, non-listening socket: connecting to its address is refused."""

    def __init__(self, family=socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.addr = self.sock.getsockname()

    def info(self):
        return (self.sock.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", self.addr)

    def close(self):
        self.sock.close()


def fake_resolver(loop, table, calls):
    """Install loop.getaddrinfo answering host names in `table` (others resolve normally)."""
    real = loop.getaddrinfo

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if host in table:
            calls.append((host, port, family, type, proto, flags))
            return list(table[host])
        return await real(host, port, family=family, type=type, proto=proto, flags=flags)

    loop.getaddrinfo = getaddrinfo


def refused_msg(addr):
    return f"[Errno {errno.ECONNREFUSED}] Connect call failed {addr}"


# ---------------------------------------------------------------------------
# create_connection


def test_connection_refused_single_address(loop, run):
    ref = Refusing()

    async def main():
        with pytest.raises(OSError) as ei:
            await loop.create_connection(asyncio.Protocol, *ref.addr)
        return ei.value

    try:
        exc = run(loop, main())
    finally:
        ref.close()
    assert type(exc) is ConnectionRefusedError
    assert exc.errno == errno.ECONNREFUSED
    assert str(exc) == refused_msg(ref.addr)


@needs_ipv6
@pytest.mark.parametrize("happy_eyeballs_delay", [None, 0.25])
def test_first_address_refused_next_one_connects(loop, run, happy_eyeballs_delay):
    """'dual.test' resolves to ::1 (nothing listens) then 127.0.0.1 (a server listens)."""
    ref6 = Refusing(socket.AF_INET6)
    calls = []

    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        addr4 = srv.sockets[0].getsockname()
        table = {"dual.test": [ref6.info(),
                               (socket.AF_INET, socket.SOCK_STREAM, 6, "", addr4)]}
        fake_resolver(loop, table, calls)
        t0 = loop.time()
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "dual.test", addr4[1],
                                              happy_eyeballs_delay=happy_eyeballs_delay)
        elapsed = loop.time() - t0
        assert tr.get_extra_info("peername") == addr4
        assert tr.get_extra_info("socket").family == socket.AF_INET
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
        return elapsed

    try:
        elapsed = run(loop, main())
    finally:
        ref6.close()
    assert len(calls) == 1
    if happy_eyeballs_delay is not None:
        # A failed attempt starts the next one at once, without waiting for the delay.
        assert elapsed < happy_eyeballs_delay


@needs_ipv6
@pytest.mark.parametrize(
    "kwargs, order",
    [
        ({}, [0, 1, 2, 3]),
        ({"interleave": 1}, [0, 2, 1, 3]),
        ({"interleave": 2}, [0, 1, 2, 3]),
        ({"happy_eyeballs_delay": 0.05}, [0, 2, 1, 3]),  # interleave defaults to 1 then
        ({"happy_eyeballs_delay": 0.05, "interleave": 2}, [0, 1, 2, 3]),
    ],
    ids=["sequential", "interleave1", "interleave2", "he-default", "he-interleave2"],
)
def test_all_refused_error_lists_attempts_in_order(loop, run, kwargs, order):
    refs = [Refusing(socket.AF_INET6), Refusing(socket.AF_INET6),
            Refusing(socket.AF_INET), Refusing(socket.AF_INET)]
    infos = [r.info() for r in refs]

    async def main():
        fake_resolver(loop, {"many.test": infos}, [])
        with pytest.raises(OSError) as ei:
            await loop.create_connection(asyncio.Protocol, "many.test", 80, **kwargs)
        return ei.value

    try:
        exc = run(loop, main())
    finally:
        for r in refs:
            r.close()
    assert type(exc) is OSError
    assert exc.errno is None
    expected = "Multiple exceptions: " + ", ".join(refused_msg(refs[i].addr) for i in order)
    assert str(exc) == expected


@pytest.mark.skipif(PY < (3, 12), reason="all_errors is 3.12+")
@pytest.mark.parametrize("happy_eyeballs_delay", [None, 0.05])
def test_all_errors_exception_group(loop, run, happy_eyeballs_delay):
    refs = [Refusing(), Refusing()]

    async def main():
        fake_resolver(loop, {"two.test": [r.info() for r in refs]}, [])
        with pytest.raises(ExceptionGroup) as ei:  # noqa: F821 (3.11+ builtin)
            await loop.create_connection(asyncio.Protocol, "two.test", 80, all_errors=True,
                                         happy_eyeballs_delay=happy_eyeballs_delay)
        return ei.value

    try:
        eg = run(loop, main())
    finally:
        for r in refs:
            r.close()
    assert eg.message == "create_connection failed"
    assert [type(e) for e in eg.exceptions] == [ConnectionRefusedError] * 2
    assert [str(e) for e in eg.exceptions] == [refused_msg(r.addr) for r in refs]


@pytest.mark.skipif(PY < (3, 12), reason="all_errors is 3.12+")
def test_all_errors_single_failure_still_a_group(loop, run):
    ref = Refusing()

    async def main():
        with pytest.raises(ExceptionGroup) as ei:  # noqa: F821
            await loop.create_connection(asyncio.Protocol, *ref.addr, all_errors=True)
        return ei.value

    try:
        eg = run(loop, main())
    finally:
        ref.close()
    (only,) = eg.exceptions
    assert type(only) is ConnectionRefusedError and str(only) == refused_msg(ref.addr)


@pytest.mark.skipif(PY >= (3, 12), reason="all_errors exists from 3.12")
def test_all_errors_unknown_before_312(loop, run):
    with pytest.raises(TypeError, match="all_errors"):
        run(loop, loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, all_errors=True))


def test_same_message_twice_raises_the_first(loop, run):
    # asyncio raises the first exception itself when every attempt failed the same way.
    ref = Refusing()

    async def main():
        fake_resolver(loop, {"same.test": [ref.info(), ref.info()]}, [])
        with pytest.raises(OSError) as ei:
            await loop.create_connection(asyncio.Protocol, "same.test", 80)
        return ei.value

    try:
        exc = run(loop, main())
    finally:
        ref.close()
    assert type(exc) is ConnectionRefusedError
    assert str(exc) == refused_msg(ref.addr)


def test_family_proto_flags_passed_to_getaddrinfo(loop, run):
    calls = []

    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        fake_resolver(loop, {"p.test": [(socket.AF_INET, socket.SOCK_STREAM, 6, "", addr)]}, calls)
        tr, pr = await loop.create_connection(
            lambda: Recorder(loop), "p.test", addr[1], family=socket.AF_INET,
            proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICSERV)
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())
    ((host, _port, family, type_, proto, flags),) = calls
    assert host == "p.test"
    assert (family, type_, proto, flags) == (socket.AF_INET, socket.SOCK_STREAM,
                                             socket.IPPROTO_TCP, socket.AI_NUMERICSERV)


def test_family_mismatch_with_ip_literal(loop, run):
    async def main():
        with pytest.raises(socket.gaierror):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", 80,
                                         family=socket.AF_INET6)

    run(loop, main())


def test_local_addr(loop, run):
    async def main():
        srv = await loop.create_server(lambda: Recorder(loop), "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        with socket.socket() as probe:  # a free local port
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()
        tr, pr = await loop.create_connection(lambda: Recorder(loop), *addr, local_addr=local)
        assert tr.get_extra_info("sockname") == local
        assert tr.get_extra_info("peername") == addr
        tr.close()
        await pr.lost

        # A local address in use: asyncio's bind error message.
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            laddr = busy.getsockname()
            with pytest.raises(OSError) as ei:
                await loop.create_connection(asyncio.Protocol, *addr, local_addr=laddr)
        srv.close()
        await srv.wait_closed()
        return laddr, ei.value

    laddr, exc = run(loop, main())
    assert type(exc) is OSError and exc.errno == errno.EADDRINUSE
    strerr = os.strerror(errno.EADDRINUSE).lower()
    detail = f"[errno {errno.EADDRINUSE}] {strerr}" if PY >= (3, 13) else strerr
    assert exc.strerror == f"error while attempting to bind on address {laddr!r}: {detail}"


def test_create_connection_with_sock(loop, run):
    async def main():
        srv = await loop.create_server(lambda: Recorder(loop), "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        s = socket.socket()
        s.connect(addr)  # blocking; create_connection makes it non-blocking
        tr, pr = await loop.create_connection(lambda: Recorder(loop), sock=s)
        assert not s.getblocking()
        assert tr.get_extra_info("socket").fileno() == s.fileno()
        assert tr.get_extra_info("peername") == addr
        assert tr.get_extra_info("sockname") == s.getsockname()
        tr.close()
        await pr.lost
        assert s.fileno() == -1
        msgs = []
        with socket.socket() as s2:
            with pytest.raises(ValueError) as ei:
                await loop.create_connection(asyncio.Protocol, *addr, sock=s2)
            msgs.append(str(ei.value))
        with pytest.raises(ValueError) as ei:
            await loop.create_connection(asyncio.Protocol)
        msgs.append(str(ei.value))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            with pytest.raises(ValueError) as ei:
                await loop.create_connection(asyncio.Protocol, sock=u)
            msgs.append(str(ei.value) == f"A Stream Socket was expected, got {u!r}")
        with pytest.raises(ValueError) as ei:
            await loop.create_connection(asyncio.Protocol, *addr, server_hostname="x")
        msgs.append(str(ei.value))
        srv.close()
        await srv.wait_closed()
        return msgs

    assert run(loop, main()) == [
        "host/port and sock can not be specified at the same time",
        "host and port was not specified and no sock specified",
        True,
        "server_hostname is only meaningful with ssl",
    ]


@needs_ipv6
def test_ipv6_literal(loop, run):
    async def main():
        srv = await loop.create_server(lambda: Recorder(loop), "::1", 0)
        addr = srv.sockets[0].getsockname()
        tr, pr = await loop.create_connection(lambda: Recorder(loop), "::1", addr[1])
        assert tr.get_extra_info("peername")[:2] == ("::1", addr[1])
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


# ---------------------------------------------------------------------------
# resets and half-closes


def shrink_buffers(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def server_and_client(loop, server_factory, client_factory=None, small_buffers=False):
    """A server and one client connection: (server, server protocol, client transport, client
    protocol). small_buffers: both sockets get small kernel buffers, so that writes queue up in
    the transports soon."""
    protos = []

    def factory():
        p = server_factory()
        protos.append(p)
        return p

    srv = await loop.create_server(factory, "127.0.0.1", 0)
    addr = srv.sockets[0].getsockname()
    client_factory = client_factory or (lambda: Recorder(loop))
    if small_buffers:
        shrink_buffers(srv.sockets[0])  # accepted sockets inherit them
        sock = socket.socket()
        shrink_buffers(sock)  # before connecting: the receive window is set at the handshake
        sock.setblocking(False)
        await loop.sock_connect(sock, addr)
        tr, pr = await loop.create_connection(client_factory, sock=sock)
    else:
        tr, pr = await loop.create_connection(client_factory, *addr)
    while not protos or not protos[0].made.done():
        await asyncio.sleep(0.001)
    return srv, protos[0], tr, pr


async def close_server(srv):
    srv.close()
    await srv.wait_closed()


@pytest.mark.parametrize("server_writing", [False, True], ids=["reading", "writing"])
def test_peer_reset(loop, run, server_writing):
    """The peer closes with SO_LINGER 0 (RST): connection_lost(ConnectionResetError)."""

    async def main():
        protos = []

        def factory():
            p = Recorder(loop)
            protos.append(p)
            return p

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.setblocking(False)
        await loop.sock_connect(c, addr)
        while not protos or not protos[0].made.done():
            await asyncio.sleep(0.001)
        sp = protos[0]
        if server_writing:
            sp.tr.pause_reading()  # only the write side can notice
            while sp.tr.get_write_buffer_size() == 0:
                sp.tr.write(b"w" * 65536)
                await asyncio.sleep(0)
        await loop.sock_sendall(c, b"some data")
        if not server_writing:
            await wait_for_data(sp, 9)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        c.close()
        if server_writing:
            sp.tr.write(b"more")  # nothing to notice the reset if the buffer is stuck
        exc = await sp.lost
        await close_server(srv)
        return sp, exc

    sp, exc = run(loop, main())
    assert type(exc) is ConnectionResetError
    assert exc.errno == errno.ECONNRESET
    assert sp.events == ["made", "lost"]
    assert sp.tr.is_closing()
    assert sp.tr.get_write_buffer_size() == 0


@pytest.mark.parametrize("keep_open", [True, False, None])
def test_eof_received_return_value(loop, run, keep_open):
    async def main():
        srv, sp, tr, pr = await server_and_client(loop, lambda: Recorder(loop, keep_open))
        assert tr.can_write_eof() and sp.tr.can_write_eof()
        tr.write(b"request")
        tr.write_eof()
        with pytest.raises(RuntimeError, match=r"^Cannot call write\(\) after write_eof\(\)$"):
            tr.write(b"x")
        tr.write_eof()  # a second write_eof() is a no-op
        await sp.eof
        assert bytes(sp.data) == b"request"
        await asyncio.sleep(0.01)
        if keep_open:
            # The transport stays open: it can still write, and closes when told to.
            assert not sp.tr.is_closing()
            assert not sp.lost.done()
            sp.tr.write(b"response")
            await wait_for_data(pr, 8)
            assert bytes(pr.data) == b"response"
            sp.tr.close()
        else:
            assert sp.tr.is_closing()
        assert await sp.lost is None
        await pr.eof
        assert await pr.lost is None  # the client's eof_received returned None: closed
        assert pr.events == ["made", "eof", "lost"]
        assert sp.events == ["made", "eof", "lost"]
        await close_server(srv)

    run(loop, main())


def test_client_keep_open_after_server_eof(loop, run):
    """A client protocol whose eof_received() returns True can still write after the server's
    write_eof()."""

    async def main():
        srv, sp, tr, pr = await server_and_client(loop, lambda: Recorder(loop, True),
                                                  lambda: Recorder(loop, True))
        sp.tr.write(b"bye")
        sp.tr.write_eof()
        await pr.eof
        assert bytes(pr.data) == b"bye"
        assert not tr.is_closing()
        tr.write(b"still here")
        await wait_for_data(sp, 10)
        assert bytes(sp.data) == b"still here"
        tr.write_eof()
        await sp.eof
        # Both directions are shut: the transports only close when told to.
        await asyncio.sleep(0.01)
        assert not tr.is_closing() and not sp.tr.is_closing()
        tr.close()
        sp.tr.close()
        assert await pr.lost is None
        assert await sp.lost is None
        await close_server(srv)

    run(loop, main())


def test_writes_after_peer_closed(loop, run, caplog):
    """The peer is gone and our side keeps writing: the write that hits the reset loses the
    connection with ConnectionResetError; later writes are dropped and, from the
    LOG_THRESHOLD_FOR_CONNLOST_WRITES-th on, each logs 'socket.send() raised exception.'."""
    extra_writes = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES + 3

    async def main():
        srv, sp, tr, pr = await server_and_client(loop, lambda: Recorder(loop),
                                                  lambda: Recorder(loop, True))
        sp.tr.close()  # FIN to the client
        await pr.eof  # keep_open: the client transport stays open
        await sp.lost
        tr.write(b"first")  # accepted by the kernel; the closed peer answers with RST
        for _ in range(500):
            await asyncio.sleep(0.002)
            if pr.lost.done():
                break
            tr.write(b"again")
        exc = await pr.lost
        for _ in range(extra_writes):
            tr.write(b"ignored")
        await close_server(srv)
        return exc, tr

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        exc, tr = run(loop, main())
    assert type(exc) is BrokenPipeError, exc
    warned = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
    assert len(warned) == extra_writes - (constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES - 1)


def test_abort_with_queued_data(loop, run):
    class Sink(Recorder):
        def connection_made(self, tr):
            super().connection_made(tr)
            asyncio.get_running_loop().call_soon(tr.pause_reading)

    async def main():
        srv, sp, tr, pr = await server_and_client(loop, lambda: Sink(loop))
        tr.set_write_buffer_limits(high=1000)
        total = 0
        while "pause" not in pr.events:
            tr.write(b"q" * 100_000)
            total += 100_000
            await asyncio.sleep(0)
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0
        assert not pr.lost.done()  # connection_lost comes in a later callback
        assert await pr.lost is None
        assert pr.events == ["made", "pause", "lost"]  # no resume_writing()
        tr.abort()  # idempotent
        tr.close()
        sp.tr.resume_reading()
        await sp.lost
        await close_server(srv)
        return total, len(sp.data)

    total, received = run(loop, main())
    assert received < total


def test_close_flushes_queued_data(loop, run):
    """close() (unlike abort()) sends everything buffered before closing."""
    payload = os.urandom(2_000_000)

    async def main():
        srv, sp, tr, pr = await server_and_client(loop, lambda: Recorder(loop))
        tr.write(payload)
        tr.close()
        assert tr.is_closing()
        await sp.eof
        assert await pr.lost is None
        assert bytes(sp.data) == payload
        await sp.lost
        await close_server(srv)

    run(loop, main())


def test_write_eof_after_buffered_data_sends_everything_first(loop, run):
    payload = os.urandom(3_000_000)

    async def main():
        srv, sp, tr, pr = await server_and_client(loop, lambda: Recorder(loop, True),
                                                  small_buffers=True)
        sp.tr.pause_reading()
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0  # more than the kernel takes at once
        tr.write_eof()
        assert not tr.is_closing()
        await asyncio.sleep(0.01)
        assert tr.get_write_buffer_size() > 0
        sp.tr.resume_reading()
        await sp.eof
        assert bytes(sp.data) == payload
        sp.tr.write(b"ack")
        sp.tr.close()
        await pr.eof
        assert bytes(pr.data) == b"ack"
        assert await pr.lost is None
        await sp.lost
        await close_server(srv)

    run(loop, main())


def test_peer_eof_while_writes_are_buffered(loop, run):
    """eof_received() returning None closes the transport, but only after its buffered data
    has been sent."""
    response = os.urandom(3_000_000)

    class Responder(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.tr.write(response)

    async def main():
        srv, sp, tr, pr = await server_and_client(loop, lambda: Responder(loop),
                                                  small_buffers=True)
        tr.pause_reading()
        tr.write(b"go")
        tr.write_eof()
        await sp.eof
        assert sp.tr.is_closing()
        assert sp.tr.get_write_buffer_size() > 0
        assert not sp.lost.done()
        tr.resume_reading()
        await pr.eof
        assert bytes(pr.data) == response
        assert await sp.lost is None
        assert await pr.lost is None
        await close_server(srv)

    run(loop, main())


def test_abort_inside_data_received(loop, run):
    class Aborter(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.tr.abort()
            self.tr.write(b"dropped")  # after abort: ignored (the connection is lost)

    async def main():
        srv, sp, tr, pr = await server_and_client(loop, lambda: Aborter(loop))
        tr.write(b"x")
        assert await sp.lost is None
        assert sp.events == ["made", "lost"]
        await pr.eof
        assert await pr.lost is None
        assert bytes(pr.data) == b""
        await close_server(srv)

    run(loop, main())
