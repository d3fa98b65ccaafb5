"""What a server's worker reports about itself: its pid and the class of its running loop.

A worker writes it to $OXLOOP_IT_REPORT/<pid>.json at start-up (ASGI lifespan, aiohttp's
on_startup) and answers every request with it, so a test sees every worker's loop, not only
the one that happened to take its connection.
"""

import asyncio
import json
import os


def info():
    t = type(asyncio.get_running_loop())
    return {"pid": os.getpid(), "loop": f"{t.__module__}.{t.__qualname__}"}


def report():
    d = os.environ.get("OXLOOP_IT_REPORT")
    data = info()
    if d:
        tmp = os.path.join(d, f".{data['pid']}.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, os.path.join(d, f"{data['pid']}.json"))
    return data
