"""Selecting oxloop in the real libraries, each the one documented way (README "Recipes").

Every row runs twice: selecting oxloop, and the library's stock asyncio set-up, and checks the
loop class each worker really runs (the servers' workers report it: tests/integration_apps/).
The libraries come from tests/requirements-integration.txt, installed by `make setup`; one that
is missing fails its test (the import is not guarded).

Servers listen on 127.0.0.1 only, are started in their own session and killed with it.
"""

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "integration_apps")
PY = sys.version_info[:2]

OXLOOP_LOOP = "oxloop.unix_events.SelectorEventLoop"
STOCK_LOOP = "asyncio.unix_events._UnixSelectorEventLoop"
EXPECTED = {"oxloop": OXLOOP_LOOP, "asyncio": STOCK_LOOP}
START_TIMEOUT = 30.0


@pytest.fixture(params=["oxloop", "asyncio"])
def selected(request, oxloop_module):
    """Which loop the test selects: oxloop (the documented line) or the stock set-up."""
    return request.param


def _env(**extra):
    env = dict(os.environ)
    env.pop("OXLOOP", None)
    env["PYTHONPATH"] = APPS + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        return json.loads(body)
    finally:
        conn.close()


class Server:
    """A server command run in its own session; workers report to a directory."""

    def __init__(self, cmd, tmp_path, port, workers, env=None):
        self.port = port
        self.workers = workers
        self.report = tmp_path / "report"
        self.report.mkdir()
        self.log = tmp_path / "server.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=APPS, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env or _env(OXLOOP_IT_REPORT=str(self.report)), start_new_session=True,
        )

    def output(self):
        self._log.flush()
        return self.log.read_text(errors="replace")

    def reports(self):
        out = {}
        for p in self.report.glob("*.json"):
            out[int(p.stem)] = json.loads(p.read_text())
        return out

    def wait_ready(self):
        """Every worker reported and a request is answered; returns (reports, response)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited ({self.proc.returncode}) before it was ready:\n"
                            f"{self.output()}", pytrace=False)
            reps = self.reports()
            if len(reps) >= self.workers:
                try:
                    return reps, http_get(self.port)
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.1)
        pytest.fail(f"server not ready within {START_TIMEOUT:g} s ({len(self.reports())} of "
                    f"{self.workers} workers reported):\n{self.output()}", pytrace=False)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers left behind, if any
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()


def run_server(cmd, tmp_path, port, workers, selected, env=None):
    """Start, check every worker's loop and the answering one's, stop."""
    srv = Server(cmd, tmp_path, port, workers, env=env)
    try:
        reps, resp = srv.wait_ready()
        expected = EXPECTED[selected]
        assert len(reps) == workers, (reps, srv.output())
        assert {r["loop"] for r in reps.values()} == {expected}, (reps, srv.output())
        assert resp["loop"] == expected, resp
        assert resp["pid"] in reps, (resp, reps)
        if workers > 1:
            assert srv.proc.pid not in reps  # the workers are other processes
        return reps
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# uvicorn: --loop oxloop:new_event_loop


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_uvicorn_cli(selected, http, workers, tmp_path):
    port = free_port()
    loop = "oxloop:new_event_loop" if selected == "oxloop" else "asyncio"
    cmd = [sys.executable, "-m", "uvicorn", "oxit_asgi:app", "--host", "127.0.0.1",
           "--port", str(port), "--loop", loop, "--http", http, "--workers", str(workers),
           "--log-level", "warning"]
    run_server(cmd, tmp_path, port, workers, selected)


# ---------------------------------------------------------------------------
# gunicorn: -k oxloop.gunicorn.UvicornWorker / UvicornH11Worker / AiohttpWorker


@pytest.mark.parametrize("worker,stock,app", [
    ("UvicornWorker", "uvicorn_worker.UvicornWorker", "oxit_asgi:app"),
    ("UvicornH11Worker", "uvicorn_worker.UvicornH11Worker", "oxit_asgi:app"),
    ("AiohttpWorker", "aiohttp.worker.GunicornWebWorker", "oxit_aiohttp:make_app_async"),
])
def test_gunicorn_worker(selected, worker, stock, app, tmp_path):
    port = free_port()
    klass = f"oxloop.gunicorn.{worker}" if selected == "oxloop" else stock
    cmd = [sys.executable, "-m", "gunicorn", "-k", klass, "-w", "2", "-b", f"127.0.0.1:{port}",
           "--log-level", "warning", "--graceful-timeout", "5", app]
    reps = run_server(cmd, tmp_path, port, 2, selected)
    assert len(set(reps)) == 2  # two worker processes sharing the one port


def test_gunicorn_worker_classes_need_their_library(oxloop_module):
    import oxloop.gunicorn as g

    with pytest.raises(AttributeError):
        g.NoSuchWorker  # noqa: B018
    assert g.UvicornWorker.CONFIG_KWARGS["loop"] == "oxloop:new_event_loop"
    assert g.UvicornH11Worker.CONFIG_KWARGS["http"] == "h11"
    from aiohttp.worker import GunicornWebWorker

    assert issubclass(g.AiohttpWorker, GunicornWebWorker)


# ---------------------------------------------------------------------------
# hypercorn: serve() on oxloop.run / loop_factory; the CLI's spawned workers with
# `python -m oxloop run hypercorn ...`


HYPERCORN_SERVE = """
import asyncio, sys
from hypercorn.asyncio import serve
from hypercorn.config import Config
from oxit_asgi import app
config = Config()
config.bind = ["127.0.0.1:%d"]
if sys.argv[1] == "oxloop":
    import oxloop
    oxloop.run(serve(app, config))
else:
    asyncio.run(serve(app, config))
"""


def test_hypercorn_serve(selected, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-c", HYPERCORN_SERVE % port, selected]
    run_server(cmd, tmp_path, port, 1, selected)


def test_hypercorn_cli_workers(selected, tmp_path):
    port = free_port()
    pre = [sys.executable, "-m", "oxloop", "run"] if selected == "oxloop" else [sys.executable, "-m"]
    cmd = pre + ["hypercorn", "oxit_asgi:app", "-b", f"127.0.0.1:{port}", "-w", "2"]
    run_server(cmd, tmp_path, port, 2, selected)


# ---------------------------------------------------------------------------
# granian: spawned workers, no hook: `python -m oxloop run granian ...` and OXLOOP=1


@pytest.mark.parametrize("selected,how", [
    ("oxloop", "oxloop-run"), ("oxloop", "env"), ("asyncio", "stock")])
def test_granian_workers(oxloop_module, selected, how, tmp_path):
    port = free_port()
    args = ["granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "2", "--loop", "asyncio", "--log-level", "warning", "oxit_asgi:app"]
    env = _env(OXLOOP_IT_REPORT=str(tmp_path / "report"))
    if selected == "asyncio":
        cmd = [sys.executable, "-m"] + args
    elif how == "oxloop-run":
        cmd = [sys.executable, "-m", "oxloop", "run"] + args
    else:
        cmd = [sys.executable, "-m"] + args
        env["OXLOOP"] = "1"
    run_server(cmd, tmp_path, port, 2, selected, env=env)


# ---------------------------------------------------------------------------
# aiohttp: web.run_app(app, loop=oxloop.new_event_loop())


AIOHTTP_RUN_APP = """
import sys
from aiohttp import web
from oxit_aiohttp import make_app
if sys.argv[1] == "oxloop":
    import oxloop
    web.run_app(make_app(), host="127.0.0.1", port=%d, loop=oxloop.new_event_loop(), print=None)
else:
    web.run_app(make_app(), host="127.0.0.1", port=%d, print=None)
"""


def test_aiohttp_run_app(selected, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-c", AIOHTTP_RUN_APP % (port, port), selected]
    run_server(cmd, tmp_path, port, 1, selected)


# ---------------------------------------------------------------------------
# pytest-asyncio: the pytest_asyncio_loop_factories hook in conftest.py


PYTEST_ASYNCIO_CONFTEST = """
import oxloop

def pytest_asyncio_loop_factories(config, item):
    return {"oxloop": oxloop.new_event_loop}
"""

PYTEST_ASYNCIO_TEST = """
import asyncio
import pytest

@pytest.mark.asyncio
async def test_loop():
    t = type(asyncio.get_running_loop())
    print("LOOP", f"{t.__module__}.{t.__qualname__}")
"""


PYTEST_ASYNCIO_POLICY_CONFTEST = """
import oxloop
import pytest

@pytest.fixture(scope="session")
def event_loop_policy():
    return oxloop.EventLoopPolicy()
"""


def _pytest_asyncio_has_hook():
    import pytest_asyncio.plugin

    return hasattr(getattr(pytest_asyncio.plugin, "PytestAsyncioSpecs", None),
                   "pytest_asyncio_loop_factories")


@pytest.mark.parametrize("recipe", ["loop_factories_hook", "event_loop_policy_fixture"])
def test_pytest_asyncio(selected, recipe, tmp_path):
    # pytest-asyncio >= 1.3 (Python >= 3.10) has the hook and deprecates overriding the
    # event_loop_policy fixture; the releases for Python 3.9 have only the fixture.
    import pytest_asyncio

    has_hook = _pytest_asyncio_has_hook()
    if recipe == "loop_factories_hook" and not has_hook:
        pytest.skip(f"pytest-asyncio {pytest_asyncio.__version__} has no loop factories hook")
    if recipe == "event_loop_policy_fixture" and has_hook:
        pytest.skip(f"pytest-asyncio {pytest_asyncio.__version__} has the loop factories hook "
                    f"and deprecates the event_loop_policy fixture")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n"
                                     "asyncio_default_fixture_loop_scope = function\n")
    if selected == "oxloop":
        (proj / "conftest.py").write_text(
            PYTEST_ASYNCIO_CONFTEST if has_hook else PYTEST_ASYNCIO_POLICY_CONFTEST)
    (proj / "test_it.py").write_text(PYTEST_ASYNCIO_TEST)
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "asyncio", "-p", "no:cacheprovider", "-s", "-q",
         str(proj)],
        cwd=proj, capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"LOOP {EXPECTED[selected]}" in p.stdout, p.stdout
    assert "1 passed" in p.stdout, p.stdout


# ---------------------------------------------------------------------------
# anyio: backend_options={"loop_factory": oxloop.new_event_loop}; asyncio.run / Runner


def test_anyio_loop_factory(selected):
    import anyio

    async def main():
        await anyio.sleep(0)
        return type(asyncio.get_running_loop())

    opts = {"loop_factory": __import__("oxloop").new_event_loop} if selected == "oxloop" else {}
    t = anyio.run(main, backend="asyncio", backend_options=opts)
    assert f"{t.__module__}.{t.__qualname__}" == EXPECTED[selected]


@pytest.mark.skipif(PY < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")
def test_asyncio_run_loop_factory(selected):
    import oxloop

    async def main():
        return type(asyncio.get_running_loop())

    factory = oxloop.new_event_loop if selected == "oxloop" else asyncio.SelectorEventLoop
    t = asyncio.run(main(), loop_factory=factory)
    assert f"{t.__module__}.{t.__qualname__}" == EXPECTED[selected]


@pytest.mark.skipif(PY < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_asyncio_runner_loop_factory(selected):
    import oxloop

    async def main():
        return type(asyncio.get_running_loop())

    factory = oxloop.new_event_loop if selected == "oxloop" else asyncio.SelectorEventLoop
    with asyncio.Runner(loop_factory=factory) as r:
        t = r.run(main())
    assert f"{t.__module__}.{t.__qualname__}" == EXPECTED[selected]


# ---------------------------------------------------------------------------
# OXLOOP=1 and `python -m oxloop run`: this process, a multiprocessing spawn child and a plain
# subprocess each check their own loop.


def _child_loops(cmd, env):
    p = subprocess.run(cmd, cwd=APPS, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    return lines, p.stderr


@pytest.mark.parametrize("selected,how", [
    ("oxloop", "env"), ("oxloop", "oxloop-run-script"), ("oxloop", "oxloop-run-module"),
    ("asyncio", "stock")])
def test_whole_program_switch(oxloop_module, selected, how):
    env = _env()
    script = os.path.join(APPS, "oxit_child.py")
    if selected == "asyncio":
        cmd = [sys.executable, script]
    elif how == "env":
        env["OXLOOP"] = "1"
        cmd = [sys.executable, script]
    elif how == "oxloop-run-script":
        cmd = [sys.executable, "-m", "oxloop", "run", script]
    else:
        cmd = [sys.executable, "-m", "oxloop", "run", "-m", "oxit_child"]
    lines, err = _child_loops(cmd, env)
    assert lines == {k: EXPECTED[selected] for k in ("main", "spawn", "subprocess")}, (lines, err)
    assert err == ""


def test_env_switch_values_are_checked(oxloop_module):
    code = "import asyncio; l = asyncio.new_event_loop(); print(type(l).__module__); l.close()"
    for value, module, err in [("0", "asyncio.unix_events", ""),
                               ("", "asyncio.unix_events", ""),
                               ("1", "oxloop.unix_events", ""),
                               ("yes", "asyncio.unix_events", "OXLOOP='yes' is not understood")]:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, env=_env(OXLOOP=value))
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == module, (value, p.stdout, p.stderr)
        assert (err in p.stderr) if err else p.stderr == "", (value, p.stderr)


def test_env_switch_costs_nothing_when_unset(oxloop_module):
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True,
                       text=True, timeout=60, env=_env())
    assert p.returncode == 0, p.stderr
    imported = [line for line in p.stderr.splitlines() if "oxloop" in line or "asyncio" in line]
    assert imported == []


def test_oxloop_run_passes_argv_and_exit_code(oxloop_module, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("import sys, os\nprint(sys.argv, os.environ['OXLOOP'])\nsys.exit(3)\n")
    p = subprocess.run([sys.executable, "-m", "oxloop", "run", str(script), "a", "--b"],
                       capture_output=True, text=True, timeout=60, env=_env())
    assert p.returncode == 3, p.stderr
    assert p.stdout.strip() == f"[{str(script)!r}, 'a', '--b'] 1"
