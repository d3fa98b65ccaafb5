"""Child process of the conformance runner: runs ONE module of CPython's own
``test.test_asyncio`` package, with oxloop (or stock asyncio) as the loop
under test, and streams one JSON line per test outcome to ``--out``.

Not meant to be run by hand (``run.py`` starts it), but it works standalone::

    python tests/conformance/_child.py --module test_tasks --out /tmp/r.jsonl

Output records (one JSON object per line, flushed as they happen, so the
parent still has every finished test when it has to kill a hung child):

    {"event": "begin", "loop_type": "oxloop....", ...}
    {"event": "start", "id": "test_tasks.Class.test_x"}
    {"event": "end", "id": ..., "outcome": "pass|fail|error|skip|xfail|xpass",
     "msg": "first line", "tb": "traceback (cut)"}
    {"event": "excluded", "id": ..., "reason": ...}
    {"event": "module-skip", "reason": ...}       # module raised SkipTest
    {"event": "import-error", "msg": ..., "tb": ...}
    {"event": "done", "elapsed": seconds}
"""

import argparse
import faulthandler
import fnmatch
import json
import os
import sys
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = "test.test_asyncio."
TB_LIMIT = 6000


# ---------------------------------------------------------------------------
# Making oxloop the loop under test
# ---------------------------------------------------------------------------

def _native_selector_loop_class(oxloop):
    """``--native-selectors``: SelectorEventLoop(selectors.EpollSelector()) and friends get
    oxloop's NATIVE selector of the same family instead of driving the Python object, so the
    test classes of test_events (EPoll/Poll/Select) exercise the native epoll/poll/select.
    Any other selector object is still driven as given."""
    import selectors

    native = {
        getattr(selectors, "EpollSelector", None): "epoll",
        getattr(selectors, "PollSelector", None): "poll",
        selectors.SelectSelector: "select",
    }
    native.pop(None, None)

    class SelectorEventLoop(oxloop.SelectorEventLoop):
        def __init__(self, selector=None):
            name = native.get(type(selector))
            if name is not None:
                selector.close()
                selector = name
            super().__init__(selector)

    SelectorEventLoop.__module__ = oxloop.SelectorEventLoop.__module__
    return SelectorEventLoop


def install_oxloop():
    """Make every way test_asyncio obtains a "default" loop produce oxloop.

    Patched names, and why (nothing else is touched):

    1. ``asyncio.set_event_loop_policy(oxloop.EventLoopPolicy())`` -- the
       ordinary, public way: ``asyncio.new_event_loop()``,
       ``asyncio.get_event_loop()``, ``asyncio.run()`` and ``asyncio.Runner``
       all go through the current policy.

    2. ``asyncio.DefaultEventLoopPolicy`` (and its origin
       ``asyncio.unix_events.DefaultEventLoopPolicy``) -> oxloop.EventLoopPolicy.
       test_asyncio calls ``asyncio.set_event_loop_policy(None)`` in tearDown /
       tearDownModule; the next ``get_event_loop_policy()`` then runs
       ``asyncio.events._init_event_loop_policy()``, which in every version
       3.9..3.13 does ``from . import DefaultEventLoopPolicy`` -- i.e. it reads
       the attribute of the ``asyncio`` package at call time.  Patching that
       attribute is therefore exactly "asyncio.events' lookup of it".  Tests
       that build ``asyncio.DefaultEventLoopPolicy()`` themselves get oxloop's
       policy too.  (oxloop.EventLoopPolicy subclasses the ORIGINAL class, which
       it captured when oxloop was imported, so isinstance checks still hold.)

    3. ``asyncio.SelectorEventLoop`` and ``asyncio.unix_events.SelectorEventLoop``
       -> oxloop.SelectorEventLoop.  test_events / test_sock_lowlevel /
       test_sendfile / test_server / test_buffered_proto / test_sslproto /
       test_unix_events build loops with ``asyncio.SelectorEventLoop(...)``,
       sometimes with an explicit Python selector
       (``selectors.EpollSelector()``, ``PollSelector()``, ``SelectSelector()``):
       those then run oxloop over that Python selector object, which is
       intended (oxloop accepts any ``selectors.BaseSelector``).
       ``asyncio.unix_events._UnixSelectorEventLoop`` (the real class, which
       oxloop builds on) is NOT patched.

    4. ``asyncio.EventLoop`` (3.13+ only, an alias of SelectorEventLoop on
       Unix) -> oxloop.SelectorEventLoop, for the same reason.

    ``asyncio.new_event_loop`` itself is deliberately NOT replaced: it already
    returns oxloop loops through (1)/(2), and replacing it would break the
    tests that install their own policy (test_events' PolicyTests,
    test_runners' custom policies) and expect new_event_loop() to honour it.
    """
    import asyncio
    import asyncio.events
    import asyncio.unix_events

    import oxloop

    policy_cls = oxloop.EventLoopPolicy
    loop_cls = oxloop.SelectorEventLoop
    if os.environ.get("OXLOOP_CONFORMANCE_NATIVE_SELECTORS") == "1":
        loop_cls = _native_selector_loop_class(oxloop)

    asyncio.DefaultEventLoopPolicy = policy_cls                # (2)
    asyncio.unix_events.DefaultEventLoopPolicy = policy_cls    # (2)
    asyncio.SelectorEventLoop = loop_cls                       # (3)
    asyncio.unix_events.SelectorEventLoop = loop_cls           # (3)
    if hasattr(asyncio, "EventLoop"):                          # (4) 3.13+
        asyncio.EventLoop = loop_cls
        if hasattr(asyncio.unix_events, "EventLoop"):
            asyncio.unix_events.EventLoop = loop_cls
    asyncio.set_event_loop_policy(policy_cls())                # (1)
    return oxloop


def verify_loop(expected):
    """Abort loudly unless the default loop really is the one under test.

    Checked through every patched path, right after patching and before any
    test module is imported."""
    import asyncio

    want = "oxloop" if expected == "oxloop" else "asyncio"
    found = {}

    def probe(name, factory):
        loop = factory()
        try:
            found[name] = "%s.%s" % (type(loop).__module__, type(loop).__qualname__)
        finally:
            loop.close()

    probe("asyncio.new_event_loop()", asyncio.new_event_loop)
    asyncio.set_event_loop_policy(None)     # what test_asyncio's tearDown does
    probe("new_event_loop() after set_event_loop_policy(None)",
          asyncio.new_event_loop)
    probe("asyncio.DefaultEventLoopPolicy().new_event_loop()",
          lambda: asyncio.DefaultEventLoopPolicy().new_event_loop())
    probe("asyncio.SelectorEventLoop()", asyncio.SelectorEventLoop)
    if hasattr(asyncio, "EventLoop"):
        probe("asyncio.EventLoop()", asyncio.EventLoop)
    if expected == "oxloop":
        import selectors
        probe("asyncio.SelectorEventLoop(selectors.SelectSelector())",
              lambda: asyncio.SelectorEventLoop(selectors.SelectSelector()))
        # restore the explicitly-set policy state used for the run
        import oxloop
        asyncio.set_event_loop_policy(oxloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)

    bad = {k: v for k, v in found.items() if not v.startswith(want)}
    if bad:
        msg = ["FATAL: the loop under test is not %s:" % want]
        msg += ["    %s -> %s" % kv for kv in bad.items()]
        sys.stderr.write("\n".join(msg) + "\n")
        sys.stderr.flush()
        os._exit(3)
    return found


# Diagnostics only (--trace-loops, off by default, never used for baselines):
# record which loop classes each test actually RAN, to tell apart the tests
# that exercise the loop under test from those that only use test_asyncio's
# own ``utils.TestLoop`` (a BaseEventLoop with a mocked clock) or mocks.
# It wraps ``asyncio.events._set_running_loop`` (looked up at call time by
# asyncio's and oxloop's run_forever), which changes no behaviour.
LOOPS_SEEN = set()


def install_loop_tracer():
    import asyncio.events
    orig = asyncio.events._set_running_loop

    def _set_running_loop(loop):
        if loop is not None:
            LOOPS_SEEN.add("%s.%s" % (type(loop).__module__,
                                      type(loop).__qualname__))
        return orig(loop)

    asyncio.events._set_running_loop = _set_running_loop


# ---------------------------------------------------------------------------
# Result recording
# ---------------------------------------------------------------------------

def short_id(test_id):
    return test_id[len(PKG):] if test_id.startswith(PKG) else test_id


def _first_line(exc_info):
    etype, value, _ = exc_info
    text = str(value).strip().splitlines()
    return "%s: %s" % (etype.__name__, text[0]) if text else etype.__name__


class StreamingResult(unittest.TestResult):
    """Records one final outcome per test id and streams it as JSON."""

    def __init__(self, out, test_timeout, trace_loops=False):
        super().__init__()
        self.trace_loops = trace_loops
        self.out = out
        self.test_timeout = test_timeout
        self.state = {}          # test id -> (outcome, msg, tb) decided so far
        self.sub_failure = {}    # test id -> first failing subtest info

    def emit(self, **rec):
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()

    def _tb(self, test, err):
        try:
            return self._exc_info_to_string(err, test)[-TB_LIMIT:]
        except Exception:                                   # pragma: no cover
            return "".join(traceback.format_exception(*err))[-TB_LIMIT:]

    def _set(self, test, outcome, msg="", tb=""):
        tid = short_id(test.id())
        if tid not in self.state:
            self.state[tid] = (outcome, msg, tb)
        if not isinstance(test, unittest.TestCase):
            # error in setUpClass/setUpModule/tearDown*: an _ErrorHolder,
            # never started/stopped: report it right away.
            self.emit(event="end", id=tid, outcome=outcome, msg=msg, tb=tb)

    def arm(self):
        """(Re)start the watchdog: past --test-timeout, dump every thread's
        stack to stderr and exit, so the parent marks the test in progress
        as hung and resumes the module after it."""
        if self.test_timeout:
            faulthandler.dump_traceback_later(self.test_timeout, exit=True)

    def announce(self, test):
        """Called by StreamingSuite just before ``test`` is run, i.e. BEFORE
        its class fixtures and before IsolatedAsyncioTestCase sets up its
        loop (which on 3.9/3.10 happens outside startTest/stopTest)."""
        tid = short_id(test.id())
        self.state.pop(tid, None)
        self.sub_failure.pop(tid, None)
        LOOPS_SEEN.clear()
        self.arm()
        self.emit(event="start", id=tid)

    def startTest(self, test):
        super().startTest(test)

    def stopTest(self, test):
        self.arm()      # also time what follows (teardown, next fixtures)
        super().stopTest(test)
        tid = short_id(test.id())
        if tid in self.state:
            outcome, msg, tb = self.state[tid]
            if outcome == "pass" and tid in self.sub_failure:
                outcome, msg, tb = self.sub_failure[tid]
        elif tid in self.sub_failure:
            outcome, msg, tb = self.sub_failure[tid]
        else:
            outcome, msg, tb = "error", "no outcome reported by unittest", ""
        rec = dict(event="end", id=tid, outcome=outcome, msg=msg, tb=tb)
        if self.trace_loops:
            rec["loops"] = sorted(LOOPS_SEEN)
        self.emit(**rec)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._set(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "fail", _first_line(err), self._tb(test, err))

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, "error", _first_line(err), self._tb(test, err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        parent = getattr(test, "test_case", None)
        if parent is not None:
            return      # a skipped subtest: the test itself still reports
        self._set(test, "skip", str(reason))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, "xfail", _first_line(err))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is None:
            return
        tid = short_id(test.id())
        if tid in self.sub_failure:
            return
        outcome = "fail" if issubclass(err[0], test.failureException) else "error"
        msg = "%s %s" % (subtest._subDescription(), _first_line(err))
        self.sub_failure[tid] = (outcome, msg, self._tb(test, err))

    def addDuration(self, test, elapsed):   # 3.12+
        pass


class StreamingSuite(unittest.TestSuite):
    """A flat suite that announces each test as unittest takes it, so the
    watchdog and the "start" record also cover its class fixtures."""

    def __init__(self, tests, result):
        super().__init__(tests)
        self._stream_result = result

    def __iter__(self):
        for test in list(super().__iter__()):
            if isinstance(test, unittest.TestCase):
                self._stream_result.announce(test)
            yield test
        self._stream_result.arm()       # module/class teardown


# ---------------------------------------------------------------------------

def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def load_exclusions():
    sys.path.insert(0, HERE)
    try:
        from exclusions import EXCLUDED
    finally:
        sys.path.remove(HERE)
    exact, patterns = {}, []
    for key, reason in EXCLUDED.items():
        if any(c in key for c in "*?["):
            patterns.append((key, reason))
        else:
            exact[key] = reason
    return exact, patterns


def exclusion_reason(tid, exact, patterns):
    if tid in exact:
        return exact[tid]
    for pat, reason in patterns:
        if fnmatch.fnmatchcase(tid, pat):
            return reason
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop", choices=("oxloop", "asyncio"), default="oxloop")
    ap.add_argument("--module", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-file",
                    help="file with test ids (one a line) not to run again "
                         "(already done before a resume)")
    ap.add_argument("--test-timeout", type=float, default=0)
    ap.add_argument("--total-timeout", type=float, default=0,
                    help="dump all stacks this many seconds in (diagnostics "
                         "for the parent's hard timeout)")
    ap.add_argument("--trace-loops", action="store_true",
                    help="diagnostics: record the loop classes each test ran")
    args = ap.parse_args()

    t0 = time.monotonic()
    out = open(args.out, "a", encoding="utf-8")
    faulthandler.enable()
    if args.total_timeout > 0:
        faulthandler.dump_traceback_later(args.total_timeout, exit=False)

    def emit(**rec):
        out.write(json.dumps(rec) + "\n")
        out.flush()

    if args.loop == "oxloop":
        try:
            oxloop = install_oxloop()
        except BaseException:
            sys.stderr.write("FATAL: cannot install oxloop as the loop under "
                             "test:\n" + traceback.format_exc())
            sys.stderr.flush()
            os._exit(3)
        oxloop_file = getattr(oxloop, "__file__", None)
    else:
        oxloop_file = None
    found = verify_loop(args.loop)
    if args.trace_loops:
        install_loop_tracer()
    emit(event="begin", loop=args.loop, loop_types=found, oxloop=oxloop_file,
         python=sys.version.split()[0], pid=os.getpid())

    exact, patterns = load_exclusions()
    skip_ids = set()
    if args.skip_file:
        with open(args.skip_file, encoding="utf-8") as f:
            skip_ids = {line.strip() for line in f if line.strip()}

    modname = PKG + args.module
    try:
        import importlib
        mod = importlib.import_module(modname)
    except unittest.SkipTest as e:
        emit(event="module-skip", reason=str(e))
        emit(event="done", elapsed=time.monotonic() - t0)
        return 0
    except BaseException as e:
        emit(event="import-error", msg="%s: %s" % (type(e).__name__, e),
             tb=traceback.format_exc()[-TB_LIMIT:])
        return 2

    loader = unittest.TestLoader()
    suite = loader.loadTestsFromModule(mod)
    keep = []
    for t in iter_tests(suite):
        tid = short_id(t.id())
        if tid in skip_ids:
            continue
        if isinstance(t, unittest.TestCase) and \
                type(t).__name__ == "_FailedTest":
            keep.append(t)              # loader error: let it report
            continue
        reason = exclusion_reason(tid, exact, patterns)
        if reason is not None:
            emit(event="excluded", id=tid, reason=reason)
            continue
        keep.append(t)

    result = StreamingResult(out, args.test_timeout, args.trace_loops)
    StreamingSuite(keep, result).run(result)
    if args.test_timeout:
        faulthandler.cancel_dump_traceback_later()
    emit(event="done", elapsed=time.monotonic() - t0)
    out.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: a loop or thread a test leaked must not
    # turn a finished run into a hang or a crash at exit.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
