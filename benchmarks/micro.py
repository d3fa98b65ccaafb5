"""Micro benchmarks of the event loop itself, run on the loop under test.

Each case is a coroutine run on a fresh loop made by the factory being measured; it times
itself with time.perf_counter (loop creation and teardown are outside the timing) and
returns ``{"seconds": s, "ops": n, ...}``.

    python micro.py --loop SPEC --case CASE [--param k=v ...]     one case, JSON on stdout
    python micro.py --loop SPEC --worker                           JSON commands on stdin
    python micro.py --loop SPEC --instr-sequence JSON              instruction counting: each
        case runs twice (n_small, n_large), each run preceded by os.getppid() which the
        driver's valgrind --dump-before=getppid turns into a counter dump.

The async_tree cases are this suite's own implementation of the workload pyperformance
calls async_tree: a tree of coroutines, B children per node, D levels, gathered level by
level, whose leaves do nothing (none), sleep (io), sleep unless a memo has the answer
(memoization), or either compute or sleep (cpu_io_mixed); the TaskGroup form builds the
same io tree with asyncio.TaskGroup instead of gather.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

import loops

perf_counter = time.perf_counter


# --- loop primitives ----------------------------------------------------------------------


async def call_soon_batch(n: int = 200_000, batch: int = 1000):
    """call_soon of `batch` callbacks at once, wait for all of them, repeat."""
    loop = asyncio.get_running_loop()
    rounds = max(1, n // batch)
    state = [0, None]

    def cb():
        state[0] -= 1
        if state[0] == 0:
            state[1].set_result(None)

    t0 = perf_counter()
    for _ in range(rounds):
        state[0] = batch
        state[1] = loop.create_future()
        for _ in range(batch):
            loop.call_soon(cb)
        await state[1]
    return {"seconds": perf_counter() - t0, "ops": rounds * batch}


async def call_soon_chain(n: int = 200_000):
    """Each callback schedules the next one: one ready callback per loop iteration."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [n]

    def cb():
        left[0] -= 1
        if left[0]:
            loop.call_soon(cb)
        else:
            done.set_result(None)

    t0 = perf_counter()
    loop.call_soon(cb)
    await done
    return {"seconds": perf_counter() - t0, "ops": n}


async def timers(n: int = 100_000):
    """n call_later timers with delays spread over 0..1 ms; every other one is cancelled."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    want = n - n // 2
    fired = [0]

    def cb():
        fired[0] += 1
        if fired[0] == want:
            done.set_result(None)

    t0 = perf_counter()
    handles = [loop.call_later((i % 1000) * 1e-6, cb) for i in range(n)]
    for h in handles[1::2]:
        h.cancel()
    await done
    return {"seconds": perf_counter() - t0, "ops": n}


async def sleep0(tasks: int = 100, rounds: int = 1000):
    """`tasks` tasks each awaiting asyncio.sleep(0) `rounds` times (a task switch each)."""

    async def worker():
        for _ in range(rounds):
            await asyncio.sleep(0)

    t0 = perf_counter()
    await asyncio.gather(*[worker() for _ in range(tasks)])
    return {"seconds": perf_counter() - t0, "ops": tasks * rounds}


async def _noop():
    return None


async def gather_tasks(n: int = 100_000):
    """create_task of n trivial coroutines, then gather them."""
    loop = asyncio.get_running_loop()
    t0 = perf_counter()
    await asyncio.gather(*[loop.create_task(_noop()) for _ in range(n)])
    return {"seconds": perf_counter() - t0, "ops": n}


async def future_chain(n: int = 100_000):
    """n futures; each one's done-callback resolves the next; the last one is awaited."""
    loop = asyncio.get_running_loop()
    t0 = perf_counter()
    futs = [loop.create_future() for _ in range(n)]
    for cur, nxt in zip(futs, futs[1:]):
        cur.add_done_callback(lambda f, nxt=nxt: nxt.set_result(f.result() + 1))
    futs[0].set_result(0)
    result = await futs[-1]
    elapsed = perf_counter() - t0
    assert result == n - 1, result
    return {"seconds": elapsed, "ops": n}


def _work(x):
    return x + 1


async def executor(n: int = 5000):
    """Sequential loop.run_in_executor(None, f) round trips (thread pool and back)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _work, 0)  # start the pool's first thread
    t0 = perf_counter()
    x = 0
    for _ in range(n):
        x = await loop.run_in_executor(None, _work, x)
    elapsed = perf_counter() - t0
    assert x == n
    return {"seconds": elapsed, "ops": n}


# --- subprocesses and pipes -------------------------------------------------------------

_NO_SUBPROCESS = "n/a: no subprocess support in this loop"
_NO_PIPES = "n/a: no pipe support in this loop"


async def subprocess_spawn(n: int = 200, concurrency: int = 10, output: bool = False):
    """Spawn-and-collect rate: n create_subprocess_exec + wait, `concurrency` at a time.
    /bin/true (output=False) or /bin/echo with stdout=PIPE and communicate() (output=True)."""

    async def one(i):
        if output:
            p = await asyncio.create_subprocess_exec("/bin/echo", str(i), stdout=asyncio.subprocess.PIPE)
            out, _ = await p.communicate()
            assert out == b"%d\n" % i, out
        else:
            p = await asyncio.create_subprocess_exec("/bin/true")
            await p.wait()
        assert p.returncode == 0, p.returncode

    try:
        await one(0)  # warm-up (and: does this loop do subprocesses at all?)
    except NotImplementedError:
        return {"skipped": _NO_SUBPROCESS}
    t0 = perf_counter()
    for start in range(0, n, concurrency):
        await asyncio.gather(*[one(i) for i in range(start, min(n, start + concurrency))])
    return {"seconds": perf_counter() - t0, "ops": n}


async def pipe_throughput(mb: int = 200, chunk: int = 256 * 1024):
    """MB/s (ops = MB) through connect_write_pipe -> os.pipe() -> connect_read_pipe, with the
    writer honouring pause_writing/resume_writing."""
    loop = asyncio.get_running_loop()
    total = mb * 1000 * 1000
    r, w = os.pipe()
    done = loop.create_future()
    got = [0]

    class Reader(asyncio.Protocol):
        def data_received(self, data):
            got[0] += len(data)

        def connection_lost(self, exc):
            done.set_result(exc)

    class Writer(asyncio.Protocol):
        def __init__(self):
            self.ok = loop.create_future()
            self.ok.set_result(None)

        def pause_writing(self):
            self.ok = loop.create_future()

        def resume_writing(self):
            self.ok.set_result(None)

    rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
    try:
        rt, _ = await loop.connect_read_pipe(Reader, rf)
        wt, wp = await loop.connect_write_pipe(Writer, wf)
    except NotImplementedError:
        rf.close()
        wf.close()
        return {"skipped": _NO_PIPES}
    block = b"p" * chunk
    t0 = perf_counter()
    sent = 0
    while sent < total:
        await wp.ok
        wt.write(block)
        sent += chunk
    wt.close()
    await done
    elapsed = perf_counter() - t0
    assert got[0] == sent, (got[0], sent)
    return {"seconds": elapsed, "ops": sent / 1e6}


# --- async_tree ---------------------------------------------------------------------------

IO_SLEEP = 0.05  # seconds a leaf "waits for I/O"
MEMO_KEYS = 20  # distinct keys the memoized leaves ask for
CPU_LOOPS = 300  # work done by a cpu leaf


def _nodes(branches: int, depth: int) -> int:
    return sum(branches**k for k in range(depth + 1))


async def _tree_gather(level: int, branches: int, leaf):
    if level == 0:
        await leaf()
        return
    await asyncio.gather(*[_tree_gather(level - 1, branches, leaf) for _ in range(branches)])


async def _tree_taskgroup(level: int, branches: int, leaf):
    if level == 0:
        await leaf()
        return
    async with asyncio.TaskGroup() as tg:
        for _ in range(branches):
            tg.create_task(_tree_taskgroup(level - 1, branches, leaf))


async def async_tree(variant: str = "none", branches: int = 5, depth: int = 5, seed: int = 7):
    rng = random.Random(seed)
    memo: dict[int, int] = {}
    ticks = [0]

    async def leaf_none():
        ticks[0] += 1

    async def leaf_io():
        await asyncio.sleep(IO_SLEEP)

    async def leaf_memo():
        key = rng.randrange(MEMO_KEYS)
        if key in memo:
            return memo[key]
        await asyncio.sleep(IO_SLEEP)
        memo[key] = key * key
        return memo[key]

    async def leaf_mixed():
        if rng.random() < 0.5:
            acc = 0
            for i in range(CPU_LOOPS):
                acc += i * i
            ticks[0] += acc & 1
        else:
            await asyncio.sleep(IO_SLEEP)

    leaf = {"none": leaf_none, "io": leaf_io, "memoization": leaf_memo, "cpu_io_mixed": leaf_mixed, "taskgroup": leaf_io}[variant]
    build = _tree_taskgroup if variant == "taskgroup" else _tree_gather
    if variant == "taskgroup" and not hasattr(asyncio, "TaskGroup"):
        return {"skipped": "asyncio.TaskGroup needs Python >= 3.11"}
    t0 = perf_counter()
    await build(depth, branches, leaf)
    return {"seconds": perf_counter() - t0, "ops": _nodes(branches, depth)}


# --- timer precision ----------------------------------------------------------------------


async def timer_precision(delays_ms=(0.1, 0.2, 0.5, 1, 2, 5, 10), samples: int = 30):
    """Lateness of call_later: fire time (perf_counter) minus (schedule time + delay).

    One timer at a time on an otherwise idle loop; delays interleaved so drift hits all.
    """
    loop = asyncio.get_running_loop()
    late: dict[str, list[float]] = {str(d): [] for d in delays_ms}
    t_start = perf_counter()
    for _ in range(samples):
        for d in delays_ms:
            fut = loop.create_future()
            t0 = perf_counter()
            loop.call_later(d / 1000.0, lambda f=fut: f.set_result(perf_counter()))
            t1 = await fut
            late[str(d)].append((t1 - t0) * 1e6 - d * 1000.0)
    out = {}
    for d, xs in late.items():
        xs.sort()
        n = len(xs)
        out[d] = {
            "p50": xs[n // 2],
            "p99": xs[min(n - 1, int(round(0.99 * (n - 1))))],
            "min": xs[0],
            "max": xs[-1],
        }
    return {"seconds": perf_counter() - t_start, "ops": samples * len(delays_ms), "lateness_us": out}


CASES = {
    "call_soon_batch": call_soon_batch,
    "call_soon_chain": call_soon_chain,
    "timers": timers,
    "sleep0": sleep0,
    "gather_tasks": gather_tasks,
    "future_chain": future_chain,
    "executor": executor,
    "subprocess_spawn": subprocess_spawn,
    "pipe_throughput": pipe_throughput,
    "async_tree": async_tree,
    "timer_precision": timer_precision,
}


def run_case(factory, case: str, params: dict) -> dict:
    fn = CASES[case]
    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        cpu0 = time.process_time()
        res = loop.run_until_complete(fn(**params))
        res["process_cpu"] = time.process_time() - cpu0
        try:
            loop.run_until_complete(loop.shutdown_default_executor())
        except (AttributeError, NotImplementedError):
            pass
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return res


def worker(factory) -> None:
    """Serve JSON commands {"case":..., "params":{...}} from stdin, one JSON reply a line."""
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        try:
            res = run_case(factory, cmd["case"], cmd.get("params", {}))
            res["ok"] = True
        except BaseException as e:  # report and go on: the next case gets a fresh loop
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


def instr_sequence(factory, seq: list) -> None:
    """Run cases for instruction counting; os.getppid() marks a counter dump."""
    for case, params in seq:
        os.getppid()
        run_case(factory, case, params)
    os.getppid()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", default="asyncio:new_event_loop")
    ap.add_argument("--case", choices=sorted(CASES))
    ap.add_argument("--param", action="append", default=[], help="k=v (v parsed as JSON when it can be)")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--instr-sequence", help="JSON list of [case, params]")
    args = ap.parse_args()
    factory = loops.resolve(args.loop)
    if args.worker:
        worker(factory)
        return
    if args.instr_sequence:
        instr_sequence(factory, json.loads(args.instr_sequence))
        return
    if not args.case:
        ap.error("--case, --worker or --instr-sequence is required")
    params = {}
    for kv in args.param:
        k, _, v = kv.partition("=")
        try:
            params[k] = json.loads(v)
        except ValueError:
            params[k] = v
    print(json.dumps(run_case(factory, args.case, params)))


if __name__ == "__main__":
    main()
