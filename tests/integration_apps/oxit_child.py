"""A script for the OXLOOP=1 / `python -m oxloop run` tests: prints the loop class of this
process and of a multiprocessing 'spawn' child and a plain subprocess, one per line."""

import asyncio
import multiprocessing
import subprocess
import sys


async def _loop_name():
    t = type(asyncio.get_running_loop())
    return f"{t.__module__}.{t.__qualname__}"


def loop_name():
    return asyncio.run(_loop_name())


def _spawned(q):
    q.put(loop_name())


def main():
    print("main", loop_name(), flush=True)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_spawned, args=(q,))
    p.start()
    print("spawn", q.get(timeout=60), flush=True)
    p.join(60)
    out = subprocess.run(
        [sys.executable, "-c",
         "import asyncio\n"
         "async def f():\n"
         "    t = type(asyncio.get_running_loop())\n"
         "    return f'{t.__module__}.{t.__qualname__}'\n"
         "print(asyncio.run(f()))"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    print("subprocess", out, flush=True)


if __name__ == "__main__":
    main()
