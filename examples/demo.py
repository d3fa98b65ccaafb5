#!/usr/bin/env python3
"""oxloop demo: the same asyncio program on oxloop and on stock asyncio, side by side.

The program is ordinary asyncio code, unchanged between the two runs: a streams-based TCP
echo server (asyncio.start_server) and 100 clients (asyncio.open_connection) that each make
N round trips of 1 KiB and check every byte that comes back. Each loop runs in its own
subprocess so neither inherits the other's state; the parent prints what each did and how
fast, and exits non-zero if any byte came back wrong (or a run failed).

    python examples/demo.py                 # oxloop vs asyncio, 100 clients x 500 round trips
    python examples/demo.py --clients 50 --round-trips 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import time

MSG_SIZE = 1024
CORRUPT = False  # --corrupt (a check of the checker): the server flips one byte once


def make_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    raise ValueError(name)


# --- the asyncio program ---------------------------------------------------------------------


async def handle_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global CORRUPT
    try:
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            if CORRUPT:
                CORRUPT = False
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


async def client(port: int, cid: int, trips: int, stats: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # 1 KiB that differs for every client (random body) and every round trip (client id and
    # trip number up front), so neither a mix-up nor a stale reply can pass the check.
    body = os.urandom(MSG_SIZE - 8)
    try:
        for trip in range(trips):
            msg = struct.pack("<II", cid, trip) + body
            writer.write(msg)
            await writer.drain()
            reply = await reader.readexactly(MSG_SIZE)
            if reply == msg:
                stats["bytes_verified"] += len(reply)
            else:
                stats["mismatches"] += 1
            stats["round_trips"] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def main(clients: int, trips: int) -> dict:
    server = await asyncio.start_server(handle_echo, "127.0.0.1", 0, backlog=clients)
    port = server.sockets[0].getsockname()[1]
    stats = {"round_trips": 0, "bytes_verified": 0, "mismatches": 0}
    t0 = time.perf_counter()
    results = await asyncio.gather(*(client(port, i, trips, stats) for i in range(clients)), return_exceptions=True)
    elapsed = time.perf_counter() - t0
    server.close()
    await server.wait_closed()
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return {"connections": clients, "seconds": elapsed, "errors": errors, **stats}


def run_child(loop_name: str, clients: int, trips: int, corrupt: bool) -> None:
    global CORRUPT
    CORRUPT = corrupt
    loop = make_loop(loop_name)
    try:
        asyncio.set_event_loop(loop)
        res = loop.run_until_complete(main(clients, trips))
        res["loop_type"] = f"{type(loop).__module__}.{type(loop).__qualname__}"
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    print(json.dumps(res))


# --- the side-by-side runner -----------------------------------------------------------------


def run_parent(args) -> int:
    try:
        import oxloop  # noqa: F401
    except ImportError as e:
        print(f"oxloop is not importable ({e}).", file=sys.stderr)
        print("Build it first: `make demo` does it, or `pip install .` / `maturin develop --release` in the repository.", file=sys.stderr)
        return 2
    expected = args.clients * args.round_trips
    print(f"Streams echo: {args.clients} concurrent clients x {args.round_trips} round trips of {MSG_SIZE} bytes, every byte checked.")
    print("Same asyncio program on each loop, each loop in its own process.\n")
    results = {}
    ok = True
    for name in ("oxloop", "asyncio"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--clients", str(args.clients), "--round-trips", str(args.round_trips)]
        if args.corrupt:
            cmd.append("--corrupt")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{name:>8}: FAILED: no result within {args.timeout:.0f}s")
            ok = False
            continue
        if p.returncode != 0 or not p.stdout.strip():
            print(f"{name:>8}: FAILED (exit {p.returncode}): {p.stderr.strip()[-800:]}")
            ok = False
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        results[name] = r
        good = not r["errors"] and r["mismatches"] == 0 and r["round_trips"] == expected and r["bytes_verified"] == expected * MSG_SIZE
        ok &= good
        rate = r["round_trips"] / r["seconds"] if r["seconds"] else 0.0
        r["rate"] = rate
        print(f"{name:>8}: {r['connections']} connections, {r['round_trips']:,} round trips, {r['bytes_verified']:,} bytes verified, "
              f"{r['mismatches']} mismatches in {r['seconds']:.2f}s -> {rate:,.0f} round trips/s   [{r['loop_type']}]")
        for err in r["errors"][:5]:
            print(f"          error: {err}")
    if "oxloop" in results and "asyncio" in results and results["asyncio"]["rate"]:
        print(f"\noxloop / asyncio: {results['oxloop']['rate'] / results['asyncio']['rate']:.2f}x the round trips per second")
    print("\nresult: " + ("OK, every byte verified on both loops" if ok else "FAILED (see above)"))
    return 0 if ok else 1


def cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--round-trips", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=12.0, help="seconds allowed for each loop's run")
    ap.add_argument("--corrupt", action="store_true", help="make the server flip one byte, to see the check fail")
    ap.add_argument("--child", choices=("oxloop", "asyncio"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, args.clients, args.round_trips, args.corrupt)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(cli())
