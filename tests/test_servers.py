"""Servers (asyncio.base_events.Server and loop.create_server): issue 3.

Every test runs on stock asyncio and every oxloop loop; stock asyncio decides what is right, and
where asyncio's behaviour changed between versions the test branches on sys.version_info exactly
as asyncio does.
"""

import asyncio
import errno
import os
import resource
import socket
import sys
from asyncio import constants

import pytest

from helpers import run_once

PY = sys.version_info[:2]


def has_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = has_ipv6()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")


class ServerProto(asyncio.Protocol):
    """Echoes; records its life in the shared `log` list."""

    def __init__(self, loop, log):
        self.loop = loop
        self.log = log
        self.lost = loop.create_future()
        log.append(self)

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.tr.write(data)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def echo_once(addr, payload=b"ping", family=socket.AF_INET):
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        await loop.sock_connect(s, addr)
        await loop.sock_sendall(s, payload)
        got = b""
        while len(got) < len(payload):
            data = await loop.sock_recv(s, 100)
            assert data
            got += data
        return got


def blocking_client(addr, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(addr)
    return s


# ---------------------------------------------------------------------------
# fd exhaustion


def test_server_survives_fd_exhaustion(loop, run, exc_handler_calls):
    """accept() failing with EMFILE: asyncio reports 'socket.accept() out of system resource',
    stops accepting for ACCEPT_RETRY_DELAY, keeps serving existing connections and accepts
    again once fds are available."""
    backlog = 3
    protos = []

    async def main():
        srv = await loop.create_server(lambda: ServerProto(loop, protos), "127.0.0.1", 0,
                                       backlog=backlog)
        addr = srv.sockets[0].getsockname()
        listen_fd = srv.sockets[0].fileno()
        r1, w1 = await asyncio.open_connection(*addr)
        w1.write(b"one")
        assert await r1.readexactly(3) == b"one"
        assert len(protos) == 1

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        dummies = []
        pending = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(highest + 16, hard), hard))
            while True:
                try:
                    dummies.append(os.open(os.devnull, os.O_RDONLY))
                except OSError as exc:
                    assert exc.errno == errno.EMFILE
                    break
            # No fd is left: the kernel completes the handshake, accept() cannot.
            pending.setblocking(False)
            try:
                pending.connect(addr)
            except BlockingIOError:
                pass
            for _ in range(400):
                if exc_handler_calls:
                    break
                await asyncio.sleep(0.005)
            t_failed = loop.time()
            assert exc_handler_calls, "accept() never failed"
            # asyncio's accept loop keeps calling accept() `backlog` times in that one
            # callback, reporting each failure (and scheduling a retry for each).
            assert len(exc_handler_calls) == backlog
            for lp, ctx in exc_handler_calls:
                assert lp is loop
                assert set(ctx) == {"message", "exception", "socket"}
                assert ctx["message"] == "socket.accept() out of system resource"
                assert type(ctx["exception"]) is OSError
                assert ctx["exception"].errno == errno.EMFILE
                assert isinstance(ctx["socket"], asyncio.trsock.TransportSocket)
                assert ctx["socket"].fileno() == listen_fd
            exc_handler_calls.clear()

            # Existing connections keep being served while accepting is suspended.
            w1.write(b"two")
            assert await r1.readexactly(3) == b"two"
            await asyncio.sleep(0.2)
            assert len(protos) == 1
            assert exc_handler_calls == []  # the listening fd is not watched meanwhile
        finally:
            for fd in dummies:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        # With fds free again, the retry ACCEPT_RETRY_DELAY later accepts the waiting client.
        for _ in range(600):
            if len(protos) == 2:
                break
            await asyncio.sleep(0.005)
        t_accepted = loop.time()
        assert len(protos) == 2
        assert t_accepted - t_failed >= constants.ACCEPT_RETRY_DELAY - 0.25
        assert exc_handler_calls == []
        try:
            await loop.sock_sendall(pending, b"late")
            got = b""
            while len(got) < 4:
                got += await loop.sock_recv(pending, 10)
            assert got == b"late"
        finally:
            pending.close()
        # ... and new connections are accepted at once.
        assert await echo_once(addr, b"fresh") == b"fresh"
        assert len(protos) == 3
        w1.close()
        await w1.wait_closed()
        srv.close()
        await srv.wait_closed()
        for p in protos:
            await p.lost

    run(loop, main(), timeout=20)
    assert exc_handler_calls == []


# ---------------------------------------------------------------------------
# Server objects


def test_server_object_api(loop, run):
    protos = []

    async def main():
        srv = await loop.create_server(lambda: ServerProto(loop, protos), "127.0.0.1", 0)
        assert isinstance(srv, asyncio.AbstractServer)
        assert srv.get_loop() is loop
        assert srv.is_serving()
        socks = srv.sockets
        assert type(socks) is tuple and len(socks) == 1
        (ts,) = socks
        assert isinstance(ts, asyncio.trsock.TransportSocket)
        assert ts.family == socket.AF_INET and ts.type == socket.SOCK_STREAM
        addr = ts.getsockname()
        assert addr[0] == "127.0.0.1" and addr[1] > 0
        assert srv.sockets is not socks  # a new tuple each time, as asyncio
        assert repr(srv) == f"<Server sockets={srv.sockets!r}>"
        assert ts.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert await echo_once(addr) == b"ping"
        srv.close()
        assert not srv.is_serving()
        assert srv.sockets == ()
        assert ts.fileno() == -1
        srv.close()  # idempotent
        await srv.wait_closed()
        await srv.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await echo_once(addr)
        await protos[0].lost

    run(loop, main())


def test_start_serving_false_then_start_serving(loop, run):
    protos = []

    async def main():
        srv = await loop.create_server(lambda: ServerProto(loop, protos), "127.0.0.1", 0,
                                       start_serving=False)
        assert not srv.is_serving()
        addr = srv.sockets[0].getsockname()
        # Not listening yet: asyncio calls listen() in start_serving().
        with pytest.raises(ConnectionRefusedError):
            await echo_once(addr)
        assert await srv.start_serving() is None
        assert srv.is_serving()
        await srv.start_serving()  # no-op
        assert await echo_once(addr, b"ok!") == b"ok!"
        srv.close()
        await srv.wait_closed()
        await protos[0].lost
        assert len(protos) == 1

    run(loop, main())


def test_serve_forever_and_its_cancellation(loop, run):
    protos = []

    async def main():
        srv = await loop.create_server(lambda: ServerProto(loop, protos), "127.0.0.1", 0,
                                       start_serving=False)
        addr = srv.sockets[0].getsockname()
        task = asyncio.ensure_future(srv.serve_forever())
        await asyncio.sleep(0)
        assert srv.is_serving()
        with pytest.raises(RuntimeError) as ei:
            await srv.serve_forever()
        assert str(ei.value) == f"server {srv!r} is already being awaited on serve_forever()"
        assert await echo_once(addr, b"forever") == b"forever"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Cancelling serve_forever() closes the server.
        assert not srv.is_serving()
        assert srv.sockets == ()
        with pytest.raises(RuntimeError) as ei:
            await srv.serve_forever()
        assert str(ei.value) == f"server {srv!r} is closed"
        with pytest.raises(ConnectionRefusedError):
            await echo_once(addr)
        await protos[0].lost

    run(loop, main())


def test_close_while_serving_forever(loop, run):
    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        task = asyncio.ensure_future(srv.serve_forever())
        await asyncio.sleep(0)
        srv.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await srv.wait_closed()

    run(loop, main())


def test_async_with_server(loop, run):
    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        async with srv as entered:
            assert entered is srv
            assert srv.is_serving()
        assert not srv.is_serving()
        assert srv.sockets == ()

    run(loop, main())


def test_wait_closed_with_live_connection(loop, run):
    """3.12+: wait_closed() waits until every connection is gone; before, it returned as soon
    as the server was closed."""
    protos = []

    async def main():
        srv = await loop.create_server(lambda: ServerProto(loop, protos), "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        r, w = await asyncio.open_connection(*addr)
        w.write(b"hi")
        assert await r.readexactly(2) == b"hi"
        srv.close()
        waiter = asyncio.ensure_future(srv.wait_closed())
        await asyncio.sleep(0.05)
        if PY >= (3, 12):
            assert not waiter.done()
            # The connection still works after close().
            w.write(b"yo")
            assert await r.readexactly(2) == b"yo"
            w.close()
            await w.wait_closed()
            await asyncio.wait_for(waiter, 5)
            assert protos[0].lost.done()
        else:
            assert waiter.done()
            await waiter
            w.close()
            await w.wait_closed()
            await protos[0].lost

    run(loop, main())


def test_wait_closed_before_close_waits_for_close(loop, run):
    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        waiter = asyncio.ensure_future(srv.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiter.done()
        srv.close()
        await asyncio.wait_for(waiter, 5)

    run(loop, main())


@pytest.mark.skipif(PY < (3, 13), reason="Server.close_clients/abort_clients are 3.13+")
def test_close_clients(loop, run):
    protos = []

    async def main():
        srv = await loop.create_server(lambda: ServerProto(loop, protos), "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        clients = [await asyncio.open_connection(*addr) for _ in range(2)]
        for r, w in clients:
            w.write(b"x")
            assert await r.readexactly(1) == b"x"
        srv.close()
        waiter = asyncio.ensure_future(srv.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiter.done()
        assert srv.close_clients() is None
        for p in protos:
            assert p.tr.is_closing()
            assert await p.lost is None
        for r, w in clients:
            assert await r.read() == b""
            w.close()
            await w.wait_closed()
        await asyncio.wait_for(waiter, 5)

    run(loop, main())


@pytest.mark.skipif(PY < (3, 13), reason="Server.close_clients/abort_clients are 3.13+")
def test_abort_clients_drops_queued_data(loop, run):
    protos = []
    big = b"d" * 4_000_000

    class Writer(ServerProto):
        def connection_made(self, tr):
            super().connection_made(tr)
            tr.write(big)

    async def main():
        srv = await loop.create_server(lambda: Writer(loop, protos), "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        with socket.socket() as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.setblocking(False)
            await loop.sock_connect(c, addr)
            for _ in range(200):
                if protos and hasattr(protos[0], "tr") and protos[0].tr.get_write_buffer_size():
                    break
                await asyncio.sleep(0.005)
            assert protos[0].tr.get_write_buffer_size() > 0
            srv.close()
            srv.abort_clients()
            assert await protos[0].lost is None
            assert protos[0].tr.get_write_buffer_size() == 0
            await asyncio.wait_for(srv.wait_closed(), 5)
            got = 0
            while True:
                try:
                    data = await loop.sock_recv(c, 65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                got += len(data)
            assert got < len(big)

    run(loop, main())


def test_host_none_binds_every_family(loop, run):
    infos = socket.getaddrinfo(None, 0, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                               socket.AI_PASSIVE)
    expected = sorted({(info[0], info[4][0]) for info in infos})

    async def main():
        for host in (None, ""):
            srv = await loop.create_server(asyncio.Protocol, host, 0)
            got = sorted((s.family, s.getsockname()[0]) for s in srv.sockets)
            assert got == expected
            for s in srv.sockets:
                port = s.getsockname()[1]
                if s.family == socket.AF_INET6:
                    assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                    r, w = await asyncio.open_connection("::1", port)
                else:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                await w.wait_closed()
            srv.close()
            await srv.wait_closed()

    run(loop, main())


@needs_ipv6
def test_list_of_hosts(loop, run):
    protos = []

    async def main():
        srv = await loop.create_server(lambda: ServerProto(loop, protos), ["127.0.0.1", "::1"], 0)
        by_family = {s.family: s.getsockname() for s in srv.sockets}
        assert set(by_family) == {socket.AF_INET, socket.AF_INET6}
        assert by_family[socket.AF_INET][0] == "127.0.0.1"
        assert by_family[socket.AF_INET6][0] == "::1"
        assert await echo_once(by_family[socket.AF_INET], b"v4") == b"v4"
        assert await echo_once(by_family[socket.AF_INET6], b"v6", socket.AF_INET6) == b"v6"
        srv.close()
        await srv.wait_closed()
        for p in protos:
            await p.lost
        assert len(protos) == 2

    run(loop, main())


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["inet", "inet6"])
def test_family_filters_addresses(loop, run, family):
    if family == socket.AF_INET6 and not HAS_IPV6:
        pytest.skip("no IPv6")

    async def main():
        srv = await loop.create_server(asyncio.Protocol, None, 0, family=family)
        assert [s.family for s in srv.sockets] == [family]
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_reuse_address_and_reuse_port(loop, run):
    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, reuse_address=False)
        s = srv.sockets[0]
        assert not s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert not s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        addr = s.getsockname()
        with pytest.raises(OSError) as ei:
            await loop.create_server(asyncio.Protocol, *addr)
        exc = ei.value
        assert type(exc) is OSError and exc.errno == errno.EADDRINUSE
        strerr = os.strerror(errno.EADDRINUSE).lower()
        if PY >= (3, 13):
            detail = f"[errno {errno.EADDRINUSE}] {strerr}"
        else:
            detail = strerr
        assert exc.strerror == f"error while attempting to bind on address {addr!r}: {detail}"
        assert exc.__suppress_context__ and exc.__cause__ is None
        srv.close()
        await srv.wait_closed()

        srv1 = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, reuse_port=True)
        s1 = srv1.sockets[0]
        assert s1.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        assert s1.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)  # the posix default
        srv2 = await loop.create_server(asyncio.Protocol, *s1.getsockname(), reuse_port=True)
        assert srv2.sockets[0].getsockname() == s1.getsockname()
        for x in (srv1, srv2):
            x.close()
            await x.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("backlog", [1, 100])
def test_backlog_bounds_accepts_per_wakeup(loop, run, backlog):
    """asyncio accepts at most `backlog` connections per readiness callback."""
    protos = []
    srv = run(loop, loop.create_server(lambda: ServerProto(loop, protos), "127.0.0.1", 0,
                                       backlog=backlog))
    addr = srv.sockets[0].getsockname()
    clients = [blocking_client(addr) for _ in range(2)]  # both in the accept queue now
    try:
        counts = []
        for _ in range(6):
            run_once(loop)
            counts.append(len(protos))
        assert counts[-1] == 2
        steps = [b - a for a, b in zip([0] + counts, counts)]
        if backlog == 1:
            assert max(steps) == 1, counts
        else:
            assert max(steps) == 2, counts
    finally:
        for c in clients:
            c.close()
        srv.close()
        run(loop, srv.wait_closed())
        for p in protos:
            run(loop, p.lost)


@pytest.mark.skipif(PY < (3, 13), reason="create_server(keep_alive=) is 3.13+")
@pytest.mark.parametrize("keep_alive", [None, False, True])
def test_keep_alive(loop, run, keep_alive):
    protos = []

    async def main():
        srv = await loop.create_server(lambda: ServerProto(loop, protos), "127.0.0.1", 0,
                                       keep_alive=keep_alive)
        listening = srv.sockets[0]
        on = listening.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert bool(on) == bool(keep_alive)
        assert await echo_once(listening.getsockname()) == b"ping"
        accepted = protos[0].tr.get_extra_info("socket")
        assert bool(accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) == bool(keep_alive)
        srv.close()
        await srv.wait_closed()
        await protos[0].lost

    run(loop, main())


@pytest.mark.skipif(PY >= (3, 13), reason="keep_alive exists from 3.13")
def test_keep_alive_unknown_before_313(loop, run):
    with pytest.raises(TypeError, match="keep_alive"):
        run(loop, loop.create_server(asyncio.Protocol, "127.0.0.1", 0, keep_alive=True))


def test_connect_accepted_socket(loop, run):
    protos = []

    async def main():
        with socket.socket() as lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            client = blocking_client(lsock.getsockname())
            conn, peer = lsock.accept()  # a raw, blocking accepted socket
        with client:
            tr, pr = await loop.connect_accepted_socket(lambda: ServerProto(loop, protos), conn,
                                                        ssl=None)
            assert pr is protos[0] and pr.tr is tr
            assert not conn.getblocking()
            assert tr.get_extra_info("peername") == peer
            assert tr.get_extra_info("sockname") == client.getpeername()
            assert tr.get_extra_info("socket").fileno() == conn.fileno()
            client.setblocking(False)
            await loop.sock_sendall(client, b"accepted")
            got = b""
            while len(got) < 8:
                got += await loop.sock_recv(client, 100)
            assert got == b"accepted"
            tr.close()
            assert await pr.lost is None
            assert await loop.sock_recv(client, 10) == b""

    run(loop, main())


def test_connect_accepted_socket_argument_errors(loop, run):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError) as ei:
                await loop.connect_accepted_socket(asyncio.Protocol, udp)
            assert str(ei.value) == f"A Stream Socket was expected, got {udp!r}"
        with socket.socket() as tcp:
            with pytest.raises(ValueError) as ei:
                await loop.connect_accepted_socket(asyncio.Protocol, tcp, ssl_handshake_timeout=1)
            assert str(ei.value) == "ssl_handshake_timeout is only meaningful with ssl"

    run(loop, main())


def test_create_server_argument_errors(loop, run):
    async def main():
        with pytest.raises(ValueError) as ei:
            await loop.create_server(asyncio.Protocol)
        assert str(ei.value) == "Neither host/port nor sock were specified"
        with socket.socket() as s:
            with pytest.raises(ValueError) as ei:
                await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, sock=s)
            assert str(ei.value) == "host/port and sock can not be specified at the same time"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(ValueError) as ei:
                await loop.create_server(asyncio.Protocol, sock=s)
            assert str(ei.value) == f"A Stream Socket was expected, got {s!r}"
        with pytest.raises(ValueError) as ei:
            await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl_handshake_timeout=1)
        assert str(ei.value) == "ssl_handshake_timeout is only meaningful with ssl"

    run(loop, main())


def test_create_server_with_sock(loop, run):
    protos = []

    async def main():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        addr = s.getsockname()
        srv = await loop.create_server(lambda: ServerProto(loop, protos), sock=s)
        assert srv.sockets[0].fileno() == s.fileno()
        assert not s.getblocking()
        assert await echo_once(addr, b"sock=") == b"sock="
        srv.close()
        await srv.wait_closed()
        assert s.fileno() == -1  # the server owns and closes it
        await protos[0].lost

    run(loop, main())


def test_task_factory_sees_the_accept_tasks(loop, run):
    """A task factory sees one Task per accepted connection, as with asyncio (oxloop's accept
    path skips that Task only when no task factory is set)."""
    names = []

    def factory(lp, coro, **kwargs):
        names.append(getattr(coro, "__name__", None))
        return asyncio.Task(coro, loop=lp, **kwargs)

    async def main():
        log = []
        srv = await loop.create_server(lambda: ServerProto(loop, log), "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        loop.set_task_factory(factory)
        try:
            for _ in range(3):
                assert await echo_once(addr) == b"ping"
        finally:
            loop.set_task_factory(None)
        srv.close()
        for p in log:
            p.tr.close()
            await p.lost
        await srv.wait_closed()

    run(loop, main())
    assert names.count("_accept_connection2") == 3
