"""Signals, pipes and subprocesses (asyncio/unix_events.py).

Each test runs on stock asyncio and on every oxloop loop.
"""

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers import exact, noop, run_once, run_until, Hang, alarm_guard  # noqa: F401

PY = sys.version_info[:2]
SIGNALS_TOUCHED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGALRM)


@pytest.fixture(autouse=True)
def restore_signals():
    """Keep the process's signal dispositions and wakeup fd as they were."""
    saved = {s: signal.getsignal(s) for s in SIGNALS_TOUCHED}
    if saved[signal.SIGINT] is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in saved.items():
            if h is not None:
                signal.signal(s, h)
        signal.set_wakeup_fd(wakeup)


def kill_self(sig):
    os.kill(os.getpid(), sig)


# ---------------------------------------------------------------------------
# add_signal_handler / remove_signal_handler


def test_signal_handler_runs_with_args(loop):
    got = []

    def on_signal(*args):
        got.append((args, loop.is_running()))

    assert loop.add_signal_handler(signal.SIGUSR1, on_signal, "a", 1) is None
    loop.call_soon(kill_self, signal.SIGUSR1)
    assert run_until(loop, lambda: got)
    assert got == [(("a", 1), True)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_wakes_blocked_loop(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append(1), loop.stop()))

    def sender():
        time.sleep(0.05)
        kill_self(signal.SIGUSR1)

    t = threading.Thread(target=sender)
    t0 = time.monotonic()
    t.start()
    try:
        with alarm_guard(5):
            loop.run_forever()
    finally:
        t.join()
    assert got == [1]
    assert time.monotonic() - t0 < 2
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_sent_right_after_add_signal_handler(loop):
    # Another loop (rsloop) can die here: the signal arrives before the loop runs.
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "early")
    kill_self(signal.SIGUSR1)
    assert run_until(loop, lambda: got)
    assert got == ["early"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_each_delivered_signal_runs_the_callback(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, 1)
    kill_self(signal.SIGUSR1)
    kill_self(signal.SIGUSR1)
    assert run_until(loop, lambda: len(got) == 2)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert got == [1, 1]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_two_different_signals(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")
    loop.call_soon(kill_self, signal.SIGUSR1)
    loop.call_soon(kill_self, signal.SIGUSR2)
    assert run_until(loop, lambda: len(got) == 2)
    assert sorted(got) == ["usr1", "usr2"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR2) is True


def test_replacing_signal_handler(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, got.append, "new")
    loop.call_soon(kill_self, signal.SIGUSR1)
    assert run_until(loop, lambda: got)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert got == ["new"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_signal_handler_true_false(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, noop)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_signal_handler_restores_default_disposition(loop):
    loop.add_signal_handler(signal.SIGUSR1, noop)
    assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
    loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_sigint_handler_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, noop)
    loop.remove_signal_handler(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_wakeup_fd_released_after_last_handler_removed(loop):
    assert signal.set_wakeup_fd(-1) == -1
    loop.add_signal_handler(signal.SIGUSR1, noop)
    loop.add_signal_handler(signal.SIGUSR2, noop)
    loop.remove_signal_handler(signal.SIGUSR1)
    loop.remove_signal_handler(signal.SIGUSR2)
    assert signal.set_wakeup_fd(-1) == -1


def test_removed_handler_no_longer_called(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, 1)
    loop.remove_signal_handler(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, lambda *a: got.append("python-handler"))
    kill_self(signal.SIGUSR1)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert got == ["python-handler"]


@pytest.mark.parametrize("sig", [0, -1, signal.NSIG, signal.NSIG + 100])
def test_invalid_signal_number(loop, sig):
    with pytest.raises(ValueError, match=exact(f"invalid signal number {sig}")):
        loop.add_signal_handler(sig, noop)
    with pytest.raises(ValueError, match=exact(f"invalid signal number {sig}")):
        loop.remove_signal_handler(sig)


def test_signal_not_an_int(loop):
    with pytest.raises(TypeError, match=exact("sig must be an int, not 'SIGUSR1'")):
        loop.add_signal_handler("SIGUSR1", noop)
    with pytest.raises(TypeError, match=exact("sig must be an int, not None")):
        loop.remove_signal_handler(None)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_uncatchable_signal(loop, sig):
    with pytest.raises(RuntimeError, match=exact(f"sig {sig} cannot be caught")):
        loop.add_signal_handler(sig, noop)
    assert loop.remove_signal_handler(sig) is False
    # nothing half-registered: the wakeup fd was released again
    assert signal.set_wakeup_fd(-1) == -1


def test_coroutine_function_as_signal_handler(loop):
    async def handler():
        pass

    with pytest.raises(TypeError, match=exact(
            "coroutines cannot be used with add_signal_handler()")):
        loop.add_signal_handler(signal.SIGUSR1, handler)
    coro = handler()
    try:
        with pytest.raises(TypeError, match=exact(
                "coroutines cannot be used with add_signal_handler()")):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_signal_handler_from_non_main_thread(loop):
    result = []

    def in_thread():
        try:
            signal.set_wakeup_fd(-1)
        except ValueError as e:
            expected = str(e)
        try:
            loop.add_signal_handler(signal.SIGUSR1, noop)
        except BaseException as e:
            result.append((type(e), str(e), expected))
        else:
            result.append(("no error", None, expected))

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    exc_type, msg, expected = result[0]
    assert exc_type is RuntimeError
    assert msg == expected  # 'set_wakeup_fd only works in main thread ...'
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_signal_handler_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=exact("Event loop is closed")):
        loop.add_signal_handler(signal.SIGUSR1, noop)


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, noop)
    loop.add_signal_handler(signal.SIGINT, noop)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.set_wakeup_fd(-1) == -1


def test_signal_handler_exception_goes_to_handler(loop, exc_handler_calls):
    def failing_signal_handler():
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, failing_signal_handler)
    loop.call_soon(kill_self, signal.SIGUSR1)
    assert run_until(loop, lambda: exc_handler_calls)
    ctx = exc_handler_calls[0][1]
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["message"].startswith("Exception in callback ")
    assert "failing_signal_handler" in ctx["message"]
    exc_handler_calls.clear()
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_replaces_keyboard_interrupt(loop):
    got = []
    loop.add_signal_handler(signal.SIGINT, got.append, "sigint")
    loop.call_soon(kill_self, signal.SIGINT)
    assert run_until(loop, lambda: got)
    assert got == ["sigint"]
    loop.remove_signal_handler(signal.SIGINT)


# ---------------------------------------------------------------------------
# SIGINT with Python's default handler


def test_sigint_from_call_later_raises_keyboard_interrupt(loop):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    loop.call_later(0.01, kill_self, signal.SIGINT)
    with alarm_guard(5):
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
    assert not loop.is_running()
    # the loop can run again
    out = []
    loop.call_soon(out.append, "again")
    run_once(loop)
    assert out == ["again"]


def test_sigint_while_blocked_raises_keyboard_interrupt(loop):
    far = loop.call_later(30, noop)
    main_thread = threading.main_thread().ident

    def sender():
        time.sleep(0.05)
        signal.pthread_kill(main_thread, signal.SIGINT)

    t = threading.Thread(target=sender)
    t0 = time.monotonic()
    t.start()
    try:
        with alarm_guard(5):
            with pytest.raises(KeyboardInterrupt):
                loop.run_forever()
    finally:
        t.join()
    far.cancel()
    assert time.monotonic() - t0 < 2
    assert not loop.is_running()


def test_sigint_during_run_until_complete(loop):
    async def main():
        await asyncio.sleep(5)

    loop.call_later(0.01, kill_self, signal.SIGINT)
    with alarm_guard(5):
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(main())
    assert not loop.is_running()


# ---------------------------------------------------------------------------
# pipes and subprocesses


def test_connect_read_pipe_sees_data_and_eof(loop, run):
    r, w = os.pipe()

    class Reader(asyncio.Protocol):
        def __init__(self):
            self.data = bytearray()
            self.eof = False
            self.lost = loop.create_future()

        def data_received(self, data):
            self.data += data

        def eof_received(self):
            self.eof = True

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        pipe = os.fdopen(r, "rb", 0)
        transport, proto = await loop.connect_read_pipe(Reader, pipe)
        os.write(w, b"pipe data")
        await asyncio.sleep(0.01)
        os.close(w)
        exc = await proto.lost
        return bytes(proto.data), proto.eof, exc, transport.is_closing()

    data, eof, exc, closing = run(loop, main())
    assert data == b"pipe data"
    assert eof is True
    assert exc is None
    assert closing is True


def test_connect_write_pipe(loop, run):
    r, w = os.pipe()
    try:
        async def main():
            pipe = os.fdopen(w, "wb", 0)
            transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
            transport.write(b"written ")
            transport.write(b"to a pipe")
            await asyncio.sleep(0.01)
            transport.close()
            await asyncio.sleep(0.01)

        run(loop, main())
        chunks = []
        while True:
            c = os.read(r, 100)
            if not c:
                break
            chunks.append(c)
        assert b"".join(chunks) == b"written to a pipe"
    finally:
        os.close(r)


def test_subprocess_exec(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, _ = await proc.communicate(b"child process")
        return out, proc.returncode

    assert run(loop, main()) == (b"CHILD PROCESS", 0)
