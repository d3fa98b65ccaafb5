# One target per job, used by the README, CI and people alike.
#   make demo          set up and run the demo (oxloop vs asyncio, side by side)
#   make test          set up and run every test (Rust core, pytest on every loop, CPython's
#                      test_asyncio conformance) on the default python3 and on 3.9 and 3.13
#   make bench-quick   the quick benchmark suite (< 3 min); make bench: the full one (< 20 min)

PY ?= python3
VENV ?= .venv
# The other CPythons `make test` covers (oldest and newest supported).
EXTRA_PYTHONS ?= 3.9 3.13

VPY := $(VENV)/bin/python
PYVER = $(shell $(VPY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# make wheels: sdist + a wheel per installed CPython 3.9-3.13 in dist/, each smoke-tested.
.PHONY: wheels setup demo test test-rust test-py test-typing test-conformance test-pythons bench bench-quick fmt lint clean

# The dev build has the `test-hooks` cargo feature (test-only functions in oxloop._oxloop, which
# tests/test_native.py requires of a build from this checkout); wheels are built without it.
setup:
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@$(VPY) -m pip install -q --disable-pip-version-check "maturin>=1.9,<2" pytest -r tests/requirements-integration.txt
	@# A failed build fails here (an older build left in the venv must not be tested).
	@. $(VENV)/bin/activate && maturin develop --release -q --features test-hooks >$(VENV)/build.log 2>&1 \
	  || { cat $(VENV)/build.log; echo "make setup: the build failed (output above)" >&2; exit 1; }
	@# (maturin warns that build-backend is not "maturin": it is oxloop_build, maturin's with a note.)
	@grep -v "^\(🔗\|🐍\|📦\|✏️\|🛠\|⚠️  Warning: .build-backend. in pyproject.toml is not set to .maturin.\)" $(VENV)/build.log || true
	@# maturin develop leaves out the wheel's extra files: the OXLOOP=1 switch, as the wheel installs it.
	@cp python/oxloop_env.pth "$$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
	@$(VPY) -c 'import oxloop, sys; print("oxloop", oxloop.__version__, "built for Python", sys.version.split()[0])'

demo: setup
	$(VPY) examples/demo.py

test: test-rust test-py test-typing test-conformance test-pythons

test-rust:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test -p oxloop-core

test-py: setup
	$(VPY) -m pytest tests -q -p no:cacheprovider

# The whole package against its types: the native module's stub (python/oxloop/_oxloop.pyi)
# against the built module, and the Python modules (typed inline; asyncio internals typeshed does
# not declare carry `# type: ignore[attr-defined]`) against themselves at runtime.
# Then tests/typing/check_types.py: type checkers accept oxloop's loops, handles and transports
# where asyncio's are expected, for each Python version mypy can target (3.10+; mypy 2.x no
# longer targets 3.9).
TYPING_PYTHONS ?= 3.10 3.11 3.12 3.13
test-typing: setup
	@$(VPY) -m pip install -q --disable-pip-version-check "mypy==2.4.1"
	$(VPY) -m mypy.stubtest oxloop --allowlist tests/stubtest-allowlist.txt
	@set -e; for v in $(TYPING_PYTHONS); do \
	  echo "$(VPY) -m mypy --strict --no-incremental --python-version $$v tests/typing/check_types.py"; \
	  $(VPY) -m mypy --strict --no-incremental --python-version $$v tests/typing/check_types.py; \
	done

# CPython's test_asyncio twice: loops from the policy use the native epoll and explicit Python
# selector objects are driven as given; then with those selectors mapped to the native ones.
test-conformance: setup
	$(VPY) tests/conformance/run.py --loop oxloop --check
	$(VPY) tests/conformance/run.py --loop oxloop --check --native-selectors

test-pythons:
	@set -e; for v in $(EXTRA_PYTHONS); do \
	  p=$$(scripts/find-python.sh $$v); \
	  echo "== Python $$v ($$p)"; \
	  $(MAKE) --no-print-directory test-py test-conformance PY=$$p VENV=.venv-$$v; \
	done

wheels: setup
	VPY=$(VPY) bash scripts/build-wheels.sh

bench-quick:
	bash benchmarks/run.sh quick

bench:
	bash benchmarks/run.sh full

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf .venv .venv-* build dist
