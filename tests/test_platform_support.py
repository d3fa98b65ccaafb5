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
