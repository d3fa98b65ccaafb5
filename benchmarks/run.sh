#!/usr/bin/env bash
# oxloop's side-by-side benchmark suite: one command sets everything up and runs it.
#
#   bash benchmarks/run.sh quick     quick version (< 3 minutes once set up)
#   bash benchmarks/run.sh full      the full suite (< 20 minutes); rewrites benchmarks/RESULTS.md
#   bash benchmarks/run.sh setup     only prepare the environment and the Rust tools
#   bash benchmarks/run.sh quick --loops asyncio,oxloop --only echo    (extra args go to bench.py)
#
# Setup (each step is skipped when already done, and never fatal for an optional part):
#   - wrk from Debian (apt-get) for the HTTP case; without it the suite's own generator is used
#   - valgrind for instruction counts in the full run, when `perf stat -e instructions` can't count
#   - benchmarks/.env: a venv of the machine's python3 (PYTHON=... to choose another) with
#     uvloop, rloop, httptools and matplotlib from PyPI; a loop that fails to install is left out
#   - oxloop itself, pip-installed from the repository root (rebuilt when its sources change);
#     if that fails the other loops are still measured
#   - the Rust load generator and native echo server (benchmarks/rust, release build)
set -euo pipefail

MODE="${1:-quick}"
[ $# -gt 0 ] && shift
case "$MODE" in
  quick | full | setup) ;;
  -h | --help | help) sed -n '2,19p' "$0"; exit 0 ;;
  *) echo "usage: bash benchmarks/run.sh quick|full|setup [bench.py options]" >&2; exit 2 ;;
esac

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
ENV="$BENCH/.env"
PY="${PYTHON:-python3}"
LOGS="$BENCH/out/setup-logs"
mkdir -p "$LOGS"
T0=$(date +%s)

say() { echo "[bench] $*" >&2; }

APT_UPDATED=""
apt_install() { # best effort: apt-get install "$@" (needs root, or sudo without a password)
  local sudo=""
  command -v apt-get > /dev/null || return 1
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2> /dev/null || return 1
    sudo="sudo -n"
  fi
  if [ -z "$APT_UPDATED" ]; then
    $sudo apt-get update -qq > "$LOGS/apt-update.log" 2>&1 || true
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" > "$LOGS/apt-$1.log" 2>&1
}

# --- system tools ----------------------------------------------------------------------------
if ! command -v wrk > /dev/null; then
  say "installing wrk (Debian package) for the HTTP case"
  apt_install wrk || say "wrk is not available: the HTTP case uses the suite's own load generator"
fi
if [ "$MODE" = full ] && ! command -v valgrind > /dev/null; then
  if ! perf stat -e instructions true 2>&1 | grep -q '^ *[0-9]'; then
    say "installing valgrind for instruction counts"
    apt_install valgrind || say "valgrind is not available: no instruction counts"
  fi
fi
if ! command -v cargo > /dev/null; then
  say "error: cargo (the Rust toolchain) is needed to build the load generator"
  exit 2
fi

# --- Python environment ----------------------------------------------------------------------
if [ -x "$ENV/bin/python" ] && ! "$ENV/bin/python" -c 'import sys' > /dev/null 2>&1; then
  say "benchmarks/.env is broken; recreating it"
  rm -rf "$ENV"
fi
if [ ! -x "$ENV/bin/python" ]; then
  say "creating benchmarks/.env with $("$PY" --version 2>&1) ($(command -v "$PY"))"
  if ! "$PY" -m venv "$ENV" > "$LOGS/venv.log" 2>&1; then
    rm -rf "$ENV"
    apt_install python3-venv || true
    "$PY" -m venv "$ENV"
  fi
fi
EPY="$ENV/bin/python"
PIP=("$EPY" -m pip install -q --disable-pip-version-check)

missing=()
for mod in uvloop rloop httptools matplotlib; do
  "$EPY" -c "import $mod" > /dev/null 2>&1 || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "pip install ${missing[*]}"
  if ! "${PIP[@]}" "${missing[@]}" > "$LOGS/pip.log" 2>&1; then
    for pkg in "${missing[@]}"; do # one by one, so one failure doesn't stop the rest
      "${PIP[@]}" "$pkg" >> "$LOGS/pip.log" 2>&1 || say "could not install $pkg (see $LOGS/pip.log); running without it"
    done
  fi
fi

# oxloop from the repository root, rebuilt only when its sources changed.
if [ -f "$REPO/pyproject.toml" ]; then
  stamp=$(cd "$REPO" && find pyproject.toml Cargo.toml Cargo.lock crates python -type f \
    \( -name '*.rs' -o -name '*.py' -o -name '*.pyi' -o -name '*.toml' -o -name Cargo.lock \) \
    -not -path '*/target/*' -print0 2> /dev/null | sort -z | xargs -0 sha1sum | sha1sum | cut -c1-40)
  if [ "$stamp" != "$(cat "$ENV/.oxloop-stamp" 2> /dev/null)" ] || ! "$EPY" -c 'import oxloop' > /dev/null 2>&1; then
    say "building and installing oxloop from $REPO (release build; a few minutes the first time)"
    if "${PIP[@]}" --force-reinstall --no-deps "$REPO" > "$LOGS/oxloop-install.log" 2>&1; then
      echo "$stamp" > "$ENV/.oxloop-stamp"
    else
      rm -f "$ENV/.oxloop-stamp"
      say "oxloop did not build or install (see $LOGS/oxloop-install.log): benchmarking the other loops"
    fi
  fi
else
  say "no $REPO/pyproject.toml yet: benchmarking without oxloop"
fi

# --- Rust tools ------------------------------------------------------------------------------
say "building the load generator and the native echo server (cargo, release)"
if ! cargo build --release --quiet --manifest-path "$BENCH/rust/Cargo.toml" --target-dir "$BENCH/target" > "$LOGS/cargo.log" 2>&1; then
  cat "$LOGS/cargo.log" >&2
  say "error: the Rust tools did not build"
  exit 2
fi

say "setup done in $(($(date +%s) - T0))s"
[ "$MODE" = setup ] && exit 0

# --- run -------------------------------------------------------------------------------------
extra=()
[ "$MODE" = full ] && extra+=(--results-md "$BENCH/RESULTS.md")
T1=$(date +%s)
status=0
"$EPY" "$BENCH/bench.py" --mode "$MODE" "${extra[@]}" "$@" || status=$?
say "$MODE run finished in $(($(date +%s) - T1))s (setup $((T1 - T0))s); report: $BENCH/out/latest/report.md"
exit $status
