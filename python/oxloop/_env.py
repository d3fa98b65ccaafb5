"""``OXLOOP=1``: oxloop's loop for every new event loop of a process, from interpreter start.

The wheel installs ``oxloop_env.pth`` into site-packages. Python's ``site`` runs its one line at
every interpreter start; it only reads ``os.environ`` (``os`` is already imported there) and
imports this module, and so oxloop and asyncio, only when ``OXLOOP`` is set to something other
than ``""`` or ``"0"``. Then ``setup()`` sets ``oxloop.EventLoopPolicy`` (what ``install()``
does, without its 3.12+ DeprecationWarning: the user asked for this with the variable), so
``asyncio.run()``, ``asyncio.new_event_loop()``, ``asyncio.get_event_loop()`` and the
``asyncio.Runner`` without a loop_factory make oxloop loops. The variable is inherited, so
every Python process the program starts (multiprocessing's spawn and forkserver, servers'
worker processes, subprocesses) does the same. Code that builds a loop class itself
(``asyncio.SelectorEventLoop()``, ``uvloop.new_event_loop()``) is not reached.

``OXLOOP=1`` is the only value understood besides ``0``/unset; any other value, and a failure
to set oxloop up, are reported on stderr (the process then keeps asyncio's default loop: site
cannot stop an interpreter from starting).
"""

from __future__ import annotations

import os
import sys

ENV = "OXLOOP"


def setup() -> bool:
    """Set oxloop's policy if ``OXLOOP=1``; report anything else on stderr. True if set."""
    value = os.environ.get(ENV, "")
    if value in ("", "0"):
        return False
    if value != "1":
        sys.stderr.write(
            f"oxloop: {ENV}={value!r} is not understood (1: oxloop's loop for this process and "
            f"its children; 0 or unset: off): this process keeps asyncio's default loop\n"
        )
        return False
    try:
        from . import _install_policy

        _install_policy()
    except Exception as exc:  # reported, never silent: site would print a bare traceback
        sys.stderr.write(
            f"oxloop: {ENV}=1 but oxloop's loop could not be set up ({exc!r}): this process "
            f"keeps asyncio's default loop\n"
        )
        return False
    return True


def active() -> bool:
    """True if this process was set up by ``OXLOOP=1`` (the policy is oxloop's)."""
    import asyncio

    from .unix_events import EventLoopPolicy

    return os.environ.get(ENV) == "1" and isinstance(
        asyncio.get_event_loop_policy(), EventLoopPolicy
    )
