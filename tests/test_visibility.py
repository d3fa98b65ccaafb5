"""Seeing which loop runs: the loop's repr, debug-mode reports of what is not native,
`python -m oxloop doctor` / `bench` and the command line's errors."""

import asyncio
import logging
import os
import re
import selectors
import subprocess
import sys

import pytest

PY = sys.version_info[:2]


def _env(**extra):
    env = dict(os.environ)
    env.pop("OXLOOP", None)
    env.update(extra)
    return env


def test_loop_repr_names_the_loop_and_selector(loop_factory, loop):
    r = repr(loop)
    if loop_factory.is_stock:
        assert r.startswith("<_UnixSelectorEventLoop running=False"), r  # asyncio's, unchanged
        assert "oxloop" not in r
        return
    m = re.fullmatch(r"<oxloop\.SelectorEventLoop running=False closed=False debug=False "
                     r"selector=(\S+)>", r)
    assert m, r
    if loop_factory.id == "oxloop-pyselector":
        sel = loop._selector
        assert m.group(1) == f"{type(sel).__module__}.{type(sel).__qualname__}"
    else:
        assert m.group(1) == loop_factory.selector


def test_subclass_repr_names_oxloop(oxloop_module):
    class MyLoop(oxloop_module.SelectorEventLoop):
        pass

    lp = MyLoop("poll")
    try:
        assert repr(lp).startswith("<MyLoop (oxloop.SelectorEventLoop) running=False"), repr(lp)
        assert repr(lp).endswith(" selector=poll>")
    finally:
        lp.close()


def _fallback_logs(caplog, make):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        lp = make()
        try:
            lp.set_debug(True)
        finally:
            lp.close()
    return [r.getMessage() for r in caplog.records if "selector=" in r.getMessage()
            and not r.getMessage().startswith("Close ")]


def test_debug_mode_says_what_falls_back(oxloop_module, caplog, monkeypatch):
    ox = oxloop_module
    msgs = _fallback_logs(caplog, lambda: ox.SelectorEventLoop(selectors.PollSelector()))
    assert any("a Python selectors object (PollSelector) was given" in m for m in msgs), msgs

    monkeypatch.setenv("OXLOOP_NATIVE_TRANSPORTS", "0")
    msgs = _fallback_logs(caplog, ox.SelectorEventLoop)
    assert any("OXLOOP_NATIVE_TRANSPORTS=0" in m for m in msgs), msgs
    monkeypatch.delenv("OXLOOP_NATIVE_TRANSPORTS")

    msgs = _fallback_logs(caplog, ox.SelectorEventLoop)
    if PY >= (3, 11):
        assert msgs == []  # everything native: nothing to report
    else:
        assert len(msgs) == 1 and "TLS is asyncio's sslproto on Python < 3.11" in msgs[0], msgs

    # Not in debug mode: nothing said.
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        lp = ox.SelectorEventLoop(selectors.PollSelector())
        lp.close()
    assert not any("was given" in r.getMessage() for r in caplog.records)


def test_debug_mode_from_the_environment_reports_at_creation(oxloop_module):
    code = ("import logging, oxloop; logging.basicConfig(level=logging.DEBUG)\n"
            "oxloop.SelectorEventLoop('poll').close()\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=_env(PYTHONASYNCIODEBUG="1", OXLOOP_NATIVE_TLS="0"))
    assert p.returncode == 0, p.stderr
    want = "selector=poll>: " + ("OXLOOP_NATIVE_TLS=0: TLS is asyncio's sslproto"
                                 if PY >= (3, 11) else "TLS is asyncio's sslproto on Python")
    assert want in p.stderr, p.stderr


def _oxloop_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "oxloop", *args], capture_output=True,
                          text=True, timeout=120, env=_env(**env))


def test_doctor(oxloop_module):
    p = _oxloop_cli("doctor")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith(f"oxloop {oxloop_module.__version__} on CPython"), out
    assert "oxloop.new_event_loop()  -> <oxloop.SelectorEventLoop running=False" in out
    assert re.search(r"selector epoll\s+default", out), out
    assert re.search(r"selector kqueue\s+unavailable: ", out), out
    assert ("asyncio.new_event_loop() -> <_UnixSelectorEventLoop running=False closed=False "
            "debug=False>   (stock asyncio: oxloop is not selected here)") in out, out
    assert "OXLOOP unset" in out
    assert "OXLOOP=1 switch file: " in out and "MISSING" not in out, out
    assert "ProactorEventLoop: unavailable: " in out

    p = _oxloop_cli("doctor", OXLOOP="1", OXLOOP_NATIVE_TRANSPORTS="0")
    assert p.returncode == 0, p.stderr
    assert "asyncio.new_event_loop() -> <oxloop.SelectorEventLoop" in p.stdout, p.stdout
    assert "OXLOOP='1': oxloop's policy set at interpreter start" in p.stdout, p.stdout
    assert "OXLOOP_NATIVE_TRANSPORTS='0': native TCP/Unix/UDP/pipe transports OFF" in p.stdout


def test_bench_prints_the_table(oxloop_module):
    p = _oxloop_cli("bench", "--scale", "0.02")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    header = next(line for line in lines if line.startswith("case"))
    assert header.split()[:3] == ["case", "asyncio", "oxloop"], header
    assert "oxloop/asyncio" in header
    for case in ("call_soon", "streams echo", "protocol echo"):
        row = next(line for line in lines if line.startswith(case))
        assert re.search(r"\d\.\d\dx$", row), row
    assert "  oxloop: <oxloop.SelectorEventLoop" in p.stdout


@pytest.mark.parametrize("args,msg", [
    ((), "a command is needed"),
    (("frobnicate",), "unknown command 'frobnicate'"),
    (("run",), "run needs a script or a module"),
    (("run", "-m"), "run -m needs a module name"),
    (("doctor", "x"), "doctor takes no arguments"),
])
def test_cli_errors(oxloop_module, args, msg):
    p = _oxloop_cli(*args)
    assert p.returncode == 2
    assert msg in p.stderr and "usage:" in p.stderr, p.stderr


def test_console_script(oxloop_module):
    # [project.scripts] oxloop = "oxloop.__main__:main", installed next to the interpreter.
    exe = os.path.join(os.path.dirname(sys.executable), "oxloop")
    assert os.access(exe, os.X_OK), exe
    p = subprocess.run([exe, "doctor"], capture_output=True, text=True, timeout=120, env=_env())
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"oxloop {oxloop_module.__version__} on "), p.stdout
    p = subprocess.run([exe, "help"], capture_output=True, text=True, timeout=60, env=_env())
    assert p.returncode == 0 and "python -m oxloop run app.py" in p.stdout, p.stdout + p.stderr
