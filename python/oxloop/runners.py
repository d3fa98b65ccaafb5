"""``oxloop.run``: ``asyncio.run`` on an oxloop loop, on every supported Python."""

from __future__ import annotations

import asyncio
from asyncio import coroutines, events
from typing import Any, Callable, Coroutine, Optional, TypeVar

from ._compat import ASYNCIO_RUNNER

__all__ = ("run",)

_T = TypeVar("_T")


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: Optional[bool] = None,
    loop_factory: Optional[Callable[[], asyncio.AbstractEventLoop]] = None,
) -> _T:
    """Run a coroutine to completion on a new oxloop loop and close it, as asyncio.run does."""
    if loop_factory is None:
        from . import new_event_loop

        loop_factory = new_event_loop
    if ASYNCIO_RUNNER:  # 3.11+
        if events._get_running_loop() is not None:
            raise RuntimeError("asyncio.run() cannot be called from a running event loop")
        with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
            return runner.run(main)
    # 3.9 / 3.10: asyncio.run's own steps, with the loop from loop_factory.
    from asyncio.runners import _cancel_all_tasks  # type: ignore[attr-defined]

    if events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if not coroutines.iscoroutine(main):
        raise ValueError("a coroutine was expected, got {!r}".format(main))
    loop = loop_factory()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()
