"""``python -m oxloop bench``: the same asyncio programs on oxloop, stock asyncio and (when
installed) uvloop, each run in a fresh process, printed side by side.

This is the quick in-package benchmark (about 20 s; ``--quick`` about 5 s): server and clients
share one process and one core, so the figures compare loops, not machines. The repository's
``make bench-quick`` / ``make bench`` is the real suite (a Rust load generator on another core,
spreads, CPU time per request): see benchmarks/README.md there.

Cases: ``call_soon`` (callbacks per second), ``streams echo`` (asyncio.start_server /
open_connection, 1 KiB round trips, every reply checked) and ``protocol echo`` (a Protocol
server and clients, 1 KiB round trips, every reply checked).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Coroutine, Dict, List, Optional, Tuple

MSG = 1024


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    if name == "uvloop":
        uvloop: Any = importlib.import_module("uvloop")  # optional: compared when installed
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    raise ValueError(name)


async def _call_soon(n: int) -> float:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [n]

    def cb() -> None:
        left[0] -= 1
        if left[0] == 0:
            done.set_result(None)

    t0 = time.perf_counter()
    for _ in range(n):
        loop.call_soon(cb)
    await done
    return n / (time.perf_counter() - t0)


async def _streams_echo(clients: int, trips: int) -> float:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
        w.close()

    async def client(port: int, cid: int) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        msg = cid.to_bytes(4, "little") * (MSG // 4)
        for _ in range(trips):
            w.write(msg)
            if await r.readexactly(MSG) != msg:
                raise AssertionError("wrong echo")
        w.close()
        await w.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=clients)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, i) for i in range(clients)))
    rate = clients * trips / (time.perf_counter() - t0)
    server.close()
    await server.wait_closed()
    return rate


async def _protocol_echo(clients: int, trips: int) -> float:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.Protocol):
        def connection_made(self, tr: asyncio.BaseTransport) -> None:
            self.tr = tr

        def data_received(self, data: bytes) -> None:
            self.tr.write(data)  # type: ignore[attr-defined]

    class Client(asyncio.Protocol):
        def __init__(self, cid: int) -> None:
            self.msg = cid.to_bytes(4, "little") * (MSG // 4)
            self.buf = bytearray()
            self.left = trips
            self.done = loop.create_future()

        def connection_made(self, tr: asyncio.BaseTransport) -> None:
            self.tr = tr
            tr.write(self.msg)  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if len(self.buf) < MSG:
                return
            if bytes(self.buf) != self.msg:
                self.done.set_exception(AssertionError("wrong echo"))
                return
            self.buf.clear()
            self.left -= 1
            if self.left:
                self.tr.write(self.msg)  # type: ignore[attr-defined]
            else:
                self.done.set_result(None)

    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=clients)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    conns = [await loop.create_connection(functools.partial(Client, i), "127.0.0.1", port)
             for i in range(clients)]
    await asyncio.gather(*(p.done for _, p in conns))
    rate = clients * trips / (time.perf_counter() - t0)
    for tr, _ in conns:
        tr.close()
    server.close()
    await server.wait_closed()
    return rate


def _child(loop_name: str, scale: float) -> None:
    loop = _new_loop(loop_name)
    out: Dict[str, object] = {"loop": repr(loop)}
    try:
        cases: List[Tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = [
            ("call_soon", lambda: _call_soon(int(200_000 * scale))),
            ("streams echo", lambda: _streams_echo(20, int(500 * scale))),
            ("protocol echo", lambda: _protocol_echo(20, int(1000 * scale))),
        ]
        for case, coro in cases:
            out[case] = max(loop.run_until_complete(coro()) for _ in range(3))
    finally:
        loop.close()
    print(json.dumps(out))


def _loops() -> List[str]:
    names = ["asyncio", "oxloop"]
    try:
        importlib.import_module("uvloop")
        names.append("uvloop")
    except ImportError:
        pass
    return names


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m oxloop bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a quarter of the work (about 5 s)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    scale = args.scale if args.scale is not None else (0.25 if args.quick else 1.0)
    if args.child:
        _child(args.child, scale)
        return 0
    results: Dict[str, Dict[str, Any]] = {}
    env = dict(os.environ)
    env.pop("OXLOOP", None)  # each child makes exactly the loop it is asked for
    for name in _loops():
        p = subprocess.run(
            [sys.executable, "-m", "oxloop", "bench", "--child", name, "--scale", str(scale)],
            capture_output=True, text=True, env=env, timeout=300,
        )
        if p.returncode != 0:
            sys.stderr.write(f"{name}: failed (exit {p.returncode}):\n{p.stderr}\n")
            return 1
        results[name] = json.loads(p.stdout.strip().splitlines()[-1])
    names = list(results)
    cases = [k for k in results["asyncio"] if k != "loop"]
    print(f"python -m oxloop bench: {sys.implementation.name} {sys.version.split()[0]}, "
          f"one process, best of 3; per second: callbacks (call_soon), "
          f"1 KiB round trips (echo); higher is better")
    for n in names:
        print(f"  {n}: {results[n]['loop']}")
    head = f"{'case':<16}" + "".join(f"{n:>14}" for n in names) + "".join(
        f"{n + '/asyncio':>16}" for n in names if n != "asyncio")
    print(head)
    print("-" * len(head))
    for c in cases:
        row = f"{c:<16}"
        row += "".join(f"{results[n][c]:>14,.0f}" for n in names)
        row += "".join(f"{results[n][c] / results['asyncio'][c]:>15.2f}x"
                       for n in names if n != "asyncio")
        print(row)
    return 0
