#!/usr/bin/env bash
# make wheels: the sdist and one wheel per installed CPython 3.9-3.13 into dist/, each wheel's
# manylinux tag checked (maturin's auditwheel check, and the file name) and the wheel
# smoke-tested in a fresh venv: import, a loop, `python -m oxloop doctor`, OXLOOP=1 in a
# spawned child, the license files. Then one wheel is built from the sdist with pip, as a user
# without a wheel would (the build note of build_backend/oxloop_build.py must appear).
# A Python that is not installed is reported and left out; any failure fails the target.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=${VPY:-.venv/bin/python}
MATURIN=$(dirname "$VPY")/maturin
OUT=dist
rm -rf "$OUT"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== sdist"
"$MATURIN" sdist -o "$OUT" >"$work/sdist.log" 2>&1 || { cat "$work/sdist.log"; exit 1; }
sdist=$(ls "$OUT"/oxloop-*.tar.gz)
tar tzf "$sdist" >"$work/sdist.list"
for f in LICENSE-MIT LICENSE-APACHE python/oxloop_env.pth build_backend/oxloop_build.py docs/package.md; do
  grep -q "^oxloop-[^/]*/$f\$" "$work/sdist.list" || { echo "the sdist lacks $f" >&2; exit 1; }
done

smoke() { # smoke <python> <wheel>
  local py=$1 whl=$2
  local venv="$work/venv-$(basename "$whl" .whl)"
  [ ! -e "$venv" ] || { echo "smoke: $venv exists" >&2; exit 1; }
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$whl"
  (cd "$work" && "$venv/bin/python" - <<'PY'
import asyncio, glob, os, subprocess, sys, sysconfig
import oxloop
assert oxloop.__file__.startswith(sysconfig.get_paths()["purelib"]), oxloop.__file__
async def main():
    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
    w.write(b"ping"); await w.drain()
    data = await r.readexactly(4); w.close(); await w.wait_closed()
    return type(asyncio.get_running_loop()), data
async def serve():
    global srv
    async def echo(r, w):
        w.write(await r.readexactly(4)); await w.drain(); w.close()
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    out = await main(); srv.close(); await srv.wait_closed(); return out
t, data = oxloop.run(serve())
assert t is oxloop.SelectorEventLoop and data == b"ping", (t, data)
site = sysconfig.get_paths()["purelib"]
assert os.path.exists(os.path.join(site, "oxloop_env.pth"))
lic = glob.glob(os.path.join(site, "oxloop-*.dist-info", "licenses", "LICENSE-*"))
assert sorted(os.path.basename(p) for p in lic) == ["LICENSE-APACHE", "LICENSE-MIT"], lic
code = ("import asyncio, multiprocessing as mp\n"
        "def f(q): q.put(type(asyncio.new_event_loop()).__module__)\n"
        "if __name__ == '__main__':\n"
        "    c = mp.get_context('spawn'); q = c.Queue(); p = c.Process(target=f, args=(q,))\n"
        "    p.start(); print(q.get(timeout=60)); p.join()\n")
open("spawn_check.py", "w").write(code)
out = subprocess.run([sys.executable, "spawn_check.py"], env=dict(os.environ, OXLOOP="1"),
                     capture_output=True, text=True, check=True).stdout.strip()
assert out == "oxloop.unix_events", out
subprocess.run([sys.executable, "-m", "oxloop", "doctor"], check=True, stdout=subprocess.DEVNULL)
print(f"   smoke test OK: Python {sys.version.split()[0]}, {t.__module__}.{t.__qualname__}")
PY
  )
}

for v in 3.9 3.10 3.11 3.12 3.13; do
  if ! py=$(scripts/find-python.sh "$v" 2>/dev/null); then
    echo "== Python $v: not installed here, no wheel"
    continue
  fi
  echo "== Python $v ($py)"
  "$MATURIN" build --release --auditwheel check -i "$py" -o "$OUT" >"$work/build-$v.log" 2>&1 \
    || { cat "$work/build-$v.log"; exit 1; }
  tag=${v/./}
  whl=$(ls "$OUT"/oxloop-*-cp"$tag"-cp"$tag"-*.whl)
  case "$(basename "$whl")" in
    *-manylinux_2_[0-9]*_x86_64.whl|*-manylinux_2_[0-9]*_aarch64.whl) echo "   $(basename "$whl")" ;;
    *) echo "not a manylinux wheel: $whl" >&2; exit 1 ;;
  esac
  smoke "$py" "$whl"
done

echo "== from the sdist with pip (as a user without a wheel)"
"$VPY" -m pip wheel -v --no-deps -w "$work/from-sdist" "$sdist" >"$work/sdist-build.log" 2>&1 \
  || { tail -50 "$work/sdist-build.log"; exit 1; }
grep -q "oxloop: building from source" "$work/sdist-build.log" \
  || { echo "the build note did not appear" >&2; exit 1; }
echo "   built $(basename "$(ls "$work"/from-sdist/*.whl)"), build note shown"
smoke "$VPY" "$(ls "$work"/from-sdist/*.whl)"
echo "== dist/"
ls -1 "$OUT"
