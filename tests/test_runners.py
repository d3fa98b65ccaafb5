"""Entry points (oxloop-only): oxloop.run, new_event_loop, install, EventLoopPolicy,
asyncio.Runner(loop_factory=...) and asyncio.run(loop_factory=...).
"""

import asyncio
import gc
import os
import selectors
import signal
import sys

import pytest

PY = sys.version_info[:2]


def count_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def ox(oxloop_module):
    """oxloop, with the event loop policy, SIGINT handler and fds checked around the test."""
    policy = asyncio.get_event_loop_policy()
    sigint = signal.getsignal(signal.SIGINT)
    gc.collect()
    before = count_fds()
    try:
        yield oxloop_module
    finally:
        asyncio.set_event_loop_policy(None)
        asyncio.set_event_loop_policy(policy)
        signal.signal(signal.SIGINT, sigint)
        gc.collect()
        after = count_fds()
        assert after == before, f"fd leak: {before} fds before the test, {after} after"


def _assert_oxloop_loop(ox, loop):
    assert isinstance(loop, ox.SelectorEventLoop), type(loop)
    assert isinstance(loop, asyncio.AbstractEventLoop)


# ---------------------------------------------------------------------------
# oxloop.run


def test_run_returns_result_on_an_oxloop_loop(ox):
    async def main(x):
        loop = asyncio.get_running_loop()
        _assert_oxloop_loop(ox, loop)
        await asyncio.sleep(0.001)
        return x + 1

    assert ox.run(main(41)) == 42


def test_run_closes_the_loop(ox):
    seen = []

    async def main():
        seen.append(asyncio.get_running_loop())

    ox.run(main())
    assert seen[0].is_closed()
    assert asyncio._get_running_loop() is None


@pytest.mark.parametrize("debug", [True, False])
def test_run_debug(ox, debug):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert ox.run(main(), debug=debug) is debug


def test_run_exception_propagates(ox):
    async def main():
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        ox.run(main())


def test_run_cancels_remaining_tasks(ox):
    events = []

    async def background():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main():
        asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)
        return "done"

    assert ox.run(main()) == "done"
    assert events == ["cancelled"]


def test_run_shuts_down_asyncgens(ox):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(True)

    gens = []

    async def main():
        g = agen()
        await g.__anext__()
        gens.append(g)

    ox.run(main())
    assert finalized == [True]


def test_run_shuts_down_default_executor(ox):
    async def main():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: "from executor")

    assert ox.run(main()) == "from executor"


def test_run_from_a_running_loop(ox):
    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            ox.run(coro)
        finally:
            coro.close()

    with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
        ox.run(main())


def test_run_non_coroutine(ox):
    with pytest.raises(ValueError, match="a coroutine was expected, got 42"):
        ox.run(42)


def test_run_keyboard_interrupt(ox):
    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def main():
        asyncio.get_running_loop().call_later(0.01, os.kill, os.getpid(), signal.SIGINT)
        await asyncio.sleep(5)

    with pytest.raises(KeyboardInterrupt):
        ox.run(main())
    assert asyncio._get_running_loop() is None


def test_run_twice(ox):
    async def main():
        return id(asyncio.get_running_loop())

    a = ox.run(main())
    b = ox.run(main())
    assert isinstance(a, int) and isinstance(b, int)


# ---------------------------------------------------------------------------
# loop construction


def test_new_event_loop(ox):
    loop = ox.new_event_loop()
    try:
        _assert_oxloop_loop(ox, loop)
        assert not loop.is_running() and not loop.is_closed()
    finally:
        loop.close()


def test_loop_alias(ox):
    assert ox.Loop is ox.SelectorEventLoop


def test_selector_event_loop_is_abstract_event_loop_subclass(ox):
    assert issubclass(ox.SelectorEventLoop, asyncio.AbstractEventLoop)


SELECTOR_ARGS = {
    "default": lambda: None,
    "epoll": lambda: "epoll",
    "poll": lambda: "poll",
    "select": lambda: "select",
    "SelectSelector": lambda: selectors.SelectSelector(),
    "PollSelector": lambda: selectors.PollSelector(),
    "EpollSelector": lambda: selectors.EpollSelector(),
    "DefaultSelector": lambda: selectors.DefaultSelector(),
}


@pytest.mark.parametrize("which", list(SELECTOR_ARGS))
def test_each_selector_makes_a_working_loop(ox, which):
    arg = SELECTOR_ARGS[which]()
    loop = ox.SelectorEventLoop(arg) if arg is not None else ox.SelectorEventLoop()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)

        async def main():
            await asyncio.sleep(0.001)
            return "ran"

        assert loop.run_until_complete(main()) == "ran"
    finally:
        loop.close()


def test_unknown_selector_name(ox):
    before = count_fds()
    with pytest.raises((ValueError, TypeError)) as ei:
        ox.SelectorEventLoop("no-such-selector")
    assert "no-such-selector" in str(ei.value)
    gc.collect()
    assert count_fds() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kqueue is missing on Linux only")
def test_kqueue_on_linux_is_refused_with_a_reason(ox):
    before = count_fds()
    with pytest.raises((NotImplementedError, ValueError, OSError)) as ei:
        ox.SelectorEventLoop("kqueue")
    assert "kqueue" in str(ei.value)
    gc.collect()
    assert count_fds() == before


def test_wrong_selector_type(ox):
    with pytest.raises((TypeError, ValueError)):
        ox.SelectorEventLoop(42)


# ---------------------------------------------------------------------------
# policy and install


def test_event_loop_policy(ox):
    assert issubclass(ox.EventLoopPolicy, asyncio.DefaultEventLoopPolicy)
    policy = ox.EventLoopPolicy()
    loop = policy.new_event_loop()
    try:
        _assert_oxloop_loop(ox, loop)
    finally:
        loop.close()


def test_install(ox):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ox.install()
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    if PY >= (3, 12):
        # As uvloop.install(): policies are deprecated in 3.14; run()/loop_factory instead.
        assert len(deprecations) == 1, caught
        msg = str(deprecations[0].message)
        assert "oxloop.run()" in msg and "loop_factory" in msg, msg
        assert deprecations[0].filename == __file__  # attributed to the caller
    else:
        assert deprecations == [], caught
    assert isinstance(asyncio.get_event_loop_policy(), ox.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        _assert_oxloop_loop(ox, loop)
    finally:
        loop.close()

    async def main():
        return asyncio.get_running_loop()

    used = asyncio.run(main())
    _assert_oxloop_loop(ox, used)
    assert used.is_closed()


@pytest.mark.skipif(PY < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_asyncio_runner_with_loop_factory(ox):
    async def main(x):
        return asyncio.get_running_loop(), x

    with asyncio.Runner(loop_factory=ox.new_event_loop) as runner:
        loop, x = runner.run(main(1))
        _assert_oxloop_loop(ox, loop)
        assert runner.get_loop() is loop
        loop2, y = runner.run(main(2))
        assert loop2 is loop and (x, y) == (1, 2)
    assert loop.is_closed()


@pytest.mark.skipif(PY < (3, 11), reason="asyncio.Runner is new in 3.11")
@pytest.mark.parametrize("name", ["epoll", "poll", "select"])
def test_asyncio_runner_with_named_selector(ox, name):
    async def main():
        await asyncio.sleep(0.001)
        return asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=lambda: ox.SelectorEventLoop(name)) as runner:
        _assert_oxloop_loop(ox, runner.run(main()))


@pytest.mark.skipif(PY < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")
def test_asyncio_run_with_loop_factory(ox):
    async def main():
        return asyncio.get_running_loop()

    loop = asyncio.run(main(), loop_factory=ox.new_event_loop)
    _assert_oxloop_loop(ox, loop)
    assert loop.is_closed()


def test_platform_page_example_runs_with_oxloop(ox):
    # The example at the end of "asyncio — Platform Support"
    # (../shared/reference/asyncio-platforms.txt), with `oxloop` in place of `asyncio` on its
    # loop line, then used for real: a pty (a character device, what the example is about).
    import os
    import pty

    selector = selectors.SelectSelector()
    loop = ox.SelectorEventLoop(selector)
    asyncio.set_event_loop(loop)
    try:
        assert asyncio.get_event_loop() is loop
        master, slave = pty.openpty()
        try:
            got = loop.create_future()
            loop.add_reader(master, lambda: got.done() or got.set_result(os.read(master, 100)))
            os.write(slave, b"tty\n")
            data = loop.run_until_complete(asyncio.wait_for(got, 5))
            assert data.startswith(b"tty")
            assert loop.remove_reader(master) is True
        finally:
            os.close(master)
            os.close(slave)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert selector.get_map() is None  # the loop closed the selector it was given, as asyncio does
