"""fd watching and low-level sockets (asyncio/selector_events.py).

Each test runs on stock asyncio and on every oxloop loop. Where asyncio's
behaviour depends on the selector (regular files, closed fds), the expected
result is computed by running a stock asyncio loop with the SAME selector
family inside the test (``loop_factory.new_stock_loop()``).
"""

import asyncio
import errno
import io
import os
import re
import resource
import socket
import sys
import time

import pytest

from helpers import exact, noop, run_once, run_until  # noqa: F401

PY = sys.version_info[:2]


@pytest.fixture
def pair(loop):
    """A connected, non-blocking AF_UNIX stream socketpair (made after the loop)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def tcp_listener(loop):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.setblocking(False)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def udp_pair(loop):
    s1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (s1, s2):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    try:
        yield s1, s2
    finally:
        s1.close()
        s2.close()


# ---------------------------------------------------------------------------
# add_reader / add_writer / remove_reader / remove_writer: return values


def test_add_reader_and_add_writer_return_none(loop, pair):
    a, b = pair
    assert loop.add_reader(a.fileno(), noop) is None
    assert loop.add_writer(a.fileno(), noop) is None
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is True


def test_remove_reader_true_then_false(loop, pair):
    a, b = pair
    loop.add_reader(a.fileno(), noop)
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_remove_writer_true_then_false(loop, pair):
    a, b = pair
    loop.add_writer(a.fileno(), noop)
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is False


def test_remove_never_added_returns_false(loop, pair):
    a, b = pair
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a.fileno()) is False


def test_remove_reader_when_only_writer_registered(loop, pair):
    a, b = pair
    loop.add_writer(a.fileno(), noop)
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a.fileno()) is True


def test_remove_writer_when_only_reader_registered(loop, pair):
    a, b = pair
    loop.add_reader(a.fileno(), noop)
    assert loop.remove_writer(a.fileno()) is False
    assert loop.remove_reader(a.fileno()) is True


# ---------------------------------------------------------------------------
# callbacks


def test_reader_fires_with_args(loop, pair):
    a, b = pair
    got = []

    def on_readable(x, y):
        got.append((x, y, a.recv(100)))
        loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), on_readable, "x", 2)
    loop.call_later(0.005, b.send, b"hello")
    assert run_until(loop, lambda: got)
    assert got == [("x", 2, b"hello")]


def test_reader_does_not_fire_without_data(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a.fileno(), got.append, 1)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert got == []
    assert loop.remove_reader(a.fileno()) is True


def test_writer_fires_with_args(loop, pair):
    a, b = pair
    got = []

    def on_writable(*args):
        got.append(args)
        loop.remove_writer(a.fileno())

    loop.add_writer(a.fileno(), on_writable, "w", 3)
    assert run_until(loop, lambda: got)
    assert got == [("w", 3)]


def test_reader_is_level_triggered(loop, pair):
    a, b = pair
    b.send(b"12345")
    chunks = []

    def read_one():
        chunks.append(a.recv(1))
        if len(chunks) == 5:
            loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), read_one)
    assert run_until(loop, lambda: len(chunks) == 5)
    assert b"".join(chunks) == b"12345"
    # nothing left: no more calls
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert len(chunks) == 5


def test_reader_called_again_each_iteration_while_data_remains(loop, pair):
    a, b = pair
    b.send(b"xy")
    calls = []
    loop.add_reader(a.fileno(), calls.append, 1)  # never reads
    for _ in range(3):
        run_once(loop)
    assert len(calls) == 3
    assert loop.remove_reader(a.fileno()) is True


def test_writer_is_level_triggered(loop, pair):
    a, b = pair
    calls = []
    loop.add_writer(a.fileno(), calls.append, 1)
    for _ in range(3):
        run_once(loop)
    assert len(calls) == 3
    assert loop.remove_writer(a.fileno()) is True


def test_replacing_reader_only_new_callback_fires(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a.fileno(), got.append, "old")
    loop.add_reader(a.fileno(), got.append, "new")
    b.send(b"x")
    run_once(loop)
    assert got == ["new"]
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_replacing_writer_only_new_callback_fires(loop, pair):
    a, b = pair
    got = []
    loop.add_writer(a.fileno(), got.append, "old")
    loop.add_writer(a.fileno(), got.append, "new")
    run_once(loop)
    assert got == ["new"]
    assert loop.remove_writer(a.fileno()) is True


def test_replacing_reader_cancels_old_handle(loop, pair):
    # Private API, but asyncio's own sock_recv (3.11+) relies on it:
    # _add_reader returns the Handle and replacing it cancels the old one.
    a, b = pair
    h1 = loop._add_reader(a.fileno(), noop)
    assert h1.cancelled() is False
    h2 = loop._add_reader(a.fileno(), noop)
    assert h1.cancelled() is True
    assert h2.cancelled() is False
    assert loop._remove_reader(a.fileno()) is True
    assert h2.cancelled() is True


def test_replacing_writer_cancels_old_handle(loop, pair):
    a, b = pair
    h1 = loop._add_writer(a.fileno(), noop)
    h2 = loop._add_writer(a.fileno(), noop)
    assert h1.cancelled() is True
    assert h2.cancelled() is False
    assert loop._remove_writer(a.fileno()) is True
    assert h2.cancelled() is True


def test_reader_and_writer_on_same_fd(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a.fileno(), got.append, "r")
    loop.add_writer(a.fileno(), got.append, "w")
    b.send(b"x")
    run_once(loop)
    assert sorted(got) == ["r", "w"]
    assert loop.remove_reader(a.fileno()) is True
    got.clear()
    run_once(loop)
    assert got == ["w"]  # the writer survives removing the reader
    assert loop.remove_writer(a.fileno()) is True
    got.clear()
    run_once(loop)
    assert got == []


def test_remove_writer_keeps_reader(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a.fileno(), got.append, "r")
    loop.add_writer(a.fileno(), got.append, "w")
    assert loop.remove_writer(a.fileno()) is True
    b.send(b"x")
    run_once(loop)
    assert got == ["r"]
    assert loop.remove_reader(a.fileno()) is True


def test_reader_removes_itself(loop, pair):
    a, b = pair
    calls = []

    def once():
        calls.append(1)
        assert loop.remove_reader(a.fileno()) is True

    b.send(b"data")  # stays unread: level-triggered, would fire forever
    loop.add_reader(a.fileno(), once)
    for _ in range(3):
        run_once(loop)
    assert calls == [1]


def test_reader_removed_by_earlier_callback_in_same_iteration(loop):
    p1 = socket.socketpair()
    p2 = socket.socketpair()
    try:
        ran = []

        def cb(name, other_fd):
            ran.append(name)
            loop.remove_reader(other_fd)

        p1[1].send(b"x")
        p2[1].send(b"x")
        loop.add_reader(p1[0].fileno(), cb, "one", p2[0].fileno())
        loop.add_reader(p2[0].fileno(), cb, "two", p1[0].fileno())
        run_once(loop)
        # whichever ran first removed (and cancelled) the other one
        assert len(ran) == 1
        loop.remove_reader(p1[0].fileno())
        loop.remove_reader(p2[0].fileno())
    finally:
        for s in p1 + p2:
            s.close()


def test_object_with_fileno_accepted(loop, pair):
    a, b = pair

    class HasFileno:
        def fileno(self):
            return a.fileno()

    got = []
    loop.add_reader(HasFileno(), got.append, "obj")
    b.send(b"x")
    run_once(loop)
    assert got == ["obj"]
    # the registration is keyed by the fd: removing by int works
    assert loop.remove_reader(a.fileno()) is True


def test_socket_object_accepted(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a, got.append, "sock")
    loop.add_writer(a, got.append, "wsock")
    b.send(b"x")
    run_once(loop)
    assert sorted(got) == ["sock", "wsock"]
    assert loop.remove_reader(a) is True
    assert loop.remove_writer(a.fileno()) is True


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
@pytest.mark.parametrize("bad", ["not-a-fd", None, 1.5, object()], ids=["str", "None", "float", "object"])
def test_invalid_file_object(loop, method, bad):
    args = (noop,) if method.startswith("add") else ()
    with pytest.raises(ValueError, match=exact(f"Invalid file object: {bad!r}")):
        getattr(loop, method)(bad, *args)


def test_fileno_returning_garbage_is_invalid(loop):
    class Bad:
        def fileno(self):
            return "nope"

        def __repr__(self):
            return "<Bad>"

    with pytest.raises(ValueError, match=exact("Invalid file object: <Bad>")):
        loop.add_reader(Bad(), noop)


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_negative_fd(loop, method):
    args = (noop,) if method.startswith("add") else ()
    with pytest.raises(ValueError, match=exact("Invalid file descriptor: -1")):
        getattr(loop, method)(-1, *args)


def test_reader_on_pipe(loop):
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        got = []

        def on_read():
            data = os.read(r, 100)
            got.append(data)
            if not data:
                loop.remove_reader(r)

        loop.add_reader(r, on_read)
        os.write(w, b"through a pipe")
        assert run_until(loop, lambda: got)
        os.close(w)
        w = None
        assert run_until(loop, lambda: got[-1] == b"")
        assert got == [b"through a pipe", b""]
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_reader_sees_peer_close(loop, pair):
    a, b = pair
    got = []

    def on_read():
        got.append(a.recv(10))
        loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), on_read)
    b.close()
    assert run_until(loop, lambda: got)
    assert got == [b""]


def test_reader_callback_exception_goes_to_handler(loop, pair, exc_handler_calls):
    a, b = pair
    out = []

    def bad_reader():
        a.recv(10)  # drained: not readable any more
        raise ValueError("reader failed")

    loop.add_reader(a.fileno(), bad_reader)
    loop.call_soon(out.append, "loop continues")
    b.send(b"x")
    assert run_until(loop, lambda: exc_handler_calls)
    assert loop.remove_reader(a.fileno()) is True
    assert out == ["loop continues"]
    ctx = exc_handler_calls[0][1]
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["message"].startswith("Exception in callback ")
    assert "bad_reader" in ctx["message"]
    assert "handle" in ctx
    exc_handler_calls.clear()


def test_many_fds(loop):
    pairs = [socket.socketpair() for _ in range(200)]
    try:
        got = set()
        for i, (a, b) in enumerate(pairs):
            loop.add_reader(a.fileno(), got.add, i)
        for i, (a, b) in enumerate(pairs):
            if i % 2 == 0:
                b.send(b"x")
        run_once(loop)
        assert got == set(range(0, 200, 2))
        for a, b in pairs:
            assert loop.remove_reader(a.fileno()) is True
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_fd_reregistered_after_remove(loop, pair):
    a, b = pair
    got = []
    for i in range(3):
        loop.add_reader(a.fileno(), got.append, i)
        assert loop.remove_reader(a.fileno()) is True
    loop.add_reader(a.fileno(), got.append, "last")
    b.send(b"x")
    run_once(loop)
    assert got == ["last"]
    assert loop.remove_reader(a.fileno()) is True


def test_close_fd_after_remove_then_new_socket_same_number(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    got = []
    loop.add_reader(fd, got.append, "first")
    assert loop.remove_reader(fd) is True
    a.close()
    b.close()
    # the kernel hands out the lowest free fd: the pair likely reuses `fd`
    c, d = socket.socketpair()
    try:
        loop.add_reader(c.fileno(), got.append, "second")
        d.send(b"x")
        run_once(loop)
        assert got == ["second"]
        assert loop.remove_reader(c.fileno()) is True
    finally:
        c.close()
        d.close()


def test_remove_reader_after_fd_closed(loop):
    # A common order in real code: the socket is closed, then unwatched.
    # Stock asyncio (every selector) reports True and carries on.
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, noop)
    a.close()
    try:
        assert loop.remove_reader(fd) is True
        assert loop.remove_reader(fd) is False
        out = []
        loop.call_soon(out.append, "fine")
        run_once(loop)
        assert out == ["fine"]
    finally:
        b.close()


def _remove_after_close_outcome(lp):
    a, b = socket.socketpair()
    fd = a.fileno()
    try:
        lp.add_reader(fd, noop)
        lp.add_writer(fd, noop)
        a.close()
        results = []
        for remove in (lp.remove_reader, lp.remove_writer):
            try:
                results.append(remove(fd))
            except OSError as e:
                results.append((type(e), e.errno))
        return results
    finally:
        a.close()
        b.close()


def test_remove_reader_and_writer_after_fd_closed_like_stock(loop_factory, loop):
    # Selector-dependent in stock asyncio: with both directions watched,
    # removing one is a modify(), which epoll refuses (EBADF) on a closed fd;
    # the last removal is an unregister(), where the error is swallowed.
    stock = loop_factory.new_stock_loop()
    try:
        expected = _remove_after_close_outcome(stock)
    finally:
        stock.close()
    assert _remove_after_close_outcome(loop) == expected
    out = []
    loop.call_soon(out.append, "fine")
    run_once(loop)
    assert out == ["fine"]


def test_remove_unregistered_closed_fd_returns_false(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    try:
        assert loop.remove_reader(fd) is False
        assert loop.remove_writer(fd) is False
    finally:
        b.close()


def test_writer_waits_for_buffer_space(loop, pair):
    a, b = pair
    chunk = b"x" * 65536
    sent = 0
    while True:
        try:
            sent += a.send(chunk)
        except BlockingIOError:
            break
    calls = []
    loop.add_writer(a.fileno(), calls.append, 1)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == []  # send buffer full: not writable
    received = 0
    while received < sent:
        try:
            received += len(b.recv(1 << 20))
        except BlockingIOError:
            break
    assert run_until(loop, lambda: calls)
    assert loop.remove_writer(a.fileno()) is True


# ---------------------------------------------------------------------------
# what asyncio refuses, per selector


def _add_outcome(lp, fd, method):
    """What add_<method>(fd) does on loop `lp`: raises, or fires in one iteration."""
    fired = []
    try:
        getattr(lp, "add_" + method)(fd, fired.append, 1)
    except Exception as e:
        return ("raises", type(e), getattr(e, "errno", None))
    try:
        run_once(lp)
    finally:
        getattr(lp, "remove_" + method)(fd)
    return ("accepted", bool(fired))


@pytest.mark.parametrize("method", ["reader", "writer"])
def test_regular_file_same_as_stock_with_same_selector(loop_factory, loop, method, tmp_path):
    path = tmp_path / "regular.txt"
    path.write_bytes(b"content")
    with open(path, "rb") as f:
        stock = loop_factory.new_stock_loop()
        try:
            expected = _add_outcome(stock, f.fileno(), method)
        finally:
            stock.close()
        got = _add_outcome(loop, f.fileno(), method)
    assert got == expected
    if loop_factory.selector_name == "epoll":
        # stock asyncio on Linux: epoll refuses regular files with EPERM
        assert expected == ("raises", PermissionError, errno.EPERM)
    elif loop_factory.selector_name in ("poll", "select"):
        assert expected == ("accepted", True)


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_fd_used_by_transport(loop, run, tcp_listener, method):
    port = tcp_listener.getsockname()[1]

    async def main():
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        try:
            fd = transport.get_extra_info("socket").fileno()
            args = (noop,) if method.startswith("add") else ()
            with pytest.raises(RuntimeError) as ei:
                getattr(loop, method)(fd, *args)
            assert str(ei.value) == f"File descriptor {fd!r} is used by transport {transport!r}"
        finally:
            transport.close()
            await asyncio.sleep(0)

    run(loop, main())


def test_fd_of_closing_transport_can_be_watched(loop, run, tcp_listener):
    port = tcp_listener.getsockname()[1]

    async def main():
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        sock = transport.get_extra_info("socket")
        fd = sock.fileno()
        transport.close()
        assert transport.is_closing()
        # stock asyncio: a closing transport no longer owns the fd
        loop.add_writer(fd, noop)
        assert loop.remove_writer(fd) is True
        await asyncio.sleep(0)

    run(loop, main())


def test_closed_fd(loop_factory, loop, exc_handler_calls):
    """Watching an fd that is already closed.

    Stock asyncio on Linux: epoll (its default) raises OSError(EBADF) from
    add_reader; PollSelector accepts it and then reports POLLNVAL as
    readable, so the callback runs (and its read fails with EBADF);
    SelectSelector accepts it and the next iteration raises OSError(EBADF)
    out of run_forever. For oxloop loops this test asserts only that the
    error surfaces: from add_reader, from the next iteration, or through the
    callback (whose read raises OSError, seen by the exception handler).
    """
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()  # fd is closed; nothing is opened before add_reader
    calls = []

    def on_read():
        calls.append(1)
        loop.remove_reader(fd)
        os.read(fd, 1)  # EBADF

    where = None
    err = None
    try:
        try:
            loop.add_reader(fd, on_read)
        except (OSError, ValueError) as e:
            where, err = "add_reader", e
        else:
            try:
                run_once(loop)
                run_once(loop)
            except (OSError, ValueError) as e:
                where, err = "iteration", e
            finally:
                try:
                    loop.remove_reader(fd)
                except (OSError, ValueError):
                    pass
            if where is None and exc_handler_calls:
                where, err = "callback", exc_handler_calls[0][1].get("exception")
                exc_handler_calls.clear()
    finally:
        b.close()
    if loop_factory.is_stock:
        assert loop_factory.selector_name == "epoll"
        assert where == "add_reader"
        assert isinstance(err, OSError) and err.errno == errno.EBADF
    else:
        assert where is not None, "a closed fd was silently accepted and never reported"
        assert isinstance(err, (OSError, ValueError)), err
    # the loop still works
    out = []
    loop.call_soon(out.append, 1)
    run_once(loop)
    assert out == [1]


HIGH_FD = 1100


def test_fd_above_1024(loop_factory, loop):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = HIGH_FD + 16
    raised = False
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            raised = True
        except (ValueError, OSError) as e:
            pytest.skip(f"cannot raise RLIMIT_NOFILE: {e}")
    if os.path.exists(f"/proc/self/fd/{HIGH_FD}"):
        pytest.skip(f"fd {HIGH_FD} is already in use")
    a, b = socket.socketpair()
    high = None
    try:
        high = os.dup2(a.fileno(), HIGH_FD)
        if high is None:  # os.dup2 returns the fd since 3.7
            high = HIGH_FD
        got = []
        if loop_factory.is_oxloop and loop_factory.selector_name == "select":
            # select(2) cannot watch fds >= FD_SETSIZE: oxloop refuses up front
            with pytest.raises(ValueError):
                loop.add_reader(high, got.append, 1)
            with pytest.raises(ValueError):
                loop.add_writer(high, got.append, 1)
        else:
            loop.add_reader(high, got.append, "high")
            b.send(b"x")
            assert run_until(loop, lambda: got)
            assert got[0] == "high"
            assert loop.remove_reader(high) is True
        # no crash, loop usable
        out = []
        loop.call_soon(out.append, "ok")
        run_once(loop)
        assert out == ["ok"]
    finally:
        if high is not None:
            os.close(high)
        a.close()
        b.close()
        if raised:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------------
# low-level socket operations


def test_sock_recv(loop, run, pair):
    a, b = pair

    async def main():
        loop.call_later(0.01, b.send, b"later data")
        return await loop.sock_recv(a, 100)

    assert run(loop, main()) == b"later data"


def test_sock_recv_data_already_there(loop, run, pair):
    a, b = pair
    b.send(b"ready")
    assert run(loop, loop.sock_recv(a, 100)) == b"ready"


def test_sock_recv_size_the_allocator_refuses(loop, run, pair):
    # CPython's recv allocates the result first: MemoryError (oxloop once aborted the
    # process: an infallible allocation of the caller's size).
    a, b = pair
    b.send(b"data")
    with pytest.raises(MemoryError):
        run(loop, loop.sock_recv(a, 2 ** 62))
    assert run(loop, loop.sock_recv(a, 100)) == b"data"


def test_sock_recv_eof(loop, run, pair):
    a, b = pair
    b.shutdown(socket.SHUT_WR)
    assert run(loop, loop.sock_recv(a, 100)) == b""


def test_sock_recv_into(loop, run, pair):
    a, b = pair
    buf = bytearray(10)

    async def main():
        loop.call_later(0.005, b.send, b"abcdef")
        return await loop.sock_recv_into(a, buf)

    assert run(loop, main()) == 6
    assert buf[:6] == b"abcdef"


def test_sock_recv_into_memoryview(loop, run, pair):
    a, b = pair
    buf = bytearray(b"..........")
    b.send(b"xyz")
    assert run(loop, loop.sock_recv_into(a, memoryview(buf)[2:])) == 3
    assert buf == b"..xyz....."


@pytest.mark.skipif(PY < (3, 11), reason="sock_recvfrom/sock_sendto are new in 3.11")
def test_udp_sock_sendto_sock_recvfrom_round_trip(loop, run, udp_pair):
    s1, s2 = udp_pair

    async def main():
        n = await loop.sock_sendto(s1, b"ping", s2.getsockname())
        data, addr = await loop.sock_recvfrom(s2, 100)
        n2 = await loop.sock_sendto(s2, b"pong!", addr)
        data2, addr2 = await loop.sock_recvfrom(s1, 100)
        return n, data, addr, n2, data2, addr2

    n, data, addr, n2, data2, addr2 = run(loop, main())
    assert (n, data, addr) == (4, b"ping", s1.getsockname())
    assert (n2, data2, addr2) == (5, b"pong!", s2.getsockname())


@pytest.mark.skipif(PY < (3, 11), reason="sock_recvfrom is new in 3.11")
def test_sock_recvfrom_waits(loop, run, udp_pair):
    s1, s2 = udp_pair

    async def main():
        loop.call_later(0.01, s1.sendto, b"delayed", s2.getsockname())
        return await loop.sock_recvfrom(s2, 100)

    assert run(loop, main()) == (b"delayed", s1.getsockname())


@pytest.mark.skipif(PY < (3, 11), reason="sock_recvfrom_into is new in 3.11")
def test_sock_recvfrom_into(loop, run, udp_pair):
    s1, s2 = udp_pair
    buf = bytearray(16)

    async def main():
        loop.call_later(0.005, s1.sendto, b"datagram", s2.getsockname())
        r1 = await loop.sock_recvfrom_into(s2, buf)
        s1.sendto(b"0123456789", s2.getsockname())
        r2 = await loop.sock_recvfrom_into(s2, buf, 4)
        return r1, r2

    r1, r2 = run(loop, main())
    assert r1 == (8, s1.getsockname())
    assert r2 == (4, s1.getsockname())
    assert buf[:4] == b"0123"


def test_udp_round_trip_with_sock_recv(loop, run, udp_pair):
    # available on every version: plain sendto + loop.sock_recv
    s1, s2 = udp_pair

    async def main():
        loop.call_later(0.005, s1.sendto, b"dgram", s2.getsockname())
        return await loop.sock_recv(s2, 100)

    assert run(loop, main()) == b"dgram"


def test_sock_sendall_large_payload_slow_reader(loop, run, pair):
    a, b = pair
    data = bytes(range(256)) * (10 * 1024 * 1024 // 256)  # 10 MiB

    async def reader():
        await asyncio.sleep(0.05)  # the sender must wait for writability
        received = bytearray()
        n = 0
        while len(received) < len(data):
            chunk = await loop.sock_recv(b, 65536)
            if not chunk:
                break
            received += chunk
            n += 1
            if n % 16 == 0:
                await asyncio.sleep(0)
        return bytes(received)

    async def main():
        rt = loop.create_task(reader())
        result = await loop.sock_sendall(a, data)
        received = await rt
        return result, received

    result, received = run(loop, main(), timeout=20)
    assert result is None
    assert len(received) == len(data)
    assert received == data


def test_sock_sendall_empty(loop, run, pair):
    a, b = pair
    assert run(loop, loop.sock_sendall(a, b"")) is None


def test_sock_sendall_to_closed_peer(loop, run, pair):
    a, b = pair
    b.close()

    async def main():
        await loop.sock_sendall(a, b"x" * (1024 * 1024))

    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        run(loop, main())


def test_sock_connect_and_accept(loop, run, tcp_listener):
    addr = tcp_listener.getsockname()

    async def main():
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        cli.setblocking(False)
        try:
            accept = loop.create_task(loop.sock_accept(tcp_listener))
            r = await loop.sock_connect(cli, addr)
            conn, peer = await accept
            try:
                assert r is None
                assert peer == cli.getsockname()
                assert conn.gettimeout() == 0  # accepted socket is non-blocking
                await loop.sock_sendall(cli, b"over tcp")
                return await loop.sock_recv(conn, 100)
            finally:
                conn.close()
        finally:
            cli.close()

    assert run(loop, main()) == b"over tcp"


def test_sock_connect_hostname_localhost(loop, run, tcp_listener):
    port = tcp_listener.getsockname()[1]

    async def main():
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        cli.setblocking(False)
        try:
            await loop.sock_connect(cli, ("localhost", port))
            conn, peer = await loop.sock_accept(tcp_listener)
            conn.close()
            return cli.getpeername()
        finally:
            cli.close()

    assert run(loop, main()) == ("127.0.0.1", port)
    run(loop, loop.shutdown_default_executor())


def test_sock_connect_refused(loop, run):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now

    async def main():
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        cli.setblocking(False)
        try:
            await loop.sock_connect(cli, ("127.0.0.1", port))
        finally:
            cli.close()

    with pytest.raises(ConnectionRefusedError):
        run(loop, main())


def test_sock_connect_unix(loop, run, tmp_path):
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.setblocking(False)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.setblocking(False)
    try:
        async def main():
            await loop.sock_connect(cli, path)
            conn, _ = await loop.sock_accept(srv)
            try:
                await loop.sock_sendall(conn, b"unix")
                return await loop.sock_recv(cli, 10)
            finally:
                conn.close()

        assert run(loop, main()) == b"unix"
    finally:
        cli.close()
        srv.close()


def test_sock_accept_waits(loop, run, tcp_listener):
    addr = tcp_listener.getsockname()
    cli = socket.socket()
    try:
        async def main():
            loop.call_later(0.01, cli.connect_ex, addr)
            conn, peer = await loop.sock_accept(tcp_listener)
            conn.close()
            return peer

        peer = run(loop, main())
        assert peer == cli.getsockname()
    finally:
        cli.close()


def _make_file(tmp_path, size=1024 * 1024):
    data = bytes(range(256)) * (size // 256)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return path, data


async def _recv_exactly(loop, sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
def test_sock_sendfile_regular_file(loop, run, pair, tmp_path, fallback):
    a, b = pair
    path, data = _make_file(tmp_path)

    async def main():
        with open(path, "rb") as f:
            rt = loop.create_task(_recv_exactly(loop, b, len(data)))
            sent = await loop.sock_sendfile(a, f, fallback=fallback)
            received = await rt
            return sent, received, f.tell()

    sent, received, pos = run(loop, main())
    assert sent == len(data)
    assert received == data
    assert pos == len(data)


def test_sock_sendfile_offset_and_count(loop, run, pair, tmp_path):
    a, b = pair
    path, data = _make_file(tmp_path)

    async def main():
        with open(path, "rb") as f:
            rt = loop.create_task(_recv_exactly(loop, b, 1000))
            sent = await loop.sock_sendfile(a, f, offset=100, count=1000, fallback=False)
            received = await rt
            return sent, received, f.tell()

    sent, received, pos = run(loop, main())
    assert sent == 1000
    assert received == data[100:1100]
    assert pos == 1100


def test_sock_sendfile_not_a_regular_file(loop, run, pair):
    a, b = pair
    data = b"in memory " * 1000
    f = io.BytesIO(data)

    async def no_fallback():
        await loop.sock_sendfile(a, f, fallback=False)

    with pytest.raises(asyncio.SendfileNotAvailableError):
        run(loop, no_fallback())

    async def with_fallback():
        f.seek(0)
        rt = loop.create_task(_recv_exactly(loop, b, len(data)))
        sent = await loop.sock_sendfile(a, f)
        return sent, await rt

    sent, received = run(loop, with_fallback())
    assert sent == len(data)
    assert received == data


def test_sock_sendfile_text_mode_file(loop, run, pair, tmp_path):
    a, b = pair
    path = tmp_path / "t.txt"
    path.write_text("text")

    async def main():
        with open(path, "r") as f:
            await loop.sock_sendfile(a, f)

    with pytest.raises(ValueError, match=exact("file should be opened in binary mode")):
        run(loop, main())


def test_sock_sendfile_datagram_socket(loop, run, udp_pair, tmp_path):
    s1, _ = udp_pair
    path, _ = _make_file(tmp_path, 256)

    async def main():
        with open(path, "rb") as f:
            await loop.sock_sendfile(s1, f)

    with pytest.raises(ValueError, match=exact("only SOCK_STREAM type sockets are supported")):
        run(loop, main())


def _blocking_ops(loop, a, b, tcp_listener):
    ops = {
        "sock_recv": lambda: loop.sock_recv(a, 10),
        "sock_recv_into": lambda: loop.sock_recv_into(a, bytearray(10)),
        "sock_sendall": lambda: loop.sock_sendall(a, b"x"),
        "sock_connect": lambda: loop.sock_connect(a, ("127.0.0.1", 1)),
        "sock_accept": lambda: loop.sock_accept(tcp_listener),
    }
    if PY >= (3, 11):
        ops.update({
            "sock_recvfrom": lambda: loop.sock_recvfrom(a, 10),
            "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(a, bytearray(10)),
            "sock_sendto": lambda: loop.sock_sendto(a, b"x", ("127.0.0.1", 1)),
        })
    return ops


BLOCKING_OPS = ["sock_recv", "sock_recv_into", "sock_sendall", "sock_connect", "sock_accept",
                "sock_recvfrom", "sock_recvfrom_into", "sock_sendto"]


@pytest.mark.parametrize("op", BLOCKING_OPS)
def test_blocking_socket_rejected_in_debug_mode(loop, run, op, tcp_listener):
    if PY < (3, 11) and op in ("sock_recvfrom", "sock_recvfrom_into", "sock_sendto"):
        pytest.skip(f"{op} is new in 3.11")
    loop.set_debug(True)
    a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    b = None
    try:
        if op == "sock_accept":
            tcp_listener.setblocking(True)
        a.setblocking(True)
        coro = _blocking_ops(loop, a, b, tcp_listener)[op]()
        with pytest.raises(ValueError, match=exact("the socket must be non-blocking")):
            run(loop, coro)
    finally:
        tcp_listener.setblocking(False)
        a.close()


def test_blocking_socket_rejected_by_sock_sendfile_in_debug_mode(loop, run, tmp_path):
    loop.set_debug(True)
    a, b = socket.socketpair()
    path, _ = _make_file(tmp_path, 256)
    try:
        async def main():
            with open(path, "rb") as f:
                await loop.sock_sendfile(a, f)

        with pytest.raises(ValueError, match=exact("the socket must be non-blocking")):
            run(loop, main())
    finally:
        a.close()
        b.close()


def test_cancel_pending_sock_recv_leaves_nothing_registered(loop, run, pair):
    a, b = pair

    async def main():
        t = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not t.done()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    run(loop, main())
    loop.add_reader(a.fileno(), noop)
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False
    # and data sent now is still there for a later reader
    b.send(b"after cancel")
    assert run(loop, loop.sock_recv(a, 100)) == b"after cancel"


def test_cancel_pending_sock_recv_remove_reader_false(loop, run, pair):
    a, b = pair

    async def main():
        t = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
        for _ in range(3):
            await asyncio.sleep(0)
        return loop.remove_reader(a.fileno())

    assert run(loop, main()) is False


def test_cancel_pending_sock_accept(loop, run, tcp_listener):
    async def main():
        t = loop.create_task(loop.sock_accept(tcp_listener))
        await asyncio.sleep(0.01)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
        for _ in range(3):
            await asyncio.sleep(0)
        return loop.remove_reader(tcp_listener.fileno())

    assert run(loop, main()) is False


def test_remove_reader_during_pending_sock_recv(loop, run, pair):
    # Another loop (rloop) aborts the process here. Stock asyncio: the reader
    # is removed (True), the sock_recv just never completes; cancel works.
    a, b = pair

    async def main():
        t = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        removed = loop.remove_reader(a.fileno())
        b.send(b"unseen")
        await asyncio.sleep(0.02)
        done_early = t.done()
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0)
        return removed, done_early

    assert run(loop, main()) == (True, False)


def test_two_sequential_sock_recv(loop, run, pair):
    a, b = pair

    async def main():
        out = []
        for msg in (b"one", b"two", b"three"):
            loop.call_later(0.002, b.send, msg)
            out.append(await loop.sock_recv(a, 100))
        return out

    assert run(loop, main()) == [b"one", b"two", b"three"]


# ---------------------------------------------------------------------------
# transports (asyncio's Python transports over the loop's fd watching)


def test_create_server_and_connection_echo(loop, run):
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class Client(asyncio.Protocol):
        def __init__(self):
            self.received = bytearray()
            self.done = loop.create_future()

        def data_received(self, data):
            self.received += data
            if len(self.received) >= 11:
                self.done.set_result(bytes(self.received))

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, client = await loop.create_connection(Client, "127.0.0.1", port)
        transport.write(b"hello ")
        transport.write(b"world")
        try:
            return await client.done
        finally:
            transport.close()
            server.close()
            await server.wait_closed()

    assert run(loop, main()) == b"hello world"


def test_streams_echo(loop, run):
    async def handle(reader, writer):
        data = await reader.readline()
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"streams work\n")
        line = await reader.readline()
        eof = await reader.read()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line, eof

    assert run(loop, main()) == (b"STREAMS WORK\n", b"")


def test_datagram_endpoint_sendto_hostname(loop, run, udp_pair):
    # Another loop (rloop) aborts the process on sendto() to a hostname.
    _, receiver = udp_pair
    port = receiver.getsockname()[1]

    async def main():
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        try:
            transport.sendto(b"to a hostname", ("localhost", port))
            return await loop.sock_recv(receiver, 100)
        finally:
            transport.close()
            await asyncio.sleep(0)

    assert run(loop, main()) == b"to a hostname"


def test_datagram_endpoint_round_trip(loop, run):
    class Server(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data[::-1], addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            self.got.set_result(data)

    async def main():
        st, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
        addr = st.get_extra_info("sockname")
        ct, client = await loop.create_datagram_endpoint(Client, remote_addr=addr)
        try:
            ct.sendto(b"abc")
            return await client.got
        finally:
            ct.close()
            st.close()
            await asyncio.sleep(0)

    assert run(loop, main()) == b"cba"


# --- the native sock_* fast path and its fallbacks -------------------------------------------
# oxloop does sock_recv / sock_recv_into / sock_sendall natively for plain socket.socket
# objects and falls back to asyncio's code otherwise; each outcome must equal stock asyncio's.


class _SocketSubclass(socket.socket):
    pass


async def _outcome(coro):
    try:
        return ("ok", await coro)
    except Exception as exc:  # the exception type and message are what is compared
        return ("raise", type(exc), str(exc))


def _sock_outcomes(lp, action):
    """Runs action(loop, a, b) on loop lp with a fresh socketpair; returns its outcome."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        return lp.run_until_complete(asyncio.wait_for(_outcome(action(lp, a, b)), 5))
    finally:
        a.close()
        b.close()


SOCK_CASES = {
    "recv-negative": lambda lp, a, b: lp.sock_recv(a, -1),
    "recv-zero": lambda lp, a, b: lp.sock_recv(a, 0),
    "recv-str-size": lambda lp, a, b: lp.sock_recv(a, "10"),
    "recv-into-bytes": lambda lp, a, b: lp.sock_recv_into(a, b"readonly"),
    "recv-into-str": lambda lp, a, b: lp.sock_recv_into(a, "nope"),
    "sendall-str": lambda lp, a, b: lp.sock_sendall(a, "text"),
    "sendall-noncontiguous": lambda lp, a, b: lp.sock_sendall(a, memoryview(b"abcdef")[::2]),
    "sendall-memoryview-slice": lambda lp, a, b: lp.sock_sendall(a, memoryview(b"abcdef")[2:]),
    "sendall-bytearray": lambda lp, a, b: lp.sock_sendall(a, bytearray(b"xyz")),
    "recv-into-empty": lambda lp, a, b: lp.sock_recv_into(a, bytearray(0)),
    "recv-closed-socket": lambda lp, a, b: (a.close(), lp.sock_recv(a, 10))[1],
    "sendall-closed-socket": lambda lp, a, b: (a.close(), lp.sock_sendall(a, b"x"))[1],
    "sendall-to-closed-peer": lambda lp, a, b: (b.close(), lp.sock_sendall(a, b"x" * 100000))[1],
}


@pytest.mark.parametrize("case", sorted(SOCK_CASES))
def test_sock_call_outcome_same_as_stock(loop_factory, loop, case):
    got = _sock_outcomes(loop, SOCK_CASES[case])
    stock = loop_factory.new_stock_loop()
    try:
        want = _sock_outcomes(stock, SOCK_CASES[case])
    finally:
        stock.close()
    assert got[:2] == want[:2]
    if want[0] == "raise" and want[1] is not OSError:
        assert got[2] == want[2]


def test_sock_recv_on_socket_subclass(loop, run):
    a, b = socket.socketpair()
    sa = _SocketSubclass(fileno=a.detach())
    sa.setblocking(False)
    b.setblocking(False)
    try:
        loop.call_later(0.01, b.send, b"sub")
        assert run(loop, loop.sock_recv(sa, 10)) == b"sub"
        run(loop, loop.sock_sendall(sa, b"back"))
        assert b.recv(10) == b"back"
    finally:
        sa.close()
        b.close()


def test_sock_recv_waiting_then_data(loop, run, pair):
    a, b = pair

    async def main():
        fut = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        assert not fut.done()
        b.send(b"late")
        return await fut

    assert run(loop, main()) == b"late"
    assert loop.remove_reader(a) is False  # the watcher went away with the future


def test_sock_recv_into_waiting_then_data(loop, run, pair):
    a, b = pair
    buf = bytearray(10)

    async def main():
        fut = loop.create_task(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0.01)
        b.send(b"12345")
        return await fut

    assert run(loop, main()) == 5
    assert bytes(buf[:5]) == b"12345"
    assert loop.remove_reader(a) is False


def test_sock_recv_error_while_waiting(loop, run):
    # A TCP peer that resets the connection while we wait: the error reaches the awaiter.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    c = socket.create_connection(lsock.getsockname())
    s, _ = lsock.accept()
    c.setblocking(False)
    try:
        async def main():
            fut = loop.create_task(loop.sock_recv(c, 100))
            await asyncio.sleep(0.01)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            return await fut

        with pytest.raises(ConnectionResetError):
            run(loop, main())
        assert loop.remove_reader(c) is False
    finally:
        c.close()
        lsock.close()


# --- datagram endpoints -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 1024, 65507])
def test_udp_endpoint_receives_whole_datagrams(loop, run, size):
    # oxloop reads IPv4/IPv6 datagrams with a 64 KiB buffer instead of asyncio's 256 KiB: the
    # largest possible IPv4 datagram must still arrive whole.
    got = loop.create_future()

    class Recv(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            if not got.done():
                got.set_result(data)

    async def main():
        tr, _ = await loop.create_datagram_endpoint(Recv, local_addr=("127.0.0.1", 0))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        try:
            payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            s.sendto(payload, tr.get_extra_info("sockname"))
            data = await got
        finally:
            s.close()
            tr.close()
        return payload, data

    payload, data = run(loop, main())
    assert data == payload


# ---------------------------------------------------------------------------
# After a waiting sock_recv/sock_sendall the fd's registration may stay in the kernel,
# disarmed (oxloop's epoll: one-shot). Whatever happens to the fd number next must behave
# exactly as if it had been removed.


async def _recv_after_wait(loop, sock, peer, payload=b"x"):
    t = loop.create_task(loop.sock_recv(sock, 100))
    await asyncio.sleep(0.01)
    assert not t.done()
    peer.send(payload)
    return await asyncio.wait_for(t, 5)


@pytest.mark.parametrize("keep_dup", [False, True])
def test_fd_number_reused_after_sock_recv(loop, run, keep_dup):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        assert await _recv_after_wait(loop, a, b) == b"x"
        fd = a.fileno()
        dup = os.dup(fd) if keep_dup else None
        a.close()
        c, d = socket.socketpair()
        try:
            c.setblocking(False)
            if c.fileno() != fd:
                # The number was not reused here: move it there.
                os.dup2(c.fileno(), fd)
                c.close()
                c = socket.socket(fileno=fd)
                c.setblocking(False)
            assert c.fileno() == fd
            # The old file (still open through the dup) gets data: it must wake nothing.
            if keep_dup:
                b.send(b"old")
            fired = []
            loop.add_reader(fd, fired.append, "new")
            await asyncio.sleep(0.02)
            assert fired == []
            d.send(b"y")
            for _ in range(200):
                if fired:
                    break
                await asyncio.sleep(0.001)
            assert fired and set(fired) == {"new"}
            assert loop.remove_reader(fd)
            assert c.recv(10) == b"y"
            # And a waiting sock_recv on the new socket completes.
            assert await _recv_after_wait(loop, c, d, b"z") == b"z"
        finally:
            c.close()
            d.close()
            b.close()
            if dup is not None:
                os.close(dup)

    run(loop, main())


def test_unread_data_after_sock_recv_does_not_wake_loop(loop, run):
    # Data left unread after a completed sock_recv must not make the loop spin.
    async def main():
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            assert await _recv_after_wait(loop, a, b) == b"x"
            b.send(b"more")
            await asyncio.sleep(0.01)
            t0 = time.process_time()
            await asyncio.sleep(0.2)
            spent = time.process_time() - t0
            assert spent < 0.1, f"loop busy while idle: {spent:.3f} s CPU in 0.2 s"
            assert await loop.sock_recv(a, 100) == b"more"
            assert await _recv_after_wait(loop, a, b, b"again") == b"again"
        finally:
            a.close()
            b.close()

    run(loop, main())


def test_sock_recv_then_reader_same_fd(loop, run):
    # A waiting sock_recv, then add_reader on the same fd after it finished, then both at once.
    async def main():
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            assert await _recv_after_wait(loop, a, b) == b"x"
            fired = []
            loop.add_reader(a, lambda: fired.append(a.recv(10)))
            b.send(b"r")
            for _ in range(200):
                if fired:
                    break
                await asyncio.sleep(0.001)
            assert fired == [b"r"]
            assert loop.remove_reader(a)
            assert not loop.remove_reader(a)
            # sock_sendall waiting on a full buffer while another sock_recv waits.
            t = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0.01)
            big = b"\0" * (8 * 1024 * 1024)
            s = loop.create_task(loop.sock_sendall(a, big))
            await asyncio.sleep(0.01)
            assert not s.done()
            got = 0
            b.setblocking(False)
            while got < len(big):
                try:
                    got += len(b.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            await asyncio.wait_for(s, 5)
            b.send(b"q")
            assert await asyncio.wait_for(t, 5) == b"q"
        finally:
            a.close()
            b.close()

    run(loop, main())


# ---------------------------------------------------------------------------
# Found by the differential fuzzer (issue 10): a pending sock_* op outlives its socket, sizes
# from the caller, buffers changed while an op waits, odd fd numbers, closed fds per selector.
# Each scenario runs on the loop under test and on a stock asyncio loop waiting with the same
# selector family; the stock loop decides, except where noted (documented differences).


def _task_outcome(t):
    if not t.done():
        t.cancel()
        return "pending"
    if t.cancelled():
        return "cancelled"
    e = t.exception()
    if e is not None:
        return ("error", type(e), getattr(e, "errno", None))
    return ("result", t.result())


class _Sockets:
    """The sockets a scenario made: whatever happens to the scenario, the fd numbers are
    unwatched and the sockets closed afterwards (a failing select() stops the coroutine)."""

    def __init__(self):
        self.socks = []
        self.fds = set()

    def pair(self):
        a, b = socket.socketpair()
        self.add(a, b)
        return a, b

    def add(self, *socks):
        for s in socks:
            self.socks.append(s)
            self.fds.add(s.fileno())

    def cleanup(self, lp):
        for fd in self.fds:
            for m in (lp.remove_reader, lp.remove_writer):
                try:
                    m(fd)
                except Exception:
                    pass
        for s in self.socks:
            s.close()


def _scenario_outcome(lp, scenario):
    """Run scenario(loop, sockets) as the loop's main coroutine: its value, or what it
    raised."""
    socks = _Sockets()
    try:
        return ("done", lp.run_until_complete(asyncio.wait_for(scenario(lp, socks), 10)))
    except Exception as e:  # e.g. SelectSelector.select() failing with EBADF
        return ("loop raised", type(e), getattr(e, "errno", None))
    finally:
        socks.cleanup(lp)
        for t in asyncio.all_tasks(lp):
            t.cancel()
        lp.run_until_complete(asyncio.sleep(0))


def _stock_outcome(loop_factory, scenario):
    stock = loop_factory.new_stock_loop()
    try:
        return _scenario_outcome(stock, scenario)
    finally:
        stock.close()


EBADF = ("error", OSError, errno.EBADF)


async def _recv_then_close_and_reuse(loop, socks):
    """F1: sock_recv pending on a; a closed; c takes a's fd number and gets data."""
    a, b = socks.pair()
    a.setblocking(False)
    fd = a.fileno()
    t1 = loop.create_task(loop.sock_recv(a, 100))
    await asyncio.sleep(0)
    a.close()
    b.close()
    c, d = socks.pair()
    assert fd in (c.fileno(), d.fileno())
    if d.fileno() == fd:
        c, d = d, c
    c.setblocking(False)
    d.send(b"for-c")
    await asyncio.sleep(0.05)
    out = _task_outcome(t1)
    # c's data is still there for c: nothing else read it
    assert c.recv(100) == b"for-c"
    return out


def test_pending_sock_recv_never_reads_the_socket_that_reused_its_fd(loop_factory, loop):
    expected = _stock_outcome(loop_factory, _recv_then_close_and_reuse)
    got = _scenario_outcome(loop, _recv_then_close_and_reuse)
    assert got == expected
    # asyncio's epoll lost the closed fd's registration: the op waits forever; poll and
    # select see the fd ready and the op's recv on the closed socket fails with EBADF.
    assert expected == ("done", "pending" if loop_factory.selector_name == "epoll" else EBADF)


async def _sendall_then_close_and_reuse(loop, socks):
    """F1: sock_sendall pending on a full a; a closed; c takes a's fd number."""
    a, b = socks.pair()
    a.setblocking(False)
    fd = a.fileno()
    t1 = loop.create_task(loop.sock_sendall(a, b"x" * 10_000_000))
    await asyncio.sleep(0)
    a.close()
    b.close()
    c, d = socks.pair()
    if d.fileno() == fd:
        c, d = d, c
    assert c.fileno() == fd
    c.setblocking(False)
    d.setblocking(False)
    await asyncio.sleep(0.05)
    out = _task_outcome(t1)
    with pytest.raises(BlockingIOError):
        d.recv(100)  # not one byte reached the new socket
    return out


def test_pending_sock_sendall_never_writes_the_socket_that_reused_its_fd(loop_factory, loop):
    expected = _stock_outcome(loop_factory, _sendall_then_close_and_reuse)
    got = _scenario_outcome(loop, _sendall_then_close_and_reuse)
    assert got == expected
    assert expected == ("done", "pending" if loop_factory.selector_name == "epoll" else EBADF)


async def _recv_then_close_with_dup_alive(loop, socks):
    """F1: the closed socket's file stays open through a dup and becomes readable."""
    a, b = socks.pair()
    a.setblocking(False)
    t1 = loop.create_task(loop.sock_recv(a, 100))
    await asyncio.sleep(0)
    a2 = a.dup()
    socks.add(a2)
    a.close()
    b.send(b"x")
    await asyncio.sleep(0.05)
    out = _task_outcome(t1)
    assert a2.recv(100) == b"x"  # the byte was left for the dup
    return out


def test_pending_sock_recv_on_closed_socket_whose_file_lives_on(loop_factory, loop):
    expected = _stock_outcome(loop_factory, _recv_then_close_with_dup_alive)
    got = _scenario_outcome(loop, _recv_then_close_with_dup_alive)
    assert got == expected
    if loop_factory.selector_name == "select":
        # select(2) itself fails on the closed fd, out of run_forever
        assert expected == ("loop raised", OSError, errno.EBADF)
    else:
        assert expected == ("done", EBADF)


async def _recv_on_new_socket_after_stale_op(loop, socks):
    """F4: a pending op's socket closed; a new sock_recv on the socket reusing the fd."""
    a, b = socks.pair()
    a.setblocking(False)
    fd = a.fileno()
    t1 = loop.create_task(loop.sock_recv(a, 100))
    await asyncio.sleep(0)
    a.close()
    b.close()
    await asyncio.sleep(0.01)
    c, d = socks.pair()
    if d.fileno() == fd:
        c, d = d, c
    c.setblocking(False)
    t2 = loop.create_task(loop.sock_recv(c, 100))
    await asyncio.sleep(0)
    d.send(b"for-c")
    await asyncio.sleep(0.05)
    return _task_outcome(t1), _task_outcome(t2)


def test_sock_recv_on_socket_reusing_fd_of_stale_op(loop_factory, loop):
    expected = _stock_outcome(loop_factory, _recv_on_new_socket_after_stale_op)
    got = _scenario_outcome(loop, _recv_on_new_socket_after_stale_op)
    sel = loop_factory.selector_name
    if sel == "epoll":
        # Stock epoll keeps its stale key and never registers the new file: the new op
        # waits forever. oxloop completes it (documented: it does strictly more).
        assert expected == ("done", ("pending", "pending"))
        if loop_factory.is_oxloop and loop_factory.id != "oxloop-pyselector":
            assert got == ("done", ("pending", ("result", b"for-c")))
        else:
            assert got == expected
    else:
        assert got == expected
        if sel == "poll":
            assert expected == ("done", (EBADF, ("result", b"for-c")))
        else:  # select(2) fails on the fd closed in between
            assert expected == ("loop raised", OSError, errno.EBADF)


async def _add_reader_on_closed_fd_with_pending_op(loop, socks):
    """F5: add_reader(fd) of a closed socket that still had a pending sock op."""
    a, b = socks.pair()
    a.setblocking(False)
    fd = a.fileno()
    t1 = loop.create_task(loop.sock_recv(a, 100))
    await asyncio.sleep(0)
    a.close()
    b.close()
    try:
        r = loop.add_reader(fd, noop)
        return ("add_reader", r, loop.remove_reader(fd))
    except Exception as e:
        return ("add_reader raised", type(e), getattr(e, "errno", None))
    finally:
        t1.cancel()


def test_add_reader_on_closed_fd_of_pending_sock_op(loop_factory, loop):
    expected = _stock_outcome(loop_factory, _add_reader_on_closed_fd_with_pending_op)
    got = _scenario_outcome(loop, _add_reader_on_closed_fd_with_pending_op)
    assert got == expected == ("done", ("add_reader", None, True))


_HUGE_RECV_CHILD = r"""
import asyncio, selectors, socket, sys
kind, n = sys.argv[1], int(sys.argv[2])
if kind == "asyncio":
    loop = asyncio.SelectorEventLoop()
else:
    import oxloop
    loop = (oxloop.SelectorEventLoop(selectors.DefaultSelector()) if kind == "oxloop-pyselector"
            else oxloop.SelectorEventLoop(kind.split("-")[1]))
async def main(data_first):
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        if data_first:
            b.send(b"x")
        try:
            await loop.sock_recv(a, n)
        except MemoryError:
            return "MemoryError"
        return "no error"
    finally:
        a.close(); b.close()
print(loop.run_until_complete(main(False)), loop.run_until_complete(main(True)))
loop.close()
"""


@pytest.mark.parametrize("n", [2**40, 2**50])
def test_sock_recv_of_huge_size_is_memory_error(loop_factory, n):
    """F3: recv(n) allocates n bytes first; when that fails it is MemoryError, never an
    abort of the process. Run in a child process: a regression would kill the test run."""
    import subprocess
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    r = subprocess.run([sys.executable, "-c", _HUGE_RECV_CHILD, loop_factory.id, str(n)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["MemoryError", "MemoryError"]


def test_sock_recv_of_large_size_gets_what_arrived(loop, run, pair):
    """Sizes above the loop's kept buffer (1 MiB) take a buffer of their own."""
    a, b = pair

    async def main():
        loop.call_later(0.01, b.send, b"late")
        first = await loop.sock_recv(a, 64 * 1024 * 1024)
        b.send(b"now")
        await asyncio.sleep(0.01)
        return first, await loop.sock_recv(a, 3 * 1024 * 1024)

    assert run(loop, main()) == (b"late", b"now")


def test_sock_recv_into_buffer_resized_while_pending(loop, run, pair):
    """F7: asyncio holds no export of the buffer between attempts (it calls
    sock.recv_into(buf) each time): a bytearray may grow meanwhile."""
    a, b = pair

    async def main():
        buf = bytearray(10)
        t = loop.create_task(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0)
        buf.extend(b"123")
        b.send(b"x")
        return await asyncio.wait_for(t, 5), bytes(buf)

    assert run(loop, main()) == (1, b"x" + b"\0" * 9 + b"123")


def test_sock_recv_into_memoryview_released_while_pending(loop, run, pair):
    """F7: the release is allowed; the op then fails as recv_into(released view) does, and
    writes nothing."""
    a, b = pair

    async def main():
        buf = bytearray(10)
        m = memoryview(buf)
        t = loop.create_task(loop.sock_recv_into(a, m))
        await asyncio.sleep(0)
        m.release()
        b.send(b"x")
        with pytest.raises(TypeError, match="recv_into"):
            await asyncio.wait_for(t, 5)
        assert a.recv(10) == b"x"  # still there: nothing was read
        return bytes(buf)

    assert run(loop, main()) == b"\0" * 10


def test_sock_sendall_memoryview_released_while_pending(loop, run, pair):
    """F7: asyncio sends from its own memoryview(data): the caller may release its view and
    every byte still goes out."""
    a, b = pair
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB: more than the socket buffers take

    async def main():
        m = memoryview(bytearray(data))
        t = loop.create_task(loop.sock_sendall(a, m))
        await asyncio.sleep(0)
        assert not t.done()
        m.release()
        got = bytearray()
        while len(got) < len(data):
            try:
                got += b.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(t, 5)
        return bytes(got) == data

    assert run(loop, main())


def test_sock_sendall_bytearray_cannot_be_resized_while_pending(loop, run, pair):
    """As asyncio: its memoryview(data) keeps the bytearray from resizing."""
    a, b = pair

    async def main():
        buf = bytearray(b"y" * 10_000_000)
        t = loop.create_task(loop.sock_sendall(a, buf))
        await asyncio.sleep(0)
        assert not t.done()
        with pytest.raises(BufferError):
            del buf[100:]
        t.cancel()
        await asyncio.sleep(0)

    run(loop, main())


class _FilenoReturns:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value


def _fd_call_outcome(lp, method, fileobj):
    try:
        r = getattr(lp, method)(fileobj, *((noop,) if method.startswith("add") else ()))
    except Exception as e:
        return ("raises", type(e), str(e) if isinstance(e, OverflowError) else None)
    finally:
        for m in ("remove_reader", "remove_writer"):
            try:
                getattr(lp, m)(fileobj)
            except Exception:
                pass
    return ("returns", r)


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader",
                                    "remove_writer"])
@pytest.mark.parametrize("fd", [2**31, 2**63, 2**70, -1, -2**70])
def test_fd_numbers_beyond_c_int(loop_factory, loop, method, fd):
    """F13: asyncio keeps an fd as a Python int: remove_* of a number never registered is
    False, add_* raises select.epoll/poll's OverflowError. Stock SelectSelector accepts any
    number and fails in select() later; oxloop's select refuses it at the call with the
    ValueError of an fd beyond FD_SETSIZE (documented)."""
    stock = loop_factory.new_stock_loop()
    try:
        expected = _fd_call_outcome(stock, method, fd)
    finally:
        stock.close()
    got = _fd_call_outcome(loop, method, fd)
    if (loop_factory.is_oxloop and loop_factory.selector_name == "select"
            and method.startswith("add") and fd > 0
            and loop_factory.id != "oxloop-pyselector"):
        assert expected == ("returns", None)
        assert got == ("raises", ValueError, None)
    else:
        assert got == expected


@pytest.mark.parametrize("value", ["{fd}", "{fd}.0", "float", "True", "x", "None", "-1"])
def test_fileno_converted_with_int(loop_factory, loop, pair, value):
    """F13: asyncio's selectors take int(fileobj.fileno()): "5" and 5.0 are accepted."""
    a, b = pair
    fd = a.fileno()
    v = {"{fd}": str(fd), "{fd}.0": f"{fd}.0", "float": float(fd), "True": True, "x": "x",
         "None": None, "-1": -1}[value]
    outcomes = []
    for lp in (loop_factory.new_stock_loop(), loop):
        try:
            outcomes.append(tuple(_fd_call_outcome(lp, m, _FilenoReturns(v))
                                  for m in ("add_reader", "remove_reader")))
        finally:
            if lp is not loop:
                lp.close()
    assert outcomes[1] == outcomes[0]


async def _closed_fd_watched(loop, socks):
    """F14: add_reader of an fd that is closed (nothing reuses it)."""
    a, b = socks.pair()
    fd = a.fileno()
    a.close()
    hits = []
    try:
        loop.add_reader(fd, hits.append, 1)
    except OSError as e:
        return ("add_reader raised", type(e), e.errno)
    await asyncio.sleep(0.01)
    return ("ran", bool(hits), loop.remove_reader(fd))


def test_closed_fd_watched_like_stock_per_selector(loop_factory, loop):
    """F14: stock epoll refuses a closed fd (EBADF), stock poll accepts it and reports it
    ready (POLLNVAL) on every iteration; stock select accepts it and select() then fails
    out of run_forever on every iteration: oxloop's select refuses it at the call with that
    same OSError(EBADF) instead (documented)."""
    expected = _stock_outcome(loop_factory, _closed_fd_watched)
    got = _scenario_outcome(loop, _closed_fd_watched)
    sel = loop_factory.selector_name
    if sel == "select":
        assert expected == ("loop raised", OSError, errno.EBADF)
        assert got == ("done", ("add_reader raised", OSError, errno.EBADF))
    else:
        assert got == expected
        assert expected == ("done", ("add_reader raised", OSError, errno.EBADF) if sel == "epoll"
                            else ("ran", True, True))


def test_add_writer_on_closed_registered_socket_object(loop_factory, loop):
    """F14: the socket object itself registered for reading, then closed: add_writer finds
    its key (asyncio's lookup fallback) and then modifies it: epoll's modify fails with EBADF,
    poll's succeeds, select's unregister + register(sock) fails with ValueError."""
    def outcome(lp):
        a, b = socket.socketpair()
        try:
            lp.add_reader(a, noop)
            a.close()
            res = []
            for m, args in (("add_writer", (noop,)), ("remove_writer", ()),
                            ("remove_reader", ())):
                try:
                    res.append(("returns", getattr(lp, m)(a, *args)))
                except Exception as e:
                    res.append(("raises", type(e), getattr(e, "errno", None)))
            return res
        finally:
            b.close()

    stock = loop_factory.new_stock_loop()
    try:
        expected = outcome(stock)
    finally:
        stock.close()
    assert outcome(loop) == expected


def _sock_call_outcomes(lp):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.send(b"xy")
        out = []

        async def attempt(coro):
            try:
                out.append(("ok", await asyncio.wait_for(coro, 0.05)))
            except asyncio.TimeoutError:
                out.append("pending")
            except Exception as e:
                out.append((type(e), str(e)))

        try:
            for n in (2**70, 2**63, -1, -2**70, True, 0):
                await attempt(lp.sock_recv(a, n))
            ba = bytearray(3)
            for buf in (b"abc", memoryview(ba)[::2], "str", None, memoryview(ba).toreadonly()):
                await attempt(lp.sock_recv_into(a, buf))
            for data in ("str", None, 5, memoryview(b"abcd")[::2], [1]):
                await attempt(lp.sock_sendall(a, data))
        finally:
            a.close()
            b.close()
        await attempt(lp.sock_recv(a, 10))
        await attempt(lp.sock_sendall(a, b"x"))
        await attempt(lp.sock_recv_into(a, bytearray(3)))
        return out

    return lp.run_until_complete(main())


def test_sock_calls_with_bad_arguments_like_stock(loop_factory, loop):
    """Sizes beyond ssize_t, negative sizes, bool, buffers of the wrong kind, closed
    sockets: the same results and exceptions (type and message) as asyncio's."""
    stock = loop_factory.new_stock_loop()
    try:
        expected = _sock_call_outcomes(stock)
    finally:
        stock.close()
    assert _sock_call_outcomes(loop) == expected
