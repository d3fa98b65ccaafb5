"""oxloop: asyncio's event loops rebuilt in Rust, as a drop-in replacement.

    import asyncio, oxloop
    oxloop.run(main())                                        # like asyncio.run
    asyncio.run(main(), loop_factory=oxloop.new_event_loop)   # Python >= 3.12
    oxloop.install()                                          # oxloop for the whole process
    loop = oxloop.SelectorEventLoop("poll")                   # epoll | poll | select | kqueue
"""

from __future__ import annotations

import asyncio

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
    """Make oxloop the event loop of this process (sets oxloop.EventLoopPolicy)."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
