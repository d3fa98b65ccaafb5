"""asyncpg on a real PostgreSQL and redis-py (redis.asyncio) on a real Redis, on oxloop and on
stock asyncio. Each server is started privately for the module, on 127.0.0.1 and a free port,
from the Debian packages (postgresql, redis-server: .ci/run installs them) and removed after.

Without the server binaries the tests skip, saying so, except in CI (CI=true) or with
OXLOOP_IT_REQUIRE_SERVICES=1, where they fail.
"""

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

REQUIRED = os.environ.get("CI") == "true" or os.environ.get("OXLOOP_IT_REQUIRE_SERVICES") == "1"
OXLOOP_LOOP = "oxloop.unix_events.SelectorEventLoop"
STOCK_LOOP = "asyncio.unix_events._UnixSelectorEventLoop"


def _missing(what):
    msg = f"{what} not found (Debian: apt-get install postgresql redis-server)"
    if REQUIRED:
        pytest.fail(msg + " [required: CI=true or OXLOOP_IT_REQUIRE_SERVICES=1]", pytrace=False)
    pytest.skip(msg)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, proc, log, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server not listening on {port} within {timeout:g} s:\n{log()}")


def _loop_runner(selected, oxloop_module):
    return oxloop_module.run if selected == "oxloop" else asyncio.run


def _name(t):
    return f"{t.__module__}.{t.__qualname__}"


@pytest.fixture(params=["oxloop", "asyncio"])
def selected(request, oxloop_module):
    return request.param


# ---------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="module")
def postgres():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins:
        _missing("PostgreSQL server (/usr/lib/postgresql/*/bin/pg_ctl)")
    bindir = os.path.dirname(bins[-1])
    # The server refuses to run as root: as root it runs as the package's `postgres` user, in a
    # directory that user can reach (/tmp; removed below).
    as_root = os.geteuid() == 0
    base = tempfile.mkdtemp(prefix="oxloop-pg-", dir="/tmp" if as_root else None)
    data, logfile = os.path.join(base, "data"), os.path.join(base, "log")
    pre = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(base, "postgres")
    port = free_port()

    def log():
        try:
            with open(logfile) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    try:
        subprocess.run(pre + [f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                              "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run(pre + [f"{bindir}/pg_ctl", "-D", data, "-l", logfile, "-w", "-t", "60",
                              "-o", f"-h 127.0.0.1 -p {port} -k {base} -F", "start"],
                       check=True, capture_output=True, timeout=120)
        _wait_port(port, None, log)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(pre + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_asyncpg(selected, oxloop_module, postgres):
    import asyncpg

    async def main():
        conn = await asyncpg.connect(postgres)
        try:
            await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, v text)")
            await conn.executemany("INSERT INTO t VALUES ($1, $2)",
                                   [(i, f"v{i}") for i in range(500)])
            rows = await conn.fetch("SELECT id, v FROM t ORDER BY id")
            assert [(r["id"], r["v"]) for r in rows] == [(i, f"v{i}") for i in range(500)]
            async with conn.transaction():
                await conn.execute("DELETE FROM t WHERE id >= 250")
            assert await conn.fetchval("SELECT count(*) FROM t") == 250
            got = asyncio.get_running_loop().create_future()
            await conn.add_listener("chan", lambda *a: got.done() or got.set_result(a[-1]))
            await conn.execute("NOTIFY chan, 'hello'")
            assert await asyncio.wait_for(got, 10) == "hello"
        finally:
            await conn.close()
        async with asyncpg.create_pool(postgres, min_size=2, max_size=5) as pool:
            vals = await asyncio.gather(*(pool.fetchval("SELECT $1::int * 2", i)
                                          for i in range(50)))
            assert vals == [i * 2 for i in range(50)]
        return type(asyncio.get_running_loop())

    t = _loop_runner(selected, oxloop_module)(main())
    assert _name(t) == (OXLOOP_LOOP if selected == "oxloop" else STOCK_LOOP)


# ---------------------------------------------------------------------------
# Redis


@pytest.fixture(scope="module")
def redis_server():
    exe = shutil.which("redis-server")
    if exe is None:
        _missing("redis-server")
    base = tempfile.mkdtemp(prefix="oxloop-redis-")
    port = free_port()
    logfile = os.path.join(base, "log")
    log_f = open(logfile, "wb")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", base, "--daemonize", "no", "--protected-mode", "yes"],
        stdout=log_f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )

    def log():
        with open(logfile, errors="replace") as f:
            return f.read()[-3000:]

    try:
        _wait_port(port, proc, log)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_f.close()
        shutil.rmtree(base, ignore_errors=True)


def test_redis_asyncio(selected, oxloop_module, redis_server):
    import redis.asyncio as aioredis

    async def main():
        r = aioredis.Redis(host="127.0.0.1", port=redis_server)
        try:
            await r.flushdb()
            assert await r.set("k", b"v" * 10000)
            assert await r.get("k") == b"v" * 10000
            await asyncio.gather(*(r.incr("n") for _ in range(50)))  # < max_connections
            assert int(await r.get("n")) == 50
            async with r.pipeline(transaction=True) as p:
                res = await p.set("a", 1).incr("a").get("a").execute()
            assert res == [True, 2, b"2"]
            ps = r.pubsub()
            await ps.subscribe("ch")
            assert (await ps.get_message(timeout=5))["type"] == "subscribe"
            await r.publish("ch", "hi")
            msg = None
            for _ in range(50):
                msg = await ps.get_message(timeout=1)
                if msg is not None:
                    break
            assert msg is not None and msg["data"] == b"hi", msg
            await ps.aclose() if hasattr(ps, "aclose") else await ps.close()
        finally:
            await (r.aclose() if hasattr(r, "aclose") else r.close())
        return type(asyncio.get_running_loop())

    t = _loop_runner(selected, oxloop_module)(main())
    assert _name(t) == (OXLOOP_LOOP if selected == "oxloop" else STOCK_LOOP)
