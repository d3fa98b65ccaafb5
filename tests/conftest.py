"""Shared fixtures for oxloop's own test suite.

Every loop-level test is written once and run against stock asyncio AND every
oxloop loop (uvloop's habit): the stock loop decides what is right.

Fixtures
--------
loop_factory   parametrized: ``asyncio`` (stock ``asyncio.SelectorEventLoop()``),
               ``oxloop-epoll``, ``oxloop-poll``, ``oxloop-select`` and
               ``oxloop-pyselector`` (``oxloop.SelectorEventLoop(selectors.DefaultSelector())``).
               The value is a :class:`LoopKind`: call it to make a new loop;
               ``kind.new_stock_loop()`` makes a stock asyncio loop using the
               same selector family (the reference for per-selector behaviour).
loop           a fresh loop of that kind, with a recording exception handler.
               Teardown fails the test if the handler was called and the test did
               not consume (inspect and clear) ``exc_handler_calls``, or if the
               number of open fds differs from before the loop was made.
exc_handler_calls  the list of ``(loop, context)`` the handler recorded.
run            ``run(loop, coro, timeout=10)``: run_until_complete that fails the
               test instead of hanging.
oxloop_module  the imported ``oxloop`` package (for oxloop-only tests).

If oxloop cannot be imported, oxloop parameters FAIL at setup with the import
error, unless OXLOOP_TESTS_ALLOW_MISSING=1 is set (then they are skipped).

A hung test (e.g. a loop that never wakes up) would stall the whole run, so a
faulthandler watchdog dumps every thread's stack and exits the process after
OXLOOP_TESTS_HANG_TIMEOUT seconds (default 60) per test; the dump goes to the
file named in the session header (pytest captures fd 2).
"""

import asyncio
import faulthandler
import gc
import os
import selectors
import shutil
import sys
import tempfile

import pytest

ALLOW_MISSING = os.environ.get("OXLOOP_TESTS_ALLOW_MISSING") == "1"
HANG_TIMEOUT = float(os.environ.get("OXLOOP_TESTS_HANG_TIMEOUT", "60"))

PY = sys.version_info[:2]

_oxloop = None
_oxloop_error = None
try:
    import oxloop as _oxloop  # noqa: F401
except BaseException as exc:  # ImportError, or anything raised while importing
    _oxloop = None
    _oxloop_error = exc


def oxloop_available():
    return _oxloop is not None


# Modules that import oxloop at import time cannot even be collected without
# it; with OXLOOP_TESTS_ALLOW_MISSING=1 leave them out (otherwise their
# collection error fails the run, as it should).
collect_ignore = ["test_native.py"] if (_oxloop is None and ALLOW_MISSING) else []


def require_oxloop():
    """Return the oxloop module, or fail (skip with OXLOOP_TESTS_ALLOW_MISSING=1)."""
    if _oxloop is not None:
        return _oxloop
    msg = f"oxloop cannot be imported: {_oxloop_error!r}"
    if ALLOW_MISSING:
        pytest.skip(msg + " (OXLOOP_TESTS_ALLOW_MISSING=1)")
    pytest.fail(msg, pytrace=False)


# --------------------------------------------------------------------------
# loop kinds


def _default_selector_name():
    sel = selectors.DefaultSelector()
    try:
        return {
            "EpollSelector": "epoll",
            "PollSelector": "poll",
            "SelectSelector": "select",
            "KqueueSelector": "kqueue",
            "DevpollSelector": "devpoll",
        }.get(type(sel).__name__, type(sel).__name__)
    finally:
        sel.close()


_STOCK_SELECTORS = {
    "epoll": lambda: selectors.EpollSelector(),
    "poll": lambda: selectors.PollSelector(),
    "select": lambda: selectors.SelectSelector(),
    "kqueue": lambda: selectors.KqueueSelector(),
    "default": lambda: selectors.DefaultSelector(),
}


class LoopKind:
    """One loop under test. Call it to make a new loop."""

    def __init__(self, id, selector):
        self.id = id
        # "default" means selectors.DefaultSelector (what stock asyncio uses).
        self.selector = selector
        self.is_oxloop = id.startswith("oxloop")
        self.is_stock = not self.is_oxloop

    @property
    def selector_name(self):
        """The syscall family the loop waits with: epoll | poll | select | ..."""
        if self.selector == "default":
            return _default_selector_name()
        return self.selector

    def __call__(self):
        if self.is_stock:
            return asyncio.SelectorEventLoop()
        ox = require_oxloop()
        if self.id == "oxloop-pyselector":
            return ox.SelectorEventLoop(selectors.DefaultSelector())
        return ox.SelectorEventLoop(self.selector)

    new_loop = __call__

    def new_stock_selector(self):
        return _STOCK_SELECTORS[self.selector]()

    def new_stock_loop(self):
        """A stock asyncio loop waiting with the same selector family (the reference)."""
        return asyncio.SelectorEventLoop(self.new_stock_selector())

    def __repr__(self):
        return f"<LoopKind {self.id}>"


LOOP_KINDS = [
    LoopKind("asyncio", "default"),
    LoopKind("oxloop-epoll", "epoll"),
    LoopKind("oxloop-poll", "poll"),
    LoopKind("oxloop-select", "select"),
    LoopKind("oxloop-pyselector", "default"),
]


@pytest.fixture(params=LOOP_KINDS, ids=[k.id for k in LOOP_KINDS])
def loop_factory(request):
    kind = request.param
    if kind.is_oxloop:
        require_oxloop()
    return kind


@pytest.fixture
def oxloop_module():
    return require_oxloop()


# --------------------------------------------------------------------------
# fd accounting


def _fd_table():
    table = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            table[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the fd of the listdir itself, already closed
    return table


def count_fds():
    return len(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------
# the loop fixture


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item._oxloop_call_failed = rep.failed


@pytest.fixture
def exc_handler_calls():
    """Calls of the loop's exception handler as (loop, context) tuples.

    A test that expects the handler to be called must inspect this list and
    clear() it; anything left at teardown fails the test."""
    return []


@pytest.fixture
def loop(request, loop_factory, exc_handler_calls):
    gc.collect()
    fds_before = _fd_table()
    n_before = count_fds()

    lp = loop_factory()

    def handler(loop, context):
        exc_handler_calls.append((loop, context))

    lp.set_exception_handler(handler)
    asyncio.set_event_loop(None)
    try:
        yield lp
    finally:
        problems = []
        try:
            if lp.is_running():
                problems.append("loop still running at teardown")
            elif not lp.is_closed():
                try:
                    lp.run_until_complete(lp.shutdown_asyncgens())
                finally:
                    lp.close()
        finally:
            asyncio.set_event_loop(None)
        del lp
        gc.collect()
        n_after = count_fds()
        if n_after != n_before:
            after = _fd_table()
            opened = {fd: t for fd, t in after.items() if fds_before.get(fd) != t}
            closed = {fd: t for fd, t in fds_before.items() if after.get(fd) != t}
            problems.append(
                f"fd leak: {n_before} open fds before the loop was made, "
                f"{n_after} after close (new: {opened}, gone: {closed})")
        if exc_handler_calls:
            shown = "\n".join(
                f"  {ctx.get('message')!r}: {ctx.get('exception')!r}"
                for _, ctx in exc_handler_calls)
            problems.append(
                f"the exception handler was called {len(exc_handler_calls)} "
                f"time(s) and the test did not consume it:\n{shown}")
        # A failed test has already been reported; its leftovers (unclosed
        # sockets, unconsumed handler calls) would only add noise.
        if problems and not getattr(request.node, "_oxloop_call_failed", False):
            pytest.fail("\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------
# run helper


class _TimedOut(Exception):
    pass


def run(loop, coro, timeout=10):
    """loop.run_until_complete(coro), but fail the test after `timeout` s."""

    async def guard():
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            raise _TimedOut
        return task.result()

    try:
        return loop.run_until_complete(guard())
    except _TimedOut:
        pytest.fail(f"coroutine did not finish within {timeout} s", pytrace=False)


@pytest.fixture(name="run")
def run_fixture():
    return run


# --------------------------------------------------------------------------
# unraisable exceptions (errors in __del__, in finalizers, ...)


@pytest.fixture(autouse=True)
def _no_unraisable_exceptions(request):
    """Fail a test during which Python reported an unraisable exception
    (e.g. a __del__ that raised): loops must not leave those behind."""
    seen = []

    def hook(unraisable):
        seen.append(f"{unraisable.err_msg or 'Exception ignored in'}: "
                    f"{unraisable.object!r}: {unraisable.exc_type.__name__}: "
                    f"{unraisable.exc_value}")

    old = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        yield
        gc.collect()
    finally:
        sys.unraisablehook = old
    if seen and not getattr(request.node, "_oxloop_call_failed", False):
        pytest.fail("unraisable exception(s) during the test:\n  " + "\n  ".join(seen),
                    pytrace=False)


# --------------------------------------------------------------------------
# hang watchdog

_hang_log = None

# Every temporary file of the run (tempfile.*, TMPDIR in child processes, pytest's tmp_path) goes
# into one private directory; at the end, anything a test left there (other than pytest's own
# tmp_path tree and the hang log) fails the run, and the directory is removed.
_session_tmp = None
_session_tmp_old = None


def pytest_sessionstart(session):
    global _hang_log, _session_tmp, _session_tmp_old
    _session_tmp_old = (tempfile.tempdir, os.environ.get("TMPDIR"))
    _session_tmp = tempfile.mkdtemp(prefix="oxloop-tests-")
    tempfile.tempdir = _session_tmp
    os.environ["TMPDIR"] = _session_tmp
    if HANG_TIMEOUT > 0:
        path = os.path.join(tempfile.gettempdir(), f"oxloop-tests-hang-{os.getpid()}.log")
        _hang_log = open(path, "w")


def pytest_sessionfinish(session, exitstatus):
    global _hang_log
    if _hang_log is not None:
        name = _hang_log.name
        _hang_log.close()
        _hang_log = None
        try:
            os.unlink(name)  # only a process that hung (and exited) leaves it behind
        except OSError:
            pass
    _check_session_tmp(session)


def _check_session_tmp(session):
    global _session_tmp
    if _session_tmp is None:
        return
    d, _session_tmp = _session_tmp, None
    tempfile.tempdir, old_env = _session_tmp_old
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env
    left = sorted(n for n in os.listdir(d) if not n.startswith("pytest-of-"))
    shutil.rmtree(d, ignore_errors=True)
    if left:
        sys.stderr.write(
            f"\nFAILED: the tests left {len(left)} item(s) in the temp dir: {left}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header(config):
    if _hang_log is not None:
        return [f"oxloop: hang watchdog {HANG_TIMEOUT:g}s per test, stacks to {_hang_log.name}",
                f"oxloop: importable={oxloop_available()} allow_missing={ALLOW_MISSING}"]
    return [f"oxloop: importable={oxloop_available()} allow_missing={ALLOW_MISSING}"]


@pytest.fixture(autouse=True)
def _hang_watchdog(request):
    if _hang_log is None:
        yield
        return
    _hang_log.write(f"\n=== {request.node.nodeid}\n")
    _hang_log.flush()
    faulthandler.dump_traceback_later(HANG_TIMEOUT, exit=True, file=_hang_log)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
