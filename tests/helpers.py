"""Helpers shared by the test modules (the fixtures are in conftest.py)."""

import re
import signal


def exact(msg):
    return "^" + re.escape(msg) + "$"


def noop(*args):
    pass


def run_once(loop):
    """Run exactly one iteration of the loop."""
    loop.stop()
    loop.run_forever()


def run_until(loop, predicate, timeout=2.0):
    """Run the loop until predicate() is true (checked every iteration)."""
    deadline = loop.time() + timeout

    def check():
        if predicate() or loop.time() > deadline:
            loop.stop()
        else:
            loop.call_soon(check)

    loop.call_soon(check)
    loop.run_forever()
    return predicate()


class Hang(Exception):
    pass


class alarm_guard:
    """Raise Hang in the main thread after `seconds` (guards a blocked loop).

    A loop blocked in its wait gets EINTR and must run Python's signal handlers, which raise
    Hang out of run_forever()."""

    def __init__(self, seconds=5.0):
        self.seconds = seconds

    def __enter__(self):
        def on_alarm(signum, frame):
            raise Hang(f"loop still blocked after {self.seconds} s")

        self.old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def collect_unclosed_in_a_cycle(loop, make_resource, connect):
    """Leave a transport unclosed in a reference cycle (transport <-> protocol) over the
    resource `make_resource()` returns (a socket or a pipe file: only the transport may
    refer to it), close its loop and let the cyclic GC collect it.

    `resource` is moved to the oldest GC generation first, so the next full collection
    clears it before the transport (the order that found F6: a finalizer that ran at
    deallocation met a socket emptied by its own tp_clear). asyncio's __del__ runs before
    the GC clears anything: a ResourceWarning, never an unraisable exception (the autouse
    fixture in conftest.py fails the test on one). `connect(resource)` is a coroutine
    function returning the transport and a protocol that refers to it.
    """
    import gc
    import warnings

    resource = make_resource()
    gc.collect()
    gc.disable()
    try:
        tr, pr = loop.run_until_complete(connect(resource))
        del tr, pr, resource
        loop.close()
        with warnings.catch_warnings():
            # Recording the warnings would keep their sources (socket, transport) alive.
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    finally:
        gc.enable()
