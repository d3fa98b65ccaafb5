"""Write flow control against a slow reader (issue 3: "a writer respecting flow control never
buffers more than the high-water mark plus one write").

Each test runs on stock asyncio and on every oxloop loop (conftest's ``loop`` fixture); the
kernel's socket buffers are kept small (SO_SNDBUF / SO_RCVBUF) and the reader pauses after every
read, so the writer's transport really has to buffer and pause.
"""

import asyncio
import os
import socket
import sys

import pytest

# gh-127655: the selector transport's own writelines() (3.12+) did not pause the protocol
# until 3.12.9 / 3.13.2. oxloop's native transport has the fixed behaviour on every version.
STOCK_WRITELINES_PAUSES = not ((3, 12) <= sys.version_info < (3, 12, 9)
                               or (3, 13) <= sys.version_info < (3, 13, 2))

SMALL_BUF = 4096  # the kernel doubles it; keeps the kernel's share of the data small


def shrink_buffers(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)


class FlowWriter(asyncio.Protocol):
    """Server side: writes `payload` in `chunk`-sized writes, but only while not paused.

    After every write it records the transport's buffer size; the largest is `max_buffered`."""

    def __init__(self, loop, payload, chunk, limits, writelines=False):
        self.loop = loop
        self.writelines = writelines
        self.payload = payload
        self.chunk = chunk
        self.limits = limits
        self.pos = 0
        self.paused = False
        self.events = []  # "pause" / "resume", in order
        self.max_buffered = 0
        self.over_limit = []  # (buffer size before the write, after) when a write broke the bound
        self.writes_while_paused = 0
        self.all_written = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, tr):
        self.tr = tr
        shrink_buffers(tr.get_extra_info("socket"))
        if self.limits is not None:
            tr.set_write_buffer_limits(*self.limits)
        self.low, self.high = tr.get_write_buffer_limits()
        self.pump()

    def pump(self):
        while not self.paused and self.pos < len(self.payload):
            before = self.tr.get_write_buffer_size()
            data = self.payload[self.pos:self.pos + self.chunk]
            self.pos += len(data)
            if self.writelines:
                half = len(data) // 2
                self.tr.writelines([data[:half], memoryview(data)[half:]])
            else:
                self.tr.write(data)
            after = self.tr.get_write_buffer_size()
            self.max_buffered = max(self.max_buffered, after)
            if after > self.high + self.chunk:
                self.over_limit.append((before, after))
        if self.pos >= len(self.payload) and not self.all_written.done():
            self.all_written.set_result(None)
            self.tr.write_eof()

    def pause_writing(self):
        assert not self.paused, "pause_writing() called twice without resume_writing()"
        assert self.tr.get_write_buffer_size() > self.high
        self.paused = True
        self.events.append("pause")

    def resume_writing(self):
        assert self.paused, "resume_writing() without pause_writing()"
        assert self.tr.get_write_buffer_size() <= self.low
        self.paused = False
        self.events.append("resume")
        # Writing from inside resume_writing() is allowed (the transport is not paused any more).
        self.pump()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class SlowReader(asyncio.Protocol):
    """Client side: after every data_received(), stops reading for `delay` seconds."""

    def __init__(self, loop, delay):
        self.loop = loop
        self.delay = delay
        self.data = bytearray()
        self.reads = 0
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.data += data
        self.reads += 1
        self.tr.pause_reading()
        self.loop.call_later(self.delay, self.resume)

    def resume(self):
        if not self.tr.is_closing():
            self.tr.resume_reading()

    def eof_received(self):
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def slow_client_socket(addr):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    shrink_buffers(sock)  # before connect(): the receive window is set at the handshake
    sock.setblocking(False)
    return sock


@pytest.mark.parametrize(
    "limits, chunk, writelines",
    [
        (None, 16384, False),  # asyncio's defaults: high 64 KiB, low 16 KiB
        ((8192, 2048), 1000, False),
        ((8192, 2048), 65536, False),  # one write bigger than the high-water mark
        ((0, 0), 3000, False),  # high=0: pause as soon as anything is buffered
        ((8192, 2048), 5000, True),  # each "write" is a writelines() of two pieces
    ],
    ids=["default", "8k-small-writes", "8k-big-writes", "high0", "8k-writelines"],
)
def test_writer_respecting_flow_control_buffers_at_most_high_plus_one_write(
        loop_factory, loop, run, limits, chunk, writelines):
    if writelines and loop_factory.is_stock and not STOCK_WRITELINES_PAUSES:
        pytest.skip("this asyncio's writelines() ignores the high-water mark (gh-127655, "
                    "fixed in 3.12.9 / 3.13.2)")
    payload = os.urandom(600_000)
    writers = []

    def factory():
        w = FlowWriter(loop, payload, chunk, limits, writelines)
        writers.append(w)
        return w

    async def main():
        srv = await loop.create_server(factory, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        sock = slow_client_socket(addr)
        await loop.sock_connect(sock, addr)
        tr, reader = await loop.create_connection(lambda: SlowReader(loop, 0.002), sock=sock)
        await reader.eof
        await writers[0].lost
        tr.close()
        await reader.lost
        srv.close()
        await srv.wait_closed()
        return reader

    reader = run(loop, main(), timeout=30)
    (w,) = writers
    assert bytes(reader.data) == payload  # intact and in order
    assert w.over_limit == []
    assert w.max_buffered <= w.high + chunk
    # The reader was slow enough that the writer had to stop, and every pause was resumed.
    assert w.events, "the writer never paused: the test did not exercise flow control"
    assert w.events == ["pause", "resume"] * (len(w.events) // 2)
    assert not w.paused
    assert reader.reads > 1
    if limits == (0, 0):
        assert (w.low, w.high) == (0, 0)
    elif limits is None:
        assert (w.low, w.high) == (16384, 65536)


def test_drain_with_slow_reader(loop, run):
    """StreamWriter.drain() with a slow StreamReader: the buffer never exceeds high + one write."""
    payload = os.urandom(400_000)
    chunk = 5000
    high, low = 10000, 2500
    seen = {"max": 0, "drains_waited": 0}
    done = []

    async def handler(reader, writer):
        shrink_buffers(writer.get_extra_info("socket"))
        writer.transport.set_write_buffer_limits(high, low)
        for pos in range(0, len(payload), chunk):
            writer.write(payload[pos:pos + chunk])
            size = writer.transport.get_write_buffer_size()
            seen["max"] = max(seen["max"], size)
            if size > high:
                seen["drains_waited"] += 1
            await writer.drain()
            assert writer.transport.get_write_buffer_size() <= high
        writer.close()
        await writer.wait_closed()
        done.append(True)

    async def main():
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        sock = slow_client_socket(addr)
        await loop.sock_connect(sock, addr)
        reader, writer = await asyncio.open_connection(sock=sock)
        got = bytearray()
        while True:
            data = await reader.read(3000)
            if not data:
                break
            got += data
            await asyncio.sleep(0.001)
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
        return bytes(got)

    got = run(loop, main(), timeout=30)
    assert done == [True]
    assert got == payload
    assert seen["max"] <= high + chunk
    assert seen["drains_waited"] > 0, "drain() never had to wait: flow control not exercised"


def test_set_write_buffer_limits_variants(loop, run):
    class Sink(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr
            asyncio.get_running_loop().call_soon(tr.pause_reading)

    class Client(asyncio.Protocol):
        def __init__(self):
            self.events = []

        def connection_made(self, tr):
            self.tr = tr

        def pause_writing(self):
            self.events.append(("pause", self.tr.get_write_buffer_size()))

        def resume_writing(self):
            self.events.append(("resume", self.tr.get_write_buffer_size()))

        def connection_lost(self, exc):
            self.events.append(("lost", exc))

    sinks = []

    def sink_factory():
        s = Sink()
        sinks.append(s)
        return s

    async def main():
        srv = await loop.create_server(sink_factory, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        sock = slow_client_socket(addr)
        await loop.sock_connect(sock, addr)
        tr, pr = await loop.create_connection(Client, sock=sock)
        results = {}
        tr.set_write_buffer_limits()
        results["defaults"] = tr.get_write_buffer_limits()
        tr.set_write_buffer_limits(high=1000)
        results["high only"] = tr.get_write_buffer_limits()
        tr.set_write_buffer_limits(low=300)
        results["low only"] = tr.get_write_buffer_limits()
        tr.set_write_buffer_limits(high=0)
        results["high 0"] = tr.get_write_buffer_limits()
        tr.set_write_buffer_limits(500, 500)
        results["equal"] = tr.get_write_buffer_limits()
        errors = []
        for args, kwargs in [((10, 20), {}), ((), {"high": 5, "low": 6}), ((-1,), {}),
                             ((), {"low": -2}), ((0, 1), {})]:
            with pytest.raises(ValueError) as ei:
                tr.set_write_buffer_limits(*args, **kwargs)
            errors.append(str(ei.value))
        # A failed call leaves the limits alone.
        results["after errors"] = tr.get_write_buffer_limits()

        # high=0: the first write that cannot go out at once pauses the protocol.
        await asyncio.sleep(0.01)
        tr.set_write_buffer_limits(high=0)
        for _ in range(1000):
            tr.write(b"z" * 50000)
            if pr.events:
                break
            await asyncio.sleep(0)
        results["high 0 events"] = [e[0] for e in pr.events]
        assert pr.events[0][1] > 0
        # Raising the limits above the buffered amount does not resume by itself (asyncio only
        # checks for resuming when the buffer drains) but lowering them again does not pause twice.
        tr.set_write_buffer_limits(high=10**9)
        tr.set_write_buffer_limits(high=0)
        results["after re-limit"] = [e[0] for e in pr.events]
        tr.abort()
        for _ in range(100):
            if any(e[0] == "lost" for e in pr.events):
                break
            await asyncio.sleep(0.001)
        sinks[0].tr.close()
        srv.close()
        await srv.wait_closed()
        return results, errors

    results, errors = run(loop, main())
    assert results["defaults"] == (16384, 65536)
    assert results["high only"] == (250, 1000)
    assert results["low only"] == (300, 1200)
    assert results["high 0"] == (0, 0)
    assert results["equal"] == (500, 500)
    assert results["after errors"] == (500, 500)
    assert errors == [
        "high (10) must be >= low (20) must be >= 0",
        "high (5) must be >= low (6) must be >= 0",
        "high (-1) must be >= low (-1) must be >= 0",
        "high (-8) must be >= low (-2) must be >= 0",
        "high (0) must be >= low (1) must be >= 0",
    ]
    assert results["high 0 events"] == ["pause"]
    assert results["after re-limit"] == ["pause"]


class _Sink(asyncio.Protocol):
    """Server side that stops reading (one callback after connection_made, see
    test_transports.Sink) until told to resume."""

    def __init__(self, log):
        log.append(self)

    def connection_made(self, tr):
        self.tr = tr
        asyncio.get_running_loop().call_soon(tr.pause_reading)


class _Events(asyncio.Protocol):
    def __init__(self, loop, fail=None):
        self.events = []
        self.fail = fail
        self.lost = loop.create_future()

    def connection_made(self, tr):
        self.tr = tr

    def pause_writing(self):
        self.events.append(("pause", self.tr.get_write_buffer_size()))
        if self.fail == "pause":
            raise ZeroDivisionError("pause")

    def resume_writing(self):
        self.events.append(("resume", self.tr.get_write_buffer_size()))
        if self.fail == "resume":
            raise KeyError("resume")

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def _sink_and_client(loop, client):
    sinks = []
    srv = await loop.create_server(lambda: _Sink(sinks), "127.0.0.1", 0)
    addr = srv.sockets[0].getsockname()
    sock = slow_client_socket(addr)
    await loop.sock_connect(sock, addr)
    tr, pr = await loop.create_connection(lambda: client, sock=sock)
    while not sinks or not hasattr(sinks[0], "tr"):
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    return srv, sinks[0], tr, pr


async def _fill(tr, pr):
    """Write until the kernel buffers are full and the transport buffers more than 100 KB."""
    while tr.get_write_buffer_size() < 100_000:
        tr.write(b"f" * 50_000)
        await asyncio.sleep(0)


def test_lowering_the_limits_pauses_at_once_and_draining_resumes(loop, run):
    async def main():
        srv, sink, tr, pr = await _sink_and_client(loop, _Events(loop))
        tr.set_write_buffer_limits(high=10**9)
        await _fill(tr, pr)
        assert pr.events == []
        buffered = tr.get_write_buffer_size()
        tr.set_write_buffer_limits(high=1000, low=500)
        # set_write_buffer_limits() itself calls pause_writing() when over the new limit.
        assert pr.events == [("pause", buffered)]
        sink.tr.resume_reading()
        while len(pr.events) < 2:
            await asyncio.sleep(0.002)
        (what, size) = pr.events[1]
        assert what == "resume" and size <= 500
        tr.close()
        await pr.lost
        sink.tr.close()
        srv.close()
        await srv.wait_closed()
        return pr.events

    events = run(loop, main())
    assert [e[0] for e in events] == ["pause", "resume"]


@pytest.mark.parametrize("fail", ["pause", "resume"])
def test_pause_resume_writing_errors_are_reported(loop, run, exc_handler_calls, fail):
    async def main():
        srv, sink, tr, pr = await _sink_and_client(loop, _Events(loop, fail))
        tr.set_write_buffer_limits(high=10**9)
        await _fill(tr, pr)
        tr.set_write_buffer_limits(high=1000, low=500)
        sink.tr.resume_reading()
        while len(pr.events) < 2:
            await asyncio.sleep(0.002)
        # The protocol's error does not break the transport.
        assert not tr.is_closing()
        tr.write(b"still fine")
        tr.close()
        assert await pr.lost is None
        sink.tr.close()
        srv.close()
        await srv.wait_closed()
        return tr, pr

    tr, pr = run(loop, main())
    assert [e[0] for e in pr.events] == ["pause", "resume"]
    ((lp, ctx),) = exc_handler_calls
    exc_handler_calls.clear()
    assert lp is loop
    assert set(ctx) == {"message", "exception", "transport", "protocol"}
    assert ctx["message"] == f"protocol.{fail}_writing() failed"
    assert type(ctx["exception"]) is (ZeroDivisionError if fail == "pause" else KeyError)
    assert ctx["transport"] is tr
    assert ctx["protocol"] is pr


# --- water marks of any type (asyncio stores the objects given and compares with them) --------

CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs")


class _Made(asyncio.Protocol):
    def connection_made(self, tr):
        self.tr = tr


async def _transport_of(loop, kind):
    """A transport of `kind` on `loop` and a coroutine function closing it (and its peer)."""
    if kind == "tcp":
        a, b = socket.socketpair()
        tr, _ = await loop.connect_accepted_socket(_Made, a)

        async def close():
            tr.close()
            b.close()
            await asyncio.sleep(0.01)
    elif kind == "udp":
        tr, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))

        async def close():
            tr.close()
            await asyncio.sleep(0.01)
    elif kind == "write_pipe":
        r, w = os.pipe()
        tr, _ = await loop.connect_write_pipe(_Made, os.fdopen(w, "wb", 0))

        async def close():
            tr.close()
            os.close(r)
            await asyncio.sleep(0.01)
    else:
        import ssl

        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(os.path.join(CERTS, "server.pem"),
                             os.path.join(CERTS, "server.key"))
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.load_verify_locations(os.path.join(CERTS, "ca.pem"))
        served = []

        def serve():
            served.append(_Made())
            return served[-1]

        srv = await loop.create_server(serve, "127.0.0.1", 0, ssl=sctx)
        tr, _ = await loop.create_connection(
            _Made, *srv.sockets[0].getsockname(), ssl=cctx, server_hostname="localhost")

        async def close():
            tr.close()
            while not (served and hasattr(served[0], "tr")):
                await asyncio.sleep(0.01)
            served[0].tr.close()
            srv.close()
            await srv.wait_closed()
            for _ in range(10):
                await asyncio.sleep(0.01)
    return tr, close


def _limit_cases():
    from decimal import Decimal
    from fractions import Fraction

    big = 10**400
    return [
        # (kwargs, expected (low, high) or the error (type, message))
        ({"high": big}, (big // 4, big)),
        ({"low": big}, (big, 4 * big)),
        ({"high": big, "low": 0}, (0, big)),
        ({"high": 2.5}, (0.0, 2.5)),
        ({"high": float("inf"), "low": 0}, (0, float("inf"))),
        ({"high": float("inf")}, (ValueError, "high (inf) must be >= low (nan) must be >= 0")),
        ({"high": True}, (0, True)),
        ({"high": True, "low": False}, (False, True)),
        ({"high": Decimal("100")}, (Decimal("25"), Decimal("100"))),
        ({"high": Fraction(10)}, (2, Fraction(10))),
        ({"high": float("nan")}, (ValueError, "high (nan) must be >= low (nan) must be >= 0")),
        ({"low": float("nan")}, (ValueError, "high (nan) must be >= low (nan) must be >= 0")),
        ({"low": -1}, (ValueError, "high (-4) must be >= low (-1) must be >= 0")),
        ({"high": -big}, (ValueError, f"high ({-big!r}) must be >= low ({-big // 4!r}) must be >= 0")),
        ({"high": "x"}, (TypeError, "unsupported operand type(s) for //: 'str' and 'int'")),
        ({"low": "x"}, (TypeError, "'>=' not supported between instances of 'str' and 'int'")),
        ({"high": 1, "low": 2}, (ValueError, "high (1) must be >= low (2) must be >= 0")),
    ]


def _check_limits(set_limits, get_limits, problems, what):
    for kwargs, expected in _limit_cases():
        before = get_limits()
        try:
            set_limits(**kwargs)
        except Exception as exc:
            got = (type(exc), str(exc))
            if get_limits() != before and not (before != before):
                problems.append(f"{what}{kwargs}: a failed call changed the limits")
        else:
            got = get_limits()
            if isinstance(expected, tuple) and not isinstance(expected[0], type):
                # the objects given are returned as they are (same type; `high` itself)
                if [type(x) for x in got] != [type(x) for x in expected]:
                    problems.append(f"{what}{kwargs}: types {got!r}, want {expected!r}")
                if "high" in kwargs and got[1] is not kwargs["high"]:
                    problems.append(f"{what}{kwargs}: high is not the object given")
        if got != expected:
            problems.append(f"{what}{kwargs}: {got!r}, want {expected!r}")
        set_limits()


@pytest.mark.parametrize("kind", ["tcp", "udp", "write_pipe", "tls"])
def test_write_buffer_limits_of_any_number(loop, run, kind):
    # asyncio's _FlowControlMixin (and sslproto's add_flowcontrol_defaults) store the objects
    # given: any int (10**400), float, bool, Decimal, Fraction; only its own checks fail.
    async def main():
        tr, close = await _transport_of(loop, kind)
        problems = []
        _check_limits(tr.set_write_buffer_limits, tr.get_write_buffer_limits, problems, "")
        if kind != "tls":
            _check_limits(tr._set_write_buffer_limits, tr.get_write_buffer_limits, problems,
                          "_set_write_buffer_limits")
        elif sys.version_info >= (3, 11):  # 3.9/3.10: the older sslproto has neither
            _check_limits(tr._ssl_protocol._set_write_buffer_limits, tr.get_write_buffer_limits,
                          problems, "_set_write_buffer_limits")
            _check_limits(tr.set_read_buffer_limits, tr.get_read_buffer_limits, problems,
                          "set_read_buffer_limits")
        assert tr.get_write_buffer_size() == 0
        await close()
        assert not problems, "\n".join(problems)

    run(loop, main())


def test_pause_and_resume_with_marks_of_any_number(loop, run):
    # Limits of any type are compared with the buffer size as asyncio compares them: a huge
    # int never pauses; Decimal / Fraction marks pause and resume as the equal ints would.
    from decimal import Decimal
    from fractions import Fraction

    async def main():
        srv, sink, tr, pr = await _sink_and_client(loop, _Events(loop))
        tr.set_write_buffer_limits(high=10**400)
        await _fill(tr, pr)
        assert pr.events == []
        buffered = tr.get_write_buffer_size()
        tr.set_write_buffer_limits(high=Decimal(buffered), low=Fraction(1001, 2))
        assert pr.events == []  # size <= high: not above the mark yet
        tr.set_write_buffer_limits(high=Decimal(buffered - 1), low=Fraction(1001, 2))
        assert pr.events == [("pause", buffered)]
        sink.tr.resume_reading()
        while len(pr.events) < 2:
            await asyncio.sleep(0.002)
        (what, size) = pr.events[1]
        assert what == "resume" and size <= 500
        tr.close()
        await pr.lost
        sink.tr.close()
        srv.close()
        await srv.wait_closed()
        return pr.events

    events = run(loop, main())
    assert [e[0] for e in events] == ["pause", "resume"]
