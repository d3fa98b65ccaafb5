"""What type checkers must accept of oxloop: its loops, handles and transports where asyncio's
are expected. Not run: type-checked by mypy (make test-typing) for each
supported Python version; any error fails. `assert_type` pins the precise types, so a stub that
degraded to `Any` fails too."""

import asyncio
import sys
from typing import Any, Tuple

from typing_extensions import assert_type

import oxloop
from oxloop import _oxloop


def f() -> None: ...


def takes_loop(loop: asyncio.AbstractEventLoop) -> None: ...


def takes_handle(h: asyncio.Handle) -> None: ...


def takes_timer(th: asyncio.TimerHandle) -> None: ...


async def main() -> int:
    return 1


loop = oxloop.new_event_loop()
assert_type(loop, oxloop.SelectorEventLoop)
takes_loop(loop)
takes_loop(oxloop.SelectorEventLoop())
takes_loop(oxloop.Loop("poll"))
ev: asyncio.AbstractEventLoop = loop
base: asyncio.BaseEventLoop = loop

# Handles: oxloop's own types, which are asyncio's Handle / TimerHandle to type checkers.
h = loop.call_soon(f)
assert_type(h, oxloop.Handle)
h1: asyncio.Handle = h
h2: asyncio.Handle = loop.call_soon_threadsafe(f)
th = loop.call_later(1, f)
assert_type(th, oxloop.TimerHandle)
th1: asyncio.TimerHandle = th
th2: asyncio.TimerHandle = loop.call_at(loop.time() + 1, f)
th3: asyncio.Handle = loop.call_at(1.0, f)
th4: oxloop.Handle = th
takes_handle(h)
takes_handle(th)
takes_timer(th)
print(th < th2, th == th2, th.when(), h.cancelled())
th.cancel()

# asyncio.run / asyncio.Runner with oxloop's factory (Python 3.12+ in typeshed, as at runtime).
if sys.version_info >= (3, 12):
    r = asyncio.run(main(), loop_factory=oxloop.new_event_loop)
    assert_type(r, int)
    with asyncio.Runner(loop_factory=oxloop.new_event_loop) as runner:
        runner.run(main())
r2 = oxloop.run(main())

policy: asyncio.AbstractEventLoopPolicy = oxloop.EventLoopPolicy()


# The native transports where asyncio's are expected.
def takes_transport(tr: asyncio.Transport) -> None: ...
def takes_read(tr: asyncio.ReadTransport) -> None: ...
def takes_write(tr: asyncio.WriteTransport) -> None: ...
def takes_datagram(tr: asyncio.DatagramTransport) -> None: ...
def takes_buffered(p: asyncio.BufferedProtocol) -> None: ...


def native_transports(
    sock: _oxloop.SocketTransport,
    tls: _oxloop._SSLProtocolTransport,
    rpipe: _oxloop.ReadPipeTransport,
    wpipe: _oxloop.WritePipeTransport,
    dgram: _oxloop.DatagramTransport,
    sslproto: _oxloop.SSLProtocol,
) -> Tuple[Any, ...]:
    takes_transport(sock)
    takes_transport(tls)
    takes_read(rpipe)
    takes_write(wpipe)
    takes_buffered(sslproto)
    if sys.version_info >= (3, 12):  # asyncio's own datagram transport is one from 3.12 on
        takes_datagram(dgram)
    return (sock, tls, rpipe, wpipe, dgram)


# The callback's arguments are checked as typeshed checks asyncio's (--strict reports an unused
# ignore: these lines fail the check if oxloop's stub stops rejecting what asyncio's rejects).
def g(x: int) -> None: ...


loop.call_soon(g, 1)
loop.call_soon(g, "x")  # type: ignore[arg-type]
loop.call_soon(f, 1)  # type: ignore[arg-type]
loop.call_soon_threadsafe(g, "x")  # type: ignore[arg-type]
loop.call_later(1, g, "x")  # type: ignore[arg-type]
loop.call_at(1.0, g)  # type: ignore[arg-type]
