"""``python -m oxloop``: run a program on oxloop, say what is in use, measure it.

    python -m oxloop run app.py [args...]       run a script with oxloop as every new loop
    python -m oxloop run -m module [args...]    the same for a module (as python -m module)
    python -m oxloop run uvicorn app:app        a name that is not a file is a module
    python -m oxloop doctor                     what is in use here, and why
    python -m oxloop bench [--quick]            oxloop vs asyncio (and uvloop if installed)

``run`` sets ``OXLOOP=1`` in the environment (so every Python process the program starts,
e.g. a server's spawned workers, also makes oxloop loops: see ``oxloop._env``) and sets
oxloop's event loop policy in this process, then runs the target as ``python`` would.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Dict, List, Optional

USAGE = __doc__.split("\n\n")[1]


def _usage(msg: Optional[str] = None) -> int:
    if msg:
        sys.stderr.write(f"python -m oxloop: {msg}\n")
    sys.stderr.write("usage:\n" + USAGE + "\n")
    return 2


def cmd_run(argv: List[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        return _usage(None if argv else "run needs a script or a module")
    if argv[0] == "-m":
        if len(argv) < 2:
            return _usage("run -m needs a module name")
        target, args, as_module = argv[1], argv[2:], True
    else:
        target, args = argv[0], argv[1:]
        as_module = not (os.path.exists(target) or target.endswith(".py"))

    from . import _env, _install_policy

    os.environ[_env.ENV] = "1"  # inherited by every process the program starts
    _install_policy()
    if as_module:
        # As `python -m module`: sys.path[0] stays the current directory.
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        # As `python script.py`: sys.path[0] is the script's directory.
        sys.argv = [target, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    return 0


def doctor_lines() -> List[str]:
    import asyncio
    import platform

    import oxloop

    from . import _env, _oxloop
    from ._support import platform_support

    info = platform_support()
    out: List[str] = []
    add = out.append
    add(f"oxloop {oxloop.__version__} on {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.release()} {platform.machine()}")
    add(f"  package:        {os.path.dirname(oxloop.__file__)}")
    add(f"  native module:  {_oxloop.__file__}")

    add("loop")
    loop = oxloop.new_event_loop()
    try:
        add(f"  oxloop.new_event_loop()  -> {loop!r}")
    finally:
        loop.close()
    sels = info["selectors"]
    names = [n for n in ("epoll", "poll", "select", "kqueue") if n in sels]
    for n in names:
        s = sels[n]
        state = "default" if s.get("default") else ("available" if s["available"] else "unavailable")
        why = f": {s['reason']}" if s.get("reason") else (f" ({s['limit']})" if s.get("limit") else "")
        add(f"  selector {n:<7} {state}{why}")
    add(f"  clock: {info['clock']['source']}, resolution {info['clock']['resolution']:g} s")

    add("this process")
    policy = asyncio.get_event_loop_policy()
    add(f"  event loop policy: {type(policy).__module__}.{type(policy).__qualname__}")
    new = asyncio.new_event_loop()
    try:
        is_ox = isinstance(new, oxloop.SelectorEventLoop)
        add(f"  asyncio.new_event_loop() -> {new!r}"
            + ("" if is_ox else "   (stock asyncio: oxloop is not selected here)"))
    finally:
        new.close()
    v = os.environ.get(_env.ENV)
    if v is None:
        add(f"  {_env.ENV} unset: `python -m oxloop run ...` or {_env.ENV}=1 selects oxloop for a whole program")
    else:
        add(f"  {_env.ENV}={v!r}: " + ("oxloop's policy set at interpreter start" if _env.active()
                                      else "set, but the policy is not oxloop's (see stderr at start)"))
    pth = env_switch_file()
    add(f"  {_env.ENV}=1 switch file: " + (pth if pth else
        "MISSING: oxloop_env.pth is not in any site-packages directory, OXLOOP=1 does nothing"))
    for var, what in (("OXLOOP_NATIVE_TRANSPORTS", "native TCP/Unix/UDP/pipe transports"),
                      ("OXLOOP_NATIVE_TLS", "native TLS layer")):
        val = os.environ.get(var)
        shown = f"{var}={val!r}" if val is not None else f"{var} unset"
        add(f"  {shown}: {what} " + ("OFF (asyncio's are used)" if val == "0" else "on"))

    add("transports")
    for k, t in info["transports"].items():
        add(f"  {k}: {t}")
    sp = info["subprocess_exit_tracking"]
    add(f"subprocess exit tracking: {sp['mechanism']}"
        + (f" ({sp['pidfd']['reason']})" if sp["pidfd"]["reason"] else ""))
    impl: Dict[str, List[str]] = {"native": [], "asyncio": []}
    unavailable = []
    for name, entry in info["loops"]["SelectorEventLoop"].items():
        if not entry["available"]:
            unavailable.append(f"{name} ({entry['reason']})")
        impl.setdefault(entry.get("implementation") or "other", []).append(name)
    add("SelectorEventLoop API: " + ", ".join(
        f"{len(v)} {k}" for k, v in sorted(impl.items(), key=lambda kv: -len(kv[1])) if v)
        + " (native: Rust; oxloop: oxloop's Python; asyncio: asyncio's own code on the core)")
    add("  native: " + ", ".join(sorted(impl["native"])))
    add("  unavailable here: " + (", ".join(unavailable) if unavailable else "none"))
    for name, apis in info["loops"].items():
        if name == "SelectorEventLoop":
            continue
        reasons = sorted({e["reason"] for e in apis.values() if not e["available"]})
        if len(reasons) == len(apis) == 0 or not reasons:
            add(f"{name}: available")
        elif all(not e["available"] for e in apis.values()):
            add(f"{name}: unavailable: " + "; ".join(reasons))
        else:
            add(f"{name}: partly available: " + "; ".join(reasons))
    return out


def env_switch_file() -> Optional[str]:
    import site
    import sysconfig

    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    dirs.append(sysconfig.get_paths()["purelib"])
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    for d in dirs:
        p = os.path.join(d, "oxloop_env.pth")
        if os.path.exists(p):
            return p
    return None


def cmd_doctor(argv: List[str]) -> int:
    if argv:
        return _usage(f"doctor takes no arguments, got {argv}")
    print("\n".join(doctor_lines()))
    return 0


def cmd_bench(argv: List[str]) -> int:
    from . import _bench

    return _bench.main(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        if argv:
            print("usage:\n" + USAGE)
            return 0
        return _usage("a command is needed")
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        return cmd_run(rest)
    if cmd == "doctor":
        return cmd_doctor(rest)
    if cmd == "bench":
        return cmd_bench(rest)
    return _usage(f"unknown command {cmd!r}")


if __name__ == "__main__":
    sys.exit(main())
