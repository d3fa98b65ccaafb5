"""oxloop: asyncio's event loops rebuilt in Rust, as a drop-in replacement.

    import asyncio, oxloop
    oxloop.run(main())                                        # like asyncio.run
    asyncio.run(main(), loop_factory=oxloop.new_event_loop)   # Python >= 3.12
    # the whole program, worker processes too:  python -m oxloop run app.py  (or OXLOOP=1)
    loop = oxloop.SelectorEventLoop("poll")                   # epoll | poll | select | kqueue
"""

from __future__ import annotations

import asyncio
import warnings

from ._compat import ASYNCIO_RUN_LOOP_FACTORY
from ._oxloop import Handle, TimerHandle, __version__
from ._support import platform_support
from .runners import run
from .unix_events import EventLoopPolicy, SelectorEventLoop

__all__ = (
    "EventLoopPolicy",
    "Handle",
    "Loop",
    "SelectorEventLoop",
    "TimerHandle",
    "__version__",
    "install",
    "new_event_loop",
    "platform_support",
    "run",
)

#: uvloop-style alias.
Loop = SelectorEventLoop


def new_event_loop() -> SelectorEventLoop:
    """A new oxloop event loop with the platform's default selector."""
    return SelectorEventLoop()


def install() -> None:
    """Make oxloop the event loop of this process (sets oxloop.EventLoopPolicy).

    Event loop policies are deprecated from Python 3.14 (``asyncio.set_event_loop_policy``
    warns there), so, as ``uvloop.install()``, this warns with a DeprecationWarning from Python
    3.12 on, where ``asyncio.run(main(), loop_factory=oxloop.new_event_loop)`` exists. Instead:
    ``oxloop.run(main())`` (every Python), ``asyncio.run(main(), loop_factory=oxloop.new_event_loop)``
    or ``asyncio.Runner(loop_factory=oxloop.new_event_loop)``; for a whole program, also its
    worker processes, ``python -m oxloop run ...`` or ``OXLOOP=1`` in the environment.
    """
    if ASYNCIO_RUN_LOOP_FACTORY:  # Python 3.12+
        warnings.warn(
            "oxloop.install() is deprecated in favor of oxloop.run() starting with Python 3.12 "
            "(event loop policies are deprecated in Python 3.14): use oxloop.run(main()) or "
            "asyncio.run(main(), loop_factory=oxloop.new_event_loop); for a whole program, "
            "python -m oxloop run ... or OXLOOP=1",
            DeprecationWarning,
            stacklevel=2,
        )
    _install_policy()


def _install_policy() -> None:
    """install() without its warning: used by ``python -m oxloop run`` and ``OXLOOP=1``."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
