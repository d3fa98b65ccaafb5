"""Tests of CPython's test_asyncio that the conformance runner does not run.

Only tests that exercise CPython's INTERNALS rather than the behaviour of an
event loop belong here: tests that mock a loop's private attributes
(``_selector``, ``_ready``, ``_run_once``...), test asyncio's own Python
classes (``BaseEventLoop``, ``_SelectorTransport``...) by replacing their
private machinery, or compare asyncio's C and Python implementations.

A test that fails with oxloop because oxloop BEHAVES differently from stock
asyncio must NOT be listed here: it stays a failure until oxloop is fixed.
When in doubt, do not exclude.

Keys are test ids without the ``test.test_asyncio.`` prefix
(``module.Class.test_name``); a key containing ``*``, ``?`` or ``[`` is an
fnmatch pattern (e.g. ``test_x.SomeClass.*``).  The value is a one-line
reason.  Exclusions apply to both ``--loop oxloop`` and ``--loop asyncio``
runs, so the two columns stay comparable.
"""

EXCLUDED = {
}
