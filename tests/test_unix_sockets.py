"""Unix-domain stream servers and connections (create_unix_server / create_unix_connection).

Every test runs on stock asyncio and every oxloop loop; stock asyncio decides what is right
(asyncio/unix_events.py of the running version: stale-socket removal, 3.13's cleanup_socket).
"""

import asyncio
import errno
import os
import pathlib
import shutil
import stat
import socket
import sys
import tempfile
import uuid

import pytest

PY = sys.version_info[:2]


@pytest.fixture
def sockdir():
    # Short: sun_path holds at most 107 bytes, pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="oxu-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class ServerProto(asyncio.Protocol):
    def __init__(self, loop, log):
        self.lost = loop.create_future()
        log.append(self)

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.tr.write(data.upper())

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class ClientProto(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.got = loop.create_future()
        self.lost = loop.create_future()
        self.want = 0

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.data += data
        if len(self.data) >= self.want and not self.got.done():
            self.got.set_result(bytes(self.data))

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def roundtrip(loop, path, payload=b"unix", **kwargs):
    tr, pr = await loop.create_unix_connection(lambda: ClientProto(loop), path, **kwargs)
    pr.want = len(payload)
    tr.write(payload)
    got = await asyncio.wait_for(pr.got, 5)
    return tr, pr, got


@pytest.mark.parametrize("kind", ["str", "pathlib", "bytes"])
def test_unix_server_and_connection_filesystem_path(loop, run, sockdir, kind):
    spath = os.path.join(sockdir, "s")
    path = {"str": spath, "pathlib": pathlib.Path(spath), "bytes": os.fsencode(spath)}[kind]
    protos = []

    async def main():
        srv = await loop.create_unix_server(lambda: ServerProto(loop, protos), path)
        assert srv.is_serving()
        (lsock,) = srv.sockets
        assert lsock.family == socket.AF_UNIX
        assert lsock.getsockname() == spath
        assert os.path.exists(spath)
        tr, pr, got = await roundtrip(loop, path, b"hello")
        assert got == b"HELLO"
        assert tr.get_extra_info("peername") == spath
        assert tr.get_extra_info("sockname") == ""
        assert tr.get_extra_info("socket").family == socket.AF_UNIX
        (sp,) = protos
        assert sp.tr.get_extra_info("sockname") == spath
        assert sp.tr.get_extra_info("peername") == ""
        assert tr.can_write_eof() and sp.tr.can_write_eof()
        tr.close()
        assert await pr.lost is None
        assert await sp.lost is None
        srv.close()
        await srv.wait_closed()
        return os.path.exists(spath)

    still_there = run(loop, main())
    # 3.13 removes the socket file on close (cleanup_socket=True); before, it stays.
    assert still_there == (PY < (3, 13))


@pytest.mark.parametrize("kind", ["str", "bytes"])
def test_abstract_namespace(loop, run, kind):
    name = f"\0oxloop-test-{uuid.uuid4().hex}"
    path = name if kind == "str" else name.encode()
    protos = []

    async def main():
        srv = await loop.create_unix_server(lambda: ServerProto(loop, protos), path)
        (lsock,) = srv.sockets
        assert lsock.getsockname() == name.encode()  # Python gives abstract names as bytes
        for target in (name, name.encode()):
            tr, pr, got = await roundtrip(loop, target, b"abstract")
            assert got == b"ABSTRACT"
            assert tr.get_extra_info("peername") == name.encode()
            tr.close()
            await pr.lost
        # The name is taken while the server lives.
        with pytest.raises(OSError) as ei:
            await loop.create_unix_server(asyncio.Protocol, path)
        assert ei.value.errno == errno.EADDRINUSE
        assert ei.value.strerror == f"Address {path!r} is already in use"
        srv.close()
        await srv.wait_closed()
        for p in protos:
            await p.lost
        # ... and free again once it is closed.
        srv = await loop.create_unix_server(asyncio.Protocol, path)
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_stale_socket_file_is_removed_on_bind(loop, run, sockdir):
    path = os.path.join(sockdir, "stale")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(path)
    old.close()  # leaves the socket file behind

    async def main():
        srv = await loop.create_unix_server(lambda: ServerProto(loop, []), path)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        tr, pr, got = await roundtrip(loop, path, b"fresh")
        assert got == b"FRESH"
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_live_socket_file_is_replaced_like_asyncio(loop, run, sockdir):
    # asyncio removes any socket file at the path before binding, even one a live server owns.
    path = os.path.join(sockdir, "live")
    first_protos, second_protos = [], []

    async def main():
        srv1 = await loop.create_unix_server(lambda: ServerProto(loop, first_protos), path)
        srv2 = await loop.create_unix_server(lambda: ServerProto(loop, second_protos), path)
        tr, pr, got = await roundtrip(loop, path)
        assert got == b"UNIX"
        assert len(second_protos) == 1 and first_protos == []
        tr.close()
        await pr.lost
        for s in (srv1, srv2):
            s.close()
            await s.wait_closed()
        await second_protos[0].lost

    run(loop, main())


@pytest.mark.parametrize("what", ["file", "dir"])
def test_non_socket_at_path(loop, run, sockdir, what):
    path = os.path.join(sockdir, "notasocket")
    if what == "file":
        with open(path, "w") as f:
            f.write("keep me")
    else:
        os.mkdir(path)

    async def main():
        with pytest.raises(OSError) as ei:
            await loop.create_unix_server(asyncio.Protocol, path)
        return ei.value

    exc = run(loop, main())
    assert type(exc) is OSError
    assert exc.errno == errno.EADDRINUSE
    assert exc.strerror == f"Address {path!r} is already in use"
    assert str(exc) == f"[Errno {errno.EADDRINUSE}] Address {path!r} is already in use"
    assert exc.__cause__ is None and exc.__suppress_context__
    if what == "file":
        with open(path) as f:
            assert f.read() == "keep me"
    else:
        assert os.path.isdir(path)


def test_connect_to_missing_path(loop, run, sockdir):
    path = os.path.join(sockdir, "missing")

    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(asyncio.Protocol, path)

    run(loop, main())  # and the client socket was closed (the fd-leak check)


@pytest.mark.skipif(PY < (3, 13), reason="cleanup_socket is 3.13+")
@pytest.mark.parametrize("cleanup", [None, True, False])
def test_cleanup_socket(loop, run, sockdir, cleanup):
    path = os.path.join(sockdir, "c")
    kwargs = {} if cleanup is None else {"cleanup_socket": cleanup}

    async def main():
        srv = await loop.create_unix_server(asyncio.Protocol, path, **kwargs)
        assert os.path.exists(path)
        srv.close()
        await srv.wait_closed()
        return os.path.exists(path)

    assert run(loop, main()) == (cleanup is False)


@pytest.mark.skipif(PY < (3, 13), reason="cleanup_socket is 3.13+")
@pytest.mark.parametrize("replacement", ["socket", "file"])
def test_cleanup_socket_leaves_a_replaced_file(loop, run, sockdir, replacement):
    path = os.path.join(sockdir, "r")

    async def main():
        srv = await loop.create_unix_server(asyncio.Protocol, path)
        os.unlink(path)
        other = None
        if replacement == "socket":
            other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            other.bind(path)
        else:
            with open(path, "w") as f:
                f.write("x")
        ino = os.stat(path).st_ino
        srv.close()
        await srv.wait_closed()
        try:
            assert os.stat(path).st_ino == ino  # another inode: not removed
        finally:
            if other is not None:
                other.close()

    run(loop, main())


@pytest.mark.skipif(PY < (3, 13), reason="cleanup_socket is 3.13+")
def test_cleanup_socket_when_file_already_gone(loop, run, sockdir):
    path = os.path.join(sockdir, "g")

    async def main():
        srv = await loop.create_unix_server(asyncio.Protocol, path)
        os.unlink(path)
        srv.close()  # FileNotFoundError is ignored
        await srv.wait_closed()

    run(loop, main())


@pytest.mark.skipif(PY >= (3, 13), reason="cleanup_socket exists from 3.13")
def test_cleanup_socket_unknown_before_313(loop, run, sockdir):
    with pytest.raises(TypeError, match="cleanup_socket"):
        run(loop, loop.create_unix_server(asyncio.Protocol, os.path.join(sockdir, "x"),
                                          cleanup_socket=False))


def test_sock_arguments(loop, run, sockdir):
    path = os.path.join(sockdir, "k")
    protos = []

    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        srv = await loop.create_unix_server(lambda: ServerProto(loop, protos), sock=lsock)
        assert srv.sockets[0].fileno() == lsock.fileno()
        assert not lsock.getblocking()
        csock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        csock.connect(path)  # blocking connect: create_unix_connection makes it non-blocking
        tr, pr = await loop.create_unix_connection(lambda: ClientProto(loop), sock=csock)
        assert not csock.getblocking()
        assert tr.get_extra_info("socket").fileno() == csock.fileno()
        assert tr.get_extra_info("peername") == path
        pr.want = 3
        tr.write(b"abc")
        assert await asyncio.wait_for(pr.got, 5) == b"ABC"
        tr.close()
        await pr.lost
        assert csock.fileno() == -1
        srv.close()
        await srv.wait_closed()
        assert lsock.fileno() == -1
        await protos[0].lost
        # 3.13 cleans up a sock= server's socket file too.
        return os.path.exists(path)

    assert run(loop, main()) == (PY < (3, 13))


def test_unix_argument_errors(loop, run, sockdir):
    path = os.path.join(sockdir, "e")

    async def main():
        msgs = []
        with socket.socket() as tcp, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
            for bad in (tcp, dgram):
                expected = f"A UNIX Domain Stream Socket was expected, got {bad!r}"
                with pytest.raises(ValueError) as ei:
                    await loop.create_unix_server(asyncio.Protocol, sock=bad)
                msgs.append(str(ei.value) == expected)
                with pytest.raises(ValueError) as ei:
                    await loop.create_unix_connection(asyncio.Protocol, sock=bad)
                msgs.append(str(ei.value) == expected)
        with socket.socket(socket.AF_UNIX) as s:
            with pytest.raises(ValueError) as ei:
                await loop.create_unix_server(asyncio.Protocol, path, sock=s)
            msgs.append(str(ei.value))
            with pytest.raises(ValueError) as ei:
                await loop.create_unix_connection(asyncio.Protocol, path, sock=s)
            msgs.append(str(ei.value))
        with pytest.raises(ValueError) as ei:
            await loop.create_unix_server(asyncio.Protocol)
        msgs.append(str(ei.value))
        with pytest.raises(ValueError) as ei:
            await loop.create_unix_connection(asyncio.Protocol)
        msgs.append(str(ei.value))
        with pytest.raises(TypeError) as ei:
            await loop.create_unix_server(asyncio.Protocol, path, ssl=True)
        msgs.append(str(ei.value))
        with pytest.raises(ValueError) as ei:
            await loop.create_unix_connection(asyncio.Protocol, path, server_hostname="x")
        msgs.append(str(ei.value))
        return msgs

    assert run(loop, main()) == [
        True, True, True, True,
        "path and sock can not be specified at the same time",
        "path and sock can not be specified at the same time",
        "path was not specified, and no sock specified",
        "no path and sock were specified",
        "ssl argument must be an SSLContext or None",
        "server_hostname is only meaningful with ssl",
    ]


def test_unix_start_serving_false(loop, run, sockdir):
    path = os.path.join(sockdir, "l")
    protos = []

    async def main():
        srv = await loop.create_unix_server(lambda: ServerProto(loop, protos), path,
                                            start_serving=False)
        assert not srv.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_unix_connection(asyncio.Protocol, path)
        await srv.start_serving()
        assert srv.is_serving()
        tr, pr, got = await roundtrip(loop, path, b"late")
        assert got == b"LATE"
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
        await protos[0].lost

    run(loop, main())


def test_unix_streams(loop, run, sockdir):
    path = os.path.join(sockdir, "st")

    async def handler(reader, writer):
        line = await reader.readline()
        writer.write(line[::-1])
        await writer.drain()
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    async def main():
        srv = await asyncio.start_unix_server(handler, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"olleh\n")
        assert await reader.readexactly(6) == b"\nhello"
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(loop, main())
