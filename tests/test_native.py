"""oxloop-only properties of the native core: GC of handles, the panic boundary."""

import asyncio
import gc
import subprocess
import sys
import weakref



import oxloop


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
