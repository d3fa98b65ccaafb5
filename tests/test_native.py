"""oxloop-only properties of the native core: GC of handles, the panic boundary."""

import asyncio
import gc
import os
import re
import subprocess
import sys
import weakref

import pytest

import oxloop
from oxloop import _oxloop

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dev_build():
    """oxloop is imported from this checkout's ``python/`` (``maturin develop``, as ``make setup``
    runs it), not from an installed wheel."""
    here = os.path.dirname(os.path.dirname(os.path.realpath(oxloop.__file__)))
    return here == os.path.realpath(os.path.join(_REPO, "python"))


_HOOKS = hasattr(_oxloop, "_panic_for_test")


def test_test_hooks_in_dev_builds_only():
    """The test-only functions come with the `test-hooks` cargo feature: `make setup` builds
    with it, so a build from this checkout must have them; an installed wheel must not."""
    if _dev_build():
        assert _HOOKS, (
            "this checkout's build lacks the test hooks: build it with `make setup` "
            "(maturin develop --features test-hooks)"
        )
        assert hasattr(_oxloop, "_compat_flags_for_test")
    else:
        assert not _HOOKS, "an installed oxloop has the test hooks: the wheel was built with test-hooks"
        assert not hasattr(_oxloop, "_compat_flags_for_test")


def test_wheel_builds_leave_the_test_hooks_out():
    """Nothing a wheel build reads turns the feature on: not the crate's default features, not
    pyproject.toml's [tool.maturin] features (`pip install .`, `maturin build`)."""
    cargo = os.path.join(_REPO, "crates", "oxloop-py", "Cargo.toml")
    pyproject = os.path.join(_REPO, "pyproject.toml")
    if not (os.path.exists(cargo) and os.path.exists(pyproject)):
        pytest.skip("not run from an oxloop checkout")
    with open(cargo, encoding="utf-8") as f:
        cargo_text = f.read()
    with open(pyproject, encoding="utf-8") as f:
        pyproject_text = f.read()
    assert re.search(r"(?m)^test-hooks\s*=\s*\[\s*\]", cargo_text), "the feature is declared"
    default = re.search(r"(?m)^default\s*=\s*\[([^\]]*)\]", cargo_text)
    assert default is None or "test-hooks" not in default.group(1)
    maturin = pyproject_text.split("[tool.maturin]", 1)[1].split("\n[", 1)[0]
    assert "features" in maturin and "test-hooks" not in maturin


def test_handle_cycle_is_collected():
    loop = oxloop.new_event_loop()
    try:
        class Box:
            pass

        box = Box()
        # handle -> callback (bound method of box) -> box -> handle: a cycle through a handle.
        box.handle = loop.call_later(3600, box.__init__)
        ref = weakref.ref(box)
        del box
        loop._oxloop_close()  # drop the loop's own reference to the timer
        gc.collect()
        assert ref() is None, "a cycle through a native TimerHandle was not collected"
    finally:
        loop.close()


def test_loop_cycle_is_collected():
    loop = oxloop.new_event_loop()
    loop.call_soon(lambda: loop)  # loop -> ready queue -> handle -> closure -> loop
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None, "a closed loop referenced only by its own handles was not collected"


def test_rust_panic_becomes_python_exception():
    if not _HOOKS and not _dev_build():
        pytest.skip("an installed wheel has no test hooks (test_test_hooks_in_dev_builds_only)")
    code = (
        "import oxloop._oxloop as m\n"
        "try:\n"
        "    m._panic_for_test('boom')\n"
        "except BaseException as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "PanicException boom" in out.stdout
