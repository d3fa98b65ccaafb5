"""Datagram endpoints (create_datagram_endpoint and its transport) on every loop.

Each test runs on stock asyncio (the reference) and on every oxloop loop; oxloop's loops use
the native ``DatagramTransport`` for UDP and Unix datagram sockets, which must behave exactly
as the running asyncio's ``_SelectorDatagramTransport``: data, addresses, callbacks, error
messages, exception-handler contexts, flow control and its counters.
"""

import asyncio
import gc
import logging
import os
import socket
import sys
import tempfile
import warnings
from asyncio import selector_events, transports

import pytest

from helpers import exact

PY = sys.version_info[:2]
NATIVE_ENABLED = os.environ.get("OXLOOP_NATIVE_TRANSPORTS", "1") != "0"


def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="IPv6 loopback unavailable")


def check_kind(loop, tr):
    """oxloop's loops give the native transport; stock asyncio its own."""
    if type(loop).__module__.startswith("oxloop") and NATIVE_ENABLED:
        assert type(tr).__module__ == "oxloop._oxloop"
        assert type(tr).__name__ == "DatagramTransport"
    else:
        assert type(tr) is selector_events._SelectorDatagramTransport


class Recorder(asyncio.DatagramProtocol):
    """Records every callback; `got` wakes up waiters."""

    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.datagrams = []
        self.errors = []
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, tr):
        self.events.append("made")
        self.transport = tr

    def datagram_received(self, data, addr):
        assert type(data) is bytes
        self.events.append("datagram")
        self.datagrams.append((data, addr))

    def error_received(self, exc):
        self.events.append("error")
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")


class Echo(Recorder):
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


async def wait_for(loop, predicate, timeout=5.0):
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def raw_socket(family=socket.AF_INET, addr=("127.0.0.1", 0)):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(addr)
    s.settimeout(5)
    return s


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["ipv4", pytest.param("ipv6", marks=needs_ipv6)])
def test_round_trip_connected_and_unconnected(loop, run, family):
    host = "127.0.0.1" if family == "ipv4" else "::1"

    async def main():
        st, server = await loop.create_datagram_endpoint(
            lambda: Echo(loop), local_addr=(host, 0))
        check_kind(loop, st)
        saddr = st.get_extra_info("sockname")
        # Connected client.
        ct, client = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), remote_addr=saddr[:2])
        check_kind(loop, ct)
        caddr = ct.get_extra_info("sockname")
        ct.sendto(b"one")
        ct.sendto(b"two", None)
        ct.sendto(bytearray(b"three"), saddr[:2] if family == "ipv4" else None)
        ct.sendto(memoryview(b"xfourx")[1:-1])
        await wait_for(loop, lambda: len(client.datagrams) == 4)
        assert [d for d, _ in client.datagrams] == [b"one", b"two", b"three", b"four"]
        assert [d for d, _ in server.datagrams] == [b"one", b"two", b"three", b"four"]
        # The sender's address is what socket.recvfrom gives: equal to its sockname.
        for _, addr in server.datagrams:
            assert type(addr) is tuple and addr == caddr
            assert type(addr[0]) is str and type(addr[1]) is int
        for _, addr in client.datagrams:
            assert addr == saddr
        # Unconnected client, sending to an explicit address.
        ut, uclient = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=(host, 0))
        uaddr = ut.get_extra_info("sockname")
        assert ut.get_extra_info("peername") is None
        for i in range(3):
            ut.sendto(b"u%d" % i, saddr)
        await wait_for(loop, lambda: len(uclient.datagrams) == 3)
        assert uclient.datagrams == [(b"u%d" % i, saddr) for i in range(3)]
        assert server.datagrams[-1] == (b"u2", uaddr)
        for tr in (ct, ut, st):
            tr.close()
        for p in (client, uclient, server):
            assert await p.lost is None
        for p in (client, uclient, server):
            assert p.events[0] == "made" and p.events[-1] == "lost"
            assert p.events.count("lost") == 1

    run(loop, main())


def test_addresses_equal_stdlib_recvfrom(loop, run):
    # The address objects handed to datagram_received equal what socket.recvfrom returns,
    # also for more senders than any cache would hold, and replies reach each of them.
    async def main():
        st, server = await loop.create_datagram_endpoint(
            lambda: Echo(loop), local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        clients = [raw_socket() for _ in range(20)]
        try:
            for rnd in range(3):
                for i, c in enumerate(clients):
                    c.sendto(b"%d-%d" % (rnd, i), saddr)
                await wait_for(loop, lambda: len(server.datagrams) == 20 * (rnd + 1))
                for i, c in enumerate(clients):
                    data, addr = c.recvfrom(100)
                    assert (data, addr) == (b"%d-%d" % (rnd, i), saddr)
            for i, c in enumerate(clients):
                assert server.datagrams[i][1] == c.getsockname()
                assert server.datagrams[40 + i][1] == c.getsockname()
        finally:
            for c in clients:
                c.close()
        st.close()
        await server.lost

    run(loop, main())


@needs_ipv6
def test_ipv6_address_is_a_4_tuple(loop, run):
    async def main():
        st, server = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("::1", 0))
        c = raw_socket(socket.AF_INET6, ("::1", 0))
        try:
            c.sendto(b"v6", st.get_extra_info("sockname"))
            await wait_for(loop, lambda: server.datagrams)
            data, addr = server.datagrams[0]
            assert data == b"v6"
            assert addr == c.getsockname() and len(addr) == 4
            assert [type(x) for x in addr] == [str, int, int, int]
            # A 2-tuple and a 4-tuple address both work for sendto.
            st.sendto(b"a", addr[:2])
            st.sendto(b"b", addr)
            assert c.recvfrom(10)[0] == b"a"
            assert c.recvfrom(10)[0] == b"b"
        finally:
            c.close()
        st.close()
        await server.lost

    run(loop, main())


def test_sendto_hostname(loop, run):
    # asyncio hands the address to socket.sendto, which resolves a host name.
    async def main():
        receiver = raw_socket()
        try:
            port = receiver.getsockname()[1]
            tr, proto = await loop.create_datagram_endpoint(
                lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
            tr.sendto(b"by name", ("localhost", port))
            data, addr = receiver.recvfrom(100)
            assert data == b"by name" and addr == tr.get_extra_info("sockname")
            tr.close()
            await proto.lost
            assert proto.errors == []
        finally:
            receiver.close()

    run(loop, main())


def test_connected_via_sock_ignores_addr(loop, run):
    # A transport on an already connected socket (sock=) sends with send(): the address
    # given to sendto() is not used, as in asyncio.
    async def main():
        peer, other = raw_socket(), raw_socket()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        sock.connect(peer.getsockname())
        try:
            tr, proto = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=sock)
            check_kind(loop, tr)
            assert tr.get_extra_info("peername") == peer.getsockname()
            tr.sendto(b"x", other.getsockname())
            assert peer.recvfrom(10) == (b"x", sock.getsockname())
            tr.close()
            await proto.lost
        finally:
            peer.close()
            other.close()

    run(loop, main())


# --- Unix datagram sockets ---------------------------------------------------------------------


def test_unix_round_trip_paths_abstract_and_unnamed(loop, run, exc_handler_calls):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            spath = os.path.join(d, "server")
            cpath = os.path.join(d, "client")
            st, server = await loop.create_datagram_endpoint(
                lambda: Echo(loop), local_addr=spath, family=socket.AF_UNIX)
            check_kind(loop, st)
            assert st.get_extra_info("sockname") == spath
            # A named client connected to the server.
            ct, client = await loop.create_datagram_endpoint(
                lambda: Recorder(loop), local_addr=cpath, remote_addr=spath,
                family=socket.AF_UNIX)
            assert ct.get_extra_info("peername") == spath
            ct.sendto(b"named")
            await wait_for(loop, lambda: client.datagrams)
            assert server.datagrams == [(b"named", cpath)]
            assert client.datagrams == [(b"named", spath)]
            with pytest.raises(ValueError, match=exact(f"Invalid address: must be None or {spath}")):
                ct.sendto(b"x", cpath)
            # An abstract-namespace sender: its address is bytes.
            abstract = b"\0oxloop-test-%d" % os.getpid()
            a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            a.bind(abstract)
            a.settimeout(5)
            # An unbound sender: no address at all (None).
            u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                a.sendto(b"abstract", spath)
                await wait_for(loop, lambda: len(server.datagrams) == 2)
                assert a.recvfrom(100) == (b"abstract", spath)
                assert server.datagrams[-1] == (b"abstract", abstract)
                u.sendto(b"unnamed", spath)
                await wait_for(loop, lambda: len(server.datagrams) == 3)
                assert server.datagrams[-1] == (b"unnamed", None)
                # Echoing to None on an unconnected socket fails in socket.sendto (TypeError):
                # asyncio's fatal write error.
                assert type(await server.lost) is TypeError
            finally:
                a.close()
                u.close()
            ct.close()
            await client.lost

    run(loop, main())
    [ctx] = contexts(exc_handler_calls)
    assert ctx["message"] == "Fatal write error on datagram transport"


def contexts(calls):
    """The exception-handler contexts the loop fixture recorded (consumed: cleared)."""
    out = [ctx for _, ctx in calls]
    calls.clear()
    return out


# --- sendto: arguments and errors --------------------------------------------------------------


def test_sendto_argument_errors(loop, run, exc_handler_calls):
    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(lambda: Recorder(loop), remote_addr=saddr)
        for bad in ("str", 1, None, [b"x"]):
            with pytest.raises(TypeError, match=exact(
                    f"data argument must be a bytes-like object, not {type(bad).__name__!r}")):
                ct.sendto(bad)
        with pytest.raises(ValueError, match=exact(f"Invalid address: must be None or {saddr}")):
            ct.sendto(b"x", ("127.0.0.1", saddr[1] + 1 if saddr[1] < 65535 else 1))
        # An equal address (another object) is accepted.
        ct.sendto(b"ok", (saddr[0], saddr[1]))
        await wait_for(loop, lambda: sp.datagrams)
        assert sp.datagrams[0][0] == b"ok"
        ct.close()
        st.close()
        await cp.lost
        await sp.lost
        assert contexts(exc_handler_calls) == []

    run(loop, main())


@pytest.mark.parametrize("addr, exc_type", [
    (None, TypeError),
    (("127.0.0.1", 70000), OverflowError),
    (("127.0.0.1",), TypeError),
    ("127.0.0.1", TypeError),
])
def test_sendto_bad_address_is_fatal(loop, run, addr, exc_type, exc_handler_calls):
    # socket.sendto raises a non-OSError: asyncio's fatal write error (exception handler,
    # connection_lost(exc)).
    async def main():
        tr, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        tr.sendto(b"x", addr)
        assert tr.is_closing()
        exc = await proto.lost
        return tr, proto, exc

    tr, proto, exc = run(loop, main())
    assert type(exc) is exc_type
    [ctx] = contexts(exc_handler_calls)
    assert ctx["message"] == "Fatal write error on datagram transport"
    assert ctx["exception"] is exc
    assert ctx["transport"] is tr and ctx["protocol"] is proto
    assert proto.errors == []


def test_sendto_oserror_goes_to_error_received(loop, run):
    # A numeric IPv6 host on an IPv4 socket: socket.sendto raises socket.gaierror (an
    # OSError), which goes to protocol.error_received; the transport stays open.
    async def main():
        receiver = raw_socket()
        tr, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        try:
            tr.sendto(b"x", ("::1", 9))
            assert len(proto.errors) == 1 and isinstance(proto.errors[0], socket.gaierror)
            assert not tr.is_closing()
            tr.sendto(b"still works", receiver.getsockname())
            assert receiver.recvfrom(100)[0] == b"still works"
        finally:
            receiver.close()
        tr.close()
        await proto.lost

    run(loop, main())


def test_sendto_non_contiguous_memoryview(loop, run, exc_handler_calls):
    # socket.sendto refuses a non-contiguous buffer (BufferError): a fatal write error.
    async def main():
        receiver = raw_socket()
        try:
            tr, proto = await loop.create_datagram_endpoint(
                lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
            tr.sendto(memoryview(b"abcdef")[::2], receiver.getsockname())
            return tr, await proto.lost
        finally:
            receiver.close()

    tr, exc = run(loop, main())
    assert type(exc) is BufferError
    [ctx] = contexts(exc_handler_calls)
    assert ctx["message"] == "Fatal write error on datagram transport"


def test_empty_datagram(loop, run):
    # 3.9-3.12: sendto(b'') sends nothing; 3.13+: an empty datagram.
    async def main():
        receiver = raw_socket()
        try:
            tr, proto = await loop.create_datagram_endpoint(
                lambda: Recorder(loop), remote_addr=receiver.getsockname())
            tr.sendto(b"")
            tr.sendto(bytearray())
            tr.sendto(memoryview(b""))
            tr.sendto(b"end")
            got = []
            while True:
                data = receiver.recv(100)
                got.append(data)
                if data == b"end":
                    break
            # An empty datagram reaches a transport's protocol as b"".
            st, sp = await loop.create_datagram_endpoint(
                lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
            receiver.sendto(b"", st.get_extra_info("sockname"))
            await wait_for(loop, lambda: sp.datagrams)
            assert sp.datagrams == [(b"", receiver.getsockname())]
            tr.close()
            st.close()
            await proto.lost
            await sp.lost
            return got
        finally:
            receiver.close()

    got = run(loop, main())
    if PY >= (3, 13):
        assert got == [b"", b"", b"", b"end"]
    else:
        assert got == [b"end"]


@pytest.mark.parametrize("size", [65507, 1])
def test_max_size_datagram(loop, run, size):
    async def main():
        st, server = await loop.create_datagram_endpoint(
            lambda: Echo(loop), local_addr=("127.0.0.1", 0))
        c = raw_socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        try:
            payload = os.urandom(size)
            c.sendto(payload, st.get_extra_info("sockname"))
            await wait_for(loop, lambda: server.datagrams)
            assert c.recvfrom(1 << 17) == (payload, st.get_extra_info("sockname"))
            assert server.datagrams == [(payload, c.getsockname())]
        finally:
            c.close()
        st.close()
        await server.lost

    run(loop, main())


def test_error_received_on_connection_refused(loop, run):
    # Connected UDP to a port where nothing listens: the ICMP error comes back as
    # ConnectionRefusedError through protocol.error_received; the transport stays usable.
    async def main():
        s = raw_socket()
        addr = s.getsockname()
        s.close()
        tr, proto = await loop.create_datagram_endpoint(lambda: Recorder(loop), remote_addr=addr)
        for _ in range(50):
            tr.sendto(b"ping")
            await asyncio.sleep(0.005)
            if proto.errors:
                break
        assert proto.errors and all(isinstance(e, ConnectionRefusedError) for e in proto.errors)
        assert proto.errors[0].errno is not None
        assert not tr.is_closing()
        tr.close()
        assert await proto.lost is None

    run(loop, main())


# --- flow control ------------------------------------------------------------------------------


async def recv_all(loop, sock, done, got):
    """Read datagrams from the non-blocking `sock` into `got` (letting the loop run) until
    done() is true."""
    sock.setblocking(False)
    deadline = loop.time() + 5
    while not done():
        try:
            got.append(sock.recv(1 << 16))
        except BlockingIOError:
            assert loop.time() < deadline, "datagrams did not arrive in time"
            await asyncio.sleep(0.001)
    return got


class unix_pair:
    """Two bound Unix datagram sockets, the first connected to the second, non-blocking.

    (A socketpair would not do: its peer name is '', falsy, so asyncio's transport would
    sendto(data, None) and fail.)"""

    def __enter__(self):
        self.dir = tempfile.TemporaryDirectory()
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.bind(os.path.join(self.dir.name, "a"))
        b.bind(os.path.join(self.dir.name, "b"))
        a.connect(b.getsockname())
        a.setblocking(False)
        b.setblocking(False)
        self.a, self.b = a, b
        return a, b

    def __exit__(self, *exc):
        self.a.close()
        self.b.close()
        self.dir.cleanup()


def test_socketpair_peer_name_is_falsy(loop, run, exc_handler_calls):
    # asyncio tests `if self._extra['peername']:`; an unnamed peer ('') is falsy, so the
    # transport calls sock.sendto(data, None): a fatal TypeError, as in asyncio.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=a)
        assert tr.get_extra_info("peername") == ""
        tr.sendto(b"x")
        return await proto.lost

    try:
        assert type(run(loop, main())) is TypeError
    finally:
        b.close()
    [ctx] = contexts(exc_handler_calls)
    assert ctx["message"] == "Fatal write error on datagram transport"


def fill_trace(loop, run, high, low, size=1000):
    """On a connected Unix datagram socket whose peer does not read: sendto until 12
    datagrams are queued, then let the peer read everything. Returns the observations."""
    pair = unix_pair()
    a, b = pair.__enter__()
    trace = []

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=a)
        tr.set_write_buffer_limits(high=high, low=low)
        trace.append(("limits", tr.get_write_buffer_limits()))
        i = 0
        queued = 0
        while queued < 12 and i < 100000:
            tr.sendto(bytes([i % 256]) * size)
            i += 1
            if tr.get_write_buffer_size() > 0:
                queued += 1
                trace.append(("size", tr.get_write_buffer_size(), list(proto.events)))
        trace.append(("sent-before-queueing", i - queued))
        got = []

        def drain():
            while True:
                try:
                    got.append(b.recv(size + 10))
                except BlockingIOError:
                    return

        loop.add_reader(b, drain)
        await wait_for(loop, lambda: len(got) == i)
        await asyncio.sleep(0.01)
        loop.remove_reader(b)
        trace.append(("after", tr.get_write_buffer_size(), list(proto.events)))
        assert got == [bytes([k % 256]) * size for k in range(i)]
        tr.close()
        await proto.lost
        return proto

    try:
        run(loop, main())
    finally:
        pair.__exit__()
    return trace


def test_flow_control_matches_asyncio(loop_factory, loop, run):
    # The same scenario on this loop and on a stock asyncio loop: identical buffer sizes (3.13
    # counts 8 header bytes per queued datagram) and pause/resume calls.
    trace = fill_trace(loop, run, high=4000, low=1000)
    ref_loop = asyncio.SelectorEventLoop()
    try:
        ref = fill_trace(ref_loop, run, high=4000, low=1000)
    finally:
        ref_loop.close()
    assert trace == ref
    sizes = [t[1] for t in trace if t[0] == "size"]
    per = 1008 if PY >= (3, 13) else 1000
    assert sizes == [per * k for k in range(1, 13)]
    events = [t for t in trace if t[0] == "size"][-1][2]
    assert events == ["made", "pause"]
    assert [t for t in trace if t[0] == "after"][0][2] == ["made", "pause", "resume"]


def test_write_buffer_limits(loop, run):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        assert tr.get_write_buffer_limits() == (16384, 65536)
        assert tr.get_write_buffer_size() == 0
        tr.set_write_buffer_limits(high=100)
        assert tr.get_write_buffer_limits() == (25, 100)
        tr.set_write_buffer_limits(low=10)
        assert tr.get_write_buffer_limits() == (10, 40)
        with pytest.raises(ValueError, match=exact("high (1) must be >= low (2) must be >= 0")):
            tr.set_write_buffer_limits(high=1, low=2)
        tr.close()
        await proto.lost

    run(loop, main())


# --- closing -----------------------------------------------------------------------------------


def test_close_with_queued_datagrams_flushes_first(loop, run):
    pair = unix_pair()
    a, b = pair.__enter__()

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=a)
        n = 0
        while tr.get_write_buffer_size() == 0 and n < 100000:
            tr.sendto(b"%d" % n)
            n += 1
        tr.sendto(b"last")
        tr.close()
        assert tr.is_closing()
        tr.close()  # idempotent
        await asyncio.sleep(0.01)
        assert not proto.lost.done()  # still flushing
        got = []
        await recv_all(loop, b, lambda: got and got[-1] == b"last", got)
        assert await proto.lost is None
        assert got == [b"%d" % k for k in range(n)] + [b"last"]
        assert proto.events.count("lost") == 1
        assert tr.get_extra_info("socket") is not None
        return tr

    try:
        tr = run(loop, main())
    finally:
        pair.__exit__()
    assert a.fileno() == -1  # the transport closed its socket
    assert "closed" in repr(tr)


def test_abort_drops_queued_datagrams(loop, run):
    pair = unix_pair()
    a, b = pair.__enter__()

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=a)
        n = 0
        while tr.get_write_buffer_size() == 0 and n < 100000:
            tr.sendto(b"%d" % n)
            n += 1
        tr.abort()
        assert tr.is_closing()
        assert await proto.lost is None
        tr.abort()
        tr.close()
        await asyncio.sleep(0.01)
        assert proto.events.count("lost") == 1
        b.setblocking(False)
        got = []
        while True:
            try:
                got.append(b.recv(100))
            except BlockingIOError:
                break
        assert got == [b"%d" % k for k in range(n - 1)]  # the queued one never went out

    try:
        run(loop, main())
    finally:
        pair.__exit__()


def test_sendto_after_close_counts_and_warns(loop, run, caplog):
    # A connected transport, closed: sendto() only counts; from the 5th on it logs a warning.
    async def main():
        receiver = raw_socket()
        try:
            tr, proto = await loop.create_datagram_endpoint(
                lambda: Recorder(loop), remote_addr=receiver.getsockname())
            tr.close()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(6):
                    tr.sendto(b"x")
            await proto.lost
            return [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        finally:
            receiver.close()

    msgs = run(loop, main())
    assert msgs == ["socket.send() raised exception."] * 2


def test_sendto_unconnected_after_connection_lost(loop, run, exc_handler_calls):
    # An unconnected transport whose connection is lost: asyncio's sendto() fails on its
    # `None` socket and loop (AttributeError); nothing reaches the exception handler.
    async def main():
        receiver = raw_socket()
        try:
            tr, proto = await loop.create_datagram_endpoint(
                lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
            tr.close()
            # Closing but not yet lost: still sends.
            tr.sendto(b"closing", receiver.getsockname())
            assert receiver.recvfrom(100)[0] == b"closing"
            await proto.lost
            with pytest.raises(AttributeError):
                tr.sendto(b"x", receiver.getsockname())
        finally:
            receiver.close()

    run(loop, main())
    assert contexts(exc_handler_calls) == []


def test_connection_lost_once_and_extra_info(loop, run):
    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(lambda: Recorder(loop), remote_addr=saddr)
        assert st.get_extra_info("peername") is None
        assert ct.get_extra_info("peername") == saddr
        assert ct.get_extra_info("sockname")[0] == "127.0.0.1"
        sock = ct.get_extra_info("socket")
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_DGRAM
        assert sock.getpeername() == saddr
        assert ct.get_extra_info("nope") is None
        assert ct.get_extra_info("nope", 42) == 42
        assert ct.get_protocol() is cp
        assert not ct.is_closing()
        assert isinstance(ct, asyncio.BaseTransport)
        assert isinstance(ct, asyncio.Transport)
        # 3.12+: asyncio's datagram transport is an asyncio.DatagramTransport.
        assert isinstance(ct, transports.DatagramTransport) == (PY >= (3, 12))
        assert isinstance(ct, transports._FlowControlMixin)
        r = repr(ct)
        assert "fd=" in r and "read=polling" in r and "write=<idle, bufsize=0>" in r
        ct.close()
        assert "closing" in repr(ct)
        ct.close()
        ct.abort()
        st.abort()
        st.abort()
        st.close()
        assert await cp.lost is None
        assert await sp.lost is None
        await asyncio.sleep(0.01)
        assert cp.events == ["made", "lost"] and sp.events == ["made", "lost"]
        assert "closed" in repr(ct)
        assert ct.get_extra_info("peername") == saddr  # extra info outlives the connection
        return ct

    ct = run(loop, main())
    loop.close()
    repr(ct)


def test_set_protocol(loop, run):
    async def main():
        tr, p1 = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        p2 = Recorder(loop)
        tr.set_protocol(p2)
        assert tr.get_protocol() is p2
        c = raw_socket()
        try:
            c.sendto(b"to p2", tr.get_extra_info("sockname"))
            await wait_for(loop, lambda: p2.datagrams)
        finally:
            c.close()
        assert p1.datagrams == []
        tr.close()
        assert await p2.lost is None
        assert not p1.lost.done()

    run(loop, main())


def test_pause_resume_reading(loop, run):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        if PY < (3, 11):
            # asyncio's datagram transport inherits ReadTransport's NotImplementedError.
            for m in (tr.pause_reading, tr.resume_reading, tr.is_reading):
                with pytest.raises(NotImplementedError):
                    m()
        else:
            assert tr.is_reading()
            tr.pause_reading()
            tr.pause_reading()
            assert not tr.is_reading()
            c = raw_socket()
            try:
                c.sendto(b"held", tr.get_extra_info("sockname"))
                await asyncio.sleep(0.05)
                assert proto.datagrams == []
                tr.resume_reading()
                assert tr.is_reading()
                await wait_for(loop, lambda: proto.datagrams)
                assert proto.datagrams[0][0] == b"held"
            finally:
                c.close()
        tr.close()
        await proto.lost

    run(loop, main())


def test_protocol_error_goes_to_exception_handler(loop, run, exc_handler_calls):
    # An exception from datagram_received propagates out of the reader callback: the loop
    # reports it ("Exception in callback ..."), the transport keeps going.
    class Boom(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"boom":
                raise ZeroDivisionError("boom")

    async def main():
        tr, proto = await loop.create_datagram_endpoint(
            lambda: Boom(loop), local_addr=("127.0.0.1", 0))
        c = raw_socket()
        try:
            c.sendto(b"boom", tr.get_extra_info("sockname"))
            c.sendto(b"fine", tr.get_extra_info("sockname"))
            await wait_for(loop, lambda: len(proto.datagrams) == 2)
        finally:
            c.close()
        assert not tr.is_closing()
        tr.close()
        await proto.lost

    run(loop, main())
    [ctx] = contexts(exc_handler_calls)
    assert ctx["message"].startswith("Exception in callback ")
    assert type(ctx["exception"]) is ZeroDivisionError


# --- endpoint options --------------------------------------------------------------------------


def test_allow_broadcast_and_reuse_port(loop, run):
    async def main():
        kwargs = dict(local_addr=("127.0.0.1", 0), allow_broadcast=True)
        if hasattr(socket, "SO_REUSEPORT"):
            kwargs["reuse_port"] = True
        tr, proto = await loop.create_datagram_endpoint(lambda: Recorder(loop), **kwargs)
        check_kind(loop, tr)
        sock = tr.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        if "reuse_port" in kwargs:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        tr.close()
        await proto.lost

    run(loop, main())


# --- finalization, leaks -----------------------------------------------------------------------


def test_unclosed_transport_resource_warning(loop_factory, run):
    loop = loop_factory()
    try:
        async def main():
            return await loop.create_datagram_endpoint(
                lambda: Recorder(loop), local_addr=("127.0.0.1", 0))

        tr, proto = run(loop, main())
        sock = tr.get_extra_info("socket")
        fd = sock.fileno()
        assert fd >= 0
    finally:
        loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del tr, proto, sock
        gc.collect()
    msgs = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert any(m.startswith("unclosed transport <") for m in msgs), msgs
    with pytest.raises(OSError):
        os.fstat(fd)  # the transport's finalizer closed the socket


def test_create_close_cycles_leak_nothing(loop, run):
    async def cycle(saddr):
        tr, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), remote_addr=saddr)
        tr.sendto(b"x" * 100)
        tr.close()
        await proto.lost

    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        for _ in range(100):
            await cycle(saddr)
        await asyncio.sleep(0.01)
        gc.collect()
        fds = len(os.listdir("/proc/self/fd"))
        objects = len(gc.get_objects())
        for _ in range(1000):
            await cycle(saddr)
        await asyncio.sleep(0.01)
        sp.datagrams.clear()
        sp.events.clear()
        gc.collect()
        st.close()
        await sp.lost
        return fds, objects, len(os.listdir("/proc/self/fd")), len(gc.get_objects())

    fds0, objs0, fds1, objs1 = run(loop, main(), timeout=60)
    assert fds1 <= fds0
    assert objs1 - objs0 < 200, f"live objects grew by {objs1 - objs0} over 1000 cycles"


def test_transport_collected_after_close(loop, run):
    # A closed transport and its protocol are freed (no reference cycle keeps them).
    import weakref

    async def main():
        tr, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        tr.close()
        await proto.lost
        return weakref.ref(tr), weakref.ref(proto)

    wtr, wproto = run(loop, main())
    gc.collect()
    assert wtr() is None and wproto() is None


# --- oxloop only: when the native transport is used --------------------------------------------


def test_native_transport_selection(oxloop_module, monkeypatch, run):
    class Sub(socket.socket):
        pass

    for env, subclass, native in (("1", False, True), ("0", False, False), ("1", True, False)):
        monkeypatch.setenv("OXLOOP_NATIVE_TRANSPORTS", env)
        loop = oxloop_module.SelectorEventLoop()
        try:
            sock = (Sub if subclass else socket.socket)(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))

            async def main():
                return await loop.create_datagram_endpoint(lambda: Recorder(loop), sock=sock)

            tr, proto = run(loop, main())
            assert (type(tr).__module__ == "oxloop._oxloop") == native
            # asyncio's class attribute, whichever transport (the native one reads at most
            # 64 KiB + 1 from an IP socket, which every IP datagram fits in).
            assert tr.max_size == 256 * 1024
            tr.close()
            run(loop, proto.lost)
        finally:
            loop.close()


# --- several queued datagrams: the order of callbacks is asyncio's -----------------------------


@pytest.mark.parametrize("n", [3, 40])
def test_call_soon_from_datagram_received_runs_before_next_datagram(loop, run, n):
    # asyncio reads one datagram per loop iteration: a callback scheduled by
    # datagram_received runs before the next datagram is delivered.
    order = []

    class P(Recorder):
        def datagram_received(self, data, addr):
            order.append(data)
            self.loop.call_soon(order.append, b"cb-" + data)

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: P(loop), local_addr=("127.0.0.1", 0))
        s = raw_socket()
        try:
            for i in range(n):
                s.sendto(b"%d" % i, tr.get_extra_info("sockname"))
            await wait_for(loop, lambda: len(order) == 2 * n)
        finally:
            s.close()
        tr.close()
        await proto.lost

    run(loop, main())
    expected = []
    for i in range(n):
        expected += [b"%d" % i, b"cb-%d" % i]
    assert order == expected


def test_stop_in_datagram_received_with_datagrams_queued(loop, run):
    # loop.stop() in datagram_received: run_forever returns after this iteration, which
    # delivered exactly one datagram per iteration; the others wait in the socket.
    got = []

    class P(Recorder):
        def datagram_received(self, data, addr):
            got.append(data)
            if len(got) % 10 == 0:
                self.loop.stop()

    async def setup():
        return await loop.create_datagram_endpoint(lambda: P(loop), local_addr=("127.0.0.1", 0))

    tr, proto = run(loop, setup())
    s = raw_socket()
    try:
        for i in range(40):
            s.sendto(b"%d" % i, tr.get_extra_info("sockname"))
        guard = loop.call_later(5, loop.stop)  # never hang
        loop.run_forever()
        assert got == [b"%d" % i for i in range(10)]
        loop.run_forever()
        assert got == [b"%d" % i for i in range(20)]
        guard.cancel()
    finally:
        s.close()
    tr.close()
    run(loop, proto.lost)


def test_pause_reading_in_datagram_received_with_datagrams_queued(loop, run):
    if PY < (3, 11):
        pytest.skip("asyncio's datagram transport has pause_reading() from 3.11")

    class P(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if len(self.datagrams) % 10 == 0:
                self.transport.pause_reading()

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: P(loop), local_addr=("127.0.0.1", 0))
        s = raw_socket()
        try:
            for i in range(40):
                s.sendto(b"%d" % i, tr.get_extra_info("sockname"))
            await wait_for(loop, lambda: len(proto.datagrams) == 10)
            await asyncio.sleep(0.05)
            assert [d for d, _ in proto.datagrams] == [b"%d" % i for i in range(10)]
            tr.resume_reading()
            await wait_for(loop, lambda: len(proto.datagrams) == 20)
            await asyncio.sleep(0.05)
            assert [d for d, _ in proto.datagrams] == [b"%d" % i for i in range(20)]
        finally:
            s.close()
        tr.close()
        await proto.lost

    run(loop, main())


def test_write_side_stubs_raise_not_implemented(loop, run):
    # asyncio's datagram transport inherits WriteTransport's write(), writelines() (which
    # joins first, then calls write()), write_eof() and can_write_eof(): NotImplementedError.
    async def main():
        tr, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        for call in (lambda: tr.write(b"x"), lambda: tr.write(data=b"x"),
                     lambda: tr.writelines([b"x", b"y"]), lambda: tr.writelines(iter([b"x"])),
                     tr.write_eof, tr.can_write_eof):
            with pytest.raises(NotImplementedError):
                call()
        with pytest.raises(TypeError, match=exact("can only join an iterable")):
            tr.writelines(5)
        with pytest.raises(TypeError, match="sequence item 0: expected a bytes-like object"):
            tr.writelines(["x"])
        with pytest.raises(TypeError):
            tr.write()
        tr.close()
        await proto.lost

    run(loop, main())


def test_unclosed_transport_collected_in_a_cycle(loop):
    from helpers import collect_unclosed_in_a_cycle

    class Keep(asyncio.DatagramProtocol):
        def connection_made(self, tr):
            self.tr = tr

    async def connect(sock):
        return await loop.create_datagram_endpoint(Keep, sock=sock)

    collect_unclosed_in_a_cycle(loop, raw_socket, connect)
