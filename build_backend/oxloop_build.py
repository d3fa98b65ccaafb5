"""oxloop's PEP 517 build backend: maturin's, saying first what a build from source does.

pip shows a backend's output only with -v, so before the Rust build starts the note also goes to
the terminal (/dev/tty) when there is one: a from-source install would otherwise show nothing
for the minutes cargo takes. (maturin itself stops, saying so, when cargo is missing.)
"""

from __future__ import annotations

import sys

import maturin
from maturin import (  # noqa: F401  (the hooks that need no note are maturin's own)
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

get_requires_for_build_editable = get_requires_for_build_wheel

NOTE = (
    "oxloop: building from source: compiling the Rust extension oxloop._oxloop with cargo "
    "(release, LTO), about 1-3 minutes on 2 cores; `pip install -v` shows cargo's progress."
)


def _say(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
    if sys.stderr.isatty():
        return
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(msg + "\n")
    except OSError:
        pass  # no terminal (CI, a log): the note is in the build output above


def _before_rust_build() -> None:
    _say(NOTE)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _before_rust_build()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _before_rust_build()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    return maturin.build_sdist(sdist_directory, config_settings)
