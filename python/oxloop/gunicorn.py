"""gunicorn worker classes that run oxloop (each needs its server library installed).

    gunicorn -k oxloop.gunicorn.UvicornWorker app:app          # ASGI, uvicorn's worker
    gunicorn -k oxloop.gunicorn.UvicornH11Worker app:app       # the same with h11
    gunicorn -k oxloop.gunicorn.AiohttpWorker app:make_app     # aiohttp's worker

``UvicornWorker``/``UvicornH11Worker`` are uvicorn's gunicorn workers (from the
``uvicorn-worker`` package, or ``uvicorn.workers`` when only uvicorn is installed) with
``loop="oxloop:new_event_loop"``: uvicorn makes each worker's loop with oxloop's factory.
``AiohttpWorker`` is aiohttp's ``GunicornWebWorker``; as aiohttp's own
``GunicornUVLoopWebWorker`` does for uvloop, it sets oxloop's policy in the worker process
before aiohttp makes the worker's loop. Every worker process gets its own oxloop loop.

The classes are made when first asked for, so this module imports without either library;
asking for one whose library is missing raises ImportError saying which package to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict

__all__ = ("AiohttpWorker", "UvicornH11Worker", "UvicornWorker")

if TYPE_CHECKING:
    # Made by the module's __getattr__ when first asked for; declared for type checkers (and
    # stubtest) as the classes of libraries that may be missing.
    AiohttpWorker: Any
    UvicornH11Worker: Any
    UvicornWorker: Any

LOOP = "oxloop:new_event_loop"

_made: Dict[str, Any] = {}


def _uvicorn_base() -> Any:
    try:
        return importlib.import_module("uvicorn_worker").UvicornWorker
    except ImportError:
        try:
            # deprecated in uvicorn in favour of the uvicorn-worker package
            return importlib.import_module("uvicorn.workers").UvicornWorker
        except ImportError as exc:
            raise ImportError(
                "oxloop.gunicorn.UvicornWorker needs uvicorn's gunicorn worker: "
                "pip install uvicorn-worker (or an uvicorn that still has uvicorn.workers)"
            ) from exc


def _make(name: str) -> Any:
    if name == "UvicornWorker":
        base = _uvicorn_base()
        cls = type(name, (base,), {
            "CONFIG_KWARGS": {**base.CONFIG_KWARGS, "loop": LOOP},
            "__doc__": "uvicorn's gunicorn worker on oxloop (loop='oxloop:new_event_loop').",
            "__module__": __name__,
        })
    elif name == "UvicornH11Worker":
        base = _uvicorn_base()
        cls = type(name, (base,), {
            "CONFIG_KWARGS": {**base.CONFIG_KWARGS, "loop": LOOP, "http": "h11"},
            "__doc__": "uvicorn's gunicorn worker on oxloop, with the h11 HTTP implementation.",
            "__module__": __name__,
        })
    elif name == "AiohttpWorker":
        try:
            GunicornWebWorker = importlib.import_module("aiohttp.worker").GunicornWebWorker
        except ImportError as exc:
            raise ImportError(
                "oxloop.gunicorn.AiohttpWorker needs aiohttp: pip install aiohttp"
            ) from exc

        def init_process(self: Any) -> None:
            # As aiohttp's GunicornUVLoopWebWorker: the policy is set in the worker process,
            # then aiohttp closes the inherited loop and makes the worker's (now oxloop's).
            from . import _install_policy

            _install_policy()
            GunicornWebWorker.init_process(self)

        cls = type(name, (GunicornWebWorker,), {
            "init_process": init_process,
            "__doc__": "aiohttp's gunicorn worker (GunicornWebWorker) on oxloop.",
            "__module__": __name__,
        })
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls.__qualname__ = name
    return cls


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _made:
        _made[name] = _make(name)
    return _made[name]
