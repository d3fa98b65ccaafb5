"""Event loops under test, named ``module:factory``.

A loop spec is ``module:attribute`` where ``attribute`` is a zero-argument callable that
returns a new event loop, e.g. ``asyncio:new_event_loop``, ``uvloop:new_event_loop`` or
``oxloop:new_event_loop``. This module also provides the small factories the suite needs for
oxloop's selector variants (``loops:oxloop_poll`` ...), so they can be named the same way.

A loop label may be given as ``label=module:factory``; without one the label is derived
from the spec.
"""

from __future__ import annotations

import importlib
import os
import sys

# The benchmark scripts import this file by name; make sure its folder is importable when a
# spec like "loops:oxloop_poll" is resolved from a child process.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def oxloop_epoll():
    import oxloop

    return oxloop.SelectorEventLoop("epoll")


def oxloop_poll():
    import oxloop

    return oxloop.SelectorEventLoop("poll")


def oxloop_select():
    import oxloop

    return oxloop.SelectorEventLoop("select")


def oxloop_pyselector():
    """oxloop's native loop driving Python's own selectors.DefaultSelector object."""
    import selectors

    import oxloop

    return oxloop.SelectorEventLoop(selectors.DefaultSelector())


# label -> spec. The order is the column order of every table.
KNOWN = {
    "asyncio": "asyncio:new_event_loop",
    "uvloop": "uvloop:new_event_loop",
    "rloop": "rloop:new_event_loop",
    "oxloop": "oxloop:new_event_loop",
    "oxloop-poll": "loops:oxloop_poll",
    "oxloop-select": "loops:oxloop_select",
    "oxloop-pysel": "loops:oxloop_pyselector",
}

# Which loops each mode tries (each is used only if it imports and creates a loop).
MODE_LOOPS = {
    "quick": ["asyncio", "uvloop", "rloop", "oxloop"],
    "full": ["asyncio", "uvloop", "rloop", "oxloop", "oxloop-poll", "oxloop-select"],
}


def label_for(spec: str) -> str:
    for label, s in KNOWN.items():
        if s == spec:
            return label
    mod, _, attr = spec.partition(":")
    return mod if attr in ("new_event_loop", "") else f"{mod}.{attr}"


def parse(item: str) -> tuple[str, str]:
    """'label=module:factory' | 'module:factory' | a known label -> (label, spec)."""
    if "=" in item:
        label, spec = item.split("=", 1)
        return label.strip(), spec.strip()
    if item in KNOWN:
        return item, KNOWN[item]
    if ":" not in item:
        raise ValueError(f"loop {item!r}: expected module:factory or one of {', '.join(KNOWN)}")
    return label_for(item), item


def resolve(spec: str):
    """Return the factory callable that a spec names."""
    mod_name, _, attr = spec.partition(":")
    mod = importlib.import_module(mod_name)
    obj = mod
    for part in (attr or "new_event_loop").split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


def describe(spec: str) -> str:
    """Version string of the package behind a spec (for the report)."""
    mod_name = spec.partition(":")[0]
    if mod_name == "loops":
        mod_name = "oxloop"
    if mod_name == "asyncio":
        return "stdlib (Python %d.%d.%d)" % sys.version_info[:3]
    try:
        from importlib import metadata

        return metadata.version(mod_name)
    except Exception:
        mod = importlib.import_module(mod_name)
        return str(getattr(mod, "__version__", "?"))


if __name__ == "__main__":
    # `python loops.py SPEC`: check that a spec imports and makes a working loop.
    import asyncio

    spec = sys.argv[1]
    loop = resolve(spec)()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop), type(loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=42)) == 42
    finally:
        loop.close()
    print(describe(spec))
