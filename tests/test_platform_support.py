"""oxloop.platform_support() (oxloop-only).

The schema assumed here is deliberately small:

    {
      "platform": sys.platform,
      "loops": {
        "<loop class name>": {            # "SelectorEventLoop", ...
          "<api name>": {"available": bool, "reason": str | None, ...},
          ...
        },
        ...
      },
      ...                                  # anything else
    }

with a non-empty reason whenever available is False. Each limitation listed on
Python's "asyncio - Platform Support" page (shared/reference/asyncio-platforms.txt)
must be covered: the APIs it concerns have entries for every loop, and the report
mentions the limitation (it may say it does not apply on this platform).
"""

import asyncio
import json
import sys

import pytest


@pytest.fixture
def report(oxloop_module):
    r = oxloop_module.platform_support()
    assert isinstance(r, dict)
    return r


@pytest.fixture
def text(report):
    return json.dumps(report, default=str).lower()


def public_loop_apis():
    return sorted(n for n in dir(asyncio.AbstractEventLoop)
                  if not n.startswith("_") and callable(getattr(asyncio.AbstractEventLoop, n)))


def test_top_level_keys(report):
    assert "platform" in report
    assert "loops" in report
    assert report["platform"] == sys.platform


def test_json_serializable(report):
    json.dumps(report)


def test_report_is_fresh_each_call(oxloop_module, report):
    again = oxloop_module.platform_support()
    assert again == report
    again["loops"].clear()
    assert oxloop_module.platform_support()["loops"]  # no shared mutable state


def test_loops_are_named_by_class(oxloop_module, report):
    loops = report["loops"]
    assert isinstance(loops, dict) and loops
    assert "SelectorEventLoop" in loops
    for name in loops:
        assert name.endswith("EventLoop"), name


def test_every_entry_has_available_and_reason(report):
    for loop_name, apis in report["loops"].items():
        assert isinstance(apis, dict) and apis, loop_name
        for api, entry in apis.items():
            where = f"{loop_name}.{api}"
            assert isinstance(entry, dict), where
            assert isinstance(entry.get("available"), bool), where
            assert "reason" in entry, where
            reason = entry["reason"]
            if entry["available"]:
                assert reason is None or isinstance(reason, str), where
            else:
                assert isinstance(reason, str) and reason.strip(), where


def test_selector_loop_covers_every_abstract_event_loop_method(report):
    apis = report["loops"]["SelectorEventLoop"]
    missing = [n for n in public_loop_apis() if n not in apis]
    assert missing == []


def test_every_loop_covers_every_abstract_event_loop_method(report):
    for loop_name, apis in report["loops"].items():
        missing = [n for n in public_loop_apis() if n not in apis]
        assert missing == [], loop_name


def test_available_apis_are_really_implemented(oxloop_module, report):
    for loop_name, apis in report["loops"].items():
        if not any(e["available"] for e in apis.values()):
            continue
        cls = getattr(oxloop_module, loop_name, None)
        assert cls is not None, f"{loop_name} is reported available but oxloop has no such class"
        for api, entry in apis.items():
            if not entry["available"]:
                continue
            impl = getattr(cls, api, None)
            assert impl is not None, f"{loop_name}.{api}"
            abstract = getattr(asyncio.AbstractEventLoop, api, None)
            assert impl is not abstract, f"{loop_name}.{api} is still the abstract stub"


def test_exported_loop_classes_are_reported(oxloop_module, report):
    for name in dir(oxloop_module):
        obj = getattr(oxloop_module, name)
        if (isinstance(obj, type) and issubclass(obj, asyncio.AbstractEventLoop)
                and name.endswith("EventLoop")):
            assert name in report["loops"], name


UNIX_ONLY_ON_WINDOWS = [
    # (api, limitation on Windows per asyncio-platforms.txt)
    ("create_unix_connection", "AF_UNIX"),
    ("create_unix_server", "AF_UNIX"),
    ("add_signal_handler", "signals"),
    ("remove_signal_handler", "signals"),
    ("connect_read_pipe", "pipes (SelectorEventLoop)"),
    ("connect_write_pipe", "pipes (SelectorEventLoop)"),
    ("subprocess_exec", "subprocesses (SelectorEventLoop)"),
    ("subprocess_shell", "subprocesses (SelectorEventLoop)"),
    ("add_reader", "sockets only (SelectorEventLoop) / unsupported (ProactorEventLoop)"),
    ("add_writer", "sockets only (SelectorEventLoop) / unsupported (ProactorEventLoop)"),
]


@pytest.mark.parametrize("api", [a for a, _ in UNIX_ONLY_ON_WINDOWS])
def test_windows_limited_apis_have_entries_for_every_loop(report, api):
    for loop_name, apis in report["loops"].items():
        assert api in apis, f"{loop_name} has no entry for {api}"


@pytest.mark.skipif(sys.platform == "win32", reason="these are Windows-only limitations")
@pytest.mark.parametrize("api", [a for a, _ in UNIX_ONLY_ON_WINDOWS])
def test_windows_only_limitations_do_not_apply_here(report, api):
    entry = report["loops"]["SelectorEventLoop"][api]
    assert entry["available"] is True, entry


@pytest.mark.skipif(sys.platform != "win32", reason="Windows only")
@pytest.mark.parametrize("api", ["create_unix_connection", "create_unix_server",
                                 "add_signal_handler", "remove_signal_handler",
                                 "connect_read_pipe", "connect_write_pipe",
                                 "subprocess_exec", "subprocess_shell"])
def test_windows_limitations_reported_on_windows(report, api):
    entry = report["loops"]["SelectorEventLoop"][api]
    assert entry["available"] is False
    assert entry["reason"]


# Each limitation of asyncio-platforms.txt, and words any report covering it
# must use (any one of them).
LIMITATIONS = {
    "all: add_reader/add_writer cannot monitor file I/O": ["file i/o", "regular file"],
    "windows: SelectSelector limited to 512 sockets": ["512"],
    "windows: SelectorEventLoop add_reader/add_writer accept only sockets":
        ["only sockets", "sockets only", "accept only socket", "only socket"],
    "windows: no create_unix_connection/create_unix_server": ["create_unix_connection"],
    "windows: no add_signal_handler/remove_signal_handler": ["add_signal_handler"],
    "windows: SelectorEventLoop has no pipes": ["connect_read_pipe", "pipes"],
    "windows: SelectorEventLoop has no subprocesses": ["subprocess"],
    "windows: ProactorEventLoop has no add_reader/add_writer": ["proactor"],
    "windows: monotonic clock resolution ~15.6 ms": ["15.6", "clock resolution", "resolution"],
    "macOS 10.6-10.8: kqueue does not support character devices": ["character device"],
}


@pytest.mark.parametrize("limitation", list(LIMITATIONS))
def test_each_platform_limitation_is_covered(text, limitation):
    words = LIMITATIONS[limitation]
    assert any(w in text for w in words), f"report never mentions: {limitation}"


def test_reference_file_limitations_still_match(request):
    """Guard: the list above was written from the reference file; if the
    reference grows, this test points at it."""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, "..", "..", "shared", "reference", "asyncio-platforms.txt"),
                  os.path.join(here, "..", "shared", "reference", "asyncio-platforms.txt")]
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
        pytest.skip("shared/reference/asyncio-platforms.txt not found next to the repo")
    ref = open(path, encoding="utf-8").read()
    for needle in ["cannot be used to monitor file I/O", "limited to 512 sockets",
                   "only accept", "create_unix_connection", "add_signal_handler",
                   "Pipes are not supported", "Subprocesses are not supported",
                   "ProactorEventLoop has the following limitations",
                   "15.6", "character devices"]:
        assert needle in ref, needle


def test_subprocess_exit_tracking_reported(report):
    import os

    def pidfd_works():
        try:
            os.close(os.pidfd_open(os.getpid()))
        except (AttributeError, OSError):
            return False
        return True

    t = report["subprocess_exit_tracking"]
    assert t["mechanism"] == ("pidfd" if pidfd_works() else "thread")
    assert t["pidfd"]["available"] is pidfd_works()
    assert t["child_watcher"] is False and t["sigchld_handler"] is False
    assert t["any_thread"] is True


def test_start_tls_reported_native_where_the_tls_layer_is():
    import oxloop

    apis = oxloop.platform_support()["loops"]["SelectorEventLoop"]
    apis = apis.get("apis", apis)
    expected = "native" if sys.version_info >= (3, 11) else "asyncio"
    assert apis["start_tls"]["implementation"] == expected


# --- "implementation": derived from where the loop's MRO finds each method -------------------

def _mro_owner(cls, name):
    return next(c for c in cls.__mro__ if name in vars(c))


def _selector_apis():
    import oxloop

    return oxloop.platform_support()["loops"]["SelectorEventLoop"]


def test_implementation_is_where_the_mro_finds_it():
    """Each method's reported implementation is that of the class the MRO finds it in: the
    native LoopCore, asyncio's classes, or oxloop's Python (native only for a method marked
    with its native hot path). A hand-kept list drifts from this; the report must not."""
    from oxloop import _oxloop
    from oxloop.unix_events import SelectorEventLoop

    for api, entry in _selector_apis().items():
        owner = _mro_owner(SelectorEventLoop, api)
        assert entry["defined_by"] == f"{owner.__module__}.{owner.__qualname__}", api
        if owner is _oxloop.LoopCore:
            expected = "native"
        elif owner.__module__.startswith("asyncio."):
            expected = "asyncio"
        else:
            assert owner.__module__.startswith("oxloop."), api
            marked = getattr(vars(owner)[api], "__oxloop_native__", None)
            expected = "native" if marked else "oxloop"
        assert entry["implementation"] == expected, (api, entry)


def test_close_run_forever_add_reader_are_not_native():
    """The hand-kept list called these native: close and run_forever are oxloop's Python around
    native methods, add_reader & co. asyncio's public methods over the native _add_reader & co."""
    apis = _selector_apis()
    assert apis["close"]["implementation"] == "oxloop"
    assert "_oxloop_close" in apis["close"]["over_native"]
    assert apis["run_forever"]["implementation"] == "oxloop"
    assert "_run_forever_inner" in apis["run_forever"]["over_native"]
    for api in ("add_reader", "add_writer", "remove_reader", "remove_writer"):
        assert apis[api]["implementation"] == "asyncio", api
        assert apis[api]["defined_by"] == "asyncio.selector_events.BaseSelectorEventLoop", api
        assert apis[api]["over_native"] == ["_" + api], api
    for api in ("call_soon", "call_later", "call_at", "time", "create_future"):
        assert apis[api] == {"available": True, "reason": None, "implementation": "native",
                             "defined_by": "oxloop._oxloop.LoopCore"}, api
    for api in ("sock_recv", "sock_recv_into", "sock_sendall"):
        assert apis[api]["implementation"] == "native", api
        assert apis[api]["native_path"] == ["_oxloop_" + api], api


def test_report_follows_a_changed_class_layout(monkeypatch):
    """Change where the MRO finds methods: the report changes with it."""
    from oxloop.selector_events import NativeSockMixin
    from oxloop.unix_events import SelectorEventLoop

    def call_soon(self, callback, *args, context=None):
        return super(SelectorEventLoop, self).call_soon(callback, *args, context=context)

    monkeypatch.setattr(SelectorEventLoop, "call_soon", call_soon, raising=False)
    monkeypatch.delattr(SelectorEventLoop, "close")
    monkeypatch.delattr(NativeSockMixin, "sock_recv")
    apis = _selector_apis()
    assert apis["call_soon"]["implementation"] == "oxloop"
    assert apis["call_soon"]["defined_by"] == "oxloop.unix_events.SelectorEventLoop"
    assert apis["close"]["implementation"] == "asyncio"
    assert apis["close"]["defined_by"] == "asyncio.unix_events._UnixSelectorEventLoop"
    assert apis["sock_recv"]["implementation"] == "asyncio"
    assert apis["sock_recv"]["defined_by"] == "asyncio.selector_events.BaseSelectorEventLoop"


def test_derivation_on_a_fake_layout():
    """The native core and asyncio's loop alone: only the core's methods are native."""
    from asyncio import unix_events

    from oxloop import _oxloop
    from oxloop._support import implementation

    class Layout(_oxloop.LoopCore, unix_events._UnixSelectorEventLoop):
        pass

    assert implementation(Layout, "call_soon")["implementation"] == "native"
    sock_recv = implementation(Layout, "sock_recv")
    assert sock_recv["implementation"] == "asyncio"
    assert sock_recv["defined_by"] == "asyncio.selector_events.BaseSelectorEventLoop"
    assert implementation(Layout, "close")["defined_by"] == "asyncio.unix_events._UnixSelectorEventLoop"
    assert implementation(Layout, "add_reader")["over_native"] == ["_add_reader"]


def test_native_marker_is_checked():
    """A method marked native must call the names it is marked with, and they must be native."""
    from asyncio import unix_events

    from oxloop import _oxloop
    from oxloop._support import implementation
    from oxloop.selector_events import native_hot_path

    class Layout(_oxloop.LoopCore, unix_events._UnixSelectorEventLoop):
        __module__ = "oxloop.fake"

        @native_hot_path("_oxloop_sock_recv")
        async def sock_recv(self, sock, n):
            return await super().sock_recv(sock, n)  # never calls _oxloop_sock_recv

        @native_hot_path("_sock_recv")
        async def sock_recv_into(self, sock, buf):
            return self._sock_recv(sock, buf)  # asyncio's, not native

        @native_hot_path("_oxloop_sock_sendall")
        async def sock_sendall(self, sock, data):
            return await self._oxloop_sock_sendall(sock, data)

    with pytest.raises(RuntimeError, match="never refers to it"):
        implementation(Layout, "sock_recv")
    with pytest.raises(RuntimeError, match="is not native"):
        implementation(Layout, "sock_recv_into")
    assert implementation(Layout, "sock_sendall") == {
        "implementation": "native", "native_path": ["_oxloop_sock_sendall"],
        "defined_by": "oxloop.fake." + Layout.__qualname__,
    }
