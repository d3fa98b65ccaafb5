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
        if PY >= (3, 10):  # 3.9's pipe transport lacks is_reading()
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
        if PY >= (3, 10):
            assert not tr.is_reading()
        tr.pause_reading()  # a second pause is a no-op
        os.write(w, b"while paused")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        tr.resume_reading()
        if PY >= (3, 10):
            assert tr.is_reading()
        tr.resume_reading()  # a second resume is a no-op
        for _ in range(100):
            if proto.data:
                break
            await asyncio.sleep(0.01)
        assert proto.data == b"while paused"
        tr.close()
        assert tr.is_closing()
        if PY >= (3, 10):
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
