"""connect_read_pipe / connect_write_pipe: pipes, FIFOs, ptys, socketpairs, flow control.

Each test runs on stock asyncio and on every oxloop loop; the stock loop decides what is
right.
"""

import asyncio
import errno
import hashlib
import os
import socket
import sys
import tempfile

import pytest

from helpers import exact

PY = sys.version_info[:2]


class ReadProto(asyncio.Protocol):
    """Records every callback of a read pipe protocol, in order."""

    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


class WriteProto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.lost = loop.create_future()
        self.resumed = None

    def connection_made(self, transport):
        self.events.append("made")

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def read_all(fd):
    chunks = []
    while True:
        c = os.read(fd, 65536)
        if not c:
            return b"".join(chunks)
        chunks.append(c)


# ---------------------------------------------------------------------------
# read pipes


def test_read_pipe_callbacks_data_eof_lost(loop, run):
    r, w = os.pipe()
    pipe = os.fdopen(r, "rb", 0)

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: ReadProto(loop), pipe)
        assert proto.events == ["made"]
        assert tr.get_extra_info("pipe") is pipe
        assert tr.get_extra_info("nothing", "dflt") == "dflt"
        if PY >= (3, 11):  # 3.9/3.10 pipe transports lack is_reading()
            assert tr.is_reading()
        assert not tr.is_closing()
        assert os.get_blocking(r) is False
        os.write(w, b"abc")
        await asyncio.sleep(0.02)
        os.write(w, b"def")
        os.close(w)
        exc = await proto.lost
        return tr, proto, exc

    tr, proto, exc = run(loop, main())
    assert exc is None
    assert bytes(proto.data) == b"abcdef"
    assert proto.events == ["made", "data", "eof", "lost"]
    assert tr.is_closing()
    assert pipe.closed  # the transport closes the pipe object


def test_read_pipe_pause_resume_reading(loop, run):
    r, w = os.pipe()
    pipe = os.fdopen(r, "rb", 0)

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: ReadProto(loop), pipe)
        tr.pause_reading()
        if PY >= (3, 11):
            assert not tr.is_reading()
        tr.pause_reading()  # a second pause is a no-op
        os.write(w, b"while paused")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        tr.resume_reading()
        if PY >= (3, 11):
            assert tr.is_reading()
        tr.resume_reading()  # a second resume is a no-op
        for _ in range(100):
            if proto.data:
                break
            await asyncio.sleep(0.01)
        assert proto.data == b"while paused"
        tr.close()
        assert tr.is_closing()
        if PY >= (3, 11):
            assert not tr.is_reading()
        exc = await proto.lost
        os.close(w)
        return proto, exc

    proto, exc = run(loop, main())
    assert exc is None
    assert proto.events == ["made", "data", "lost"]  # close(): no eof_received


def test_read_pipe_close_twice_with_unread_data(loop, run):
    r, w = os.pipe()
    pipe = os.fdopen(r, "rb", 0)

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: ReadProto(loop), pipe)
        assert not hasattr(tr, "abort")  # asyncio's read pipe transport has none
        os.write(w, b"unread")
        tr.close()
        tr.close()  # no second connection_lost
        exc = await proto.lost
        await asyncio.sleep(0.02)
        os.close(w)
        return proto, exc

    proto, exc = run(loop, main())
    assert exc is None
    assert proto.events == ["made", "lost"]
    assert pipe.closed


def test_read_pipe_large_transfer_with_slow_consumer(loop, run):
    """16 MiB through a pipe, the protocol pausing the transport now and then."""
    r, w = os.pipe()
    pipe = os.fdopen(r, "rb", 0)
    total = 16 * 1024 * 1024
    block = bytes(range(256)) * 256  # 64 KiB

    class Slow(ReadProto):
        def data_received(self, data):
            super().data_received(data)
            if len(self.data) % 3 == 0:
                self.transport.pause_reading()
                loop.call_later(0.001, self.transport.resume_reading)

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: Slow(loop), pipe)
        wpipe = os.fdopen(w, "wb", 0)
        wtr, wproto = await loop.connect_write_pipe(lambda: WriteProto(loop), wpipe)
        sent = 0
        while sent < total:
            wtr.write(block)
            sent += len(block)
            if wtr.get_write_buffer_size() > 1024 * 1024:
                await asyncio.sleep(0.001)
        wtr.close()
        await wproto.lost
        exc = await proto.lost
        return proto, exc

    proto, exc = run(loop, main(), timeout=30)
    assert exc is None
    assert len(proto.data) == total
    assert hashlib.sha256(proto.data).digest() == hashlib.sha256(block * (total // len(block))).digest()


# ---------------------------------------------------------------------------
# write pipes


def test_write_pipe_writes_and_close_flushes(loop, run):
    r, w = os.pipe()
    wpipe = os.fdopen(w, "wb", 0)

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), wpipe)
        assert tr.get_extra_info("pipe") is wpipe
        assert tr.can_write_eof() is True
        assert tr.get_write_buffer_size() == 0
        tr.write(b"hello ")
        tr.write(bytearray(b"pipe "))
        tr.write(memoryview(b"world"))
        tr.writelines([b"!", b"\n"])
        tr.write(b"")  # empty writes are ignored
        tr.close()
        assert tr.is_closing()
        exc = await proto.lost
        return proto, exc

    proto, exc = run(loop, main())
    assert exc is None
    assert proto.events == ["made", "lost"]
    assert read_all(r) == b"hello pipe world!\n"
    os.close(r)
    assert wpipe.closed


def test_write_pipe_write_eof_closes(loop, run):
    r, w = os.pipe()

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        tr.write(b"data then eof")
        tr.write_eof()
        assert tr.is_closing()
        return await proto.lost

    assert run(loop, main()) is None
    assert read_all(r) == b"data then eof"
    os.close(r)


def test_write_pipe_flow_control_and_limits(loop, run):
    """The pipe is filled with nobody reading: the transport buffers, calls pause_writing above
    the high-water mark, and resume_writing once a reader drained it below the low one."""
    r, w = os.pipe()

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)  # asyncio's defaults
        tr.set_write_buffer_limits(high=100_000, low=10_000)
        assert tr.get_write_buffer_limits() == (10_000, 100_000)
        with pytest.raises(ValueError, match=exact(
                "high (1) must be >= low (2) must be >= 0")):
            tr.set_write_buffer_limits(high=1, low=2)
        chunk = b"x" * 50_000
        written = 0
        while "pause" not in proto.events:
            tr.write(chunk)
            written += len(chunk)
            assert written < 100 * 1024 * 1024
        assert tr.get_write_buffer_size() > 100_000
        proto.resumed = loop.create_future()
        got = bytearray()

        def drain():
            while True:
                try:
                    c = os.read(r, 1 << 20)
                except BlockingIOError:
                    return
                got.extend(c)
                if not c:
                    return

        os.set_blocking(r, False)
        loop.add_reader(r, drain)
        await proto.resumed
        assert tr.get_write_buffer_size() <= 10_000
        tr.close()
        await proto.lost
        await asyncio.sleep(0.01)
        drain()
        loop.remove_reader(r)
        return proto, written, bytes(got)

    proto, written, got = run(loop, main())
    assert proto.events == ["made", "pause", "resume", "lost"]
    assert got == b"x" * written
    os.close(r)


def test_write_pipe_abort_discards_buffer(loop, run):
    r, w = os.pipe()

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        big = b"y" * (4 * 1024 * 1024)  # more than the pipe holds
        tr.write(big)
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert tr.is_closing()
        return await proto.lost

    assert run(loop, main()) is None
    data = read_all(r)
    assert 0 < len(data) < 4 * 1024 * 1024
    os.close(r)


@pytest.mark.parametrize("buffered", [False, True])
def test_write_pipe_reader_gone(loop, run, buffered):
    """The read end closing is noticed (the write end polls readable): connection_lost(None)
    with nothing buffered, BrokenPipeError with data still buffered."""
    r, w = os.pipe()

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        if buffered:
            tr.write(b"z" * (4 * 1024 * 1024))
            assert tr.get_write_buffer_size() > 0
        os.close(r)
        return await proto.lost

    exc = run(loop, main())
    if buffered:
        assert isinstance(exc, BrokenPipeError)
    else:
        assert exc is None


def test_write_to_closing_pipe_transport_is_ignored(loop, run):
    r, w = os.pipe()

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        tr.close()
        tr.write(b"after close")  # asyncio: counted, warned about after 5 times, not raised
        await proto.lost

    run(loop, main())
    assert read_all(r) == b""
    os.close(r)


# ---------------------------------------------------------------------------
# unsupported fd types


def test_read_pipe_regular_file_rejected(loop, run):
    with tempfile.TemporaryFile() as f:
        with pytest.raises(ValueError, match=exact("Pipe transport is for pipes/sockets only.")):
            run(loop, loop.connect_read_pipe(asyncio.Protocol, f))
        assert not f.closed


def test_write_pipe_regular_file_rejected(loop, run):
    with tempfile.TemporaryFile() as f:
        with pytest.raises(ValueError, match=exact(
                "Pipe transport is only for pipes, sockets and character devices")):
            run(loop, loop.connect_write_pipe(asyncio.Protocol, f))
        assert not f.closed


# ---------------------------------------------------------------------------
# FIFOs, socketpairs, ptys


def test_fifo_both_ends(loop, run, tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)

    async def main():
        rtr, rproto = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(rfd, "rb", 0))
        wtr, wproto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(wfd, "wb", 0))
        wtr.write(b"through a fifo")
        wtr.close()
        await wproto.lost
        return rproto, await rproto.lost

    proto, exc = run(loop, main())
    assert exc is None
    assert proto.data == b"through a fifo"
    assert proto.events == ["made", "data", "eof", "lost"]


def test_socketpair_as_pipes(loop, run):
    a, b = socket.socketpair()

    async def main():
        rtr, rproto = await loop.connect_read_pipe(lambda: ReadProto(loop), a)
        wtr, wproto = await loop.connect_write_pipe(lambda: WriteProto(loop), b)
        assert rtr.get_extra_info("pipe") is a
        assert wtr.get_extra_info("pipe") is b
        wtr.write(b"over a socketpair")
        wtr.close()
        await wproto.lost
        return rproto, await rproto.lost

    proto, exc = run(loop, main())
    assert exc is None
    assert proto.data == b"over a socketpair"
    assert proto.events == ["made", "data", "eof", "lost"]
    assert a.fileno() == -1 and b.fileno() == -1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty behaviour checked on Linux")
def test_pty_master_read_and_write(loop, run):
    """connect_read_pipe/connect_write_pipe on a pty master (a character device)."""
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)
    master_r = os.fdopen(master, "rb", 0)
    master_w = os.fdopen(os.dup(master), "wb", 0)

    async def main():
        rtr, rproto = await loop.connect_read_pipe(lambda: ReadProto(loop), master_r)
        wtr, wproto = await loop.connect_write_pipe(lambda: WriteProto(loop), master_w)
        # terminal -> program
        os.write(slave, b"from the slave side")
        for _ in range(200):
            if len(rproto.data) >= 19:
                break
            await asyncio.sleep(0.01)
        # program -> terminal
        wtr.write(b"to the slave side")
        await asyncio.sleep(0.05)
        got = os.read(slave, 100)
        wtr.close()
        await wproto.lost
        # the last slave fd closing: the master reads EIO, which asyncio treats as an
        # ordinary end (connection_lost(OSError EIO), no exception handler call)
        os.close(slave)
        exc = await rproto.lost
        return rproto, got, exc

    proto, got, exc = run(loop, main())
    assert bytes(proto.data) == b"from the slave side"
    assert got == b"to the slave side"
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert proto.events == ["made", "data", "lost"]


def test_pipe_transports_with_subprocess_like_wiring(loop, run):
    """A read and a write transport on the two ends of one os.pipe()."""
    r, w = os.pipe()

    async def main():
        rtr, rproto = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(r, "rb", 0))
        wtr, wproto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        for i in range(100):
            wtr.write(b"%03d" % i)
        wtr.write_eof()
        await wproto.lost
        await rproto.lost
        return bytes(rproto.data)

    assert run(loop, main()) == b"".join(b"%03d" % i for i in range(100))


# ---------------------------------------------------------------------------
# details of asyncio's pipe transports (oxloop reproduces them natively)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty behaviour checked on Linux")
@pytest.mark.parametrize("debug", [False, True])
def test_pty_eio_at_child_exit(loop, run, caplog, debug):
    """A child writes to a pty and exits: the master reads the output, then EIO, which asyncio
    logs at debug level only (no exception handler call) and passes to connection_lost."""
    import logging
    import pty

    master, slave = pty.openpty()
    loop.set_debug(debug)
    caplog.set_level(logging.DEBUG, logger="asyncio")

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(master, "rb", 0))
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write('from the child'); sys.stdout.flush()",
            stdin=asyncio.subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        exc = await proto.lost
        await p.wait()
        return tr, proto, exc

    tr, proto, exc = run(loop, main(), timeout=20)
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert bytes(proto.data) == b"from the child"
    assert proto.events == ["made", "data", "lost"]
    assert tr.get_extra_info("pipe").closed
    fatal = [r for r in caplog.records if "Fatal read error on pipe transport" in r.getMessage()]
    if debug:
        assert [r.levelno for r in fatal] == [logging.DEBUG]
    else:
        assert fatal == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_read_pipe_eof_logged_in_debug_mode(loop, run, caplog):
    import logging

    r, w = os.pipe()
    loop.set_debug(True)
    caplog.set_level(logging.DEBUG, logger="asyncio")

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(r, "rb", 0))
        os.close(w)
        await proto.lost
        return tr

    tr = run(loop, main())
    # Formatted when logged: the transport was still polling.
    assert f" fd={r} polling> was closed by peer" in caplog.text, caplog.text
    assert [rec.levelno for rec in caplog.records if "closed by peer" in rec.msg] == [logging.INFO]


@pytest.mark.parametrize("pause_where", ["connection_made", "before_data"])
def test_read_pipe_pause_reading_before_data_arrives(loop, run, pause_where):
    """pause_reading() before any data: nothing is delivered until resume_reading(). Paused from
    connection_made(), 3.9/3.10 start reading anyway (asyncio added the reader unconditionally
    then; 3.11 checks is_reading() first)."""
    r, w = os.pipe()

    class PausingProto(ReadProto):
        def connection_made(self, transport):
            super().connection_made(transport)
            if pause_where == "connection_made":
                transport.pause_reading()

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: PausingProto(loop), os.fdopen(r, "rb", 0))
        if pause_where == "before_data":
            tr.pause_reading()
        os.write(w, b"early")
        await asyncio.sleep(0.05)
        early = bytes(proto.data)
        tr.resume_reading()
        for _ in range(100):
            if proto.data:
                break
            await asyncio.sleep(0.01)
        os.close(w)
        await proto.lost
        return early, bytes(proto.data)

    early, data = run(loop, main())
    if pause_where == "connection_made" and PY < (3, 11):
        assert early == b"early"
    else:
        assert early == b""
    assert data == b"early"


def test_read_pipe_max_size_per_read(loop, run):
    """One read returns at most max_size bytes (asyncio: 256 KiB; settable per transport)."""
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: SizesProto(loop), a)
        assert tr.max_size == 256 * 1024
        tr.max_size = 1000
        b.send(b"m" * 5000)
        for _ in range(200):
            if sum(proto.sizes) >= 5000:
                break
            await asyncio.sleep(0.005)
        b.close()
        await proto.lost
        return proto.sizes

    class SizesProto(ReadProto):
        def __init__(self, lp):
            super().__init__(lp)
            self.sizes = []

        def data_received(self, data):
            self.sizes.append(len(data))

    sizes = run(loop, main())
    assert sum(sizes) == 5000
    assert max(sizes) <= 1000


def test_read_pipe_data_received_error_goes_to_handler(loop, run, exc_handler_calls):
    """An exception from data_received() is not a transport error: it propagates out of the
    reader callback (the loop's 'Exception in callback' report) and reading goes on."""
    r, w = os.pipe()

    class Boom(ReadProto):
        def data_received(self, data):
            super().data_received(data)
            if data == b"boom":
                raise ZeroDivisionError("from data_received")

    async def main():
        tr, proto = await loop.connect_read_pipe(lambda: Boom(loop), os.fdopen(r, "rb", 0))
        os.write(w, b"boom")
        await asyncio.sleep(0.05)
        os.write(w, b"more")
        os.close(w)
        await proto.lost
        return tr, proto

    tr, proto = run(loop, main())
    assert bytes(proto.data) == b"boommore"
    assert len(exc_handler_calls) == 1
    ctx = exc_handler_calls[0][1]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["message"].startswith("Exception in callback")
    exc_handler_calls.clear()


def test_pipe_transport_reprs(loop, run):
    r, w = os.pipe()

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(r, "rb", 0))
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        reprs = [repr(rt), repr(wt)]
        rt.pause_reading()
        wt.write(b"q" * (1024 * 1024))
        n = wt.get_write_buffer_size()
        reprs += [repr(rt), repr(wt), n]
        wt.abort()
        rt.close()
        reprs += [repr(rt), repr(wt)]
        await rp.lost
        await wp.lost
        reprs += [repr(rt), repr(wt)]
        return reprs

    reprs = run(loop, main())
    n = reprs[4]
    assert n > 0
    # The class names differ (asyncio's _UnixReadPipeTransport / _UnixWritePipeTransport).
    tails = [
        f" fd={r} polling>", f" fd={w} idle bufsize=0>",
        f" fd={r} idle>", f" fd={w} polling bufsize={n}>",
        f" closing fd={r} idle>", f" closing fd={w} idle bufsize=0>",
        f" closed fd={r} closed>", f" closed fd={w} closed>",
    ]
    got = reprs[:4] + reprs[5:]
    for g, t in zip(got, tails):
        assert g.startswith("<") and g.endswith(t), (g, t)


def test_write_pipe_reader_gone_socketpair(loop, run):
    """The reader trick works for sockets too: closing the peer ends the write transport."""
    a, b = socket.socketpair()

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), a)
        b.close()
        return await proto.lost

    assert run(loop, main()) is None


def test_write_pipe_epipe_on_immediate_write(loop, run):
    """The reader is already gone when write() tries to write at once: EPIPE is an OSError,
    so no exception handler call; connection_lost(BrokenPipeError); later writes are counted
    and dropped."""
    r, w = os.pipe()

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        os.close(r)
        tr.write(b"nobody reads")
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0
        tr.write(b"dropped")
        return await proto.lost

    exc = run(loop, main())
    assert isinstance(exc, BrokenPipeError)


def test_write_pipe_large_partial_writes_all_kinds(loop, run):
    """Large writes that the pipe takes in pieces, of bytes, bytearray and memoryview data,
    mixed with small ones: everything arrives in order, and data given as a bytearray is
    copied at write() time (mutating it afterwards changes nothing)."""
    r, w = os.pipe()
    big = bytes(range(256)) * 4096  # 1 MiB
    mutable = bytearray(b"A" * 300_000)
    view_src = bytearray(b"V" * 200_000)
    expected = b"".join([big, b"s1", bytes(mutable), b"s2", bytes(view_src[1000:150_000]), big[:70_000]])

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(r, "rb", 0))
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        wt.write(big)
        assert 0 < wt.get_write_buffer_size() < len(big)  # a partial write: the rest queued
        wt.write(b"s1")
        wt.write(mutable)
        mutable[:] = b"B" * len(mutable)
        wt.write(b"s2")
        wt.write(memoryview(view_src)[1000:150_000])
        view_src[:] = b"W" * len(view_src)
        wt.write(memoryview(big)[:70_000])
        wt.close()
        await wp.lost
        await rp.lost
        return bytes(rp.data)

    data = run(loop, main(), timeout=20)
    assert len(data) == len(expected)
    assert data == expected


def test_write_pipe_writelines(loop, run):
    r, w = os.pipe()

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(r, "rb", 0))
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        wt.writelines([b"a" * 100_000, bytearray(b"b" * 100_000), memoryview(b"c" * 100_000)])
        wt.writelines(iter([b"x", b"y"]))
        wt.writelines([])
        with pytest.raises(TypeError):
            wt.writelines(["not bytes"])
        wt.close()
        await wp.lost
        await rp.lost
        return bytes(rp.data)

    data = run(loop, main())
    assert data == b"a" * 100_000 + b"b" * 100_000 + b"c" * 100_000 + b"xy"


def test_write_pipe_write_rejects_non_bytes(loop, run):
    r, w = os.pipe()

    async def main():
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        with pytest.raises(AssertionError):  # asyncio asserts the type
            wt.write("text")
        wt.close()
        await wp.lost

    run(loop, main())
    os.close(r)


def test_write_pipe_abort_with_queued_data(loop, run):
    """abort() with data queued: the queue is dropped, connection_lost(None) follows, later
    writes and close() do nothing, nothing more reaches the pipe."""
    r, w = os.pipe()

    async def main():
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        wt.write(b"1" * (1024 * 1024))
        assert wt.get_write_buffer_size() > 0
        assert "pause" in wp.events
        wt.abort()
        assert wt.get_write_buffer_size() == 0
        assert wt.is_closing()
        wt.write(b"after abort")
        wt.close()
        exc = await wp.lost
        await asyncio.sleep(0.02)
        return wp, exc

    wp, exc = run(loop, main())
    assert exc is None
    assert wp.events == ["made", "pause", "lost"]  # no resume_writing after abort
    data = read_all(r)
    assert 0 < len(data) < 1024 * 1024 and set(data) == {ord("1")}
    os.close(r)


def test_write_pipe_resumes_only_when_emptied(loop, run):
    """asyncio's write pipe calls resume_writing() only once its buffer is empty (not merely
    below the low-water mark)."""
    r, w = os.pipe()

    async def main():
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        # A low-water mark well above what one write to the pipe takes (64 KiB): the buffer
        # passes below it while still holding data.
        wt.set_write_buffer_limits(high=400_000, low=300_000)
        wt.write(b"r" * (2 * 1024 * 1024))
        assert "pause" in wp.events
        sizes = []
        wp.resumed = loop.create_future()
        wp.resumed.add_done_callback(lambda f: sizes.append(wt.get_write_buffer_size()))
        os.set_blocking(r, False)
        got = []

        def drain():
            try:
                got.append(len(os.read(r, 1 << 20)))
            except BlockingIOError:
                pass

        loop.add_reader(r, drain)
        await wp.resumed
        loop.remove_reader(r)
        wt.close()
        await wp.lost
        return sizes

    assert run(loop, main()) == [0]
    os.close(r)


def test_write_pipe_pause_writing_error_goes_to_handler(loop, run, exc_handler_calls):
    r, w = os.pipe()

    class Bad(WriteProto):
        def pause_writing(self):
            raise ValueError("pause failed")

    async def main():
        wt, wp = await loop.connect_write_pipe(lambda: Bad(loop), os.fdopen(w, "wb", 0))
        wt.write(b"p" * (1024 * 1024))
        wt.abort()
        await wp.lost
        return wt

    wt = run(loop, main())
    assert len(exc_handler_calls) == 1
    ctx = exc_handler_calls[0][1]
    assert ctx["message"] == "protocol.pause_writing() failed"
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["transport"] is wt
    exc_handler_calls.clear()
    os.close(r)


def test_write_pipe_non_contiguous_memoryview(loop, run, exc_handler_calls):
    """os.write() refuses a non-contiguous memoryview: a fatal write error (not an OSError, so
    the exception handler is called) that closes the transport."""
    r, w = os.pipe()

    async def main():
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        wt.write(memoryview(b"0123456789")[::2])
        return wt, await wp.lost

    wt, exc = run(loop, main())
    assert isinstance(exc, BufferError)
    assert len(exc_handler_calls) == 1
    ctx = exc_handler_calls[0][1]
    assert ctx["message"] == "Fatal write error on pipe transport"
    assert ctx["exception"] is exc
    exc_handler_calls.clear()
    assert read_all(r) == b""
    os.close(r)


def test_write_pipe_watched_for_reading_on_pipes_not_ttys(loop, run):
    """The reader trick is only for pipes and sockets: a write transport on a tty (a character
    device) does not watch its fd for reading; on a pipe it does."""
    import pty
    import selectors
    from asyncio import selector_events

    master, slave = pty.openpty()
    r, w = os.pipe()

    def reading(fd):
        return selector_events._test_selector_event(loop._selector, fd, selectors.EVENT_READ)

    async def main():
        tty_tr, tty_p = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(slave, "wb", 0))
        pipe_tr, pipe_p = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        await asyncio.sleep(0)
        polled = (reading(slave), reading(w))
        tty_tr.write(b"to the tty")
        tty_tr.close()
        pipe_tr.close()
        await tty_p.lost
        await pipe_p.lost
        return polled

    assert run(loop, main()) == (False, True)
    assert os.read(master, 100) == b"to the tty"
    os.close(master)
    os.close(r)


def test_unclosed_pipe_transports_warn_and_close_their_pipe(loop, run):
    """A pipe transport freed without close(): ResourceWarning 'unclosed transport' and the
    pipe object is closed (asyncio's __del__)."""
    import gc
    import warnings

    r, w = os.pipe()
    rpipe, wpipe = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)

    async def main():
        await loop.connect_read_pipe(asyncio.Protocol, rpipe)
        await loop.connect_write_pipe(asyncio.Protocol, wpipe)

    run(loop, main())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.close()  # the selector lets go of the transports' callbacks
        gc.collect()
        gc.collect()
    msgs = [str(x.message) for x in caught if issubclass(x.category, ResourceWarning)]
    assert len([m for m in msgs if m.startswith("unclosed transport <")]) == 2, msgs
    assert rpipe.closed and wpipe.closed


def test_closed_pipe_transports_are_collected(loop, run):
    """A closed transport in a reference cycle with its protocol is garbage collected."""
    import gc
    import weakref

    r, w = os.pipe()

    class Cyclic(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport  # protocol <-> transport cycle (via the dict below)
            transport.proto_ref = self

        def connection_lost(self, exc):
            self.done.set_result(None)

    async def main():
        rt, rp = await loop.connect_read_pipe(Cyclic, os.fdopen(r, "rb", 0))
        wt, wp = await loop.connect_write_pipe(Cyclic, os.fdopen(w, "wb", 0))
        rp.done = loop.create_future()
        wp.done = loop.create_future()
        refs = [weakref.ref(rt), weakref.ref(wt)]
        wt.write(b"x")
        wt.close()
        await wp.done
        await rp.done
        return refs

    refs = run(loop, main())
    for _ in range(3):
        gc.collect()
    assert [x() for x in refs] == [None, None]


def test_many_pipe_transports_no_fd_leak(loop, run):
    before = len(os.listdir("/proc/self/fd"))

    async def main():
        for i in range(50):
            r, w = os.pipe()
            rt, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(r, "rb", 0))
            wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
            wt.write(b"%d" % i)
            if i % 2:
                wt.close()
            else:
                wt.abort()
            await wp.lost
            if i % 3:
                rt.close()
            await rp.lost

    run(loop, main(), timeout=30)
    assert len(os.listdir("/proc/self/fd")) == before


# ---------------------------------------------------------------------------
# which implementation (oxloop only)


@pytest.mark.parametrize("selector, env, native", [
    (None, None, True), ("poll", "1", True), ("select", None, True), (None, "0", False),
    ("pyselector", None, False),
])
def test_oxloop_pipe_transport_implementation(monkeypatch, selector, env, native):
    """Native pipe transports on a native selector (also for a subprocess's pipes); asyncio's
    with a Python selectors object or OXLOOP_NATIVE_TRANSPORTS=0. isinstance() sees asyncio's
    transport classes either way."""
    import selectors

    from conftest import require_oxloop

    ox = require_oxloop()
    if env is None:
        monkeypatch.delenv("OXLOOP_NATIVE_TRANSPORTS", raising=False)
    else:
        monkeypatch.setenv("OXLOOP_NATIVE_TRANSPORTS", env)
    loop = ox.SelectorEventLoop(selectors.DefaultSelector() if selector == "pyselector" else selector)
    r, w = os.pipe()

    async def main():
        rt, _ = await loop.connect_read_pipe(asyncio.Protocol, os.fdopen(r, "rb", 0))
        wt, wp = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", 0))
        names = [type(rt).__name__, type(wt).__name__]
        assert isinstance(rt, asyncio.ReadTransport) and not isinstance(rt, asyncio.WriteTransport)
        # _FlowControlMixin subclasses asyncio.Transport (read and write) in asyncio too.
        assert isinstance(wt, asyncio.WriteTransport)
        assert isinstance(wt, asyncio.transports._FlowControlMixin)
        rt.close()
        wt.close()
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        names += [type(p._transport.get_pipe_transport(0)).__name__,
                  type(p._transport.get_pipe_transport(1)).__name__]
        out, _ = await p.communicate(b"echo")
        assert out == b"echo"
        return names

    try:
        names = loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.close()
    if native:
        assert names == ["ReadPipeTransport", "WritePipeTransport",
                         "WritePipeTransport", "ReadPipeTransport"]
    else:
        assert names == ["_UnixReadPipeTransport", "_UnixWritePipeTransport",
                         "_UnixWritePipeTransport", "_UnixReadPipeTransport"]


def test_write_pipe_reading_stubs_raise_not_implemented(loop, run):
    # asyncio's write pipe transport is a Transport (through _FlowControlMixin): its
    # pause_reading(), resume_reading() and is_reading() are ReadTransport's, which raise
    # NotImplementedError.
    async def main():
        r, w = os.pipe()
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(w, "wb", 0))
        for call in (tr.pause_reading, tr.resume_reading, tr.is_reading):
            with pytest.raises(NotImplementedError):
                call()
        tr.close()
        await proto.lost
        os.close(r)

    run(loop, main())


def test_subprocess_stdin_pipe_pause_reading_not_implemented(loop, run):
    # What a real test suite does: transp.get_pipe_transport(0).pause_reading().
    async def main():
        transp, proto = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, sys.executable, "-c", "import sys; sys.stdin.read()",
            stdin=asyncio.subprocess.PIPE, stdout=None, stderr=None)
        stdin = transp.get_pipe_transport(0)
        with pytest.raises(NotImplementedError):
            stdin.pause_reading()
        with pytest.raises(NotImplementedError):
            stdin.resume_reading()
        stdin.close()
        while transp.get_returncode() is None:
            await asyncio.sleep(0.01)
        transp.close()

    run(loop, main())


@pytest.mark.parametrize("kind", ["read-socket", "read-buffered-file", "write-socket",
                                  "write-buffered-file"])
def test_unclosed_pipe_transport_collected_in_a_cycle(loop, kind):
    from helpers import collect_unclosed_in_a_cycle

    class Keep(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr

    peers = []

    def make():
        if kind.endswith("socket"):
            resource, peer = socket.socketpair()
        else:
            r, w = os.pipe()
            resource, peer = (open(r, "rb"), w) if kind.startswith("read") else (open(w, "wb"), r)
        peers.append(peer)
        return resource

    async def connect(pipe):
        if kind.startswith("read"):
            return await loop.connect_read_pipe(Keep, pipe)
        return await loop.connect_write_pipe(Keep, pipe)

    try:
        collect_unclosed_in_a_cycle(loop, make, connect)
    finally:
        peer = peers[0]
        peer.close() if isinstance(peer, socket.socket) else os.close(peer)
