"""What oxloop reads off the running asyncio, and what it decides by Python version: one place.

oxloop reproduces the asyncio of the running Python (3.9-3.13), so its code branches on facts
about that asyncio: a message asyncio raises, a parameter a private method takes, a line in a
transport's source. Each fact is a constant here, computed once at import, with the asyncio code
it comes from. Nothing else in oxloop looks at ``sys.version_info`` or at asyncio's source,
bytecode or signatures; the native code reads its flags from this module (``compat.rs``).

Kinds of rule:

* version rules: decisions of oxloop's own, by version (``NATIVE_TLS_SUPPORTED``);
* probes of asyncio's objects: attributes, signatures, names and constants in a function's
  bytecode, lines of its source. A probe knows every shape of that code in the supported
  versions; when the running asyncio has none of them the import fails with
  :class:`CompatError`, naming the rule and the asyncio code, instead of guessing.

``tests/test_compat.py`` checks each constant on the running Python against a table of the
expected values per version.
"""

import inspect
import re
import sys
from asyncio import (
    base_events, events, format_helpers, runners, selector_events, sslproto, transports,
    unix_events,
)

__all__ = (
    "CompatError",
    "NATIVE_TLS_SUPPORTED",
    "ASYNCIO_RUNNER",
    "ASYNCIO_RUN_LOOP_FACTORY",
    "RUN_FOREVER_SETUP",
    "CALL_LATER_REJECTS_NONE",
    "CALL_AT_REJECTS_NONE",
    "RUN_ONCE_TIMEOUT_IF_ELIF",
    "TIMER_HANDLE_ASSERTS_WHEN",
    "FORMAT_CALLBACK_TAKES_DEBUG",
    "ATTACH_TAKES_TRANSPORT",
    "ACCEPT_TIMEOUT_DEFAULTS",
    "SSL_ENSURE_FD",
    "ABORT_TAKES_EXC",
    "STREAM_OWN_WRITELINES",
    "DATAGRAM_IS_DATAGRAM_TRANSPORT",
    "DATAGRAM_EMPTY_RETURNS",
    "DATAGRAM_COUNTS_SIZE",
    "DATAGRAM_HEADER_ON_QUEUE",
    "DATAGRAM_HEADER_ON_SEND",
    "DATAGRAM_CAN_PAUSE",
    "PIPE_READ_IS_READING",
    "PIPE_READER_TRICK_ON_FIFO",
    "DEFAULT_CHILD_WATCHERS",
    "RETURNCODE_FROM_STATUS",
)


class CompatError(ImportError):
    """The running asyncio's code has none of the shapes a probe knows.

    ``rule`` is the constant being computed, ``where`` the asyncio code it was read from.
    """

    def __init__(self, rule, where, detail):
        self.rule = rule
        self.where = where
        super().__init__(
            f"oxloop cannot read rule {rule} off this asyncio ({where}, in "
            f"{_file_of(where)}): {detail}. oxloop supports the asyncio of Python 3.9-3.13; "
            "this Python's asyncio differs from every version it knows."
        )


def _file_of(where):
    module = where.partition(":")[0]
    mod = sys.modules.get(module)
    return getattr(mod, "__file__", None) or module


def _where(obj):
    return f"{obj.__module__}:{obj.__qualname__}"


def _params(rule, func):
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise CompatError(rule, _where(func), f"no signature ({exc})") from None


def probe_signature(rule, func, shapes):
    """The value of ``shapes`` (parameter-name tuple -> value) for ``func``'s signature."""
    names = tuple(p.name for p in _params(rule, func))
    if names not in shapes:
        known = " or ".join(f"({', '.join(s)})" for s in shapes)
        raise CompatError(rule, _where(func), f"signature ({', '.join(names)}), expected {known}")
    return shapes[names]


def _str_consts(func):
    code = func.__code__
    return [c for c in code.co_consts if isinstance(c, str) and c != func.__doc__]


def source_of(rule, func):
    try:
        return inspect.getsource(func)
    except (OSError, TypeError) as exc:
        raise CompatError(rule, _where(func), f"its source is not available ({exc})") from None


# --- version rules -----------------------------------------------------------------------------

#: The native TLS layer (``sslproto.rs``) reproduces asyncio's sslproto.py of 3.11+; 3.9/3.10
#: keep their own, older SSLProtocol, whose behaviour differs and is what their tests check.
NATIVE_TLS_SUPPORTED = sys.version_info >= (3, 11)


# --- the loop ----------------------------------------------------------------------------------

#: ``asyncio.run`` is ``asyncio.Runner`` (3.11+); before, ``runners.run`` takes its own steps
#: (``oxloop.run`` takes them too, with the loop from ``loop_factory``).
ASYNCIO_RUNNER = hasattr(runners, "Runner")

#: ``asyncio.run(main, loop_factory=...)`` exists (3.12+): from then on ``oxloop.install()``
#: (an event loop policy; policies are deprecated from 3.14) warns and points to it, as
#: ``uvloop.install()`` does.
ASYNCIO_RUN_LOOP_FACTORY = "loop_factory" in inspect.signature(runners.run).parameters


def probe_run_forever_setup(cls):
    """``BaseEventLoop.run_forever`` is ``_run_forever_setup`` + ``_run_forever_cleanup``
    around the loop (3.13+); before, one method does all of it."""
    setup = hasattr(cls, "_run_forever_setup")
    cleanup = hasattr(cls, "_run_forever_cleanup")
    if setup != cleanup:
        raise CompatError(
            "RUN_FOREVER_SETUP", _where(cls),
            "it has one of _run_forever_setup/_run_forever_cleanup but not the other",
        )
    return setup


RUN_FOREVER_SETUP = probe_run_forever_setup(base_events.BaseEventLoop)


def probe_rejects_none(rule, func, message):
    """Whether ``func`` (asyncio's call_later/call_at) raises ``TypeError(message)`` for a
    None argument (3.11+). A None check with another message raises: the native code
    reproduces this one."""
    consts = _str_consts(func)
    if message in consts:
        return True
    other = [c for c in consts if "None" in c]
    if other:
        raise CompatError(rule, _where(func), f"it rejects None with {other[0]!r}, not {message!r}")
    return False


#: ``call_later(None, ...)`` raises ``TypeError("delay must not be None")`` (3.11+); before,
#: ``self.time() + delay`` raises the float addition's TypeError.
CALL_LATER_REJECTS_NONE = probe_rejects_none(
    "CALL_LATER_REJECTS_NONE", base_events.BaseEventLoop.call_later, "delay must not be None"
)
#: ``call_at(None, ...)`` raises ``TypeError("when cannot be None")`` (3.11+); before,
#: ``TimerHandle``'s ``assert when is not None`` fires.
CALL_AT_REJECTS_NONE = probe_rejects_none(
    "CALL_AT_REJECTS_NONE", base_events.BaseEventLoop.call_at, "when cannot be None"
)

def probe_run_once_timeout(func):
    """How asyncio's ``_run_once`` bounds the wait before the first timer: 3.9-3.12
    ``min(max(0, when - self.time()), MAXIMUM_SELECT_TIMEOUT)`` (NaN gives 0), 3.13+
    ``timeout = self._scheduled[0]._when - self.time()`` clamped with ``if``/``elif`` (NaN reaches the selector).
    True for the latter."""
    rule = "RUN_ONCE_TIMEOUT_IF_ELIF"
    src = source_of(rule, func)
    minmax = "min(max(0, when - self.time()), MAXIMUM_SELECT_TIMEOUT)" in src
    ifelif = re.search(
        r"timeout = (?:when|self\._scheduled\[0\]\._when) - self\.time\(\)\s*\n"
        r"\s*if timeout > MAXIMUM_SELECT_TIMEOUT:"
        r"[\s\S]{0,120}?elif timeout < 0:", src) is not None
    if minmax == ifelif:
        raise CompatError(rule, _where(func), "neither min(max(0, ...)) nor the if/elif clamp "
                          "of the timeout is there" if not minmax else "both timeout forms found")
    return ifelif


#: ``_run_once`` clamps the selector timeout with ``if``/``elif`` (3.13+), so a NaN deadline at
#: the head of the heap reaches the selector (which raises ValueError); before, ``max(0, nan)``
#: is 0 and the timer is simply due.
RUN_ONCE_TIMEOUT_IF_ELIF = probe_run_once_timeout(base_events.BaseEventLoop._run_once)  # type: ignore[attr-defined]


def probe_timer_handle_asserts_when(cls):
    """Whether ``TimerHandle.__init__`` starts with ``assert when is not None`` (3.9/3.10)."""
    rule = "TIMER_HANDLE_ASSERTS_WHEN"
    src = source_of(rule, cls.__init__)
    if "when" not in src:
        raise CompatError(rule, _where(cls.__init__), "it does not take a `when`")
    return "assert when is not None" in src


#: ``TimerHandle(None, ...)`` fails its ``assert when is not None`` (3.9/3.10); later versions
#: take it (``call_at`` rejects None itself from 3.11).
TIMER_HANDLE_ASSERTS_WHEN = probe_timer_handle_asserts_when(events.TimerHandle)


#: ``format_helpers._format_callback_source(func, args, *, debug=False)`` (3.13+: the source
#: location only in debug mode); before, ``(func, args)``.
FORMAT_CALLBACK_TAKES_DEBUG = probe_signature(
    "FORMAT_CALLBACK_TAKES_DEBUG", format_helpers._format_callback_source,
    {("func", "args"): False, ("func", "args", "debug"): True},
)

#: ``Server._attach(transport)``/``_detach(transport)`` track the server's clients (3.13, and
#: later 3.12.x); before, ``_attach()``/``_detach()`` only count them.
ATTACH_TAKES_TRANSPORT = probe_signature(
    "ATTACH_TAKES_TRANSPORT", base_events.Server._attach,  # type: ignore[attr-defined]
    {("self",): False, ("self", "transport"): True},
)


def probe_accept_timeouts(func):
    """The TLS timeouts ``_accept_connection`` takes after ``backlog``, with their defaults
    (3.9/3.10: the handshake timeout; 3.11+: and the shutdown timeout)."""
    rule = "ACCEPT_TIMEOUT_DEFAULTS"
    params = _params(rule, func)
    head = ("self", "protocol_factory", "sock", "sslcontext", "server", "backlog")
    names = tuple(p.name for p in params)
    if names[: len(head)] != head:
        raise CompatError(
            rule, _where(func), f"parameters ({', '.join(names)}) do not start with {head}"
        )
    tail = params[len(head):]
    known = (("ssl_handshake_timeout",), ("ssl_handshake_timeout", "ssl_shutdown_timeout"))
    if tuple(p.name for p in tail) not in known or any(
        p.default is inspect.Parameter.empty for p in tail
    ):
        raise CompatError(
            rule, _where(func),
            f"after backlog: ({', '.join(p.name for p in tail)}), expected "
            "ssl_handshake_timeout[, ssl_shutdown_timeout] with defaults",
        )
    return tuple(p.default for p in tail)


#: Passed on to ``_start_serving`` by oxloop's ``_accept_connection``, as asyncio does.
ACCEPT_TIMEOUT_DEFAULTS = probe_accept_timeouts(
    selector_events.BaseSelectorEventLoop._accept_connection  # type: ignore[attr-defined]
)


def probe_ssl_ensure_fd(func):
    """Whether ``_make_ssl_transport`` first checks that the socket has no transport yet
    (``self._ensure_fd_no_transport(rawsock)``: 3.13, and later 3.12.x)."""
    names = func.__code__.co_names
    if "SSLProtocol" not in names:
        raise CompatError(
            "SSL_ENSURE_FD", _where(func), "its code does not make an sslproto.SSLProtocol"
        )
    return "_ensure_fd_no_transport" in names


SSL_ENSURE_FD = probe_ssl_ensure_fd(
    selector_events.BaseSelectorEventLoop._make_ssl_transport  # type: ignore[attr-defined]
)

#: ``SSLProtocol._abort(exc)`` force-closes the transport with ``exc`` (3.13); 3.9-3.12:
#: ``_abort()`` calls ``transport.abort()``. Used by the native TLS layer (3.11+ only).
ABORT_TAKES_EXC = probe_signature(
    "ABORT_TAKES_EXC", sslproto.SSLProtocol._abort,
    {("self",): False, ("self", "exc"): True},
)


# --- transports --------------------------------------------------------------------------------

#: The stream transport has its own ``writelines()`` (3.12+: the buffers are queued as they
#: are); before, ``WriteTransport.writelines`` joins them and calls ``write()``.
STREAM_OWN_WRITELINES = "writelines" in vars(selector_events._SelectorSocketTransport)  # type: ignore[attr-defined]

_AsyncioDatagram = selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]

#: asyncio's datagram transport is an ``asyncio.DatagramTransport`` (3.12+); before, only an
#: ``asyncio.Transport`` (its ``_SelectorTransport`` base).
DATAGRAM_IS_DATAGRAM_TRANSPORT = issubclass(_AsyncioDatagram, transports.DatagramTransport)

# sendto(): the type check, then (3.9-3.12) `if not data: return`, then the address check.
_SENDTO_EMPTY = re.compile(
    r"raise TypeError\((?:.|\n)*?\)\s*\n"
    r"(?P<empty>\s*if not data:\s*\n\s*return\s*\n)?"
    r"\s*if self\._address:"
)
# sendto(): the datagram is queued, then (3.11+) counted, with a header size on top (3.13+).
_SENDTO_QUEUE = re.compile(
    r"self\._buffer\.append\(\(bytes\(data\), addr\)\)[^\n]*\n"
    r"(?:\s*self\._buffer_size\s*\+=\s*len\(data\)(?:\s*\+\s*(?P<header>[\w.]+))?[^\n]*\n)?"
    r"\s*self\._maybe_pause_protocol\(\)"
)
# _sendto_ready(): a datagram leaves the queue, then (3.11+) is uncounted.
_SENDTO_READY = re.compile(
    r"data, addr = self\._buffer\.popleft\(\)[^\n]*\n"
    r"(?P<uncount>\s*self\._buffer_size\s*-=\s*len\(data\)(?:\s*\+\s*(?P<header>[\w.]+))?[^\n]*\n)?"
    r"\s*try:"
)


def datagram_rules(send_src, ready_src, cls=_AsyncioDatagram):
    """How asyncio's datagram transport filters and counts, read from the source of its
    ``sendto`` and ``_sendto_ready`` (patch releases changed these, hence the source).

    Returns ``(empty_returns, counts_size, header_on_queue, header_on_send)``.
    """
    where_send = _where(cls) + ".sendto"
    where_ready = _where(cls) + "._sendto_ready"
    m = _SENDTO_EMPTY.search(send_src)
    if m is None:
        raise CompatError(
            "DATAGRAM_EMPTY_RETURNS", where_send,
            "no type check followed by [`if not data: return`] and `if self._address:`",
        )
    empty_returns = m.group("empty") is not None

    m = _SENDTO_QUEUE.search(send_src)
    if m is None:
        raise CompatError(
            "DATAGRAM_COUNTS_SIZE", where_send,
            "no `self._buffer.append((bytes(data), addr))` followed by "
            "[`self._buffer_size += len(data)[ + header]`] and `self._maybe_pause_protocol()`",
        )
    counts_size = "_buffer_size" in m.group(0)
    header_on_queue = _header("DATAGRAM_HEADER_ON_QUEUE", where_send, m.group("header"), cls)

    m = _SENDTO_READY.search(ready_src)
    if m is None:
        raise CompatError(
            "DATAGRAM_HEADER_ON_SEND", where_ready,
            "no `data, addr = self._buffer.popleft()` followed by "
            "[`self._buffer_size -= len(data)[ + header]`] and `try:`",
        )
    if counts_size != (m.group("uncount") is not None):
        raise CompatError(
            "DATAGRAM_COUNTS_SIZE", where_ready,
            "sendto and _sendto_ready disagree on keeping _buffer_size",
        )
    header_on_send = _header("DATAGRAM_HEADER_ON_SEND", where_ready, m.group("header"), cls)
    return empty_returns, counts_size, header_on_queue, header_on_send


def _header(rule, where, term, cls):
    """The header bytes added to ``len(data)``: none, a literal, or a class attribute."""
    if term is None:
        return 0
    if term.isdigit():
        return int(term)
    owner, _, name = term.rpartition(".")
    value = getattr(cls, name, None) if owner in ("self", "cls", cls.__name__) else None
    if type(value) is not int:
        raise CompatError(rule, where, f"`len(data) + {term}`: {term} is not an int attribute")
    return value


#: Returns without sending anything for ``sendto(b'')`` (3.9-3.12); 3.13 sends the empty
#: datagram.
DATAGRAM_EMPTY_RETURNS: bool
#: Keeps ``_buffer_size`` (3.11+, ``get_write_buffer_size()`` returns it) instead of summing
#: the queue (3.9/3.10).
DATAGRAM_COUNTS_SIZE: bool
#: Bytes counted per queued datagram on top of its length (3.13: 8).
DATAGRAM_HEADER_ON_QUEUE: int
#: Bytes uncounted on top of its length when a datagram leaves the queue (3.13.0: none, so
#: the 8 stay counted; later 3.13.x uncount them).
DATAGRAM_HEADER_ON_SEND: int
(
    DATAGRAM_EMPTY_RETURNS,
    DATAGRAM_COUNTS_SIZE,
    DATAGRAM_HEADER_ON_QUEUE,
    DATAGRAM_HEADER_ON_SEND,
) = datagram_rules(
    source_of("DATAGRAM_EMPTY_RETURNS", _AsyncioDatagram.sendto),
    source_of("DATAGRAM_HEADER_ON_SEND", _AsyncioDatagram._sendto_ready),
)

#: ``_SelectorTransport`` has ``pause_reading()``/``resume_reading()``/``is_reading()``
#: (3.11+); before, the datagram transport inherits ``ReadTransport``'s NotImplementedError.
DATAGRAM_CAN_PAUSE = "pause_reading" in vars(selector_events._SelectorTransport)  # type: ignore[attr-defined]

#: The read pipe transport has ``is_reading()`` and ``_add_reader()`` (3.11+: reading starts
#: only if not paused or closed by the time ``connection_made()`` has run).
PIPE_READ_IS_READING = hasattr(unix_events._UnixReadPipeTransport, "_add_reader")  # type: ignore[attr-defined]


def probe_reader_trick_on_fifo(func, platform=sys.platform):
    """Whether the write pipe transport watches a FIFO for readability to notice its reader
    going: asyncio's ``is_fifo and not sys.platform.startswith("aix")`` (on AIX that works for
    sockets only)."""
    if "aix" not in func.__code__.co_consts or "startswith" not in func.__code__.co_names:
        raise CompatError(
            "PIPE_READER_TRICK_ON_FIFO", _where(func),
            "no `sys.platform.startswith('aix')` check in its code",
        )
    return not platform.startswith("aix")


PIPE_READER_TRICK_ON_FIFO = probe_reader_trick_on_fifo(
    unix_events._UnixWritePipeTransport.__init__  # type: ignore[attr-defined]
)


# --- subprocesses ------------------------------------------------------------------------------

#: The child watchers asyncio installs by itself (ThreadedChildWatcher; PidfdChildWatcher on
#: 3.12+ when pidfds work, the class exists from 3.9): they track no other process and install
#: no signal handler, so oxloop's own exit tracking replaces them with the same results.
DEFAULT_CHILD_WATCHERS = tuple(
    w for w in (getattr(unix_events, "ThreadedChildWatcher", None),
                getattr(unix_events, "PidfdChildWatcher", None))
    if w is not None
)


def probe_policy_watcher(policy_cls, events_module):
    """The policy keeps its child watcher in ``_watcher`` and asyncio its policy in
    ``events._event_loop_policy``: ``unix_events._explicit_child_watcher`` reads them."""
    init = policy_cls.__init__
    if "_watcher" not in init.__code__.co_names:
        raise CompatError(
            "DEFAULT_CHILD_WATCHERS", _where(policy_cls), "its __init__ sets no _watcher"
        )
    if "_event_loop_policy" not in vars(events_module):
        raise CompatError(
            "DEFAULT_CHILD_WATCHERS", events_module.__name__ + ":_event_loop_policy",
            "asyncio keeps its policy elsewhere",
        )


if DEFAULT_CHILD_WATCHERS:
    probe_policy_watcher(unix_events._UnixDefaultEventLoopPolicy, events)


def probe_returncode(module):
    """The status -> returncode function of asyncio's own child watchers:
    ``waitstatus_to_exitcode`` (3.10+, ``os``'s) or ``_compute_returncode`` (3.9)."""
    func = getattr(module, "waitstatus_to_exitcode", None) or getattr(
        module, "_compute_returncode", None
    )
    if func is None:
        raise CompatError(
            "RETURNCODE_FROM_STATUS", module.__name__ + ":waitstatus_to_exitcode",
            "neither waitstatus_to_exitcode nor _compute_returncode is there",
        )
    return func


RETURNCODE_FROM_STATUS = probe_returncode(unix_events)
