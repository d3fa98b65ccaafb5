"""The scheduling API (asyncio/base_events.py, asyncio/events.py).

Each test runs on stock asyncio and on every oxloop loop; expectations are
stock asyncio's, version by version (3.9 ... 3.13).
"""

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import warnings

import pytest

from helpers import exact, noop, Hang, alarm_guard, run_once  # noqa: F401

PY = sys.version_info[:2]
CLOCK_RES = time.get_clock_info("monotonic").resolution


var = contextvars.ContextVar("var", default="default")


# ---------------------------------------------------------------------------
# call_soon


def test_call_soon_fifo(loop):
    out = []
    for i in range(100):
        loop.call_soon(out.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == list(range(100))


def test_call_soon_args(loop):
    out = []
    loop.call_soon(lambda *a: out.append(a), 1, "two", None)
    loop.call_soon(lambda: out.append(()))
    run_once(loop)
    assert out == [(1, "two", None), ()]


def test_call_soon_rejects_unknown_keyword(loop):
    with pytest.raises(TypeError):
        loop.call_soon(noop, x=1)


def test_call_soon_returns_handle_not_cancelled(loop):
    h = loop.call_soon(noop)
    assert h.cancelled() is False
    run_once(loop)
    assert h.cancelled() is False


def test_call_soon_context(loop):
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_soon(lambda: seen.append(var.get()))
    run_once(loop)
    assert seen == ["in-ctx", "default"]
    assert var.get() == "default"


def test_call_soon_default_context_is_a_copy(loop):
    token = var.set("outer")
    try:
        seen = []

        def cb():
            seen.append(var.get())
            var.set("changed-in-callback")

        loop.call_soon(cb)
        loop.call_soon(lambda: seen.append(var.get()))
        run_once(loop)
        assert seen == ["outer", "outer"]
        assert var.get() == "outer"
    finally:
        var.reset(token)


def test_call_soon_context_changes_persist_in_that_context(loop):
    ctx = contextvars.copy_context()
    loop.call_soon(var.set, "set-by-callback", context=ctx)
    run_once(loop)
    assert ctx[var] == "set-by-callback"
    assert var.get() == "default"


def test_callbacks_scheduled_during_run_go_to_next_iteration(loop):
    out = []

    def a():
        out.append("a")
        loop.call_soon(out.append, "b-from-a")

    loop.call_soon(a)
    loop.call_soon(out.append, "c")
    run_once(loop)
    assert out == ["a", "c"]
    run_once(loop)
    assert out == ["a", "c", "b-from-a"]


def test_stop_before_run_forever_runs_exactly_one_iteration(loop):
    out = []

    def chain(n):
        out.append(n)
        loop.call_soon(chain, n + 1)

    loop.call_soon(chain, 0)
    loop.stop()
    loop.run_forever()
    assert out == [0]
    loop.stop()
    loop.run_forever()
    assert out == [0, 1]


def test_stop_inside_callback_finishes_the_iteration(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_soon(loop.stop)
    loop.call_soon(out.append, 2)
    loop.run_forever()
    assert out == [1, 2]


def test_stop_then_run_forever_again(loop):
    out = []
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.call_soon(out.append, "again")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["again"]


def test_cancelled_handle_does_not_run(loop):
    out = []
    h = loop.call_soon(out.append, "no")
    loop.call_soon(out.append, "yes")
    h.cancel()
    assert h.cancelled() is True
    run_once(loop)
    assert out == ["yes"]


def test_cancel_twice_is_harmless(loop):
    h = loop.call_soon(noop)
    h.cancel()
    h.cancel()
    assert h.cancelled()
    run_once(loop)


def test_cancel_handle_from_earlier_callback_same_iteration(loop):
    out = []
    later = []
    loop.call_soon(lambda: later[0].cancel())
    later.append(loop.call_soon(out.append, "should-not-run"))
    loop.call_soon(out.append, "runs")
    run_once(loop)
    assert out == ["runs"]


def test_handle_repr_contains_callback_name(loop):
    def my_special_callback():
        pass

    h = loop.call_soon(my_special_callback)
    assert "my_special_callback" in repr(h)
    h.cancel()
    assert "cancelled" in repr(h)
    th = loop.call_later(10, my_special_callback)
    assert "my_special_callback" in repr(th)
    assert "when=" in repr(th)
    th.cancel()
    assert "cancelled" in repr(th)


def test_handles_are_asyncio_handles(loop):
    """What the scheduling calls return passes isinstance() against asyncio's classes, and
    `__class__` reads as asyncio's class, as for asyncio's own handles."""
    handles = [loop.call_soon(noop), loop.call_soon_threadsafe(noop)]
    timers = [loop.call_later(10, noop), loop.call_at(loop.time() + 10, noop)]
    for h in handles:
        assert isinstance(h, asyncio.Handle)
        assert isinstance(h, asyncio.events.Handle)
        assert not isinstance(h, asyncio.TimerHandle)
        assert h.__class__ is asyncio.Handle
        assert repr(h).startswith("<Handle noop() ")
    for th in timers:
        assert isinstance(th, asyncio.TimerHandle)
        assert isinstance(th, asyncio.Handle)
        assert th.__class__ is asyncio.TimerHandle
        assert repr(th).startswith("<TimerHandle when=")
    for h in handles + timers:
        h.cancel()
        assert isinstance(h, asyncio.Handle)
    run_once(loop)


def test_timer_handle_compares_with_asyncio_timer_handle(loop):
    """asyncio's TimerHandle comparisons (`isinstance(other, TimerHandle)`) take the loop's
    timers: equal deadline, callback, args and state compare equal, in both directions."""
    when = loop.time() + 10
    th = loop.call_at(when, noop, 1)
    same = asyncio.TimerHandle(when, noop, (1,), loop)
    later = asyncio.TimerHandle(when + 1, noop, (1,), loop)
    assert (same == th, th == same, same != th, th != same) == (True, True, False, False)
    assert (later == th, th == later, later != th, th != later) == (False, False, True, True)
    assert (th < later, later > th, th <= same, same >= th) == (True, True, True, True)
    assert (later < th, th > later, later <= th) == (False, False, False)
    th.cancel()
    assert (same == th, th == same) == (False, False)
    run_once(loop)


@pytest.mark.skipif(PY < (3, 12), reason="Handle.get_context() is new in 3.12")
def test_handle_get_context(loop):
    ctx = contextvars.copy_context()
    h = loop.call_soon(noop, context=ctx)
    assert h.get_context() is ctx
    th = loop.call_later(10, noop, context=ctx)
    assert th.get_context() is ctx
    th2 = loop.call_at(loop.time() + 10, noop, context=ctx)
    assert th2.get_context() is ctx
    h3 = loop.call_soon_threadsafe(noop, context=ctx)
    assert h3.get_context() is ctx
    default = loop.call_soon(noop)
    assert isinstance(default.get_context(), contextvars.Context)
    for x in (h, th, th2, h3, default):
        x.cancel()
    run_once(loop)


def test_call_soon_after_close_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=exact("Event loop is closed")):
        loop.call_soon(noop)


# ---------------------------------------------------------------------------
# call_soon_threadsafe


def test_call_soon_threadsafe_from_thread_wakes_blocked_loop(loop):
    # No timers, no fds: the loop blocks until the thread wakes it.
    def worker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    t0 = time.monotonic()
    t.start()
    try:
        with alarm_guard(5):
            loop.run_forever()
    finally:
        t.join()
    assert time.monotonic() - t0 < 2


def test_call_soon_threadsafe_wakes_loop_waiting_for_far_timer(loop):
    far = loop.call_later(30, noop)
    out = []

    def worker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(lambda *a: (out.append(a), loop.stop()), 1, 2)

    t = threading.Thread(target=worker)
    t0 = time.monotonic()
    t.start()
    try:
        with alarm_guard(5):
            loop.run_forever()
    finally:
        t.join()
    far.cancel()
    assert out == [(1, 2)]
    assert time.monotonic() - t0 < 2


def test_call_soon_threadsafe_same_thread_args_and_context(loop):
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "ts")
    h = loop.call_soon_threadsafe(lambda a, b: seen.append((a, b, var.get())), "x", 2,
                                  context=ctx)
    assert h.cancelled() is False
    run_once(loop)
    assert seen == [("x", 2, "ts")]


def test_call_soon_threadsafe_many_threads(loop):
    n_threads, per_thread = 4, 250
    total = n_threads * per_thread
    done = loop.create_future()
    got = []

    def collect(i):
        got.append(i)
        if len(got) == total:
            done.set_result(None)

    def worker(base):
        for i in range(per_thread):
            loop.call_soon_threadsafe(collect, base + i)

    threads = [threading.Thread(target=worker, args=(k * per_thread,))
               for k in range(n_threads)]
    for t in threads:
        t.start()
    try:
        with alarm_guard(8):
            loop.run_until_complete(asyncio.wait_for(done, 5))
    finally:
        for t in threads:
            t.join()
    assert sorted(got) == list(range(total))
    # per-thread FIFO
    for k in range(n_threads):
        mine = [i for i in got if k * per_thread <= i < (k + 1) * per_thread]
        assert mine == sorted(mine)


def test_call_soon_threadsafe_after_close_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=exact("Event loop is closed")):
        loop.call_soon_threadsafe(noop)


# ---------------------------------------------------------------------------
# call_later / call_at


def test_call_later_ordering_by_delay(loop):
    out = []
    loop.call_later(0.03, out.append, 3)
    loop.call_later(0.01, out.append, 1)
    loop.call_later(0.02, out.append, 2)
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert out == [1, 2, 3]


def test_call_later_args(loop):
    out = []
    loop.call_later(0.001, lambda *a: out.append(a), "a", 1)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == [("a", 1)]


def test_call_later_zero_runs_after_call_soon(loop):
    out = []
    loop.call_later(0, out.append, "later0")
    loop.call_soon(out.append, "soon")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["soon", "later0"]


def test_call_later_negative_delay_runs_soon(loop):
    out = []
    loop.call_later(-5, out.append, "neg")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["neg"]


def test_call_at_in_the_past_runs(loop):
    out = []
    loop.call_at(loop.time() - 100, out.append, "past")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["past"]


def test_call_at_ordering(loop):
    out = []
    now = loop.time()
    for i in (5, 1, 4, 2, 3):
        loop.call_at(now + i * 0.002, out.append, i)
    loop.call_at(now + 0.02, loop.stop)
    loop.run_forever()
    assert out == [1, 2, 3, 4, 5]


def test_equal_when_timers_all_run_in_one_iteration(loop):
    # Stock asyncio's heapq does not keep scheduling order for timers with an
    # equal `when` (10 timers at one `when` run as 0,2,6,5,9,8,7,1,3,4), so
    # only "all of them, together, before a later timer" is asserted here;
    # test_equal_when_timers_heapq_order checks that exact order.
    out = []
    when = loop.time() + 0.01
    for i in range(20):
        loop.call_at(when, out.append, i)
    loop.call_at(when + 0.001, out.append, "later")
    loop.call_at(when + 0.002, loop.stop)
    loop.run_forever()
    assert sorted(out[:20]) == list(range(20))
    assert out[20:] == ["later"]


class _ModelTimer:
    """asyncio's TimerHandle ordering (`self._when < other._when`) for the heapq model."""

    def __init__(self, when, tag):
        self._when = when
        self.tag = tag
        self._cancelled = False

    def __lt__(self, other):
        return self._when < other._when


def _model_run_once(scheduled, now_end, cancelled_count):
    """asyncio's _run_once steps over `_scheduled` (base_events.py), on model timers:
    returns (new scheduled list, tags that became ready, new cancelled count)."""
    import heapq
    n = len(scheduled)
    if n > 100 and cancelled_count / n > 0.5:
        scheduled = [t for t in scheduled if not t._cancelled]
        heapq.heapify(scheduled)
        cancelled_count = 0
    else:
        while scheduled and scheduled[0]._cancelled:
            cancelled_count -= 1
            heapq.heappop(scheduled)
    ready = []
    while scheduled:
        if scheduled[0]._when >= now_end:
            break
        ready.append(heapq.heappop(scheduled).tag)
    return scheduled, ready, cancelled_count


def test_equal_when_timers_heapq_order(loop):
    # asyncio keeps timers in a heapq list: equal deadlines come out in heapq's order, not
    # in scheduling order (oxloop reproduces heapq step for step).
    out = []
    when = loop.time() - 1
    for i in range(8):
        loop.call_at(when, out.append, i)
    run_once(loop)
    assert out == [0, 2, 6, 5, 7, 4, 1, 3]


def test_nan_and_equal_deadlines_fire_in_heapq_order(loop):
    # NaN compares false both ways, so where it lands in the heap decides when it fires.
    now = loop.time()
    nan = float("nan")
    whens = [now - 1, nan, now - 2, now - 1, -nan, now - 3, nan, now - 1, now - 2, now - 5]
    out = []
    for i, w in enumerate(whens):
        loop.call_at(w, out.append, i)
    model = []
    import heapq
    for i, w in enumerate(whens):
        heapq.heappush(model, _ModelTimer(w, i))
    _, want, _ = _model_run_once(model, float("inf"), 0)
    run_once(loop)
    assert out == want


@pytest.mark.parametrize("seed", range(6))
def test_scheduled_list_and_firing_order_match_heapq(loop, seed):
    # Random deadlines with ties, NaN, infinities and cancellations, over a few iterations;
    # `_scheduled` must be heapq's list (in its order) and the callbacks heapq's order.
    import heapq
    import random
    rnd = random.Random(seed)
    base = loop.time()
    choices = [base - 2, base - 1, base - 1, base + 1000, base + 1000, float("nan"),
               float("inf"), float("-inf")]
    model, handles, fired, cancelled = [], {}, [], 0
    for step in range(4):
        count = rnd.choice([5, 40, 150, 300])
        for _ in range(count):
            tag = len(handles)
            if rnd.random() < 0.7:
                w = rnd.choice(choices)
            else:  # in the past, or far enough ahead not to come due during the test
                w = base + rnd.choice([-rnd.uniform(1, 2000), rnd.uniform(1000, 3000)])
            handles[tag] = loop.call_at(w, fired.append, tag)
            heapq.heappush(model, _ModelTimer(w, tag))
        for t in model:
            if not t._cancelled and rnd.random() < (0.8 if step % 2 else 0.2):
                t._cancelled = True
                cancelled += 1
                handles[t.tag].cancel()
        assert [tag_of(handles, h) for h in loop._scheduled] == [t.tag for t in model]
        before = len(fired)
        run_once(loop)
        # Due = `when < now + clock_resolution`: only the past and -inf ones are (NaN: always).
        model, ready, cancelled = _model_run_once(model, base + 500, cancelled)
        assert fired[before:] == [t for t in ready if not handles[t].cancelled()]
        assert [tag_of(handles, h) for h in loop._scheduled] == [t.tag for t in model]
    for h in handles.values():
        h.cancel()


def tag_of(handles, h):
    for tag, x in handles.items():
        if x is h:
            return tag
    raise AssertionError(h)


def test_timer_handle_when(loop):
    t = loop.time() + 100
    h = loop.call_at(t, noop)
    assert h.when() == t
    before = loop.time()
    h2 = loop.call_later(50, noop)
    after = loop.time()
    assert before + 50 <= h2.when() <= after + 50
    h.cancel()
    h2.cancel()
    assert h.cancelled() and h2.cancelled()


def test_call_later_context(loop):
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "later-ctx")
    loop.call_later(0.001, lambda: seen.append(var.get()), context=ctx)
    loop.call_at(loop.time() + 0.001, lambda: seen.append(var.get()), context=ctx)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen == ["later-ctx", "later-ctx"]


def test_cancelled_timer_does_not_run(loop):
    out = []
    h = loop.call_later(0.005, out.append, "no")
    loop.call_later(0.01, out.append, "yes")
    h.cancel()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert out == ["yes"]


def test_cancel_timer_from_another_callback(loop):
    out = []
    h = loop.call_later(0.01, out.append, "no")
    loop.call_soon(h.cancel)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert out == []
    assert h.cancelled()


def test_cancelled_far_timer_does_not_keep_loop_asleep(loop):
    h = loop.call_later(30, noop)
    loop.call_soon(h.cancel)
    loop.call_later(0.02, loop.stop)
    t0 = time.monotonic()
    with alarm_guard(5):
        loop.run_forever()
    assert time.monotonic() - t0 < 2


def test_timer_scheduled_from_callback(loop):
    out = []

    def first():
        out.append("first")
        loop.call_later(0.005, second)

    def second():
        out.append("second")
        loop.stop()

    loop.call_later(0.001, first)
    loop.run_forever()
    assert out == ["first", "second"]


def test_timer_compaction_many_cancelled(loop):
    out = []
    base = loop.time() + 0.01
    handles = [loop.call_at(base + i * 1e-5, out.append, i) for i in range(1000)]
    for i, h in enumerate(handles):
        if i % 10:
            h.cancel()
    loop.call_at(base + 0.05, loop.stop)
    loop.run_forever()
    assert out == list(range(0, 1000, 10))
    assert all(h.cancelled() for i, h in enumerate(handles) if i % 10)


def test_cancel_all_timers_then_schedule_more(loop):
    out = []
    hs = [loop.call_later(0.5 + i * 0.001, out.append, i) for i in range(300)]
    for h in hs:
        h.cancel()
    loop.call_later(0.005, out.append, "x")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["x"]


def test_huge_delay_timer(loop):
    h = loop.call_later(1e9, noop)
    assert h.when() > loop.time() + 1e8
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    h.cancel()


# ---------------------------------------------------------------------------
# deadlines that are not ordinary floats (NaN, infinities, other number types)

NAN = float("nan")


@pytest.mark.parametrize("value", [NAN, -NAN], ids=["nan", "-nan"])
def test_nan_delay_is_due_at_once(loop, value):
    out = []
    loop.call_later(value, out.append, "later")
    loop.call_at(value, out.append, "at")
    run_once(loop)
    assert out == ["later", "at"]


def _nan_select_error(loop_factory):
    """3.13+: _run_once hands a NaN timeout to the selector, which raises this."""
    if loop_factory.selector_name in ("epoll", "poll"):  # math.ceil(timeout * 1e3)
        return ValueError, "cannot convert float NaN to integer"
    return ValueError, "Invalid value NaN (not a number)"  # select.select / kqueue.control


@pytest.mark.parametrize("value", [NAN, -NAN], ids=["nan", "-nan"])
def test_sleep_nan(loop, value):
    if PY >= (3, 13):
        with pytest.raises(ValueError, match=exact("Invalid delay: NaN (not a number)")):
            loop.run_until_complete(asyncio.sleep(value, "done"))
    else:
        assert loop.run_until_complete(asyncio.sleep(value, "done")) == "done"


@pytest.mark.parametrize("value", [NAN, -NAN], ids=["nan", "-nan"])
def test_nan_deadline_at_the_head_of_the_heap(loop_factory, loop, value):
    # The first iteration has nothing ready: its select timeout comes from the NaN head.
    # 3.9-3.12: min(max(0, nan), 86400) is 0 and the timer is due; 3.13 passes NaN to select.
    out = []
    h = loop.call_later(value, out.append, 1)
    loop.call_later(0.2, loop.stop)
    with alarm_guard(5):
        if PY >= (3, 13):
            exc, msg = _nan_select_error(loop_factory)
            with pytest.raises(exc, match=exact(msg)):
                loop.run_forever()
            assert out == []
            h.cancel()
        loop.run_forever()  # until the stop timer
    assert out == ([] if PY >= (3, 13) else [1])


def test_wait_for_nan_timeout(loop_factory, loop):
    async def main():
        await asyncio.wait_for(loop.create_future(), NAN)

    if PY >= (3, 13):
        exc, msg = _nan_select_error(loop_factory)
        with pytest.raises(exc, match=exact(msg)):
            loop.run_until_complete(main())
        # The task is still waiting, its timeout handle the NaN head: cancel it.
        for t in asyncio.all_tasks(loop):
            t.cancel()
        for h in loop._scheduled:
            h.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    else:
        with pytest.raises(asyncio.TimeoutError):
            loop.run_until_complete(main())


@pytest.mark.skipif(PY < (3, 11), reason="asyncio.timeout is 3.11+")
def test_asyncio_timeout_nan(loop_factory, loop):
    async def main():
        async with asyncio.timeout(NAN):
            await asyncio.sleep(10)

    if PY >= (3, 13):
        exc, msg = _nan_select_error(loop_factory)
        with pytest.raises(exc, match=exact(msg)):
            loop.run_until_complete(main())
        for t in asyncio.all_tasks(loop):
            t.cancel()
        for h in loop._scheduled:
            h.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    else:
        with pytest.raises(TimeoutError):
            loop.run_until_complete(main())


def test_infinite_and_huge_deadlines(loop):
    out = []
    far = [loop.call_later(float("inf"), out.append, "inf"),
           loop.call_at(float("inf"), out.append, "at-inf"),
           loop.call_later(1e308, out.append, "1e308"),
           loop.call_at(1.7e308, out.append, "at-1.7e308")]
    loop.call_later(float("-inf"), out.append, "-inf")
    loop.call_later(-1e308, out.append, "-1e308")
    loop.call_at(-1.7e308, out.append, "at--1.7e308")
    loop.call_later(0.01, loop.stop)
    with alarm_guard(5):
        loop.run_forever()
    assert out == ["-inf", "at--1.7e308", "-1e308"]
    assert far[1].when() == float("inf") and far[3].when() == 1.7e308
    for h in far:
        h.cancel()


def test_call_later_huge_int_overflows(loop):
    with pytest.raises(OverflowError, match=exact("int too large to convert to float")):
        loop.call_later(2 ** 1024, noop)
    assert loop._scheduled == []


@pytest.mark.parametrize("kind", ["Decimal", "Fraction", "index-only", "float-only"])
def test_call_later_delay_must_add_to_a_float(loop, kind):
    import decimal
    import fractions

    class IndexOnly:
        def __index__(self):
            return 0

    class FloatOnly:
        def __float__(self):
            return 0.0

    delay = {"Decimal": decimal.Decimal(0), "Fraction": fractions.Fraction(1, 1000),
             "index-only": IndexOnly(), "float-only": FloatOnly()}[kind]
    if kind == "Fraction":  # float + Fraction is a float
        h = loop.call_later(delay, noop)
        assert type(h.when()) is float
        h.cancel()
        return
    name = type(delay).__name__ if kind != "Decimal" else "decimal.Decimal"
    msg = f"unsupported operand type(s) for +: 'float' and '{name}'"
    with pytest.raises(TypeError, match=exact(msg)):
        loop.call_later(delay, noop)
    if kind == "Decimal":  # sleep(0) does not schedule; sleep(0.001) does
        with pytest.raises(TypeError, match=exact(msg)):
            loop.run_until_complete(asyncio.sleep(decimal.Decimal("0.001")))
    assert loop._scheduled == []


def test_call_later_delay_with_radd_only(loop):
    class Seconds:
        def __init__(self, s):
            self.s = s

        def __radd__(self, other):
            return other + self.s

    out = []
    h = loop.call_later(Seconds(-1), out.append, 1)
    assert type(h.when()) is float
    run_once(loop)
    assert out == [1]


def test_call_later_bool_and_int_subclass_delay(loop):
    class MyInt(int):
        pass

    out = []
    for d in (True, False, MyInt(-5), 0, -3):
        h = loop.call_later(d, out.append, d)
        assert type(h.when()) is float
    run_once(loop)
    assert sorted(out, key=repr) == sorted([False, MyInt(-5), 0, -3], key=repr)
    loop.call_later(1.5, loop.stop)
    loop.run_forever()
    assert True in out


def test_call_at_keeps_the_deadline_object(loop):
    import decimal
    import fractions

    now = loop.time()
    values = [10 ** 6, True, decimal.Decimal(10 ** 6), fractions.Fraction(10 ** 7, 3),
              int(now) - 5, now + 1000]
    handles = [loop.call_at(v, noop) for v in values]
    for v, h in zip(values, handles):
        if type(v) is float:  # an equal float (see the documented differences)
            assert h.when() == v and type(h.when()) is float
        else:
            assert h.when() is v
            assert h._when is v
        assert f"when={v}" in repr(h)
        assert hash(h) == hash(v)
    for h in handles:
        h.cancel()


def test_int_deadlines_order_and_fire(loop):
    out = []
    t = int(loop.time())
    loop.call_at(t - 1, out.append, "int-1")
    loop.call_at(float(t - 2), out.append, "float-2")
    loop.call_at(t - 3, out.append, "int-3")
    loop.call_at(True, out.append, "True")
    h = loop.call_at(t + 10 ** 6, out.append, "never")
    run_once(loop)
    assert out == ["True", "int-3", "float-2", "int-1"]
    h.cancel()


def test_fraction_deadline_fires(loop):
    import fractions

    out = []
    loop.call_at(fractions.Fraction(int(loop.time() * 1000) - 1, 1000), out.append, 1)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert out == [1]


@pytest.mark.parametrize("when", ["0", "decimal", "huge"])
def test_deadline_that_cannot_be_subtracted_fails_in_run(loop, when):
    # asyncio accepts these in call_at; _run_once then fails computing the select timeout
    # (`when - self.time()`), and, when stopping (timeout 0), in `handle._when >= end_time`
    # for a str only (Decimal and a huge int compare with a float).
    import decimal

    value = {"0": "0", "decimal": decimal.Decimal(0), "huge": 2 ** 1024}[when]
    out = []
    h = loop.call_at(value, out.append, 1)
    assert h.when() is value
    exc, msg = {
        "0": (TypeError, "unsupported operand type(s) for -: 'str' and 'float'"),
        "decimal": (TypeError, "unsupported operand type(s) for -: 'decimal.Decimal' and "
                               "'float'"),
        "huge": (OverflowError, "int too large to convert to float"),
    }[when]
    with alarm_guard(5):
        with pytest.raises(exc, match=exact(msg)):
            loop.run_forever()
        with pytest.raises(exc, match=exact(msg)):
            loop.run_forever()
        assert not loop.is_running()
        if when == "0":
            with pytest.raises(TypeError, match=exact(
                    "'>=' not supported between instances of 'str' and 'float'")):
                run_once(loop)
        else:
            run_once(loop)
    assert out == ([1] if when == "decimal" else [])
    h.cancel()
    run_once(loop)  # a cancelled head is popped without comparing
    assert loop._scheduled == []


def test_uncomparable_deadline_push_fails_but_stays_scheduled(loop):
    # heapq.heappush appends before comparing: the TypeError leaves the timer in the list,
    # with `_scheduled` still False (asyncio sets it after the push).
    h1 = loop.call_at(loop.time() + 1000, noop)
    with pytest.raises(TypeError):
        loop.call_at("x", noop)
    assert len(loop._scheduled) == 2
    bad = [h for h in loop._scheduled if h is not h1][0]
    assert bad.when() == "x" and bad._scheduled is False and h1._scheduled is True
    bad.cancel()  # not counted: it is not _scheduled
    assert loop._timer_cancelled_count == 0
    h1.cancel()
    assert loop._timer_cancelled_count == 1
    run_once(loop)  # pops h1 (cancelled, head), then the bad one, comparing nothing
    assert loop._scheduled == []


def test_timer_handle_comparisons(loop):
    import decimal

    now = loop.time()
    a = loop.call_at(now + 100, noop)
    b = loop.call_at(now + 200, noop)
    c = loop.call_at(now + 100, noop)
    d = loop.call_at(decimal.Decimal(10 ** 9), noop)
    e = loop.call_at(10 ** 9, noop)
    n1 = loop.call_at(NAN, noop)
    assert a < b and b > a and a <= c and c >= a and a == c and not (a != c)
    assert not (a < c) and not (b <= a)
    assert (d < a) is False and (a < d) is True and d == e and d <= e and d >= e
    assert not (n1 < a) and not (a < n1) and not (n1 == n1) and n1 != n1
    assert a.__lt__(1) is NotImplemented and a.__eq__("x") is NotImplemented
    with pytest.raises(TypeError):
        a < 1
    c.cancel()
    assert a != c  # _cancelled differs
    for h in (a, b, c, d, e, n1):
        h.cancel()
    run_once(loop)


def test_timer_handle_direct_construction(loop):
    import decimal

    cls = type(loop.call_later(0, noop))
    h = cls(decimal.Decimal(5), noop, (), loop)
    assert h.when() == decimal.Decimal(5) and type(h.when()) is decimal.Decimal
    assert "when=5" in repr(h)
    if PY >= (3, 11):
        h = cls(None, noop, (), loop)
        assert h.when() is None and "when=None" in repr(h)
    else:
        with pytest.raises(AssertionError):
            cls(None, noop, (), loop)
    run_once(loop)


# ---------------------------------------------------------------------------
# values stored as given


@pytest.mark.parametrize("value", ["yes", 0, 1, "", None, [1]])
def test_set_debug_stores_value_as_given(loop, value):
    loop.set_debug(value)
    assert loop.get_debug() is value or loop.get_debug() == value
    assert type(loop.get_debug()) is type(value) and type(loop._debug) is type(value)
    out = []
    loop.call_soon(out.append, 1)
    run_once(loop)
    assert out == [1]
    loop.set_debug(False)
    assert loop.get_debug() is False


@pytest.mark.parametrize("attr", ["_stopping", "_closed", "_debug"])
@pytest.mark.parametrize("value", ["x", 0, 1, "", None])
def test_private_flags_store_value_as_given(loop, attr, value):
    old = getattr(loop, attr)
    setattr(loop, attr, value)
    got = getattr(loop, attr)
    assert got == value and type(got) is type(value)
    setattr(loop, attr, old)
    assert getattr(loop, attr) is old


def test_truthy_stopping_value_stops_after_one_iteration(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop._stopping = "yes"
    loop.run_forever()
    assert out == [1] and loop._stopping is False


def test_timer_cancelled_count_as_given(loop):
    loop._timer_cancelled_count = -1
    assert loop._timer_cancelled_count == -1
    h = loop.call_later(1000, noop)
    h.cancel()
    assert loop._timer_cancelled_count == 0
    run_once(loop)  # the cancelled head is popped: -1 again
    assert loop._timer_cancelled_count == -1
    loop._timer_cancelled_count = 0


def test_clock_resolution_as_given(loop):
    import decimal
    import fractions

    out = []
    for res in (1, fractions.Fraction(1, 2), True):
        loop._clock_resolution = res
        assert loop._clock_resolution is res
        # A timer due within the resolution fires now (`when < time() + resolution`).
        loop.call_at(loop.time() + 0.3, out.append, res)
        run_once(loop)
        assert out[-1:] == [res]
    loop._clock_resolution = decimal.Decimal(0)  # float + Decimal: every _run_once fails
    with pytest.raises(TypeError, match=exact(
            "unsupported operand type(s) for +: 'float' and 'decimal.Decimal'")):
        run_once(loop)
    loop._clock_resolution = time.get_clock_info("monotonic").resolution
    run_once(loop)


def test_slow_callback_duration_of_other_number_types(loop, caplog):
    import decimal
    import fractions

    loop.set_debug(True)
    for limit in (fractions.Fraction(0), 0, False, decimal.Decimal(0)):
        loop.slow_callback_duration = limit
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.call_soon(noop)
            run_once(loop)
        assert any("Executing" in r.getMessage() for r in caplog.records), limit
        caplog.clear()
    # An object a float cannot be compared with: asyncio's TypeError out of run_forever.
    loop.slow_callback_duration = "0"
    loop.call_soon(noop)
    with pytest.raises(TypeError, match=exact(
            "'>=' not supported between instances of 'float' and 'str'")):
        run_once(loop)
    loop.slow_callback_duration = 0.1
    loop.set_debug(False)


# ---------------------------------------------------------------------------
# a context= that is not a contextvars.Context


def _schedule_with_context(loop, how, ctx, cb, *args):
    if how == "call_soon":
        return loop.call_soon(cb, *args, context=ctx)
    if how == "call_soon_threadsafe":
        return loop.call_soon_threadsafe(cb, *args, context=ctx)
    if how == "call_later":
        return loop.call_later(0, cb, *args, context=ctx)
    return loop.call_at(loop.time() - 1, cb, *args, context=ctx)


@pytest.mark.parametrize("how", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_context_not_a_context_reports_attribute_error(loop, exc_handler_calls, how):
    out = []
    h = _schedule_with_context(loop, how, 1, out.append, "x")
    assert h._context == 1
    run_once(loop)
    assert out == []
    assert len(exc_handler_calls) == 1
    ctx = exc_handler_calls[0][1]
    exc = ctx["exception"]
    assert type(exc) is AttributeError
    assert str(exc) == "'int' object has no attribute 'run'"
    assert ctx["message"].startswith("Exception in callback ")
    assert ctx["handle"] is h
    exc_handler_calls.clear()


@pytest.mark.parametrize("how", ["call_soon", "call_later"])
def test_context_object_with_run_is_called(loop, how):
    calls = []

    class FakeContext:
        def run(self, cb, *args):
            calls.append(args)
            return cb(*args)

    out = []
    _schedule_with_context(loop, how, FakeContext(), out.append, "x")
    run_once(loop)
    assert calls == [("x",)] and out == ["x"]


def test_time_agrees_with_monotonic(loop):
    for _ in range(10):
        a = time.monotonic()
        t = loop.time()
        b = time.monotonic()
        assert a - 1e-3 <= t <= b + 1e-3
    assert isinstance(loop.time(), float)


def test_time_is_non_decreasing(loop):
    last = loop.time()
    for _ in range(1000):
        now = loop.time()
        assert now >= last
        last = now


def test_1ms_timer_fires_no_earlier_than_deadline(loop):
    fired = []

    def cb(when):
        fired.append((when, loop.time()))

    for _ in range(20):
        when = loop.time() + 0.001
        loop.call_at(when, cb, when)
        start = loop.time()
        loop.call_later(0.001, lambda s=start: fired.append(("later", s, loop.time())))
        deadline = when + 0.002
        loop.call_at(deadline, loop.stop)
        loop.run_forever()
    assert len(fired) == 40
    for rec in fired:
        if rec[0] == "later":
            _, s, t = rec
            assert t - s >= 0.001 - CLOCK_RES
        else:
            when, t = rec
            assert t >= when - CLOCK_RES


def test_timer_not_grossly_late(loop):
    start = loop.time()
    fired = []
    loop.call_later(0.01, lambda: (fired.append(loop.time()), loop.stop()))
    with alarm_guard(5):
        loop.run_forever()
    assert 0.01 - CLOCK_RES <= fired[0] - start < 0.5


def test_call_later_after_close_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=exact("Event loop is closed")):
        loop.call_later(1, noop)
    with pytest.raises(RuntimeError, match=exact("Event loop is closed")):
        loop.call_at(loop.time() + 1, noop)


def test_due_timers_run_before_callbacks_they_schedule(loop):
    out = []
    now = loop.time()

    def timer_a():
        out.append("A")
        loop.call_soon(out.append, "C-from-A")

    loop.call_at(now - 1.0, timer_a)
    loop.call_at(now - 0.5, out.append, "B")
    run_once(loop)
    assert out == ["A", "B"]
    run_once(loop)
    assert out == ["A", "B", "C-from-A"]


def test_callable_kinds(loop):
    import functools

    out = []

    class Callable:
        def __call__(self, x):
            out.append(("instance", x))

    class Obj:
        def method(self, x):
            out.append(("method", x))

    loop.call_soon(functools.partial(out.append, ("partial", 1)))
    loop.call_soon(Callable(), 2)
    loop.call_soon(Obj().method, 3)
    loop.call_later(0, out.append, ("builtin", 4))
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == [("partial", 1), ("instance", 2), ("method", 3), ("builtin", 4)]


def test_cancel_releases_callback_and_args(loop):
    import gc
    import weakref

    class Payload:
        pass

    p = Payload()
    ref = weakref.ref(p)
    h = loop.call_later(100, noop, p)
    hs = loop.call_soon(noop, p)
    del p
    gc.collect()
    assert ref() is not None
    h.cancel()
    hs.cancel()
    gc.collect()
    assert ref() is None  # asyncio drops callback and args on cancel
    assert h.cancelled() and hs.cancelled()


def test_run_handle_releases_args(loop):
    import gc
    import weakref

    class Payload:
        pass

    p = Payload()
    ref = weakref.ref(p)
    loop.call_soon(noop, p)
    loop.call_later(0.001, noop, p)
    del p
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_close_drops_pending_callbacks(loop_factory):
    import gc
    import weakref

    class Payload:
        pass

    lp = loop_factory()
    p = Payload()
    ref = weakref.ref(p)
    lp.call_soon(noop, p)
    lp.call_later(100, noop, p)
    lp.call_soon_threadsafe(noop, p)
    del p
    lp.close()
    gc.collect()
    assert ref() is None


def test_closed_loop_is_garbage_collected(loop_factory):
    import gc
    import weakref

    lp = loop_factory()
    lp.call_soon(noop)
    lp.call_later(100, noop)
    lp.run_until_complete(asyncio.sleep(0))
    lp.close()
    ref = weakref.ref(lp)
    del lp
    gc.collect()
    assert ref() is None


def test_loop_time_resolution_below_1ms(loop):
    deltas = set()
    last = loop.time()
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline and len(deltas) < 5:
        now = loop.time()
        if now != last:
            deltas.add(now - last)
            last = now
    assert deltas and min(deltas) < 1e-4


# ---------------------------------------------------------------------------
# bad input


def test_call_later_str_delay_typeerror(loop):
    with pytest.raises(TypeError):
        loop.call_later("x", noop)


def test_call_later_none_delay(loop):
    if PY >= (3, 11):
        with pytest.raises(TypeError, match=exact("delay must not be None")):
            loop.call_later(None, noop)
    else:
        with pytest.raises(TypeError):
            loop.call_later(None, noop)


def test_call_at_none(loop):
    if PY >= (3, 11):
        with pytest.raises(TypeError, match=exact("when cannot be None")):
            loop.call_at(None, noop)
    else:  # 3.9/3.10: TimerHandle.__init__ asserts `when is not None`
        with pytest.raises(AssertionError):
            loop.call_at(None, noop)


def test_call_soon_non_callable_outside_debug_fails_when_run(loop, exc_handler_calls):
    # Stock asyncio only checks callables in debug mode; otherwise the
    # TypeError surfaces when the handle runs, through the exception handler.
    loop.set_debug(False)
    loop.call_soon(42)
    run_once(loop)
    assert len(exc_handler_calls) == 1
    ctx = exc_handler_calls[0][1]
    assert isinstance(ctx["exception"], TypeError)
    assert ctx["message"].startswith("Exception in callback ")
    exc_handler_calls.clear()


def test_run_until_complete_non_awaitable(loop):
    with pytest.raises(TypeError, match="An asyncio.Future, a coroutine or an awaitable "
                                        "is required"):
        loop.run_until_complete(42)
    assert not loop.is_running()


# ---------------------------------------------------------------------------
# run_forever / run_until_complete / stop / close


def test_run_until_complete_coroutine(loop):
    async def coro(x):
        await asyncio.sleep(0)
        return x * 2

    assert loop.run_until_complete(coro(21)) == 42
    assert not loop.is_running()


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_later(0.001, fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_done_future(loop):
    fut = loop.create_future()
    fut.set_result(7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_awaitable_object(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_exception_propagates(loop):
    async def boom():
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(boom())
    assert not loop.is_running()


def test_run_until_complete_future_of_other_loop(loop):
    other = asyncio.SelectorEventLoop()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError, match=exact(
                "The future belongs to a different loop than the one specified "
                "as the loop argument")):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_future_of_other_loop_same_kind(loop_factory, loop):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError, match="The future belongs to a different loop"):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_stopped_before_done(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match=exact("Event loop stopped before Future completed.")):
        loop.run_until_complete(fut)
    fut.cancel()


def test_run_forever_while_running(loop):
    errors = []

    def cb():
        try:
            loop.run_forever()
        except RuntimeError as e:
            errors.append(str(e))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["This event loop is already running"]


def test_run_until_complete_while_running(loop):
    async def inner():
        return 1

    async def outer():
        coro = inner()
        try:
            loop.run_until_complete(coro)
        except RuntimeError as e:
            return str(e)
        finally:
            coro.close()

    assert loop.run_until_complete(outer()) == "This event loop is already running"


@pytest.mark.parametrize("method", ["run_forever", "run_until_complete"])
def test_run_other_loop_of_same_kind_inside_running_loop(loop_factory, loop, method):
    # One call per test: on 3.13.0, a run_forever() refused by _check_running
    # still runs its cleanup and clears the running loop (a CPython bug).
    other = loop_factory()
    try:
        async def main():
            fut = other.create_future()
            args = (fut,) if method == "run_until_complete" else ()
            with pytest.raises(RuntimeError, match=exact(
                    "Cannot run the event loop while another loop is running")):
                getattr(other, method)(*args)
            return "ok"

        assert loop.run_until_complete(main()) == "ok"
    finally:
        other.close()


def test_run_stock_loop_inside_running_loop(loop):
    other = asyncio.SelectorEventLoop()
    try:
        async def main():
            with pytest.raises(RuntimeError, match=exact(
                    "Cannot run the event loop while another loop is running")):
                other.run_forever()

        loop.run_until_complete(main())
    finally:
        other.close()


def test_run_loop_inside_running_stock_loop(loop):
    other = asyncio.SelectorEventLoop()
    try:
        async def main():
            with pytest.raises(RuntimeError, match=exact(
                    "Cannot run the event loop while another loop is running")):
                loop.run_forever()

        other.run_until_complete(main())
    finally:
        other.close()


def test_close_while_running(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as e:
            errors.append(str(e))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_close_twice_is_fine(loop):
    loop.close()
    loop.close()
    assert loop.is_closed()


def test_is_running_and_is_closed(loop):
    seen = []
    assert loop.is_running() is False
    assert loop.is_closed() is False
    loop.call_soon(lambda: seen.append(loop.is_running()))
    run_once(loop)
    assert seen == [True]
    assert loop.is_running() is False
    loop.close()
    assert loop.is_closed() is True
    assert loop.is_running() is False


def test_running_loop_is_set_while_running(loop):
    seen = []

    def cb():
        seen.append(asyncio.get_running_loop() is loop)
        seen.append(asyncio.get_event_loop() is loop)
        seen.append(asyncio._get_running_loop() is loop)

    loop.call_soon(cb)
    run_once(loop)
    assert seen == [True, True, True]
    assert asyncio._get_running_loop() is None


def test_asyncgen_hooks_restored_after_run(loop):
    before = sys.get_asyncgen_hooks()
    inside = []
    loop.call_soon(lambda: inside.append(sys.get_asyncgen_hooks()))
    run_once(loop)
    assert sys.get_asyncgen_hooks() == before
    assert inside[0].firstiter is not None
    assert inside[0].finalizer is not None


def test_loop_repr(loop):
    r = repr(loop)
    assert "running=False" in r and "closed=False" in r
    loop.close()
    assert "closed=True" in repr(loop)


def _close_coro(c):
    c.close()


CLOSED_LOOP_CALLS = {
    "call_soon": lambda loop: loop.call_soon(noop),
    "call_soon_threadsafe": lambda loop: loop.call_soon_threadsafe(noop),
    "call_later": lambda loop: loop.call_later(1, noop),
    "call_at": lambda loop: loop.call_at(loop.time() + 1, noop),
    "run_forever": lambda loop: loop.run_forever(),
    "run_until_complete": "coro",
    "create_task": "coro",
    "run_in_executor": lambda loop: loop.run_in_executor(None, noop),
    "add_reader": "fd",
    "add_writer": "fd",
}


@pytest.mark.parametrize("api", sorted(CLOSED_LOOP_CALLS))
def test_api_on_closed_loop_raises(loop, api):
    loop.close()
    how = CLOSED_LOOP_CALLS[api]
    if how == "coro":
        async def c():
            pass

        coro = c()
        try:
            with pytest.raises(RuntimeError, match=exact("Event loop is closed")):
                getattr(loop, api)(coro)
        finally:
            coro.close()
    elif how == "fd":
        a, b = socket.socketpair()
        try:
            with pytest.raises(RuntimeError, match=exact("Event loop is closed")):
                getattr(loop, api)(a.fileno(), noop)
        finally:
            a.close()
            b.close()
    else:
        with pytest.raises(RuntimeError, match=exact("Event loop is closed")):
            how(loop)


def test_remove_reader_writer_on_closed_loop_return_false(loop):
    a, b = socket.socketpair()
    try:
        loop.add_reader(a.fileno(), noop)
        loop.close()
        assert loop.remove_reader(a.fileno()) is False
        assert loop.remove_writer(a.fileno()) is False
    finally:
        a.close()
        b.close()


def test_create_future_on_closed_loop_allowed(loop):
    # stock asyncio does not check: create_future() works on a closed loop
    loop.close()
    fut = loop.create_future()
    assert fut.get_loop() is loop


# ---------------------------------------------------------------------------
# BaseException handling, exception handler


def test_keyboard_interrupt_in_callback_run_forever(loop):
    def cb():
        raise KeyboardInterrupt

    loop.call_soon(cb)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    out = []
    loop.call_soon(out.append, "again")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["again"]


def test_keyboard_interrupt_in_timer_callback_run_until_complete(loop):
    def cb():
        raise KeyboardInterrupt

    async def main():
        await asyncio.sleep(0.5)

    loop.call_later(0.001, cb)
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(main())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_system_exit_in_callback(loop):
    def cb():
        raise SystemExit(3)

    loop.call_soon(cb)
    with pytest.raises(SystemExit) as ei:
        loop.run_forever()
    assert ei.value.code == 3
    assert not loop.is_running()
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_system_exit_in_callback_run_until_complete(loop):
    fut = loop.create_future()

    def cb():
        raise SystemExit

    loop.call_soon(cb)
    with pytest.raises(SystemExit):
        loop.run_until_complete(fut)
    assert not loop.is_running()
    loop.call_soon(fut.set_result, 5)
    assert loop.run_until_complete(fut) == 5


def test_keyboard_interrupt_in_coroutine(loop):
    async def main():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(main())
    assert not loop.is_running()


def test_remaining_callbacks_run_after_keyboard_interrupt(loop):
    out = []

    def cb():
        raise KeyboardInterrupt

    loop.call_soon(cb)
    loop.call_soon(out.append, "next")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    run_once(loop)
    assert out == ["next"]


def test_exception_in_callback_goes_to_handler(loop, exc_handler_calls):
    from asyncio import format_helpers

    out = []

    def failing_callback(x):
        raise ValueError(f"bad {x}")

    h = loop.call_soon(failing_callback, 1)
    loop.call_soon(out.append, "continued")
    run_once(loop)
    assert out == ["continued"]
    assert len(exc_handler_calls) == 1
    got_loop, ctx = exc_handler_calls[0]
    assert got_loop is loop
    assert ctx["message"] == ("Exception in callback "
                              + format_helpers._format_callback_source(failing_callback, (1,)))
    assert "failing_callback" in ctx["message"]
    assert isinstance(ctx["exception"], ValueError)
    assert str(ctx["exception"]) == "bad 1"
    assert ctx["handle"] is h
    exc_handler_calls.clear()


def test_callback_error_context_keys(loop, exc_handler_calls):
    def fails():
        raise ValueError

    loop.set_debug(False)
    loop.call_soon(fails)
    run_once(loop)
    assert set(exc_handler_calls[0][1]) == {"message", "exception", "handle"}
    exc_handler_calls.clear()


def test_callback_error_context_in_debug_mode(loop, exc_handler_calls):
    def fails_in_debug():
        raise ValueError

    loop.set_debug(True)
    h = loop.call_soon(fails_in_debug)
    run_once(loop)
    ctx = exc_handler_calls[0][1]
    assert set(ctx) == {"message", "exception", "handle", "source_traceback"}
    assert ctx["handle"] is h
    # the traceback ends where the handle was created: in this test
    assert ctx["source_traceback"][-1][2] == "test_callback_error_context_in_debug_mode"
    exc_handler_calls.clear()


def test_exception_in_timer_callback_goes_to_handler(loop, exc_handler_calls):
    def failing_timer():
        raise RuntimeError("timer failed")

    h = loop.call_later(0.001, failing_timer)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert len(exc_handler_calls) == 1
    ctx = exc_handler_calls[0][1]
    assert ctx["message"].startswith("Exception in callback ")
    assert "failing_timer" in ctx["message"]
    assert isinstance(ctx["exception"], RuntimeError)
    assert ctx["handle"] is h
    exc_handler_calls.clear()


def test_base_exception_in_callback_goes_to_handler(loop, exc_handler_calls):
    class MyBase(BaseException):
        pass

    def cb():
        raise MyBase()

    loop.call_soon(cb)
    run_once(loop)
    assert len(exc_handler_calls) == 1
    assert isinstance(exc_handler_calls[0][1]["exception"], MyBase)
    exc_handler_calls.clear()


def test_set_exception_handler_non_callable(loop):
    with pytest.raises(TypeError, match=exact("A callable object or None is expected, got 42")):
        loop.set_exception_handler(42)


def test_get_exception_handler(loop):
    def handler(loop, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_default_exception_handler_logs_error(loop, caplog):
    loop.set_exception_handler(None)
    exc = ValueError("the-value")
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_exception_handler({"message": "something broke", "exception": exc})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    assert recs[0].levelno == logging.ERROR
    assert recs[0].getMessage().startswith("something broke")
    assert recs[0].exc_info[1] is exc


def test_default_exception_handler_direct_call(loop, caplog):
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.default_exception_handler({"message": "direct", "extra_key": 123})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    assert recs[0].levelno == logging.ERROR
    msg = recs[0].getMessage()
    assert msg.startswith("direct")
    assert "extra_key: 123" in msg


def test_default_exception_handler_without_message(loop, caplog):
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.default_exception_handler({})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert recs[0].getMessage().startswith("Unhandled exception in event loop")


def test_callback_exception_with_default_handler_is_logged(loop, caplog):
    loop.set_exception_handler(None)

    def cb_that_fails():
        raise KeyError("k")

    loop.call_soon(cb_that_fails)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run_once(loop)
    recs = [r for r in caplog.records if r.name == "asyncio" and r.levelno == logging.ERROR]
    assert len(recs) == 1
    assert recs[0].getMessage().startswith("Exception in callback ")
    assert "cb_that_fails" in recs[0].getMessage()
    assert isinstance(recs[0].exc_info[1], KeyError)


def test_call_exception_handler_with_raising_handler(loop, caplog):
    def bad_handler(loop, ctx):
        raise ZeroDivisionError("handler bug")

    loop.set_exception_handler(bad_handler)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_exception_handler({"message": "original"})  # must not raise
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    assert recs[0].levelno == logging.ERROR
    assert recs[0].getMessage().startswith("Unhandled error in exception handler")
    assert isinstance(recs[0].exc_info[1], ZeroDivisionError)


def test_raising_handler_does_not_stop_loop(loop, caplog):
    def bad_handler(loop, ctx):
        raise ZeroDivisionError("handler bug")

    loop.set_exception_handler(bad_handler)
    out = []

    def cb():
        raise ValueError

    loop.call_soon(cb)
    loop.call_soon(out.append, "after")
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run_once(loop)
    assert out == ["after"]
    assert any("Unhandled error in exception handler" in r.getMessage()
               for r in caplog.records)


def test_custom_handler_receives_loop_and_context(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append((lp, ctx)))
    ctx = {"message": "m", "custom": object()}
    loop.call_exception_handler(ctx)
    assert got[0][0] is loop
    assert got[0][1]["message"] == "m"
    assert got[0][1]["custom"] is ctx["custom"]


# ---------------------------------------------------------------------------
# futures and tasks


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    loop.call_soon(fut.set_result, 1)
    assert loop.run_until_complete(fut) == 1


def test_create_task_and_name(loop):
    async def coro():
        return "r"

    task = loop.create_task(coro(), name="my-task")
    assert isinstance(task, asyncio.Task)
    assert task.get_name() == "my-task"
    assert task.get_loop() is loop
    assert loop.run_until_complete(task) == "r"


def test_create_task_default_name(loop):
    async def coro():
        pass

    task = loop.create_task(coro())
    assert re.match(r"^Task-\d+$", task.get_name())
    loop.run_until_complete(task)


@pytest.mark.skipif(PY < (3, 11), reason="create_task(context=) is new in 3.11")
def test_create_task_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "task-ctx")

    async def coro():
        return var.get()

    task = loop.create_task(coro(), context=ctx)
    assert loop.run_until_complete(task) == "task-ctx"
    assert var.get() == "default"


def test_task_factory_two_args(loop):
    calls = []

    def factory(lp, coro):
        calls.append(lp)
        return asyncio.Task(coro, loop=lp)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return 5

    task = loop.create_task(coro(), name="named")
    assert calls == [loop]
    assert task.get_name() == "named"
    assert loop.run_until_complete(task) == 5
    # run_until_complete of a coroutine goes through the factory too
    assert loop.run_until_complete(coro()) == 5
    assert len(calls) == 2
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


@pytest.mark.skipif(PY < (3, 11), reason="task factories get context= since 3.11")
def test_task_factory_gets_context_kwarg(loop):
    got = []

    def factory(lp, coro, **kwargs):
        got.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()
    ctx.run(var.set, "factory-ctx")

    async def coro():
        return var.get()

    t1 = loop.create_task(coro(), name="a")
    t2 = loop.create_task(coro(), name="b", context=ctx)
    assert got == [{}, {"context": ctx}]
    assert loop.run_until_complete(t1) == "default"
    assert loop.run_until_complete(t2) == "factory-ctx"


def test_set_task_factory_non_callable(loop):
    with pytest.raises(TypeError, match=exact("task factory must be a callable or None")):
        loop.set_task_factory(1)


def test_create_task_from_other_thread_not_needed_tasks_run(loop):
    # many tasks with sleeps interleave
    order = []

    async def worker(i):
        for step in range(3):
            order.append((i, step))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(worker(i) for i in range(3)))

    loop.run_until_complete(main())
    assert order == [(i, s) for s in range(3) for i in range(3)]


def test_task_cancel(loop):
    async def sleeper():
        await asyncio.sleep(10)

    async def main():
        t = loop.create_task(sleeper())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return t.cancelled()

    assert loop.run_until_complete(main()) is True


def test_sleep_timing(loop):
    async def main():
        t0 = loop.time()
        await asyncio.sleep(0.02)
        return loop.time() - t0

    dt = loop.run_until_complete(main())
    assert 0.02 - CLOCK_RES <= dt < 1


def test_wait_for_timeout(loop):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_current_task_and_all_tasks(loop):
    async def main():
        me = asyncio.current_task()
        assert me is asyncio.current_task(loop)
        assert me in asyncio.all_tasks(loop)
        return me

    task = loop.create_task(main())
    assert loop.run_until_complete(task) is task


# ---------------------------------------------------------------------------
# debug mode


def test_get_set_debug(loop):
    from asyncio import coroutines

    assert loop.get_debug() is bool(coroutines._is_debug_mode())
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02

    def slow_callback():
        time.sleep(0.05)

    loop.call_soon(slow_callback)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_once(loop)
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert any(m.startswith("Executing ") and " took " in m and "slow_callback" in m
               for m in msgs), msgs


def test_slow_callback_message_format(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_cb():
        time.sleep(0.02)

    loop.call_soon(slow_cb)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_once(loop)
    msgs = [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()]
    assert len(msgs) == 1
    assert re.match(r"^Executing <Handle .*slow_cb\(\).*> took \d+\.\d{3} seconds$", msgs[0]), msgs


def test_debug_handle_repr_has_creation_site(loop):
    loop.set_debug(True)
    h = loop.call_soon(noop)
    assert "created at " in repr(h) and "test_base_events.py" in repr(h)
    th = loop.call_later(10, noop)
    assert "created at " in repr(th) and "test_base_events.py" in repr(th)
    th.cancel()
    run_once(loop)


def test_slow_callback_not_logged_outside_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.001
    loop.call_soon(time.sleep, 0.01)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_once(loop)
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_debug_call_soon_from_other_thread_raises(loop):
    loop.set_debug(True)
    errors = []

    def other_thread():
        try:
            loop.call_soon(noop)
        except RuntimeError as e:
            errors.append(str(e))
        loop.call_soon_threadsafe(loop.stop)

    def start():
        threading.Thread(target=other_thread).start()

    loop.call_soon(start)
    with alarm_guard(5):
        loop.run_forever()
    assert errors == ["Non-thread-safe operation invoked on an event loop other "
                      "than the current one"]


def test_debug_call_later_from_other_thread_raises(loop):
    loop.set_debug(True)
    errors = []

    def other_thread():
        for fn in (lambda: loop.call_later(1, noop),
                   lambda: loop.call_at(loop.time() + 1, noop)):
            try:
                fn()
            except RuntimeError as e:
                errors.append(str(e))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other_thread).start())
    with alarm_guard(5):
        loop.run_forever()
    assert errors == ["Non-thread-safe operation invoked on an event loop other "
                      "than the current one"] * 2


def test_debug_call_soon_from_other_thread_allowed_when_not_running(loop):
    # _check_thread only applies while the loop runs
    loop.set_debug(True)
    errors = []

    def other_thread():
        try:
            loop.call_soon(noop)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors == []
    run_once(loop)


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_debug_coroutine_function_rejected(loop, method):
    loop.set_debug(True)

    async def coro_fn():
        pass

    args = {"call_soon": (), "call_soon_threadsafe": (), "call_later": (1,),
            "call_at": (loop.time() + 1,)}[method]
    # call_later() delegates to call_at(), so stock asyncio names call_at()
    name = "call_at" if method == "call_later" else method
    with pytest.raises(TypeError, match=exact(f"coroutines cannot be used with {name}()")):
        getattr(loop, method)(*args, coro_fn)
    coro = coro_fn()
    try:
        with pytest.raises(TypeError, match=exact(f"coroutines cannot be used with {name}()")):
            getattr(loop, method)(*args, coro)
    finally:
        coro.close()


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_debug_non_callable_rejected(loop, method):
    loop.set_debug(True)
    args = {"call_soon": (), "call_soon_threadsafe": (), "call_later": (1,),
            "call_at": (loop.time() + 1,)}[method]
    name = "call_at" if method == "call_later" else method
    with pytest.raises(TypeError, match=exact(
            f"a callable object was expected by {name}(), got 42")):
        getattr(loop, method)(*args, 42)


def test_debug_run_in_executor_coroutine_function_rejected(loop):
    loop.set_debug(True)

    async def coro_fn():
        pass

    with pytest.raises(TypeError, match=exact("coroutines cannot be used with run_in_executor()")):
        loop.run_in_executor(None, coro_fn)


def test_debug_handle_repr_keeps_callback_after_cancel(loop):
    loop.set_debug(True)

    def named_cb():
        pass

    h = loop.call_soon(named_cb)
    h.cancel()
    r = repr(h)
    assert "cancelled" in r and "named_cb" in r
    run_once(loop)


# ---------------------------------------------------------------------------
# async generators, executors, DNS


def test_shutdown_asyncgens_finalizes_suspended_generator(loop, run):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(True)

    async def start():
        g = agen()
        assert await g.__anext__() == 1
        return g

    g = run(loop, start())
    assert finalized == []
    assert run(loop, loop.shutdown_asyncgens()) is None
    assert finalized == [True]
    del g


def test_shutdown_asyncgens_without_generators(loop, run):
    assert run(loop, loop.shutdown_asyncgens()) is None


def test_asyncgen_collected_while_running_is_closed(loop, run):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(True)

    async def main():
        g = agen()
        await g.__anext__()
        del g
        import gc
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    run(loop, main())
    assert finalized == [True]


def test_run_in_executor_default(loop, run):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident()

    result, tid = run(loop, loop.run_in_executor(None, work, 2, 3))
    assert result == 5
    assert tid != main_thread
    assert run(loop, loop.shutdown_default_executor()) is None


def test_run_in_executor_custom(loop, run):
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="custom-ex")
    try:
        name = run(loop, loop.run_in_executor(ex, lambda: threading.current_thread().name))
        assert name.startswith("custom-ex")
    finally:
        ex.shutdown(wait=True)


def test_run_in_executor_exception(loop, run):
    def fail():
        raise LookupError("from thread")

    with pytest.raises(LookupError, match="from thread"):
        run(loop, loop.run_in_executor(None, fail))
    run(loop, loop.shutdown_default_executor())


def test_run_in_executor_returns_asyncio_future(loop, run):
    fut = loop.run_in_executor(None, lambda: 1)
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert run(loop, fut) == 1
    run(loop, loop.shutdown_default_executor())


def test_shutdown_default_executor_then_run_in_executor(loop, run):
    run(loop, loop.run_in_executor(None, noop))
    run(loop, loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match=exact("Executor shutdown has been called")):
        loop.run_in_executor(None, noop)


def test_shutdown_default_executor_without_executor(loop, run):
    assert run(loop, loop.shutdown_default_executor()) is None


def test_set_default_executor(loop, run):
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="my-default")
    loop.set_default_executor(ex)
    try:
        name = run(loop, loop.run_in_executor(None, lambda: threading.current_thread().name))
        assert name.startswith("my-default")
    finally:
        run(loop, loop.shutdown_default_executor())
        ex.shutdown(wait=True)


class _InlineExecutor(concurrent.futures.Executor):
    def submit(self, fn, *args, **kwargs):
        f = concurrent.futures.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:
            f.set_exception(e)
        return f


def test_set_default_executor_not_thread_pool(loop):
    ex = _InlineExecutor()
    if PY >= (3, 11):
        with pytest.raises(TypeError, match=exact("executor must be ThreadPoolExecutor instance")):
            loop.set_default_executor(ex)
    else:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            loop.set_default_executor(ex)
        assert any(issubclass(x.category, DeprecationWarning)
                   and "ThreadPoolExecutor" in str(x.message) for x in w)
        assert loop.run_until_complete(loop.run_in_executor(None, lambda: 9)) == 9


def test_getaddrinfo_matches_socket(loop, run):
    got = run(loop, loop.getaddrinfo("localhost", 80))
    assert got == socket.getaddrinfo("localhost", 80)
    got = run(loop, loop.getaddrinfo("127.0.0.1", 8080, family=socket.AF_INET,
                                     type=socket.SOCK_STREAM))
    assert got == socket.getaddrinfo("127.0.0.1", 8080, socket.AF_INET, socket.SOCK_STREAM)
    run(loop, loop.shutdown_default_executor())


def test_getaddrinfo_error(loop, run):
    with pytest.raises(socket.gaierror):
        run(loop, loop.getaddrinfo("no-such-host.invalid", 80))
    run(loop, loop.shutdown_default_executor())


def test_getnameinfo_matches_socket(loop, run):
    got = run(loop, loop.getnameinfo(("127.0.0.1", 80)))
    assert got == socket.getnameinfo(("127.0.0.1", 80), 0)
    got = run(loop, loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
    assert got == ("127.0.0.1", "80")
    run(loop, loop.shutdown_default_executor())


# ---------------------------------------------------------------------------
# A busy loop (a callback always ready) still polls for what it watches.
# oxloop leaves out the zero-timeout poll when nothing but asyncio's self-pipe is watched and
# no signal handler is installed; these check that it never leaves out one that matters.


def _busy_ticks(loop, limit=100000):
    """Starts a call_soon chain counting iterations; returns the counter list."""
    tick = [0]

    def ticker():
        tick[0] += 1
        if tick[0] < limit:
            loop.call_soon(ticker)

    loop.call_soon(ticker)
    return tick


def test_busy_loop_sees_ready_fd_next_iteration(loop):
    a, b = socket.socketpair()
    try:
        seen = []
        tick = _busy_ticks(loop)

        def start():
            loop.add_reader(a.fileno(), lambda: seen.append(tick[0]) or loop.remove_reader(a.fileno()))
            b.send(b"x")
            seen.append(tick[0])

        def check():
            if len(seen) == 2:
                tick[0] = 10**9
                loop.stop()
            elif tick[0] < 10**6:
                loop.call_soon(check)

        loop.call_soon(start)
        loop.call_soon(check)
        loop.run_forever()
        # asyncio: the data is seen by the very next iteration's poll.
        assert seen[1] - seen[0] == 1, seen
    finally:
        a.close()
        b.close()


def test_busy_loop_runs_signal_handler(loop):
    got = []
    tick = _busy_ticks(loop, limit=10**6)
    loop.add_signal_handler(signal.SIGUSR1, lambda: got.append(tick[0]))
    try:
        sent = []

        def send():
            sent.append(tick[0])
            os.kill(os.getpid(), signal.SIGUSR1)

        def check():
            if got or tick[0] > 10000:
                tick[0] = 10**9
                loop.stop()
            else:
                loop.call_soon(check)

        loop.call_soon(send)
        loop.call_soon(check)
        with alarm_guard(10):
            loop.run_forever()
        assert got, "the signal handler never ran while the loop was busy"
        # asyncio: the self-pipe is read by the next poll, the handler runs one iteration later.
        assert got[0] - sent[0] <= 3, (sent, got)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


def test_busy_loop_after_signal_handler_removed(loop):
    # Signal handlers installed and removed again: the loop goes on running callbacks.
    tick = _busy_ticks(loop, limit=1000)
    loop.add_signal_handler(signal.SIGUSR1, noop)
    assert loop.remove_signal_handler(signal.SIGUSR1)
    loop.call_later(0.5, loop.stop)
    done = []
    loop.call_soon(lambda: done.append(1))
    loop.run_forever()
    assert done == [1] and tick[0] == 1000


# ---------------------------------------------------------------------------
# oxloop keeps queued call_soon handles out of the cyclic GC until they leave the queue:
# cycles through a handle must still be collected.


class _Holder:
    pass


@pytest.mark.parametrize("how", ["run", "cancelled", "closed", "threadsafe"])
def test_cycle_through_call_soon_handle_is_collected(loop_factory, how):
    import gc
    import weakref

    loop = loop_factory()
    try:
        holder = _Holder()
        call = loop.call_soon_threadsafe if how == "threadsafe" else loop.call_soon
        holder.h = call(lambda hd=holder: None)  # holder -> handle -> callback -> holder
        ref = weakref.ref(holder)
        if how == "cancelled":
            holder.h.cancel()
            holder.again = loop.call_soon(lambda hd=holder: None)
        if how != "closed":
            loop.call_soon(loop.stop)
            loop.run_forever()
    finally:
        loop.close()
    del holder
    gc.collect()
    assert ref() is None, "a cycle through a handle was not collected"


def test_many_queued_handles_with_cycles_collected(loop):
    import gc
    import weakref

    refs = []
    for _ in range(3000):
        holder = _Holder()
        holder.h = loop.call_soon(lambda hd=holder: None)
        refs.append(weakref.ref(holder))
    del holder
    gc.collect()  # while queued: all alive (the loop holds them)
    assert all(r() is not None for r in refs)
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
