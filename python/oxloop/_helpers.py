"""Slow paths the native core calls: error reports, reprs and debug-mode diagnostics.

They are in Python so that each asyncio version's own formatting is used (3.9-3.13 differ in
small ways), and they run only on errors, in debug mode, or when a handle is printed.
"""

import sys
from asyncio import base_events, format_helpers

from ._compat import FORMAT_CALLBACK_TAKES_DEBUG


def format_callback_source(callback, args, debug):
    if FORMAT_CALLBACK_TAKES_DEBUG:
        return format_helpers._format_callback_source(callback, args, debug=debug)
    return format_helpers._format_callback_source(callback, args)


def callback_error(handle, callback, args, exc):
    """Report an exception raised by a callback, as asyncio.Handle._run does."""
    loop = handle._loop
    cb = format_callback_source(callback, args, loop.get_debug())
    context = {
        "message": f"Exception in callback {cb}",
        "exception": exc,
        "handle": handle,
    }
    tb = handle._source_traceback
    if tb:
        context["source_traceback"] = tb
    loop.call_exception_handler(context)


def handle_repr(handle):
    """asyncio's Handle / TimerHandle repr."""
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    if handle._callback is not None:
        loop = handle._loop
        debug = loop.get_debug() if loop is not None else False
        info.append(format_callback_source(handle._callback, handle._args, debug))
    tb = handle._source_traceback
    if tb:
        frame = tb[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    if hasattr(type(handle), "_when"):
        # TimerHandle: asyncio shows `_when` as given (also None, or an int).
        info.insert(2 if handle._cancelled else 1, f"when={handle._when}")
    return "<{}>".format(" ".join(info))


def source_traceback():
    """The stack that created a handle (debug mode), without the native frames."""
    return format_helpers.extract_stack(sys._getframe(1))


def slow_callback(loop, handle, seconds):
    base_events.logger.warning(
        "Executing %s took %.3f seconds", base_events._format_handle(handle), seconds
    )
