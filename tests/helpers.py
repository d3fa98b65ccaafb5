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
