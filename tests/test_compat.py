"""oxloop._compat: every rule read off the running asyncio, checked per Python version (oxloop-only).

The expected values are written here by hand, per (major, minor), from each version's asyncio
source, so that running this file on each supported Python (3.9-3.13) checks every rule against
an expectation that does not come from the probe. A rule that patch releases changed lists its
value on the patch releases known here and the values other patch releases may have.

The probes are also run on shapes of asyncio code they must refuse: each raises CompatError
(an ImportError) naming its rule, and so does the import of oxloop._compat.
"""

import asyncio
import os
import re
import subprocess
import sys
import textwrap

import pytest

from oxloop import _compat, _oxloop
from oxloop._compat import CompatError

PY = sys.version_info[:2]
MICRO = sys.version_info[2]


class ByPatch:
    """A rule a patch release changed: its value on the patch releases listed in ``known``, and
    the values (``possible``) a patch release not listed may have, with the change (``why``)."""

    def __init__(self, known, possible, why):
        self.known, self.possible, self.why = known, possible, why


_COMMON = {
    "ASYNCIO_RUNNER": True,
    "ASYNCIO_RUN_LOOP_FACTORY": False,
    "CALL_LATER_REJECTS_NONE": True,
    "CALL_AT_REJECTS_NONE": True,
    "ACCEPT_TIMEOUT_DEFAULTS": (60.0, 30.0),
    "DATAGRAM_COUNTS_SIZE": True,
    "DATAGRAM_CAN_PAUSE": True,
    "PIPE_READ_IS_READING": True,
    "PIPE_READER_TRICK_ON_FIFO": True,
    "DEFAULT_CHILD_WATCHERS": ("ThreadedChildWatcher", "PidfdChildWatcher"),
    "RETURNCODE_FROM_STATUS": "waitstatus_to_exitcode",
    "NATIVE_TLS_SUPPORTED": True,
    "RUN_FOREVER_SETUP": False,
    "FORMAT_CALLBACK_TAKES_DEBUG": False,
    "ATTACH_TAKES_TRANSPORT": False,
    "SSL_ENSURE_FD": False,
    "ABORT_TAKES_EXC": False,
    "STREAM_OWN_WRITELINES": False,
    "DATAGRAM_IS_DATAGRAM_TRANSPORT": False,
    "DATAGRAM_EMPTY_RETURNS": True,
    "DATAGRAM_HEADER_ON_QUEUE": 0,
    "DATAGRAM_HEADER_ON_SEND": 0,
    "RUN_ONCE_TIMEOUT_IF_ELIF": False,
    "TIMER_HANDLE_ASSERTS_WHEN": False,
}

_BEFORE_311 = {
    "ASYNCIO_RUNNER": False,
    "NATIVE_TLS_SUPPORTED": False,
    "CALL_LATER_REJECTS_NONE": False,
    "CALL_AT_REJECTS_NONE": False,
    "ACCEPT_TIMEOUT_DEFAULTS": (60.0,),
    "DATAGRAM_COUNTS_SIZE": False,
    "DATAGRAM_CAN_PAUSE": False,
    "PIPE_READ_IS_READING": False,
    "TIMER_HANDLE_ASSERTS_WHEN": True,
}

EXPECTED = {
    (3, 9): {**_COMMON, **_BEFORE_311, "RETURNCODE_FROM_STATUS": "_compute_returncode"},
    (3, 10): {**_COMMON, **_BEFORE_311},
    (3, 11): dict(_COMMON),
    (3, 12): {
        **_COMMON,
        "ASYNCIO_RUN_LOOP_FACTORY": True,
        "STREAM_OWN_WRITELINES": True,
        "DATAGRAM_IS_DATAGRAM_TRANSPORT": True,
        "SSL_ENSURE_FD": ByPatch({1: True}, (False, True), "the check came to 3.12 in a patch release"),
        "ATTACH_TAKES_TRANSPORT": ByPatch(
            {1: False}, (False, True), "Server._attach(transport) backported from 3.13"
        ),
    },
    (3, 13): {
        **_COMMON,
        "ASYNCIO_RUN_LOOP_FACTORY": True,
        "RUN_FOREVER_SETUP": True,
        "RUN_ONCE_TIMEOUT_IF_ELIF": True,
        "FORMAT_CALLBACK_TAKES_DEBUG": True,
        "ATTACH_TAKES_TRANSPORT": True,
        "SSL_ENSURE_FD": True,
        "ABORT_TAKES_EXC": True,
        "STREAM_OWN_WRITELINES": True,
        "DATAGRAM_IS_DATAGRAM_TRANSPORT": True,
        "DATAGRAM_EMPTY_RETURNS": False,
        "DATAGRAM_HEADER_ON_QUEUE": 8,
        "DATAGRAM_HEADER_ON_SEND": ByPatch(
            {0: 0}, (0, 8), "gh-135444: _sendto_ready uncounts the 8 header bytes too"
        ),
    },
}


def _observed(name):
    value = getattr(_compat, name)
    if name == "DEFAULT_CHILD_WATCHERS":
        return tuple(w.__name__ for w in value)
    if name == "RETURNCODE_FROM_STATUS":
        return value.__name__
    return value


def test_table_covers_every_rule():
    rules = set(_compat.__all__) - {"CompatError"}
    for version, table in EXPECTED.items():
        assert set(table) == rules, version


@pytest.mark.skipif(PY not in EXPECTED, reason="oxloop supports Python 3.9-3.13")
@pytest.mark.parametrize("name", sorted(set(_compat.__all__) - {"CompatError"}))
def test_rule_on_this_python(name):
    expected = EXPECTED[PY][name]
    value = _observed(name)
    if isinstance(expected, ByPatch):
        if MICRO in expected.known:
            assert value == expected.known[MICRO], f"{name} on {sys.version.split()[0]}"
        else:
            assert value in expected.possible, f"{name}: {value!r} ({expected.why})"
        return
    assert value == expected and type(value) is type(expected), (
        f"{name} on {sys.version.split()[0]}: {value!r}, expected {expected!r}"
    )


def test_datagram_header_on_send_matches_asyncio_behaviour():
    """DATAGRAM_HEADER_ON_SEND observed on asyncio's own transport: after one datagram is queued
    and sent, what is left counted in _buffer_size."""
    from asyncio import selector_events

    if not _compat.DATAGRAM_COUNTS_SIZE:
        pytest.skip("this asyncio keeps no _buffer_size")
    tr = selector_events._SelectorDatagramTransport.__new__(
        selector_events._SelectorDatagramTransport
    )
    import collections

    class Sock:
        def sendto(self, data, addr):
            pass

    class Loop:
        def _remove_writer(self, fd):
            pass

    tr._buffer = collections.deque([(b"abcd", None)])
    tr._buffer_size = 4 + _compat.DATAGRAM_HEADER_ON_QUEUE
    tr._extra = {"peername": None}
    tr._sock = Sock()
    tr._sock_fd = -1
    tr._loop = Loop()
    tr._closing = False
    tr._protocol_paused = False
    tr._high_water, tr._low_water = 64 * 1024, 16 * 1024
    tr._sendto_ready()
    tr._sock = None  # nothing for __del__ to close
    assert tr._buffer_size == _compat.DATAGRAM_HEADER_ON_QUEUE - _compat.DATAGRAM_HEADER_ON_SEND


def test_rust_reads_the_same_flags():
    if not hasattr(_oxloop, "_compat_flags_for_test"):
        pytest.skip("no test hooks (an installed wheel); test_native requires them in a dev build")
    flags = _oxloop._compat_flags_for_test()
    assert flags == {name: getattr(_compat, name) for name in flags}
    assert set(flags) == {"CALL_LATER_REJECTS_NONE", "CALL_AT_REJECTS_NONE", "STREAM_OWN_WRITELINES",
                          "RUN_ONCE_TIMEOUT_IF_ELIF", "TIMER_HANDLE_ASSERTS_WHEN"}


def test_rules_agree_with_asyncio_behaviour():
    """The call_later/call_at rules, observed on stock asyncio."""
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError) as err:
            loop.call_later(None, lambda: None)
        assert (str(err.value) == "delay must not be None") is _compat.CALL_LATER_REJECTS_NONE
        with pytest.raises(TypeError if _compat.CALL_AT_REJECTS_NONE else AssertionError):
            loop.call_at(None, lambda: None)
    finally:
        loop.close()


# --- one place: nothing else reads the running asyncio's code or version ------------------------

_PKG = os.path.dirname(_compat.__file__)
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CRATE = os.path.join(_REPO, "crates", "oxloop-py", "src")
# platform_support() reads the loop class's methods to report where each is (a report of the
# class layout, not a rule the code acts on).
_READS_CODE_FOR_REPORT = {"_support.py"}
_PROBE = re.compile(r"version_info|\binspect\b|__code__|co_names|co_consts|getsource|signature\(")


def test_no_other_python_module_probes_asyncio():
    offenders = []
    for fname in sorted(os.listdir(_PKG)):
        if not fname.endswith(".py") or fname == "_compat.py" or fname in _READS_CODE_FOR_REPORT:
            continue
        with open(os.path.join(_PKG, fname), encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if _PROBE.search(line.split("#", 1)[0]):
                    offenders.append(f"{fname}:{lineno}: {line.strip()}")
    assert offenders == []


# version_info() checks of the native code still to be switched to compat.rs (in files edited
# elsewhere when compat.rs was added). The count may only go down; empty it when they are gone.
_RUST_PENDING = {}


def test_rust_version_checks_only_where_pending():
    if not os.path.isdir(_CRATE):
        pytest.skip("not run from an oxloop checkout")
    for fname in sorted(os.listdir(_CRATE)):
        if not fname.endswith(".rs"):
            continue
        with open(os.path.join(_CRATE, fname), encoding="utf-8") as f:
            code = [line.split("//", 1)[0] for line in f]
        count = sum(line.count(".version_info()") for line in code)
        assert count <= _RUST_PENDING.get(fname, 0), f"{fname}: use compat.rs, not version_info()"


# --- every probe refuses the shapes it does not know, naming its rule --------------------------

def _rule(exc_info):
    assert isinstance(exc_info.value, ImportError)
    assert exc_info.value.rule in str(exc_info.value)
    return exc_info.value.rule


_SEND_313 = '''
    def sendto(self, data, addr=None):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')

        if self._address:
            pass
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data) + self._header_size  # include header bytes
        self._maybe_pause_protocol()
'''
_READY_313 = '''
    def _sendto_ready(self):
        while self._buffer:
            data, addr = self._buffer.popleft()
            self._buffer_size -= len(data) + self._header_size
            try:
                pass
'''


class _Datagram:
    _header_size = 8


def test_datagram_rules_read_a_later_313_shape():
    assert _compat.datagram_rules(_SEND_313, _READY_313, _Datagram) == (False, True, 8, 8)


def test_datagram_rules_read_the_running_asyncio():
    from asyncio import selector_events

    cls = selector_events._SelectorDatagramTransport
    src = _compat.source_of("X", cls.sendto), _compat.source_of("X", cls._sendto_ready)
    assert _compat.datagram_rules(*src) == (
        _compat.DATAGRAM_EMPTY_RETURNS, _compat.DATAGRAM_COUNTS_SIZE,
        _compat.DATAGRAM_HEADER_ON_QUEUE, _compat.DATAGRAM_HEADER_ON_SEND,
    )


@pytest.mark.parametrize("send, ready, rule", [
    (_SEND_313.replace("if self._address:", "if self._addr:"), _READY_313, "DATAGRAM_EMPTY_RETURNS"),
    (_SEND_313.replace("self._buffer.append(", "self._queue.append("), _READY_313,
     "DATAGRAM_COUNTS_SIZE"),
    (_SEND_313.replace("self._header_size", "self._hdr"), _READY_313, "DATAGRAM_HEADER_ON_QUEUE"),
    (_SEND_313, _READY_313.replace("popleft()", "pop()"), "DATAGRAM_HEADER_ON_SEND"),
    (_SEND_313, _READY_313.replace("self._header_size", "self._hdr"), "DATAGRAM_HEADER_ON_SEND"),
    (_SEND_313, _READY_313.replace("            self._buffer_size -= len(data) + self._header_size\n", ""),
     "DATAGRAM_COUNTS_SIZE"),
])
def test_datagram_rules_refuse_unknown_shapes(send, ready, rule):
    with pytest.raises(CompatError) as err:
        _compat.datagram_rules(send, ready, _Datagram)
    assert _rule(err) == rule


def test_no_source_is_refused():
    namespace = {}
    exec("def sendto(self, data, addr=None):\n    pass\n", namespace)
    with pytest.raises(CompatError) as err:
        _compat.source_of("DATAGRAM_EMPTY_RETURNS", namespace["sendto"])
    assert _rule(err) == "DATAGRAM_EMPTY_RETURNS"
    assert "source is not available" in str(err.value)


def test_signature_probe_refuses_unknown_parameters():
    def _attach(self, transport, extra):
        pass

    with pytest.raises(CompatError) as err:
        _compat.probe_signature(
            "ATTACH_TAKES_TRANSPORT", _attach, {("self",): False, ("self", "transport"): True}
        )
    assert _rule(err) == "ATTACH_TAKES_TRANSPORT"
    assert "(self, transport, extra)" in str(err.value)


def _accept_no_server(self, protocol_factory, sock, sslcontext=None, backlog=100,
                      ssl_handshake_timeout=60.0):
    pass


def _accept_unknown_timeout(self, protocol_factory, sock, sslcontext=None, server=None,
                            backlog=100, timeout=60.0):
    pass


def _accept_no_default(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                       ssl_handshake_timeout=60.0, *, ssl_shutdown_timeout):
    pass


@pytest.mark.parametrize("func", [_accept_no_server, _accept_unknown_timeout, _accept_no_default])
def test_accept_timeouts_refuse_unknown_parameters(func):
    with pytest.raises(CompatError) as err:
        _compat.probe_accept_timeouts(func)
    assert _rule(err) == "ACCEPT_TIMEOUT_DEFAULTS"


def test_bytecode_probes_refuse_unknown_code():
    def _make_ssl_transport(self, rawsock):
        return self._ensure_fd_no_transport(rawsock)

    with pytest.raises(CompatError) as err:
        _compat.probe_ssl_ensure_fd(_make_ssl_transport)
    assert _rule(err) == "SSL_ENSURE_FD"

    def call_later(self, delay, callback):
        if delay is None:
            raise TypeError("delay is None")

    with pytest.raises(CompatError) as err:
        _compat.probe_rejects_none("CALL_LATER_REJECTS_NONE", call_later, "delay must not be None")
    assert _rule(err) == "CALL_LATER_REJECTS_NONE"

    def __init__(self, loop, pipe):
        self._is_fifo = True

    with pytest.raises(CompatError) as err:
        _compat.probe_reader_trick_on_fifo(__init__)
    assert _rule(err) == "PIPE_READER_TRICK_ON_FIFO"


def test_reader_trick_follows_asyncio_platform_rule():
    from asyncio import unix_events

    init = unix_events._UnixWritePipeTransport.__init__
    assert _compat.probe_reader_trick_on_fifo(init, "aix7") is False
    assert _compat.probe_reader_trick_on_fifo(init, "linux") is True


def test_attribute_probes_refuse_unknown_layouts():
    class Loop:
        def _run_forever_setup(self):
            pass

    with pytest.raises(CompatError) as err:
        _compat.probe_run_forever_setup(Loop)
    assert _rule(err) == "RUN_FOREVER_SETUP"

    class Module:
        __name__ = "asyncio.unix_events"

    with pytest.raises(CompatError) as err:
        _compat.probe_returncode(Module)
    assert _rule(err) == "RETURNCODE_FROM_STATUS"

    class Policy:
        def __init__(self):
            self._child_watcher = None

    with pytest.raises(CompatError) as err:
        _compat.probe_policy_watcher(Policy, asyncio.events)
    assert _rule(err) == "DEFAULT_CHILD_WATCHERS"


@pytest.mark.parametrize("patch, rule", [
    ("base_events.Server._attach = lambda self, a, b: None", "ATTACH_TAKES_TRANSPORT"),
    ("exec('def sendto(self, data, addr=None): pass', ns)\n"
     "selector_events._SelectorDatagramTransport.sendto = ns['sendto']",
     "DATAGRAM_EMPTY_RETURNS"),
    ("base_events.BaseEventLoop.call_at = lambda self, when, cb: "
     "(_ for _ in ()).throw(TypeError('when is None'))", "CALL_AT_REJECTS_NONE"),
])
def test_import_fails_naming_the_rule(patch, rule):
    """An asyncio the probes do not know: importing oxloop fails, naming the rule."""
    code = textwrap.dedent("""\
        from asyncio import base_events, selector_events
        ns = {}
        %s
        try:
            import oxloop
        except ImportError as exc:
            print(type(exc).__name__, getattr(exc, "rule", None))
            print(exc)
        else:
            print("imported")
    """) % patch
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, _, message = out.stdout.partition("\n")
    assert first == f"CompatError {rule}", out.stdout
    assert rule in message and "asyncio" in message


def test_run_once_timeout_probe_refuses_unknown_code():
    def _run_once(self):
        timeout = 0  # neither of asyncio's two forms
    with pytest.raises(CompatError) as err:
        _compat.probe_run_once_timeout(_run_once)
    assert _rule(err) == "RUN_ONCE_TIMEOUT_IF_ELIF"


def test_timer_handle_probe_refuses_unknown_code():
    class TimerHandle:
        def __init__(self, deadline, callback, args, loop):
            pass
    with pytest.raises(CompatError) as err:
        _compat.probe_timer_handle_asserts_when(TimerHandle)
    assert _rule(err) == "TIMER_HANDLE_ASSERTS_WHEN"
