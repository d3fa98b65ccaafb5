"""Child process exit tracking without a child watcher or a SIGCHLD handler.

asyncio (3.9-3.13) learns that a subprocess exited through the policy's child watcher
(``events.get_child_watcher()``, deprecated in 3.12): ThreadedChildWatcher by default, or a
PidfdChildWatcher on 3.12+. oxloop's loop tracks its own children instead, per loop:

* Linux 5.3+: ``os.pidfd_open(pid)`` is watched with the loop's ``_add_reader``; when it turns
  readable the child has exited, ``os.waitpid(pid, WNOHANG)`` reaps it, the reader is removed
  and the pidfd closed. No thread, no signal handler, works from a loop in any thread.
* Elsewhere, or when ``pidfd_open`` fails (ENOSYS on an old kernel, EPERM under seccomp, any
  other OSError): one daemon thread per child blocks in ``os.waitpid(pid, 0)`` and hands the
  status to the loop with ``call_soon_threadsafe`` (what ThreadedChildWatcher does).

The returncode is computed as the running asyncio's watchers compute it
(``waitstatus_to_exitcode`` on 3.10+, ``_compute_returncode`` on 3.9); a child reaped by
someone else (ECHILD) reports 255 with asyncio's warning. When the loop is closed while
children are still tracked by pidfd, each is handed to a reaper thread, so none is left a
zombie.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from asyncio.log import logger
from typing import Any, Callable, Dict, Optional

from ._compat import RETURNCODE_FROM_STATUS

__all__ = ("ChildTracker", "pidfd_supported")

# The status -> returncode function of the running asyncio's own watchers.
_to_returncode: Callable[[int], int] = RETURNCODE_FROM_STATUS

_HAS_PIDFD = hasattr(os, "pidfd_open")
_thread_ids = itertools.count()


def pidfd_supported() -> bool:
    """True when this process may use pidfds (the syscall exists and is not filtered)."""
    if not _HAS_PIDFD:
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


class _PidfdChild:
    __slots__ = ("pid", "pidfd", "callback", "args")

    def __init__(self, pid: int, pidfd: int, callback: Callable[..., Any], args: tuple) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.callback = callback
        self.args = args


class ChildTracker:
    """The children of one loop whose exit is awaited. Used from the loop's thread only."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._pidfd_children: Dict[int, _PidfdChild] = {}
        # Set once pidfd_open failed with an error meaning "never available here".
        self._use_threads = not _HAS_PIDFD

    def __len__(self) -> int:
        return len(self._pidfd_children)

    def add(self, pid: int, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(pid, returncode, *args)`` in the loop's thread when ``pid`` exits."""
        pidfd: Optional[int] = None
        if not self._use_threads:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                # Already reaped by someone else: report it as a watcher would (255).
                self._loop.call_soon(self._report, pid, None, callback, args)
                return
            except OSError as exc:
                if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EACCES, errno.EINVAL):
                    self._use_threads = True  # old kernel or seccomp: for good
                pidfd = None
        if pidfd is None:
            if self._loop.get_debug():
                logger.debug("%r: child %d's exit is tracked by a waitpid thread "
                             "(os.pidfd_open is missing or refused here)", self._loop, pid)
            self._start_thread(pid, callback, args)
            return
        child = _PidfdChild(pid, pidfd, callback, args)
        self._pidfd_children[pid] = child
        try:
            self._loop._add_reader(pidfd, self._on_pidfd_readable, child)
        except BaseException:
            del self._pidfd_children[pid]
            os.close(pidfd)
            raise

    # -- pidfd ----------------------------------------------------------------------------

    def _on_pidfd_readable(self, child: _PidfdChild) -> None:
        status: Optional[int]
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            status = None  # reaped elsewhere
        else:
            if pid == 0:
                return  # not exited after all (a readable pidfd says it has)
        self._forget(child)
        self._report(child.pid, status, child.callback, child.args)

    def _forget(self, child: _PidfdChild) -> None:
        self._pidfd_children.pop(child.pid, None)
        self._loop._remove_reader(child.pidfd)
        os.close(child.pidfd)

    def _report(self, pid: int, status: Optional[int], callback: Callable[..., Any],
                args: tuple) -> None:
        if status is None:
            # The child was reaped elsewhere (e.g. by Popen.poll() or wait() in user code):
            # PidfdChildWatcher's warning and returncode.
            returncode = 255
            logger.warning(
                "child process pid %d exit status already read: "
                " will report returncode 255",
                pid)
        else:
            returncode = _to_returncode(status)
            if self._loop.get_debug():
                logger.debug("process %s exited with returncode %s", pid, returncode)
        callback(pid, returncode, *args)

    # -- thread fallback -------------------------------------------------------------------

    def _start_thread(self, pid: int, callback: Callable[..., Any], args: tuple) -> None:
        thread = threading.Thread(
            target=_wait_in_thread,
            name=f"oxloop-waitpid-{next(_thread_ids)}",
            args=(self._loop, pid, callback, args),
            daemon=True,
        )
        thread.start()

    # -- loop close ------------------------------------------------------------------------

    def close(self) -> None:
        """The loop is closing: stop watching, and hand every pending child to a reaper
        thread so none is left a zombie. Their callbacks are not called (the loop is closed)."""
        children = list(self._pidfd_children.values())
        self._pidfd_children.clear()
        for child in children:
            try:
                self._loop._remove_reader(child.pidfd)
            except Exception:
                pass  # the selector may already be closed
            os.close(child.pidfd)
            self._start_thread(child.pid, child.callback, child.args)


def _wait_in_thread(loop: Any, pid: int, callback: Callable[..., Any], args: tuple) -> None:
    """Block until ``pid`` exits, reap it, and report to ``loop`` unless it is closed."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        returncode = 255
        logger.warning("Unknown child process pid %d, will report returncode 255", pid)
    else:
        returncode = _to_returncode(status)
        if loop.get_debug():
            logger.debug("process %s exited with returncode %s", pid, returncode)
    if loop.is_closed():
        logger.warning("Loop %r that handles pid %r is closed", loop, pid)
        return
    try:
        loop.call_soon_threadsafe(callback, pid, returncode, *args)
    except RuntimeError:
        # Closed between the check and the call.
        logger.warning("Loop %r that handles pid %r is closed", loop, pid)
